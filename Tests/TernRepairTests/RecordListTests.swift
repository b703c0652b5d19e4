import TernConsensus
import TernCore
import Testing

@testable import TernRepair

/// A bucket's records as they travel without an array per record: a peer writes its `records`
/// answer straight from its batched read (`RepairMessage.encodeRecords`), and the rebuilding node
/// leaves every key and record where it lies in the message (`RepairMessage.decodeRecords`,
/// `RecordList`). Both must be byte for byte what `encode` and `decode` of the entries are.
@Suite struct RecordListTests {
    static func bytes(_ n: UInt64, _ rng: inout SplitMix64) -> [UInt8] {
        (0..<n).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
    }

    static func entries(_ rng: inout SplitMix64) -> [RecordEntry] {
        (0..<rng.below(30)).map { i in
            RecordEntry(
                key: Array("k\(rng.below(1000))-\(i)".utf8),
                record: rng.below(5) == 0 ? nil : bytes(rng.below(40), &rng))
        }
    }

    /// `decodeRecords` of `m` says what `decode` says (nil for the same messages).
    static func agree(_ m: [UInt8]) {
        let packed = RepairMessage.decodeRecords(m)
        guard
            case .records(let pass, let bucket, let truncated, let rebuilding, let entries)? =
                RepairMessage.decode(m)
        else {
            #expect(packed == nil)
            return
        }
        guard let packed else {
            Issue.record("decode took a records message that decodeRecords refused")
            return
        }
        #expect(packed.pass == pass && packed.bucket == bucket)
        #expect(packed.truncated == truncated && packed.rebuilding == rebuilding)
        #expect(packed.list.entries == entries)
    }

    /// Well-formed, cut and damaged messages: the same verdicts and entries.
    @Test func decodeRecordsAgreesWithDecode() {
        var rng = SplitMix64(seed: 3)
        for _ in 0..<200 {
            let entries = Self.entries(&rng)
            let m = RepairMessage.records(
                pass: rng.below(9), bucket: UInt32(rng.below(4096)), truncated: rng.below(2) == 0,
                rebuilding: rng.below(2) == 0, entries: entries
            ).encode()
            #expect(RepairMessage.decodeRecords(m)?.list.entries == entries)
            Self.agree(m)
            for _ in 0..<20 {
                let i = Int(rng.below(UInt64(m.count)))
                var bad = m
                bad[i] ^= UInt8(truncatingIfNeeded: 1 + rng.below(255))
                Self.agree(bad)
                Self.agree(Array(m[..<i]))
            }
            Self.agree(m + [0])
        }
        #expect(
            RepairMessage.decodeRecords(RepairMessage.fetch(pass: 1, bucket: 2, bits: 12).encode()) == nil)
        #expect(RepairMessage.decodeRecords([]) == nil)
    }

    /// `RecordList` of entries gives them back; keys compare in byte order.
    @Test func listOfEntries() {
        var rng = SplitMix64(seed: 8)
        for _ in 0..<100 {
            let entries = Self.entries(&rng)
            let list = RecordList(entries)
            #expect(list.entries == entries)
            let sorted = entries.indices.sorted { entries[$0].key.lexicographicallyPrecedes(entries[$1].key) }
            #expect(list.order.map { entries[$0].key } == sorted.map { entries[$0].key })
        }
    }

    /// A fetch's answer written from the read's buffer is the message `encode` makes of the entries
    /// the answer takes: absent records left out, damaged ones without a record, the list cut
    /// where the keys pass their bound, records beyond the record bound sent without one.
    @Test func encodeRecordsEqualsEncode() {
        var rng = SplitMix64(seed: 4)
        for round in 0..<300 {
            var keys: [[UInt8]] = []
            var packed = PackedBytes()
            for i in 0..<rng.below(40) {
                keys.append(Array("key\(i)".utf8) + Self.bytes(rng.below(6), &rng))
                switch rng.below(6) {
                case 0: packed.appendMissing(.absent)
                case 1: packed.appendMissing(.damaged)
                default: packed.append(Self.bytes(rng.below(60), &rng))
                }
            }
            var indices = Array(keys.indices)
            if round % 3 == 0 { indices.reverse() }
            let keyMax = rng.below(2) == 0 ? 1 << 20 : Int(50 + rng.below(300))
            let recordMax = rng.below(2) == 0 ? 1 << 20 : Int(rng.below(400))
            var entries: [RecordEntry] = []
            var size = 0
            var keyBytes = 0
            var truncated = false
            for i in indices {
                keyBytes += keys[i].count + 9
                if keyBytes > keyMax {
                    truncated = true
                    break
                }
                let span = packed.spans[i]
                if span == .absent { continue }
                guard span.isPresent else {
                    entries.append(RecordEntry(key: keys[i], record: nil))
                    continue
                }
                size += span.length
                entries.append(RecordEntry(key: keys[i], record: size <= recordMax ? Array(packed[i]!) : nil))
            }
            let rebuilding = rng.below(2) == 0
            let expected = RepairMessage.records(
                pass: 5, bucket: 77, truncated: truncated, rebuilding: rebuilding, entries: entries
            ).encode()
            let written = RepairMessage.encodeRecords(
                pass: 5, bucket: 77, rebuilding: rebuilding, keys: keys, records: packed, indices: indices,
                keyBytesMax: keyMax, recordBytesMax: recordMax)
            #expect(written == expected)
        }
    }
}
