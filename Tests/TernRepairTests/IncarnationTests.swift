import TernConsensus
import TernCore
import Testing

@testable import TernRepair

/// The incarnation check (docs/REPAIR.md, "A directory restored from an older backup"): three
/// guards, messages delivered by hand, the peers' tables persisted when asked.
@Suite struct IncarnationTests {
    let ids = [NodeID(1), NodeID(2), NodeID(3)]

    /// A peer guard that only answers (its own start long past).
    func peer(_ id: NodeID, seen: [NodeID: Incarnation]) -> IncarnationGuard {
        IncarnationGuard(
            me: id, others: ids, stored: 1, current: Incarnation(number: 2, nonce: 99), seen: seen,
            checking: false,
            now: 0)
    }

    /// Delivers `from`'s pending messages to `peers` and their answers back, as the shell would:
    /// a table to persist first (recorded in `persisted`), then the welcome.
    func exchange(
        _ node: IncarnationGuard, _ peers: [NodeID: IncarnationGuard], persisted: inout [NodeID: Int],
        now: UInt64
    ) {
        node.tick(now: now)
        let r = node.ready()
        for m in r.messages {
            guard let p = peers[m.to] else { continue }
            p.receive(from: node.me, m.bytes)
            let a = p.ready()
            if a.persistSeen != nil { persisted[m.to, default: 0] += 1 }
            for back in a.messages + a.afterPersist { node.receive(from: m.to, back.bytes) }
        }
    }

    @Test("An ordinary restart is welcomed by every node, which records it durably first; then it votes")
    func ordinaryRestart() {
        let n1 = ids[0]
        let mine = Incarnation(number: 4, nonce: 7)
        let peers = [
            ids[1]: peer(ids[1], seen: [n1: Incarnation(number: 3, nonce: 5)]),
            ids[2]: peer(ids[2], seen: [:]),
        ]
        let g = IncarnationGuard(
            me: n1, others: ids, stored: 3, current: mine, seen: [:], checking: true, now: 0)
        #expect(g.decision == .checking)
        var persisted: [NodeID: Int] = [:]
        exchange(g, peers, persisted: &persisted, now: 0)
        #expect(g.decision == .passed)
        #expect(persisted == [ids[1]: 1, ids[2]: 1])
        #expect(peers[ids[1]]!.seen[n1] == mine && peers[ids[2]]!.seen[n1] == mine)
    }

    @Test("A directory older than a start a peer acknowledged is stale, whichever number it reaches")
    func restoredBackupIsStale() {
        let n1 = ids[0]
        // The peer acknowledged start 5 of n1; the restored directory remembers 3 (or 4: then
        // this start is 5 again, with another nonce).
        for stored: UInt64 in [3, 4] {
            let p2 = peer(ids[1], seen: [n1: Incarnation(number: 5, nonce: 11)])
            let g = IncarnationGuard(
                me: n1, others: ids, stored: stored, current: Incarnation(number: stored + 1, nonce: 12),
                seen: [:],
                checking: true, now: 0)
            var persisted: [NodeID: Int] = [:]
            exchange(g, [ids[1]: p2], persisted: &persisted, now: 0)
            #expect(g.decision == .stale(peer: ids[1], seen: Incarnation(number: 5, nonce: 11)))
            #expect(persisted.isEmpty, "a stale start is not recorded")
            #expect(p2.seen[n1] == Incarnation(number: 5, nonce: 11))
        }
    }

    /// Seed 33 of the restoring campaign: the restored directory (its last confirmed start 1)
    /// starts as 2 — the number the peer recorded for the lost directory's start — crashes before
    /// any answer, and starts again as 3. Compared with "the last start" (2), the peer's record
    /// (2, another nonce) looked no newer; compared with the last confirmed start, it is.
    @Test("A restored directory that started once unheard is still stale at its next start")
    func restoredThenStartedUnheardIsStale() {
        let n1 = ids[0]
        let peerSaw = Incarnation(number: 2, nonce: 0xE1)
        let restored = OwnIncarnations(confirmed: 1)
        let unheard = restored.starting(nonce: 0xDC1)
        let next = unheard.starting(nonce: 0xF61)
        #expect(next.confirmed == 1 && next.starts.map(\.number) == [2, 3])
        let p2 = peer(ids[1], seen: [n1: peerSaw])
        let g = IncarnationGuard(
            me: n1, others: ids, stored: next.confirmed, earlier: Array(next.starts.dropLast()),
            current: next.starts[1], seen: [:], checking: true, now: 0)
        var persisted: [NodeID: Int] = [:]
        exchange(g, [ids[1]: p2], persisted: &persisted, now: 0)
        #expect(g.decision == .stale(peer: ids[1], seen: peerSaw))
    }

