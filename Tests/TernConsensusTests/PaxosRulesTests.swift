import TernConsensus
import TernCore
import Testing

/// One test per rule of PAXOS.md, in the style of raft's paper tests.
@Suite struct PaxosRulesTests {
    @Test("Acceptor: a Promise leaves only together with the persisted, synced promise")
    func persistBeforePromise() {
        var t = Trio()
        let b = Ballot(round: 1 << 32 | 1, node: n2)
        let fx = t.replicas[n1]!.step(.prepare(instance: 1, ballot: b), from: n2, ctx: &t.ctx[n1]!)
        #expect(fx.persist?.promised == b)
        #expect(fx.mustSync)
        #expect(fx.messages == [Outgoing(to: n2, message: .promise(instance: 1, ballot: b, accepted: nil))])
    }

    @Test("Acceptor: an Accepted leaves only together with the persisted accepted slot")
    func persistBeforeAccepted() {
        var t = Trio()
        let b = Ballot(round: 1 << 32 | 1, node: n2)
        let v = KeyValue(bytes: bytes("x"))
        let fx = t.replicas[n1]!.step(.accept(instance: 1, ballot: b, value: v), from: n2, ctx: &t.ctx[n1]!)
        #expect(fx.persist?.accepted == AcceptedSlot(instance: 1, ballot: b, value: v))
        #expect(fx.mustSync)
        #expect(fx.messages == [Outgoing(to: n2, message: .accepted(instance: 1, ballot: b))])
    }

