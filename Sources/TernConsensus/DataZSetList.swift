// Sorted sets and lists in the data model (docs/DATA.md). Arguments arrive checked and
// normalised by the server (lower-cased options; ZRANGEBYSCORE and friends as ZRANGE forms).
import TernCore

extension DataModel {
    // MARK: - Sorted sets

    /// A sorted set ordered by (score, member), with a member index.
    struct ZSet {
        var items: [(member: [UInt8], score: Double)] = []
        var scores: [[UInt8]: Double] = [:]
        init(_ bytes: [UInt8]?) {
            guard let bytes else { return }
            items = DataModel.decodeZSet(bytes)
            for i in items { scores[i.member] = i.score }
        }
        static func before(_ a: (member: [UInt8], score: Double), _ b: (member: [UInt8], score: Double))
            -> Bool
        {
            a.score != b.score ? a.score < b.score : a.member.lexicographicallyPrecedes(b.member)
        }
        /// Index of the first item not before `x`.
        func lowerBound(_ x: (member: [UInt8], score: Double)) -> Int {
            items.partitionPoint { Self.before($0, x) }
        }
        func rank(_ m: [UInt8]) -> Int? {
            guard let s = scores[m] else { return nil }
            return lowerBound((m, s))
        }
        mutating func remove(_ m: [UInt8]) -> Bool {
            guard let r = rank(m) else { return false }
            items.remove(at: r)
            scores[m] = nil
            return true
        }
        mutating func put(_ m: [UInt8], _ s: Double) {
            _ = remove(m)
            items.insert((m, s), at: lowerBound((m, s)))
            scores[m] = s
        }
        var encoded: [UInt8] { DataModel.encodeZSet(items) }
    }

    /// A score bound: "(1.5" exclusive, "-inf", "+inf".
    public static func parseScoreBound(_ b: [UInt8]) -> (Double, exclusive: Bool)? {
        if b.first == UInt8(ascii: "(") { return parseDouble(Array(b.dropFirst())).map { ($0, true) } }
        return parseDouble(b).map { ($0, false) }
    }
    /// A lex bound: "[a" inclusive, "(a" exclusive, "-" and "+" the ends (nil bytes, with the flag
    /// saying which end).
    public static func parseLexBound(_ b: [UInt8]) -> (bytes: [UInt8]?, exclusive: Bool, plus: Bool)? {
        if b == [UInt8(ascii: "-")] { return (nil, false, false) }
        if b == [UInt8(ascii: "+")] { return (nil, false, true) }
        guard let f = b.first, f == UInt8(ascii: "[") || f == UInt8(ascii: "(") else { return nil }
        return (Array(b.dropFirst()), f == UInt8(ascii: "("), false)
    }

    static func inScore(_ s: Double, min: (Double, exclusive: Bool), max: (Double, exclusive: Bool)) -> Bool {
        (min.exclusive ? s > min.0 : s >= min.0) && (max.exclusive ? s < max.0 : s <= max.0)
    }
    static func inLex(
        _ m: [UInt8], min: (bytes: [UInt8]?, exclusive: Bool, plus: Bool),
        max: (bytes: [UInt8]?, exclusive: Bool, plus: Bool)
    ) -> Bool {
        let aboveMin: Bool
        if let b = min.bytes {
            aboveMin = min.exclusive ? b.lexicographicallyPrecedes(m) : !m.lexicographicallyPrecedes(b)
        } else {
            aboveMin = !min.plus
        }
        let belowMax: Bool
        if let b = max.bytes {
            belowMax = max.exclusive ? m.lexicographicallyPrecedes(b) : !b.lexicographicallyPrecedes(m)
        } else {
            belowMax = max.plus
        }
        return aboveMin && belowMax
    }

    /// Redis's rank clamping: start/stop, negatives from the end; nil when empty.
    static func rankRange(_ start: Int64, _ stop: Int64, count n: Int) -> ClosedRange<Int>? {
        var s = start < 0 ? Int64(n) + start : start
        var e = stop < 0 ? Int64(n) + stop : stop
        s = max(0, s)
        e = min(e, Int64(n) - 1)
        guard s <= e, n > 0 else { return nil }
        return Int(s)...Int(e)
    }

