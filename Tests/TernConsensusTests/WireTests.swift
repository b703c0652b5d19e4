import TernCore
import Testing

@testable import TernConsensus

@Suite struct WireTests {
    static let slot = AcceptedSlot(
        instance: 9, ballot: Ballot(round: 3 << 32 | 4, node: n2),
        value: KeyValue(
            bytes: bytes("slot"),
            recent: [AppliedRequest(id: rid(1), result: .previous(bytes("p")), instance: 1)]))
    static let value = KeyValue(
        bytes: bytes("value"),
        recent: [
            AppliedRequest(id: rid(2), result: .ok, instance: 2),
            AppliedRequest(id: rid(3), result: .number(-7), instance: 3),
            AppliedRequest(id: rid(4), result: .swapped(false), instance: 4),
            AppliedRequest(id: rid(5), result: .existed(true), instance: 5),
            AppliedRequest(id: rid(6), result: .previous(nil), instance: 6),
            AppliedRequest(id: rid(7), result: .previousForgotten, instance: 7),
            AppliedRequest(id: rid(8), result: .tooLarge, instance: 8),
            AppliedRequest(id: rid(9), result: .notANumber, instance: 9),
        ], floor: 1)
    static let b = Ballot(round: 1 << 32 | 2, node: n1)
    /// One of every message kind.
    static let messages: [PaxosMessage] = [
        .prepare(instance: 1, ballot: b), .promise(instance: 2, ballot: b, accepted: nil),
        .promise(instance: 9, ballot: b, accepted: slot), .accept(instance: 3, ballot: b, value: value),
        .accepted(instance: 4, ballot: b), .reject(instance: 5, ballot: b, promised: slot.ballot, chosen: 77),
        .chosen(instance: 6, value: .absent), .readCheck(nonce: 1 << 41 | 5),
        .readState(nonce: 8, chosen: 9, accepted: slot), .readState(nonce: 8, chosen: 9, accepted: nil),
        .learn(have: 10), .learnReply(instance: 11, value: value),
        .recover(ballot: Ballot(round: 7 << 32 | 1, node: NodeID(3))),
        .commit(instance: 14, ballot: b),
        .recovery(
            ballot: Ballot(round: 7 << 32 | 1, node: NodeID(3)),
            promised: Ballot(round: 7 << 32 | 1, node: NodeID(3)),
            chosen: 12, value: value,
            accepted: AcceptedSlot(instance: 13, ballot: Ballot(round: 2, node: NodeID(1)), value: value)),
    ]
    static let frame = Frame(
        from: n1, to: n3,
        items: messages.enumerated().map {
            FrameItem(key: Array("key\($0.offset)".utf8), message: $0.element)
        })

    @Test("Every message kind round-trips")
    func roundTrip() throws {
        let bytes = PaxosWire.encode(Self.frame)
        #expect(try PaxosWire.decode(bytes) == Self.frame)
        let empty = Frame(from: n2, to: n1, items: [])
        #expect(try PaxosWire.decode(PaxosWire.encode(empty)) == empty)
        // Behind a node's envelope byte, as `NodeCore` sends and reads frames: the same bytes.
        let enveloped = PaxosWire.encode(Self.frame, after: [1])
        #expect(enveloped == [1] + bytes)
        #expect(try PaxosWire.decode(enveloped, from: 1) == Self.frame)
        #expect(throws: WireError.self) { try PaxosWire.decode(enveloped, from: 2) }
        #expect(throws: WireError.self) { try PaxosWire.decode([1], from: 1) }
    }

    @Test("Every truncation is refused, never a crash")
    func truncation() {
        let bytes = PaxosWire.encode(Self.frame)
        for n in 0..<bytes.count {
            #expect(throws: WireError.self) { try PaxosWire.decode(Array(bytes.prefix(n))) }
        }
        #expect(throws: WireError.self) { try PaxosWire.decode(bytes + [0]) }
    }

