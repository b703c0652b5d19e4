import TernConsensus
import TernRESP

/// Redis's typed commands (strings with expiry, hashes, sets, sorted sets, lists, TTLs, TYPE):
/// checked and normalised here, applied by `DataModel` through per-key Paxos (writes) or answered
/// from a linearizable read (reads). docs/DATA.md.
extension CommandProcessor {
    /// One data command: arity (Redis's), whether it writes, its keys, group and categories.
    struct DataCommand {
        var arity: Int
        var write: Bool
        var group: String
        var keys: (Int, Int, Int) = (1, 1, 1)
    }

    static let dataCommands: [String: DataCommand] = {
        var t: [String: DataCommand] = [:]
        func add(_ group: String, _ write: Bool, _ list: [(String, Int)], keys: (Int, Int, Int) = (1, 1, 1)) {
            for (n, a) in list { t[n] = DataCommand(arity: a, write: write, group: group, keys: keys) }
        }
        add("string", false, [("get", 2), ("strlen", 2), ("getrange", 4), ("substr", 4)])
        add("string", false, [("mget", -2)], keys: (1, -1, 1))
        add(
            "string", true,
            [
                ("set", -3), ("setnx", 3), ("setex", 4), ("psetex", 4), ("getset", 3), ("getdel", 2),
                ("getex", -2),
                ("append", 3), ("incr", 2), ("decr", 2), ("incrby", 3), ("decrby", 3), ("incrbyfloat", 3),
                ("setrange", 4),
            ])
        add("string", true, [("mset", -3)], keys: (1, -1, 2))
        add("generic", false, [("exists", -2)], keys: (1, -1, 1))
        add("generic", true, [("del", -2)], keys: (1, -1, 1))
        add(
            "generic", false,
            [("type", 2), ("ttl", 2), ("pttl", 2), ("expiretime", 2), ("pexpiretime", 2)])
        add(
            "generic", true,
            [("expire", -3), ("pexpire", -3), ("expireat", -3), ("pexpireat", -3), ("persist", 2)])
        add(
            "hash", false,
            [
                ("hget", 3), ("hmget", -3), ("hgetall", 2), ("hexists", 3), ("hlen", 2), ("hkeys", 2),
                ("hvals", 2),
                ("hstrlen", 3), ("hrandfield", -2), ("hscan", -3),
            ])
        add(
            "hash", true,
            [("hset", -4), ("hmset", -4), ("hsetnx", 4), ("hdel", -3), ("hincrby", 4), ("hincrbyfloat", 4)])
        add(
            "set", false,
            [
                ("sismember", 3), ("smismember", -3), ("smembers", 2), ("scard", 2), ("srandmember", -2),
                ("sscan", -3),
            ])
        add("set", false, [("sinter", -2), ("sunion", -2), ("sdiff", -2)], keys: (1, -1, 1))
        add("set", true, [("sadd", -3), ("srem", -3), ("spop", -2)])
        add(
            "sorted-set", false,
            [
                ("zscore", 3), ("zmscore", -3), ("zcard", 2), ("zcount", 4), ("zlexcount", 4), ("zrank", 3),
                ("zrevrank", 3), ("zrange", -4), ("zrangebyscore", -4), ("zrevrangebyscore", -4),
                ("zrevrange", -4),
                ("zrangebylex", -4), ("zrevrangebylex", -4), ("zscan", -3), ("zrandmember", -2),
            ])
        add(
            "sorted-set", true,
            [
                ("zadd", -4), ("zincrby", 4), ("zrem", -3), ("zremrangebyscore", 4), ("zremrangebyrank", 4),
                ("zremrangebylex", 4), ("zpopmin", -2), ("zpopmax", -2),
            ])
        add("list", false, [("lrange", 4), ("llen", 2), ("lindex", 3), ("lpos", -3)])
        add(
            "list", true,
            [
                ("lpush", -3), ("rpush", -3), ("lpushx", -3), ("rpushx", -3), ("lpop", -2), ("rpop", -2),
                ("lset", 4),
                ("lrem", 4), ("ltrim", 4), ("linsert", 5),
            ])
        add("list", true, [("lmove", 5), ("rpoplpush", 3)], keys: (1, 2, 1))
        add("bitmap", true, [("setbit", 4)])
        add("bitmap", false, [("getbit", 3), ("bitcount", -2), ("bitpos", -3)])
        add("string", false, [("lcs", -3)], keys: (1, 2, 1))
        add("server", false, [("memory", -2)], keys: (2, 2, 1))
        add("generic", false, [("object", -2)], keys: (2, 2, 1))
        for (n, c) in takeCommands { t[n] = c }
        add("generic", false, [("dump", 2)])
        add("generic", true, [("restore", -4)])
        return t
    }()

