import TernRESP

/// One command's entry in Tern's command table: what COMMAND INFO, COMMAND DOCS, COMMAND LIST and
/// COMMAND GETKEYS show, in Redis 7's layout. Figures for the Redis commands are Redis 7.0's own
/// (`COMMAND INFO` of redis-server 7.0.15), restricted to the subcommands Tern serves.
public struct CommandSpec: Sendable, Hashable {
    /// Lowercase; a subcommand is `container|sub`.
    public var name: String
    /// Redis's arity: N exactly N arguments (the name included), -N at least N.
    public var arity: Int
    public var flags: [String]
    /// First key, last key (negative: from the end) and step between keys; 0 0 0 when none.
    public var firstKey: Int
    public var lastKey: Int
    public var step: Int
    /// ACL categories, `@read` style.
    public var categories: [String]
    /// The flags of the command's one key spec (index `firstKey`, a range to `lastKey` by `step`);
    /// empty when the command takes no key.
    public var keySpecFlags: [String]
    /// COMMAND DOCS: summary, since (a Redis version, or Tern's for Tern's own) and group.
    public var summary: String
    public var since: String
    public var group: String
    public var subcommands: [CommandSpec]
    /// Redis's command tips (`nondeterministic_output`, `request_policy:…`).
    public var tips: [String] = []
    /// Key specs after the range one, as COMMAND INFO shows them (SORT's `unknown` ones).
    public var extraKeySpecs: [RESPValue] = []

    public init(
        _ name: String, arity: Int, flags: [String], keys: (Int, Int, Int) = (0, 0, 0),
        categories: [String], keySpec: [String] = [], summary: String, since: String = "1.0.0",
        group: String, subcommands: [CommandSpec] = []
    ) {
        self.name = name
        self.arity = arity
        self.flags = flags
        (firstKey, lastKey, step) = keys
        self.categories = categories
        keySpecFlags = keySpec
        self.summary = summary
        self.since = since
        self.group = group
        self.subcommands = subcommands
    }

    public static func == (a: CommandSpec, b: CommandSpec) -> Bool { a.name == b.name }
    public func hash(into h: inout Hasher) { h.combine(name) }

    /// Whether `n` arguments (the name included) satisfy the arity.
    public func accepts(_ n: Int) -> Bool { arity >= 0 ? n == arity : n >= -arity }

    /// The positions of the keys in `args` (`args[0]` is the command's name), Redis's
    /// `getKeysFromCommand` for a range key spec.
    public func keyPositions(_ count: Int) -> [Int] {
        guard firstKey > 0 else { return [] }
        let last = lastKey >= 0 ? lastKey : count + lastKey
        return Array(stride(from: firstKey, through: min(last, count - 1), by: max(step, 1)))
    }

    /// COMMAND INFO's entry.
    var info: RESPValue {
        var specs: [RESPValue] = []
        if !keySpecFlags.isEmpty {
            let relativeLast = lastKey >= 0 ? lastKey - firstKey : lastKey
            specs.append(
                .map([
                    .bulkString("flags"), .set(keySpecFlags.map { .simpleString($0) }),
                    .bulkString("begin_search"),
                    .map([
                        .bulkString("type"), .bulkString("index"), .bulkString("spec"),
                        .map([.bulkString("index"), .integer(Int64(firstKey))]),
                    ]),
                    .bulkString("find_keys"),
                    .map([
                        .bulkString("type"), .bulkString("range"), .bulkString("spec"),
                        .map([
                            .bulkString("lastkey"), .integer(Int64(relativeLast)), .bulkString("keystep"),
                            .integer(Int64(step)), .bulkString("limit"), .integer(0),
                        ]),
                    ]),
                ]))
        }
        specs += extraKeySpecs
        return .array([
            .bulkString(name), .integer(Int64(arity)), .set(flags.map { .simpleString($0) }),
            .integer(Int64(firstKey)), .integer(Int64(lastKey)), .integer(Int64(step)),
            .set(categories.map { .simpleString($0) }), .set(tips.map { .bulkString($0) }), .set(specs),
            .set(subcommands.map(\.info)),
        ])
    }

