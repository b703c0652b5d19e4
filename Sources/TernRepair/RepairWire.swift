public import TernConsensus
public import TernCore

/// One key as a replica holds it, what the scan compares: the chosen instance and a digest of the
/// chosen value (the whole `KeyValue`, request window included, which is identical on every
/// replica that holds the same instance).
public struct KeySummary: Sendable, Hashable {
    public var chosen: UInt64
    public var valueDigest: UInt64
    public init(chosen: UInt64, valueDigest: UInt64) {
        self.chosen = chosen
        self.valueDigest = valueDigest
    }

    /// The summary of a stored record; nil when it is damaged (fails its checksum or decodes
    /// wrongly). An absent record summarises as instance 0.
    public init?(_ record: LoadResult) {
        switch record {
        case .absent: self.init(chosen: 0, valueDigest: 0)
        case .damaged: return nil
        case .state(let bytes):
            guard let s = PaxosCodec.decode(bytes) else { return nil }
            self.init(s)
        }
    }

    /// The summary of a key's state.
    public init(_ s: KeyState) {
        var w = ByteWriter()
        w.keyValue(s.value)
        self.init(chosen: s.chosen, valueDigest: s.chosen == 0 ? 0 : XXH64.hash(w.bytes))
    }

    /// This key's share of a range digest: a well-mixed 64-bit value of (key, chosen, value), so
    /// that the XOR over a range changes when any key's chosen state does (tictac-style: XOR needs
    /// no order, so both replicas compute it however their keys are stored).
    public func entryDigest(keyHash: UInt64) -> UInt64 {
        var h = keyHash ^ (chosen &* 0x9E37_79B9_7F4A_7C15) ^ (valueDigest &* 0xC2B2_AE3D_27D4_EB4F)
        // SplitMix64's finaliser.
        h = (h ^ (h >> 30)) &* 0xBF58_476D_1CE4_E5B9
        h = (h ^ (h >> 27)) &* 0x94D0_49BB_1331_11EB
        return h ^ (h >> 31)
    }
}

/// One key in a `keys` reply: its summary at the sender, or that its record is damaged there.
public struct KeyEntry: Sendable, Hashable {
    public var key: [UInt8]
    /// nil: the sender's record is damaged (it recovers it by itself).
    public var summary: KeySummary?
    public init(key: [UInt8], summary: KeySummary?) {
        self.key = key
        self.summary = summary
    }
}

/// One key in a `records` reply: the sender's whole stored record (promise, open slot, chosen
/// instance and value), or nil when it is damaged there or too large for the message.
public struct RecordEntry: Sendable, Hashable {
    public var key: [UInt8]
    public var record: [UInt8]?
    public init(key: [UInt8], record: [UInt8]?) {
        self.key = key
        self.record = record
    }
}

/// A `records` reply as it arrived: the message's bytes and, per entry, where its key and its
/// record lie in them (nil record: damaged at the sender, or too large for the message). Nothing
/// is copied per key (`RepairMessage.decodeRecords`): the rebuilding node merges the records where
/// they lie (docs/REPAIR.md, "What a copied key costs").
public struct RecordList: Sendable {
    public var bytes: [UInt8]
    public var keys: [Range<Int>]
    public var records: [Range<Int>?]

    /// The number of entries.
    public var count: Int { keys.count }

    /// Entry `i`'s key.
    public func key(_ i: Int) -> [UInt8] { Array(bytes[keys[i]]) }

    /// The entries, each its own arrays.
    public var entries: [RecordEntry] {
        (0..<count).map { RecordEntry(key: key($0), record: records[$0].map { Array(bytes[$0]) }) }
    }

    /// `entries` packed into one buffer.
    public init(_ entries: [RecordEntry]) {
        bytes = []
        keys = []
        records = []
        keys.reserveCapacity(entries.count)
        records.reserveCapacity(entries.count)
        for e in entries {
            keys.append(bytes.count..<bytes.count + e.key.count)
            bytes += e.key
            if let r = e.record {
                records.append(bytes.count..<bytes.count + r.count)
                bytes += r
            } else {
                records.append(nil)
            }
        }
    }

    init(bytes: [UInt8], keys: [Range<Int>], records: [Range<Int>?]) {
        self.bytes = bytes
        self.keys = keys
        self.records = records
    }