    static func applyZSet(_ name: String, _ args: [[UInt8]], _ v: inout KeyValue) -> DataReply? {
        guard
            [
                "zadd", "zincrby", "zrem", "zremrangebyscore", "zremrangebyrank", "zremrangebylex", "zpopmin",
                "zpopmax",
            ]
            .contains(name)
        else { return nil }
        if v.bytes != nil && v.kind != .zset { return .wrongType }
        var z = ZSet(v.bytes)
        let reply: DataReply
        switch name {
        case "zadd", "zincrby":
            // zadd k [nx] [xx] [gt] [lt] [ch] [incr] score member …; zincrby k incr member
            var nx = false
            var xx = false
            var gt = false
            var lt = false
            var ch = false
            var incr = name == "zincrby"
            var i = 2
            if name == "zadd" {
                while i < args.count,
                    let flag = ["nx", "xx", "gt", "lt", "ch", "incr"].first(where: {
                        Array($0.utf8) == args[i]
                    })
                {
                    switch flag {
                    case "nx": nx = true
                    case "xx": xx = true
                    case "gt": gt = true
                    case "lt": lt = true
                    case "ch": ch = true
                    default: incr = true
                    }
                    i += 1
                }
            }
            var added: Int64 = 0
            var changed: Int64 = 0
            var last: DataReply = .bulk(nil)
            while i + 1 < args.count {
                guard let score = parseDouble(args[i]) else { return .notFloat }
                let m = args[i + 1]
                i += 2
                let old = z.scores[m]
                if (nx && old != nil) || (xx && old == nil) {
                    last = .bulk(nil)
                    continue
                }
                var new = score
                if incr, let o = old { new = o + score }
                if new.isNaN { return .err("resulting score is not a number (NaN)") }
                if let o = old {
                    if (gt && new <= o) || (lt && new >= o) {
                        last = .bulk(nil)
                        continue
                    }
                    if new != o {
                        z.put(m, new)
                        changed += 1
                    }
                } else {
                    z.put(m, new)
                    added += 1
                }
                last = .double(new)
            }
            reply = incr ? last : .integer(ch ? added + changed : added)
        case "zrem":
            var n: Int64 = 0
            for m in args.dropFirst(2) where z.remove(m) { n += 1 }
            reply = .integer(n)
        case "zremrangebyscore", "zremrangebylex", "zremrangebyrank":
            let doomed: [[UInt8]]
            if name == "zremrangebyrank" {
                guard let s = int(args[2]), let e = int(args[3]) else { return .notInteger }
                doomed = rankRange(s, e, count: z.items.count).map { z.items[$0].map(\.member) } ?? []
            } else if name == "zremrangebyscore" {
                guard let lo = parseScoreBound(args[2]), let hi = parseScoreBound(args[3]) else {
                    return .err("min or max is not a float")
                }
                doomed = z.items.filter { inScore($0.score, min: lo, max: hi) }.map(\.member)
            } else {
                guard let lo = parseLexBound(args[2]), let hi = parseLexBound(args[3]) else {
                    return .err("min or max not valid string range item")
                }
                doomed = z.items.filter { inLex($0.member, min: lo, max: hi) }.map(\.member)
            }
            for m in doomed { _ = z.remove(m) }
            reply = .integer(Int64(doomed.count))
        default:
            // zpopmin/zpopmax k [count]
            let count = args.count > 2 ? Int(int(args[2]) ?? 1) : 1
            var out: [DataReply] = []
            while out.count < count * 2, !z.items.isEmpty {
                let item = name == "zpopmin" ? z.items.first! : z.items.last!
                _ = z.remove(item.member)
                out += [.bulk(item.member), .double(item.score)]
            }
            reply = .array(out)
        }
        store(&v, .zset, z.encoded, empty: z.items.isEmpty)
        return reply
    }

