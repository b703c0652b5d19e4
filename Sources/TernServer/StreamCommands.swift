import TernConsensus
import TernRESP

/// Redis Streams (docs/QUEUE.md): a stream is one key's value (`ValueKind.stream`), written by
/// `DataModel.applyStream` on the proposer and read by `DataModel.readStream`. Here: arity,
/// subcommands, the options that decide which keys a command touches (XREAD, XREADGROUP), and the
/// normalised form — writes carry this node's clock (for `*` ids, delivery and seen times) and the
/// backlog bound (`stream_max_entries`): `name key nowMs limit arg…`.
extension CommandProcessor {
    /// Arity (Redis's) and whether the command writes.
    static let streamCommands: [String: (arity: Int, write: Bool)] = [
        "xadd": (-5, true), "xtrim": (-4, true), "xdel": (-3, true), "xsetid": (-3, true), "xack": (-4, true),
        "xclaim": (-6, true), "xautoclaim": (-6, true), "xackadd": (-4, true), "xgroup": (-2, true),
        "xreadgroup": (-7, true), "xlen": (2, false), "xrange": (-4, false), "xrevrange": (-4, false),
        "xpending": (-3, false), "xinfo": (-2, false), "xread": (-4, false),
    ]

    /// COMMAND's entries for the stream commands.
    static var streamSpecs: [CommandSpec] {
        streamCommands.sorted { $0.key < $1.key }.map { name, c in
            let keys: (Int, Int, Int) =
                switch name {
                case "xgroup", "xinfo": (2, 2, 1)
                case "xread", "xreadgroup": (0, 0, 0)
                default: (1, 1, 1)
                }
            return CommandSpec(
                name, arity: c.arity,
                flags: (c.write ? CommandSpec.writeFlags(name) : ["readonly"])
                    + (keys.0 == 0 ? ["blocking"] : []),
                keys: keys,
                categories: ["@stream", c.write ? "@write" : "@read"],
                keySpec: keys.0 == 0 ? [] : [c.write ? "RW" : "RO"],
                summary: name == "xackadd"
                    ? "Tern: acknowledges a pending entry and adds follow-up entries, only if this call acknowledged it."
                    : "Redis's \(name.uppercased()) (docs/QUEUE.md).",
                since: name == "xackadd" ? "0.1.0" : "5.0.0", group: "stream")
        }
    }

    /// XREAD's and XREADGROUP's keys: the first half of what follows STREAMS (Redis's keyword key
    /// spec), for ACL key patterns; nil for other commands.
    static func streamReadKeyPositions(_ name: String, _ args: [[UInt8]]) -> [Int]? {
        guard name == "xread" || name == "xreadgroup" else { return nil }
        // Walk the options as the command parses them, so a group or consumer named "streams" is
        // not taken for the keyword.
        var i = 1
        while i < args.count {
            switch word(args[i]) {
            case "count", "block": i += 2
            case "group": i += 3
            case "noack": i += 1
            case "streams":
                let n = (args.count - i - 1) / 2
                return Array((i + 1)..<(i + 1 + n))
            default: return []
            }
        }
        return []
    }

    static let xgroupHelp = [
        "XGROUP <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
        "CREATE <key> <groupname> <id|$> [option]",
        "    Create a new consumer group. Options are:",
        "    * MKSTREAM",
        "      Create the empty stream if it does not exist.",
        "    * ENTRIESREAD entries_read",
        "      Set the group's entries_read counter (internal use).",
        "CREATECONSUMER <key> <groupname> <consumer>",
        "    Create a new consumer in the specified group.",
        "DELCONSUMER <key> <groupname> <consumer>",
        "    Remove the specified consumer.",
        "DESTROY <key> <groupname>",
        "    Remove the specified group.",
        "SETID <key> <groupname> <id|$> [ENTRIESREAD entries_read]",
        "    Set the current group ID and entries_read counter.",
        "HELP",
        "    Prints this help.",
    ]
    static let xinfoHelp = [
        "XINFO <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
        "CONSUMERS <key> <groupname>",
        "    Show consumers of <groupname>.",
        "GROUPS <key>",
        "    Show the stream consumer groups.",
        "STREAM <key> [FULL [COUNT <count>]",
        "    Show information about the stream.",
        "HELP",
        "    Prints this help.",
    ]

