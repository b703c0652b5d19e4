import Foundation
import TernConsensus
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
        var messages = 0
        for s in UInt64(1)...30 {
            var c = SimConfig(seed: s)
            c.ops = 60
            c.seqOps = 120
            let r = simulate(c)
            answered += r.seqReplies
            messages += r.seqMessages
            #expect(r.violations.isEmpty, "\(r.violations.map(\.description).joined(separator: "\n"))")
        }
        #expect(answered > 30 * 60, "only \(answered) SEQ.NEXT answered in 30 seeds")
        // The server's SeqHost runs here: calls to a node that does not own the section are
        // forwarded over the simulated network (with its faults), as in the server.
        #expect(messages > 30 * 40, "only \(messages) seq forwards in 30 seeds")
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

/// The sequence service's node-level logic (`SeqHost`), driven by hand: what the server's
/// `SeqService` and the simulator's seq workload both run.
@Suite struct SeqHostTests {
    static let ids = [NodeID(1), NodeID(2), NodeID(3)]

    /// Carries out `host`'s key requests against one in-memory section key until it is quiet;
    /// returns its answers and messages.
    static func settle(_ host: inout SeqHost, _ key: inout [UInt8]?) -> SeqReady {
        var all = SeqReady()
        while true {
            let r = host.ready()
            if r.isEmpty { return all }
            all.messages += r.messages
            all.answers += r.answers
            for k in r.keyRequests {
                switch k.request {
                case .read: host.keyResult(tag: k.tag, .value(key))
                case .cas(let e, let n):
                    let ok = key == e
                    if ok { key = n }
                    host.keyResult(tag: k.tag, .done(.swapped(ok)))
                }
            }
        }
    }

    @Test("A call at a node that does not own the section is forwarded, served by the owner, answered back")
    func forwardRoundTrip() {
        var n1 = SeqHost(me: Self.ids[0])
        var n2 = SeqHost(me: Self.ids[1])
        var key: [UInt8]? = nil
        // uid 150 000 is section 1: preferred owner is the replica in campus 1 % 3 = B, n2.
        n1.request(tag: 7, current: false, uid: 150_000, count: 2, replicas: Self.ids, now: 0)
        let r1 = Self.settle(&n1, &key)
        #expect(r1.answers.isEmpty)
        #expect(r1.messages.map(\.to) == [Self.ids[1]])
        n2.receive(from: Self.ids[0], r1.messages[0].bytes)
        let r2 = Self.settle(&n2, &key)
        #expect(r2.messages.map(\.to) == [Self.ids[0]])
        n1.receive(from: Self.ids[1], r2.messages[0].bytes)
        let back = n1.ready()
        #expect(back.answers.count == 1 && back.answers[0].tag == 7)
        #expect(back.answers[0].answer == .numbers(first: 1, last: 2))
        #expect(n1.forwardedOut == 1 && n2.forwardedIn == 1)
    }

    @Test("An owner that does not answer within the forward timeout is avoided; the caller serves")
    func forwardTimeout() {
        var n1 = SeqHost(me: Self.ids[0])
        var key: [UInt8]? = nil
        n1.request(tag: 1, current: false, uid: 150_000, count: 1, replicas: Self.ids, now: 0)
        _ = Self.settle(&n1, &key)
        #expect(n1.nextDeadline == n1.options.forwardTimeoutNanos)
        n1.tick(now: n1.options.forwardTimeoutNanos - 1)
        #expect(n1.ready().isEmpty)
        n1.tick(now: n1.options.forwardTimeoutNanos)
        // n2 is suspect: the next campus's replica (C, n3) would be next; the host asks n3.
        let r = Self.settle(&n1, &key)
        #expect(r.messages.map(\.to) == [Self.ids[2]])
        #expect(n1.forwardTimeouts == 1)
        n1.tick(now: 2 * n1.options.forwardTimeoutNanos)
        // Both suspect: served here.
        let local = Self.settle(&n1, &key)
        #expect(local.answers.map(\.answer) == [.numbers(first: 1, last: 1)])
        #expect(n1.owner(of: 1, replicas: Self.ids, now: 2 * n1.options.forwardTimeoutNanos) == Self.ids[0])
        // Suspicion ends.
        #expect(n1.owner(of: 1, replicas: Self.ids, now: 10 * n1.options.suspectForNanos) == Self.ids[1])
    }

    @Test("A late answer to a forward of a previous incarnation is not taken for a new forward's")
    func lateAnswerAfterRestart() {
        var key: [UInt8]? = nil
        var before = SeqHost(me: Self.ids[0], tagBase: 1 << 40)
        before.request(tag: 1, current: false, uid: 150_000, count: 2, replicas: Self.ids, now: 0)
        let old = Self.settle(&before, &key).messages[0]
        // n1 restarts (a new incarnation, a new tag range) and forwards another call.
        var after = SeqHost(me: Self.ids[0], tagBase: 2 << 40)
        after.request(tag: 1, current: false, uid: 150_001, count: 1, replicas: Self.ids, now: 0)
        _ = Self.settle(&after, &key)
        // n2 answers the old forward; its answer reaches the new incarnation.
        var n2 = SeqHost(me: Self.ids[1])
        n2.receive(from: Self.ids[0], old.bytes)
        let answer = Self.settle(&n2, &key).messages[0]
        after.receive(from: Self.ids[1], answer.bytes)
        #expect(after.ready().answers.isEmpty, "the old forward's numbers must not answer the new call")
        // Same tag range in both incarnations (the bug): the late answer is taken for the new one.
        var same = SeqHost(me: Self.ids[0], tagBase: 1 << 40)
        same.request(tag: 1, current: false, uid: 150_001, count: 1, replicas: Self.ids, now: 0)
        _ = Self.settle(&same, &key)
        same.receive(from: Self.ids[1], answer.bytes)
        #expect(same.ready().answers.count == 1)
    }

    @Test("One translation of node replies for both shells: a CAS that may have applied is unknown")
    func keyResultMapping() {
        let cas = SeqKeyRequest.cas(expected: nil, new: [1])
        #expect(SeqHost.keyResult(.value([1]), for: .read) == .value([1]))
        #expect(SeqHost.keyResult(.done(.swapped(true)), for: cas) == .swapped(true))
        #expect(SeqHost.keyResult(.done(.swapped(false)), for: cas) == .swapped(false))
        #expect(SeqHost.keyResult(.unknown("x"), for: cas) == .unknown)
        #expect(SeqHost.keyResult(.notApplied("x"), for: cas) == .failed)
        #expect(SeqHost.keyResult(.unavailable("x"), for: cas) == .failed)
        #expect(SeqHost.keyResult(.unavailable("x"), for: .read) == .failed)
        #expect(SeqHost.keyResult(.unknown("x"), for: .read) == .failed)
    }
}