    /// Whether entry `i`'s key sorts before entry `j`'s of `other` (byte order).
    static func precedes(_ a: RecordList, _ i: Int, _ b: RecordList, _ j: Int) -> Bool {
        compare(a, i, b, j) < 0
    }

    /// Byte order of entry `i`'s key of `a` and entry `j`'s of `b`: negative, 0 or positive.
    static func compare(_ a: RecordList, _ i: Int, _ b: RecordList, _ j: Int) -> Int {
        let ka = a.keys[i]
        let kb = b.keys[j]
        return a.bytes.withUnsafeBytes { pa in
            b.bytes.withUnsafeBytes { pb in
                let n = min(ka.count, kb.count)
                var k = 0
                while k < n {
                    let x = pa[ka.lowerBound + k]
                    let y = pb[kb.lowerBound + k]
                    if x != y { return Int(x) - Int(y) }
                    k += 1
                }
                return ka.count - kb.count
            }
        }
    }

    /// The entries' order by key: `0..<count` when the sender sorted them (it does), else sorted.
    var order: [Int] {
        var sorted = true
        var i = 1
        while i < count {
            if Self.compare(self, i - 1, self, i) >= 0 {
                sorted = false
                break
            }
            i += 1
        }
        if sorted { return Array(0..<count) }
        return (0..<count).sorted { Self.precedes(self, $0, self, $1) }
    }
}

/// The scanners' peer messages (service kind 3 on the node's peer links), in the project's byte
/// codec. Every message names the range (bucket) it is about.
///
/// ```
///  initiator N                                 replica P
///  read own records of bucket b
///  ── summary(b, XOR digest of keys N shares with P) ──►  digest of the keys P shares with N
///  ◄──────────────────────────────── match(b) ────────  equal: done (1 round, ~40 bytes)
///  ◄──────────── keys(b, [(key, chosen, digest)]) ────  different (or `full`): P's list
///  compare key by key: learn / teach / alarm
///  ── missing([key]) ──►  P holds nothing for these: recover them as damaged
/// ```
public enum RepairMessage: Sendable, Hashable {
    /// N's digest over the keys of `bucket` it shares with the receiver (`count` keys). `full`
    /// asks for the whole list whatever the digest (a learner-only node rebuilding).
    case summary(pass: UInt64, bucket: UInt32, bits: UInt8, full: Bool, digest: UInt64, count: UInt32)
    /// The receiver's digest for the bucket is the same.
    case match(pass: UInt64, bucket: UInt32)
    /// The receiver's keys of the bucket shared with N (`truncated`: the list was cut at the
    /// message bound; the rest waits for the next pass).
    case keys(pass: UInt64, bucket: UInt32, truncated: Bool, entries: [KeyEntry])
    /// N found these keys chosen at N and absent at the receiver.
    case missing(keys: [[UInt8]])
    /// A rebuilding N asks the receiver to raise its node-wide promise floor to at least `floor`
    /// (docs/REPAIR.md, "Bulk rebuild").
    case fence(floor: Ballot)
    /// The receiver's floor is now `floor` (≥ what was asked), durably.
    case fenced(floor: Ballot)
    /// A rebuilding N, fenced, asks for the receiver's whole records of the keys of `bucket` it
    /// shares with N.
    case fetch(pass: UInt64, bucket: UInt32, bits: UInt8)
    /// The receiver's records of the bucket (nil: damaged there, or too large for this message:
    /// N recovers those keys one by one). `truncated`: the list was cut at the message bound.
    /// `rebuilding`: the receiver is rebuilding too, so its records are not to be copied (N
    /// recovers the keys listed one by one; a new cluster's nodes all start so, with no keys).
    case records(pass: UInt64, bucket: UInt32, truncated: Bool, rebuilding: Bool, entries: [RecordEntry])

    static let summaryKind: UInt8 = 1
    static let matchKind: UInt8 = 2
    static let keysKind: UInt8 = 3
    static let missingKind: UInt8 = 4
    // 5 and 6 are the incarnation check's (`IncarnationMessage`).
    static let fenceKind: UInt8 = 7
    static let fencedKind: UInt8 = 8
    static let fetchKind: UInt8 = 9
    static let recordsKind: UInt8 = 10

