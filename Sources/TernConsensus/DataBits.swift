// Bits of a string value and the conditional steps of commands across keys (docs/DATA.md):
// SETBIT (a write), GETBIT BITCOUNT BITPOS (reads), Redis's bit arithmetic for BITOP and the
// longest common subsequence for LCS (computed by the server from values it read), and the
// one-key steps LMOVE/MSETNX across keys take (`lpopif`, `delifeq`). Pure, like `DataModel.apply`.
import TernCore

extension DataModel {
    // MARK: - Writes

    /// The writes of this file, nil when `name` is not one. Arguments arrive checked:
    /// `setbit k offset 0|1`; `lpopif k left|right element` (pop that end only if it holds
    /// `element`: bulk element, or nil when the end holds something else); `delifeq k value`
    /// (delete a string without TTL only if it is `value`: 1 deleted, 0 not).
    static func applyTake(_ name: String, _ args: [[UInt8]], _ v: inout KeyValue) -> DataReply? {
        switch name {
        case "setbit":
            guard args.count == 4, let offset = int(args[2]), offset >= 0, let bit = int(args[3]) else {
                return .syntax
            }
            if v.bytes != nil && v.kind != .string { return .wrongType }
            var s = v.bytes ?? []
            let byte = Int(offset >> 3)
            if s.count <= byte { s += [UInt8](repeating: 0, count: byte + 1 - s.count) }
            let mask = UInt8(0x80) >> UInt8(offset & 7)
            let old: Int64 = s[byte] & mask != 0 ? 1 : 0
            if bit == 1 { s[byte] |= mask } else { s[byte] &= ~mask }
            if v.bytes == nil {
                v.kind = .string
                v.deadlineMs = 0
            }
            v.bytes = s
            return .integer(old)
        case "lpopif":
            guard args.count == 4 else { return .syntax }
            guard v.bytes != nil else { return .bulk(nil) }
            guard v.kind == .list else { return .wrongType }
            var l = decodeItems(v.bytes!)
            let left = args[2] == Array("left".utf8)
            guard let end = left ? l.first : l.last, end == args[3] else { return .bulk(nil) }
            if left { l.removeFirst() } else { l.removeLast() }
            store(&v, .list, encodeItems(l), empty: l.isEmpty)
            return .bulk(end)
        case "delifeq":
            guard args.count == 3 else { return .syntax }
            guard v.bytes == args[2], v.kind == .string, v.deadlineMs == 0 else { return .integer(0) }
            clear(&v)
            return .integer(1)
        default:
            return nil
        }
    }

    // MARK: - Reads

    /// The bit reads, nil when `name` is not one: `getbit k offset`; `bitcount k [start end
    /// byte|bit]`; `bitpos k 0|1 [start [end [byte|bit]]]` (the server adds the unit word).
    static func readBits(_ name: String, _ args: [[UInt8]], _ v: StoredValue) -> DataReply? {
        guard ["getbit", "bitcount", "bitpos"].contains(name) else { return nil }
        guard v.kind == .string else { return .wrongType }
        let s = v.bytes
        switch name {
        case "getbit":
            guard let offset = int(args[2]), offset >= 0 else { return .syntax }
            let byte = Int(offset >> 3)
            guard byte < s.count else { return .integer(0) }
            return .integer(s[byte] & (UInt8(0x80) >> UInt8(offset & 7)) != 0 ? 1 : 0)
        case "bitcount":
            guard args.count >= 4 else { return .integer(Int64(s.reduce(0) { $0 + $1.nonzeroBitCount })) }
            guard let start = int(args[2]), let end = int(args[3]) else { return .notInteger }
            let bits = args.count > 4 && args[4] == Array("bit".utf8)
            guard let r = bitRange(start, end, bytes: s.count, bits: bits) else { return .integer(0) }
            var n = 0
            for i in r { n += s[i >> 3] & (UInt8(0x80) >> UInt8(i & 7)) != 0 ? 1 : 0 }
            return .integer(Int64(n))
        default:
            guard let bit = int(args[2]) else { return .syntax }
            let want: UInt8 = bit == 1 ? 1 : 0
            let hasEnd = args.count > 4
            let start = args.count > 3 ? int(args[3]) ?? 0 : 0
            let end = hasEnd ? int(args[4]) ?? -1 : -1
            let bits = args.count > 5 && args[5] == Array("bit".utf8)
            // An empty string holds neither bit (an absent key is answered by `absent`).
            if s.isEmpty { return .integer(-1) }
            guard let r = bitRange(start, end, bytes: s.count, bits: bits) else { return .integer(-1) }
            for i in r where (s[i >> 3] >> UInt8(7 - (i & 7))) & 1 == want { return .integer(Int64(i)) }
            // Redis: looking for a clear bit without an explicit end, the string is taken as
            // padded with zeros on the right, so the answer is the first bit past it.
            if want == 0 && !hasEnd { return .integer(Int64(s.count * 8)) }
            return .integer(-1)
        }
    }

