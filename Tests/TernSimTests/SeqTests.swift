import Foundation
import TernCore
import TernSeq
import TernSim
import Testing

/// The sequence allocator's pure core, driven by hand.
@Suite struct SectionAllocatorTests {
    /// Runs the allocator's key requests against an in-memory key (a perfect store).
    struct Store {
        var value: [UInt8]?
        var calls: [SeqKeyRequest] = []
        mutating func run(_ a: inout SectionAllocator, _ outs: [SeqOutput]) -> [(UInt64, UInt64, UInt64)] {
            var replies: [(UInt64, UInt64, UInt64)] = []
            var pending = outs
            while !pending.isEmpty {
                let o = pending.removeFirst()
                switch o {
                case .request(let id, let r):
                    calls.append(r)
                    switch r {
                    case .read: pending += a.keyResult(id: id, .value(value))
                    case .cas(let e, let n):
                        let ok = value == e
                        if ok { value = n }
                        pending += a.keyResult(id: id, .swapped(ok))
                    }
                case .reply(let t, let f, let l): replies.append((t, f, l))
                case .fail(let t, let why): Issue.record("request \(t) failed: \(why)")
                }
            }
            return replies
        }
    }

    @Test("Record encoding round-trips and is fixed-size")
    func record() {
        let r = SectionRecord(maxSeq: .max - 3, owner: NodeID(0xDEAD_BEEF), epoch: 77)
        #expect(r.encoded.count == SectionRecord.encodedCount)
        #expect(SectionRecord(decoding: r.encoded) == r)
        #expect(SectionRecord(decoding: Array("12".utf8)) == nil)
    }

    @Test("Takeover starts every uid at the old ceiling; a raise happens only past the limit")
    func takeoverAndRaise() {
        var c = SeqConfig()
        c.step = 10
        var store = Store(value: SectionRecord(maxSeq: 100, owner: NodeID(9), epoch: 4).encoded)
        var a = SectionAllocator(section: 0, me: NodeID(1), config: c)
        var r = store.run(&a, a.allocate(uid: 5, count: 1, tag: 1))
        #expect(r.map(\.1) == [101])
        #expect(
            SectionRecord(decoding: store.value!) == SectionRecord(maxSeq: 110, owner: NodeID(1), epoch: 5))
        r = store.run(&a, a.allocate(uid: 6, count: 3, tag: 2))
        #expect(r.map { [$0.1, $0.2] } == [[101, 103]])
        r = store.run(&a, a.allocate(uid: 5, count: 12, tag: 3))
        #expect(r.map { [$0.1, $0.2] } == [[102, 113]])
        #expect(SectionRecord(decoding: store.value!)?.maxSeq == 120)
        r = store.run(&a, a.current(uid: 5, tag: 4))
        #expect(r.map(\.1) == [113])
        r = store.run(&a, a.current(uid: 7, tag: 5))
        #expect(r.map(\.1) == [100])
    }

    @Test("A confirm that sees another owner's write discards the batch and takes over again")
    func lostSection() {
        var store = Store(value: nil)
        var a = SectionAllocator(section: 3, me: NodeID(1))
        var b = SectionAllocator(section: 3, me: NodeID(2))
        #expect(store.run(&a, a.allocate(uid: 1, count: 1, tag: 1)).map(\.1) == [1])
        #expect(store.run(&b, b.allocate(uid: 1, count: 1, tag: 1)).map(\.1) == [10_001])
        // a still believes it owns the section; its confirm must fail and it must take over anew.
        #expect(store.run(&a, a.allocate(uid: 1, count: 1, tag: 2)).map(\.1) == [20_001])
        #expect(SectionRecord(decoding: store.value!)?.owner == NodeID(1))
    }

    @Test("Passing 2^64-1 fails with overflow, never wraps")
    func overflow() {
        var store = Store(value: SectionRecord(maxSeq: .max - 5, owner: NodeID(9), epoch: 1).encoded)
        var a = SectionAllocator(section: 0, me: NodeID(1))
        let out = a.allocate(uid: 1, count: 1, tag: 1)
        // The takeover read comes first; its result makes the CAS impossible.
        guard case .request(let id, .read) = out.first else {
            Issue.record("expected a read, got \(out)")
            return
        }
        let next = a.keyResult(id: id, .value(store.value))
        #expect(next == [.fail(tag: 1, .overflow)])
        _ = store
    }

    @Test("An unknown-outcome raise is treated as a lost section: re-read before anything else")
    func unknownRaise() {
        var c = SeqConfig()
        c.step = 2
        var store = Store(value: nil)
        var a = SectionAllocator(section: 0, me: NodeID(1), config: c)
        #expect(store.run(&a, a.allocate(uid: 1, count: 2, tag: 1)).map(\.2) == [2])
        let out = a.allocate(uid: 1, count: 1, tag: 2)
        guard case .request(let id, .cas) = out.first else {
            Issue.record("expected a raise, got \(out)")
            return
        }
        #expect(a.keyResult(id: id, .unknown) == [.fail(tag: 2, .unavailable)])
        #expect(!a.isOwner)
        let next = a.allocate(uid: 1, count: 1, tag: 3)
        #expect(next.first.map { if case .request(_, .read) = $0 { true } else { false } } == true)
    }
}

