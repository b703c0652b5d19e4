// Redis's data model on per-key Paxos (docs/DATA.md): the kinds of value a key holds, their
// encodings inside a key's replicated value, and the pure functions that apply a Redis command
// to a key's value (writes, run by the proposer when it builds an instance) or answer one from it
// (reads, run by the node that served the linearizable read). No clock, socket or file: the time
// a command needs arrives as an argument (absolute deadlines, the expiry horizon).
import Foundation
import TernCore

/// What a key holds (Redis's TYPE).
public enum ValueKind: UInt8, Sendable, Hashable, CaseIterable {
    case string = 0
    case hash = 1
    case set = 2
    case zset = 3
    case list = 4
    case stream = 5

    /// TYPE's answer.
    public var name: String {
        switch self {
        case .string: "string"
        case .hash: "hash"
        case .set: "set"
        case .zset: "zset"
        case .list: "list"
        case .stream: "stream"
        }
    }
}

/// A key's value as a read returns it when it is not a plain string without expiry.
public struct StoredValue: Sendable, Hashable {
    public var kind: ValueKind
    /// Absolute expiry, milliseconds since the Unix epoch; 0 = none.
    public var deadlineMs: UInt64
    /// The string, or the collection's encoding (`DataModel` codecs).
    public var bytes: [UInt8]
    public init(kind: ValueKind, deadlineMs: UInt64, bytes: [UInt8]) {
        self.kind = kind
        self.deadlineMs = deadlineMs
        self.bytes = bytes
    }
}

/// A command's answer as the data model computes it: Redis's reply shapes, without the RESP layer
/// (which TernConsensus does not know). The server maps it one to one onto RESP values.
public indirect enum DataReply: Sendable, Hashable {
    case ok
    case error(String)
    case integer(Int64)
    case bulk([UInt8]?)
    case array([DataReply]?)
    case double(Double)
    /// RESP3 map (RESP2: a flat array).
    case map([DataReply])
    /// RESP3 set (RESP2: an array).
    case set([DataReply])
    /// A status reply (TYPE's "string").
    case status(String)

    static let wrongType = DataReply.error(
        "WRONGTYPE Operation against a key holding the wrong kind of value")
    static func err(_ s: String) -> DataReply { .error("ERR " + s) }
    static let notInteger = err("value is not an integer or out of range")
    static let notFloat = err("value is not a valid float")
    static let syntax = err("syntax error")
    static func bulk(_ s: String) -> DataReply { .bulk(Array(s.utf8)) }

    /// A rough size, to decide whether a result is kept in the de-dup window.
    var weight: Int {
        switch self {
        case .bulk(let b?): b.count
        case .array(let a?): a.reduce(8) { $0 + $1.weight }
        case .map(let a), .set(let a): a.reduce(8) { $0 + $1.weight }
        case .error(let s): s.utf8.count
        default: 8
        }
    }
}

/// The data model's functions.
public enum DataModel {
    // MARK: - Collection codecs (inside `KeyValue.bytes`)

    /// A list of byte strings: `count u32 | blob…` (list elements, set members, hash field/value pairs).
    public static func encodeItems(_ items: [[UInt8]]) -> [UInt8] {
        var w = ByteWriter()
        w.bytes.reserveCapacity(4 + items.reduce(0) { $0 + 4 + $1.count })
        w.u32(UInt32(items.count))
        for i in items { w.blob(i) }
        return w.bytes
    }
    public static func decodeItems(_ bytes: [UInt8]) -> [[UInt8]] {
        var r = ByteReader(bytes)
        guard let n = r.u32() else { return [] }
        var out: [[UInt8]] = []
        out.reserveCapacity(Int(min(n, 1 << 20)))
        for _ in 0..<n {
            guard let b = r.blob() else { break }
            out.append(b)
        }
        return out
    }
    /// A sorted set: `count u32 | (blob member, u64 score bits)…`, ordered by (score, member).
    public static func encodeZSet(_ items: [(member: [UInt8], score: Double)]) -> [UInt8] {
        var w = ByteWriter()
        w.u32(UInt32(items.count))
        for i in items {
            w.blob(i.member)
            w.u64(i.score.bitPattern)
        }
        return w.bytes
    }
    public static func decodeZSet(_ bytes: [UInt8]) -> [(member: [UInt8], score: Double)] {
        var r = ByteReader(bytes)
        guard let n = r.u32() else { return [] }
        var out: [(member: [UInt8], score: Double)] = []
        for _ in 0..<n {
            guard let m = r.blob(), let s = r.u64() else { break }
            out.append((m, Double(bitPattern: s)))
        }
        return out
    }

