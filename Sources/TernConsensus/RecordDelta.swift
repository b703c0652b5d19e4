// A record's open slot written as a change of the chosen value beside it (record version 4). On a
// busy key an Accept is nearly always open, and its value is the chosen value after a few more
// writes: a big list's head, a set's head, a stream. Written whole, a record held the key's value
// twice; as a delta it holds it once and the bytes the writes changed.
//
// Layout, after the slot's instance and ballot (flag 2 in the record):
//   u8 form (0 absent, 1 plain bytes, 2 typed: then u8 kind, u64 deadline)
//   if bytes: u32 prefix | u32 suffix | blob middle      — bytes = base[..<prefix] + middle + base[end - suffix...]
//   u64 floor
//   u32 drop | u32 n | n × (u32 client, u64 counter, u64 instance, result)
//                                                         — recent = base.recent[drop...] + the n new ones
import TernCore

enum RecordDelta {
    /// The lengths of the common prefix and suffix of `a` and `b` (not overlapping in either).
    static func common(_ a: [UInt8], _ b: [UInt8]) -> (prefix: Int, suffix: Int) {
        a.withUnsafeBytes { pa in
            b.withUnsafeBytes { pb in
                let n = min(pa.count, pb.count)
                var p = 0
                while p + 8 <= n
                    && pa.loadUnaligned(fromByteOffset: p, as: UInt64.self)
                        == pb.loadUnaligned(fromByteOffset: p, as: UInt64.self)
                {
                    p += 8
                }
                while p < n && pa[p] == pb[p] { p += 1 }
                let m = n - p
                var s = 0
                while s + 8 <= m
                    && pa.loadUnaligned(fromByteOffset: pa.count - s - 8, as: UInt64.self)
                        == pb.loadUnaligned(fromByteOffset: pb.count - s - 8, as: UInt64.self)
                {
                    s += 8
                }
                while s < m && pa[pa.count - 1 - s] == pb[pb.count - 1 - s] { s += 1 }
                return (p, s)
            }
        }
    }

    /// How many of `base`'s first requests `recent` dropped, if `recent` continues `base` (its
    /// start is `base` without them); `base.count` when it shares nothing.
    static func dropped(_ base: [AppliedRequest], _ recent: [AppliedRequest]) -> Int {
        var d = 0
        while d < base.count {
            let kept = base.count - d
            if kept <= recent.count && base[d...].elementsEqual(recent[..<kept]) { return d }
            d += 1
        }
        return base.count
    }

    /// Whether writing `v` as a delta of `base` saves enough to be worth it (a few dozen bytes).
    static func worth(_ v: KeyValue, base: KeyValue) -> (prefix: Int, suffix: Int, drop: Int)? {
        let b = base.bytes ?? []
        let (p, s) = v.bytes.map { common($0, b) } ?? (0, 0)
        let drop = dropped(base.recent, v.recent)
        let keptRequests = base.recent.count - drop
        // Bytes and requests written once instead of twice, against the delta's own 16 bytes.
        guard p + s + 21 * keptRequests >= 64 else { return nil }
        return (p, s, drop)
    }
}

extension ByteWriter {
    /// `v` as a change of `base` (`RecordDelta`), with the parts `RecordDelta.worth` found.
    mutating func keyValueDelta(_ v: KeyValue, base: KeyValue, prefix p: Int, suffix s: Int, drop: Int) {
        valueForm(v)
        if let b = v.bytes {
            u32(UInt32(p))
            u32(UInt32(s))
            u32(UInt32(b.count - p - s))
            bytes += b[p..<(b.count - s)]
        }
        u64(v.floor)
        u32(UInt32(drop))
        let new = v.recent[(base.recent.count - drop)...]
        u32(UInt32(new.count))
        for r in new { appliedRequest(r) }
    }
}

extension ByteReader {
    /// A value written by `ByteWriter.keyValueDelta` against `base`; nil when malformed or when it
    /// does not fit `base` (a prefix and suffix longer than its bytes, more requests dropped than
    /// it has).
    mutating func keyValueDelta(base: KeyValue) -> KeyValue? {
        guard let form = valueForm() else { return nil }
        var v = KeyValue()
        if form.hasBytes {
            v.kind = form.kind
            v.deadlineMs = form.deadlineMs
            let b = base.bytes ?? []
            guard let p = u32(), let s = u32(), Int(p) + Int(s) <= b.count, let middle = blob() else {
                return nil
            }
            var out: [UInt8] = []
            out.reserveCapacity(Int(p) + middle.count + Int(s))
            out += b[..<Int(p)]
            out += middle
            out += b[(b.count - Int(s))...]
            v.bytes = out
        }
        guard let f = u64(), let drop = u32(), Int(drop) <= base.recent.count, let n = u32(), n <= 1 << 16
        else {
            return nil
        }
        v.floor = f
        v.recent = Array(base.recent[Int(drop)...])
        for _ in 0..<n {
            guard let r = appliedRequest() else { return nil }
            v.recent.append(r)
        }
        return v
    }

    /// Skips what `keyValueDelta(base:)` reads, checking the same against a base whose bytes are
    /// `baseBytes` long and which remembers `baseRequests` requests (false where it returns nil).
    mutating func skipKeyValueDelta(baseBytes: Int, baseRequests: Int) -> Bool {
        guard let form = valueForm() else { return false }
        if form.hasBytes {
            guard let p = u32(), let s = u32(), Int(p) + Int(s) <= baseBytes, skipBlob() else { return false }
        }
        guard u64() != nil, let drop = u32(), Int(drop) <= baseRequests, let n = u32(), n <= 1 << 16 else {
            return false
        }
        for _ in 0..<n {
            guard skipAppliedRequest() else { return false }
        }
        return true
    }

    /// The byte count and the number of remembered requests of the `KeyValue` encoded at the
    /// reader's position (the base of a delta slot), if it reads as one.
    mutating func keyValueSizes() -> (bytes: Int, requests: Int)? {
        guard let form = valueForm() else { return nil }
        var count = 0
        if form.hasBytes {
            guard let n = u32(), at + Int(n) <= end else { return nil }
            count = Int(n)
            guard skip(Int(n)) else { return nil }
        }
        guard u64() != nil, let n = u32() else { return nil }
        return (count, Int(n))
    }
}
