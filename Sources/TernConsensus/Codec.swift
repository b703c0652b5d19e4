import TernCore

/// Compact, versioned binary encoding of what a replica persists.
///
/// Layout of a key record: `version u8 | payload | crc32c(version u8 | payload) u32`. The checksum
/// is ours as well as the storage engine's: a record that decodes wrongly is treated as damaged,
/// never as absent, because "absent" would let the replica vote as if it had promised nothing.
public enum PaxosCodec {
    /// The record format written today. Version 4 may write the open slot's value as a change of
    /// the chosen value (slot flag 2, RecordDelta.swift); version 3 checksums with CRC-32C (the
    /// project's one checksum, `TernCore.CRC32C`) instead of FNV-1a; version 2 added the de-dup
    /// window's `floor` and each remembered request's instance. Versions 1 to 3 still decode (see
    /// `decode`).
    public static let version: UInt8 = 4

    /// The checksum a record of format `format` carries: CRC-32C from version 3, FNV-1a before.
    static func checksum(_ format: UInt8, _ bytes: [UInt8], from start: Int, upTo end: Int) -> UInt32 {
        guard format < 3 else {
            return bytes.withUnsafeBytes {
                CRC32C.update(0, UnsafeRawBufferPointer(rebasing: $0[start..<end]))
            }
        }
        return fnv1a(bytes, from: start, upTo: end)
    }

    /// Encodes a key's whole Paxos state.
    public static func encode(_ s: KeyState) -> [UInt8] {
        var w = ByteWriter()
        w.bytes.reserveCapacity(64 + 24 * s.value.recent.count + (s.value.bytes?.count ?? 0))
        w.u8(version)
        w.u64(s.chosen)
        w.keyValue(s.value)
        w.ballot(s.promised)
        if let a = s.accepted {
            if s.chosen > 0, let d = RecordDelta.worth(a.value, base: s.value) {
                w.u8(2)
                w.u64(a.instance)
                w.ballot(a.ballot)
                w.keyValueDelta(a.value, base: s.value, prefix: d.prefix, suffix: d.suffix, drop: d.drop)
            } else {
                w.u8(1)
                w.u64(a.instance)
                w.ballot(a.ballot)
                w.keyValue(a.value)
            }
        } else {
            w.u8(0)
        }
        w.u32(checksum(version, w.bytes, from: 0, upTo: w.bytes.count))
        return w.bytes
    }

    /// Decodes a key record; `nil` if it is malformed or fails its checksum.
    public static func decode(_ bytes: [UInt8]) -> KeyState? {
        guard bytes.count >= 5, (1...version).contains(bytes[0]) else { return nil }
        let end = bytes.count - 4
        var tail = ByteReader(Array(bytes[end...]))
        guard let sum = tail.u32(), sum == checksum(bytes[0], bytes, from: 0, upTo: end) else { return nil }
        let body = Array(bytes[..<end])
        var r = ByteReader(body)
        guard let format = r.u8() else { return nil }
        // A version 1 value did not say what its window forgot: assume everything up to the
        // instance it belongs to (so no request older than the record is ever re-proposed).
        var s = KeyState()
        guard let c = r.u64(), let v = r.keyValue(legacyInstance: format == 1 ? c : nil), let p = r.ballot(),
            let flag = r.u8()
        else { return nil }
        s.chosen = c
        s.value = v
        s.promised = p
        if flag == 1 {
            guard let i = r.u64(), let b = r.ballot(),
                let av = r.keyValue(legacyInstance: format == 1 ? i : nil)
            else { return nil }
            s.accepted = AcceptedSlot(instance: i, ballot: b, value: av)
        } else if flag == 2 && format >= 4 && c > 0 {
            guard let i = r.u64(), let b = r.ballot(), let av = r.keyValueDelta(base: v) else { return nil }
            s.accepted = AcceptedSlot(instance: i, ballot: b, value: av)
        } else if flag != 0 {
            return nil
        }
        return r.atEnd ? s : nil
    }

    /// The epoch and fence records' format: version 2 checksums with CRC-32C, version 1 (still
    /// read) with FNV-1a.
    public static let epochVersion: UInt8 = 2

    /// The checksum of an epoch or fence record of format `format`.
    static func epochChecksum(_ format: UInt8, _ bytes: [UInt8], upTo end: Int) -> UInt32 {
        checksum(format == 1 ? 2 : 3, bytes, from: 0, upTo: end)
    }