    /// The message's bytes.
    public func encode() -> [UInt8] {
        var w = ByteWriter()
        switch self {
        case .summary(let pass, let bucket, let bits, let full, let digest, let count):
            w.u8(Self.summaryKind)
            w.u64(pass)
            w.u32(bucket)
            w.u8(bits)
            w.u8(full ? 1 : 0)
            w.u64(digest)
            w.u32(count)
        case .match(let pass, let bucket):
            w.u8(Self.matchKind)
            w.u64(pass)
            w.u32(bucket)
        case .keys(let pass, let bucket, let truncated, let entries):
            w.u8(Self.keysKind)
            w.u64(pass)
            w.u32(bucket)
            w.u8(truncated ? 1 : 0)
            w.u32(UInt32(entries.count))
            for e in entries {
                w.blob(e.key)
                if let s = e.summary {
                    w.u8(1)
                    w.u64(s.chosen)
                    w.u64(s.valueDigest)
                } else {
                    w.u8(0)
                }
            }
        case .missing(let keys):
            w.u8(Self.missingKind)
            w.u32(UInt32(keys.count))
            for k in keys { w.blob(k) }
        case .fence(let floor):
            w.u8(Self.fenceKind)
            w.ballot(floor)
        case .fenced(let floor):
            w.u8(Self.fencedKind)
            w.ballot(floor)
        case .fetch(let pass, let bucket, let bits):
            w.u8(Self.fetchKind)
            w.u64(pass)
            w.u32(bucket)
            w.u8(bits)
        case .records(let pass, let bucket, let truncated, let rebuilding, let entries):
            w.u8(Self.recordsKind)
            w.u64(pass)
            w.u32(bucket)
            w.u8((truncated ? 1 : 0) | (rebuilding ? 2 : 0))
            w.u32(UInt32(entries.count))
            for e in entries {
                w.blob(e.key)
                if let rec = e.record {
                    w.u8(1)
                    w.blob(rec)
                } else {
                    w.u8(0)
                }
            }
        }
        return w.bytes
    }

    /// A `records` message (as `encode` writes it) from the entries given by index: the keys
    /// `keys[i]` and their records in `records` (`Span.absent`: left out; `Span.damaged`: sent
    /// without a record), in the order of `indices`, cut where the keys pass `keyBytesMax` (then
    /// `truncated`); a record beyond `recordBytesMax` of record bytes goes without its record.
    /// What a peer answers a fetch with, straight from its batched read (no array per record).
    public static func encodeRecords(
        pass: UInt64, bucket: UInt32, rebuilding: Bool, keys: [[UInt8]], records: PackedBytes,
        indices: [Int], keyBytesMax: Int, recordBytesMax: Int
    ) -> [UInt8] {
        var w = ByteWriter()
        var total = 18
        for i in indices { total += 9 + keys[i].count + max(records.spans[i].length, 0) }
        w.bytes.reserveCapacity(total)
        w.u8(Self.recordsKind)
        w.u64(pass)
        w.u32(bucket)
        let flagsAt = w.bytes.count
        w.u8(0)
        let countAt = w.bytes.count
        w.u32(0)
        var keyBytes = 0
        var size = 0
        var truncated = false
        var count: UInt32 = 0
        records.buffer.withUnsafeBytes { buffer in
            for i in indices {
                let span = records.spans[i]
                keyBytes += keys[i].count + 9
                if keyBytes > keyBytesMax {
                    truncated = true
                    break
                }
                if span == .absent { continue }
                w.blob(keys[i])
                if span.isPresent {
                    size += span.length
                }
                if span.isPresent && size <= recordBytesMax {
                    w.u8(1)
                    w.u32(UInt32(span.length))
                    w.bytes.append(contentsOf: UnsafeRawBufferPointer(rebasing: buffer[span.range]))
                } else {
                    w.u8(0)
                }
                count += 1
            }
        }
        w.bytes[flagsAt] = (truncated ? 1 : 0) | (rebuilding ? 2 : 0)
        for k in 0..<4 { w.bytes[countAt + k] = UInt8(truncatingIfNeeded: count >> (8 * k)) }
        return w.bytes
    }