    /// The data commands that may block (COMMAND's `blocking` flag, INFO's blocked_clients).
    static let blockingCommands: Set<String> = takeBlocking

    /// COMMAND's entries for the data commands.
    static var dataSpecs: [CommandSpec] {
        dataCommands.sorted { $0.key < $1.key }.map { name, c in
            let category = c.group == "generic" ? "@keyspace" : "@" + String(c.group.filter { $0 != "-" })
            let blocking = Self.blockingCommands.contains(name)
            return CommandSpec(
                name, arity: c.arity,
                flags: (c.write ? CommandSpec.writeFlags(name) : ["readonly"])
                    + (blocking ? ["blocking"] : []),
                keys: c.keys,
                categories: [category, c.write ? "@write" : "@read"], keySpec: [c.write ? "RW" : "RO"],
                summary: "Redis's \(name.uppercased()) (docs/DATA.md).", group: c.group)
        }
    }

    static func word(_ b: [UInt8]) -> String { String(decoding: b, as: UTF8.self).lowercased() }
    static func b(_ s: String) -> [UInt8] { Array(s.utf8) }

    /// One data command on one key, ready to run alone or inside a transaction (`EXEC`).
    struct DataCall: Sendable {
        var key: [UInt8]
        /// The normalised command `DataModel` applies (write) or answers (read).
        var args: [[UInt8]]
        var write: Bool
        var convert: @Sendable (DataReply) -> RESPValue
    }

    /// A data command planned: one key's call, or a plan of its own (errors, multi-key commands).
    enum DataPlanned {
        case call(DataCall)
        case plan(CommandPlan)
        static func reply(_ v: RESPValue) -> DataPlanned { .plan(.reply(v)) }
        static func requests(
            _ r: [(key: [UInt8], request: KeyRequest)],
            _ build: @escaping @Sendable ([NodeReply]) -> RESPValue
        ) -> DataPlanned { .plan(.requests(r, build)) }
    }

    /// The plan for data command `name`, nil when `name` is not one.
    func dataPlan(_ name: String, _ args: [[UInt8]], _ session: Session) -> CommandPlan? {
        switch dataPlanned(name, args, session) {
        case nil: return nil
        case .plan(let p): return p
        case .call(let c): return Self.plan(c, clock: clock)
        }
    }

    /// The reads a big list answers from its head and the buckets they name.
    static let headReads: Set<[UInt8]> = Set(
        [
            "lrange", "lindex", "llen", "type", "ttl", "pttl", "expiretime", "pexpiretime",
            // … and a big set or hash from its head and the buckets of the members named.
            "scard", "sismember", "smismember", "hget", "hmget", "hexists", "hlen", "hstrlen",
        ].map(b))

    /// A single call's plan.
    static func plan(_ c: DataCall, clock: @escaping @Sendable () -> Int64) -> CommandPlan {
        if c.write {
            return .requests([(c.key, .write(.data(c.args)))]) { replies in
                switch replies[0] {
                case .done(.data(let r)): return c.convert(r)
                case .done(.previousForgotten): return Self.forgotten
                default: return Self.failure(replies[0], write: true)
                }
            }
        }
        if let name = c.args.first, Self.headReads.contains(name) {
            // Answered where the key is read, from a big list's head and only the buckets the
            // answer lies in (Lists.swift).
            return .requests([(c.key, .readData(c.args))]) { replies in
                switch replies[0] {
                case .done(.data(let r)): return c.convert(r)
                default:
                    // Absent (`.value(nil)`), or a value a plain read returned (an executor that
                    // treats `.readData` as `.read`): answered here.
                    guard let v = Self.stored(replies[0]) else {
                        return Self.failure(replies[0], write: false)
                    }
                    return c.convert(
                        DataModel.read(c.args, v, nowMs: UInt64(max(0, clock() / 1000)), seed: 0))
                }
            }
        }
        return .requests([(c.key, .read)]) { replies in
            guard let v = Self.stored(replies[0]) else { return Self.failure(replies[0], write: false) }
            return c.convert(
                DataModel.read(
                    c.args, v, nowMs: UInt64(max(0, clock() / 1000)), seed: UInt64.random(in: .min ... .max)))
        }
    }

