import Foundation
import NIOConcurrencyHelpers
import NIOCore
import TernConsensus
import TernRESP

/// The commands clients, redis-cli and Redis's test harness send around their work: COMMAND,
/// CONFIG, CLIENT, FUNCTION/SCRIPT FLUSH, RESET, TIME, ROLE, WAIT, the persistence commands and
/// DEBUG's refusal (docs/SERVER.md). Parsing and replies are pure; what needs the front end's
/// registry or figures is a `.frontend` plan.
extension CommandProcessor {
    /// Microseconds since the Unix epoch, from the system clock.
    public static func unixMicros() -> Int64 {
        var tv = timeval()
        gettimeofday(&tv, nil)
        return Int64(tv.tv_sec) * 1_000_000 + Int64(tv.tv_usec)
    }

    static func unknownSubcommand(_ sub: [UInt8], _ container: String) -> RESPValue {
        err(
            "unknown subcommand '\(String(decoding: sub.prefix(128), as: UTF8.self))'. Try \(container.uppercased()) HELP."
        )
    }

    static func help(_ container: String, _ lines: [String]) -> RESPValue {
        .array(
            ([
                "\(container.uppercased()) <subcommand> [<arg> [value] [opt] ...]. Subcommands are:"
            ] + lines + ["HELP", "    Print this help."]).map { .simpleString($0) })
    }

    /// COMMAND, CONFIG, CLIENT, FUNCTION and SCRIPT: the subcommand's arity from the table, then
    /// the subcommand.
    func container(_ name: String, _ args: [[UInt8]], _ session: inout Session) -> CommandPlan {
        let n = args.count
        if name == "command" && n == 1 { return .reply(.array(commandTable.commands.map(\.info))) }
        guard n >= 2 else { return .reply(Self.arity(name)) }
        let sub = String(decoding: args[1], as: UTF8.self).lowercased()
        guard let spec = commandTable.spec(name + "|" + sub) else {
            return .reply(Self.unknownSubcommand(args[1], name))
        }
        guard spec.accepts(n) else { return .reply(Self.arity(spec.name)) }
        switch name {
        case "command": return command(sub, args)
        case "config": return config(sub, args)
        case "client": return client(sub, args, &session)
        default: return scripting(name, sub, args)
        }
    }

    // MARK: - COMMAND

    func command(_ sub: String, _ args: [[UInt8]]) -> CommandPlan {
        let table = commandTable
        let names = args.dropFirst(2).map { String(decoding: $0, as: UTF8.self).lowercased() }
        switch sub {
        case "count":
            return .reply(.integer(Int64(table.commands.count)))
        case "info":
            if names.isEmpty { return .reply(.array(table.commands.map(\.info))) }
            return .reply(.array(names.map { table.spec($0)?.info ?? .null }))
        case "docs":
            let chosen = names.isEmpty ? table.commands : names.compactMap { table.spec($0) }
            return .reply(.map(chosen.flatMap { [.bulkString($0.name), $0.docs] }))
        case "list":
            return commandList(args, table)
        case "getkeys", "getkeysandflags":
            let target = Array(args.dropFirst(2))
            guard let spec = table.spec(for: target) else {
                return .reply(Self.err("Invalid command specified"))
            }
            guard spec.accepts(target.count) else {
                return .reply(Self.err("Invalid number of arguments specified for command"))
            }
            let movable =
                SortEngine.keyPositions(spec.name, target) ?? ScriptService.keyPositions(spec.name, target)
                ?? Self.keyNumPositions(spec.name, target)
            let positions = movable ?? spec.keyPositions(target.count)
            // Redis: a command with no keys at all is an error; one whose keys depend on its
            // arguments (EVAL … 0) answers an empty list.
            guard !positions.isEmpty || movable != nil else {
                return .reply(Self.err("The command has no key arguments"))
            }
            if sub == "getkeysandflags" {
                return .reply(
                    .array(
                        positions.map { p in
                            .array([
                                .bulkString(target[p]),
                                .array(Self.keyFlags(spec, target, p).map { .simpleString($0) }),
                            ])
                        }))
            }
            return .reply(.array(positions.map { .bulkString(target[$0]) }))
        default:  // help
            return .reply(
                Self.help(
                    "command",
                    [
                        "(no subcommand)", "    Return details about all commands.", "COUNT",
                        "    Return the total number of commands in this server.", "LIST",
                        "    Return a list of all commands in this server.", "INFO [<command-name> ...]",
                        "    Return details about multiple commands.", "DOCS [<command-name> ...]",
                        "    Return documentation details about multiple commands.", "GETKEYS <full-command>",
                        "    Return the keys from a full command.", "GETKEYSANDFLAGS <full-command>",
                        "    Return the keys and the access flags from a full command.",
                    ]))
        }
    }