    /// Encodes the node's epoch record.
    public static func encodeEpoch(_ e: UInt32) -> [UInt8] {
        var w = ByteWriter()
        w.u8(epochVersion)
        w.u32(e)
        w.u32(epochChecksum(epochVersion, w.bytes, upTo: w.bytes.count))
        return w.bytes
    }

    /// Decodes the node's epoch record.
    public static func decodeEpoch(_ bytes: [UInt8]) -> UInt32? {
        guard bytes.count == 9, bytes[0] == 1 || bytes[0] == epochVersion else { return nil }
        var r = ByteReader(bytes)
        _ = r.u8()
        guard let e = r.u32(), let sum = r.u32(), sum == epochChecksum(bytes[0], bytes, upTo: 5) else {
            return nil
        }
        return e
    }

    /// Encodes the node's fence record (`ReplicaNode.fenceKey`): the node-wide promise floor.
    public static func encodeFence(_ b: Ballot) -> [UInt8] {
        var w = ByteWriter()
        w.u8(epochVersion)
        w.ballot(b)
        w.u32(epochChecksum(epochVersion, w.bytes, upTo: w.bytes.count))
        return w.bytes
    }

    /// Decodes the node's fence record.
    public static func decodeFence(_ bytes: [UInt8]) -> Ballot? {
        guard bytes.count == 17, bytes[0] == 1 || bytes[0] == epochVersion else { return nil }
        var r = ByteReader(bytes)
        _ = r.u8()
        guard let b = r.ballot(), let sum = r.u32(), sum == epochChecksum(bytes[0], bytes, upTo: 13) else {
            return nil
        }
        return b
    }

    /// FNV-1a, 32 bits: the checksum of records written before version 3 (epoch and fence records
    /// before version 2), still read.
    public static func fnv1a(_ bytes: [UInt8]) -> UInt32 { fnv1a(bytes, from: 0, upTo: bytes.count) }
}

/// Little-endian writer of the codecs' primitive fields (records, peer frames, the server's
/// envelopes).
public struct ByteWriter: Sendable {
    public var bytes: [UInt8] = []
    public init() {}
    public mutating func u8(_ v: UInt8) { bytes.append(v) }
    public mutating func u32(_ v: UInt32) {
        withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) }
    }
    public mutating func u64(_ v: UInt64) {
        withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) }
    }
    public mutating func blob(_ b: [UInt8]) {
        u32(UInt32(b.count))
        bytes += b
    }
    /// `u8 1 | blob` for a value, `u8 0` for none.
    public mutating func optionalBlob(_ b: [UInt8]?) {
        if let b {
            u8(1)
            blob(b)
        } else {
            u8(0)
        }
    }
    public mutating func ballot(_ b: Ballot) {
        u64(b.round)
        u32(b.node.rawValue)
    }
    public mutating func keyValue(_ v: KeyValue) {
        valueForm(v)
        if let b = v.bytes { blob(b) }
        u64(v.floor)
        u32(UInt32(v.recent.count))
        for r in v.recent { appliedRequest(r) }
    }
    /// A value's form, which its encodings (`keyValue`, `keyValueDelta`) start with: `u8 0` absent,
    /// `u8 1` plain bytes, `u8 2 | u8 kind | u64 deadline` a typed or expiring value (docs/DATA.md;
    /// plain strings keep the older layout).
    mutating func valueForm(_ v: KeyValue) {
        if v.bytes != nil, v.kind != .string || v.deadlineMs != 0 {
            u8(2)
            u8(v.kind.rawValue)
            u64(v.deadlineMs)
        } else {
            u8(v.bytes != nil ? 1 : 0)
        }
    }
    /// One remembered request of a value's de-dup window.
    mutating func appliedRequest(_ r: AppliedRequest) {
        u32(r.id.client)
        u64(r.id.counter)
        u64(r.instance)
        result(r.result)
    }
    public mutating func result(_ r: OperationResult) {
        switch r {
        case .ok: u8(0)
        case .number(let n):
            u8(1)
            u64(UInt64(bitPattern: n))
        case .swapped(let s): u8(s ? 3 : 2)
        case .notANumber: u8(4)
        case .tooLarge: u8(5)
        case .previous(nil): u8(6)
        case .previous(let old?):
            u8(7)
            blob(old)
        case .previousForgotten: u8(8)
        case .existed(let e): u8(e ? 10 : 9)
        case .overflow: u8(11)
        // Sync inboxes (tags from 24 on).
        case .inboxAppended(let needsSeal): u8(needsSeal ? 25 : 24)
        case .inboxRefused(let last):
            u8(26)
            u64(last)
        case .inboxFull: u8(27)
        case .inboxSealed(let applied, let dropped):
            u8(applied ? 29 : 28)
            u32(UInt32(dropped.count))
            for d in dropped { u64(d) }
        case .envelope(let e): e.encode(into: &self)
        case .inboxAppendedAt(let seq, let needsSeal):
            u8(needsSeal ? 49 : 48)
            u64(seq)
        // Redis data commands (tags from 60 on).
        case .data(let reply):
            u8(60)
            dataReply(reply)
        }
    }
    /// A `DataReply`, recursively.
    public mutating func dataReply(_ r: DataReply) {
        func list(_ tag: UInt8, _ items: [DataReply]) {
            u8(tag)
            u32(UInt32(items.count))
            for i in items { dataReply(i) }
        }
        switch r {
        case .ok: u8(0)
        case .error(let s):
            u8(1)
            blob(Array(s.utf8))
        case .integer(let n):
            u8(2)
            u64(UInt64(bitPattern: n))
        case .bulk(nil): u8(3)
        case .bulk(let b?):
            u8(4)
            blob(b)
        case .array(nil): u8(5)
        case .array(let a?): list(6, a)
        case .double(let d):
            u8(7)
            u64(d.bitPattern)
        case .map(let a): list(8, a)
        case .set(let a): list(9, a)
        case .status(let s):
            u8(10)
            blob(Array(s.utf8))
        }
    }
}

