import NIOCore
import TernConsensus
import TernCore
import TernPlacement
import TernRESP
import TernRepair
import TernStorage

/// Settings of the keyspace commands.
public struct KeyspaceOptions: Sendable {
    /// FLUSHALL/FLUSHDB run (`flushall = true` in server.toml, on in `tern dev`); otherwise they
    /// are refused, because one typo would empty a chat service.
    public var flushAllowed = false
    /// How long a listing waits for two campuses' answers.
    public var listTimeout: TimeAmount = .seconds(2)
    /// Keys listed per step of KEYS, DBSIZE and FLUSHALL (each step is one listing round and one
    /// batch of existence reads).
    public var stepKeys = 1024
    public init() {}
}

/// The keyspace commands — SCAN, KEYS, DBSIZE, RANDOMKEY, FLUSHALL/FLUSHDB, UNLINK, TOUCH — as a
/// `CommandModule` on a node (docs/SERVER.md, "Keyspace"). The shell of `KeyspaceScan`: it asks
/// every node of the cluster for its keys of a range of ring buckets (service kind 4), merges the
/// answers of the first two complete campuses, and keeps the keys a linearizable read finds
/// present.
public final class KeyspaceService: CommandModule, @unchecked Sendable {
    // @unchecked Sendable: `pending` and `nextID` are touched on the node's event loop only; the
    // rest is immutable.

    /// The peer service kind of the listing messages.
    public static let serviceKind: UInt8 = 4

    let node: Node
    let options: KeyspaceOptions
    let nodes: [(id: NodeID, campus: Campus)]

    /// One listing waiting for answers. @unchecked Sendable: touched on the node's loop only.
    final class Pending: @unchecked Sendable {
        let promise: EventLoopPromise<(next: Int, keys: [[UInt8]])>
        var answered: [NodeID: (next: Int, keys: [[UInt8]])] = [:]
        var rebuilding: Set<NodeID> = []
        var timeout: Scheduled<Void>?
        init(_ promise: EventLoopPromise<(next: Int, keys: [[UInt8]])>) { self.promise = promise }
    }
    var pending: [UInt64: Pending] = [:]
    var nextID: UInt64 = 0

    public init(node: Node, options: KeyspaceOptions = KeyspaceOptions()) {
        self.node = node
        self.options = options
        nodes = node.map.nodes.map { ($0.id, $0.campus) }
        node.setServiceHandler(Self.serviceKind) { [weak self] from, payload in
            self?.receive(from: from, payload)
        }
    }

    // MARK: - Listing (on the node's loop)

    /// This node's keys of buckets `[from, next)` (one walk of the store's key directory).
    func listLocally(from: Int, want: Int, _ done: @escaping @Sendable (Int, [[UInt8]]) -> Void) {
        node.store.liveKeys(where: { k in
            // Key records are `1 + key`; reserved keys (`\0…`) are the services', but for
            // hash-tag groups, whose members are listed by `present`.
            guard k.count >= 2, k[0] == 1, k[1] != 0 || k.dropFirst().starts(with: KeyLayout.groupPrefix)
            else { return false }
            let position = k.withUnsafeBytes { XXH64.hash(UnsafeRawBufferPointer(rebasing: $0.dropFirst())) }
            return KeyspaceScan.buckets.bucket(ofPosition: position) >= from
        }) { records in
            let l = KeyspaceScan.listing(records.map { Array($0.dropFirst()) }, from: from, want: want)
            done(l.next, l.keys)
        }
    }

    func receive(from peer: NodeID, _ payload: [UInt8]) {
        switch KeyspaceMessage.decode(payload) {
        case .list(let id, let from, let want):
            let voting = !node.core.learnerOnly
            listLocally(from: Int(from), want: Int(want)) { next, keys in
                let reply = KeyspaceMessage.keys(id: id, voting: voting, next: UInt32(next), keys: keys)
                self.node.sendService(Self.serviceKind, reply.encode(), to: peer)
            }
        case .keys(let id, let voting, let next, let keys):
            answer(id, from: peer, voting: voting, next: Int(next), keys: keys)
        case nil:
            node.core.rejectService(from: peer, kind: Self.serviceKind)
        }
    }