    /// COMMAND LIST [FILTERBY MODULE name | ACLCAT category | PATTERN pattern]: every name, the
    /// subcommands' `container|sub` included (as Redis 7).
    func commandList(_ args: [[UInt8]], _ table: CommandTable) -> CommandPlan {
        var all: [CommandSpec] = []
        for c in table.commands { all += [c] + c.subcommands }
        if args.count == 2 { return .reply(.array(all.map { .bulkString($0.name) })) }
        guard args.count == 5, String(decoding: args[2], as: UTF8.self).lowercased() == "filterby" else {
            return .reply(Self.syntax)
        }
        let value = String(decoding: args[4], as: UTF8.self)
        let keep: (CommandSpec) -> Bool
        switch String(decoding: args[3], as: UTF8.self).lowercased() {
        case "module":
            // Tern's services are not Redis modules: no module is loaded.
            keep = { _ in false }
        case "aclcat":
            keep = { $0.categories.contains("@" + value.lowercased()) }
        case "pattern":
            keep = { Self.globMatches(args[4], $0.name) }
        default:
            return .reply(Self.syntax)
        }
        return .reply(.array(all.filter(keep).map { .bulkString($0.name) }))
    }

    /// The keys of the commands that count them (`numkeys`), Redis's keynum key specs: ZUNIONSTORE
    /// dst numkeys k…, ZUNION/ZINTERCARD/SINTERCARD/LMPOP/ZMPOP numkeys k…, BLMPOP/BZMPOP timeout
    /// numkeys k…; XREAD/XREADGROUP's streams. Nil for other commands.
    static func keyNumPositions(_ name: String, _ args: [[UInt8]]) -> [Int]? {
        if let streams = streamReadKeyPositions(name, args) { return streams }
        let layout: (dest: Bool, numkeys: Int)
        switch name {
        case "zunionstore", "zinterstore", "zdiffstore": layout = (true, 2)
        case "zunion", "zinter", "zdiff", "zintercard", "sintercard", "lmpop", "zmpop": layout = (false, 1)
        case "blmpop", "bzmpop": layout = (false, 2)
        default: return nil
        }
        guard layout.numkeys < args.count, let n = KeyValue.strictInteger(args[layout.numkeys]), n > 0,
            layout.numkeys + Int(n) < args.count
        else { return [] }
        return (layout.dest ? [1] : []) + Array((layout.numkeys + 1)...(layout.numkeys + Int(n)))
    }

