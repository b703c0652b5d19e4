import TernConsensus
import TernCore
import Testing

@testable import TernRepair

/// The bulk rebuild's merge on record bytes (`RecordView`, `RecordView.merge`) against the
/// decoded merge it replaces (`RepairScanner.decodedMerge`): same answers, byte-level checks as
/// strict as `PaxosCodec.decode`'s.
@Suite struct RecordMergeTests {
    static func value(_ rng: inout SplitMix64, tag: UInt64) -> KeyValue {
        var recent: [AppliedRequest] = []
        for i in 0..<rng.below(3) {
            let result: OperationResult =
                switch rng.below(4) {
                case 0: .ok
                case 1: .number(Int64(rng.below(1000)))
                case 2: .previous(Array("old\(i)".utf8))
                default: .existed(true)
                }
            recent.append(
                AppliedRequest(
                    id: RequestID(client: UInt32(rng.below(5)), counter: rng.below(100)), result: result,
                    instance: tag))
        }
        switch rng.below(5) {
        case 4:
            // A big value that values of other instances share most bytes with: written as a
            // delta when it is a record's open slot (record version 4).
            let big =
                [UInt8](repeating: 0x50, count: 90) + Array("m\(tag)".utf8)
                + [UInt8](repeating: 0x53, count: 90)
            return KeyValue(bytes: big, recent: recent, floor: tag, kind: .list)
        case 0: return KeyValue(recent: recent, floor: tag)
        case 1: return KeyValue(bytes: Array("v\(tag)".utf8), recent: recent, floor: tag)
        case 2: return KeyValue(bytes: Array("h\(tag)".utf8), recent: recent, floor: tag, kind: .hash)
        default:
            return KeyValue(bytes: Array("e\(tag)".utf8), recent: recent, floor: tag, deadlineMs: 99 + tag)
        }
    }

    static func ballot(_ rng: inout SplitMix64) -> Ballot {
        Ballot(round: rng.below(4) << 32 | rng.below(4), node: NodeID(UInt32(rng.below(3) + 1)))
    }

    /// A random key state; values depend only on the instance's tag (so two replicas at the same
    /// instance usually hold the same value, as the protocol says).
    static func state(_ rng: inout SplitMix64, values: [UInt64: KeyValue]) -> KeyState {
        var s = KeyState()
        s.chosen = rng.below(4)
        s.value = s.chosen == 0 ? .absent : values[s.chosen]!
        s.promised = ballot(&rng)
        if rng.below(2) == 0 {
            let instance = rng.below(3) == 0 ? s.chosen + 2 : s.chosen + 1
            s.accepted = AcceptedSlot(
                instance: instance, ballot: ballot(&rng), value: values[instance % 4 + 10]!)
        }
        return s
    }

    static func values(_ rng: inout SplitMix64) -> [UInt64: KeyValue] {
        var v: [UInt64: KeyValue] = [:]
        for tag in [1, 2, 3, 10, 11, 12, 13] as [UInt64] { v[tag] = value(&rng, tag: tag) }
        return v
    }

    /// A view reads the fields `decode` does; every flipped byte and every cut that `decode`
    /// refuses, the view refuses too (and the other way round).
    @Test func viewAgreesWithDecode() {
        var rng = SplitMix64(seed: 11)
        for _ in 0..<60 {
            let vs = Self.values(&rng)
            let s = Self.state(&rng, values: vs)
            let bytes = PaxosCodec.encode(s)
            guard let v = RecordView(bytes) else {
                Issue.record("a well-formed record has no view")
                continue
            }
            #expect(v.chosen == s.chosen)
            #expect(v.promised == s.promised)
            #expect(v.slot != nil ? v.slotInstance == s.accepted?.instance : s.accepted == nil)
            #expect(v.slot == nil || v.slotBallot == s.accepted?.ballot)
            var r = ByteReader(Array(bytes[v.value]))
            let kv = r.keyValue()
            #expect(kv == s.value)
            #expect(r.atEnd)
            for i in 1..<bytes.count {
                var bad = bytes
                bad[i] ^= UInt8(1 << (i % 8))
                #expect((RecordView(bad) != nil) == (PaxosCodec.decode(bad) != nil), "byte \(i)")
                #expect(RecordView(Array(bytes[..<i])) == nil)
            }
        }
        // Version 1 records are decoded, never viewed.
        #expect(RecordView([1] + Array(repeating: 0, count: 30)) == nil)
    }