    @Test(
        "A start the peer recorded but whose welcome was lost is not stale at the next start; a welcome confirms"
    )
    func unconfirmedStartRecordedByPeer() {
        let n1 = ids[0]
        let before = OwnIncarnations(confirmed: 4)
        let lost = before.starting(nonce: 7)  // 5/7: the peer welcomed it, the node crashed first
        let next = lost.starting(nonce: 8)  // 6/8
        let p2 = peer(ids[1], seen: [n1: lost.starts[0]])
        let p3 = peer(ids[2], seen: [n1: Incarnation(number: 4, nonce: 1)])
        let g = IncarnationGuard(
            me: n1, others: ids, stored: next.confirmed, earlier: Array(next.starts.dropLast()),
            current: next.starts[1], seen: [:], checking: true, now: 0)
        var persisted: [NodeID: Int] = [:]
        g.tick(now: 0)
        for m in g.ready().messages {
            let p = m.to == ids[1] ? p2 : p3
            p.receive(from: n1, m.bytes)
            for back in p.ready().afterPersist { g.receive(from: m.to, back.bytes) }
            persisted[m.to, default: 0] += 1
        }
        #expect(g.decision == .passed)
        #expect(
            g.ready().persistOwn == OwnIncarnations(confirmed: next.starts[1].number),
            "the first welcome asks for the own record")
        #expect(OwnIncarnations(confirmed: 4).starting(nonce: 1).confirming(next.starts[1]).starts.isEmpty)
        // Only the latest `limit` unconfirmed starts are kept.
        var many = OwnIncarnations(confirmed: 1)
        for n in 0..<(OwnIncarnations.limit + 12) { many = many.starting(nonce: UInt64(n)) }
        #expect(
            many.starts.count == OwnIncarnations.limit && many.latest == UInt64(OwnIncarnations.limit + 13))
    }

    /// Seed 397 of the restoring mix: a node rebuilding learner-only from a restored directory
    /// was answered `stale` and never recorded, so when its rebuild was done and it restarted, its
    /// current directory was found stale again and rebuilt needlessly — beside another node's
    /// rebuild, which wedged both. An untrusted start is recorded, above the peer's record.
    @Test("A start that rebuilds anyway is not checked: it renumbers above the peer's record and is recorded")
    func untrustedStartRenumbersAndIsRecorded() {
        let n1 = ids[0]
        let peerSaw = Incarnation(number: 10, nonce: 0x3FF2)
        let restored = OwnIncarnations(confirmed: 8).starting(nonce: 0x41A2)  // 9/41a2, below 10
        let g = IncarnationGuard(
            me: n1, others: ids, stored: restored.confirmed, earlier: [], current: restored.starts[0],
            seen: [:],
            checking: false, now: 0)
        #expect(g.decision == .passed)
        let p2 = peer(ids[1], seen: [n1: peerSaw])
        var persisted: [NodeID: Int] = [:]
        exchange(g, [ids[1]: p2], persisted: &persisted, now: 0)
        #expect(g.decision == .passed, "an untrusted start never turns stale")
        #expect(g.current == Incarnation(number: 11, nonce: 0x41A2))
        #expect(
            g.ready().persistOwn == OwnIncarnations(confirmed: 8, starts: [restored.starts[0], g.current]))
        g.tick(now: 1_000_000_000)
        #expect(g.ready().messages.isEmpty, "the new number is announced only once it is durable")
        g.ownPersisted()
        exchange(g, [ids[1]: p2], persisted: &persisted, now: 2_000_000_000)
        #expect(p2.seen[n1] == g.current, "the renumbered start is recorded")
        #expect(g.ready().persistOwn == OwnIncarnations(confirmed: 11))
        // The next start, trusted (the rebuild done), passes against that record.
        let next = OwnIncarnations(confirmed: 11).starting(nonce: 5)
        let t = IncarnationGuard(
            me: n1, others: [n1, ids[1]], stored: next.confirmed, earlier: [], current: next.starts[0],
            seen: [:],
            checking: true, now: 0)
        exchange(t, [ids[1]: p2], persisted: &persisted, now: 0)
        #expect(t.decision == .passed)
        // A trusted start of the directory from before the rebuild is still stale.
        let before = restored.starting(nonce: 6)
        let old = IncarnationGuard(
            me: n1, others: [n1, ids[1]], stored: before.confirmed, earlier: [restored.starts[0]],
            current: before.starts[1], seen: [:], checking: true, now: 0)
        let p2b = peer(ids[1], seen: [n1: Incarnation(number: 11, nonce: 0x41A2)])
        exchange(old, [ids[1]: p2b], persisted: &persisted, now: 0)
        #expect(old.decision == .stale(peer: ids[1], seen: Incarnation(number: 11, nonce: 0x41A2)))
    }

    /// Mixed campaign seed 5151 (`--repair --ops 400 --crash 0.01 --down-ticks 20 --wipe 0.3
    /// --drop 0.3 --restore 0.3`): a start found stale rebuilt, but kept its number, below the
    /// peer's record of the start the backup predates; its next start reached that number with
    /// another nonce and was found stale again — a second rebuild, beside another node's, and the
    /// two wedged.
    @Test("A start found stale renumbers above the peer's record, is recorded, and its next start passes")
    func staleStartRenumbersAndIsRecorded() {
        let n1 = ids[0]
        let peerSaw = Incarnation(number: 3, nonce: 0x9A2)
        let restored = OwnIncarnations(confirmed: 1).starting(nonce: 0xCB2)  // 2/cb2, a restored backup
        let g = IncarnationGuard(
            me: n1, others: [n1, ids[1]], stored: restored.confirmed, earlier: [],
            current: restored.starts[0],
            seen: [:], checking: true, now: 0)
        let p2 = peer(ids[1], seen: [n1: peerSaw])
        var persisted: [NodeID: Int] = [:]
        exchange(g, [ids[1]: p2], persisted: &persisted, now: 0)
        #expect(g.decision == .stale(peer: ids[1], seen: peerSaw))
        #expect(g.current == Incarnation(number: 4, nonce: 0xCB2), "renumbered above the peer's record")
        #expect(!g.trusted)
        g.ownPersisted()
        exchange(g, [ids[1]: p2], persisted: &persisted, now: 2_000_000_000)
        #expect(p2.seen[n1] == g.current, "the rebuilding start is recorded")
        // Rebuilt, the node restarts: one above what its directory remembers, and passes.
        let next = g.own.starting(nonce: 0x3C22)
        let t = IncarnationGuard(
            me: n1, others: [n1, ids[1]], stored: next.confirmed, earlier: Array(next.starts.dropLast()),
            current: next.starts[next.starts.count - 1], seen: [:], checking: true, now: 0)
        exchange(t, [ids[1]: p2], persisted: &persisted, now: 0)
        #expect(t.decision == .passed)
    }

    @Test("A running node bumps its incarnation once confirmed, durably first, and the peers record the bump")
    func runningNodeBumps() {
        let n1 = ids[0]
        let p2 = peer(ids[1], seen: [:])
        let g = IncarnationGuard(
            me: n1, others: [n1, ids[1]], stored: 3, current: Incarnation(number: 4, nonce: 9), seen: [:],
            checking: true, now: 0, bumpNanos: 60)
        var persisted: [NodeID: Int] = [:]
        exchange(g, [ids[1]: p2], persisted: &persisted, now: 0)
        #expect(g.decision == .passed && p2.seen[n1] == Incarnation(number: 4, nonce: 9))
        #expect(g.ready().persistOwn == OwnIncarnations(confirmed: 4))
        g.tick(now: 10)  // the period counts from here
        g.tick(now: 69)
        #expect(g.ready().isEmpty)
        g.tick(now: 70)
        let r = g.ready()
        #expect(r.bumped == Incarnation(number: 5, nonce: 9))
        #expect(r.persistOwn == OwnIncarnations(confirmed: 4, starts: [Incarnation(number: 5, nonce: 9)]))
        #expect(r.messages.isEmpty, "announced only once the own record is durable")
        #expect(g.decision == .passed, "the node keeps voting through a bump")
        g.ownPersisted()
        exchange(g, [ids[1]: p2], persisted: &persisted, now: 71)
        #expect(p2.seen[n1] == Incarnation(number: 5, nonce: 9))
        // A copy of the directory from before the bump (confirmed 4) now starts stale.
        let copy = OwnIncarnations(confirmed: 4).starting(nonce: 77)
        let old = IncarnationGuard(
            me: n1, others: [n1, ids[1]], stored: copy.confirmed, earlier: [], current: copy.starts[0],
            seen: [:],
            checking: true, now: 0)
        exchange(old, [ids[1]: p2], persisted: &persisted, now: 0)
        #expect(old.decision == .stale(peer: ids[1], seen: Incarnation(number: 5, nonce: 9)))
    }

    /// Seed 185 of the restoring mix with bumps: a peer paused for a while resumed with a running
    /// node's hellos queued, recorded the newest bump first, then answered an older one `stale`
    /// — and the running node, never restored, rebuilt.
    @Test("A delayed hello of the same run gets no answer, and a stale naming this run is ignored")
    func delayedHelloOfTheSameRun() {
        let n1 = ids[0]
        let p2 = peer(ids[1], seen: [n1: Incarnation(number: 7, nonce: 5)])
        p2.receive(
            from: n1, IncarnationMessage.hello(stored: 5, current: Incarnation(number: 6, nonce: 5)).encode())
        #expect(p2.ready().isEmpty, "a delayed hello of the run p2 already recorded later")
        let g = IncarnationGuard(
            me: n1, others: ids, stored: 6, current: Incarnation(number: 7, nonce: 5), seen: [:],
            checking: true, now: 0)
        g.receive(from: ids[1], IncarnationMessage.stale(seen: Incarnation(number: 7, nonce: 5)).encode())
        g.receive(from: ids[1], IncarnationMessage.stale(seen: Incarnation(number: 6, nonce: 5)).encode())
        #expect(g.decision == .checking)
        g.receive(from: ids[1], IncarnationMessage.stale(seen: Incarnation(number: 7, nonce: 6)).encode())
        #expect(g.decision == .stale(peer: ids[1], seen: Incarnation(number: 7, nonce: 6)))
    }

    @Test("A retransmitted hello is welcomed again without another write")
    func retransmittedHello() {
        let n1 = ids[0]
        let mine = Incarnation(number: 2, nonce: 3)
        let p2 = peer(ids[1], seen: [:])
        let hello = IncarnationMessage.hello(stored: 1, current: mine).encode()
        p2.receive(from: n1, hello)
        let first = p2.ready()
        #expect(first.persistSeen != nil && first.afterPersist.count == 1 && first.messages.isEmpty)
        p2.receive(from: n1, hello)
        let again = p2.ready()
        #expect(again.persistSeen == nil && again.afterPersist.isEmpty)
        #expect(again.messages.map(\.bytes) == [IncarnationMessage.welcome(current: mine).encode()])
    }

    @Test("With a node silent, the start votes after the grace period, only with a welcome")
    func graceWithOneWelcome() {
        let n1 = ids[0]
        let g = IncarnationGuard(
            me: n1, others: ids, stored: 1, current: Incarnation(number: 2, nonce: 1), seen: [:],
            checking: true,
            now: 0, graceNanos: 5_000, helloIntervalNanos: 1_000)
        var persisted: [NodeID: Int] = [:]
        // Nobody answers: held past the grace period.
        exchange(g, [:], persisted: &persisted, now: 0)
        g.tick(now: 10_000)
        #expect(g.decision == .checking)
        // One node welcomes: still held until the grace period is over, counted from the start.
        let late = IncarnationGuard(
            me: n1, others: ids, stored: 1, current: Incarnation(number: 2, nonce: 1), seen: [:],
            checking: true,
            now: 20_000, graceNanos: 5_000, helloIntervalNanos: 1_000)
        exchange(late, [ids[1]: peer(ids[1], seen: [:])], persisted: &persisted, now: 20_000)
        #expect(late.decision == .checking)
        late.tick(now: 25_000)
        #expect(late.decision == .passed)
    }

    @Test("A node rebuilding anyway, or the mutant, does not wait")
    func notChecking() {
        let g = IncarnationGuard(
            me: ids[0], others: ids, stored: 0, current: Incarnation(number: 1, nonce: 1), seen: [:],
            checking: false,
            now: 0)
        #expect(g.decision == .passed)
        let m = IncarnationGuard(
            me: ids[0], others: ids, stored: 3, current: Incarnation(number: 4, nonce: 1), seen: [:],
            checking: true,
            now: 0, skipCheck: true)
        #expect(m.decision == .passed)
    }

    @Test("Records and messages round-trip; malformed ones are refused")
    func codec() {
        let i = Incarnation(number: 9, nonce: 0xABCD)
        #expect(IncarnationRecords.decode(IncarnationRecords.encode(i)) == i)
        let table = [NodeID(2): i, NodeID(7): Incarnation(number: 1, nonce: 2)]
        #expect(IncarnationRecords.decodeSeen(IncarnationRecords.encode(seen: table)) == table)
        let own = OwnIncarnations(confirmed: 3, starts: [Incarnation(number: 4, nonce: 1), i])
        #expect(IncarnationRecords.decodeOwn(IncarnationRecords.encode(own: own)) == own)
        // The earlier format (one start) reads as that start confirmed.
        #expect(IncarnationRecords.decodeOwn(IncarnationRecords.encode(i)) == OwnIncarnations(confirmed: 9))
        #expect(IncarnationRecords.decodeOwn([2, 0, 0]) == nil)
        for m: IncarnationMessage in [
            .hello(stored: 8, current: i),
            .hello(stored: 7, earlier: [Incarnation(number: 8, nonce: 3)], current: i),
            .welcome(current: i), .stale(seen: i),
        ] {
            #expect(IncarnationMessage.decode(m.encode()) == m)
            #expect(IncarnationMessage.isIncarnation(m.encode()))
            #expect(IncarnationMessage.decode(Array(m.encode().dropLast())) == nil)
        }
        #expect(!IncarnationMessage.isIncarnation(RepairMessage.match(pass: 1, bucket: 2).encode()))
        #expect(IncarnationRecords.decodeSeen([1, 0, 0, 0]) == nil)
    }
}