    @Test("Wrong version, unknown tags, huge counts and lengths are refused")
    func garbage() {
        var bytes = PaxosWire.encode(Self.frame)
        bytes[0] = PaxosWire.version &+ 1
        #expect(throws: WireError.self) { try PaxosWire.decode(bytes) }
        // count = 2^32-1 items in a few bytes
        #expect(throws: WireError.self) {
            try PaxosWire.decode([PaxosWire.version, 1, 0, 0, 0, 2, 0, 0, 0, 255, 255, 255, 255])
        }
        // one item whose key claims 4 GiB
        #expect(throws: WireError.self) {
            try PaxosWire.decode(
                [PaxosWire.version, 1, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0] + [255, 255, 255, 255]
                    + Array(repeating: 0, count: 12))
        }
        // unknown message tag
        #expect(throws: WireError.self) {
            try PaxosWire.decode(
                [PaxosWire.version, 1, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0] + [0, 0, 0, 0, 42]
                    + Array(repeating: 0, count: 20))
        }
    }

    @Test("Random bytes and random mutations of a valid frame never crash the decoder")
    func fuzz() {
        var rng = SplitMix64(seed: 99)
        let valid = PaxosWire.encode(Self.frame)
        for _ in 0..<3000 {
            var b = valid
            for _ in 0..<(1 + Int(rng.below(4))) {
                b[Int(rng.below(UInt64(b.count)))] = UInt8(truncatingIfNeeded: rng.next())
            }
            if let f = try? PaxosWire.decode(b) { #expect(PaxosWire.encode(f) == b) }
            let junk = (0..<Int(rng.below(64))).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            _ = try? PaxosWire.decode(junk)
        }
    }

    @Test("Operations and outcomes round-trip; malformed ones decode to nil")
    func operationsAndOutcomes() {
        let ops: [Operation] = [
            .put(bytes("v")), .delete, .incr(-5), .cas(expected: nil, new: bytes("n")),
            .cas(expected: bytes("e"), new: []), .append(bytes("a"), maxBytes: 1 << 20),
            .set(bytes("s"), condition: .ifPresent, returnOld: true),
            .set([], condition: .ifAbsent, returnOld: false),
            .remove,
            .inboxAppend(seq: 42, timeMs: 7, payload: bytes("payload")),
            .inboxSeal(first: 1, last: 64, retention: InboxRetention(messagesMax: 5, ageMsMax: 6), nowMs: 9),
        ]
        for op in ops {
            var w = ByteWriter()
            PaxosWire.encode(op, into: &w)
            var r = ByteReader(w.bytes)
            #expect(PaxosWire.decodeOperation(&r) == op)
            #expect(r.atEnd)
            for n in 0..<w.bytes.count {
                var t = ByteReader(Array(w.bytes.prefix(n)))
                #expect(PaxosWire.decodeOperation(&t) == nil)
            }
        }
        let outcomes: [ClientOutcome] = [
            .done(.previous(bytes("old"))), .done(.existed(false)), .value(nil), .value([]),
            .value(bytes("x")),
            .retryable, .unknown,
        ]
        for o in outcomes {
            var w = ByteWriter()
            PaxosWire.encode(o, into: &w)
            var r = ByteReader(w.bytes)
            #expect(PaxosWire.decodeOutcome(&r) == o)
        }
        var bad = ByteReader([5, 0, 0, 0, 0, 9, 0])
        #expect(PaxosWire.decodeOperation(&bad) == nil)
    }

    @Test("The record codec keeps the new results")
    func recordCodec() {
        var st = KeyState()
        st.chosen = 3
        st.value = Self.value
        st.accepted = Self.slot
        #expect(PaxosCodec.decode(PaxosCodec.encode(st)) == st)
    }

    @Test("Records checksum with CRC-32C from version 3; version 2 records (FNV-1a) still decode")
    func recordChecksums() {
        var st = KeyState()
        st.chosen = 3
        st.value = Self.value
        st.accepted = Self.slot
        let v4 = PaxosCodec.encode(st)
        #expect(v4[0] == 4)
        // Small values: the slot is written whole, so the layout is version 3's too.
        var v3 = v4
        v3[0] = 3
        var body = Array(v3.dropLast(4))
        var crc = ByteWriter()
        crc.u32(CRC32C.checksum(body))
        v3.replaceSubrange((v3.count - 4)..., with: crc.bytes)
        #expect(PaxosCodec.decode(v3) == st && RecordView(v3) != nil)
        body = Array(v3.dropLast(4))
        // The same record as version 2 wrote it: FNV-1a over the same layout.
        var v2body = body
        v2body[0] = 2
        var v2 = ByteWriter()
        v2.bytes = v2body
        v2.u32(PaxosCodec.fnv1a(v2body))
        #expect(PaxosCodec.decode(v2.bytes) == st)
        #expect(PaxosCodec.isWhole(v2.bytes) && RecordView(v2.bytes) == nil)
        // A version 2 record with a CRC trailer, or the reverse, is damaged; so is a flipped byte.
        #expect(PaxosCodec.decode(v2body + crc.bytes) == nil)
        var flipped = v4
        flipped[9] ^= 1
        #expect(PaxosCodec.decode(flipped) == nil && RecordView(flipped) == nil)
        // Epoch and fence records: CRC-32C from their version 2, version 1 (FNV-1a) still read.
        let epoch = PaxosCodec.encodeEpoch(7)
        #expect(epoch[0] == 2 && PaxosCodec.decodeEpoch(epoch) == 7)
        var e1 = ByteWriter()
        e1.u8(1)
        e1.u32(7)
        e1.u32(PaxosCodec.fnv1a(e1.bytes))
        #expect(PaxosCodec.decodeEpoch(e1.bytes) == 7)
        let fence = Ballot(round: 5, node: NodeID(2))
        #expect(PaxosCodec.decodeFence(PaxosCodec.encodeFence(fence)) == fence)
    }

    /// A busy key's record: the open slot's value is the chosen value after a few writes (a big
    /// list's head, here), and its de-dup window continues the chosen one's. Version 4 writes the
    /// slot as a change (RecordDelta.swift): the record holds the value's bytes once, decodes to
    /// the same state, and the view agrees with the decoder on every damaged byte and cut.
    @Test("A busy key's open slot is written as a change of the chosen value, and reads back the same")
    func deltaSlot() {
        var rng = SplitMix64(seed: 4)
        for round in 0..<40 {
            let base = (0..<(200 + Int(rng.below(3000)))).map { _ in UInt8(truncatingIfNeeded: rng.below(256))
            }
            var changed = base
            let at = Int(rng.below(UInt64(base.count)))
            let cut = min(base.count - at, Int(rng.below(40)))
            changed.replaceSubrange(at..<(at + cut), with: (0..<Int(rng.below(60))).map { UInt8($0) })
            var recent: [AppliedRequest] = (0..<Int(rng.below(32))).map {
                AppliedRequest(id: rid(UInt64(10 + $0)), result: .number(Int64($0)), instance: 7)
            }
            var st = KeyState()
            st.chosen = 7
            st.value = KeyValue(bytes: base, recent: recent, floor: 3, kind: .list)
            // The slot: up to 32 remembered, the oldest dropped as new ones come.
            let added = Int(rng.below(25))
            recent += (0..<added).map { AppliedRequest(id: rid(UInt64(100 + $0)), result: .ok, instance: 8) }
            let kept = Array(recent.suffix(32))
            let slotValue =
                round % 5 == 0
                ? KeyValue(recent: kept, floor: 4)  // a delete
                : KeyValue(
                    bytes: changed, recent: kept, floor: 4, kind: .list, deadlineMs: round % 3 == 0 ? 99 : 0)
            st.accepted = AcceptedSlot(instance: 8, ballot: Ballot(round: 2, node: n1), value: slotValue)
            st.promised = Ballot(round: 2, node: n1)
            let bytes = PaxosCodec.encode(st)
            #expect(PaxosCodec.decode(bytes) == st, "round \(round)")
            let view = RecordView(bytes)
            #expect(
                view?.slotIsDelta
                    == (round % 5 != 0
                        || st.value.recent.count - RecordDelta.dropped(st.value.recent, kept) >= 4))
            if round % 5 != 0 {
                // The value's bytes once, plus what changed (not twice).
                #expect(
                    bytes.count < base.count + 160 + 29 * (st.value.recent.count + added) + 64,
                    "round \(round): \(bytes.count)")
            }
            for i in stride(from: 1, to: bytes.count, by: max(1, bytes.count / 200)) {
                var bad = bytes
                bad[i] ^= UInt8(1 << (i % 8))
                #expect((RecordView(bad) != nil) == (PaxosCodec.decode(bad) != nil), "byte \(i)")
                #expect(PaxosCodec.decode(bad) == nil)
                #expect(RecordView(Array(bytes[..<i])) == nil && PaxosCodec.decode(Array(bytes[..<i])) == nil)
            }
        }
        // A delta that does not fit its base (a prefix and suffix longer than the base's bytes) is
        // refused by both, even with a good checksum.
        var w = ByteWriter()
        w.u8(4)
        w.u64(7)
        w.keyValue(KeyValue(bytes: bytes("abc")))
        w.ballot(.zero)
        w.u8(2)
        w.u64(8)
        w.ballot(.zero)
        w.u8(1)
        w.u32(2)
        w.u32(2)
        w.blob([])
        w.u64(0)
        w.u32(0)
        w.u32(0)
        w.u32(CRC32C.checksum(w.bytes))
        #expect(PaxosCodec.decode(w.bytes) == nil && RecordView(w.bytes) == nil)
        // The same with a prefix of 1 and the suffix of 2, which fit: "a" + "" + "bc".
        var ok = Array(w.bytes.dropLast(4))
        let p = ok.count - 4 - 4 - 4 - 8 - 4 - 4
        ok.replaceSubrange(p..<(p + 4), with: [1, 0, 0, 0])
        var tail = ByteWriter()
        tail.u32(CRC32C.checksum(ok))
        ok += tail.bytes
        #expect(PaxosCodec.decode(ok)?.accepted?.value.bytes == bytes("abc"))
        #expect(RecordView(ok) != nil)
    }
}