    // MARK: - Numbers as Redis reads and writes them

    /// A float as Redis's `string2ld`/`strtold` accepts it: no spaces, no NaN; `inf` allowed.
    public static func parseDouble(_ b: [UInt8]) -> Double? {
        // Redis's string2d: strtod over the whole argument, no leading space, no overflow to ±inf
        // and no underflow to 0 (ERANGE), no NaN. Its only length bound is the argument's (the
        // suite writes the largest double out in full: 309 digits and 17 decimals).
        guard !b.isEmpty, b.count <= maxDoubleChars, let first = b.first, first != 32, b.last != 32 else {
            return nil
        }
        let s = String(decoding: b, as: UTF8.self).lowercased()
        switch s {
        case "inf", "+inf", "infinity", "+infinity": return .infinity
        case "-inf", "-infinity": return -.infinity
        default: break
        }
        guard s.allSatisfy({ "0123456789.eE+-".contains($0) }), let d = Double(s), !d.isNaN, d.isFinite else {
            return nil
        }
        if d == 0, s.prefix(while: { $0 != "e" }).contains(where: { "123456789".contains($0) }) {
            return nil  // underflow: a non-zero text read as 0
        }
        return d
    }

    /// The longest number text accepted (Redis's MAX_LONG_DOUBLE_CHARS).
    static let maxDoubleChars = 5 * 1024

    /// Redis 7.0's `%.17g` (scores, RESP2 doubles): "10", "1.5", "0.10000000000000001", "inf".
    /// (Redis 7.2 prints the shortest form that reads back the same double; Tern follows 7.0.15,
    /// the version whose test suite it runs, so a score reads back as a 7.0 client sees it.)
    public static func formatScore(_ d: Double) -> String {
        if d.isInfinite { return d > 0 ? "inf" : "-inf" }
        if d == d.rounded(), abs(d) < 1e17 { return String(Int64(d)) }
        return String(format: "%.17g", d)
    }

    /// INCRBYFLOAT's result text (Redis: `%.17Lf` with trailing zeros removed).
    public static func formatFloat(_ d: Double) -> String {
        if d == d.rounded(), abs(d) < 1e17 { return String(Int64(d)) }
        let short = "\(d)"
        if Double(short) == d, !short.contains("e") { return short }
        var s = String(format: "%.17f", d)
        while s.hasSuffix("0") { s.removeLast() }
        if s.hasSuffix(".") { s.removeLast() }
        return s
    }

    static func int(_ b: [UInt8]) -> Int64? { KeyValue.strictInteger(b) }

    // MARK: - Writes

    /// Applies the write command `args` (lower-cased name first, checked by the server: every
    /// argument is well formed) to `v`. `seed` makes random choices (SPOP) reproducible. An
    /// expired value was already removed by the caller (`KeyValue.applying`); `horizonMs` (the
    /// proposer's expiry horizon, 0: none) is checked again between a transaction's commands.
    ///
    /// `lists`: `v` is a key of its own (not a hash-tag group's member, not a simulated model),
    /// so a big list may be kept in buckets (DataListBuckets.swift): a command that cannot run on
    /// the value as it is then answers a `ListBuckets.Need` and changes nothing.
    public static func apply(
        _ args: [[UInt8]], to v: inout KeyValue, seed: UInt64, horizonMs: UInt64 = 0, lists: Bool = false
    )
        -> DataReply
    {
        guard let first = args.first, args.count >= 2 else { return .syntax }
        let name = String(decoding: first, as: UTF8.self)
        // A run of stream writes (a connection's pipelined ones: RESPFrontend.swift) answers
        // WRONGTYPE on a big list's or set's head like each write alone, instead of having the
        // head made one value first as a transaction of its commands would.
        if lists && !(name == "multi" && isStreamRun(args)) {
            if let r = applyListBuckets(name, args, &v) { return r }
            if let r = plainListNeed(name, v) { return r }
            if let r = applyKeyedBuckets(name, args, &v, seed: seed) { return r }
        }
        switch name {
        case "set", "getdel", "getex", "incrby", "incrbyfloat", "append", "setrange", "pexpireat", "persist",
            "del", "expirecheck", "copyvalue":
            return applyKeyspace(name, args, &v)
        case "hset", "hsetnx", "hdel", "hincrby", "hincrbyfloat":
            return applyHash(name, args, &v)
        case "multi":
            return applyTransaction(args, &v, seed: seed, horizonMs: horizonMs)
        case "restore":
            return applyRestore(args, &v)
        case "sadd", "srem", "spop":
            return applySet(name, args, &v, seed: seed)
        default:
            if let r = applyZSet(name, args, &v) { return r }
            if let r = applyList(name, args, &v) { return r }
            if let r = applyStream(name, args, &v) { return r }
            if let r = applyTake(name, args, &v) { return r }
            return .err("unknown data command '\(name)'")
        }
    }