    /// Redis 7.0's key-spec flags of the key at `position` of `args` (COMMAND GETKEYSANDFLAGS): the
    /// commands whose keys have different specs, from redis-server 7.0.15's COMMAND INFO (index
    /// specs: the last one starting at or before the key; STORE/STOREDIST keys: `OW update`), SET's
    /// variable flags as Redis's setGetKeys gives them, and otherwise the command's one key spec.
    static func keyFlags(_ spec: CommandSpec, _ args: [[UInt8]], _ position: Int) -> [String] {
        let name = spec.name
        if name == "set" {
            return args.dropFirst(3).contains { word($0) == "get" }
                ? ["RW", "access", "update"] : ["OW", "update"]
        }
        if ["sort", "georadius", "georadiusbymember"].contains(name), position >= 1,
            ["store", "storedist"].contains(word(args[position - 1]))
        {
            return ["OW", "update"]
        }
        let move = [(1, ["RW", "access", "delete"]), (2, ["RW", "insert"])]
        let store = [(1, ["OW", "update"]), (2, ["RO", "access"])]
        let byIndex: [String: [(Int, [String])]] = [
            "lmove": move, "blmove": move, "rpoplpush": move, "brpoplpush": move, "smove": move,
            "rename": [(1, ["RW", "access", "delete"]), (2, ["OW", "update"])],
            "renamenx": [(1, ["RW", "access", "delete"]), (2, ["OW", "insert"])],
            "copy": [(1, ["RO", "access"]), (2, ["OW", "update"])],
            "bitop": [(2, ["OW", "update"]), (3, ["RO", "access"])],
            "pfmerge": [(1, ["RW", "access", "insert"]), (2, ["RO", "access"])],
            "sinterstore": [(1, ["RW", "update"]), (2, ["RO", "access"])],
            "sunionstore": store, "sdiffstore": store, "zunionstore": store, "zinterstore": store,
            "zdiffstore": store, "zrangestore": store, "geosearchstore": store,
            "sort": [(1, ["RO", "access"])], "sort_ro": [(1, ["RO", "access"])],
            "georadius": [(1, ["RO", "access"])], "georadiusbymember": [(1, ["RO", "access"])],
        ]
        if let specs = byIndex[name], let hit = specs.last(where: { $0.0 <= position }) { return hit.1 }
        return spec.keySpecFlags.filter { $0 != "variable_flags" }
    }

    // MARK: - CONFIG

    /// CONFIG GET's parameters, in Redis's names, with Tern's values. The encodings' parameters are
    /// Redis's defaults: Tern stores strings only and they change nothing (docs/SERVER.md).
    func configParameters(maxClients: Int, port: Int) -> [(String, String)] {
        [
            ("maxclients", "\(maxClients)"),
            // Redis's form: class, hard limit, soft limit, soft seconds. Tern has the hard limit.
            (
                "client-output-buffer-limit",
                "normal \(clientOutputBytesMax) 0 0 pubsub \(clientOutputBytesMax) 0 0"
            ),
            ("maxmemory-clients", "\(clientMemoryBytesMax)"),
            ("client-query-buffer-limit", "\(RESPLimits().maxCommandBytes)"),
            ("proto-max-bulk-len", "\(maxValueBytes)"),
            ("tern-max-key-bytes", "\(ReplicaNode.keyBytesMax)"),
            ("tern-max-unanswered-commands", "\(RESPConnectionHandler.unansweredMax)"),
            ("appendonly", "yes"),
            ("appendfsync", "always"),
            ("save", ""),
            ("databases", "1"),
            ("port", "\(port)"),
            ("bind", bind),
            ("dir", dataDirectory),
            ("protected-mode", "no"),
            ("timeout", "0"),
            ("tcp-keepalive", "0"),
            ("maxmemory", "\(memory.limitBytes)"),
            ("maxmemory-policy", "noeviction"),
            ("lua-time-limit", "\(scriptTimeLimitMs)"),
            ("busy-reply-threshold", "\(scriptTimeLimitMs)"),
            ("hz", "\(hz)"),
            ("loglevel", logLevel),
            ("latency-tracking", "no"),
            ("cluster-enabled", "no"),
            ("notify-keyspace-events", notifier.text),
            ("list-max-listpack-size", "-2"),
            ("list-max-ziplist-size", "-2"),
            ("list-compress-depth", "0"),
            ("hash-max-listpack-entries", "512"),
            ("hash-max-listpack-value", "64"),
            ("hash-max-ziplist-entries", "512"),
            ("hash-max-ziplist-value", "64"),
            ("set-max-intset-entries", "512"),
            ("zset-max-listpack-entries", "128"),
            ("zset-max-listpack-value", "64"),
            ("zset-max-ziplist-entries", "128"),
            ("zset-max-ziplist-value", "64"),
            ("stream-node-max-entries", "\(DataModel.streamNodeEntries)"),
            ("stream-node-max-bytes", "4096"),
        ]
    }