    static func readZSet(_ name: String, _ args: [[UInt8]], _ v: StoredValue, seed: UInt64) -> DataReply? {
        guard
            [
                "zscore", "zmscore", "zcard", "zcount", "zlexcount", "zrank", "zrevrank", "zrange", "zscan",
                "zrandmember",
            ].contains(name)
        else { return nil }
        guard v.kind == .zset else { return .wrongType }
        let z = ZSet(v.bytes)
        switch name {
        case "zscore": return z.scores[args[2]].map { .double($0) } ?? .bulk(nil)
        case "zmscore":
            return .array(args.dropFirst(2).map { z.scores[$0].map { .double($0) } ?? .bulk(nil) })
        case "zcard": return .integer(Int64(z.items.count))
        case "zcount":
            guard let lo = parseScoreBound(args[2]), let hi = parseScoreBound(args[3]) else {
                return .err("min or max is not a float")
            }
            return .integer(Int64(z.items.filter { inScore($0.score, min: lo, max: hi) }.count))
        case "zlexcount":
            guard let lo = parseLexBound(args[2]), let hi = parseLexBound(args[3]) else {
                return .err("min or max not valid string range item")
            }
            return .integer(Int64(z.items.filter { inLex($0.member, min: lo, max: hi) }.count))
        case "zrank", "zrevrank":
            guard let r = z.rank(args[2]) else { return .bulk(nil) }
            return .integer(Int64(name == "zrank" ? r : z.items.count - 1 - r))
        case "zscan":
            return scan(args, z.items.map { ($0.member, [Array(formatScore($0.score).utf8)]) })
        case "zrandmember":
            var rng = SplitMix64(seed: seed)
            if args.count == 2 { return .bulk(z.items[Int(rng.next() % UInt64(z.items.count))].member) }
            let picks = randomPicks(z.items.count, int(args[2]) ?? 0, &rng)
            let ws = args.count > 3
            return .array(
                picks.flatMap { i -> [DataReply] in
                    ws ? [.bulk(z.items[i].member), .double(z.items[i].score)] : [.bulk(z.items[i].member)]
                })
        default:
            return zrange(args, z)
        }
    }

    /// zrange k start stop [byscore|bylex] [rev] [limit offset count] [withscores]; with REV and
    /// BYSCORE/BYLEX the bounds are (max, min), as Redis.
    static func zrange(_ args: [[UInt8]], _ z: ZSet) -> DataReply {
        var by = ""
        var rev = false
        var withScores = false
        var offset: Int64 = 0
        var limit: Int64 = -1
        var i = 4
        while i < args.count {
            switch String(decoding: args[i], as: UTF8.self) {
            case "byscore": by = "score"
            case "bylex": by = "lex"
            case "rev": rev = true
            case "withscores": withScores = true
            case "limit":
                offset = int(args[i + 1]) ?? 0
                limit = int(args[i + 2]) ?? -1
                i += 2
            default: return .syntax
            }
            i += 1
        }
        var picked: [(member: [UInt8], score: Double)]
        switch by {
        case "score":
            guard let a = parseScoreBound(args[2]), let b = parseScoreBound(args[3]) else {
                return .err("min or max is not a float")
            }
            let (lo, hi) = rev ? (b, a) : (a, b)
            picked = z.items.filter { inScore($0.score, min: lo, max: hi) }
            if rev { picked.reverse() }
        case "lex":
            guard let a = parseLexBound(args[2]), let b = parseLexBound(args[3]) else {
                return .err("min or max not valid string range item")
            }
            let (lo, hi) = rev ? (b, a) : (a, b)
            picked = z.items.filter { inLex($0.member, min: lo, max: hi) }
            if rev { picked.reverse() }
        default:
            guard let s = int(args[2]), let e = int(args[3]) else { return .notInteger }
            let ordered = rev ? Array(z.items.reversed()) : z.items
            picked = rankRange(s, e, count: ordered.count).map { Array(ordered[$0]) } ?? []
        }
        if by != "" {
            if offset < 0 {
                picked = []
            } else {
                picked = Array(picked.dropFirst(Int(min(offset, Int64(picked.count)))))
                if limit >= 0 { picked = Array(picked.prefix(Int(min(limit, Int64(picked.count))))) }
            }
        }
        return .array(
            picked.flatMap { p -> [DataReply] in
                withScores ? [.bulk(p.member), .double(p.score)] : [.bulk(p.member)]
            })
    }

    // MARK: - Lists