    func answer(_ id: UInt64, from peer: NodeID, voting: Bool, next: Int, keys: [[UInt8]]) {
        guard let p = pending[id] else { return }
        if voting { p.answered[peer] = (next, keys) } else { p.rebuilding.insert(peer) }
        guard let listings = KeyspaceScan.complete(nodes: nodes, answered: p.answered) else { return }
        pending[id] = nil
        p.timeout?.cancel()
        p.promise.succeed(KeyspaceScan.merge(listings))
    }

    /// The cluster's keys of buckets `[from, next)` (at least `want` of them unless the ring ends
    /// first), from every node of two campuses; any thread.
    func list(from: Int, want: Int) -> EventLoopFuture<(next: Int, keys: [[UInt8]])> {
        let loop = node.eventLoop
        let promise = loop.makePromise(of: (next: Int, keys: [[UInt8]]).self)
        node.onLoop {
            self.nextID += 1
            let id = self.nextID
            let p = Pending(promise)
            self.pending[id] = p
            let me = self.node.id
            let message = KeyspaceMessage.list(id: id, from: UInt32(from), want: UInt32(want)).encode()
            for n in self.nodes where n.id != me {
                self.node.sendService(Self.serviceKind, message, to: n.id)
            }
            let voting = !self.node.core.learnerOnly
            self.listLocally(from: from, want: want) { next, keys in
                self.node.onLoop { self.answer(id, from: me, voting: voting, next: next, keys: keys) }
            }
            p.timeout = loop.scheduleTask(in: self.options.listTimeout) {
                guard let p = self.pending.removeValue(forKey: id) else { return }
                let silent = self.nodes.filter { p.answered[$0.id] == nil && !p.rebuilding.contains($0.id) }
                var why =
                    "no two campuses answered within \(self.options.listTimeout.nanoseconds / 1_000_000) ms"
                if !silent.isEmpty {
                    why += " (silent: " + silent.map { "n\($0.id.rawValue)" }.joined(separator: ", ") + ")"
                }
                if !p.rebuilding.isEmpty {
                    why +=
                        " (rebuilding: "
                        + p.rebuilding.map { "n\($0.rawValue)" }.sorted().joined(separator: ", ")
                        + ")"
                }
                p.promise.fail(KeyspaceError(reply: .error("NOQUORUM keyspace listing not served: \(why)")))
            }
        }
        return promise.futureResult
    }

    // MARK: - Steps

    /// A key found present, with its value (for TYPE).
    typealias Found = (key: [UInt8], value: StoredValue)

    /// Keeps the keys a linearizable read finds present (deleted keys still have records).
    func present(_ keys: [[UInt8]]) -> EventLoopFuture<[Found]> {
        let loop = node.eventLoop
        guard !keys.isEmpty else { return loop.makeSucceededFuture([]) }
        let reads = keys.map { node.execute(key: $0, .read) }
        return EventLoopFuture.whenAllComplete(reads, on: loop).flatMapThrowing { results in
            var out: [Found] = []
            for (k, r) in zip(keys, results) {
                let reply = (try? r.get()) ?? .unavailable("node stopped")
                guard let v = CommandProcessor.stored(reply) else {
                    throw KeyspaceError(reply: CommandProcessor.failure(reply, write: false))
                }
                if KeyLayout.isGroupKey(k) {
                    // A hash-tag group: its members are the keys (those not yet due; a due one is
                    // removed by the group's next instance or the sweep).
                    out += GroupValue(v?.bytes).live(horizonMs: self.node.expiryHorizonMs())
                    continue
                }
                if let v { out.append((k, v)) }
            }
            return out
        }
    }

    /// One step of a scan: the present keys of buckets `[from, next)` that match `match` and are
    /// of type `type`.
    func step(from: Int, want: Int, match: Glob.Pattern?, type: String?) -> EventLoopFuture<
        (next: Int, keys: [Found])
    > {
        list(from: from, want: want).flatMap { l in
            let candidates =
                match.map { m in l.keys.filter { KeyLayout.isGroupKey($0) || m.matches($0) } } ?? l.keys
            return self.present(candidates).map { all in
                // A group's members are matched once it is read.
                let found = match.map { m in all.filter { m.matches($0.key) } } ?? all
                return (l.next, type.map { t in found.filter { Self.typeName(of: $0.value) == t } } ?? found)
            }
        }
    }