    /// Redis's stream node sizes: CONFIG SET keeps them per node (as a Redis server does), and
    /// `stream-node-max-entries` is the node size `~` trims by in the stream writes this node plans
    /// (StreamCommands.swift); `stream-node-max-bytes` changes nothing (Tern's nodes are counted in
    /// entries only, docs/QUEUE.md).
    static let streamNodeConfig: Set<String> = ["stream-node-max-entries", "stream-node-max-bytes"]

    /// The `stream-node-max-entries` CONFIG SET gave, nil while it is Redis's default.
    var streamNodeEntriesSet: Int? {
        guard let text = encodingValues.withLockedValue({ $0["stream-node-max-entries"] }),
            let n = Int(text), n != DataModel.streamNodeEntries
        else { return nil }
        return n
    }

    /// How long a script may run before Tern stops it (docs/SCRIPTING.md): `lua-time-limit` and its
    /// Redis 7 name `busy-reply-threshold`, one value, 5000 ms by default.
    static let scriptConfig: Set<String> = ["lua-time-limit", "busy-reply-threshold"]
    var scriptTimeLimitMs: Int {
        encodingValues.withLockedValue { $0["lua-time-limit"] }.flatMap { Int($0) } ?? 5000
    }

    /// What CONFIG SET can change while Tern runs.
    static let settableConfig: Set<String> = ["maxclients"]

    /// Redis's encoding thresholds: CONFIG SET accepts them (test suites and tools set them) and
    /// CONFIG GET shows the value set, but they change nothing — Tern has one encoding per kind
    /// (docs/DATA.md).
    static let encodingConfig: Set<String> = [
        "list-max-listpack-size", "list-max-ziplist-size", "list-compress-depth", "hash-max-listpack-entries",
        "hash-max-listpack-value", "hash-max-ziplist-entries", "hash-max-ziplist-value",
        "set-max-intset-entries",
        "zset-max-listpack-entries", "zset-max-listpack-value", "zset-max-ziplist-entries",
        "zset-max-ziplist-value",
    ]

    func config(_ sub: String, _ args: [[UInt8]]) -> CommandPlan {
        switch sub {
        case "get":
            let patterns = Array(args.dropFirst(2))
            return .frontend { view in
                var out: [RESPValue] = []
                let set = self.encodingValues.withLockedValue { $0 }
                for (name, value) in self.configParameters(maxClients: view.maxClients, port: view.port)
                where patterns.contains(where: { Self.globMatches($0, name) }) {
                    out += [.bulkString(name), .bulkString(set[name] ?? value)]
                }
                return view.eventLoop.makeSucceededFuture(.map(out))
            }
        case "set":
            return configSet(args)
        case "resetstat":
            return .frontend { view in
                view.resetStats()
                return view.eventLoop.makeSucceededFuture(.ok)
            }
        case "rewrite":
            return .reply(
                Self.err(
                    "CONFIG REWRITE is not supported by Tern: settings live in server.toml (edit it and restart; "
                        + "CONFIG SET maxclients and maxmemory last until the process stops)"))
        default:
            return .reply(
                Self.help(
                    "config",
                    [
                        "GET <pattern>",
                        "    Return parameters matching the glob-like <pattern> and their values.",
                        "SET <directive> <value>",
                        "    Set the configuration <directive> to <value> (maxclients, maxmemory, notify-keyspace-events).",
                        "RESETSTAT", "    Reset statistics reported by the INFO command.", "REWRITE",
                        "    Refused: Tern's settings live in server.toml.",
                    ]))
        }
    }

