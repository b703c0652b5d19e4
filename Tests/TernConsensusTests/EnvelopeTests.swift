import TernConsensus
import TernCore
import Testing

/// A fresh envelope's bytes.
private func created(total: UInt64, count: UInt32, deadlineMs: UInt64 = 0, seed: UInt64 = 7) -> [UInt8]? {
    var v: [UInt8]? = nil
    let r = EnvelopeState.apply(
        &v, .create(totalCents: total, count: count, deadlineMs: deadlineMs, seed: seed))
    #expect(r == .envelope(.created))
    return v
}

private func state(_ v: [UInt8]?) throws -> EnvelopeState {
    let bytes = try #require(v)
    return try #require(EnvelopeState.decode(bytes))
}

/// The bank invariant and the share rules on a decoded envelope.
private func checkInvariants(_ s: EnvelopeState) {
    #expect(s.sharesTotal + s.remaining + s.refunded == s.totalCents)
    #expect(s.openers.count <= Int(s.count))
    #expect(s.openers.allSatisfy { $0.amount >= 1 })
    #expect(Set(s.openers.map(\.uid)).count == s.openers.count)
    // Every opener still to come can get a cent.
    if !s.expired { #expect(s.remaining >= UInt64(Int(s.count) - s.openers.count)) }
}

@Suite struct EnvelopeTests {
    @Test("Encoding round-trips; truncated, extended or foreign bytes are not an envelope")
    func encoding() throws {
        var v = created(total: 500, count: 4, deadlineMs: 99, seed: 3)
        _ = EnvelopeState.apply(&v, .open(uid: 11, nowMs: 1))
        let s = try state(v)
        #expect(s.encoded() == v)
        #expect(s.totalCents == 500 && s.count == 4 && s.deadlineMs == 99 && s.openers.count == 1)
        #expect(EnvelopeState.decode(Array(v!.dropLast())) == nil)
        #expect(EnvelopeState.decode(v! + [0]) == nil)
        #expect(EnvelopeState.decode(Array("12".utf8)) == nil)
        // A key holding something else answers the wrong-type result and is left alone.
        var other: [UInt8]? = Array("hello".utf8)
        #expect(EnvelopeState.apply(&other, .open(uid: 1, nowMs: 0)) == .notANumber)
        #expect(other == Array("hello".utf8))
    }

    @Test(
        "Bank invariant: shares sum to the total exactly, every share ≥ 1, last opener takes the rest",
        arguments: [(UInt64(1), UInt32(1)), (5, 5), (6, 5), (100, 3), (10_000, 97), (4_294_967_295, 1_000)])
    func bank(total: UInt64, count: UInt32) throws {
        for seed in UInt64(0)..<4 {
            var v = created(total: total, count: count, seed: seed)
            for u in 0..<UInt64(count) {
                guard case .envelope(.opened(let a, false)) = EnvelopeState.apply(&v, .open(uid: u, nowMs: 0))
                else {
                    Issue.record("open \(u) refused")
                    return
                }
                #expect(a >= 1)
                if u % 97 == 0 || u == UInt64(count) - 1 { checkInvariants(try state(v)) }
            }
            let s = try state(v)
            #expect(s.remaining == 0)
            #expect(s.sharesTotal == total)
            #expect(EnvelopeState.apply(&v, .open(uid: 1_000_000, nowMs: 0)) == .envelope(.empty))
        }
    }

    @Test("The draw stays within [1, 2 × remaining ÷ left] and leaves a cent for each later opener")
    func drawBounds() {
        for seed in UInt64(0)..<200 {
            for (remaining, left) in [(UInt64(3), UInt32(3)), (10, 3), (1_000, 7), (2, 2), (9, 2)] {
                let a = EnvelopeState.draw(
                    seed: seed, index: UInt32(seed % 5), remaining: remaining, left: left)
                #expect(a >= 1)
                #expect(a <= 2 * remaining / UInt64(left))
                #expect(remaining - a >= UInt64(left - 1))
            }
            #expect(EnvelopeState.draw(seed: seed, index: 0, remaining: 42, left: 1) == 42)
        }
    }

    @Test("Opening twice answers the first amount and changes nothing")
    func doubleOpen() throws {
        var v = created(total: 1_000, count: 10)
        guard case .envelope(.opened(let a, false)) = EnvelopeState.apply(&v, .open(uid: 5, nowMs: 0)) else {
            Issue.record("first open")
            return
        }
        let before = v
        #expect(
            EnvelopeState.apply(&v, .open(uid: 5, nowMs: 0)) == .envelope(.opened(amount: a, again: true)))
        #expect(v == before)
    }

    @Test("Same seed, same amounts: the draw is a function of the replicated state only")
    func deterministic() throws {
        var a = created(total: 777, count: 9, seed: 42)
        var b = created(total: 777, count: 9, seed: 42)
        for u in UInt64(0)..<9 {
            #expect(
                EnvelopeState.apply(&a, .open(uid: u, nowMs: 0))
                    == EnvelopeState.apply(&b, .open(uid: u, nowMs: 0)))
        }
        #expect(a == b)
        var c = created(total: 777, count: 9, seed: 43)
        for u in UInt64(0)..<9 { _ = EnvelopeState.apply(&c, .open(uid: u, nowMs: 0)) }
        #expect(try state(c).openers != (try state(a)).openers)
    }

    @Test("Expiry refunds the rest once; later opens are refused, earlier openers keep their amount")
    func expiry() throws {
        var v = created(total: 1_000, count: 10, deadlineMs: 500)
        guard case .envelope(.opened(let a, false)) = EnvelopeState.apply(&v, .open(uid: 1, nowMs: 499))
        else {
            Issue.record("open before the deadline")
            return
        }
        #expect(EnvelopeState.apply(&v, .expire(nowMs: 499)) == .envelope(.notExpired))
        #expect(
            EnvelopeState.apply(&v, .open(uid: 2, nowMs: 500)) == .envelope(.expired(refunded: 1_000 - a)))
        // A proposer whose clock is behind cannot reopen it: the decision is in the value.
        #expect(EnvelopeState.apply(&v, .open(uid: 3, nowMs: 10)) == .envelope(.expired(refunded: 1_000 - a)))
        #expect(EnvelopeState.apply(&v, .expire(nowMs: 900)) == .envelope(.expired(refunded: 1_000 - a)))
        #expect(
            EnvelopeState.apply(&v, .open(uid: 1, nowMs: 900)) == .envelope(.opened(amount: a, again: true)))
        let s = try state(v)
        #expect(s.expired && s.remaining == 0 && s.refunded == 1_000 - a)
        checkInvariants(s)
        // No deadline: never expires.
        var forever = created(total: 10, count: 2)
        #expect(EnvelopeState.apply(&forever, .expire(nowMs: .max)) == .envelope(.notExpired))
    }

    @Test("Create refuses an existing key; open and expire of a missing envelope say so")
    func missingAndExisting() {
        var v = created(total: 10, count: 2)
        #expect(
            EnvelopeState.apply(&v, .create(totalCents: 10, count: 2, deadlineMs: 0, seed: 1))
                == .envelope(.exists))
        var none: [UInt8]? = nil
        #expect(EnvelopeState.apply(&none, .open(uid: 1, nowMs: 0)) == .envelope(.noSuchEnvelope))
        #expect(EnvelopeState.apply(&none, .expire(nowMs: 0)) == .envelope(.noSuchEnvelope))
        #expect(none == nil)
    }

    @Test("Merged opens in one instance each see what the previous left (KeyValue.applying)")
    func merged() throws {
        var kv = KeyValue()
        kv = kv.applying(
            [
                (
                    .envelope(.create(totalCents: 300, count: 50, deadlineMs: 0, seed: 9)),
                    RequestID(client: 1, counter: 1)
                )
            ],
            window: 32, instance: 1)
        let opens = (0..<60).map {
            (
                Operation.envelope(.open(uid: UInt64($0 % 55), nowMs: 0)),
                RequestID(client: 2, counter: UInt64($0))
            )
        }
        kv = kv.applying(opens, window: 32, instance: 2)
        let s = try state(kv.bytes)
        #expect(s.openers.count == 50)
        #expect(s.remaining == 0)
        checkInvariants(s)
        #expect(
            kv.result(for: RequestID(client: 2, counter: 55))
                == .envelope(.opened(amount: s.share(of: 0)!, again: true)))
        #expect(
            kv.result(for: RequestID(client: 2, counter: 59))
                == .envelope(.opened(amount: s.share(of: 4)!, again: true)))
    }

    @Test("Operations and results round-trip the wire (tags 40…47); bad CREATE bounds are malformed")
    func wire() {
        let ops: [Operation] = [
            .envelope(.create(totalCents: 100, count: 3, deadlineMs: 5, seed: 6)),
            .envelope(.open(uid: .max, nowMs: 8)), .envelope(.expire(nowMs: 9)),
            .envelope(.openDrawn(uid: 1, nowMs: 2, amount: 3)),
        ]
        for op in ops {
            var w = ByteWriter()
            PaxosWire.encode(op, into: &w)
            var r = ByteReader(w.bytes)
            #expect(PaxosWire.decodeOperation(&r) == op)
            #expect(r.atEnd)
        }
        for bad in [(UInt64(2), UInt32(3)), (5, 0), (100_000, 10_001), (UInt64(UInt32.max) + 1, 3)] {
            var w = ByteWriter()
            PaxosWire.encode(
                .envelope(.create(totalCents: bad.0, count: bad.1, deadlineMs: 0, seed: 0)), into: &w)
            var r = ByteReader(w.bytes)
            #expect(PaxosWire.decodeOperation(&r) == nil)
        }
        let results: [EnvelopeResult] = [
            .created, .exists, .noSuchEnvelope, .opened(amount: 5, again: false),
            .opened(amount: 6, again: true),
            .empty, .expired(refunded: 9), .notExpired,
        ]
        for res in results {
            var w = ByteWriter()
            w.result(.envelope(res))
            var r = ByteReader(w.bytes)
            #expect(r.result() == .envelope(res))
            #expect(r.atEnd)
        }
    }
}