    /// Steps from bucket 0 to the ring's end, folding each step's keys into `into`.
    func walk<T: Sendable>(
        _ initial: T, match: Glob.Pattern? = nil, from: Int = 0,
        to end: Int = KeyspaceScan.bucketCount,
        _ fold: @escaping @Sendable (inout T, [Found]) -> EventLoopFuture<Void>?
    ) -> EventLoopFuture<T> {
        step(from: from, want: options.stepKeys, match: match, type: nil).flatMap { s in
            var acc = initial
            let extra = fold(&acc, s.keys)
            let more = s.next < end
            let after = extra ?? self.node.eventLoop.makeSucceededVoidFuture()
            return after.flatMap { [acc] _ in
                more
                    ? self.walk(acc, match: match, from: s.next, to: end, fold)
                    : self.node.eventLoop.makeSucceededFuture(acc)
            }
        }
    }

    /// TYPE's name for a stored value (the one place SCAN TYPE asks).
    static func typeName(of value: StoredValue) -> String { value.kind.name }

    // MARK: - Commands

    public var commandSpecs: [CommandSpec] {
        Self.specs + Self.crossKeySpecs + Self.crossKeyWriteSpecs + Self.geoSpecs + Self.sortSpecs
    }

    public func plan(name: String, args: [[UInt8]], session: inout Session) -> CommandPlan? {
        let n = args.count
        switch name {
        case "scan":
            guard n >= 2 else { return .reply(CommandProcessor.arity(name)) }
            return scan(args)
        case "keys":
            guard n == 2 else { return .reply(CommandProcessor.arity(name)) }
            let units = Glob.Pattern(args[1])
            return barrier {
                self.walk([RESPValue](), match: units) { acc, found in
                    acc += found.map { .bulkString($0.key) }
                    return nil
                }.map { .array($0) }
            }
        case "dbsize":
            guard n == 1 else { return .reply(CommandProcessor.arity(name)) }
            return barrier {
                self.walk(Int64(0)) { acc, found in
                    acc += Int64(found.count)
                    return nil
                }.map { .integer($0) }
            }
        case "randomkey":
            guard n == 1 else { return .reply(CommandProcessor.arity(name)) }
            return barrier { self.randomKey() }
        case "flushall", "flushdb":
            guard n <= 2 else { return .reply(CommandProcessor.syntax) }
            if n == 2 {
                let mode = String(decoding: args[1], as: UTF8.self).uppercased()
                guard mode == "ASYNC" || mode == "SYNC" else { return .reply(CommandProcessor.syntax) }
            }
            guard options.flushAllowed else {
                return .reply(
                    CommandProcessor.err(
                        "\(name.uppercased()) is disabled on this server: it deletes every key of the cluster. "
                            + "Set flushall = true in server.toml's [server] section to allow it"))
            }
            return barrier { self.flush() }
        case "rename", "renamenx":
            guard n == 3 else { return .reply(CommandProcessor.arity(name)) }
            let (from, to, nx) = (args[1], args[2], name == "renamenx")
            return barrier { self.rename(from, to, onlyIfAbsent: nx) }
        case "copy":
            guard n >= 3 else { return .reply(CommandProcessor.arity(name)) }
            var replace = false
            var i = 3
            while i < n {
                switch String(decoding: args[i], as: UTF8.self).uppercased() {
                case "REPLACE": replace = true
                case "DB" where i + 1 < n:
                    guard let db = KeyValue.strictInteger(args[i + 1]) else {
                        return .reply(CommandProcessor.notInteger)
                    }
                    guard db == 0 else { return .reply(CommandProcessor.err("DB index is out of range")) }
                    i += 1
                default: return .reply(CommandProcessor.syntax)
                }
                i += 1
            }
            let (from, to, overwrite) = (args[1], args[2], replace)
            return barrier { self.copy(from, to, replace: overwrite) }
        case "unlink":
            guard n >= 2 else { return .reply(CommandProcessor.arity(name)) }
            // The data model's `del` (not `.remove`), so UNLINK raises Redis's `del` event.
            return .requests(args.dropFirst().map { ($0, .write(.data([Array("del".utf8), $0]))) }) {
                replies in
                var count: Int64 = 0
                for r in replies {
                    guard case .done(let res) = r else { return CommandProcessor.failure(r, write: true) }
                    if res == .data(.integer(1)) { count += 1 }
                }
                return .integer(count)
            }
        case "touch":
            guard n >= 2 else { return .reply(CommandProcessor.arity(name)) }
            return .requests(args.dropFirst().map { ($0, .read) }) { replies in
                var count: Int64 = 0
                for r in replies {
                    guard let v = CommandProcessor.stored(r) else {
                        return CommandProcessor.failure(r, write: false)
                    }
                    if v != nil { count += 1 }
                }
                return .integer(count)
            }
        default:
            return geoPlan(name, args, session) ?? crossKeyPlan(name, args, session)
                ?? crossKeyWritePlan(name, args) ?? sortPlan(name, args, session)
        }
    }