    /// The planned form of data command `name`, nil when `name` is not one.
    func dataPlanned(_ name: String, _ args: [[UInt8]], _ session: Session) -> DataPlanned? {
        if let s = streamPlanned(name, args, session) { return s }
        guard let c = Self.dataCommands[name] else {
            return KeyspaceService.geoCall(name, args, v3: session.version == .v3)
                ?? sortPlanned(name, args, session)
        }
        guard c.arity >= 0 ? args.count == c.arity : args.count >= -c.arity else {
            return .reply(Self.arity(name))
        }
        let v3 = session.version == .v3
        let nowMs = UInt64(max(0, clock() / 1000))
        if name == "memory" {
            // MEMORY USAGE key [SAMPLES n]: the bytes the key's value and name take (an estimate,
            // as Redis's). Other subcommands are not built.
            guard Self.word(args[1]) == "usage" else {
                return .reply(
                    Self.err(
                        "unknown subcommand '\(String(decoding: args[1].prefix(128), as: UTF8.self))'. "
                            + "Try MEMORY HELP."))
            }
            guard args.count == 3 || (args.count == 5 && Self.word(args[3]) == "samples") else {
                return .reply(Self.syntax)
            }
            return read(args[2], [Self.b("memusage"), args[2]], v3)
        }
        if name == "object" {
            return objectPlan(args, v3)
        }
        if let p = bitPlanned(name, args, v3) { return p }
        if Self.takeCommands[name] != nil { return takePlanned(name, args, session) }
        if let p = dumpPlanned(name, args, nowMs: nowMs) { return p }
        var a = args
        a[0] = Self.b(name)
        let key = args[1]
        switch name {
        // MARK: strings
        case "set":
            return setCommand(a, nowMs: nowMs, v3: v3)
        case "setnx":
            return write(key, [Self.b("set"), key, args[2], Self.b("nx")], v3) { r in
                r == .ok ? .integer(1) : .integer(0)
            }
        case "setex", "psetex":
            guard let t = KeyValue.strictInteger(args[2]) else { return .reply(Self.notInteger) }
            guard t > 0,
                let ms = Self.deadline(t, unit: name == "setex" ? 1000 : 1, absolute: false, nowMs: nowMs)
            else { return .reply(Self.err("invalid expire time in '\(name)' command")) }
            return write(key, [Self.b("set"), key, args[3], Self.b("pxat"), Self.b(String(ms))], v3)
        case "getset":
            return write(key, [Self.b("set"), key, args[2], Self.b("get")], v3)
        case "getex":
            var out = [Self.b("getex"), key]
            if args.count > 2 {
                let opt = Self.word(args[2])
                if opt == "persist" && args.count == 3 {
                    out.append(Self.b("persist"))
                } else if ["ex", "px", "exat", "pxat"].contains(opt) && args.count == 4 {
                    guard let t = KeyValue.strictInteger(args[3]) else { return .reply(Self.notInteger) }
                    guard t > 0,
                        let ms = Self.deadline(
                            t, unit: opt.hasPrefix("e") ? 1000 : 1, absolute: opt.hasSuffix("at"),
                            nowMs: nowMs)
                    else { return .reply(Self.err("invalid expire time in 'getex' command")) }
                    out += [Self.b("pxat"), Self.b(String(ms))]
                } else {
                    return .reply(Self.syntax)
                }
            }
            return write(key, out, v3)
        case "incr", "decr", "incrby", "decrby":
            var d: Int64 = name == "incr" ? 1 : -1
            if name.hasSuffix("by") {
                guard let n = KeyValue.strictInteger(args[2]) else { return .reply(Self.notInteger) }
                if name == "decrby" {
                    guard n != .min else { return .reply(Self.err("decrement would overflow")) }
                    d = -n
                } else {
                    d = n
                }
            }
            return write(key, [Self.b("incrby"), key, Self.b(String(d))], v3)
        case "incrbyfloat":
            // An infinite increment parses (Redis's strtold) and fails in the model with Redis's
            // "increment would produce NaN or Infinity".
            guard DataModel.parseDouble(args[2]) != nil else {
                return .reply(Self.err("value is not a valid float"))
            }
            return write(key, a, v3)
        case "append":
            return write(key, a + [Self.b(String(maxValueBytes))], v3)
        case "setrange":
            guard let off = KeyValue.strictInteger(args[2]) else { return .reply(Self.notInteger) }
            guard off >= 0 else { return .reply(Self.err("offset is out of range")) }
            // Overflow-checked: SETRANGE k 9223372036854775807 A trapped here and stopped the node.
            let (end, overflow) = off.addingReportingOverflow(Int64(args[3].count))
            guard !overflow, end <= Int64(maxValueBytes) else {
                return .reply(Self.err("string exceeds maximum allowed size (proto-max-bulk-len)"))
            }
            return write(key, a + [Self.b(String(maxValueBytes))], v3)
        case "getrange", "substr":
            guard KeyValue.strictInteger(args[2]) != nil, KeyValue.strictInteger(args[3]) != nil else {
                return .reply(Self.notInteger)
            }
            a[0] = Self.b("getrange")
            return read(key, a, v3)
        case "mget":
            let keys = Array(args.dropFirst())
            return .requests(keys.map { ($0, .read) }) { replies in
                var out: [RESPValue] = []
                for r in replies {
                    guard let v = Self.stored(r) else { return Self.failure(r, write: false) }
                    // MGET answers nil for a key of another type.
                    out.append(.bulkString(v?.kind == .string ? v?.bytes : nil))
                }
                return .array(out)
            }
        case "mset":
            guard args.count % 2 == 1 else { return .reply(Self.arity(name)) }
            var reqs: [(key: [UInt8], request: KeyRequest)] = []
            var k = 1
            while k < args.count {
                reqs.append((args[k], .write(.data([Self.b("set"), args[k], args[k + 1]]))))
                k += 2
            }
            return .requests(reqs) { replies in
                for r in replies {
                    guard case .done = r else { return Self.failure(r, write: true) }
                }
                return .ok
            }
        // MARK: keyspace
        case "del" where args.count == 2, "exists" where args.count == 2:
            // One key: one call, so it can also run inside a transaction.
            return name == "del"
                ? write(key, [Self.b("del"), key], v3) : read(key, [Self.b("exists"), key], v3)
        case "del", "exists":
            let keys = Array(args.dropFirst())
            let write = name == "del"
            return .requests(keys.map { k in (k, write ? .write(.data([Self.b("del"), k])) : .read) }) {
                replies in
                var n: Int64 = 0
                for r in replies {
                    if write {
                        guard case .done(.data(.integer(let d))) = r else {
                            return Self.failure(r, write: true)
                        }
                        n += d
                    } else {
                        guard let v = Self.stored(r) else { return Self.failure(r, write: false) }
                        if v != nil { n += 1 }
                    }
                }
                return .integer(n)
            }
        case "expire", "pexpire", "expireat", "pexpireat":
            guard let t = KeyValue.strictInteger(args[2]) else { return .reply(Self.notInteger) }
            var cond: [[UInt8]] = []
            var seen = Set<String>()
            for o in args.dropFirst(3) {
                let w = Self.word(o)
                guard ["nx", "xx", "gt", "lt"].contains(w) else {
                    return .reply(Self.err("Unsupported option \(String(decoding: o, as: UTF8.self))"))
                }
                seen.insert(w)
                cond = [Self.b(w)]
            }
            if seen.contains("nx") && seen.count > 1 {
                return .reply(Self.err("NX and XX, GT or LT options at the same time are not compatible"))
            }
            if seen.contains("gt") && seen.contains("lt") {
                return .reply(Self.err("GT and LT options at the same time are not compatible"))
            }
            guard
                let ms = Self.deadline(
                    t, unit: name.hasPrefix("p") ? 1 : 1000, absolute: name.hasSuffix("at"), nowMs: nowMs,
                    allowPast: true)
            else { return .reply(Self.err("invalid expire time in '\(name)' command")) }
            // Horizon: a deadline at or below it deletes at once (Redis deletes a key given a past
            // deadline).
            let horizon = nowMs
            return write(
                key, [Self.b("pexpireat"), key, Self.b(String(ms)), Self.b(String(horizon))] + cond, v3)
        case "persist":
            return write(key, a, v3)
        case "type", "ttl", "pttl", "expiretime", "pexpiretime":
            return read(key, a, v3)
        // MARK: hashes
        case "hset", "hmset":
            guard args.count % 2 == 0 else { return .reply(Self.arity(name)) }
            a[0] = Self.b("hset")
            return write(key, a, v3) { r in name == "hmset" && r.isInteger ? .ok : r }
        case "hincrby":
            guard KeyValue.strictInteger(args[3]) != nil else { return .reply(Self.notInteger) }
            return write(key, a, v3)
        case "hincrbyfloat":
            guard let d = DataModel.parseDouble(args[3]) else {
                return .reply(Self.err("value is not a valid float"))
            }
            // Redis's own check of the increment (t_hash.c), before the addition's.
            guard d.isFinite else { return .reply(Self.err("value is NaN or Infinity")) }
            return write(key, a, v3)
        case "hrandfield", "srandmember", "zrandmember":
            if args.count > 2 {
                guard let count = KeyValue.strictInteger(args[2]) else { return .reply(Self.notInteger) }
                // Redis's bound: a negative count's repeats must fit (LONG_MAX / 2).
                guard count >= -(Int64.max / 2) else { return .reply(Self.err("value is out of range")) }
                if args.count > 3 {
                    let w = Self.word(args[3])
                    guard args.count == 4, w == (name == "hrandfield" ? "withvalues" : "withscores"),
                        name != "srandmember"
                    else { return .reply(Self.syntax) }
                    a[3] = Self.b(w)
                }
            }
            return read(key, a, v3, pairs: args.count > 3)
        case "hscan", "sscan", "zscan":
            // The cursor is checked, not used: one call returns everything (docs/DATA.md).
            guard
                KeyValue.strictInteger(args[2]) != nil
                    || UInt64(String(decoding: args[2], as: UTF8.self)) != nil
            else { return .reply(Self.err("invalid cursor")) }
            var i = 3
            while i < args.count {
                let w = Self.word(args[i])
                if (w == "match" || w == "count") && i + 1 < args.count {
                    if w == "count" {
                        guard let n = KeyValue.strictInteger(args[i + 1]) else {
                            return .reply(Self.notInteger)
                        }
                        guard n >= 1 else { return .reply(Self.syntax) }
                    }
                    a[i] = Self.b(w)
                    i += 2
                } else if w == "novalues" && name == "hscan" {
                    a[i] = Self.b(w)
                    i += 1
                } else {
                    return .reply(Self.syntax)
                }
            }
            return read(key, a, v3)
        // MARK: sets
        case "spop":
            if args.count > 2 {
                guard args.count == 3 else { return .reply(Self.syntax) }
                guard let n = KeyValue.strictInteger(args[2]), n >= 0 else {
                    return .reply(Self.err("value is out of range, must be positive"))
                }
            }
            return write(key, a, v3)
        case "sinter", "sunion", "sdiff":
            let keys = Array(args.dropFirst())
            return .requests(keys.map { ($0, .read) }) { replies in
                var sets: [[[UInt8]]] = []
                for r in replies {
                    guard let v = Self.stored(r) else { return Self.failure(r, write: false) }
                    guard let value = v else {
                        sets.append([])
                        continue
                    }
                    guard value.kind == .set else { return Self.wrongType }
                    sets.append(DataModel.decodeItems(value.bytes))
                }
                var acc = sets[0]
                for s in sets.dropFirst() {
                    let other = Set(s)
                    switch name {
                    case "sinter": acc = acc.filter { other.contains($0) }
                    case "sdiff": acc = acc.filter { !other.contains($0) }
                    default:
                        let have = Set(acc)
                        acc += s.filter { !have.contains($0) }
                    }
                }
                let items = acc.map { RESPValue.bulkString($0) }
                return v3 ? .set(items) : .array(items)
            }
        // MARK: sorted sets
        case "zadd":
            var i = 2
            var flags = Set<String>()
            while i < args.count, ["nx", "xx", "gt", "lt", "ch", "incr"].contains(Self.word(args[i])) {
                flags.insert(Self.word(args[i]))
                a[i] = Self.b(Self.word(args[i]))
                i += 1
            }
            let pairs = args.count - i
            guard pairs > 0, pairs % 2 == 0 else { return .reply(Self.syntax) }
            if flags.contains("nx") && flags.contains("xx") {
                return .reply(Self.err("XX and NX options at the same time are not compatible"))
            }
            if (flags.contains("gt") && flags.contains("lt"))
                || (flags.contains("nx") && (flags.contains("gt") || flags.contains("lt")))
            {
                return .reply(Self.err("GT, LT, and/or NX options at the same time are not compatible"))
            }
            if flags.contains("incr") && pairs != 2 {
                return .reply(Self.err("INCR option supports a single increment-element pair"))
            }
            var k = i
            while k < args.count {
                guard DataModel.parseDouble(args[k]) != nil else {
                    return .reply(Self.err("value is not a valid float"))
                }
                k += 2
            }
            return write(key, a, v3)
        case "zincrby":
            guard DataModel.parseDouble(args[2]) != nil else {
                return .reply(Self.err("value is not a valid float"))
            }
            return write(key, a, v3)
        case "zcount", "zremrangebyscore":
            guard DataModel.parseScoreBound(args[2]) != nil, DataModel.parseScoreBound(args[3]) != nil else {
                return .reply(Self.err("min or max is not a float"))
            }
            return c.write ? write(key, a, v3) : read(key, a, v3)
        case "zlexcount", "zremrangebylex":
            guard DataModel.parseLexBound(args[2]) != nil, DataModel.parseLexBound(args[3]) != nil else {
                return .reply(Self.err("min or max not valid string range item"))
            }
            return c.write ? write(key, a, v3) : read(key, a, v3)
        case "zremrangebyrank", "lrange", "ltrim":
            guard KeyValue.strictInteger(args[2]) != nil, KeyValue.strictInteger(args[3]) != nil else {
                return .reply(Self.notInteger)
            }
            return c.write ? write(key, a, v3) : read(key, a, v3)
        case "zpopmin", "zpopmax":
            if args.count > 2 {
                guard args.count == 3 else { return .reply(Self.syntax) }
                guard let n = KeyValue.strictInteger(args[2]), n >= 0 else {
                    return .reply(Self.err("value is out of range, must be positive"))
                }
            }
            return write(key, a, v3, pairs: args.count > 2)
        case "zrange", "zrangebyscore", "zrevrangebyscore", "zrevrange", "zrangebylex", "zrevrangebylex":
            return zrangePlan(name, args, v3)
        // MARK: lists
        case "lpop", "rpop":
            if args.count > 2 {
                guard args.count == 3 else { return .reply(Self.arity(name)) }
                guard let n = KeyValue.strictInteger(args[2]), n >= 0 else {
                    return .reply(Self.err("value is out of range, must be positive"))
                }
            }
            return write(key, a, v3)
        case "lindex", "lset", "lrem":
            guard KeyValue.strictInteger(args[2]) != nil else { return .reply(Self.notInteger) }
            return c.write ? write(key, a, v3) : read(key, a, v3)
        case "linsert":
            let w = Self.word(args[2])
            guard w == "before" || w == "after" else { return .reply(Self.syntax) }
            a[2] = Self.b(w)
            return write(key, a, v3)
        case "lpos":
            var i = 3
            while i < args.count {
                let w = Self.word(args[i])
                guard ["rank", "count", "maxlen"].contains(w), i + 1 < args.count else {
                    return .reply(Self.syntax)
                }
                guard let n = KeyValue.strictInteger(args[i + 1]) else { return .reply(Self.notInteger) }
                if w == "rank" && n == 0 {
                    return .reply(
                        Self.err(
                            "RANK can't be zero: use 1 to start from the first match, 2 from the second ... "
                                + "or use negative to start from the end of the list"))
                }
                if w != "rank" && n < 0 {
                    return .reply(
                        Self.err(w == "count" ? "COUNT can't be negative" : "MAXLEN can't be negative"))
                }
                a[i] = Self.b(w)
                i += 2
            }
            return read(key, a, v3)
        case "lmove", "rpoplpush":
            // Between two keys: a read, a push and a pop (TakeCommands.swift), not one write.
            guard args[1] == args[2] else { return takePlanned(name, args, session) }
            if name == "rpoplpush" {
                return write(key, [Self.b("lmove"), key, key, Self.b("right"), Self.b("left")], v3)
            }
            let from = Self.word(args[3])
            let to = Self.word(args[4])
            guard ["left", "right"].contains(from), ["left", "right"].contains(to) else {
                return .reply(Self.syntax)
            }
            return write(key, [Self.b("lmove"), key, key, Self.b(from), Self.b(to)], v3)
        default:
            return c.write ? write(key, a, v3) : read(key, a, v3)
        }
    }