    /// Whether `args` is a stream write (`name key nowMs limit arg…`): the writes a connection's
    /// pipeline on one key sends as one `multi` (RESPFrontend.swift).
    public static func isStreamWrite(_ args: [[UInt8]]) -> Bool {
        guard let n = args.first, args.count >= 4 else { return false }
        return isStreamWrite(name: n)
    }
    static func isStreamWrite(name n: [UInt8]) -> Bool {
        (3...10).contains(n.count) && KeyspaceEvents.streamWrites.contains(String(decoding: n, as: UTF8.self))
    }

    /// A `multi` of stream writes: `multi key nowMs - (w n write…)…`, every one a stream write.
    /// (Nil-guarded: any other shape is not one.)
    static func isStreamRun(_ args: [[UInt8]]) -> Bool {
        guard args.count >= 7, args[3] == [UInt8(ascii: "-")] else { return false }
        var i = 4
        while i + 1 < args.count {
            guard args[i] == [UInt8(ascii: "w")], let n = int(args[i + 1]), n >= 4,
                i + 2 + Int(n) <= args.count,
                isStreamWrite(name: args[i + 2])
            else { return false }
            i += 2 + Int(n)
        }
        return i == args.count
    }

    /// The `multi` write that applies stream writes `writes` (each `name key nowMs limit arg…`, on
    /// one key) in order as one instance; its reply is an array of their replies, in order.
    public static func streamRun(_ writes: [[[UInt8]]]) -> [[UInt8]] {
        var a: [[UInt8]] = [Array("multi".utf8), writes[0][1], writes[0][2], [UInt8(ascii: "-")]]
        for w in writes {
            a.append([UInt8(ascii: "w")])
            a.append(Array(String(w.count).utf8))
            a += w
        }
        return a
    }

    /// Each write's reply in the reply of a run of `count` stream writes (`streamRun`), in the order
    /// sent; nil when the run did not answer with one reply per write (then each write gets the
    /// run's own outcome). `reversed`: the simulator's mutant `run-replies-reversed`, a shell that
    /// hands the replies out in the wrong order.
    public static func streamRunReplies(_ reply: DataReply, count: Int, reversed: Bool = false)
        -> [DataReply]?
    {
        guard case .array(let each?) = reply, each.count == count else { return nil }
        return reversed ? Array(each.reversed()) : each
    }

    /// A transaction on one key (MULTI … EXEC): `multi key nowMs guard (w|r n arg…)…`, applied as
    /// one instance. `guard` is the WATCHed value's `digest` ("-": none): if the value differs,
    /// nothing runs and the answer is a nil array, as Redis answers a transaction whose watched
    /// key changed. Reads inside see the writes before them.
    static func applyTransaction(_ args: [[UInt8]], _ v: inout KeyValue, seed: UInt64, horizonMs: UInt64)
        -> DataReply
    {
        guard args.count >= 4, let now = int(args[2]) else { return .syntax }
        if args[3] != [UInt8(ascii: "-")]
            && Array(
                digest(
                    v.stored
                        ?? v.bytes.map {
                            StoredValue(kind: .string, deadlineMs: 0, bytes: $0)
                        }
                ).utf8) != args[3]
        {
            return .array(nil)
        }
        var replies: [DataReply] = []
        var i = 4
        var k: UInt64 = 0
        // The stream `v` holds while a run of stream writes goes on, encoded into `v.bytes` once,
        // before anything else reads the value (DataStream.swift, `applyStream`).
        var stream: StreamValue?
        func settle() {
            if let s = stream { v.bytes = s.encoded }
            stream = nil
        }
        defer { settle() }
        while i + 1 < args.count {
            let write = args[i] == [UInt8(ascii: "w")]
            guard let n = int(args[i + 1]), n >= 1, i + 2 + Int(n) <= args.count else {
                settle()
                return .syntax
            }
            let sub = Array(args[(i + 2)..<(i + 2 + Int(n))])
            i += 2 + Int(n)
            k += 1
            // As between merged ops: a command before this one may have left a deadline already
            // at or below the horizon (`SET … PXAT` in the past); Redis deletes the key there.
            if v.isExpired(horizonMs: horizonMs) {
                stream = nil
                clear(&v)
            }
            if write, KeyspaceEvents.streamWrites.contains(String(decoding: sub[0], as: UTF8.self)) {
                replies.append(
                    applyStream(
                        String(decoding: sub[0], as: UTF8.self), sub, &v, decoded: &stream, encode: false)
                        ?? .syntax)
                continue
            }
            settle()
            if write {
                replies.append(apply(sub, to: &v, seed: seed &+ k))
            } else {
                let value = v.bytes.map { StoredValue(kind: v.kind, deadlineMs: v.deadlineMs, bytes: $0) }
                replies.append(read(sub, value, nowMs: UInt64(max(0, now))))
            }
        }
        return .array(replies)
    }