@Suite struct RedisOperationTests {
    func apply(_ v: KeyValue, _ ops: [Operation]) -> KeyValue {
        v.applying(
            ops.enumerated().map { ($0.element, rid(UInt64(100 + $0.offset))) }, window: 32, instance: 1)
    }

    @Test("SET NX / XX / GET, GETSET, DEL and APPEND results")
    func redisOps() {
        let v = apply(
            .absent,
            [
                .set(bytes("a"), condition: .ifPresent, returnOld: false),  // XX on absent: not set
                .set(bytes("b"), condition: .ifAbsent, returnOld: false),  // NX on absent: set
                .set(bytes("c"), condition: .ifAbsent, returnOld: true),  // NX GET on present: old, not set
                .set(bytes("d"), condition: .always, returnOld: true),  // GETSET
                .append(bytes("ef"), maxBytes: 10),
                .remove, .remove,
            ])
        #expect(v.bytes == nil)
        #expect(
            v.recent.map(\.result) == [
                .swapped(false), .swapped(true), .previous(bytes("b")), .previous(bytes("b")), .number(3),
                .existed(true), .existed(false),
            ])
    }

    @Test("Old values are kept only for the instance that returned them")
    func oldValuesForgotten() {
        let v = apply(.absent, [.put(bytes("x")), .set(bytes("y"), condition: .always, returnOld: true)])
        #expect(v.result(for: rid(101)) == .previous(bytes("x")))
        let w = v.applying([(.incr(0), rid(7))], window: 32, instance: 1)
        #expect(w.result(for: rid(101)) == .previousForgotten)
        #expect(w.result(for: rid(100)) == .ok)
    }

    @Test("Merging stops at the byte budget (always at least one write)")
    func mergeBudget() {
        var config = PaxosConfig()
        config.mergeBytesMax = 10
        var t = Trio(config: config)
        // Queue three writes while the first instance is being prepared, then let them run.
        for k in 1...3 {
            t.propose(n1, .put(Array(repeating: UInt8(k), count: 8)), id: rid(UInt64(k)), tag: UInt64(k))
        }
        t.run()
        // Each 8-byte write exceeds the 10-byte budget with its neighbour: one write per instance.
        let accepts = t.log.filter { $0.0 == n1 }.flatMap { $0.1.messages }.filter {
            $0.to == n2 && isAccept($0.message)
        }
        #expect(accepts.count == 3)
        #expect(t.replies.count == 3)
    }
}

