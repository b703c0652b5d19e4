import TernConsensus
import TernCore
import Testing

/// Appends `seqs` in order to an empty inbox; the head after them.
private func inbox(_ seqs: [UInt64], payload: [UInt8] = [1, 2, 3], timeMs: UInt64 = 1_000) -> [UInt8]? {
    var v: [UInt8]? = nil
    for s in seqs {
        v = InboxHead.applyAppend(v, seq: s, timeMs: timeMs, payload: payload).bytes
    }
    return v
}

@Suite struct InboxTests {
    @Test("Head and bucket encodings round-trip; malformed bytes decode to nil")
    func encoding() throws {
        var h = InboxHead()
        h.last = 9
        h.trimmedThrough = 4
        h.buckets = [InboxBucketRef(first: 1, last: 4, count: 3, lastTimeMs: 77)]
        h.messages = [
            InboxMessage(seq: 7, timeMs: 5, payload: bytes("hi")),
            InboxMessage(seq: 9, timeMs: 6, payload: []),
        ]
        let e = h.encoded()
        #expect(InboxHead.decode(e) == h)
        #expect(InboxHead.decode(Array(e.dropLast())) == nil)
        #expect(InboxHead.decode(e + [0]) == nil)
        #expect(InboxHead.decode(bytes("12")) == nil)
        let b = InboxHead.encodeBucket(h.messages[...])
        #expect(InboxHead.decodeBucket(b) == h.messages)
        #expect(InboxHead.decodeBucket(Array(b.dropLast())) == nil)
    }

    @Test("Append: strictly increasing sequences only; an older or equal one is refused and changes nothing")
    func orderingRule() throws {
        let first = InboxHead.applyAppend(nil, seq: 5, timeMs: 1, payload: bytes("a"))
        #expect(first.result == .inboxAppendedAt(seq: 5, needsSeal: false))
        for late in [UInt64(5), 3, 0] {
            let r = InboxHead.applyAppend(first.bytes, seq: late, timeMs: 2, payload: bytes("b"))
            #expect(r.result == .inboxRefused(last: 5))
            #expect(r.bytes == first.bytes)
        }
        let next = InboxHead.applyAppend(first.bytes, seq: 8, timeMs: 3, payload: bytes("c"))
        #expect(next.result == .inboxAppendedAt(seq: 8, needsSeal: false))
        let h = try #require(next.bytes.flatMap { InboxHead.decode($0) })
        #expect(h.last == 8)
        #expect(h.messages.map(\.seq) == [5, 8])
        #expect(h.messages.map(\.payload) == [bytes("a"), bytes("c")])
        // Not an inbox: refused as the wrong type.
        #expect(InboxHead.applyAppend(bytes("x"), seq: 1, timeMs: 0, payload: []).result == .notANumber)
    }