    /// The raw merge equals the decoded merge whenever it answers, and answers whenever no two
    /// records at the top instance differ in bytes.
    @Test func rawMergeEqualsDecodedMerge() {
        var rng = SplitMix64(seed: 5)
        var raw = 0
        for _ in 0..<1000 {
            let vs = Self.values(&rng)
            var records: [[UInt8]] = []
            for _ in 0..<(1 + rng.below(3)) {
                var s = Self.state(&rng, values: vs)
                // Now and then a different value at the same instance (a safety alarm).
                if s.chosen > 0 && rng.below(15) == 0 { s.value = Self.value(&rng, tag: 50) }
                records.append(PaxosCodec.encode(s))
            }
            if rng.below(3) == 0 { records.append(records[0]) }
            let floor = Self.ballot(&rng)
            for withoutSlots in [false, true] {
                let decoded = RepairScanner.decodedMerge(records, floor: floor, withoutSlots: withoutSlots)
                guard let merged = RecordView.merge(records, floor: floor, withoutSlots: withoutSlots) else {
                    // Only where the top instance's values differ in bytes.
                    let views = records.compactMap(RecordView.init)
                    let top = views.map(\.chosen).max()!
                    let tops = Set(
                        zip(records, views).filter { $0.1.chosen == top }.map { Array($0.0[$0.1.value]) })
                    // Or where a slot to keep lies in a record at another instance.
                    let slotElsewhere = views.contains {
                        $0.slot != nil && $0.slotInstance == top + 1 && $0.chosen != top
                    }
                    #expect((top > 0 && tops.count > 1) || (slotElsewhere && !withoutSlots))
                    continue
                }
                raw += 1
                #expect(PaxosCodec.decode(merged) == decoded.state, "\(records)")
                #expect(merged == decoded.state.map(PaxosCodec.encode))
            }
        }
        #expect(raw > 1300)
    }

    /// Records inside a larger buffer (a peer's `records` message, `RecordList`) are viewed,
    /// checked and merged exactly as the same records on their own arrays; the view's ranges are
    /// of the buffer, and the merge appends to what its output holds.
    @Test func recordsInsideABufferAsOnTheirOwn() {
        var rng = SplitMix64(seed: 21)
        var merged = 0
        for _ in 0..<400 {
            let vs = Self.values(&rng)
            var records: [[UInt8]] = []
            for _ in 0..<(1 + rng.below(3)) {
                var bytes = PaxosCodec.encode(Self.state(&rng, values: vs))
                // Now and then a damaged one.
                if rng.below(10) == 0 { bytes[Int(rng.below(UInt64(bytes.count)))] ^= 4 }
                records.append(bytes)
            }
            // One buffer: junk, and the records with junk between them.
            var buffer = [UInt8](repeating: 0xAB, count: Int(rng.below(9)))
            var ranges: [Range<Int>] = []
            for r in records {
                ranges.append(buffer.count..<buffer.count + r.count)
                buffer += r
                buffer += [UInt8](repeating: 0xCD, count: Int(rng.below(5)))
            }
            for (r, range) in zip(records, ranges) {
                let alone = RecordView(r)
                let inside = RecordView(buffer, in: range)
                #expect((alone == nil) == (inside == nil))
                #expect(PaxosCodec.isWhole(buffer, in: range) == PaxosCodec.isWhole(r))
                guard let alone, let inside else { continue }
                let shift = range.lowerBound
                #expect(inside.chosen == alone.chosen && inside.promised == alone.promised)
                #expect(inside.value == alone.value.lowerBound + shift..<alone.value.upperBound + shift)
                #expect(inside.slotInstance == alone.slotInstance && inside.slotBallot == alone.slotBallot)
                #expect(inside.slot == alone.slot.map { $0.lowerBound + shift..<$0.upperBound + shift })
            }
            let floor = Self.ballot(&rng)
            for withoutSlots in [false, true] {
                var out: [UInt8] = [7, 7]
                let ok = RecordView.merge(
                    ranges.map { RecordView.Part(bytes: buffer, range: $0) }, floor: floor,
                    withoutSlots: withoutSlots, into: &out)
                let alone = RecordView.merge(records, floor: floor, withoutSlots: withoutSlots)
                #expect(ok == (alone != nil))
                #expect(out == [7, 7] + (alone ?? []))
                if ok { merged += 1 }
            }
        }
        #expect(merged > 300)
    }

    /// A damaged record stops the raw merge (the decoded one then says `unusable`).
    @Test func damagedRecordIsNotMerged() {
        var s = KeyState()
        s.chosen = 3
        s.value = KeyValue(bytes: Array("v".utf8))
        var bytes = PaxosCodec.encode(s)
        bytes[3] ^= 1
        #expect(RecordView.merge([PaxosCodec.encode(s), bytes], floor: .zero) == nil)
        #expect(RepairScanner.decodedMerge([bytes], floor: .zero, withoutSlots: false) == .unusable)
        #expect(!PaxosCodec.isWhole(bytes))
        #expect(PaxosCodec.isWhole(PaxosCodec.encode(s)))
    }
}