    /// COMMAND DOCS's entry (the map after the name): summary, since, group, and the subcommands'.
    var docs: RESPValue {
        var out: [RESPValue] = [
            .bulkString("summary"), .bulkString(summary), .bulkString("since"), .bulkString(since),
            .bulkString("group"), .bulkString(group),
        ]
        if !subcommands.isEmpty {
            out += [
                .bulkString("subcommands"), .map(subcommands.flatMap { [.bulkString($0.name), $0.docs] }),
            ]
        }
        return .map(out)
    }
}

extension CommandSpec {
    static let connection = ["@fast", "@connection"]
    static let admin = ["@admin", "@slow", "@dangerous"]
    static let adminSub = ["admin", "noscript", "loading", "stale"]
    static let readFast = ["@read", "@string", "@fast"]
    static let writeFast = ["@write", "@string", "@fast"]

    static func sub(
        _ name: String, _ arity: Int, _ flags: [String], _ categories: [String], _ summary: String,
        since: String = "1.0.0", group: String
    ) -> CommandSpec {
        CommandSpec(
            name, arity: arity, flags: flags, categories: categories, summary: summary, since: since,
            group: group)
    }

    /// The Redis commands Tern serves (the services add theirs through `CommandModule.commandSpecs`).
    static let redis: [CommandSpec] = [
        CommandSpec(
            "ping", arity: -1, flags: ["fast"], categories: connection,
            summary: "Returns the server's liveliness response.",
            group: "connection"),
        CommandSpec(
            "echo", arity: 2, flags: ["loading", "stale", "fast"], categories: connection,
            summary: "Returns the given string.", group: "connection"),
        CommandSpec(
            "quit", arity: -1, flags: ["noscript", "loading", "stale", "fast", "no_auth", "allow_busy"],
            categories: connection, summary: "Closes the connection.", group: "connection"),
        CommandSpec(
            "auth", arity: -2, flags: ["noscript", "loading", "stale", "fast", "no_auth", "allow_busy"],
            categories: connection, summary: "Authenticates the connection.", group: "connection"),
        CommandSpec(
            "hello", arity: -1, flags: ["noscript", "loading", "stale", "fast", "no_auth", "allow_busy"],
            categories: connection, summary: "Handshakes with the Redis server.", since: "6.0.0",
            group: "connection"),
        CommandSpec(
            "select", arity: 2, flags: ["loading", "stale", "fast"], categories: connection,
            summary: "Changes the selected database (Tern has one, 0).", group: "connection"),
        CommandSpec(
            "reset", arity: 1, flags: ["noscript", "loading", "stale", "fast", "no_auth", "allow_busy"],
            categories: connection, summary: "Resets the connection.", since: "6.2.0", group: "connection"),
        CommandSpec(
            "client", arity: -2, flags: [], categories: ["@slow"],
            summary: "A container for client connection commands.",
            since: "2.4.0", group: "connection",
            subcommands: [
                sub(
                    "client|id", 2, ["noscript", "loading", "stale"], ["@slow", "@connection"],
                    "Returns the unique client ID of the connection.", since: "5.0.0", group: "connection"),
                sub(
                    "client|getname", 2, ["noscript", "loading", "stale"], ["@slow", "@connection"],
                    "Returns the name of the connection.", since: "2.6.9", group: "connection"),
                sub(
                    "client|setname", 3, ["noscript", "loading", "stale"], ["@slow", "@connection"],
                    "Sets the connection name.", since: "2.6.9", group: "connection"),
                sub(
                    "client|setinfo", 4, ["noscript", "loading", "stale"], ["@slow", "@connection"],
                    "Sets information specific to the client or connection.", since: "7.2.0",
                    group: "connection"),
                sub(
                    "client|info", 2, ["noscript", "loading", "stale"], ["@slow", "@connection"],
                    "Returns information about the connection.", since: "6.2.0", group: "connection"),
                sub(
                    "client|list", -2, adminSub, admin + ["@connection"],
                    "Lists open connections.", since: "2.4.0", group: "connection"),
                sub(
                    "client|kill", -3, adminSub, admin + ["@connection"],
                    "Terminates open connections.", since: "2.4.0", group: "connection"),
                sub(
                    "client|unblock", -3, adminSub, admin + ["@connection"],
                    "Unblocks a client blocked by a blocking command from a different connection.",
                    since: "5.0.0", group: "connection"),
                sub(
                    "client|no-evict", 3, adminSub, admin + ["@connection"],
                    "Sets the client eviction mode of the connection.", since: "7.0.0", group: "connection"),
                sub(
                    "client|reply", 3, ["noscript", "loading", "stale"], ["@slow", "@connection"],
                    "Instructs the server whether to reply to commands.", since: "3.2.0", group: "connection"),
                sub(
                    "client|help", 2, ["loading", "stale"], ["@slow", "@connection"],
                    "Returns helpful text about the different subcommands.", since: "5.0.0",
                    group: "connection"),
            ]),
        CommandSpec(
            "info", arity: -1, flags: ["loading", "stale"], categories: ["@slow", "@dangerous"],
            summary: "Returns information and statistics about the server.", group: "server"),
        CommandSpec(
            "command", arity: -1, flags: ["loading", "stale"], categories: ["@slow", "@connection"],
            summary: "Returns detailed information about all commands.", since: "2.8.13", group: "server",
            subcommands: [
                sub(
                    "command|count", 2, ["loading", "stale"], ["@slow", "@connection"],
                    "Returns a count of commands.", since: "2.8.13", group: "server"),
                sub(
                    "command|docs", -2, ["loading", "stale"], ["@slow", "@connection"],
                    "Returns documentary information about one, multiple or all commands.", since: "7.0.0",
                    group: "server"),
                sub(
                    "command|getkeys", -4, ["loading", "stale"], ["@slow", "@connection"],
                    "Extracts the key names from an arbitrary command.", since: "2.8.13", group: "server"),
                sub(
                    "command|getkeysandflags", -4, ["loading", "stale"], ["@slow", "@connection"],
                    "Extracts the key names and access flags for an arbitrary command.", since: "7.0.0",
                    group: "server"),
                sub(
                    "command|info", -2, ["loading", "stale"], ["@slow", "@connection"],
                    "Returns information about one, multiple or all commands.", since: "2.8.13",
                    group: "server"),
                sub(
                    "command|list", -2, ["loading", "stale"], ["@slow", "@connection"],
                    "Returns a list of command names.", since: "7.0.0", group: "server"),
                sub(
                    "command|help", 2, ["loading", "stale"], ["@slow", "@connection"],
                    "Returns helpful text about the different subcommands.", since: "5.0.0", group: "server"),
            ]),
        CommandSpec(
            "config", arity: -2, flags: [], categories: ["@slow"],
            summary: "A container for server configuration commands.",
            since: "2.0.0", group: "server",
            subcommands: [
                sub(
                    "config|get", -3, adminSub, admin,
                    "Returns the effective values of configuration parameters.",
                    since: "2.0.0", group: "server"),
                sub(
                    "config|set", -4, adminSub, admin, "Sets configuration parameters in-flight.",
                    since: "2.0.0",
                    group: "server"),
                sub(
                    "config|resetstat", 2, adminSub, admin, "Resets the server's statistics.", since: "2.0.0",
                    group: "server"),
                sub(
                    "config|rewrite", 2, adminSub, admin,
                    "Persists the effective configuration to file (refused by Tern).", since: "2.8.0",
                    group: "server"),
                sub(
                    "config|help", 2, ["loading", "stale"], ["@slow"],
                    "Returns helpful text about the different subcommands.", since: "5.0.0", group: "server"),
            ]),
        CommandSpec(
            "monitor", arity: 1, flags: ["admin", "noscript", "loading", "stale"],
            categories: ["@admin", "@slow", "@dangerous"],
            summary: "Listens for all requests received by this node in real-time.", since: "1.0.0",
            group: "server"),
        CommandSpec(
            "time", arity: 1, flags: ["loading", "stale", "fast"], categories: ["@fast"],
            summary: "Returns the server time.", since: "2.6.0", group: "server"),
        CommandSpec(
            "lastsave", arity: 1, flags: ["loading", "stale", "fast"],
            categories: ["@admin", "@fast", "@dangerous"],
            summary:
                "Returns the Unix timestamp up to which every acknowledged write is durable (now, in Tern).",
            group: "server"),
        CommandSpec(
            "save", arity: 1, flags: ["admin", "noscript", "no_async_loading", "no_multi"], categories: admin,
            summary: "Synchronously saves the database(s) to disk (a no-op: Tern fsyncs every write).",
            group: "server"),
        CommandSpec(
            "bgsave", arity: -1, flags: ["admin", "noscript", "no_async_loading"], categories: admin,
            summary: "Asynchronously saves the database(s) to disk (a no-op: Tern fsyncs every write).",
            group: "server"),
        CommandSpec(
            "bgrewriteaof", arity: 1, flags: ["admin", "noscript", "no_async_loading"], categories: admin,
            summary:
                "Asynchronously rewrites the append-only file (a no-op: Tern's log is merged by itself).",
            group: "server"),
        CommandSpec(
            "role", arity: 1, flags: ["noscript", "loading", "stale", "fast"],
            categories: ["@admin", "@fast", "@dangerous"],
            summary: "Returns the replication role.", since: "2.8.12", group: "server"),
        CommandSpec(
            "shutdown", arity: -1,
            flags: ["admin", "noscript", "loading", "stale", "no_multi", "sentinel", "allow_busy"],
            categories: admin,
            summary: "Synchronously saves the database(s) to disk and shuts down the Redis server "
                + "(refused by Tern: stop a node with SIGTERM).", group: "server"),
        CommandSpec(
            "debug", arity: -2, flags: ["admin", "noscript", "loading", "stale"], categories: admin,
            summary: "A container for debugging commands (refused by Tern).", group: "server"),
        CommandSpec(
            "wait", arity: 3, flags: ["noscript"], categories: ["@slow", "@connection"],
            summary:
                "Blocks until the asynchronous replication of all preceding write commands sent by the connection is completed.",
            since: "3.0.0", group: "generic"),
        CommandSpec(
            "function", arity: -2, flags: [], categories: ["@slow"],
            summary: "A container for function commands.",
            since: "7.0.0", group: "scripting",
            subcommands: [
                sub(
                    "function|list", -2, ["noscript"], ["@slow", "@scripting"],
                    "Returns information about all libraries.",
                    since: "7.0.0", group: "scripting"),
                sub(
                    "function|flush", -2, ["write", "noscript"], ["@write", "@slow", "@scripting"],
                    "Deletes all libraries and functions.", since: "7.0.0", group: "scripting"),
            ]),
        CommandSpec(
            "multi", arity: 1, flags: ["noscript", "loading", "stale", "fast", "allow_busy"],
            categories: ["@fast", "@transaction"], summary: "Starts a transaction (refused by Tern).",
            since: "1.2.0",
            group: "transactions"),
        CommandSpec(
            "exec", arity: 1, flags: ["noscript", "loading", "stale", "skip_slowlog"],
            categories: ["@slow", "@transaction"],
            summary: "Executes all commands in a transaction.", since: "1.2.0", group: "transactions"),
        CommandSpec(
            "discard", arity: 1, flags: ["noscript", "loading", "stale", "fast", "allow_busy"],
            categories: ["@fast", "@transaction"], summary: "Discards a transaction.", since: "2.0.0",
            group: "transactions"),
        CommandSpec(
            "watch", arity: -2, flags: ["noscript", "loading", "stale", "fast", "allow_busy"],
            keys: (1, -1, 1),
            categories: ["@fast", "@transaction"], keySpec: ["RO"],
            summary:
                "Monitors changes to keys to determine the execution of a transaction (refused by Tern).",
            since: "2.2.0", group: "transactions"),
        CommandSpec(
            "unwatch", arity: 1, flags: ["noscript", "loading", "stale", "fast", "allow_busy"],
            categories: ["@fast", "@transaction"],
            summary: "Forgets about watched keys of a transaction (refused by Tern).",
            since: "2.2.0", group: "transactions"),
        CommandSpec(
            "get", arity: 2, flags: ["readonly", "fast"], keys: (1, 1, 1), categories: readFast,
            keySpec: ["RO", "access"], summary: "Returns the string value of a key.", group: "string"),
        CommandSpec(
            "strlen", arity: 2, flags: ["readonly", "fast"], keys: (1, 1, 1), categories: readFast,
            keySpec: ["RO"],
            summary: "Returns the length of a string value.", since: "2.2.0", group: "string"),
        CommandSpec(
            "exists", arity: -2, flags: ["readonly", "fast"], keys: (1, -1, 1),
            categories: ["@keyspace", "@read", "@fast"], keySpec: ["RO"],
            summary: "Determines whether one or more keys exist.", group: "generic"),
        CommandSpec(
            "mget", arity: -2, flags: ["readonly", "fast"], keys: (1, -1, 1), categories: readFast,
            keySpec: ["RO", "access"],
            summary: "Atomically returns the string values of one or more keys (per key in Tern).",
            group: "string"),
        CommandSpec(
            "set", arity: -3, flags: ["write", "denyoom"], keys: (1, 1, 1),
            categories: ["@write", "@string", "@slow"],
            keySpec: ["RW", "access", "update", "variable_flags"],
            summary: "Sets the string value of a key, ignoring its type.", group: "string"),
        CommandSpec(
            "getset", arity: 3, flags: ["write", "denyoom", "fast"], keys: (1, 1, 1), categories: writeFast,
            keySpec: ["RW", "access", "update"],
            summary: "Returns the previous string value of a key after setting it to a new value.",
            group: "string"),
        CommandSpec(
            "mset", arity: -3, flags: ["write", "denyoom"], keys: (1, -1, 2),
            categories: ["@write", "@string", "@slow"],
            keySpec: ["OW", "update"],
            summary: "Creates or modifies the string values of one or more keys (per key in Tern).",
            since: "1.0.1", group: "string"),
        CommandSpec(
            "del", arity: -2, flags: ["write"], keys: (1, -1, 1),
            categories: ["@keyspace", "@write", "@slow"],
            keySpec: ["RM", "delete"], summary: "Deletes one or more keys.", group: "generic"),
        CommandSpec(
            "incr", arity: 2, flags: ["write", "denyoom", "fast"], keys: (1, 1, 1), categories: writeFast,
            keySpec: ["RW", "access", "update"], summary: "Increments the integer value of a key by one.",
            group: "string"),
        CommandSpec(
            "decr", arity: 2, flags: ["write", "denyoom", "fast"], keys: (1, 1, 1), categories: writeFast,
            keySpec: ["RW", "access", "update"], summary: "Decrements the integer value of a key by one.",
            group: "string"),
        CommandSpec(
            "incrby", arity: 3, flags: ["write", "denyoom", "fast"], keys: (1, 1, 1), categories: writeFast,
            keySpec: ["RW", "access", "update"],
            summary: "Increments the integer value of a key by a number.", group: "string"),
        CommandSpec(
            "decrby", arity: 3, flags: ["write", "denyoom", "fast"], keys: (1, 1, 1), categories: writeFast,
            keySpec: ["RW", "access", "update"],
            summary: "Decrements a number from the integer value of a key.", group: "string"),
        CommandSpec(
            "append", arity: 3, flags: ["write", "denyoom", "fast"], keys: (1, 1, 1), categories: writeFast,
            keySpec: ["RW", "insert"], summary: "Appends a string to the value of a key.", since: "2.0.0",
            group: "string"),
    ]
}