    @Test("Merged into one instance, an out-of-order append is refused on every replica alike")
    func mergedOps() {
        let ops: [(Operation, RequestID)] = [
            (.inboxAppend(seq: 2, timeMs: 1, payload: bytes("x")), RequestID(client: 1, counter: 1)),
            (.inboxAppend(seq: 1, timeMs: 1, payload: bytes("y")), RequestID(client: 2, counter: 1)),
            (.inboxAppend(seq: 3, timeMs: 1, payload: bytes("z")), RequestID(client: 3, counter: 1)),
        ]
        let v = KeyValue.absent.applying(ops, window: 32, instance: 1)
        #expect(
            v.recent.map(\.result) == [
                .inboxAppendedAt(seq: 2, needsSeal: false), .inboxRefused(last: 2),
                .inboxAppendedAt(seq: 3, needsSeal: false),
            ])
        #expect(InboxHead.decode(v.bytes!)?.messages.map(\.seq) == [2, 3])
        // A retry of an applied request is answered from the de-dup window, not appended twice.
        let again = v.applying([ops[2]], window: 32, instance: 1)
        #expect(InboxHead.decode(again.bytes!)?.messages.map(\.seq) == [2, 3])
    }

    @Test("A full bucket asks for a seal; a head at its bound refuses appends until sealed")
    func sealThresholds() throws {
        let full = inbox(Array(1...64))
        let h = try #require(InboxHead.decode(full!))
        #expect(h.needsSeal)
        #expect(h.sealPrefix?.map(\.seq) == Array(1...64))
        #expect(try #require(InboxHead.decode(inbox(Array(1...63))!)).needsSeal == false)
        #expect(
            InboxHead.applyAppend(inbox(Array(1...63)), seq: 64, timeMs: 0, payload: []).result
                == .inboxAppendedAt(seq: 64, needsSeal: true))
        // By bytes: two 200 KiB messages fill a bucket of one message each.
        let big = [UInt8](repeating: 7, count: 200 << 10)
        let two = inbox([1, 2], payload: big)
        #expect(try #require(InboxHead.decode(two!)).sealPrefix?.map(\.seq) == [1])
        // Exactly a bucket's bytes: not yet sealed, since a later (even empty) message could
        // still join the prefix; once a message does not fit, appends no longer move the prefix.
        let quarter = [UInt8](repeating: 1, count: 64 << 10)
        var exact = inbox([1, 2, 3, 4], payload: quarter)
        #expect(try #require(InboxHead.decode(exact!)).needsSeal == false)
        exact = InboxHead.applyAppend(exact, seq: 5, timeMs: 0, payload: []).bytes
        #expect(try #require(InboxHead.decode(exact!)).needsSeal == false)
        exact = InboxHead.applyAppend(exact, seq: 6, timeMs: 0, payload: [9]).bytes
        let sealing = try #require(InboxHead.decode(exact!))
        #expect(sealing.sealPrefix?.map(\.seq) == [1, 2, 3, 4, 5])
        for s in UInt64(7)...20 {
            exact = InboxHead.applyAppend(exact, seq: s, timeMs: 0, payload: s % 2 == 0 ? [] : [1]).bytes
            #expect(try #require(InboxHead.decode(exact!)).sealPrefix?.map(\.seq) == [1, 2, 3, 4, 5])
        }
        // The hard bound.
        let atBound = inbox(Array(1...UInt64(InboxHead.headMessagesMax)), payload: [])
        #expect(InboxHead.applyAppend(atBound, seq: 10_000, timeMs: 0, payload: []).result == .inboxFull)
    }

    @Test("Seal moves the prefix to the index; a stale seal changes nothing")
    func seal() throws {
        let v = inbox(Array(1...70))
        let r = InboxHead.applySeal(v, first: 1, last: 64, retention: InboxRetention(), nowMs: 2_000)
        #expect(r.result == .inboxSealed(applied: true, dropped: []))
        let h = try #require(InboxHead.decode(r.bytes!))
        #expect(h.buckets == [InboxBucketRef(first: 1, last: 64, count: 64, lastTimeMs: 1_000)])
        #expect(h.messages.map(\.seq) == Array(65...70))
        #expect(h.last == 70)
        // Sealing again with the same range (a second sealer) is a no-op.
        let again = InboxHead.applySeal(
            r.bytes, first: 1, last: 64, retention: InboxRetention(), nowMs: 2_000)
        #expect(again.result == .inboxSealed(applied: false, dropped: []))
        #expect(again.bytes == r.bytes)
        // A range that is not the seal prefix is refused.
        #expect(
            InboxHead.applySeal(v, first: 1, last: 10, retention: InboxRetention(), nowMs: 0).result
                == .inboxSealed(applied: false, dropped: []))
    }

    @Test("Retention by count keeps at least messagesMax; by age drops buckets older than ageMsMax")
    func retention() throws {
        let keep100 = InboxRetention(messagesMax: 100, ageMsMax: 1 << 40)
        var v = inbox(Array(1...64))
        var dropped: [UInt64] = []
        for k in 0..<4 {
            let first = UInt64(64 * k + 1)
            let sealed = InboxHead.applySeal(
                v, first: first, last: first + 63, retention: keep100, nowMs: 1_000)
            guard case .inboxSealed(true, let d) = sealed.result else {
                Issue.record("seal \(k): \(sealed.result)")
                return
            }
            dropped += d
            v = sealed.bytes
            for s in (first + 64)...(first + 127) {
                v = InboxHead.applyAppend(v, seq: s, timeMs: 1_000, payload: [1]).bytes
            }
        }
        let h = try #require(InboxHead.decode(v!))
        #expect(dropped == [1, 65])
        #expect(h.buckets.map(\.first) == [129, 193])
        #expect(h.trimmedThrough == 128)
        #expect(h.messageCount >= 100 && h.messageCount < 100 + 64 + 64)
        // Age: the old bucket goes once its newest message is older than the limit.
        let old = inbox(Array(1...64), timeMs: 1_000)
        let young = InboxHead.applySeal(
            old, first: 1, last: 64, retention: InboxRetention(messagesMax: 1_000, ageMsMax: 500),
            nowMs: 1_400)
        #expect(young.result == .inboxSealed(applied: true, dropped: []))
        var w = young.bytes
        for s in UInt64(65)...128 { w = InboxHead.applyAppend(w, seq: s, timeMs: 1_600, payload: [1]).bytes }
        let aged = InboxHead.applySeal(
            w, first: 65, last: 128, retention: InboxRetention(messagesMax: 1_000, ageMsMax: 500),
            nowMs: 1_600)
        #expect(aged.result == .inboxSealed(applied: true, dropped: [1]))
        #expect(try #require(InboxHead.decode(aged.bytes!)).trimmedThrough == 64)
    }

    /// The inbox operations' wire round trip is in WireTests.operationsAndOutcomes, with the others.
    @Test("New results survive the record codec")
    func codecs() throws {
        let results: [OperationResult] = [
            .inboxAppended(needsSeal: false), .inboxAppended(needsSeal: true), .inboxRefused(last: 99),
            .inboxAppendedAt(seq: 7, needsSeal: false), .inboxAppendedAt(seq: .max, needsSeal: true),
            .inboxFull,
            .inboxSealed(applied: false, dropped: []), .inboxSealed(applied: true, dropped: [1, 65]),
        ]
        var state = KeyState()
        state.chosen = 3
        state.value = KeyValue(
            bytes: inbox([1]),
            recent: results.enumerated().map {
                AppliedRequest(
                    id: RequestID(client: 1, counter: UInt64($0.offset)), result: $0.element, instance: 1)
            })
        #expect(PaxosCodec.decode(PaxosCodec.encode(state)) == state)
    }
}