    @Test("Acceptor: promises only ballots at least its promise; lower ones are rejected, state unchanged")
    func promiseOnlyHigher() {
        var t = Trio()
        let high = Ballot(round: 1 << 32 | 5, node: n2)
        let low = Ballot(round: 1 << 32 | 4, node: n3)
        _ = t.replicas[n1]!.step(.prepare(instance: 1, ballot: high), from: n2, ctx: &t.ctx[n1]!)
        let fx = t.replicas[n1]!.step(.prepare(instance: 1, ballot: low), from: n3, ctx: &t.ctx[n1]!)
        #expect(fx.persist == nil)
        #expect(
            fx.messages == [
                Outgoing(to: n3, message: .reject(instance: 1, ballot: low, promised: high, chosen: 0))
            ])
        let fx2 = t.replicas[n1]!.step(
            .accept(instance: 1, ballot: low, value: .absent), from: n3, ctx: &t.ctx[n1]!)
        #expect(fx2.persist == nil)
        #expect(t.state(n1).accepted == nil)
    }

    @Test(
        "Proposer: a higher accepted value in the promises is proposed first, our write at the next instance")
    func recoveryOfAcceptedValue() {
        var t = Trio()
        // n3 had accepted "old" at instance 1 with a low ballot, then went quiet.
        let old = KeyValue(bytes: bytes("old"))
        let low = Ballot(round: 1, node: n3)
        _ = t.replicas[n2]!.step(.accept(instance: 1, ballot: low, value: old), from: n3, ctx: &t.ctx[n2]!)
        t.propose(n1, .put(bytes("new")), id: rid(1), tag: 1)
        t.run(drop: { from, to, _ in from == n3 || to == n3 })
        #expect(t.state(n1).chosen == 2)
        #expect(t.state(n1).value.bytes == bytes("new"))
        // Instance 1 was the recovered value: n2 learned it before instance 2.
        let acceptsAt1 = t.log.flatMap { $0.1.messages }.compactMap { m -> KeyValue? in
            if case .accept(1, _, let v) = m.message { return v }
            return nil
        }
        #expect(acceptsAt1.allSatisfy { $0 == old })
        #expect(t.replies == [ClientReply(tag: 1, outcome: .done(.ok))])
    }

    @Test("Fast path: after its value was chosen, the proposer skips Prepare at the next instance")
    func fastPath() {
        var t = Trio()
        t.propose(n1, .put(bytes("a")), id: rid(1), tag: 1)
        t.run()
        #expect(t.replicas[n1]!.fastBallot != nil)
        let before = t.log.count
        t.propose(n1, .put(bytes("b")), id: rid(2), tag: 2)
        let sent = t.log[before...].flatMap { $0.1.messages }.map(\.message)
        #expect(!sent.contains(where: isPrepare))
        #expect(sent.contains(where: isAccept))
        t.run()
        #expect(t.state(n1).chosen == 2)
        #expect(t.state(n2).value.bytes == bytes("b"))
    }

    @Test("Commit: peers that got the Accept learn the chosen value from a Commit, without the value")
    func commitCarriesNoValue() {
        var t = Trio()
        t.propose(n1, .put(bytes("a")), id: rid(1), tag: 1)
        t.run()
        let sent = t.log.filter { $0.0 == n1 }.flatMap { $0.1.messages }.map(\.message)
        #expect(!sent.contains { if case .chosen = $0 { true } else { false } })
        #expect(sent.contains { if case .commit(1, _) = $0 { true } else { false } })
        for n in [n2, n3] {
            #expect(t.state(n).chosen == 1)
            #expect(t.state(n).value.bytes == bytes("a"))
        }
    }

    @Test("Commit: a peer whose slot is not (instance, ballot) asks for the value and learns it")
    func commitWithoutTheSlotLearns() {
        // The Accept to n3 is lost: n3 holds no slot, so the Commit makes it ask n1 (`learn`).
        var t = Trio()
        t.propose(n1, .put(bytes("a")), id: rid(1), tag: 1)
        t.run(drop: { _, to, m in to == n3 && isAccept(m) })
        #expect(t.state(n3).chosen == 1)
        #expect(t.state(n3).value.bytes == bytes("a"))
        #expect(t.log.contains { $0.0 == n3 && $0.1.messages.contains { $0.message == .learn(have: 0) } })
        // A slot from another ballot at that instance is not taken as the chosen value.
        var u = Trio()
        let low = Ballot(round: 1 << 32 | 1, node: n2)
        _ = u.replicas[n3]!.step(
            .accept(instance: 1, ballot: low, value: KeyValue(bytes: bytes("other"))), from: n2,
            ctx: &u.ctx[n3]!)
        let high = Ballot(round: 2 << 32 | 1, node: n1)
        let fx = u.replicas[n3]!.step(.commit(instance: 1, ballot: high), from: n1, ctx: &u.ctx[n3]!)
        #expect(u.state(n3).chosen == 0)
        #expect(fx.messages.map(\.message) == [.learn(have: 0)])
        // A damaged replica does not trust its slot either.
        var d = Trio(loaded: [n3: .damaged])
        let fd = d.replicas[n3]!.step(.commit(instance: 1, ballot: high), from: n1, ctx: &d.ctx[n3]!)
        #expect(d.state(n3).chosen == 0)
        #expect(fd.messages.map(\.message) == [.learn(have: 0)])
    }

    @Test("A higher Prepare elsewhere ends the fast path: the old ballot's Accept is rejected")
    func fastPathEndsOnHigherBallot() {
        var t = Trio()
        t.propose(n1, .put(bytes("a")), id: rid(1), tag: 1)
        t.run()
        t.propose(n2, .put(bytes("b")), id: rid(2), tag: 2)
        t.run()
        t.propose(n1, .put(bytes("c")), id: rid(3), tag: 3)
        t.run()
        for _ in 0..<200 {
            for n in [n1, n2, n3] { t.tick(n) }
            t.run()
        }
        #expect(t.state(n1).value.bytes == bytes("c"))
        #expect(t.state(n1).chosen == 3)
        #expect(Set(t.replies.map(\.tag)) == [1, 2, 3])
    }

    @Test("Reject → randomised back-off, then a retry with a higher ballot; bounded, then retryable")
    func rejectBackoff() {
        var config = PaxosConfig()
        config.rejectionsMax = 2
        var t = Trio(config: config)
        // Both peers promised a huge ballot to someone else.
        let huge = Ballot(round: 9 << 32 | 1, node: n3)
        for n in [n2, n3] {
            _ = t.replicas[n]!.step(.prepare(instance: 1, ballot: huge), from: n3, ctx: &t.ctx[n]!)
        }
        t.propose(n1, .incr(1), id: rid(1), tag: 1)
        // Only n2 answers (n3 is cut off), so n1 is rejected each time.
        t.run(drop: { from, to, _ in from == n3 || to == n3 })
        #expect(t.replicas[n1]!.rejections == 1)
        let prepares = t.log.flatMap { $0.1.messages }.filter { isPrepare($0.message) }.count
        t.tick(n1)  // inside the back-off window (≥ 1 tick): nothing new unless it expired
        var ballots: [Ballot] = []
        for _ in 0..<400 {
            t.tick(n1)
            for m in t.inFlight where m.from == n1 {
                if case .prepare(_, let b) = m.message { ballots.append(b) }
            }
            t.run(drop: { from, to, _ in from == n3 || to == n3 })
        }
        #expect(prepares > 0)
        #expect(ballots.first.map { $0 > huge } ?? false, "the retry outbids what it saw")
        // n1 does eventually win (its new ballot is above `huge`).
        #expect(t.replies.contains(ClientReply(tag: 1, outcome: .done(.number(1)))))
    }

    @Test("Outbid beyond the cap: the client gets a retryable error (or unknown if an Accept left)")
    func boundedRetries() {
        var config = PaxosConfig()
        config.rejectionsMax = 1
        var t = Trio(config: config)
        t.propose(n1, .incr(1), id: rid(1), tag: 1)
        // Nobody answers: every Prepare is lost; timeouts count as rejections.
        for _ in 0..<400 {
            t.tick(n1)
            t.run(drop: { from, to, _ in from != to })
        }
        #expect(t.replies == [ClientReply(tag: 1, outcome: .retryable)])
    }

    @Test("Read: a peer with a later chosen instance is caught up from, and the read sees that value")
    func readSeesLatest() {
        var t = Trio()
        t.propose(n2, .put(bytes("v1")), id: rid(1), tag: 1)
        // n1 never hears about it.
        t.run(drop: { _, to, m in
            if case .chosen = m { return to == n1 }
            return false
        })
        #expect(t.state(n1).chosen <= 1)
        t.read(n1, tag: 9)
        t.run()
        #expect(t.replies.last == ClientReply(tag: 9, outcome: .value(bytes("v1"))))
    }

    @Test("Read: an open accepted slot is finished before the read answers")
    func readFinishesOpenSlot() {
        var t = Trio()
        // n3 proposes; only n2 accepts, then n3 disappears.
        let b = Ballot(round: 1 << 32 | 1, node: n3)
        let v = KeyValue(bytes: bytes("half"))
        _ = t.replicas[n2]!.step(.accept(instance: 1, ballot: b, value: v), from: n3, ctx: &t.ctx[n2]!)
        t.read(n1, tag: 5)
        for _ in 0..<100 {
            t.tick(n1)
            t.run(drop: { from, to, _ in from == n3 || to == n3 })
        }
        #expect(t.replies == [ClientReply(tag: 5, outcome: .value(bytes("half")))])
        #expect(t.state(n1).chosen == 1)
    }

    @Test("Stale-ok read answers locally without a message")
    func staleRead() {
        var t = Trio()
        t.read(n1, tag: 1, staleOK: true)
        #expect(t.inFlight.isEmpty)
        #expect(t.replies == [ClientReply(tag: 1, outcome: .value(nil))])
    }

    @Test("Damaged key: refuses Prepare, Accept and ReadCheck; recovers only with both peers")
    func damagedRefusesToVote() {
        var t = Trio(loaded: [n1: .damaged])
        let b = Ballot(round: 1 << 32 | 1, node: n2)
        for m: PaxosMessage in [
            .prepare(instance: 1, ballot: b), .accept(instance: 1, ballot: b, value: .absent),
            .readCheck(nonce: 1),
        ] {
            let fx = t.replicas[n1]!.step(m, from: n2, ctx: &t.ctx[n1]!)
            #expect(fx.messages.isEmpty && fx.persist == nil)
        }
        #expect(t.replicas[n1]!.damaged)
        // Only n2 reachable: not enough, the key stays damaged.
        for _ in 0..<60 {
            t.tick(n1)
            t.run(drop: { from, to, _ in from == n3 || to == n3 })
        }
        #expect(t.replicas[n1]!.damaged)
        t.inFlight.removeAll()
        for _ in 0..<200 {
            t.tick(n1)
            t.run()
        }
        #expect(!t.replicas[n1]!.damaged)
        #expect(t.state(n1).promised > .zero)
    }

    @Test("Damaged key: learning a chosen value writes nothing, so the damage survives a restart")
    func damagedWritesNothing() {
        var t = Trio(loaded: [n1: .damaged])
        let fx = t.replicas[n1]!.step(
            .learnReply(instance: 4, value: KeyValue(bytes: bytes("x"))), from: n2, ctx: &t.ctx[n1]!)
        #expect(fx.persist == nil)
        #expect(t.replicas[n1]!.damaged)
        #expect(t.state(n1).chosen == 4)
    }

    @Test("Damaged key (recovery): an accepted value reported by a peer is adopted, never dropped")
    func damagedAdoptsAcceptedSlot() {
        var t = Trio(loaded: [n1: .damaged])
        let b = Ballot(round: 1 << 32 | 1, node: n3)
        let v = KeyValue(bytes: bytes("kept"))
        _ = t.replicas[n2]!.step(.accept(instance: 1, ballot: b, value: v), from: n3, ctx: &t.ctx[n2]!)
        for _ in 0..<200 {
            t.tick(n1)
            t.run()
        }
        #expect(!t.replicas[n1]!.damaged)
        #expect(t.state(n1).value == v || t.state(n1).accepted?.value == v)
    }

    @Test("Damaged key (recovery): one round trip — recover to both peers, both promise durably, adopt")
    func damagedRecoversInOneRoundTrip() {
        var t = Trio(loaded: [n1: .damaged])
        // n2 and n3 chose "v" at instance 3; n3 also holds an open slot at 4.
        let v = KeyValue(bytes: bytes("v"))
        let slot = AcceptedSlot(
            instance: 4, ballot: Ballot(round: 9, node: n3), value: KeyValue(bytes: bytes("w")))
        for n in [n2, n3] {
            _ = t.replicas[n]!.step(.chosen(instance: 3, value: v), from: n1, ctx: &t.ctx[n]!)
        }
        _ = t.replicas[n3]!.step(
            .accept(instance: 4, ballot: slot.ballot, value: slot.value), from: n3, ctx: &t.ctx[n3]!)
        t.tick(n1, times: 1)
        // The damaged replica asks both peers at once, naming no instance; no Prepare from it.
        let asked = t.inFlight.filter { $0.from == n1 }
        #expect(asked.count == 2)
        guard case .recover(let b) = asked[0].message else {
            Issue.record("expected recover, got \(asked[0].message)")
            return
        }
        // Each peer's answer leaves together with its synced promise of b.
        for m in asked {
            let fx = t.replicas[m.to]!.step(m.message, from: n1, ctx: &t.ctx[m.to]!)
            #expect(fx.persist?.promised == b && fx.mustSync)
            t.record(m.to, fx)
        }
        t.inFlight.removeAll { $0.from == n1 }
        let answers = t.inFlight
        #expect(
            answers.count == 2
                && answers.allSatisfy { if case .recovery = $0.message { true } else { false } })
        for a in answers { t.deliver(a) }
        t.inFlight.removeFirst(answers.count)
        // Recovered after one round trip: chosen 3 learned, promise b, the slot at 4 adopted and
        // being finished under b.
        #expect(!t.replicas[n1]!.damaged)
        #expect(t.state(n1).chosen == 3 && t.state(n1).value == v)
        #expect(t.state(n1).promised == b)
        #expect(t.state(n1).accepted == slot)
        #expect(t.log.last.map { $0.0 == n1 && $0.1.mustSync && $0.1.persist?.promised == b } == true)
        #expect(
            t.inFlight.contains {
                $0.from == n1 && $0.message == .accept(instance: 4, ballot: b, value: slot.value)
            })
        t.run()
        #expect(t.state(n1).chosen == 4 && t.state(n1).value == slot.value)
    }

    /// Seed 215 of the restoring mix: a node rebuilding learner-only had recovered a key and
    /// promised 39.1@n3 for it; it restarted (still learner-only: every key loads damaged),
    /// recovered the key again under 38.9@n2 — both peers had forgotten or never heard 39.1 — and
    /// its durable promise went back. The record it no longer trusts still bounds its recovery.
    @Test("Damaged key (recovery): a readable but untrusted record's promise bounds the recovery ballot")
    func damagedRecoveryAboveUntrustedPromise() {
        var t = Trio(loaded: [n1: .damaged])
        let owed = Ballot(round: 39 << 32 | 1, node: n3)
        t.replicas[n1] = KeyReplica(key: key, me: n1, peers: [n2, n3], loaded: .damaged, promisedFloor: owed)
        t.tick(n1)
        guard case .recover(let b)? = t.inFlight.first(where: { $0.from == n1 })?.message else {
            Issue.record("expected recover")
            return
        }
        #expect(b > owed)
        t.run()
        for _ in 0..<50 {
            t.tick(n1)
            t.run()
        }
        #expect(!t.replicas[n1]!.damaged)
        #expect(t.state(n1).promised > owed)
    }

    @Test("Damaged key (recovery): a peer that promised a higher ballot refuses; a higher ballot wins")
    func damagedRecoveryOutbid() {
        var t = Trio(loaded: [n1: .damaged])
        let high = Ballot(round: 5 << 32 | 1, node: n3)
        _ = t.replicas[n2]!.step(.prepare(instance: 1, ballot: high), from: n3, ctx: &t.ctx[n2]!)
        t.tick(n1)
        let asked = t.inFlight.filter { $0.to == n2 }
        guard case .recover(let low)? = asked.first?.message else {
            Issue.record("expected recover")
            return
        }
        #expect(low < high)
        let fx = t.replicas[n2]!.step(.recover(ballot: low), from: n1, ctx: &t.ctx[n2]!)
        #expect(fx.persist == nil)
        #expect(
            fx.messages == [
                Outgoing(
                    to: n1,
                    message: .recovery(ballot: low, promised: high, chosen: 0, value: .absent, accepted: nil))
            ])
        for _ in 0..<300 {
            t.tick(n1)
            t.run()
        }
        #expect(!t.replicas[n1]!.damaged)
        #expect(t.state(n1).promised > high)
    }

    @Test("Merging: N queued writes travel in one instance and each caller gets its own result")
    func merging() {
        var t = Trio()
        t.propose(n1, .incr(1), id: rid(1), tag: 1)
        t.propose(n1, .incr(2), id: rid(2), tag: 2)
        t.propose(n1, .incr(3), id: rid(3), tag: 3)
        t.run()
        #expect(t.state(n1).chosen == 1)
        #expect(t.state(n1).value.bytes == bytes("6"))
        #expect(
            Set(t.replies) == [
                ClientReply(tag: 1, outcome: .done(.number(1))),
                ClientReply(tag: 2, outcome: .done(.number(3))),
                ClientReply(tag: 3, outcome: .done(.number(6))),
            ])
    }

    @Test("De-dup: a retried request (same id) through another replica is not applied twice")
    func dedup() {
        var t = Trio()
        t.propose(n1, .incr(5), id: rid(1), tag: 1)
        t.run()
        t.propose(n2, .incr(5), id: rid(1), tag: 2)
        t.run()
        for _ in 0..<50 {
            for n in [n1, n2, n3] { t.tick(n) }
            t.run()
        }
        #expect(t.state(n2).value.bytes == bytes("5"))
        #expect(t.replies.contains(ClientReply(tag: 2, outcome: .done(.number(5)))))
    }

    @Test("Operations: cas, delete, append bound, incr on a non-number")
    func operations() {
        let v = KeyValue.absent.applying(
            [
                (.cas(expected: nil, new: bytes("a")), rid(1)),
                (.cas(expected: bytes("x"), new: bytes("b")), rid(2)),
                (.append(bytes("bc"), maxBytes: 3), rid(3)), (.append(bytes("d"), maxBytes: 3), rid(4)),
                (.incr(1), rid(5)),
            ], window: 8, instance: 1)
        #expect(v.bytes == bytes("abc"))
        #expect(
            v.recent.map(\.result) == [.swapped(true), .swapped(false), .number(3), .tooLarge, .notANumber])
        let w = v.applying([(.delete, rid(6))], window: 2, instance: 1)
        #expect(w.bytes == nil)
        #expect(w.recent.count == 2)
    }
}