    /// The planned form of stream command `name`, nil when `name` is not one.
    func streamPlanned(_ name: String, _ args: [[UInt8]], _ session: Session) -> DataPlanned? {
        guard let c = Self.streamCommands[name] else { return nil }
        guard c.arity >= 0 ? args.count == c.arity : args.count >= -c.arity else {
            return .reply(Self.arity(name))
        }
        let v3 = session.version == .v3
        let now = Self.b(String(max(0, clock() / 1000)))
        // The node size rides with the bound when CONFIG SET changed it (DataModel.streamBounds).
        let limit = Self.b(String(streamMaxEntries) + (streamNodeEntriesSet.map { ":\($0)" } ?? ""))
        func call(_ key: [UInt8], _ a: [[UInt8]], write: Bool) -> DataPlanned {
            .call(DataCall(key: key, args: a, write: write) { Self.resp($0, v3) })
        }
        func writeCall(_ key: [UInt8], _ rest: ArraySlice<[UInt8]>) -> DataPlanned {
            call(key, [Self.b(name), key, now, limit] + rest, write: true)
        }
        switch name {
        case "xgroup", "xinfo":
            let sub = Self.word(args[1])
            let help = name == "xgroup" ? Self.xgroupHelp : Self.xinfoHelp
            let arities: [String: Int] =
                name == "xgroup"
                ? ["create": -5, "setid": -5, "destroy": 4, "createconsumer": 5, "delconsumer": 5, "help": 2]
                : ["stream": -3, "groups": 3, "consumers": 4, "help": 2]
            guard let arity = arities[sub] else {
                return .reply(
                    Self.err(
                        "unknown subcommand '\(String(decoding: args[1].prefix(128), as: UTF8.self))'. "
                            + "Try \(name.uppercased()) HELP."))
            }
            guard arity >= 0 ? args.count == arity : args.count >= -arity else {
                return .reply(Self.arity("\(name)|\(sub)"))
            }
            if sub == "help" { return .reply(.array(help.map { .simpleString($0) })) }
            if name == "xinfo" {
                return call(args[2], [Self.b("xinfo"), args[2], Self.b(sub)] + args[3...], write: false)
            }
            return call(
                args[2], [Self.b("xgroup"), args[2], now, limit, Self.b(sub)] + args[3...], write: true)
        case "xread", "xreadgroup":
            return readPlanned(name, args, session, now: now, limit: limit)
        default:
            if c.write { return writeCall(args[1], args[2...]) }
            return call(args[1], [Self.b(name)] + args[1...], write: false)
        }
    }

    /// XREAD / XREADGROUP options, as Redis's `xreadCommand` parses them.
    struct StreamRead {
        var count: Int64 = 0
        var blockMs: Int64?
        var group: [UInt8]?
        var consumer: [UInt8] = []
        var noAck = false
        var keys: [[UInt8]] = []
        var ids: [[UInt8]] = []
    }

    enum StreamReadParsed {
        case success(StreamRead)
        case failure(RESPValue)
    }

    static func parseStreamRead(_ name: String, _ args: [[UInt8]]) -> StreamReadParsed {
        let group = name == "xreadgroup"
        var r = StreamRead()
        var streamsAt = 0
        var i = 1
        while i < args.count {
            let more = args.count - i - 1
            let o = word(args[i])
            if o == "block" && more > 0 {
                i += 1
                guard let t = KeyValue.strictInteger(args[i]) else {
                    return .failure(err("timeout is not an integer or out of range"))
                }
                guard t >= 0 else { return .failure(err("timeout is negative")) }
                r.blockMs = t
            } else if o == "count" && more > 0 {
                i += 1
                guard let n = KeyValue.strictInteger(args[i]) else { return .failure(notInteger) }
                r.count = max(0, n)
            } else if o == "streams" && more > 0 {
                streamsAt = i + 1
                let n = args.count - streamsAt
                guard n % 2 == 0 else {
                    return .failure(
                        err(
                            "Unbalanced \(name.uppercased()) list of streams: for each stream key an ID or '$' must be specified."
                        ))
                }
                r.keys = Array(args[streamsAt..<(streamsAt + n / 2)])
                r.ids = Array(args[(streamsAt + n / 2)...])
                break
            } else if o == "group" && more >= 2 {
                guard group else {
                    return .failure(
                        err("The GROUP option is only supported by XREADGROUP. You called XREAD instead."))
                }
                r.group = args[i + 1]
                r.consumer = args[i + 2]
                i += 2
            } else if o == "noack" {
                guard group else {
                    return .failure(
                        err("The NOACK option is only supported by XREADGROUP. You called XREAD instead."))
                }
                r.noAck = true
            } else {
                return .failure(syntax)
            }
            i += 1
        }
        guard streamsAt > 0 else { return .failure(syntax) }
        if group && r.group == nil { return .failure(err("Missing GROUP option for XREADGROUP")) }
        for id in r.ids {
            if id == [UInt8(ascii: "$")] {
                if group {
                    return .failure(
                        err(
                            "The $ ID is meaningless in the context of XREADGROUP: you want to read the history of "
                                + "this consumer by specifying a proper ID, or use the > ID to get new messages. The $ ID "
                                + "would just return an empty result set."))
                }
            } else if id == [UInt8(ascii: ">")] {
                if !group {
                    return .failure(
                        err(
                            "The > ID can be specified only when calling XREADGROUP using the GROUP <group> "
                                + "<consumer> option."))
                }
            } else if StreamID.parse(id, strict: true) == nil {
                return .failure(err("Invalid stream ID specified as stream command argument"))
            }
        }
        return .success(r)
    }

