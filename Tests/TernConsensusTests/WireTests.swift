import TernConsensus
import TernCore
import Testing

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
        let v3 = PaxosCodec.encode(st)
        #expect(v3[0] == 3)
        let body = Array(v3.dropLast(4))
        var crc = ByteWriter()
        crc.u32(CRC32C.checksum(body))
        #expect(Array(v3.suffix(4)) == crc.bytes)
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
        var flipped = v3
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