    /// OBJECT ENCODING|REFCOUNT|IDLETIME|FREQ|HELP key: what Redis's object system would say, from
    /// the key's kind and size (Tern keeps one encoding per kind; the names are Redis 7.0's for a
    /// value of that size). IDLETIME is this node's (AccessTimes.swift), REFCOUNT 1, FREQ refused as Redis refuses
    /// it without an LFU policy.
    func objectPlan(_ args: [[UInt8]], _ v3: Bool) -> DataPlanned {
        let sub = Self.word(args[1])
        if sub == "help" {
            return .reply(
                .array(
                    [
                        "OBJECT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                        "ENCODING <key>", "FREQ <key>", "IDLETIME <key>", "REFCOUNT <key>",
                    ].map { .simpleString($0) }))
        }
        guard ["encoding", "refcount", "idletime", "freq"].contains(sub) else {
            return .reply(
                Self.err(
                    "unknown subcommand '\(String(decoding: args[1].prefix(128), as: UTF8.self))'. Try OBJECT HELP."
                ))
        }
        guard args.count == 3 else { return .reply(Self.arity("object|\(sub)")) }
        let idle = accessTimes.idleSeconds(args[2], nowMs: clock() / 1000)
        return .call(
            DataCall(key: args[2], args: [Self.b("dumpvalue"), args[2]], write: false) { r in
                guard case .array(let parts?) = r, parts.count == 3, case .integer(let k) = parts[0],
                    case .bulk(let bytes?) = parts[2], let kind = ValueKind(rawValue: UInt8(clamping: k))
                else { return .bulkString(nil) }
                switch sub {
                case "refcount": return .integer(1)
                case "idletime": return .integer(idle)
                case "freq":
                    return Self.err(
                        "An LFU maxmemory policy is not selected, access frequency not tracked. Please note "
                            + "that when switching between policies at runtime LRU and LFU data will take some "
                            + "time to adjust.")
                default: return .bulkString(Array(Self.encodingName(kind, bytes).utf8))
                }
            })
    }