extension CommandSpec {
    /// Redis 7.0's tips for the commands Tern serves (COMMAND INFO's eighth field).
    static let redisTips: [String: [String]] = [
        "ping": ["request_policy:all_shards", "response_policy:all_succeeded"],
        "info": ["nondeterministic_output", "request_policy:all_shards", "response_policy:special"],
        "command": ["nondeterministic_output_order"],
        "command|info": ["nondeterministic_output_order"],
        "command|docs": ["nondeterministic_output_order"],
        "command|list": ["nondeterministic_output_order"],
        "config|set": ["request_policy:all_nodes", "response_policy:all_succeeded"],
        "client|info": ["nondeterministic_output"],
        "client|list": ["nondeterministic_output"],
        "exists": ["request_policy:multi_shard", "response_policy:agg_sum"],
        "mget": ["request_policy:multi_shard"],
        "mset": ["request_policy:multi_shard", "response_policy:all_succeeded"],
        "del": ["request_policy:multi_shard", "response_policy:agg_sum"],
        "time": ["nondeterministic_output"],
        "lastsave": ["nondeterministic_output"],
        "wait": ["request_policy:all_shards", "response_policy:agg_min"],
        "function|list": ["nondeterministic_output_order"],
        "function|flush": ["request_policy:all_shards", "response_policy:all_succeeded"],
        "script|flush": ["request_policy:all_nodes", "response_policy:all_succeeded"],
    ]