    static func applyList(_ name: String, _ args: [[UInt8]], _ v: inout KeyValue) -> DataReply? {
        guard
            [
                "lpush", "rpush", "lpushx", "rpushx", "lpop", "rpop", "lset", "lrem", "ltrim", "linsert",
                "lmove",
            ]
            .contains(name)
        else { return nil }
        if let r = applyPlainListEnds(name, args, &v) { return r }
        if v.bytes != nil && v.kind != .list { return .wrongType }
        var l = v.bytes.map(decodeItems) ?? []
        let reply: DataReply
        switch name {
        case "lpush", "rpush", "lpushx", "rpushx":
            if name.hasSuffix("x") && v.bytes == nil { return .integer(0) }
            if name.hasPrefix("l") {
                l.insert(contentsOf: args.dropFirst(2).reversed(), at: 0)
            } else {
                l += args.dropFirst(2)
            }
            reply = .integer(Int64(l.count))
        case "lpop", "rpop":
            // lpop k [count]
            guard v.bytes != nil else { return args.count > 2 ? .array(nil) : .bulk(nil) }
            if args.count > 2 {
                let n = min(Int(int(args[2]) ?? 0), l.count)
                let taken = name == "lpop" ? Array(l.prefix(n)) : Array(l.suffix(n).reversed())
                if name == "lpop" { l.removeFirst(n) } else { l.removeLast(n) }
                reply = .array(taken.map { .bulk($0) })
            } else {
                reply = .bulk(name == "lpop" ? l.removeFirst() : l.removeLast())
            }
        case "lset":
            guard v.bytes != nil else { return .err("no such key") }
            guard var i = int(args[2]) else { return .notInteger }
            if i < 0 { i += Int64(l.count) }
            guard i >= 0, i < l.count else { return .err("index out of range") }
            l[Int(i)] = args[3]
            reply = .ok
        case "lrem":
            // lrem k count element
            guard let count = int(args[2]) else { return .notInteger }
            var removed: Int64 = 0
            let limit = count == 0 ? Int64.max : abs(count)
            if count >= 0 {
                var out: [[UInt8]] = []
                for e in l {
                    if e == args[3] && removed < limit { removed += 1 } else { out.append(e) }
                }
                l = out
            } else {
                var out: [[UInt8]] = []
                for e in l.reversed() {
                    if e == args[3] && removed < limit { removed += 1 } else { out.append(e) }
                }
                l = out.reversed()
            }
            reply = .integer(removed)
        case "ltrim":
            guard let s = int(args[2]), let e = int(args[3]) else { return .notInteger }
            l = rankRange(s, e, count: l.count).map { Array(l[$0]) } ?? []
            reply = .ok
        case "linsert":
            // linsert k before|after pivot element
            guard v.bytes != nil else { return .integer(0) }
            guard let at = l.firstIndex(of: args[3]) else { return .integer(-1) }
            l.insert(args[4], at: args[2] == Array("before".utf8) ? at : at + 1)
            reply = .integer(Int64(l.count))
        default:
            // lmove k k left|right left|right (one key: rotate)
            guard !l.isEmpty else { return .bulk(nil) }
            let e = args[3] == Array("left".utf8) ? l.removeFirst() : l.removeLast()
            if args[4] == Array("left".utf8) { l.insert(e, at: 0) } else { l.append(e) }
            reply = .bulk(e)
        }
        store(&v, .list, encodeItems(l), empty: l.isEmpty)
        return reply
    }