    /// The bit indexes `start…end` names (Redis's clamping: negatives from the end; a range in
    /// bytes covers their whole bits), nil when empty.
    static func bitRange(_ start: Int64, _ end: Int64, bytes: Int, bits: Bool) -> ClosedRange<Int>? {
        let total = Int64(bits ? bytes * 8 : bytes)
        var s = start < 0 ? total + start : start
        var e = end < 0 ? total + end : end
        s = max(0, s)
        e = max(0, e)
        e = min(e, total - 1)
        guard s <= e, total > 0 else { return nil }
        return bits ? Int(s)...Int(e) : Int(s * 8)...Int(e * 8 + 7)
    }

    // MARK: - Across keys (the server reads the values, then computes)

    /// BITOP AND|OR|XOR|NOT of `inputs` (absent keys as empty strings): Redis's rule, shorter
    /// inputs padded with zeros to the longest.
    public static func bitop(_ op: String, _ inputs: [[UInt8]]) -> [UInt8] {
        let n = inputs.map(\.count).max() ?? 0
        if op == "not" { return (inputs.first ?? []).map { ~$0 } }
        var out = [UInt8](repeating: 0, count: n)
        for i in 0..<n {
            var acc: UInt8 = i < inputs[0].count ? inputs[0][i] : 0
            for input in inputs.dropFirst() {
                let b: UInt8 = i < input.count ? input[i] : 0
                switch op {
                case "and": acc &= b
                case "or": acc |= b
                default: acc ^= b
                }
            }
            out[i] = acc
        }
        return out
    }

    /// LCS of `a` and `b` (Redis's algorithm and tie-breaking): the subsequence, and the matching
    /// ranges from the end, each `(a's range, b's range)`.
    public static func lcs(_ a: [UInt8], _ b: [UInt8]) -> (
        sequence: [UInt8], matches: [(a: ClosedRange<Int>, b: ClosedRange<Int>)]
    ) {
        let (n, m) = (a.count, b.count)
        // (n+1)×(m+1) lengths; bounded by the values' sizes (the server bounds their product).
        var t = [UInt32](repeating: 0, count: (n + 1) * (m + 1))
        func at(_ i: Int, _ j: Int) -> Int { i * (m + 1) + j }
        if n > 0 && m > 0 {
            for i in 1...n {
                for j in 1...m {
                    t[at(i, j)] =
                        a[i - 1] == b[j - 1]
                        ? t[at(i - 1, j - 1)] + 1 : max(t[at(i - 1, j)], t[at(i, j - 1)])
                }
            }
        }
        var seq = [UInt8](repeating: 0, count: Int(t[at(n, m)]))
        var idx = seq.count
        var matches: [(a: ClosedRange<Int>, b: ClosedRange<Int>)] = []
        var range: (a: ClosedRange<Int>, b: ClosedRange<Int>)?
        var (i, j) = (n, m)
        while i > 0 && j > 0 {
            if a[i - 1] == b[j - 1] {
                idx -= 1
                seq[idx] = a[i - 1]
                if let r = range, r.a.lowerBound == i, r.b.lowerBound == j {
                    // Extends the current range to the left.
                    range = ((i - 1)...r.a.upperBound, (j - 1)...r.b.upperBound)
                } else {
                    if let r = range { matches.append(r) }
                    range = ((i - 1)...(i - 1), (j - 1)...(j - 1))
                }
                i -= 1
                j -= 1
            } else if t[at(i - 1, j)] > t[at(i, j - 1)] {
                i -= 1
            } else {
                j -= 1
            }
        }
        if let r = range { matches.append(r) }
        return (seq, matches)
    }
}