    /// A plan whose failure (a `KeyspaceError`) becomes its reply.
    func barrier(_ make: @escaping @Sendable () -> EventLoopFuture<RESPValue>) -> CommandPlan {
        .barrier {
            make().flatMapErrorThrowing { error in
                if let e = error as? KeyspaceError { return e.reply }
                throw error
            }
        }
    }

    /// SCAN cursor [MATCH pattern] [COUNT count] [TYPE type].
    func scan(_ args: [[UInt8]]) -> CommandPlan {
        guard let cursor = KeyspaceScan.parseCursor(args[1]) else {
            // Past the last bucket: nothing left.
            return .reply(.array([.bulkString("0"), .array([])]))
        }
        guard let from = cursor else { return .reply(CommandProcessor.err("invalid cursor")) }
        var match: Glob.Pattern?
        var count = 10
        var type: String?
        var i = 2
        while i < args.count {
            guard i + 1 < args.count else { return .reply(CommandProcessor.syntax) }
            switch String(decoding: args[i], as: UTF8.self).uppercased() {
            case "MATCH":
                // `*` matches everything: no filter.
                match = args[i + 1] == Array("*".utf8) ? nil : Glob.Pattern(args[i + 1])
            case "COUNT":
                guard let c = KeyValue.strictInteger(args[i + 1]) else {
                    return .reply(CommandProcessor.notInteger)
                }
                guard c >= 1 else { return .reply(CommandProcessor.syntax) }
                count = Int(min(c, 1 << 20))
            case "TYPE":
                type = String(decoding: args[i + 1], as: UTF8.self).lowercased()
            default:
                return .reply(CommandProcessor.syntax)
            }
            i += 2
        }
        let (want, units, kind) = (count, match, type)
        return barrier {
            self.step(from: from, want: want, match: units, type: kind).map { s in
                .array([
                    .bulkString(Array(KeyspaceScan.cursorText(next: s.next).utf8)),
                    .array(s.keys.map { .bulkString($0.key) }),
                ])
            }
        }
    }

    /// RANDOMKEY: the present keys of the first non-empty step from a random bucket (wrapping
    /// once), one of them at random; nil when the keyspace is empty.
    func randomKey() -> EventLoopFuture<RESPValue> {
        let start = Int.random(in: 0..<KeyspaceScan.bucketCount)
        let loop = node.eventLoop
        @Sendable func from(_ b: Int, wrapped: Bool) -> EventLoopFuture<RESPValue> {
            let end = wrapped ? start : KeyspaceScan.bucketCount
            return step(from: b, want: 16, match: nil, type: nil).flatMap { s in
                if let k = s.keys.randomElement() { return loop.makeSucceededFuture(.bulkString(k.key)) }
                if s.next < end { return from(s.next, wrapped: wrapped) }
                if !wrapped && start > 0 { return from(0, wrapped: true) }
                return loop.makeSucceededFuture(.bulkString(nil))
            }
        }
        return from(start, wrapped: false)
    }

    /// The value of `key` by a linearizable read (nil: absent), typed or not.
    func read(_ key: [UInt8]) -> EventLoopFuture<StoredValue?> { readAll([key]).map { $0[0] } }