    /// CONFIG SET name value [name value …]: all checked before any is applied, as Redis 7.
    func configSet(_ args: [[UInt8]]) -> CommandPlan {
        guard args.count % 2 == 0 else { return .reply(Self.syntax) }
        let known = Set(configParameters(maxClients: 0, port: 0).map(\.0))
        var seen: Set<String> = []
        var maxClients: Int?
        var encodings: [String: String] = [:]
        var notify: Int?
        var maxmemory: UInt64?
        var i = 2
        while i < args.count {
            let name = String(decoding: args[i], as: UTF8.self).lowercased()
            let shown = String(decoding: args[i].prefix(128), as: UTF8.self)
            func failed(_ why: String) -> CommandPlan {
                .reply(Self.err("CONFIG SET failed (possibly related to argument '\(shown)') - \(why)"))
            }
            guard known.contains(name) else {
                return .reply(Self.err("Unknown option or number of arguments for CONFIG SET - '\(shown)'"))
            }
            guard seen.insert(name).inserted else { return failed("duplicate parameter") }
            // No snapshots exist to schedule (every write is fsynced on a majority): turning them
            // off is already true, anything else is refused.
            if name == "save" {
                guard args[i + 1].isEmpty else {
                    return failed("Tern takes no snapshots: every acknowledged write is already durable")
                }
                i += 2
                continue
            }
            if let parsed = Self.memoryConfig(name, args[i + 1]) {
                switch parsed {
                case .failure(let why): return failed(why.text)
                case .success(let v): maxmemory = v ?? maxmemory
                }
                i += 2
                continue
            }
            if name == "notify-keyspace-events" {
                guard let f = KeyspaceNotifier.parse(args[i + 1]) else {
                    return failed(KeyspaceNotifier.invalidFlags)
                }
                notify = f
                i += 2
                continue
            }
            if Self.scriptConfig.contains(name) {
                guard let n = KeyValue.strictInteger(args[i + 1]), n >= 0 else {
                    return failed("argument couldn't be parsed into an integer")
                }
                encodings["lua-time-limit"] = String(n)
                i += 2
                continue
            }
            if Self.encodingConfig.contains(name) || Self.streamNodeConfig.contains(name) {
                guard let n = KeyValue.strictInteger(args[i + 1]) else {
                    return failed("argument couldn't be parsed into an integer")
                }
                if Self.streamNodeConfig.contains(name) && n < 0 {
                    return failed("argument must be between 0 and 9223372036854775807 inclusive")
                }
                encodings[name] = String(decoding: args[i + 1], as: UTF8.self)
                i += 2
                continue
            }
            guard Self.settableConfig.contains(name) else {
                return failed("Tern cannot change it at run time (it is fixed, or set in server.toml)")
            }
            guard let v = KeyValue.strictInteger(args[i + 1]) else {
                return failed("argument couldn't be parsed into an integer")
            }
            guard v >= 1 && v <= 1_000_000 else {
                return failed("argument must be between 1 and 1000000 inclusive")
            }
            maxClients = Int(v)
            i += 2
        }
        let value = maxClients
        let box = encodingValues
        let setEncodings = encodings
        let notifier = self.notifier
        let memory = self.memory
        return .frontend { [notify, maxmemory] view in
            if let notify { notifier.set(notify) }
            if let maxmemory { memory.setLimit(maxmemory) }
            box.withLockedValue { $0.merge(setEncodings) { $1 } }
            if let value { view.setMaxClients(value) }
            return view.eventLoop.makeSucceededFuture(.ok)
        }
    }

    // MARK: - CLIENT

    /// Redis's rule for connection names: printable ASCII without spaces.
    static func validClientName(_ b: [UInt8]) -> Bool { b.allSatisfy { $0 > 32 && $0 < 127 } }