@Suite struct IncrTests {
    @Test(
        "INCR reads integers the way Redis does and refuses overflow",
        arguments: [
            ("5", Optional<Int64>(5)), ("-3", -3), ("0", 0), ("01", nil), ("+1", nil), (" 1", nil),
            ("-0", nil),
            ("", nil), ("9223372036854775807", Int64.max), ("9223372036854775808", nil), ("1e3", nil),
        ])
    func strict(text: String, value: Int64?) {
        #expect(KeyValue.strictInteger(Array(text.utf8)) == value)
    }

    @Test("Overflow leaves the value unchanged")
    func overflow() {
        let v = KeyValue(bytes: Array(String(Int64.max).utf8)).applying(
            [(.incr(1), rid(1))], window: 4, instance: 1)
        #expect(v.bytes == Array(String(Int64.max).utf8))
        #expect(v.result(for: rid(1)) == .overflow)
        var w = ByteWriter()
        w.result(.overflow)
        var r = ByteReader(w.bytes)
        #expect(r.result() == .overflow)
    }
}

@Suite struct MergeWindowTests {
    @Test("More writes merged into one instance than the de-dup window: each is applied exactly once")
    func mergedBeyondWindow() {
        var t = Trio()
        // 48 increments queue behind the first instance's Phase 1 and merge into few instances
        // (mergeMax 64 > dedupWindow 32).
        for k in 1...48 { t.propose(n1, .incr(1), id: rid(UInt64(k)), tag: UInt64(k)) }
        for _ in 0..<50 {
            t.run()
            for n in [n1, n2, n3] { t.tick(n) }
        }
        #expect(t.replies.count == 48)
        #expect(t.state(n1).value.bytes == bytes("48"))
        let numbers = t.replies.compactMap { r -> Int64? in
            if case .done(.number(let v)) = r.outcome { return v }
            return nil
        }
        #expect(Set(numbers) == Set(1...48))
    }
}