    /// Writes `v` (kind, deadline and bytes) as `key`'s value, unless `key` exists and not
    /// `replace`; whether it was written.
    /// `event` is the keyspace event the write raises (`copy_to` when nil; docs/PUBSUB.md).
    func place(_ key: [UInt8], _ v: StoredValue, replace: Bool, event: String? = nil) -> EventLoopFuture<Bool>
    {
        var args: [[UInt8]] = [
            Array("copyvalue".utf8), key, Array(String(v.kind.rawValue).utf8),
            Array(String(v.deadlineMs).utf8),
            v.bytes,
        ]
        if replace || event != nil { args.append(Array((replace ? "replace" : "-").utf8)) }
        if let event { args.append(Array(event.utf8)) }
        return write(key, .data(args)).map { $0 == .data(.integer(1)) }
    }

    /// One write; its result, or its failure as the reply.
    func write(_ key: [UInt8], _ op: Operation) -> EventLoopFuture<OperationResult> {
        node.execute(key: key, .write(op)).flatMapThrowing { r in
            guard case .done(let result) = r else {
                throw KeyspaceError(reply: CommandProcessor.failure(r, write: true))
            }
            return result
        }
    }

    /// RENAME / RENAMENX: read the source, write the destination (kind, TTL and value), delete
    /// the source — three linearizable steps on two Paxos keys, **not atomic**: a reader may see
    /// both keys between the second and third step, and a write to the source between the first
    /// and third is lost.
    func rename(_ from: [UInt8], _ to: [UInt8], onlyIfAbsent: Bool) -> EventLoopFuture<RESPValue> {
        read(from).flatMap { v -> EventLoopFuture<RESPValue> in
            guard let v else {
                return self.node.eventLoop.makeSucceededFuture(CommandProcessor.err("no such key"))
            }
            if from == to { return self.node.eventLoop.makeSucceededFuture(onlyIfAbsent ? .integer(0) : .ok) }
            return self.place(to, v, replace: !onlyIfAbsent, event: "rename_to").flatMap { written in
                guard written else { return self.node.eventLoop.makeSucceededFuture(.integer(0)) }
                return self.write(from, .data([Array("del".utf8), from, Array("rename_from".utf8)])).map {
                    _ in
                    onlyIfAbsent ? .integer(1) : .ok
                }
            }
        }
    }

    /// COPY: read the source, write the destination (unless it exists, without REPLACE); two
    /// linearizable steps, not one. The copy keeps the source's kind and TTL.
    func copy(_ from: [UInt8], _ to: [UInt8], replace: Bool) -> EventLoopFuture<RESPValue> {
        if from == to {
            return node.eventLoop.makeSucceededFuture(
                CommandProcessor.err("source and destination objects are the same"))
        }
        return read(from).flatMap { v -> EventLoopFuture<RESPValue> in
            guard let v else { return self.node.eventLoop.makeSucceededFuture(.integer(0)) }
            return self.place(to, v, replace: replace).map { $0 ? .integer(1) : .integer(0) }
        }
    }

    /// FLUSHALL: every present key deleted through the protocol, step by step.
    func flush() -> EventLoopFuture<RESPValue> {
        let loop = node.eventLoop
        return walk(()) { _, found in
            guard !found.isEmpty else { return nil }
            let deletes = found.map { self.node.execute(key: $0.key, .write(.remove)) }
            return EventLoopFuture.whenAllComplete(deletes, on: loop).flatMapThrowing { results in
                for r in results {
                    let reply = (try? r.get()) ?? .unavailable("node stopped")
                    guard case .done = reply else {
                        throw KeyspaceError(reply: CommandProcessor.failure(reply, write: true))
                    }
                }
            }
        }.map { .ok }
    }
}

extension CommandProcessor {
    /// What a connection may still send after a refused `SELECT n`.
    static let withoutDatabase: Set<String> = [
        "select", "quit", "reset", "auth", "hello", "ping", "echo", "client", "info", "command",
    ]