    /// XREAD (one read per stream) and XREADGROUP (one write per stream: delivering changes the
    /// group). One stream is one call (it can join a transaction); several are run together and
    /// are not one atomic step.
    func readPlanned(_ name: String, _ args: [[UInt8]], _ session: Session, now: [UInt8], limit: [UInt8])
        -> DataPlanned
    {
        let v3 = session.version == .v3
        let r: StreamRead
        switch Self.parseStreamRead(name, args) {
        case .failure(let e): return .reply(e)
        case .success(let x): r = x
        }
        // BLOCK waits, except inside MULTI (it runs once, as Redis) and for XREADGROUP's history
        // reads (an id other than `>`: answered at once, as Redis).
        if r.blockMs != nil && session.transaction == nil
            && (r.group == nil || r.ids.allSatisfy { $0 == [UInt8(ascii: ">")] })
        {
            return .plan(blockingStreamPlan(r, v3: v3, now: now, limit: limit))
        }
        let count = Self.b(String(r.count))
        let calls: [DataCall] = zip(r.keys, r.ids).map { key, id in
            if let g = r.group {
                return DataCall(
                    key: key,
                    args: [
                        Self.b("xreadgroup"), key, now, limit, g, r.consumer, count,
                        Self.b(r.noAck ? "1" : "0"), id,
                    ],
                    write: true
                ) { Self.resp($0, v3) }
            }
            return DataCall(key: key, args: [Self.b("xread"), key, id, count], write: false) {
                Self.resp($0, v3)
            }
        }
        let keys = r.keys
        let combine: @Sendable ([RESPValue]) -> RESPValue = { replies in
            var out: [RESPValue] = []
            for (k, reply) in zip(keys, replies) {
                if case .error = reply { return reply }
                if case .array(nil) = reply { continue }
                out.append(.bulkString(k))
                out.append(reply)
            }
            if out.isEmpty { return .array(nil) }
            if v3 { return .map(out) }
            return .array(stride(from: 0, to: out.count, by: 2).map { .array([out[$0], out[$0 + 1]]) })
        }
        if calls.count == 1 {
            var one = calls[0]
            let convert = one.convert
            one.convert = { combine([convert($0)]) }
            return .call(one)
        }
        let clock = self.clock
        return .requests(
            calls.map { ($0.key, $0.write ? KeyRequest.write(.data($0.args)) : KeyRequest.read) }
        ) { replies in
            combine(
                zip(calls, replies).map { c, reply in
                    if c.write {
                        switch reply {
                        case .done(.data(let d)): return c.convert(d)
                        case .done(.previousForgotten): return Self.forgotten
                        default: return Self.failure(reply, write: true)
                        }
                    }
                    guard let v = Self.stored(reply) else { return Self.failure(reply, write: false) }
                    return c.convert(DataModel.read(c.args, v, nowMs: UInt64(max(0, clock() / 1000))))
                })
        }
    }
}

