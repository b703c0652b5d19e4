/// A key record's fields located in its bytes, without decoding its values: the bulk rebuild
/// (docs/REPAIR.md) merges the peers' records of a key by copying the chosen value's and the open
/// slot's encodings as they are, instead of decoding every record and encoding the merge again.
///
/// Versions 3 and 4 (the same layout but for version 4's delta slot): nil for an older record
/// (callers decode those) and for every record `PaxosCodec.decode` refuses (checksum, layout,
/// trailing bytes). It checks everything `decode` checks, in the same order; `RecordViewTests`
/// holds the two to the same answers.
public struct RecordView: Sendable {
    public let chosen: UInt64
    /// The chosen value's encoding (`ByteWriter.keyValue`), as a range of the record's bytes.
    public let value: Range<Int>
    public let promised: Ballot
    /// The open slot, if any: its instance and ballot, and the range of its whole encoding after
    /// the flag byte (instance, ballot, value).
    public let slotInstance: UInt64
    public let slotBallot: Ballot
    public let slot: Range<Int>?
    /// The slot's value is written as a change of the chosen value (record version 4, flag 2).
    public let slotIsDelta: Bool

    public init?(_ bytes: [UInt8]) { self.init(bytes, in: 0..<bytes.count) }

    /// The view of the record `bytes[range]` (a record inside a larger message, not copied); the
    /// ranges it holds are of `bytes`.
    public init?(_ bytes: [UInt8], in range: Range<Int>) {
        guard range.count >= 5 else { return nil }
        let format = bytes[range.lowerBound]
        guard PaxosCodec.viewable(format) else { return nil }
        let end = range.upperBound - 4
        var sum: UInt32 = 0
        for k in 0..<4 { sum |= UInt32(bytes[end + k]) << (8 * k) }
        guard sum == PaxosCodec.checksum(format, bytes, from: range.lowerBound, upTo: end) else {
            return nil
        }
        var r = ByteReader(bytes, range: range.lowerBound..<end)
        _ = r.u8()  // the version, checked above
        guard let c = r.u64() else { return nil }
        let valueStart = r.at
        guard r.skipKeyValue() else { return nil }
        let valueEnd = r.at
        guard let p = r.ballot(), let flag = r.u8() else { return nil }
        chosen = c
        value = valueStart..<valueEnd
        promised = p
        if flag == 1 {
            let slotStart = r.at
            guard let i = r.u64(), let b = r.ballot(), r.skipKeyValue() else { return nil }
            slotInstance = i
            slotBallot = b
            slot = slotStart..<r.at
            slotIsDelta = false
        } else if flag == 2 && format >= 4 && c > 0 {
            var base = ByteReader(bytes, range: valueStart..<valueEnd)
            guard let sizes = base.keyValueSizes() else { return nil }
            let slotStart = r.at
            guard let i = r.u64(), let b = r.ballot(),
                r.skipKeyValueDelta(baseBytes: sizes.bytes, baseRequests: sizes.requests)
            else { return nil }
            slotInstance = i
            slotBallot = b
            slot = slotStart..<r.at
            slotIsDelta = true
        } else if flag == 0 {
            slotInstance = 0
            slotBallot = .zero
            slot = nil
            slotIsDelta = false
        } else {
            return nil
        }
        // Every read stayed inside the body: the record ends with its checksum right there.
        guard r.atEnd else { return nil }
    }

    /// Merges the records of one key from several peers for the bulk rebuild, byte for byte: the
    /// highest chosen instance and its value (the first record holding it, in the order given),
    /// the open slot at chosen + 1 with the highest ballot (the first on a tie; none with
    /// `withoutSlots`, the `copy-without-slots` mutant), promise = max(`floor`, that slot's
    /// ballot). The rules of `RepairScanner.install`'s decoded merge, which this must equal.
    ///
    /// nil when the raw merge cannot decide alone: a record is not in the current format, or two
    /// records chosen at the highest instance differ in bytes (equal values or a safety alarm:
    /// the decoded merge tells which).
    public static func merge(_ records: [[UInt8]], floor: Ballot, withoutSlots: Bool = false) -> [UInt8]? {
        var out: [UInt8] = []
        let parts = records.map { Part(bytes: $0, range: 0..<$0.count) }
        guard merge(parts, floor: floor, withoutSlots: withoutSlots, into: &out) else { return nil }
        return out
    }

    /// One record of `merge(_:floor:withoutSlots:into:)`: `bytes[range]`.
    public struct Part: Sendable {
        public var bytes: [UInt8]
        public var range: Range<Int>
        public init(bytes: [UInt8], range: Range<Int>) {
            self.bytes = bytes
            self.range = range
        }
    }