    /// A value's fingerprint for WATCH: kind, deadline and bytes ("absent" when there is none).
    public static func digest(_ v: StoredValue?) -> String {
        guard let v else { return "absent" }
        var w = ByteWriter()
        w.u8(v.kind.rawValue)
        w.u64(v.deadlineMs)
        w.blob(v.bytes)
        return String(XXH64.hash(w.bytes))
    }

    /// Removes the value (Redis deletes a key whose collection became empty).
    static func clear(_ v: inout KeyValue) {
        v.bytes = nil
        v.kind = .string
        v.deadlineMs = 0
    }

    private static func applyKeyspace(_ name: String, _ args: [[UInt8]], _ v: inout KeyValue) -> DataReply {
        let exists = v.bytes != nil
        switch name {
        case "set":
            // set k v [nx|xx] [get] [keepttl | pxat ms]
            var nx = false
            var xx = false
            var get = false
            var keep = false
            var pxat: UInt64 = 0
            var i = 3
            while i < args.count {
                switch String(decoding: args[i], as: UTF8.self) {
                case "nx": nx = true
                case "xx": xx = true
                case "get": get = true
                case "keepttl": keep = true
                case "pxat":
                    i += 1
                    pxat = UInt64(int(args[i]) ?? 1)
                default: return .syntax
                }
                i += 1
            }
            if get && exists && v.kind != .string { return .wrongType }
            let old = v.kind == .string ? v.bytes : nil
            let applies = nx ? !exists : (xx ? exists : true)
            if applies {
                let deadline = keep ? v.deadlineMs : pxat
                v.bytes = args[2]
                v.kind = .string
                v.deadlineMs = deadline
            }
            if get { return .bulk(old) }
            return applies ? .ok : .bulk(nil)
        case "getdel":
            guard exists else { return .bulk(nil) }
            guard v.kind == .string else { return .wrongType }
            let old = v.bytes
            clear(&v)
            return .bulk(old)
        case "getex":
            // getex k [persist | pxat ms]
            guard exists else { return .bulk(nil) }
            guard v.kind == .string else { return .wrongType }
            let old = v.bytes
            if args.count >= 3 {
                if String(decoding: args[2], as: UTF8.self) == "persist" {
                    v.deadlineMs = 0
                } else if args.count == 4 {
                    v.deadlineMs = UInt64(int(args[3]) ?? 1)
                }
            }
            return .bulk(old)
        case "incrby":
            guard let d = int(args[2]) else { return .notInteger }
            if exists && v.kind != .string { return .wrongType }
            guard let cur = exists ? int(v.bytes!) : 0 else { return .notInteger }
            let (sum, o) = cur.addingReportingOverflow(d)
            guard !o else { return .err("increment or decrement would overflow") }
            v.bytes = Array(String(sum).utf8)
            return .integer(sum)
        case "incrbyfloat":
            guard let d = parseDouble(args[2]) else { return .notFloat }
            if exists && v.kind != .string { return .wrongType }
            guard let cur = exists ? parseDouble(v.bytes!) : 0 else { return .notFloat }
            let sum = cur + d
            guard sum.isFinite else { return .err("increment would produce NaN or Infinity") }
            let text = formatFloat(sum)
            v.bytes = Array(text.utf8)
            return .bulk(text)
        case "append":
            // append k v max
            if exists && v.kind != .string { return .wrongType }
            let cur = v.bytes ?? []
            let max = Int(int(args[3]) ?? 0)
            guard cur.count + args[2].count <= max else {
                return .err("string exceeds maximum allowed size (proto-max-bulk-len)")
            }
            v.bytes = cur + args[2]
            return .integer(Int64(cur.count + args[2].count))
        case "setrange":
            // setrange k offset value max
            if exists && v.kind != .string { return .wrongType }
            let off = Int(int(args[2]) ?? 0)
            let value = args[3]
            var cur = v.bytes ?? []
            if value.isEmpty { return .integer(Int64(cur.count)) }
            guard off + value.count <= Int(int(args[4]) ?? 0) else {
                return .err("string exceeds maximum allowed size (proto-max-bulk-len)")
            }
            if cur.count < off + value.count {
                cur += [UInt8](repeating: 0, count: off + value.count - cur.count)
            }
            cur.replaceSubrange(off..<(off + value.count), with: value)
            v.bytes = cur
            return .integer(Int64(cur.count))
        case "pexpireat":
            // pexpireat k ms horizon [nx|xx|gt|lt]: a deadline at or below the horizon deletes.
            guard exists, let ms = int(args[2]), let horizon = int(args[3]) else { return .integer(0) }
            let cond = args.count > 4 ? String(decoding: args[4], as: UTF8.self) : ""
            let current = v.deadlineMs
            switch cond {
            case "nx": if current != 0 { return .integer(0) }
            case "xx": if current == 0 { return .integer(0) }
            // No TTL counts as an infinite one for GT and LT.
            case "gt": if current == 0 || ms <= Int64(current) { return .integer(0) }
            case "lt": if current != 0 && ms >= Int64(current) { return .integer(0) }
            default: break
            }
            if ms <= horizon {
                clear(&v)
            } else {
                v.deadlineMs = UInt64(ms)
            }
            return .integer(1)
        case "persist":
            guard exists, v.deadlineMs != 0 else { return .integer(0) }
            v.deadlineMs = 0
            return .integer(1)
        case "del":
            clear(&v)
            return .integer(exists ? 1 : 0)
        case "expirecheck":
            // Nothing to do but what `applying` did: an expired value is gone. Answers whether
            // the key exists now.
            return .integer(exists ? 1 : 0)
        case "copyvalue":
            // copyvalue k kind deadline bytes replace: COPY/RENAME's write of the destination.
            let replace = args.count > 5 && args[5] == Array("replace".utf8)
            if exists && !replace { return .integer(0) }
            guard let k = int(args[2]).flatMap({ ValueKind(rawValue: UInt8(clamping: $0)) }),
                let d = int(args[3])
            else { return .syntax }
            v.kind = k
            v.deadlineMs = UInt64(max(0, d))
            v.bytes = args[4]
            return .integer(1)
        default:
            return .syntax
        }
    }