    /// `decode` of a `records` message, its entries left where they lie (`RecordList`): accepts
    /// and refuses exactly what `decode` does. nil: malformed, or another kind of message.
    public static func decodeRecords(_ bytes: [UInt8]) -> (
        pass: UInt64, bucket: UInt32, truncated: Bool, rebuilding: Bool, list: RecordList
    )? {
        var r = ByteReader(bytes)
        guard r.u8() == recordsKind, let pass = r.u64(), let bucket = r.u32(), let flags = r.u8(), flags <= 3,
            let n = r.u32(), Int(n) <= bytes.count
        else { return nil }
        var keys: [Range<Int>] = []
        var records: [Range<Int>?] = []
        keys.reserveCapacity(Int(n))
        records.reserveCapacity(Int(n))
        for _ in 0..<n {
            guard let kn = r.u32(), Int(kn) <= ReplicaNode.keyBytesMax else { return nil }
            let k = r.at
            guard r.skip(Int(kn)), let flag = r.u8() else { return nil }
            keys.append(k..<k + Int(kn))
            switch flag {
            case 0: records.append(nil)
            case 1:
                guard let rn = r.u32() else { return nil }
                let at = r.at
                guard r.skip(Int(rn)) else { return nil }
                records.append(at..<at + Int(rn))
            default: return nil
            }
        }
        guard r.atEnd else { return nil }
        return (
            pass, bucket, flags & 1 != 0, flags & 2 != 0,
            RecordList(bytes: bytes, keys: keys, records: records)
        )
    }

    /// Decodes a message; nil if it is malformed (the caller counts it as a bad peer message).
    public static func decode(_ bytes: [UInt8]) -> RepairMessage? {
        var r = ByteReader(bytes)
        guard let kind = r.u8() else { return nil }
        let message: RepairMessage
        switch kind {
        case summaryKind:
            guard let pass = r.u64(), let bucket = r.u32(), let bits = r.u8(), let full = r.u8(), full <= 1,
                let digest = r.u64(), let count = r.u32()
            else { return nil }
            message = .summary(
                pass: pass, bucket: bucket, bits: bits, full: full == 1, digest: digest, count: count)
        case matchKind:
            guard let pass = r.u64(), let bucket = r.u32() else { return nil }
            message = .match(pass: pass, bucket: bucket)
        case keysKind:
            guard let pass = r.u64(), let bucket = r.u32(), let truncated = r.u8(), truncated <= 1,
                let n = r.u32(), Int(n) <= bytes.count
            else { return nil }
            var entries: [KeyEntry] = []
            entries.reserveCapacity(Int(n))
            for _ in 0..<n {
                guard let key = r.blob(), key.count <= ReplicaNode.keyBytesMax, let flag = r.u8() else {
                    return nil
                }
                switch flag {
                case 0: entries.append(KeyEntry(key: key, summary: nil))
                case 1:
                    guard let c = r.u64(), let d = r.u64() else { return nil }
                    entries.append(KeyEntry(key: key, summary: KeySummary(chosen: c, valueDigest: d)))
                default: return nil
                }
            }
            message = .keys(pass: pass, bucket: bucket, truncated: truncated == 1, entries: entries)
        case missingKind:
            guard let n = r.u32(), Int(n) <= bytes.count else { return nil }
            var keys: [[UInt8]] = []
            for _ in 0..<n {
                guard let key = r.blob(), key.count <= ReplicaNode.keyBytesMax else { return nil }
                keys.append(key)
            }
            message = .missing(keys: keys)
        case fenceKind, fencedKind:
            guard let floor = r.ballot() else { return nil }
            message = kind == fenceKind ? .fence(floor: floor) : .fenced(floor: floor)
        case fetchKind:
            guard let pass = r.u64(), let bucket = r.u32(), let bits = r.u8() else { return nil }
            message = .fetch(pass: pass, bucket: bucket, bits: bits)
        case recordsKind:
            guard let pass = r.u64(), let bucket = r.u32(), let flags = r.u8(), flags <= 3,
                let n = r.u32(), Int(n) <= bytes.count
            else { return nil }
            var entries: [RecordEntry] = []
            entries.reserveCapacity(Int(n))
            for _ in 0..<n {
                guard let key = r.blob(), key.count <= ReplicaNode.keyBytesMax, let flag = r.u8() else {
                    return nil
                }
                switch flag {
                case 0: entries.append(RecordEntry(key: key, record: nil))
                case 1:
                    guard let rec = r.blob() else { return nil }
                    entries.append(RecordEntry(key: key, record: rec))
                default: return nil
                }
            }
            message = .records(
                pass: pass, bucket: bucket, truncated: flags & 1 != 0, rebuilding: flags & 2 != 0,
                entries: entries)
        default:
            return nil
        }
        return r.atEnd ? message : nil
    }
}