    func client(_ sub: String, _ args: [[UInt8]], _ session: inout Session) -> CommandPlan {
        switch sub {
        case "id":
            return .reply(.integer(Int64(session.clientID)))
        case "getname":
            return .reply(.bulkString(session.name.map { Array($0.utf8) }))
        case "setname":
            guard Self.validClientName(args[2]) else {
                return .reply(Self.err("Client names cannot contain spaces, newlines or special characters."))
            }
            session.name = args[2].isEmpty ? nil : String(decoding: args[2], as: UTF8.self)
            return .reply(.ok)
        case "setinfo":
            let attr = String(decoding: args[2], as: UTF8.self).lowercased()
            guard attr == "lib-name" || attr == "lib-ver" else {
                return .reply(Self.err("Unrecognized option '\(String(decoding: args[2], as: UTF8.self))'"))
            }
            guard Self.validClientName(args[3]) || args[3].isEmpty else {
                return .reply(
                    Self.err("\(attr) cannot contain spaces, newlines or special characters."))
            }
            let value = String(decoding: args[3], as: UTF8.self)
            if attr == "lib-name" { session.libName = value } else { session.libVersion = value }
            return .reply(.ok)
        case "no-evict":
            switch String(decoding: args[2], as: UTF8.self).lowercased() {
            case "on": session.noEvict = true
            case "off": session.noEvict = false
            default: return .reply(Self.syntax)
            }
            return .reply(.ok)
        case "reply":
            // OFF and SKIP are not answered (as Redis): the front end drops this command's reply.
            switch String(decoding: args[2], as: UTF8.self).lowercased() {
            case "on":
                session.repliesOff = false
                session.skipNextReply = false
            case "off": session.repliesOff = true
            case "skip": if !session.repliesOff { session.skipNextReply = true }
            default: return .reply(Self.syntax)
            }
            return .reply(.ok)
        case "info":
            return .frontend { view in view.eventLoop.makeSucceededFuture(.verbatim(view.me().line + "\n")) }
        case "list":
            return clientList(args)
        case "kill":
            return clientKill(args, session)
        case "unblock":
            // CLIENT UNBLOCK id [TIMEOUT|ERROR]: answers a command blocked on keys (BLPOP ...).
            guard args.count == 3 || args.count == 4 else { return .reply(Self.syntax) }
            guard let id = UInt64(String(decoding: args[2], as: UTF8.self)) else {
                return .reply(Self.err("value is not an integer or out of range"))
            }
            var error = false
            if args.count == 4 {
                switch String(decoding: args[3], as: UTF8.self).lowercased() {
                case "timeout": error = false
                case "error": error = true
                default: return .reply(Self.err("CLIENT UNBLOCK reason should be TIMEOUT or ERROR"))
                }
            }
            let asError = error
            return .frontend { view in view.unblock(id, error: asError).map { .integer($0 ? 1 : 0) } }
        default:
            return .reply(
                Self.help(
                    "client",
                    [
                        "GETNAME", "    Return the name of the current connection.", "ID",
                        "    Return the ID of the current connection.", "INFO",
                        "    Return information about the current client connection.", "KILL <ip:port>",
                        "    Kill connection made from <ip:port>.",
                        "KILL <option> <value> [<option> <value> [...]]",
                        "    Kill connections. Options are: ID, ADDR, LADDR, TYPE (NORMAL|PUBSUB), USER, SKIPME.",
                        "LIST [TYPE (NORMAL|PUBSUB)] [ID <id> [<id> ...]]",
                        "    Return information about client connections.",
                        "SETNAME <name>", "    Assign the name <name> to the current connection.",
                        "UNBLOCK <clientid> [TIMEOUT|ERROR]",
                        "    Unblock the specified blocked client.",
                        "NO-EVICT (ON|OFF)",
                        "    Protect the current client connection from client eviction (maxmemory-clients).",
                    ]))
        }
    }