    /// Redis 7.0's encoding name for a value of this kind and size.
    static func encodingName(_ kind: ValueKind, _ bytes: [UInt8]) -> String {
        switch kind {
        case .string:
            if KeyValue.strictInteger(bytes) != nil { return "int" }
            return bytes.count <= 44 ? "embstr" : "raw"
        case .hash:
            let items = DataModel.decodeItems(bytes)
            return items.count <= 1024 && items.allSatisfy({ $0.count <= 64 }) ? "listpack" : "hashtable"
        case .set:
            let items = DataModel.decodeItems(bytes)
            return items.count <= 512 && items.allSatisfy({ KeyValue.strictInteger($0) != nil })
                ? "intset" : "hashtable"
        case .zset:
            let items = DataModel.decodeZSet(bytes)
            return items.count <= 128 && items.allSatisfy({ $0.member.count <= 64 }) ? "listpack" : "skiplist"
        case .list: return "quicklist"
        case .stream: return "stream"
        }
    }

    /// ZRANGE and its older forms as one normalised ZRANGE.
    func zrangePlan(_ name: String, _ args: [[UInt8]], _ v3: Bool) -> DataPlanned {
        var a: [[UInt8]] = [Self.b("zrange"), args[1], args[2], args[3]]
        var by = ""
        var rev = false
        var withScores = false
        var limit: [[UInt8]] = []
        switch name {
        case "zrangebyscore": by = "byscore"
        case "zrevrangebyscore": (by, rev) = ("byscore", true)
        case "zrevrange": rev = true
        case "zrangebylex": by = "bylex"
        case "zrevrangebylex": (by, rev) = ("bylex", true)
        default: break
        }
        var i = 4
        while i < args.count {
            let w = Self.word(args[i])
            switch w {
            case "byscore" where name == "zrange", "bylex" where name == "zrange":
                by = w
            case "rev" where name == "zrange":
                rev = true
            case "withscores" where !name.hasSuffix("bylex"):
                withScores = true
            case "limit" where name != "zrevrange" && i + 2 < args.count:
                guard KeyValue.strictInteger(args[i + 1]) != nil, KeyValue.strictInteger(args[i + 2]) != nil
                else {
                    return .reply(Self.notInteger)
                }
                limit = [Self.b("limit"), args[i + 1], args[i + 2]]
                i += 2
            default:
                return .reply(Self.syntax)
            }
            i += 1
        }
        if !limit.isEmpty && by.isEmpty {
            return .reply(
                Self.err("syntax error, LIMIT is only supported in combination with either BYSCORE or BYLEX"))
        }
        if withScores && by == "bylex" {
            return .reply(Self.err("syntax error, WITHSCORES not supported in combination with BYLEX"))
        }
        switch by {
        case "byscore":
            guard DataModel.parseScoreBound(args[2]) != nil, DataModel.parseScoreBound(args[3]) != nil else {
                return .reply(Self.err("min or max is not a float"))
            }
        case "bylex":
            guard DataModel.parseLexBound(args[2]) != nil, DataModel.parseLexBound(args[3]) != nil else {
                return .reply(Self.err("min or max not valid string range item"))
            }
        default:
            guard KeyValue.strictInteger(args[2]) != nil, KeyValue.strictInteger(args[3]) != nil else {
                return .reply(Self.notInteger)
            }
        }
        if !by.isEmpty { a.append(Self.b(by)) }
        if rev { a.append(Self.b("rev")) }
        a += limit
        if withScores { a.append(Self.b("withscores")) }
        return read(args[1], a, v3, pairs: withScores)
    }

