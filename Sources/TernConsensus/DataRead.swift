// The read side of the data model (docs/DATA.md): Redis's read commands answered from a key's
// value as a linearizable read returned it. Pure, like `DataModel.apply`.
import TernCore

extension DataModel {
    /// Answers the read command `args` (lower-cased name first, checked by the server) from `v`
    /// (nil: the key is absent). `nowMs` is the serving node's clock (TTL's remaining time only).
    /// `seed`: where the random picks of HRANDFIELD/SRANDMEMBER/ZRANDMEMBER come from (the shell
    /// passes a fresh random number per call; without one, `nowMs`, so a replay is exact).
    public static func read(_ args: [[UInt8]], _ v: StoredValue?, nowMs: UInt64, seed: UInt64? = nil)
        -> DataReply
    {
        let name = String(decoding: args[0], as: UTF8.self)
        switch name {
        case "type": return .status(v?.kind.name ?? "none")
        case "exists": return .integer(v == nil ? 0 : 1)
        case "pttl", "ttl", "pexpiretime", "expiretime":
            guard let v else { return .integer(-2) }
            guard v.deadlineMs != 0 else { return .integer(-1) }
            let d = Int64(v.deadlineMs)
            switch name {
            case "pttl": return .integer(max(0, d - Int64(nowMs)))
            case "ttl": return .integer(max(0, (d - Int64(nowMs) + 500) / 1000))
            case "pexpiretime": return .integer(d)
            default: return .integer((d + 500) / 1000)
            }
        case "memusage":
            // An estimate: the name, the value's bytes, and a record's overhead.
            guard let v else { return .bulk(nil) }
            return .integer(Int64(args[1].count + v.bytes.count + 64))
        case "dumpvalue":
            // COPY/RENAME's read of the source: kind, deadline, bytes.
            guard let v else { return .array(nil) }
            return .array([.integer(Int64(v.kind.rawValue)), .integer(Int64(v.deadlineMs)), .bulk(v.bytes)])
        default: break
        }
        if let r = readStream(name, args, v, nowMs: nowMs) { return r }
        guard let v else { return absent(name, args) }
        if KeyedBuckets.isKeyedKind(v.kind) && KeyedBuckets.isHead(v.bytes) {
            return .err("internal: a bucketed \(v.kind.name) read as one value")
        }
        switch name {
        case "get", "strlen", "getrange", "substr":
            guard v.kind == .string else { return .wrongType }
            return readString(name, args, v.bytes)
        case "hget", "hmget", "hgetall", "hexists", "hlen", "hkeys", "hvals", "hstrlen", "hrandfield",
            "hscan":
            guard v.kind == .hash else { return .wrongType }
            return readHash(name, args, Hash(v.bytes), seed: seed ?? nowMs)
        case "sismember", "smismember", "smembers", "scard", "srandmember", "sscan":
            guard v.kind == .set else { return .wrongType }
            return readSet(name, args, MemberSet(v.bytes), seed: seed ?? nowMs)
        default:
            if let r = readZSet(name, args, v, seed: seed ?? nowMs) { return r }
            if let r = readList(name, args, v) { return r }
            if let r = readBits(name, args, v) { return r }
            return .err("unknown data command '\(name)'")
        }
    }

    /// The reply for a read of an absent key.
    static func absent(_ name: String, _ args: [[UInt8]]) -> DataReply {
        switch name {
        case "get", "hget",
            "getrange" where false:
            return .bulk(nil)
        case "strlen", "hlen", "scard", "zcard", "llen", "hexists", "sismember", "hstrlen", "zcount",
            "zlexcount", "getbit", "bitcount":
            return .integer(0)
        case "bitpos": return .integer(args.count > 2 && args[2] == [UInt8(ascii: "1")] ? -1 : 0)
        case "getrange", "substr": return .bulk([])
        case "hmget", "zmscore": return .array(Array(repeating: .bulk(nil), count: max(0, args.count - 2)))
        case "smismember": return .array(Array(repeating: .integer(0), count: max(0, args.count - 2)))
        case "hgetall": return .map([])
        case "smembers": return .set([])
        case "hkeys", "hvals", "lrange", "zrange", "zrangebyscore", "zrevrangebyscore", "zrevrange",
            "zrangebylex", "zrevrangebylex":
            return .array([])
        case "hscan", "sscan", "zscan": return .array([.bulk(Array("0".utf8)), .array([])])
        case "srandmember", "hrandfield", "zrandmember":
            return args.count >= 3 ? .array([]) : .bulk(nil)
        case "lpos":
            return args.dropFirst(3).contains(where: { $0 == Array("count".utf8) }) ? .array([]) : .bulk(nil)
        default: return .bulk(nil)
        }
    }

    static func readString(_ name: String, _ args: [[UInt8]], _ b: [UInt8]) -> DataReply {
        switch name {
        case "get": return .bulk(b)
        case "strlen": return .integer(Int64(b.count))
        default:
            // getrange k start end (Redis's clamping)
            guard var s = int(args[2]), var e = int(args[3]) else { return .notInteger }
            let n = Int64(b.count)
            if s < 0 && e < 0 && s > e { return .bulk([]) }
            if s < 0 { s = n + s }
            if e < 0 { e = n + e }
            s = max(0, s)
            e = max(0, e)
            e = min(e, n - 1)
            if s > e || n == 0 { return .bulk([]) }
            return .bulk(Array(b[Int(s)...Int(e)]))
        }
    }