/// The seq workload under the simulator's faults: owner moves (clients call random nodes),
/// crashes (allocator memory lost), partitions, loss.
@Suite struct SeqSimulationTests {
    @Test("Seq seeds under faults are clean, and the workload really answered")
    func campaign() {
        var answered = 0
        for s in UInt64(1)...30 {
            var c = SimConfig(seed: s)
            c.ops = 60
            c.seqOps = 120
            let r = simulate(c)
            answered += r.seqReplies
            #expect(r.violations.isEmpty, "\(r.violations.map(\.description).joined(separator: "\n"))")
        }
        #expect(answered > 30 * 60, "only \(answered) SEQ.NEXT answered in 30 seeds")
    }

    @Test("Same seed, same seq history")
    func deterministic() {
        var c = SimConfig(seed: 7)
        c.seqOps = 80
        let a = simulate(c)
        let b = simulate(c)
        #expect(a.traceHash == b.traceHash)
        #expect(a.seqReplies == b.seqReplies)
    }

    @Test(
        "Every seq mutant is caught within 40 seeds",
        arguments: [SeqMutant.seqNoConfirm, .seqLowBase, .seqIgnoreLoss])
    func mutantCaught(mutant: SeqMutant) {
        var caughtAt: UInt64?
        for s in UInt64(1)...40 {
            var c = SimConfig(seed: s)
            c.ops = 40
            c.seqOps = 150
            c.seqMutant = mutant
            let r = simulate(c)
            if let v = r.violations.first {
                #expect(v.check == "seq", "\(v)")
                #expect(v.replay.contains("--mutant \(mutant.rawValue)"))
                caughtAt = s
                break
            }
        }
        #expect(caughtAt != nil, "seq mutant \(mutant) survived 40 seeds")
    }
}

/// Memory per active uid (docs/SEQ.md): the table estimate, and the process's RSS growth.
// Time-limited: copying the per-uid table on each request (a bug once) made this take 8 minutes.
@Suite(.timeLimit(.minutes(1))) struct SeqMemoryTests {
    static func rssBytes() -> Int? {
        guard let text = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return nil }
        let fields = text.split(separator: " ")
        guard fields.count > 1, let pages = Int(fields[1]) else { return nil }
        return pages * 4096
    }

    @Test("Bytes per active uid: 1,000,000 uids in 10 sections")
    func bytesPerUID() {
        var c = SeqConfig()
        c.step = 1 << 40
        let uids = 1_000_000
        let sectionUIDs = 100_000
        let before = Self.rssBytes()
        var allocators: [SectionAllocator] = []
        for s in 0..<(uids / sectionUIDs) {
            var store = SectionAllocatorTests.Store(value: nil)
            var a = SectionAllocator(section: UInt64(s), me: NodeID(1), config: c)
            for u in 0..<sectionUIDs {
                _ = store.run(&a, a.allocate(uid: UInt64(s * sectionUIDs + u), count: 1, tag: UInt64(u)))
            }
            allocators.append(a)
        }
        let after = Self.rssBytes()
        let active = allocators.reduce(0) { $0 + $1.activeUIDs }
        let table = allocators.reduce(0) { $0 + $1.tableBytes }
        #expect(active == uids)
        let perUID = Double(table) / Double(uids)
        var rss = "n/a"
        if let before, let after { rss = "\(Double(after - before) / Double(uids))" }
        print("[seq-memory] \(uids) active uids: table \(perUID) bytes/uid; RSS growth \(rss) bytes/uid")
        #expect(perUID < 48, "table \(perUID) bytes per active uid")
    }
}

@Suite struct SeqContentionTests {
    /// Before the bound, an allocator whose section was stolen after every takeover re-queued its
    /// requests forever.
    @Test("A section stolen after every takeover fails the waiting request (contended) instead of looping")
    func stolenEveryTime() {
        var value: [UInt8]? = nil
        var epoch: UInt64 = 100
        var a = SectionAllocator(section: 0, me: NodeID(1))
        var pending = a.allocate(uid: 1, count: 1, tag: 7)
        var steps = 0
        var outcome: SeqOutput?
        while let o = pending.first, steps < 200 {
            pending.removeFirst()
            steps += 1
            switch o {
            case .request(let id, .read):
                pending += a.keyResult(id: id, .value(value))
            case .request(let id, .cas(let e, let n)):
                let ok = value == e
                if ok { value = n }
                pending += a.keyResult(id: id, .swapped(ok))
                // Another node takes the section right after each of our writes.
                epoch += 1
                value = SectionRecord(maxSeq: epoch * 10_000, owner: NodeID(2), epoch: epoch).encoded
            case .reply, .fail:
                outcome = o
            }
        }
        #expect(outcome == .fail(tag: 7, .contended), "after \(steps) steps: \(String(describing: outcome))")
    }
}
