import TernConsensus
import TernCore
import Testing

/// Round 0 on a fresh key (docs/PROTOCOL.md, "Fresh keys: round 0 at the owner"): the owner's
/// first write skips Phase 1; acceptors take a round-0 Accept only from the owner and only where
/// nothing else is accepted at its instance.
@Suite struct FastAcceptTests {
    let zero1 = Ballot(round: 0, node: n1)

    @Test("Owner, fresh key: no Prepare; its own vote is persisted and synced with the Accepts to its peers")
    func ownerSkipsPhase1() {
        var t = Trio(owner: n1)
        t.propose(n1, .put(bytes("a")), id: rid(1), tag: 1)
        let fx = t.log.last!.1
        let sent = fx.messages.map(\.message)
        #expect(!sent.contains(where: isPrepare))
        #expect(fx.messages.map(\.to) == [n2, n3], "no Accept to itself: its vote is in this step")
        #expect(fx.persist?.accepted?.ballot == zero1)
        #expect(fx.persist?.promised == zero1)
        #expect(fx.mustSync)
        t.run()
        for n in [n1, n2, n3] { #expect(t.state(n).chosen == 1 && t.state(n).value.bytes == bytes("a")) }
        #expect(t.replies == [ClientReply(tag: 1, outcome: .done(.ok))])
        // Messages of the write: 2 Accepts, 2 Accepted, 2 Chosen.
        #expect(t.log.flatMap { $0.1.messages }.count == 6)
    }

    @Test("Owner: the next writes use the ballot of round 0 as a fast ballot, one round trip each")
    func ownerFastPathAfter() {
        var t = Trio(owner: n1)
        t.propose(n1, .incr(1), id: rid(1), tag: 1)
        t.run()
        t.propose(n1, .incr(1), id: rid(2), tag: 2)
        t.run()
        #expect(!t.log.flatMap { $0.1.messages }.map(\.message).contains(where: isPrepare))
        #expect(t.state(n2).value.bytes == bytes("2"))
        #expect(t.replies.map(\.outcome) == [.done(.number(1)), .done(.number(2))])
    }

    @Test("A non-owner's first write on a fresh key runs Phase 1")
    func nonOwnerPrepares() {
        var t = Trio(owner: n1)
        t.propose(n2, .put(bytes("b")), id: rid(1), tag: 1)
        #expect(t.log.last!.1.messages.map(\.message).contains(where: isPrepare))
        t.run()
        #expect(t.state(n3).value.bytes == bytes("b"))
    }

    @Test("No owner: every replica runs Phase 1, and round-0 Accepts are refused")
    func noOwner() {
        var t = Trio()
        t.propose(n1, .put(bytes("a")), id: rid(1), tag: 1)
        #expect(t.log.last!.1.messages.map(\.message).contains(where: isPrepare))
        var u = Trio()
        let fx = u.replicas[n2]!.step(
            .accept(instance: 1, ballot: zero1, value: KeyValue(bytes: bytes("a"))), from: n1,
            ctx: &u.ctx[n2]!)
        #expect(fx.persist == nil)
        #expect(u.state(n2).accepted == nil)
    }

    @Test("Acceptor, fresh: takes a round-0 Accept from the owner, persisted and synced before Accepted")
    func acceptorTakesWhenFresh() {
        var t = Trio(owner: n1)
        let v = KeyValue(bytes: bytes("a"))
        let fx = t.replicas[n2]!.step(
            .accept(instance: 1, ballot: zero1, value: v), from: n1, ctx: &t.ctx[n2]!)
        #expect(fx.persist?.accepted == AcceptedSlot(instance: 1, ballot: zero1, value: v))
        #expect(fx.mustSync)
        #expect(fx.messages == [Outgoing(to: n1, message: .accepted(instance: 1, ballot: zero1))])
    }

    @Test("Acceptor: the same round-0 Accept again (a retransmission) is answered again, nothing written")
    func retransmissionIdempotent() {
        var t = Trio(owner: n1)
        let v = KeyValue(bytes: bytes("a"))
        _ = t.replicas[n2]!.step(.accept(instance: 1, ballot: zero1, value: v), from: n1, ctx: &t.ctx[n2]!)
        let fx = t.replicas[n2]!.step(
            .accept(instance: 1, ballot: zero1, value: v), from: n1, ctx: &t.ctx[n2]!)
        #expect(fx.persist == nil)
        #expect(fx.messages == [Outgoing(to: n1, message: .accepted(instance: 1, ballot: zero1))])
    }

    @Test(
        "Acceptor: a round-0 Accept of another value where one is accepted (an owner that forgot) is refused")
    func refusedWhenAccepted() {
        var t = Trio(owner: n1)
        let v1 = KeyValue(bytes: bytes("v1"))
        let v2 = KeyValue(bytes: bytes("v2"))
        _ = t.replicas[n2]!.step(.accept(instance: 1, ballot: zero1, value: v1), from: n1, ctx: &t.ctx[n2]!)
        let fx = t.replicas[n2]!.step(
            .accept(instance: 1, ballot: zero1, value: v2), from: n1, ctx: &t.ctx[n2]!)
        #expect(fx.persist == nil)
        #expect(
            fx.messages == [
                Outgoing(to: n1, message: .reject(instance: 1, ballot: zero1, promised: zero1, chosen: 0))
            ])
        #expect(t.state(n2).accepted?.value == v1)
    }