    /// CLIENT LIST [TYPE normal|pubsub|master|replica] [ID id …].
    func clientList(_ args: [[UInt8]]) -> CommandPlan {
        var type: String?
        var ids: Set<UInt64>?
        var i = 2
        while i < args.count {
            let opt = String(decoding: args[i], as: UTF8.self).lowercased()
            if opt == "type", i + 1 < args.count {
                let t = String(decoding: args[i + 1], as: UTF8.self).lowercased()
                guard ["normal", "pubsub", "master", "replica", "slave"].contains(t) else {
                    return .reply(
                        Self.err("Unknown client type '\(String(decoding: args[i + 1], as: UTF8.self))'"))
                }
                type = t
                i += 2
            } else if opt == "id", i + 1 < args.count {
                var set: Set<UInt64> = []
                for a in args[(i + 1)...] {
                    guard let v = KeyValue.strictInteger(a) else {
                        return .reply(Self.err("Invalid client ID"))
                    }
                    if v > 0 { set.insert(UInt64(v)) }  // 0 or below: matches nothing (as Redis)
                }
                ids = set
                i = args.count
            } else {
                return .reply(Self.syntax)
            }
        }
        var wanted = ClientFilter()
        wanted.type = type
        let filter = wanted
        let chosen = ids
        return .frontend { view in
            view.clients().map { clients in
                let lines = clients.sorted { $0.id < $1.id }
                    .filter { filter.matches($0) && (chosen?.contains($0.id) ?? true) }
                    .map { $0.line + "\n" }
                return .verbatim(lines.joined())
            }
        }
    }

    /// CLIENT KILL ip:port (old form: OK or "No such client") or CLIENT KILL filter value … (the
    /// number killed; SKIPME yes by default).
    func clientKill(_ args: [[UInt8]], _ session: Session) -> CommandPlan {
        var filter = ClientFilter()
        if args.count == 3 {
            filter.addr = String(decoding: args[2], as: UTF8.self)
            let byAddress = filter
            return .frontend { view in
                view.kill(byAddress).map { $0 == 0 ? Self.err("No such client") : .ok }
            }
        }
        guard args.count % 2 == 0 else { return .reply(Self.syntax) }
        var skipMe = true
        var i = 2
        while i < args.count {
            let opt = String(decoding: args[i], as: UTF8.self).lowercased()
            let value = String(decoding: args[i + 1], as: UTF8.self)
            switch opt {
            case "id":
                guard let v = KeyValue.strictInteger(args[i + 1]), v > 0 else {
                    return .reply(Self.err("client-id should be greater than 0"))
                }
                filter.id = UInt64(v)
            case "addr": filter.addr = value
            case "laddr": filter.laddr = value
            case "user":
                // Tern has one user, `default`.
                guard value == "default" else { return .reply(Self.err("No such user '\(value)'")) }
                filter.user = value
            case "type":
                let t = value.lowercased()
                switch t {
                case "normal", "pubsub": filter.type = t
                case "master", "replica", "slave": filter.type = "none"  // Tern has none of these
                default: return .reply(Self.err("Unknown client type '\(value)'"))
                }
            case "skipme":
                switch value.lowercased() {
                case "yes": skipMe = true
                case "no": skipMe = false
                default: return .reply(Self.syntax)
                }
            default:
                return .reply(Self.syntax)
            }
            i += 2
        }
        if skipMe { filter.skip = session.clientID }
        let chosen = filter
        return .frontend { view in view.kill(chosen).map { .integer(Int64($0)) } }
    }

    // MARK: - FUNCTION, SCRIPT