    // MARK: Hashes

    /// A hash as ordered field/value pairs plus an index.
    struct Hash {
        var pairs: [([UInt8], [UInt8])] = []
        var index: [[UInt8]: Int] = [:]
        init(_ bytes: [UInt8]?) {
            guard let bytes else { return }
            let items = DataModel.decodeItems(bytes)
            var k = 0
            while k + 1 < items.count {
                index[items[k]] = pairs.count
                pairs.append((items[k], items[k + 1]))
                k += 2
            }
        }
        func get(_ f: [UInt8]) -> [UInt8]? { index[f].map { pairs[$0].1 } }
        /// Sets `f`; true when it was new.
        mutating func set(_ f: [UInt8], _ val: [UInt8]) -> Bool {
            if let i = index[f] {
                pairs[i].1 = val
                return false
            }
            index[f] = pairs.count
            pairs.append((f, val))
            return true
        }
        mutating func remove(_ f: [UInt8]) -> Bool {
            guard let i = index[f] else { return false }
            pairs.remove(at: i)
            index = [:]
            for (n, p) in pairs.enumerated() { index[p.0] = n }
            return true
        }
        var encoded: [UInt8] { DataModel.encodeItems(pairs.flatMap { [$0.0, $0.1] }) }
    }

    static func store(_ v: inout KeyValue, _ kind: ValueKind, _ bytes: [UInt8], empty: Bool) {
        if empty {
            clear(&v)
        } else {
            if v.bytes == nil { v.deadlineMs = 0 }
            v.kind = kind
            v.bytes = bytes
        }
    }