    static func readHash(_ name: String, _ args: [[UInt8]], _ h: Hash, seed: UInt64) -> DataReply {
        switch name {
        case "hget": return .bulk(h.get(args[2]))
        case "hmget": return .array(args.dropFirst(2).map { .bulk(h.get($0)) })
        case "hgetall": return .map(h.pairs.flatMap { [DataReply.bulk($0.0), .bulk($0.1)] })
        case "hexists": return .integer(h.get(args[2]) == nil ? 0 : 1)
        case "hlen": return .integer(Int64(h.pairs.count))
        case "hkeys": return .array(h.pairs.map { .bulk($0.0) })
        case "hvals": return .array(h.pairs.map { .bulk($0.1) })
        case "hstrlen": return .integer(Int64(h.get(args[2])?.count ?? 0))
        case "hscan": return scan(args, h.pairs.map { ($0.0, [$0.1]) })
        default:
            // hrandfield k [count [withvalues]]
            var rng = SplitMix64(seed: seed)
            if args.count == 2 {
                return .bulk(h.pairs[Int(rng.next() % UInt64(h.pairs.count))].0)
            }
            let picks = randomPicks(h.pairs.count, int(args[2]) ?? 0, &rng)
            let withValues = args.count > 3
            return .array(
                picks.flatMap { i -> [DataReply] in
                    withValues ? [.bulk(h.pairs[i].0), .bulk(h.pairs[i].1)] : [.bulk(h.pairs[i].0)]
                })
        }
    }

    static func readSet(_ name: String, _ args: [[UInt8]], _ s: MemberSet, seed: UInt64) -> DataReply {
        switch name {
        case "sismember": return .integer(s.contains(args[2]) ? 1 : 0)
        case "smismember": return .array(args.dropFirst(2).map { .integer(s.contains($0) ? 1 : 0) })
        case "smembers": return .set(s.members.map { .bulk($0) })
        case "scard": return .integer(Int64(s.members.count))
        case "sscan": return scan(args, s.members.map { ($0, []) })
        default:
            // srandmember k [count]
            var rng = SplitMix64(seed: seed)
            if args.count == 2 { return .bulk(s.members[Int(rng.next() % UInt64(s.members.count))]) }
            let picks = randomPicks(s.members.count, int(args[2]) ?? 0, &rng)
            return .array(picks.map { .bulk(s.members[$0]) })
        }
    }

    /// Redis's random-pick rule: a positive count gives distinct elements (at most all), a negative
    /// one |count| picks that may repeat.
    static func randomPicks(_ n: Int, _ count: Int64, _ rng: inout SplitMix64) -> [Int] {
        guard n > 0, count != 0 else { return [] }
        if count < 0 {
            // `magnitude`: -Int64.min does not exist (a crash reachable from SRANDMEMBER k -2^63).
            return (0..<Int(min(count.magnitude, 1 << 24))).map { _ in Int(rng.next() % UInt64(n)) }
        }
        if count >= n { return Array(0..<n) }
        var idx = Array(0..<n)
        for k in 0..<Int(count) {
            let j = k + Int(rng.next() % UInt64(n - k))
            idx.swapAt(k, j)
        }
        return Array(idx.prefix(Int(count)))
    }

    /// HSCAN/SSCAN/ZSCAN over a value held whole: one call returns everything that matches
    /// (cursor 0 back), which Redis allows for small encodings. `scan k cursor [match p] [count n]`
    /// (`novalues` for HSCAN).
    static func scan(_ args: [[UInt8]], _ items: [([UInt8], [[UInt8]])]) -> DataReply {
        var pattern: [UInt8]?
        var noValues = false
        var i = 3
        while i < args.count {
            switch String(decoding: args[i], as: UTF8.self) {
            case "match":
                pattern = args[i + 1]
                i += 1
            case "count": i += 1
            case "novalues": noValues = true
            default: break
            }
            i += 1
        }
        var out: [DataReply] = []
        for (k, rest) in items where pattern.map({ Glob.matches($0, k) }) ?? true {
            out.append(.bulk(k))
            if !noValues { out += rest.map { .bulk($0) } }
        }
        return .array([.bulk(Array("0".utf8)), .array(out)])
    }
}

/// What the node that served a linearizable read does with the value it returned (docs/DATA.md,
/// "Expiry"). One rule for the server's shell (`Node.settleExpiry`) and the simulator.
public enum ReadSettlement: Sendable, Hashable {
    /// Answer the command from this value (nil: the key is absent).
    case answer(StoredValue?)
    /// The value's deadline is at or below the node's horizon: do not answer from it; propose
    /// `DataModel.expireCheck` on the key and settle with `DataModel.afterExpireCheck`.
    case expire
}

extension DataModel {
    /// Decides a read: answer from `value`, or remove it through the protocol first because its
    /// deadline is at or below `horizonMs` (the serving node's clock plus the skew bound).
    public static func settle(_ value: StoredValue?, horizonMs: UInt64) -> ReadSettlement {
        guard let v = value, v.deadlineMs != 0, v.deadlineMs <= horizonMs else { return .answer(value) }
        return .expire
    }

    /// The write that removes `key`'s value if it is past the proposer's horizon (and otherwise
    /// changes nothing); it answers whether the key exists afterwards.
    public static func expireCheck(_ key: [UInt8]) -> Operation {
        .data([Array("expirecheck".utf8), key])
    }

    /// After `expireCheck` was chosen: true when the key is now absent (answer the read as
    /// absent), false when it still exists (it was written meanwhile: read again), nil when the
    /// result is not `expirecheck`'s.
    public static func afterExpireCheck(_ r: OperationResult) -> Bool? {
        switch r {
        case .data(.integer(0)): true
        case .data(.integer(1)): false
        default: nil
        }
    }
}