@Suite struct InboxPaxosTests {
    /// Three proposers, shuffled sequences, a lossy network: every replica ends with one inbox, in
    /// order, holding exactly the appends answered as applied.
    @Test(
        "Competing inbox appends over a lossy network: one ordered inbox, refusals exactly for late ones",
        arguments: UInt64(1)...12)
    func competingAppends(seed: UInt64) throws {
        var t = Trio()
        var rng = SplitMix64(seed: seed)
        var proposed: [UInt64: UInt64] = [:]
        let seqs = Array(UInt64(1)...24).shuffled(using: &rng)
        for (i, s) in seqs.enumerated() {
            let tag = UInt64(i + 1)
            proposed[tag] = s
            t.propose(
                [n1, n2, n3][Int(rng.below(3))], .inboxAppend(seq: s, timeMs: 0, payload: bytes("m\(s)")),
                id: RequestID(client: 9, counter: tag), tag: tag)
            // Deliver a few messages, losing one in ten.
            for _ in 0..<rng.below(8) where !t.inFlight.isEmpty {
                let m = t.inFlight.removeFirst()
                if !rng.chance(0.1) { t.deliver(m) }
            }
        }
        // Heal: deliver everything, tick until every call has its answer.
        for _ in 0..<2_000 {
            t.run()
            if Set(t.replies.map(\.tag)).count == proposed.count { break }
            for n in [n1, n2, n3] { t.tick(n) }
        }
        var outcome: [UInt64: ClientOutcome] = [:]
        for r in t.replies { outcome[r.tag] = r.outcome }
        #expect(outcome.count == proposed.count, "seed \(seed): every proposal answered")
        // Let every replica learn the last chosen instance.
        for _ in 0..<50 {
            for n in [n1, n2, n3] { t.tick(n) }
            t.run()
        }
        let chosen = [n1, n2, n3].map { t.state($0).chosen }.max()!
        let values = [n1, n2, n3].filter { t.state($0).chosen == chosen }.map { t.state($0).value.bytes }
        #expect(Set(values.map { $0 ?? [] }).count == 1, "seed \(seed): one value per instance")
        let head = try #require(values.first.flatMap { $0 }.flatMap { InboxHead.decode($0) })
        let inInbox = head.messages.map(\.seq)
        #expect(
            inInbox == inInbox.sorted() && Set(inInbox).count == inInbox.count,
            "seed \(seed): strictly increasing")
        for (tag, s) in proposed {
            switch outcome[tag] {
            case .done(.inboxAppendedAt(s, _))?:
                #expect(inInbox.contains(s), "seed \(seed): appended \(s) is in the inbox")
            case .done(.inboxRefused(let last))?:
                #expect(!inInbox.contains(s) && last >= s, "seed \(seed): refused \(s) (last \(last))")
            case .retryable?:
                #expect(!inInbox.contains(s), "seed \(seed): a retryable \(s) was not applied")
            case .unknown?:
                break
            default:
                Issue.record("seed \(seed): seq \(s) answered \(String(describing: outcome[tag]))")
            }
        }
        #expect(head.last == inInbox.last ?? 0)
        // The scenario is not vacuous: shuffled sequences always leave some late ones refused.
        let refused = outcome.values.filter { if case .done(.inboxRefused) = $0 { true } else { false } }
            .count
        #expect(
            refused > 0 && !inInbox.isEmpty,
            "seed \(seed): \(refused) refused, \(inInbox) appended of \(seqs)")
    }

    @Test("A bucket is an orphan only if retention dropped it and the index no longer lists it")
    func orphanRule() {
        var h = InboxHead()
        h.trimmedThrough = 128
        h.buckets = [InboxBucketRef(first: 129, last: 192, count: 64, lastTimeMs: 0)]
        #expect(h.isOrphan(bucketFirst: 1))
        #expect(h.isOrphan(bucketFirst: 65))
        #expect(!h.isOrphan(bucketFirst: 129), "listed")
        #expect(!h.isOrphan(bucketFirst: 193), "ahead of its seal")
        h.buckets.insert(InboxBucketRef(first: 65, last: 128, count: 64, lastTimeMs: 0), at: 0)
        #expect(!h.isOrphan(bucketFirst: 65), "still listed")
        #expect(!InboxHead().isOrphan(bucketFirst: 1), "nothing trimmed yet")
    }
}
