import TernConsensus
import TernCore
import Testing

/// A request applies at most once however long its proposer stalls: the de-dup window is
/// bounded, so `KeyValue.floor` says which absences it can vouch for (docs/SERVER.md, "Exactly
/// once"). Found by an independent harness: after a node was paused and resumed, a write took
/// effect twice.
@Suite struct ExactlyOnceTests {
    @Test("The window's floor rises past every request it forgets, never past one it keeps")
    func floorTracksTrimming() {
        var v = KeyValue.absent
        for i in UInt64(1)...3 {
            v = v.applying([(.incr(1), rid(i))], window: 2, instance: i * 10)
        }
        #expect(v.recent.map(\.id) == [rid(2), rid(3)])
        #expect(v.recent.map(\.instance) == [20, 30])
        #expect(v.floor == 10)
        #expect(!v.remembersEverything(from: 10))
        #expect(v.remembersEverything(from: 11))
        // Merged ops of one instance are never trimmed, even beyond the window.
        let merged = v.applying(
            [(.incr(1), rid(4)), (.incr(1), rid(5)), (.incr(1), rid(6))], window: 2, instance: 40)
        #expect(merged.recent.map(\.id) == [rid(4), rid(5), rid(6)])
        #expect(merged.floor == 30)
    }

    /// n1 sends an Accept carrying +1 and stalls; n2 finishes that instance (as Paxos must) and
    /// chooses three more writes, which push the +1 out of a window of 2. When n1 resumes, the
    /// chosen value no longer lists it: n1 must answer `.unknown`, not propose it again.
    func stalledProposer(_ mutant: Mutant) -> (trio: Trio, resumed: [ClientReply]) {
        var config = PaxosConfig()
        config.dedupWindow = 2
        config.mutant = mutant
        var t = Trio(config: config)
        t.propose(n1, .incr(1), id: rid(1), tag: 1)
        // n1 prepares, and its Accept reaches n2 and n3; n1 is paused from then on (everything
        // sent to it is lost).
        var paused = false
        t.run(drop: { from, to, m in
            if from == n1 && isAccept(m) { paused = true }
            return paused && to == n1
        })
        func runWithoutN1(_ t: inout Trio) { t.run(drop: { _, to, _ in to == n1 }) }
        #expect(t.state(n2).accepted?.value.recent.map(\.id) == [rid(1)])
        for (k, tag) in [(UInt64(2), UInt64(2)), (3, 3), (4, 4)] {
            t.propose(n2, .incr(10), id: rid(k), tag: tag)
            runWithoutN1(&t)
        }
        #expect(t.state(n2).value.bytes == bytes("31"), "n2 finished n1's instance, then three more")
        #expect(t.state(n2).value.recent.map(\.id) == [rid(3), rid(4)])
        // n1 resumes: it times out, retransmits, and learns what was chosen meanwhile.
        let before = t.replies.count
        for _ in 0..<300 {
            for n in [n1, n2, n3] { t.tick(n) }
            t.run()
        }
        return (t, Array(t.replies[before...]))
    }

    @Test("A proposer that stalled past the window answers unknown and never re-proposes")
    func stalledProposerAnswersUnknown() {
        let (t, resumed) = stalledProposer(.none)
        #expect(resumed.filter { $0.tag == 1 } == [ClientReply(tag: 1, outcome: .unknown)])
        for n in [n1, n2, n3] { #expect(t.state(n).value.bytes == bytes("31"), "node \(n)") }
    }

    @Test("Mutant forgetfulRetry: the same stall applies the +1 twice (the check can fail)")
    func forgetfulRetryDoublesTheWrite() {
        let (t, _) = stalledProposer(.forgetfulRetry)
        #expect(t.state(n2).value.bytes == bytes("32"))
    }

    @Test("Outbid past the cap, an op an Accept carried stays with its proposer until it settles")
    func outbidAcceptedOpIsKept() {
        var config = PaxosConfig()
        config.rejectionsMax = 1
        var t = Trio(config: config)
        t.propose(n1, .incr(1), id: rid(1), tag: 1)
        // The Accept reaches n2 and n3, their answers are lost from then on.
        var deaf = false
        t.run(drop: { from, to, m in
            if from == n1 && isAccept(m) { deaf = true }
            return deaf && to == n1
        })
        for _ in 0..<400 {
            t.tick(n1)
            t.run(drop: { _, to, _ in to == n1 })
        }
        #expect(!t.replies.contains { $0.tag == 1 }, "no answer while n1 cannot hear anyone")
        for _ in 0..<200 {
            for n in [n1, n2, n3] { t.tick(n) }
            t.run()
        }
        #expect(t.replies.filter { $0.tag == 1 } == [ClientReply(tag: 1, outcome: .done(.number(1)))])
        #expect(t.state(n2).value.bytes == bytes("1"))
    }
}

@Suite struct BallotClockTests {
    @Test("Outbid by a later epoch, the clock joins it instead of leaping past it")
    func joinsLaterEpoch() {
        var a = BallotClock(epoch: 5)
        var b = BallotClock(epoch: 7)
        var last = Ballot(round: 0, node: n1)
        // Two proposers outbidding each other 1000 times: the epoch stays at the larger one.
        for k in 0..<1000 {
            let next = k % 2 == 0 ? a.next(above: last, node: n1) : b.next(above: last, node: n2)
            #expect(next > last)
            last = next
        }
        #expect(a.epoch == 7 && b.epoch == 7)
        #expect(last.epoch == 7)
    }

    @Test("Same epoch, lower node id: one more than the counter it saw")
    func strictlyAbove() {
        var a = BallotClock(epoch: 3)
        let seen = Ballot(round: 3 << 32 | 9, node: n3)
        let b = a.next(above: seen, node: n1)
        #expect(b > seen)
        #expect(b.round == 3 << 32 | 10)
        #expect(a.epochDirty == false)
    }
}