extension CommandProcessor {
    /// XREAD BLOCK / XREADGROUP BLOCK on `CommandPlan.blocking` (Blocking.swift). An attempt reads
    /// every stream (a linearizable read each, no Paxos write): XREAD answers what is after each
    /// id; XREADGROUP looks whether a group has entries after its last delivered id and only then
    /// delivers (a write), waiting again if another consumer took them meanwhile. `$` is resolved
    /// to the stream's last id at the first attempt, so entries added while blocked are returned.
    func blockingStreamPlan(_ r: StreamRead, v3: Bool, now: [UInt8], limit: [UInt8]) -> CommandPlan {
        let keys = r.keys
        let timeout: RESPValue = v3 ? .null : .array(nil)
        let clock = self.clock
        let count = Self.b(String(r.count))
        let ms = r.blockMs ?? 0
        @Sendable func combine(_ replies: [RESPValue]) -> RESPValue? {
            var out: [RESPValue] = []
            for (k, reply) in zip(keys, replies) {
                if case .error = reply { return reply }
                if case .array(nil) = reply { continue }
                out.append(.bulkString(k))
                out.append(reply)
            }
            if out.isEmpty { return nil }
            if v3 { return .map(out) }
            return .array(stride(from: 0, to: out.count, by: 2).map { .array([out[$0], out[$0 + 1]]) })
        }
        let reads = keys.map { ($0, KeyRequest.read) }
        guard let group = r.group else {
            // XREAD: `ids` nil until the first attempt resolved `$`.
            @Sendable func attempt(_ ids: [[UInt8]]?) -> BlockingCall {
                BlockingCall(keys: keys, timeoutMs: ms, timeout: timeout, requests: reads, takes: false) {
                    replies in
                    let nowMs = UInt64(max(0, clock() / 1000))
                    var resolved: [[UInt8]] = []
                    var answers: [RESPValue] = []
                    for (k, (key, reply)) in zip(keys, replies).enumerated() {
                        guard let v = Self.stored(reply) else {
                            return .answer(Self.failure(reply, write: false))
                        }
                        var id = ids?[k] ?? r.ids[k]
                        if id == [UInt8(ascii: "$")] {
                            id = Self.b(DataModel.streamLastID(v)?.description ?? "0-0")
                        }
                        resolved.append(id)
                        let answer = DataModel.read([Self.b("xread"), key, id, count], v, nowMs: nowMs)
                        // Once blocked, a key that became another kind is waited on (Redis serves
                        // a blocked XREAD only from a stream); the first attempt answers WRONGTYPE.
                        if ids != nil, case .error = answer {
                            answers.append(.array(nil))
                            continue
                        }
                        answers.append(Self.resp(answer, v3))
                    }
                    if let done = combine(answers) { return .answer(done) }
                    return .wait(attempt(resolved))
                }
            }
            return .blocking(attempt(nil))
        }
        // XREADGROUP with `>` on every stream: look, then deliver.
        // Once blocked, a stream deleted or turned into another kind ends the wait with Redis's
        // UNBLOCKED error; at the first attempt it is NOGROUP or WRONGTYPE, as without BLOCK.
        let gone = RESPValue.error("UNBLOCKED the stream key no longer exists")
        @Sendable func look(first: Bool = false) -> BlockingCall {
            BlockingCall(keys: keys, timeoutMs: ms, timeout: timeout, requests: reads) { replies in
                var ready: [[UInt8]] = []
                for (key, reply) in zip(keys, replies) {
                    guard let v = Self.stored(reply) else {
                        return .answer(Self.failure(reply, write: false))
                    }
                    switch DataModel.read([Self.b("xready"), key, group], v, nowMs: 0) {
                    case .error where !first && (v == nil || v?.kind != .stream): return .answer(gone)
                    case .error(let e): return .answer(.error(e))
                    case .integer(1): ready.append(key)
                    default: continue
                    }
                }
                if ready.isEmpty { return .wait(look()) }
                let taking = ready
                let nowMs = Self.b(String(max(0, clock() / 1000)))
                let writes = taking.map { key in
                    (
                        key,
                        KeyRequest.write(
                            .data([
                                Self.b("xreadgroup"), key, nowMs, limit, group, r.consumer, count,
                                Self.b(r.noAck ? "1" : "0"), [UInt8(ascii: ">")],
                            ]))
                    )
                }
                return .again(
                    look().next(writes) { replies in
                        var answers: [RESPValue] = []
                        var byKey: [[UInt8]: RESPValue] = [:]
                        for (key, reply) in zip(taking, replies) {
                            switch reply {
                            case .done(.data(.error(let e)))
                            where e.hasPrefix("NOGROUP") || e.hasPrefix("WRONGTYPE"):
                                return .answer(gone)  // changed between the look and the take
                            case .done(.data(let d)): byKey[key] = Self.resp(d, v3)
                            case .done(.previousForgotten): return .answer(Self.forgotten)
                            default: return .answer(Self.failure(reply, write: true))
                            }
                        }
                        for key in keys { answers.append(byKey[key] ?? .array(nil)) }
                        if let done = combine(answers) { return .answer(done) }
                        return .wait(look())  // taken by another consumer meanwhile
                    })
            }
        }
        guard keys.count == 1 else { return .blocking(look(first: true)) }
        // One stream: the first attempt takes at once (the write XREADGROUP without BLOCK is), and
        // only if it finds nothing does the command wait, looking before each later take. A busy
        // queue almost always has something to take, and the look (a linearizable read of the
        // stream) cost each worker's call a round of the key's replicas before its take. Its
        // errors are the look's: NOGROUP and WRONGTYPE with Redis's texts, as without BLOCK.
        let take = [
            (
                keys[0],
                KeyRequest.write(
                    .data([
                        Self.b("xreadgroup"), keys[0], now, limit, group, r.consumer, count,
                        Self.b(r.noAck ? "1" : "0"), [UInt8(ascii: ">")],
                    ]))
            )
        ]
        return .blocking(
            BlockingCall(keys: keys, timeoutMs: ms, timeout: timeout, requests: take) { replies in
                switch replies.first {
                case .done(.data(.array(nil))): return .wait(look())
                case .done(.data(let d)): return .answer(combine([Self.resp(d, v3)]) ?? timeout)
                case .done(.previousForgotten): return .answer(Self.forgotten)
                case let other: return .answer(Self.failure(other ?? .unavailable("no reply"), write: true))
                }
            })
    }
}