    /// `self` with Redis's tips for it and its subcommands.
    func withRedisTips() -> CommandSpec {
        var c = self
        c.tips = Self.redisTips[name] ?? []
        c.subcommands = subcommands.map { $0.withRedisTips() }
        return c
    }
}

/// The whole table: the Redis commands and every module's, looked up by name.
public struct CommandTable: Sendable {
    public let commands: [CommandSpec]
    let byName: [String: CommandSpec]

    /// The commands Redis 7.0 flags `movablekeys` (their keys are counted or found by keyword).
    static let movableKeys: Set<String> = [
        "zunionstore", "zinterstore", "zdiffstore", "zunion", "zinter", "zdiff", "zintercard", "sintercard",
        "lmpop", "zmpop", "blmpop", "bzmpop", "xread", "xreadgroup", "georadius", "georadiusbymember", "sort",
        "sort_ro", "eval", "evalsha", "eval_ro", "evalsha_ro",
    ]

    public init(modules: [any CommandModule]) {
        var all = (CommandSpec.redis + [CommandSpec.acl]).map { $0.withRedisTips() }
        let known = Set(all.map(\.name))
        all += CommandProcessor.dataSpecs.filter { !known.contains($0.name) }
        all += CommandProcessor.streamSpecs.filter { !known.contains($0.name) }
        for m in modules { all += m.commandSpecs }
        // Redis's `movablekeys`: the commands whose key positions depend on their arguments.
        for i in all.indices
        where Self.movableKeys.contains(all[i].name) && !all[i].flags.contains("movablekeys") {
            all[i].flags.append("movablekeys")
        }
        commands = all
        var index: [String: CommandSpec] = [:]
        for c in all {
            index[c.name] = c
            for s in c.subcommands { index[s.name] = s }
        }
        byName = index
    }

    /// The entry for `name` (lowercase; `container|sub` for a subcommand).
    public func spec(_ name: String) -> CommandSpec? { byName[name] }

    /// The entry that counts a call of `args` (the subcommand's when there is one): its name is
    /// what INFO commandstats shows.
    public func spec(for args: [[UInt8]]) -> CommandSpec? {
        guard let first = args.first else { return nil }
        let name = String(decoding: first, as: UTF8.self).lowercased()
        guard let top = byName[name] else { return nil }
        if !top.subcommands.isEmpty, args.count >= 2 {
            let sub = name + "|" + String(decoding: args[1], as: UTF8.self).lowercased()
            if let s = byName[sub] { return s }
        }
        return top
    }
}