    /// `merge` of records lying inside larger buffers (a peer's `records` message), the merged
    /// record appended to `out` (a bucket's records, one buffer): false, with `out` unchanged,
    /// where `merge` answers nil.
    public static func merge(
        _ parts: [Part], floor: Ballot, withoutSlots: Bool = false, into out: inout [UInt8]
    )
        -> Bool
    {
        guard let first = parts.first, let v0 = RecordView(first.bytes, in: first.range) else { return false }
        var views = [v0]
        if parts.count > 1 {
            views.reserveCapacity(parts.count)
            for r in parts.dropFirst() {
                guard let v = RecordView(r.bytes, in: r.range) else { return false }
                views.append(v)
            }
        }
        var top = 0
        for i in views.indices where views[i].chosen > views[top].chosen { top = i }
        let chosen = views[top].chosen
        let valueBytes = parts[top].bytes[views[top].value]
        for i in views.indices where i != top && views[i].chosen == chosen && chosen > 0 {
            guard parts[i].bytes[views[i].value].elementsEqual(valueBytes) else { return false }
        }
        var slotOf: Int?
        if !withoutSlots {
            for i in views.indices {
                guard views[i].slot != nil, views[i].slotInstance == chosen &+ 1 else { continue }
                if let s = slotOf, views[i].slotBallot <= views[s].slotBallot { continue }
                slotOf = i
            }
        }
        // A slot is copied only from a record at this merge's instance (whose value was found
        // equal above): a delta slot is a change of its own record's chosen value, and a whole one
        // from a record elsewhere may be a delta against this one when encoded. (A record's slot
        // is at its chosen + 1, so this takes the decoded merge only for records that break it.)
        if let s = slotOf, views[s].chosen != chosen { return false }
        let promised = max(floor, slotOf.map { views[$0].slotBallot } ?? .zero)
        let slotCount = slotOf.flatMap { views[$0].slot?.count } ?? 0
        let start = out.count
        var w = ByteWriter()
        swap(&w.bytes, &out)
        defer { swap(&w.bytes, &out) }
        w.bytes.reserveCapacity(start + 1 + 8 + valueBytes.count + 12 + 1 + slotCount + 4)
        w.u8(PaxosCodec.version)
        w.u64(chosen)
        // Nothing chosen: the merge's value is the absent one whatever a record holds (as decoded).
        if chosen == 0 { w.keyValue(.absent) } else { w.bytes += valueBytes }
        w.ballot(promised)
        if let s = slotOf, let range = views[s].slot {
            w.u8(views[s].slotIsDelta ? 2 : 1)
            w.bytes += parts[s].bytes[range]
        } else {
            w.u8(0)
        }
        w.u32(PaxosCodec.checksum(PaxosCodec.version, w.bytes, from: start, upTo: w.bytes.count))
        return true
    }
}

extension PaxosCodec {
    /// FNV-1a of `bytes[start..<end]` without copying them (records before version 3).
    static func fnv1a(_ bytes: [UInt8], from start: Int, upTo end: Int) -> UInt32 {
        bytes.withUnsafeBufferPointer { b in
            var h: UInt32 = 0x811C_9DC5
            for i in start..<end { h = (h ^ UInt32(b[i])) &* 0x0100_0193 }
            return h
        }
    }

    /// Whether `decode` would accept `bytes`, without building the state for the current format.
    /// Whether records of `format` are read by `RecordView` (versions 3 and 4: one layout but for
    /// version 4's delta slot); older ones are decoded.
    static func viewable(_ format: UInt8) -> Bool { format == 3 || format == version }

    public static func isWhole(_ bytes: [UInt8]) -> Bool {
        if let f = bytes.first, viewable(f) { return RecordView(bytes) != nil }
        return decode(bytes) != nil
    }

    /// `isWhole` of the record `bytes[range]` (inside a larger buffer; copied only when it is in
    /// an older format).
    public static func isWhole(_ bytes: [UInt8], in range: Range<Int>) -> Bool {
        guard !range.isEmpty else { return decode([]) != nil }
        if viewable(bytes[range.lowerBound]) { return RecordView(bytes, in: range) != nil }
        return decode(Array(bytes[range])) != nil
    }
}

extension ByteReader {
    /// Skips a `KeyValue` in the current layout, checking what `keyValue()` checks (false where
    /// it would return nil).
    public mutating func skipKeyValue() -> Bool {
        guard let form = valueForm(), !form.hasBytes || skipBlob() else { return false }
        guard u64() != nil, let n = u32(), n <= 1 << 16 else { return false }
        for _ in 0..<n {
            guard skipAppliedRequest() else { return false }
        }
        return true
    }
}