/// The reader matching `ByteWriter`: every read checks the remaining length and returns nil
/// rather than reading past the end.
public struct ByteReader: Sendable {
    public let bytes: [UInt8]
    public private(set) var at = 0
    /// Where reading stops: the end of `bytes`, or of the range given.
    public let end: Int
    public init(_ bytes: [UInt8]) {
        self.bytes = bytes
        end = bytes.count
    }
    /// A reader of `bytes[range]` only (a record inside a larger message), without copying it.
    public init(_ bytes: [UInt8], range: Range<Int>) {
        precondition(range.lowerBound >= 0 && range.upperBound <= bytes.count)
        self.bytes = bytes
        at = range.lowerBound
        end = range.upperBound
    }
    public var atEnd: Bool { at == end }
    /// Bytes not yet read.
    public var remaining: Int { end - at }
    public mutating func u8() -> UInt8? {
        guard at < end else { return nil }
        at += 1
        return bytes[at - 1]
    }
    public mutating func u32() -> UInt32? {
        guard at + 4 <= end else { return nil }
        var v: UInt32 = 0
        for k in 0..<4 { v |= UInt32(bytes[at + k]) << (8 * k) }
        at += 4
        return v
    }
    public mutating func u64() -> UInt64? {
        guard at + 8 <= end else { return nil }
        var v: UInt64 = 0
        for k in 0..<8 { v |= UInt64(bytes[at + k]) << (8 * k) }
        at += 8
        return v
    }
    /// Skips `n` bytes (false, not moving: fewer remain).
    public mutating func skip(_ n: Int) -> Bool {
        guard n >= 0, at + n <= end else { return false }
        at += n
        return true
    }
    /// Skips a blob without copying it (false: the bytes end first).
    public mutating func skipBlob() -> Bool {
        guard let n = u32(), at + Int(n) <= end else { return false }
        at += Int(n)
        return true
    }
    public mutating func blob() -> [UInt8]? {
        guard let n = u32(), at + Int(n) <= end else { return nil }
        at += Int(n)
        return Array(bytes[(at - Int(n))..<at])
    }
    /// What `ByteWriter.optionalBlob` wrote: `.some(value)` or `.some(nil)`; nil when malformed.
    public mutating func optionalBlob() -> [UInt8]?? {
        switch u8() {
        case 1: return blob().map { .some($0) }
        case 0: return .some(nil)
        default: return nil
        }
    }
    public mutating func ballot() -> Ballot? {
        guard let r = u64(), let n = u32() else { return nil }
        return Ballot(round: r, node: NodeID(n))
    }
    /// A `KeyValue`; with `legacyInstance`, in the version 1 layout (no floor, no instances),
    /// read as if everything up to that instance may have been forgotten.
    public mutating func keyValue(legacyInstance: UInt64? = nil) -> KeyValue? {
        guard let form = valueForm() else { return nil }
        var v = KeyValue()
        if form.hasBytes {
            guard let b = blob() else { return nil }
            v.kind = form.kind
            v.deadlineMs = form.deadlineMs
            v.bytes = b
        }
        if let legacy = legacyInstance {
            v.floor = legacy
        } else {
            guard let f = u64() else { return nil }
            v.floor = f
        }
        guard let n = u32(), n <= 1 << 16 else { return nil }
        for _ in 0..<n {
            guard let legacy = legacyInstance else {
                guard let r = appliedRequest() else { return nil }
                v.recent.append(r)
                continue
            }
            // Version 1 kept no instance per request: the record's own.
            guard let c = u32(), let k = u64(), let res = result() else { return nil }
            v.recent.append(
                AppliedRequest(id: RequestID(client: c, counter: k), result: res, instance: legacy))
        }
        return v
    }
    /// What `ByteWriter.valueForm` wrote: whether the value's bytes follow, its kind and deadline
    /// (`.string`, 0 for a plain or absent value); nil when malformed.
    mutating func valueForm() -> (hasBytes: Bool, kind: ValueKind, deadlineMs: UInt64)? {
        switch u8() {
        case 0: return (false, .string, 0)
        case 1: return (true, .string, 0)
        case 2:
            guard let k = u8().flatMap(ValueKind.init(rawValue:)), let d = u64() else { return nil }
            return (true, k, d)
        default: return nil
        }
    }
    /// What `ByteWriter.appliedRequest` wrote (nil: malformed).
    mutating func appliedRequest() -> AppliedRequest? {
        guard let c = u32(), let k = u64(), let i = u64(), let res = result() else { return nil }
        return AppliedRequest(id: RequestID(client: c, counter: k), result: res, instance: i)
    }
    /// Skips an `appliedRequest()`, checking what it checks.
    mutating func skipAppliedRequest() -> Bool {
        u32() != nil && u64() != nil && u64() != nil && result() != nil
    }
    public mutating func result() -> OperationResult? {
        guard let tag = u8() else { return nil }
        switch tag {
        case 0: return .ok
        case 1: return u64().map { .number(Int64(bitPattern: $0)) }
        case 2: return .swapped(false)
        case 3: return .swapped(true)
        case 4: return .notANumber
        case 5: return .tooLarge
        case 6: return .previous(nil)
        case 7: return blob().map { .previous($0) }
        case 8: return .previousForgotten
        case 9: return .existed(false)
        case 10: return .existed(true)
        case 11: return .overflow
        case 24, 25: return .inboxAppended(needsSeal: tag == 25)
        case 26: return u64().map { .inboxRefused(last: $0) }
        case 27: return .inboxFull
        case 28, 29:
            guard let n = u32(), Int(n) <= remaining / 8 else { return nil }
            var dropped: [UInt64] = []
            for _ in 0..<n {
                guard let d = u64() else { return nil }
                dropped.append(d)
            }
            return .inboxSealed(applied: tag == 29, dropped: dropped)
        case 40...47: return EnvelopeResult.decode(tag: tag, &self).map { .envelope($0) }
        case 48, 49: return u64().map { .inboxAppendedAt(seq: $0, needsSeal: tag == 49) }
        case 60: return dataReply().map { .data($0) }
        default: return nil
        }
    }
    /// A `DataReply` written by `ByteWriter.dataReply`; nesting bounded.
    public mutating func dataReply(depth: Int = 0) -> DataReply? {
        guard depth < 8, let tag = u8() else { return nil }
        func list() -> [DataReply]? {
            guard let n = u32(), Int(n) <= remaining else { return nil }
            var out: [DataReply] = []
            for _ in 0..<n {
                guard let i = dataReply(depth: depth + 1) else { return nil }
                out.append(i)
            }
            return out
        }
        switch tag {
        case 0: return .ok
        case 1: return blob().map { .error(String(decoding: $0, as: UTF8.self)) }
        case 2: return u64().map { .integer(Int64(bitPattern: $0)) }
        case 3: return .bulk(nil)
        case 4: return blob().map { .bulk($0) }
        case 5: return .array(nil)
        case 6: return list().map { .array($0) }
        case 7: return u64().map { .double(Double(bitPattern: $0)) }
        case 8: return list().map { .map($0) }
        case 9: return list().map { .set($0) }
        case 10: return blob().map { .status(String(decoding: $0, as: UTF8.self)) }
        default: return nil
        }
    }
}