    @Test("Acceptor: a round-0 Accept after a promise of a real round is refused, state unchanged")
    func refusedWhenPromisedHigher() {
        var t = Trio(owner: n1)
        let b = Ballot(round: 1 << 32 | 1, node: n3)
        _ = t.replicas[n2]!.step(.prepare(instance: 1, ballot: b), from: n3, ctx: &t.ctx[n2]!)
        let fx = t.replicas[n2]!.step(
            .accept(instance: 1, ballot: zero1, value: KeyValue(bytes: bytes("a"))), from: n1,
            ctx: &t.ctx[n2]!)
        #expect(fx.persist == nil)
        #expect(
            fx.messages == [
                Outgoing(to: n1, message: .reject(instance: 1, ballot: zero1, promised: b, chosen: 0))
            ])
        #expect(t.state(n2).accepted == nil)
    }

    @Test("Acceptor: a round-0 Accept with a ballot not of the owner is refused")
    func refusedFromNonOwner() {
        var t = Trio(owner: n1)
        let zero3 = Ballot(round: 0, node: n3)
        let fx = t.replicas[n2]!.step(
            .accept(instance: 1, ballot: zero3, value: KeyValue(bytes: bytes("a"))), from: n3,
            ctx: &t.ctx[n2]!)
        #expect(fx.persist == nil)
        #expect(t.state(n2).accepted == nil)
    }

    @Test("Owner: no round 0 once anything is known of the key, while its votes are held, or under a fence")
    func ownerOnlyWhenFresh() {
        // A promise seen: Phase 1.
        var t = Trio(owner: n1)
        _ = t.replicas[n1]!.step(
            .prepare(instance: 1, ballot: Ballot(round: 1, node: n2)), from: n2, ctx: &t.ctx[n1]!)
        t.propose(n1, .put(bytes("a")), id: rid(1), tag: 1)
        #expect(t.log.last!.1.messages.map(\.message).contains(where: isPrepare))
        // Votes held (learner-only or incarnation check pending).
        var h = Trio(owner: n1)
        h.ctx[n1]!.votesHeld = true
        h.propose(n1, .put(bytes("a")), id: rid(1), tag: 1)
        #expect(h.log.last!.1.messages.map(\.message).contains(where: isPrepare))
        // A node fence (a peer's bulk rebuild).
        var f = Trio(owner: n1)
        f.ctx[n1]!.fence = Ballot(round: 2 << 32, node: NodeID(0))
        f.propose(n1, .put(bytes("a")), id: rid(1), tag: 1)
        #expect(f.log.last!.1.messages.map(\.message).contains(where: isPrepare))
        // Turned off.
        var config = PaxosConfig()
        config.fastAccept = false
        var o = Trio(config: config, owner: n1)
        o.propose(n1, .put(bytes("a")), id: rid(1), tag: 1)
        #expect(o.log.last!.1.messages.map(\.message).contains(where: isPrepare))
        // Damaged.
        var d = Trio(loaded: [n1: .damaged], owner: n1)
        d.propose(n1, .put(bytes("a")), id: rid(1), tag: 1)
        #expect(!d.log.flatMap { $0.1.messages }.map(\.message).contains(where: isAccept))
    }

    @Test(
        "Restart: an owner whose Accepts left before a crash finds its vote, runs Phase 1 and finishes that value first"
    )
    func restartAfterRoundZero() {
        var t = Trio(owner: n1)
        t.propose(n1, .put(bytes("v1")), id: rid(1), tag: 1)
        let persisted = t.log.last!.1.persist!
        // Only n2 gets the Accept; n1 crashes before any answer.
        let toN2 = t.inFlight.filter { $0.to == n2 }
        t.inFlight = []
        for m in toN2 { t.deliver(m) }
        t.inFlight = []
        t.replicas[n1] = KeyReplica(key: key, me: n1, peers: [n2, n3], loaded: .state(persisted), owner: n1)
        t.ctx[n1] = NodeContext(
            me: n1, now: 0, ballots: BallotClock(epoch: 2), rng: SplitMix64(seed: 9), config: PaxosConfig())
        t.propose(n1, .put(bytes("v2")), id: rid(2), tag: 2)
        #expect(t.log.last!.1.messages.map(\.message).contains(where: isPrepare))
        t.run()
        #expect(t.state(n3).chosen == 2)
        #expect(t.state(n3).value.bytes == bytes("v2"))
        // Instance 1 carried v1 (the value of the round-0 vote), never another.
        let at1 = t.log.flatMap { $0.1.messages }.compactMap { m -> [UInt8]? in
            if case .accept(1, _, let v) = m.message { return v.bytes }
            return nil
        }
        #expect(at1.allSatisfy { $0 == bytes("v1") })
        #expect(t.state(n2).value.result(for: rid(1)) == .ok)
    }

    @Test("A concurrent Phase 1 outbids round 0: the owner backs off and the key still converges")
    func outbidFallsBack() {
        var t = Trio(owner: n1)
        t.propose(n2, .put(bytes("b")), id: rid(2), tag: 2)
        // n2's Prepares reach n2 and n3 before n1's round-0 Accepts.
        let prepares = t.inFlight
        t.inFlight = []
        for m in prepares where m.to != n1 { t.deliver(m) }
        t.propose(n1, .put(bytes("a")), id: rid(1), tag: 1)
        for _ in 0..<300 {
            for n in [n1, n2, n3] { t.tick(n) }
            t.run()
        }
        #expect(Set(t.replies.map(\.tag)) == [1, 2])
        #expect(t.replies.allSatisfy { $0.outcome == .done(.ok) })
        #expect(t.state(n1).chosen == t.state(n2).chosen)
        #expect(t.state(n1).value == t.state(n3).value)
    }

    @Test("Both peers refuse round 0 without a higher promise: Phase 1 at once, finishing our own vote")
    func refusedByBothPeers() {
        // The peers name no owner (another configuration): they refuse round 0.
        var t = Trio(owner: n1)
        for n in [n2, n3] {
            t.replicas[n] = KeyReplica(
                key: key, me: n, peers: [n1, n2, n3].filter { $0 != n }, loaded: .absent)
        }
        t.propose(n1, .put(bytes("a")), id: rid(1), tag: 1)
        t.run()
        #expect(t.replies == [ClientReply(tag: 1, outcome: .done(.ok))])
        #expect(t.state(n2).value.bytes == bytes("a"))
    }

    /// n1 owns every key.
    struct OwnerOne: ReplicaPlacement {
        func replicas(for key: [UInt8]) -> [NodeID] { [n1, n2, n3] }
        func fastAcceptOwner(for key: [UInt8]) -> NodeID? { n1 }
    }

    @Test("Node: the owner's round-0 vote and its Accepts are one batch, synced before they leave")
    func nodeBatchHoldsTheVote() {
        let node = ReplicaNode(id: n1, placement: OwnerOne(), epoch: 1, config: PaxosConfig(), seed: 1)
        node.install(key, .absent)
        node.propose(key: key, .put(bytes("a")), id: rid(1), tag: 1)
        let batch = node.beginFlush()
        #expect(batch.records.map(\.key) == [ReplicaNode.recordKey(key)])
        #expect(batch.mustSync)
        #expect(batch.heldMessages == 2, "one Accept per peer, none to itself")
        let state = PaxosCodec.decode(batch.records[0].value)
        #expect(state?.accepted?.ballot == zero1)
        _ = node.finishFlush(batch)
        // A node whose votes are held (learner-only, incarnation check) does not use round 0.
        let held = ReplicaNode(id: n1, placement: OwnerOne(), epoch: 1, config: PaxosConfig(), seed: 1)
        held.votingHeld = true
        held.install(key, .absent)
        held.propose(key: key, .put(bytes("a")), id: rid(1), tag: 1)
        let b2 = held.beginFlush()
        #expect(b2.records.isEmpty, "a Prepare writes nothing until its own promise comes back")
    }

    /// The schedule the owner rule exists for: n1 and n3 both open the key with round 0; n1's value
    /// is chosen by {n1, n2}, n1 is then cut off from n3 and its Chosen to n2 is lost; n3's Phase
    /// 1, promised by {n3, n2}, sees v at (0, n1) and its own w at (0, n3), and must take w.
    func twoRoundZeroProposers(_ mutant: Mutant) -> (KeyState, KeyState) {
        var config = PaxosConfig()
        config.mutant = mutant
        var t = Trio(config: config, owner: n1)
        t.propose(n1, .put(bytes("v")), id: rid(1), tag: 1)
        t.propose(n3, .put(bytes("w")), id: rid(2), tag: 2)
        let cut: (NodeID, NodeID, PaxosMessage) -> Bool = { from, to, m in
            if (from == n1 && to == n3) || (from == n3 && to == n1) { return true }
            // Its Chosen, sent as a Commit to a peer that got the Accept.
            if case .chosen = m, from == n1 { return true }
            if case .commit = m, from == n1 { return true }
            return false
        }
        // n1's Accept reaches n2 first.
        if let i = t.inFlight.firstIndex(where: { $0.from == n1 && $0.to == n2 }) {
            let m = t.inFlight.remove(at: i)
            t.deliver(m)
        }
        for _ in 0..<400 {
            t.run(drop: cut)
            for n in [n1, n2, n3] { t.tick(n) }
        }
        return (t.state(n1), t.state(n3))
    }

    @Test(
        "Mutant fastAcceptAnyNode: a second round-0 proposer gets a second value chosen; with one owner, not")
    func anyNodeSchedule() {
        let (a1, a3) = twoRoundZeroProposers(.fastAcceptAnyNode)
        #expect(a1.chosen >= 1 && a3.chosen >= 1)
        #expect(a1.value.bytes == bytes("v"))
        #expect(a3.value.bytes == bytes("w"), "n3 chose w at instance 1: two values at one instance")
        #expect(a3.chosen == 1)
        let (b1, b3) = twoRoundZeroProposers(.none)
        #expect(b1.chosen == 1 && b1.value.bytes == bytes("v"))
        // n3 ran Phase 1, found v at (0, n1), finished it at instance 1 and wrote w at instance 2.
        #expect(b3.chosen == 2 && b3.value.bytes == bytes("w"))
        #expect(b3.value.result(for: rid(1)) == .ok)
    }
}