    /// SET key value [NX | XX] [GET] [EX s | PX ms | EXAT s | PXAT ms | KEEPTTL].
    func setCommand(_ args: [[UInt8]], nowMs: UInt64, v3: Bool) -> DataPlanned {
        var out = [Self.b("set"), args[1], args[2]]
        var cond = ""
        var get = false
        var expiry: [[UInt8]] = []
        var i = 3
        while i < args.count {
            let w = Self.word(args[i])
            switch w {
            case "nx", "xx":
                guard cond.isEmpty else { return .reply(Self.syntax) }
                cond = w
            case "get": get = true
            case "keepttl":
                guard expiry.isEmpty else { return .reply(Self.syntax) }
                expiry = [Self.b("keepttl")]
            case "ex", "px", "exat", "pxat":
                guard expiry.isEmpty, i + 1 < args.count else { return .reply(Self.syntax) }
                guard let t = KeyValue.strictInteger(args[i + 1]) else { return .reply(Self.notInteger) }
                guard t > 0,
                    let ms = Self.deadline(
                        t, unit: w.hasPrefix("e") ? 1000 : 1, absolute: w.hasSuffix("at"), nowMs: nowMs)
                else { return .reply(Self.err("invalid expire time in 'set' command")) }
                expiry = [Self.b("pxat"), Self.b(String(ms))]
                i += 1
            default: return .reply(Self.syntax)
            }
            i += 1
        }
        if !cond.isEmpty { out.append(Self.b(cond)) }
        if get { out.append(Self.b("get")) }
        out += expiry
        return write(args[1], out, v3)
    }