    static func readList(_ name: String, _ args: [[UInt8]], _ v: StoredValue) -> DataReply? {
        guard ["lrange", "llen", "lindex", "lpos"].contains(name) else { return nil }
        guard v.kind == .list else { return .wrongType }
        // A bucketed list is read through its head (`listReadPlan`) or assembled by the shell
        // first; never decoded as a plain list.
        guard !ListBuckets.isHead(v.bytes) else { return .err("internal: a bucketed list read as one value") }
        let l = decodeItems(v.bytes)
        switch name {
        case "llen": return .integer(Int64(l.count))
        case "lindex":
            guard var i = int(args[2]) else { return .notInteger }
            if i < 0 { i += Int64(l.count) }
            return i >= 0 && i < l.count ? .bulk(l[Int(i)]) : .bulk(nil)
        case "lrange":
            guard let s = int(args[2]), let e = int(args[3]) else { return .notInteger }
            return .array((rankRange(s, e, count: l.count).map { Array(l[$0]) } ?? []).map { .bulk($0) })
        default:
            // lpos k element [rank r] [count c] [maxlen m]
            var rank: Int64 = 1
            var count: Int64?
            var maxlen: Int64 = 0
            var i = 3
            while i + 1 < args.count {
                let value = int(args[i + 1]) ?? 0
                switch String(decoding: args[i], as: UTF8.self) {
                case "rank": rank = value
                case "count": count = value
                default: maxlen = value
                }
                i += 2
            }
            var found: [DataReply] = []
            let want = count.map { $0 == 0 ? Int64.max : $0 } ?? 1
            let order: [Int] = rank > 0 ? Array(l.indices) : Array(l.indices.reversed())
            var skip = abs(rank) - 1
            for (n, idx) in order.enumerated() {
                if maxlen > 0 && n >= maxlen { break }
                guard l[idx] == args[2] else { continue }
                if skip > 0 {
                    skip -= 1
                    continue
                }
                found.append(.integer(Int64(idx)))
                if found.count >= want { break }
            }
            if count != nil { return .array(found) }
            return found.first ?? .bulk(nil)
        }
    }
}

extension DataModel {
    // MARK: - Across keys (read by the server, each key linearizably; not one snapshot)

    /// A key's members as a sorted set's: a zset's own, a set's with score 1 (as Redis's
    /// ZUNIONSTORE takes sets); nil for another kind.
    public static func zsetItems(_ v: StoredValue?) -> [(member: [UInt8], score: Double)]? {
        guard let v else { return [] }
        switch v.kind {
        case .zset: return decodeZSet(v.bytes)
        case .set: return decodeItems(v.bytes).map { ($0, 1) }
        default: return nil
        }
    }

    /// ZUNION/ZINTER/ZDIFF of `inputs` (weights applied; `aggregate` sum, min or max), ordered by
    /// (score, member). Redis's rule: NaN from inf + -inf becomes 0.
    public static func combine(
        _ op: String, _ inputs: [[(member: [UInt8], score: Double)]], weights: [Double], aggregate: String
    ) -> [(member: [UInt8], score: Double)] {
        func agg(_ a: Double, _ b: Double) -> Double {
            switch aggregate {
            case "min": return Swift.min(a, b)
            case "max": return Swift.max(a, b)
            default:
                let s = a + b
                return s.isNaN ? 0 : s
            }
        }
        func weighted(_ s: Double, _ w: Double) -> Double {
            let r = s * w
            return r.isNaN ? 0 : r
        }
        var acc: [[UInt8]: Double] = [:]
        var order: [[UInt8]] = []
        switch op {
        case "zinter":
            guard let first = inputs.first else { return [] }
            for (m, s) in first {
                var score = weighted(s, weights[0])
                var everywhere = true
                for (k, other) in inputs.enumerated().dropFirst() {
                    guard let o = other.first(where: { $0.member == m }) else {
                        everywhere = false
                        break
                    }
                    score = agg(score, weighted(o.score, weights[k]))
                }
                if everywhere && acc[m] == nil {
                    acc[m] = score
                    order.append(m)
                }
            }
        case "zdiff":
            guard let first = inputs.first else { return [] }
            let others = Set(inputs.dropFirst().flatMap { $0.map(\.member) })
            for (m, s) in first where !others.contains(m) && acc[m] == nil {
                acc[m] = s
                order.append(m)
            }
        default:
            for (k, input) in inputs.enumerated() {
                for (m, s) in input {
                    let w = weighted(s, weights[k])
                    if let old = acc[m] {
                        acc[m] = agg(old, w)
                    } else {
                        acc[m] = w
                        order.append(m)
                    }
                }
            }
        }
        return order.map { ($0, acc[$0]!) }.sorted { ZSet.before($0, $1) }
    }

    /// The encoding of a sorted set's items (for a store command's destination).
    public static func zsetBytes(_ items: [(member: [UInt8], score: Double)]) -> [UInt8] {
        encodeZSet(items.sorted { ZSet.before($0, $1) })
    }
}