    private static func applyHash(_ name: String, _ args: [[UInt8]], _ v: inout KeyValue) -> DataReply {
        if v.bytes != nil && v.kind != .hash { return .wrongType }
        var h = Hash(v.bytes)
        let reply: DataReply
        switch name {
        case "hset":
            var added: Int64 = 0
            var k = 2
            while k + 1 < args.count {
                if h.set(args[k], args[k + 1]) { added += 1 }
                k += 2
            }
            reply = .integer(added)
        case "hsetnx":
            if h.get(args[2]) != nil { return .integer(0) }
            _ = h.set(args[2], args[3])
            reply = .integer(1)
        case "hdel":
            var n: Int64 = 0
            for f in args.dropFirst(2) where h.remove(f) { n += 1 }
            reply = .integer(n)
        case "hincrby":
            guard let d = int(args[3]) else { return .notInteger }
            let cur: Int64
            if let old = h.get(args[2]) {
                guard let c = int(old) else { return .err("hash value is not an integer") }
                cur = c
            } else {
                cur = 0
            }
            let (sum, o) = cur.addingReportingOverflow(d)
            guard !o else { return .err("increment or decrement would overflow") }
            _ = h.set(args[2], Array(String(sum).utf8))
            reply = .integer(sum)
        case "hincrbyfloat":
            guard let d = parseDouble(args[3]) else { return .notFloat }
            let cur: Double
            if let old = h.get(args[2]) {
                guard let c = parseDouble(old) else { return .err("hash value is not a float") }
                cur = c
            } else {
                cur = 0
            }
            let sum = cur + d
            guard sum.isFinite else { return .err("increment would produce NaN or Infinity") }
            let text = formatFloat(sum)
            _ = h.set(args[2], Array(text.utf8))
            reply = .bulk(text)
        default:
            return .syntax
        }
        store(&v, .hash, h.encoded, empty: h.pairs.isEmpty)
        return reply
    }

    // MARK: Sets

    struct MemberSet {
        var members: [[UInt8]] = []
        var index: [[UInt8]: Int] = [:]
        init(_ bytes: [UInt8]?) {
            guard let bytes else { return }
            for m in DataModel.decodeItems(bytes) where index[m] == nil {
                index[m] = members.count
                members.append(m)
            }
        }
        func contains(_ m: [UInt8]) -> Bool { index[m] != nil }
        mutating func insert(_ m: [UInt8]) -> Bool {
            guard index[m] == nil else { return false }
            index[m] = members.count
            members.append(m)
            return true
        }
        mutating func remove(_ m: [UInt8]) -> Bool {
            guard let i = index[m] else { return false }
            // Swap with the last: O(1), order is not Redis's promise for sets.
            let last = members.count - 1
            if i != last {
                members[i] = members[last]
                index[members[i]] = i
            }
            members.removeLast()
            index[m] = nil
            return true
        }
        var encoded: [UInt8] { DataModel.encodeItems(members) }
    }

    private static func applySet(_ name: String, _ args: [[UInt8]], _ v: inout KeyValue, seed: UInt64)
        -> DataReply
    {
        if v.bytes != nil && v.kind != .set { return .wrongType }
        var s = MemberSet(v.bytes)
        let reply: DataReply
        switch name {
        case "sadd":
            var n: Int64 = 0
            for m in args.dropFirst(2) where s.insert(m) { n += 1 }
            reply = .integer(n)
        case "srem":
            var n: Int64 = 0
            for m in args.dropFirst(2) where s.remove(m) { n += 1 }
            reply = .integer(n)
        case "spop":
            // spop k [count]
            var rng = SplitMix64(seed: seed)
            if args.count == 2 {
                guard !s.members.isEmpty else { return .bulk(nil) }
                let m = s.members[Int(rng.next() % UInt64(s.members.count))]
                _ = s.remove(m)
                reply = .bulk(m)
            } else {
                let count = Int(int(args[2]) ?? 0)
                var out: [DataReply] = []
                while out.count < count && !s.members.isEmpty {
                    let m = s.members[Int(rng.next() % UInt64(s.members.count))]
                    _ = s.remove(m)
                    out.append(.bulk(m))
                }
                reply = .set(out)
            }
        default:
            return .syntax
        }
        store(&v, .set, s.encoded, empty: s.members.isEmpty)
        return reply
    }
}

extension Array {
    /// The index of the first element for which `isBefore` is false, by binary search: the array
    /// is ordered so that every element `isBefore` holds for comes first (sorted sets' items,
    /// streams' entries, groups, consumers and pending lists).
    func partitionPoint(_ isBefore: (Element) -> Bool) -> Int {
        var lo = 0
        var hi = count
        while lo < hi {
            let mid = (lo + hi) / 2
            if isBefore(self[mid]) { lo = mid + 1 } else { hi = mid }
        }
        return lo
    }
}
