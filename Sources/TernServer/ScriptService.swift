import Crypto
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import TernConsensus
import TernCore
import TernRESP

/// The scripts this node has seen (EVAL, SCRIPT LOAD), by SHA-1, for EVALSHA. Per node, as in
/// Redis Cluster: a script loaded through one node is not known to the others.
public final class ScriptCache: Sendable {
    private let scripts = NIOLockedValueBox<[String: [UInt8]]>([:])

    public init() {}

    static func sha1(_ body: [UInt8]) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        for b in Insecure.SHA1.hash(data: body) {
            out.append(digits[Int(b >> 4)])
            out.append(digits[Int(b & 15)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Keeps `body`; its SHA-1.
    @discardableResult
    func add(_ body: [UInt8]) -> String {
        let sha = Self.sha1(body)
        scripts.withLockedValue { $0[sha] = body }
        return sha
    }

    func body(_ sha: [UInt8]) -> [UInt8]? {
        let key = String(decoding: sha, as: UTF8.self).lowercased()
        return scripts.withLockedValue { $0[key] }
    }

    func flush() { scripts.withLockedValue { $0.removeAll() } }
}

/// One running script's stop flag (SCRIPT KILL sets it; the script's instruction hook reads it).
final class ScriptKillSwitch: Sendable {
    private let killed = NIOLockedValueBox(false)
    var isKilled: Bool { killed.withLockedValue { $0 } }
    func kill() { killed.withLockedValue { $0 = true } }
}

/// The scripts running on this node (SCRIPT KILL's view).
final class RunningScripts: Sendable {
    private let running = NIOLockedValueBox<[ObjectIdentifier: ScriptKillSwitch]>([:])
    func add(_ k: ScriptKillSwitch) { running.withLockedValue { $0[ObjectIdentifier(k)] = k } }
    func remove(_ k: ScriptKillSwitch) { running.withLockedValue { $0[ObjectIdentifier(k)] = nil } }
    /// Stops every running script; whether there was one.
    func killAll() -> Bool {
        let all = running.withLockedValue { $0.values }
        for k in all { k.kill() }
        return !all.isEmpty
    }
}

/// Lua scripting (docs/SCRIPTING.md): `EVAL`, `EVALSHA`, `EVAL_RO`, `EVALSHA_RO`, `SCRIPT
/// LOAD/EXISTS/FLUSH/KILL/HELP`.
///
/// A script runs on the keys it declares, which must be one Paxos key (one key, or keys of one
/// hash-tag group), like a transaction. It is **atomic and linearizable**, by optimistic
/// execution with effects replication:
/// 1. the declared keys are read (linearizably);
/// 2. the script runs on this node against a local copy of them — each `redis.call` is planned
///    as the command would be inside MULTI and applied to the copy by the data model that the
///    replicas use (`GroupValue.applyScriptStep`), so the script sees its own writes;
/// 3. if it changed anything (or read several members of a group), one write carries the keys'
///    new values, guarded by the fingerprints of the values it read (WATCH's guard) — applied as
///    one Paxos instance only if none of them changed since; otherwise the script runs again on
///    fresh values (at most 16 times).
///
/// So a script's effects apply exactly once or not at all, and its reply is the one its effects
/// went with.
public struct ScriptService: CommandModule {
    let node: Node
    /// The command planner (a copy of the server's processor, for its data commands, key layout
    /// and clock).
    let planner: CommandProcessor
    let cache: ScriptCache
    /// Where the commands a script runs are counted (INFO commandstats), set by the front end.
    let innerCalls: NIOLockedValueBox<(@Sendable ([[UInt8]], RESPValue) -> Void)?>
    /// How long a script may run before Tern stops it (ms): a cap, not Redis's `lua-time-limit`
    /// (after which Redis answers BUSY to everyone; a Tern script runs off the event loop and the
    /// node goes on serving, docs/SCRIPTING.md).
    let stopAfterMs: Int
    /// The scripts running now, for SCRIPT KILL.
    let running = RunningScripts()
    /// Where scripts run: one thread beside the event loop, so a long script never stops the node.
    let pool: NIOThreadPool

    public init(
        node: Node, planner: CommandProcessor, cache: ScriptCache = ScriptCache(), stopAfterMs: Int = 60_000
    ) {
        self.node = node
        self.planner = planner
        self.cache = cache
        innerCalls = NIOLockedValueBox(nil)
        self.stopAfterMs = stopAfterMs
        pool = ScriptService.sharedPool
    }

    /// Counts the commands scripts run with `sink` (the front end's INFO counters).
    public func countInnerCalls(_ sink: @escaping @Sendable ([[UInt8]], RESPValue) -> Void) {
        innerCalls.withLockedValue { $0 = sink }
    }

    static let attemptsMax = 16

    /// One scripting thread per process (every node of a loopback test cluster shares it).
    static let sharedPool: NIOThreadPool = {
        let p = NIOThreadPool(numberOfThreads: 1)
        p.start()
        return p
    }()

    // MARK: - Commands

    public var commandSpecs: [CommandSpec] {
        func spec(_ name: String, write: Bool) -> CommandSpec {
            var s = CommandSpec(
                name, arity: -3,
                flags: write
                    ? [
                        "noscript", "stale", "skip_monitor", "may_replicate", "no_mandatory_keys",
                        "movablekeys",
                    ]
                    : ["noscript", "stale", "skip_monitor", "no_mandatory_keys", "movablekeys"],
                keys: (0, 0, 0), categories: ["@slow", "@scripting"],
                summary: "Runs a Lua script on the keys it declares, atomically (docs/SCRIPTING.md).",
                since: name.hasSuffix("_ro") ? "7.0.0" : "2.6.0", group: "scripting")
            s.keySpecFlags = []
            return s
        }
        func sub(_ name: String, _ arity: Int) -> CommandSpec {
            CommandSpec(
                "script|" + name, arity: arity, flags: ["noscript"], categories: ["@slow", "@scripting"],
                summary: "SCRIPT \(name.uppercased())", since: "2.6.0", group: "scripting")
        }
        return [
            spec("eval", write: true), spec("evalsha", write: true), spec("eval_ro", write: false),
            spec("evalsha_ro", write: false),
            CommandSpec(
                "script", arity: -2, flags: [], categories: ["@slow"], summary: "Manages the script cache.",
                since: "2.6.0", group: "scripting",
                subcommands: [
                    sub("load", 3), sub("exists", -3), sub("flush", -2), sub("kill", 2), sub("help", 2),
                ]),
        ]
    }

    /// EVAL's key positions (COMMAND GETKEYS): `numkeys` keys after the script.
    static func keyPositions(_ name: String, _ args: [[UInt8]]) -> [Int]? {
        guard ["eval", "evalsha", "eval_ro", "evalsha_ro"].contains(name) else { return nil }
        guard args.count >= 3, let n = KeyValue.strictInteger(args[2]), n >= 0, Int(n) <= args.count - 3
        else {
            return []
        }
        return Array(3..<(3 + Int(n)))
    }

    public func plan(name: String, args: [[UInt8]], session: inout Session) -> CommandPlan? {
        switch name {
        case "eval", "evalsha", "eval_ro", "evalsha_ro":
            guard args.count >= 3 else { return .reply(CommandProcessor.arity(name)) }
            return eval(name, args, session)
        case "script":
            guard args.count >= 2 else { return .reply(CommandProcessor.arity(name)) }
            return script(args)
        default:
            return nil
        }
    }

    func script(_ args: [[UInt8]]) -> CommandPlan {
        let sub = CommandProcessor.word(args[1])
        switch sub {
        case "load":
            guard args.count == 3 else { return .reply(CommandProcessor.arity("script|load")) }
            return .reply(.bulkString(cache.add(args[2])))
        case "exists":
            guard args.count >= 3 else { return .reply(CommandProcessor.arity("script|exists")) }
            return .reply(.array(args.dropFirst(2).map { .integer(cache.body($0) == nil ? 0 : 1) }))
        case "flush":
            if args.count > 2
                && (args.count > 3 || !["sync", "async"].contains(CommandProcessor.word(args[2])))
            {
                return .reply(CommandProcessor.err("SCRIPT FLUSH only support SYNC|ASYNC option"))
            }
            cache.flush()
            return .reply(.ok)
        case "kill":
            // A script's writes are its commit, after it ends: a running script has written
            // nothing, so it can always be killed (Redis refuses once a script wrote: UNKILLABLE).
            guard args.count == 2 else { return .reply(CommandProcessor.arity("script|kill")) }
            return .reply(running.killAll() ? .ok : .error("NOTBUSY No scripts in execution right now."))
        case "help":
            return .reply(
                .array(
                    [
                        "SCRIPT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                        "EXISTS <sha1> [<sha1> ...]",
                        "    Return information about the existence of the scripts.",
                        "FLUSH [ASYNC|SYNC]", "    Flush the Lua scripts cache.", "KILL",
                        "    Kill the currently executing Lua script.", "LOAD <script>",
                        "    Load a script into the scripts cache without executing it.", "HELP",
                        "    Print this help.",
                    ].map { .simpleString($0) }))
        default:
            return .reply(
                CommandProcessor.err(
                    "unknown subcommand '\(String(decoding: args[1].prefix(128), as: UTF8.self))'. Try SCRIPT HELP."
                ))
        }
    }

    func eval(_ name: String, _ args: [[UInt8]], _ session: Session) -> CommandPlan {
        guard let n = KeyValue.strictInteger(args[2]) else { return .reply(CommandProcessor.notInteger) }
        guard n >= 0 else { return .reply(CommandProcessor.err("Number of keys can't be negative")) }
        guard n <= args.count - 3 else {
            return .reply(CommandProcessor.err("Number of keys can't be greater than number of args"))
        }
        let body: [UInt8]
        let sha: String
        if name.hasPrefix("evalsha") {
            guard let b = cache.body(args[1]) else {
                return .reply(.error("NOSCRIPT No matching script. Please use EVAL."))
            }
            body = b
            sha = String(decoding: args[1], as: UTF8.self).lowercased()
        } else {
            body = args[1]
            sha = cache.add(body)
        }
        let api: LuaAPI
        switch LuaAPI.shared {
        case .success(let a): api = a
        case .failure(let why):
            return .reply(CommandProcessor.err("scripting is not available on this node: \(why.reason)"))
        }
        let keys = Array(args[3..<(3 + Int(n))])
        let argv = Array(args[(3 + Int(n))...])
        if let long = keys.first(where: { $0.count > ReplicaNode.keyBytesMax }) {
            return .reply(CommandProcessor.failure(.keyTooLong(long.count), write: false))
        }
        if let refusal = CommandProcessor.reservedKeyRefusal("eval", [Array("eval".utf8)] + keys) {
            return .reply(refusal)
        }
        let layout = planner.keyLayout
        guard Set(keys.map(layout.paxosKey)).count <= 1 else { return .reply(planner.crossKeyError) }
        let readOnly = name.hasSuffix("_ro")
        let run = ScriptAttempt(
            service: self, api: api, body: body, sha: sha, keys: keys, argv: argv, readOnly: readOnly,
            session: session)
        return .barrier { run.attempt(1) }
    }
}

/// One EVAL: read, run, commit, and again while the keys changed under it.
struct ScriptAttempt: Sendable {
    let service: ScriptService
    let api: LuaAPI
    let body: [UInt8]
    let sha: String
    let keys: [[UInt8]]
    let argv: [[UInt8]]
    let readOnly: Bool
    /// The caller's session: its ACL user's rules apply to every command the script runs.
    let session: Session

    var node: Node { service.node }

    func attempt(_ n: Int) -> EventLoopFuture<RESPValue> {
        let loop = node.eventLoop
        return KeyspaceService.readAll(keys, on: node).flatMap { snapshot in
            // The script runs on the scripting thread; the node's loop goes on meanwhile.
            let kill = ScriptKillSwitch()
            self.service.running.add(kill)
            return self.service.pool.runIfActive(eventLoop: loop) { self.run(snapshot, kill) }
                .always { _ in self.service.running.remove(kill) }
                .flatMap { ran in self.finish(n, snapshot, ran) }
        }.flatMapErrorThrowing { error in
            if let e = error as? KeyspaceError { return e.reply }
            throw error
        }
    }

    /// The script's local copy of its keys' values.
    func localCopy(_ snapshot: [StoredValue?]) -> GroupValue {
        var local = GroupValue()
        for (k, v) in zip(keys, snapshot) { local.set(k, v) }
        return local
    }

    func finish(
        _ n: Int, _ snapshot: [StoredValue?], _ ran: (RESPValue, GroupValue, [([[UInt8]], RESPValue)])
    )
        -> EventLoopFuture<RESPValue>
    {
        let loop = node.eventLoop
        let (result, local, calls) = ran
        // What changed, as the keys' whole new values.
        var changed: [[UInt8]] = []
        for (k, before) in zip(self.keys, snapshot)
        where DataModel.digest(local.member(k)) != DataModel.digest(before) {
            changed.append(k)
        }
        if changed.isEmpty && Set(self.keys).count <= 1 {
            self.count(calls)
            return loop.makeSucceededFuture(result)
        }
        let (key, op) = self.commit(snapshot, local, changed)
        return node.execute(key: key, .write(op)).flatMap { r in
            switch r {
            case .done(.data(.array(nil))):
                guard n < ScriptService.attemptsMax else {
                    return loop.makeSucceededFuture(
                        CommandProcessor.err(
                            "the script's keys kept changing while it ran (\(n) attempts): try again"))
                }
                return self.attempt(n + 1)
            case .done(.data(.array(_?))):
                self.count(calls)
                return loop.makeSucceededFuture(result)
            case .done(.data(let other)):
                return loop.makeSucceededFuture(CommandProcessor.resp(other, false))
            default:
                return loop.makeSucceededFuture(CommandProcessor.failure(r, write: true))
            }
        }
    }

    /// Counts the commands the script ran (once, for the attempt whose effects applied).
    func count(_ calls: [([[UInt8]], RESPValue)]) {
        guard let sink = service.innerCalls.withLockedValue({ $0 }) else { return }
        for (args, reply) in calls { sink(args, reply) }
    }

    /// Runs the script on a local copy of `snapshot`: its reply, the copy after it, and the
    /// commands it ran with their replies.
    func run(_ snapshot: [StoredValue?], _ kill: ScriptKillSwitch) -> (
        RESPValue, GroupValue, [([[UInt8]], RESPValue)]
    ) {
        var local = localCopy(snapshot)
        let declared = Set(keys)
        let planner = service.planner
        let nowMs = UInt64(max(0, planner.clock() / 1000))
        var calls: [([[UInt8]], RESPValue)] = []
        var step: UInt64 = 0
        let (result, stopped) = LuaRun.run(
            api: api, body: body, sha: sha, keys: keys, argv: argv, stopAfterMs: service.stopAfterMs,
            kill: kill
        ) { args in
            let name = String(decoding: args[0], as: UTF8.self).lowercased()
            if let refusal = planner.aclRefusal(name, args, self.session) {
                calls.append((args, refusal))
                return refusal
            }
            var inside = Session(authenticated: true)
            inside.transaction = []
            let planned =
                planner.crossCall(name, args, inside).map { CommandProcessor.DataPlanned.call($0) }
                ?? planner.dataPlanned(name, args, inside)
            let reply: RESPValue
            switch planned {
            case .call(let c):
                let touched = CommandProcessor.callKeys(c)
                if let outside = touched.first(where: { !declared.contains($0) }) {
                    reply = CommandProcessor.err(
                        "Script attempted to access key '\(String(decoding: outside.prefix(128), as: UTF8.self))' "
                            + "not declared in KEYS: Tern runs a script on the keys it declares (docs/SCRIPTING.md)"
                    )
                } else if c.write && readOnly {
                    reply = CommandProcessor.err("Write commands are not allowed from read-only scripts.")
                } else {
                    step += 1
                    let kind: [UInt8] =
                        CommandProcessor.isCross(c)
                        ? [UInt8(ascii: "x")] : c.write ? [UInt8(ascii: "w")] : [UInt8(ascii: "r")]
                    let r = local.applyScriptStep(kind: kind, key: c.key, c.args, nowMs: nowMs, seed: step)
                    reply = c.convert(r)
                }
            case .plan(.reply(let r)):
                reply = r
            case .plan, nil:
                reply = CommandProcessor.err(
                    "This Redis command is not allowed from script: Tern scripts run data commands on "
                        + "their keys (docs/SCRIPTING.md)")
            }
            calls.append((args, reply))
            return reply
        }
        // A script stopped (its time cap, SCRIPT KILL) changes nothing (one that fails on an error keeps the
        // writes it made before it, as in Redis).
        if stopped { local = localCopy(snapshot) }
        return (result, local, calls)
    }

    /// The write that applies the script's effects if the values it read are unchanged.
    func commit(_ snapshot: [StoredValue?], _ local: GroupValue, _ changed: [[UInt8]]) -> ([UInt8], Operation)
    {
        let layout = service.planner.keyLayout
        let nowText = Array(String(max(0, service.planner.clock() / 1000)).utf8)
        func steps(_ k: [UInt8]) -> [[UInt8]] {
            guard let v = local.member(k) else { return [Array("del".utf8), k] }
            return [
                Array("copyvalue".utf8), k, Array(String(v.kind.rawValue).utf8),
                Array(String(v.deadlineMs).utf8),
                v.bytes, Array("replace".utf8),
            ]
        }
        if let group = keys.first.flatMap(layout.groupKey(of:)) {
            var seen = Set<[UInt8]>()
            var guards: [[UInt8]] = []
            for (k, v) in zip(keys, snapshot) where seen.insert(k).inserted {
                guards += [k, Array(DataModel.digest(v).utf8)]
            }
            var args: [[UInt8]] = [nowText, Array(String(guards.count / 2).utf8)] + guards
            for k in changed {
                let s = steps(k)
                args += [[UInt8(ascii: "w")], k, Array(String(s.count).utf8)] + s
            }
            return (
                group, .group(GroupOperation(.transaction(args), bytesMax: service.planner.maxValueBytes))
            )
        }
        // One key of its own (the only layout where several declared keys cannot reach here).
        let k = keys[0]
        var a: [[UInt8]] = [Array("multi".utf8), k, nowText, Array(DataModel.digest(snapshot[0]).utf8)]
        for c in changed where c == k {
            let s = steps(k)
            a += [[UInt8(ascii: "w")], Array(String(s.count).utf8)] + s
        }
        return (k, .data(a))
    }
}