    /// An absolute deadline in Unix ms from a TTL or timestamp in `unit` ms; nil on overflow.
    static func deadline(_ t: Int64, unit: Int64, absolute: Bool, nowMs: UInt64, allowPast: Bool = false)
        -> UInt64?
    {
        let (ms, o) = t.multipliedReportingOverflow(by: unit)
        guard !o else { return nil }
        let (abs, o2) = absolute ? (ms, false) : ms.addingReportingOverflow(Int64(nowMs))
        guard !o2 else { return nil }
        // A past deadline deletes at once (EXPIRE with a negative TTL); 1 stands for "long ago".
        if abs <= 0 { return allowPast ? 1 : nil }
        return UInt64(abs)
    }

    /// A read's value: nil when the reply is a failure; `.some(nil)` when the key is absent.
    static func stored(_ r: NodeReply) -> StoredValue?? {
        switch r {
        case .value(nil): return .some(nil)
        case .value(let b?): return .some(StoredValue(kind: .string, deadlineMs: 0, bytes: b))
        case .typed(let v): return .some(v)
        default: return nil
        }
    }

    static let wrongType = RESPValue.error(
        "WRONGTYPE Operation against a key holding the wrong kind of value")

    private func read(_ key: [UInt8], _ a: [[UInt8]], _ v3: Bool, pairs: Bool = false) -> DataPlanned {
        .call(DataCall(key: key, args: a, write: false) { Self.resp($0, v3, pairs: pairs) })
    }