    /// The refusal of a command on a connection whose `SELECT n` was refused.
    static func missingDatabase(_ db: Int64) -> RESPValue {
        err(
            "not run: this connection selected database \(db), which does not exist (Tern has one "
                + "database, 0); send SELECT 0 to use it")
    }
}

/// A keyspace command failed with this reply.
struct KeyspaceError: Error {
    var reply: RESPValue
}

extension KeyspaceService {
    /// Redis 7.0's entries (COMMAND INFO of redis-server 7.0.15).
    static let specs: [CommandSpec] = {
        func tipped(_ s: CommandSpec, _ tips: [String]) -> CommandSpec {
            var s = s
            s.tips = tips
            return s
        }
        return [
            tipped(
                CommandSpec(
                    "scan", arity: -2, flags: ["readonly"], categories: ["@keyspace", "@read", "@slow"],
                    summary: "Incrementally iterate the keys space.", since: "2.8.0", group: "generic"),
                ["nondeterministic_output", "request_policy:special"]),
            tipped(
                CommandSpec(
                    "keys", arity: 2, flags: ["readonly"],
                    categories: ["@keyspace", "@read", "@slow", "@dangerous"],
                    summary: "Find all keys matching the given pattern.", group: "generic"),
                ["request_policy:all_shards", "nondeterministic_output_order"]),
            tipped(
                CommandSpec(
                    "dbsize", arity: 1, flags: ["readonly", "fast"],
                    categories: ["@keyspace", "@read", "@fast"],
                    summary: "Return the number of keys in the selected database.", group: "server"),
                ["request_policy:all_shards", "response_policy:agg_sum"]),
            tipped(
                CommandSpec(
                    "randomkey", arity: 1, flags: ["readonly"], categories: ["@keyspace", "@read", "@slow"],
                    summary: "Return a random key from the keyspace.", group: "generic"),
                ["request_policy:all_shards", "nondeterministic_output"]),
            tipped(
                CommandSpec(
                    "flushall", arity: -1, flags: ["write"],
                    categories: ["@keyspace", "@write", "@slow", "@dangerous"],
                    summary: "Remove all keys from all databases.", group: "server"),
                ["request_policy:all_shards", "response_policy:all_succeeded"]),
            tipped(
                CommandSpec(
                    "flushdb", arity: -1, flags: ["write"],
                    categories: ["@keyspace", "@write", "@slow", "@dangerous"],
                    summary: "Remove all keys from the current database.", group: "server"),
                ["request_policy:all_shards", "response_policy:all_succeeded"]),
            CommandSpec(
                "rename", arity: 3, flags: ["write"], keys: (1, 2, 1),
                categories: ["@keyspace", "@write", "@slow"],
                keySpec: ["RW"], summary: "Rename a key.", group: "generic"),
            CommandSpec(
                "renamenx", arity: 3, flags: ["write", "fast"], keys: (1, 2, 1),
                categories: ["@keyspace", "@write", "@fast"], keySpec: ["RW"],
                summary: "Rename a key, only if the new key does not exist.", group: "generic"),
            CommandSpec(
                "copy", arity: -3, flags: ["write", "denyoom"], keys: (1, 2, 1),
                categories: ["@keyspace", "@write", "@slow"],
                keySpec: ["RW"], summary: "Copy a key.", since: "6.2.0", group: "generic"),
            tipped(
                CommandSpec(
                    "unlink", arity: -2, flags: ["write", "fast"], keys: (1, -1, 1),
                    categories: ["@keyspace", "@write", "@fast"], keySpec: ["RM", "delete"],
                    summary:
                        "Delete a key asynchronously in another thread. Otherwise it is just as DEL, but non blocking.",
                    since: "4.0.0", group: "generic"),
                ["request_policy:multi_shard", "response_policy:agg_sum"]),
            tipped(
                CommandSpec(
                    "touch", arity: -2, flags: ["readonly", "fast"], keys: (1, -1, 1),
                    categories: ["@keyspace", "@read", "@fast"], keySpec: ["RO"],
                    summary:
                        "Alters the last access time of a key(s). Returns the number of existing keys specified.",
                    since: "3.2.1", group: "generic"),
                ["request_policy:multi_shard", "response_policy:agg_sum"]),
        ]
    }()
}