    /// FUNCTION LIST (empty: Tern has no functions), FUNCTION FLUSH and SCRIPT FLUSH (nothing to
    /// flush: OK, as Redis answers when there is nothing).
    func scripting(_ name: String, _ sub: String, _ args: [[UInt8]]) -> CommandPlan {
        switch (name, sub) {
        case ("function", "list"):
            var i = 2
            while i < args.count {
                switch String(decoding: args[i], as: UTF8.self).lowercased() {
                case "withcode": i += 1
                case "libraryname":
                    guard i + 1 < args.count else {
                        return .reply(Self.err("library name argument was not given"))
                    }
                    i += 2
                default:
                    return .reply(Self.err("Unknown argument \(String(decoding: args[i], as: UTF8.self))"))
                }
            }
            return .reply(.array([]))
        case (_, "flush"):
            if args.count > 3 && name == "function" {
                return .reply(
                    Self.err(
                        "unknown subcommand or wrong number of arguments for '\(String(decoding: args[1], as: UTF8.self))'. "
                            + "Try FUNCTION HELP."))
            }
            if args.count >= 3 {
                let mode = String(decoding: args[2], as: UTF8.self).lowercased()
                guard args.count == 3, mode == "sync" || mode == "async" else {
                    return .reply(
                        Self.err(
                            name == "function"
                                ? "FUNCTION FLUSH only supports SYNC|ASYNC option"
                                : "SCRIPT FLUSH only support SYNC|ASYNC option"))
                }
            }
            return .reply(.ok)
        default:
            return .reply(
                Self.help(
                    name,
                    [
                        "FLUSH [ASYNC|SYNC]",
                        "    Nothing to flush: Tern has no \(name == "function" ? "functions" : "scripts").",
                    ]))
        }
    }

    // MARK: - RESET and the server commands

    /// RESET: a fresh session (RESP2, no name, unauthenticated when a password is set, out of a
    /// refused MULTI and of subscribed mode, no-evict off); the id stays.
    func reset(_ session: inout Session) -> CommandPlan {
        session = Session(authenticated: access.defaultUserOpen, clientID: session.clientID)
        let modules = self.modules
        return .connection { outlet in
            for m in modules { m.reset(outlet) }
            return [.simpleString("RESET")]
        }
    }

    func server(_ name: String, _ args: [[UInt8]]) -> CommandPlan {
        let n = args.count
        switch name {
        case "time":
            guard n == 1 else { return .reply(Self.arity(name)) }
            let now = clock()
            return .reply(
                .array([.bulkString("\(now / 1_000_000)"), .bulkString("\(now % 1_000_000)")]))
        case "lastsave":
            // Every acknowledged write is already durable on a majority of campuses: "the last save"
            // is now.
            guard n == 1 else { return .reply(Self.arity(name)) }
            return .reply(.integer(clock() / 1_000_000))
        case "save", "bgrewriteaof":
            guard n == 1 else { return .reply(Self.arity(name)) }
            return .reply(.ok)
        case "bgsave":
            guard n <= 2 else { return .reply(Self.arity(name)) }
            if n == 2 && String(decoding: args[1], as: UTF8.self).lowercased() != "schedule" {
                return .reply(Self.syntax)
            }
            return .reply(.ok)
        case "role":
            guard n == 1 else { return .reply(Self.arity(name)) }
            return .reply(.array([.bulkString("master"), .integer(0), .array([])]))
        case "wait":
            guard n == 3 else { return .reply(Self.arity(name)) }
            guard KeyValue.strictInteger(args[1]) != nil else { return .reply(Self.notInteger) }
            guard let timeout = KeyValue.strictInteger(args[2]) else {
                return .reply(Self.err("timeout is not an integer or out of range"))
            }
            guard timeout >= 0 else { return .reply(Self.err("timeout is negative")) }
            // Tern acknowledges a write only once a majority of its key's three replicas (one per
            // campus) holds it durably: nothing is left to wait for, and WAIT answers 2 at once
            // (docs/SERVER.md).
            return .reply(.integer(2))
        case "shutdown":
            // A client must not stop a replica of the cluster: the node's operator does, with
            // SIGTERM (docs/SERVER.md, "Refused by design").
            return .reply(
                Self.err(
                    "SHUTDOWN is not allowed in Tern: stop a node with SIGTERM (tern server finishes its requests "
                        + "in flight and closes its store)"))
        default:  // debug
            guard n >= 2 else { return .reply(Self.arity(name)) }
            return .reply(
                Self.err(
                    "DEBUG command not allowed: Tern has no DEBUG (it would change or inspect one node's state "
                        + "outside replication)"))
        }
    }
}