    private func write(
        _ key: [UInt8], _ a: [[UInt8]], _ v3: Bool, pairs: Bool = false,
        _ post: @escaping @Sendable (DataReply) -> DataReply = { $0 }
    ) -> DataPlanned {
        .call(DataCall(key: key, args: a, write: true) { Self.resp(post($0), v3, pairs: pairs) })
    }

    /// A data reply as RESP: doubles as RESP3 doubles or RESP2 strings (Redis's format); with
    /// `pairs`, RESP3 gets [member, score] pairs where RESP2 has a flat list.
    static func resp(_ r: DataReply, _ v3: Bool, pairs: Bool = false) -> RESPValue {
        switch r {
        case .ok: return .ok
        case .error(let s): return .error(s)
        case .integer(let n): return .integer(n)
        case .bulk(let b): return .bulkString(b)
        case .array(nil): return .array(nil)
        case .array(let items?):
            let flat = items.map { resp($0, v3) }
            guard pairs && v3 else { return .array(flat) }
            return .array(
                stride(from: 0, to: flat.count - 1, by: 2).map { .array([flat[$0], flat[$0 + 1]]) })
        case .double(let d): return v3 ? .double(d) : .bulkString(Array(DataModel.formatScore(d).utf8))
        case .map(let items): return .map(items.map { resp($0, v3) })
        case .set(let items): return .set(items.map { resp($0, v3) })
        case .status(let s): return .simpleString(s)
        }
    }
}

extension DataReply {
    var isInteger: Bool {
        if case .integer = self { return true }
        return false
    }
}
