import NIOConcurrencyHelpers
import NIOCore
import TernConsensus
import TernCore
import TernRESP

/// Per-connection state the commands see.
public struct Session: Sendable, Hashable {
    public var version: RESPVersion = .v2
    public var authenticated: Bool
    public var name: String?
    /// Pub/sub channels this connection subscribed to (sync notices): a RESP2 connection with
    /// any is in subscribed mode, where only the subscribe family, PING and QUIT are accepted.
    public var channels: Set<[UInt8]> = []
    /// Pub/sub patterns this connection subscribed to (PSUBSCRIBE); they count for subscribed mode.
    public var patterns: Set<[UInt8]> = []
    /// The commands queued since MULTI (nil: not in a transaction), as the client sent them; EXEC
    /// plans them again and runs them as one instance of their one key (docs/DATA.md).
    public var transaction: [[[UInt8]]]?
    /// A command failed to queue: EXEC answers EXECABORT and runs nothing.
    public var transactionAborted = false
    /// WATCHed keys and the value each had (filled when WATCH's read answers).
    public var watch: WatchBox?
    /// The connection's id (CLIENT ID, HELLO), assigned at accept; 0 outside a server.
    public var clientID: UInt64 = 0
    /// CLIENT NO-EVICT on: the clients' memory bound (`maxmemory_clients`) does not close it.
    public var noEvict = false
    /// CLIENT SETINFO LIB-NAME / LIB-VER.
    public var libName = ""
    public var libVersion = ""
    /// CLIENT REPLY OFF: no replies until CLIENT REPLY ON. CLIENT REPLY SKIP: none for the next
    /// command. The front end honours them (the processor only records the request).
    public var repliesOff = false
    public var skipNextReply = false
    /// The database a refused `SELECT n` asked for (Tern has only 0): until `SELECT 0` or RESET,
    /// commands are refused rather than run on database 0 (`redis-cli -n 1` goes on after its
    /// SELECT fails; docs/SERVER.md, "Keyspace").
    public var missingDatabase: Int64?
    /// The ACL user the connection runs as (docs/ACL.md); `default` until AUTH names another.
    public var user = "default"
    /// The client's address (ACL LOG's client-info); set by the front end.
    public var address = ""
    /// Set by a wrong password: the user it named, until the processor paces the answer (ACL.swift).
    var pendingAuthFailure: String?
    public init(authenticated: Bool, clientID: UInt64 = 0) {
        self.authenticated = authenticated
        self.clientID = clientID
    }
}

/// A connection's WATCHed keys: each key's value fingerprint (`DataModel.digest`) as WATCH's read
/// found it (nil until that read answers). Filled by the reply, read by EXEC's plan, on the
/// connection's loop; a lock keeps it honest anyway.
public final class WatchBox: @unchecked Sendable, Hashable {
    private let lock = NIOLock()
    private var keys: [[UInt8]: String?] = [:]
    public init() {}
    func expect(_ key: [UInt8]) { lock.withLock { if keys[key] == nil { keys[key] = .some(nil) } } }
    func found(_ key: [UInt8], _ digest: String) {
        lock.withLock { if keys[key] == .some(nil) { keys[key] = digest } }
    }
    var watched: [[UInt8]: String?] { lock.withLock { keys } }
    public static func == (a: WatchBox, b: WatchBox) -> Bool { a === b }
    public func hash(into h: inout Hasher) { h.combine(ObjectIdentifier(self)) }
}

/// What to do with one command.
public enum CommandPlan: Sendable {
    /// Answer at once.
    case reply(RESPValue)
    /// Answer, then close the connection (QUIT).
    case replyAndClose(RESPValue)
    /// Run these key requests (concurrently), then build the answer from their replies, in order.
    case requests([(key: [UInt8], request: KeyRequest)], @Sendable ([NodeReply]) -> RESPValue)
    /// Run this task and answer with its result (services built on several key requests: SEQ.*,
    /// MSG.*, SYNC). Unlike `.requests`, it is not ordered after the connection's earlier commands
    /// on the same keys; the reply still goes out in command order.
    case run(@Sendable () async -> RESPValue)
    /// Answer with these frames (one command, several frames: SUBSCRIBE's confirmations), given the
    /// connection's outlet for out-of-band pushes (sync notices).
    case connection(@Sendable (ConnectionOutlet) -> [RESPValue])
    /// Like `.run`, for a service that already works with event-loop futures (SEQ.*): no Swift
    /// task per command, so no hop through the concurrency pool's threads (SEQ.NEXT on `tern dev`,
    /// 64 unpipelined connections: ~15 000/s with `.run`, ~22 000/s with this; docs/SEQ.md).
    case future(@Sendable () -> EventLoopFuture<RESPValue>)
    /// Answer from what the front end knows (INFO's figures, CLIENT LIST and KILL, CONFIG SET
    /// maxclients), through its view; the connection's commands after it wait for nothing.
    case frontend(@Sendable (any FrontendView) -> EventLoopFuture<RESPValue>)
    /// Like `.future`, but ordered against the connection's key requests in both directions: it
    /// starts once every earlier key request of the connection has completed, and the later ones
    /// wait for it (SCAN and KEYS see the connection's earlier writes; FLUSHALL never deletes a
    /// key the connection writes after it). The keyspace commands (KeyspaceService.swift).
    case barrier(@Sendable () -> EventLoopFuture<RESPValue>)
    /// A blocking command (BLPOP, XREAD BLOCK): runs attempts until one answers or the time runs
    /// out; the connection's later commands wait for it, as in Redis (Blocking.swift).
    case blocking(BlockingCall)
}

/// One attempt of a blocking command: the key requests it runs, and what to do with their replies.
public struct BlockingCall: Sendable {
    /// Wake when one of these keys changes (this node writes a record of it), or a poll passes.
    public var keys: [[UInt8]]
    /// How long to wait, in milliseconds; 0: forever.
    public var timeoutMs: Int64
    /// The answer when the time runs out.
    public var timeout: RESPValue
    /// What one attempt runs (concurrently, ordered after the connection's earlier requests).
    public var requests: [(key: [UInt8], request: KeyRequest)]
    /// What to do with the attempt's replies, in order.
    public var step: @Sendable ([NodeReply]) -> BlockingStep
    /// Whether it takes what it finds (pops, XREADGROUP): then blocked clients are served in line,
    /// longest waiting first (`BlockedKeys`). XREAD takes nothing.
    public var takes = true

    public init(
        keys: [[UInt8]], timeoutMs: Int64, timeout: RESPValue,
        requests: [(key: [UInt8], request: KeyRequest)], takes: Bool = true,
        step: @escaping @Sendable ([NodeReply]) -> BlockingStep
    ) {
        self.keys = keys
        self.timeoutMs = timeoutMs
        self.timeout = timeout
        self.requests = requests
        self.takes = takes
        self.step = step
    }

    /// This call with other requests and step, same keys and time.
    public func next(
        _ requests: [(key: [UInt8], request: KeyRequest)],
        _ step: @escaping @Sendable ([NodeReply]) -> BlockingStep
    ) -> BlockingCall {
        BlockingCall(
            keys: keys, timeoutMs: timeoutMs, timeout: timeout, requests: requests, takes: takes, step: step)
    }

    /// A blocking command's timeout argument in seconds (BLPOP, BZPOPMIN, ...) as milliseconds,
    /// or Redis's error: a float, not negative, not past what milliseconds hold.
    public static func seconds(_ arg: [UInt8]) -> BlockingTimeout {
        let text = String(decoding: arg, as: UTF8.self)
        guard let d = Double(text), d.isFinite, !text.isEmpty, !text.contains(where: \.isWhitespace) else {
            return .invalid(.error("ERR timeout is not a float or out of range"))
        }
        if d < 0 { return .invalid(.error("ERR timeout is negative")) }
        guard d * 1000 < Double(Int64.max / 2) else { return .invalid(.error("ERR timeout is out of range")) }
        return .ms(Int64((d * 1000).rounded(.up)))
    }

    /// XREAD's `BLOCK` argument in milliseconds, or Redis's error.
    public static func milliseconds(_ arg: [UInt8]) -> BlockingTimeout {
        guard let ms = Int64(String(decoding: arg, as: UTF8.self)) else {
            return .invalid(.error("ERR timeout is not an integer or out of range"))
        }
        if ms < 0 { return .invalid(.error("ERR timeout is negative")) }
        guard ms < Int64.max / 2 else { return .invalid(.error("ERR timeout is out of range")) }
        return .ms(ms)
    }
}

/// A blocking command's timeout: milliseconds (0: forever), or the error to answer.
public enum BlockingTimeout: Sendable, Equatable {
    case ms(Int64)
    case invalid(RESPValue)
}

/// What a blocking command does after one attempt.
public indirect enum BlockingStep: Sendable {
    /// Answer this; the command is done.
    case answer(RESPValue)
    /// Run this call now (a read saw something to take: now take it).
    case again(BlockingCall)
    /// Nothing to take yet: run this call when one of its keys changes (or a poll passes).
    case wait(BlockingCall)
}

/// Commands added by a service (sequence allocator, sync inboxes) on top of the Redis ones.
public protocol CommandModule: Sendable {
    /// The plan for command `name` (lowercased) with `args` (`args[0]` is the name), or nil when
    /// this module does not own `name`.
    func plan(name: String, args: [[UInt8]], session: inout Session) -> CommandPlan?
    /// The commands this module owns, with their arity, flags and keys (COMMAND INFO, DOCS, LIST,
    /// GETKEYS, INFO commandstats).
    var commandSpecs: [CommandSpec] { get }
    /// RESET on a connection: drop whatever this module holds for it (subscriptions).
    func reset(_ outlet: ConnectionOutlet)
}

extension CommandModule {
    /// The command names this module owns.
    public var commandNames: [String] { commandSpecs.map(\.name) }
    public func reset(_ outlet: ConnectionOutlet) {}
}

/// The Redis commands Tern speaks: parsing, arity and option checks, and the replies, with Redis's
/// own error wording. Pure: no IO; the front end runs the plans.
public struct CommandProcessor: Sendable {
    /// The AUTH password, if clients must authenticate.
    public var password: String?
    /// Largest value a write may produce (APPEND) or carry.
    public var maxValueBytes: Int
    /// Text of INFO's server section.
    public var info: @Sendable () -> String
    /// Service commands, asked in order for any name the Redis commands do not own.
    public var modules: [any CommandModule] = [] {
        didSet { commandTable = CommandTable(modules: modules) }
    }
    /// The command table: the Redis commands and every module's (made when `modules` changes, not
    /// per command).
    public private(set) var commandTable = CommandTable(modules: [])
    /// Client connections allowed at once (CONFIG GET maxclients; enforced by the front end).
    public var maxClients = 10_000
    /// A stream's backlog bound (`stream_max_entries`): XADD beyond it is refused (docs/QUEUE.md).
    public var streamMaxEntries = ServerConfig.streamMaxEntriesDefault
    /// Per client, reply bytes waiting for the client past which it is disconnected.
    public var clientOutputBytesMax = 64 << 20
    /// All clients' query and output buffers together (Redis 7's maxmemory-clients).
    public var clientMemoryBytesMax = 1 << 30
    /// CONFIG GET's bind, dir and loglevel, and `hz` (1000 / the consensus tick).
    public var bind = ""
    public var dataDirectory = ""
    public var logLevel = "notice"
    public var hz = 200
    /// The encoding thresholds CONFIG SET was given (shared by every connection of the server).
    public let encodingValues = NIOLockedValueBox<[String: String]>([:])
    /// OBJECT IDLETIME's per-node access times, shared by every connection (AccessTimes.swift).
    public let accessTimes = AccessTimes(nowMs: CommandProcessor.unixMicros() / 1000)
    /// Microseconds since the Unix epoch (TIME, LASTSAVE); injected so tests fix it.
    public var clock: @Sendable () -> Int64 = { CommandProcessor.unixMicros() }
    /// ACL users, the log and the wrong-password pacer (ACL.swift), shared by every connection.
    public var access: AccessControl
    /// `notify-keyspace-events` and the publishing of keyspace events (KeyspaceNotifications.swift).
    public var notifier = KeyspaceNotifier()
    /// How Redis keys map onto Paxos keys (the cluster map's `key_layout`): with hash-tag groups,
    /// a transaction may take keys of one tag (GroupTransactions.swift).
    public var keyLayout: KeyLayout = .perKey
    /// `maxmemory` (noeviction) and the node's used memory (MaxMemory.swift).
    public var memory = MemoryLimit()

    public init(password: String?, maxValueBytes: Int, info: @escaping @Sendable () -> String = { "" }) {
        self.password = password
        access = AccessControl(password: password)
        self.maxValueBytes = maxValueBytes
        self.info = info
    }

    // MARK: - Errors (Redis wording)

    static func err(_ text: String) -> RESPValue { .error("ERR " + text) }
    static let syntax = err("syntax error")
    static let notInteger = err("value is not an integer or out of range")
    static let overflow = err("increment or decrement would overflow")
    static let noAuth = RESPValue.error("NOAUTH Authentication required.")
    static let tooLarge = err("string exceeds maximum allowed size (proto-max-bulk-len)")
    static func arity(_ name: String) -> RESPValue { err("wrong number of arguments for '\(name)' command") }

    /// The error for a failed request (documented in docs/SERVER.md).
    static func failure(_ r: NodeReply, write: Bool) -> RESPValue {
        switch r {
        case .notApplied(let why):
            return write
                ? .error("NOQUORUM write not applied: \(why)")
                : .error("NOQUORUM read not served: \(why)")
        case .unknown(let why):
            return .error("NOQUORUM write not acknowledged (it may or may not have been applied): \(why)")
        case .unavailable(let why):
            return .error("UNAVAILABLE \(why)")
        case .refused(let why):
            return err(why)
        case .done(let r):
            return err("unexpected result \(r)")
        case .value, .typed:
            return err("unexpected value")
        }
    }

    static let crossKey = RESPValue.error(
        "CROSSSLOT Tern transactions take commands on one key: each key is its own Paxos group "
            + "(docs/DATA.md)")

    /// MULTI/EXEC/DISCARD/WATCH/UNWATCH. A transaction runs when all its commands are data
    /// commands on one key (WATCHed keys included): EXEC sends them as one write, applied as one
    /// Paxos instance — atomic and linearizable. A command that cannot join (another key, a
    /// command that is not a data command, a bad argument) fails to queue, and EXEC then answers
    /// EXECABORT and runs nothing, so a pipelined transaction is never applied piecemeal. Nil:
    /// not a transaction matter, plan the command as usual.
    func transaction(_ name: String, _ args: [[UInt8]], _ session: inout Session) -> CommandPlan? {
        let n = args.count
        switch name {
        case "multi":
            guard n == 1 else { return .reply(Self.arity(name)) }
            if session.transaction != nil { return .reply(Self.err("MULTI calls can not be nested")) }
            session.transaction = []
            session.transactionAborted = false
            return .reply(.ok)
        case "exec":
            guard n == 1 else { return .reply(Self.arity(name)) }
            guard let queued = session.transaction else { return .reply(Self.err("EXEC without MULTI")) }
            let aborted = session.transactionAborted
            let watched = session.watch?.watched ?? [:]
            session.transaction = nil
            session.transactionAborted = false
            session.watch = nil
            if aborted {
                return .reply(.error("EXECABORT Transaction discarded because of previous errors."))
            }
            return exec(queued, watched: watched, session)
        case "discard":
            guard n == 1 else { return .reply(Self.arity(name)) }
            guard session.transaction != nil else { return .reply(Self.err("DISCARD without MULTI")) }
            session.transaction = nil
            session.transactionAborted = false
            session.watch = nil
            return .reply(.ok)
        case "watch":
            guard n >= 2 else { return .reply(Self.arity(name)) }
            if session.transaction != nil { return .reply(Self.err("WATCH inside MULTI is not allowed")) }
            let box = session.watch ?? WatchBox()
            session.watch = box
            let keys = Array(args.dropFirst())
            for k in keys { box.expect(k) }
            return .requests(keys.map { ($0, .read) }) { replies in
                for (k, r) in zip(keys, replies) {
                    guard let v = Self.stored(r) else { return Self.failure(r, write: false) }
                    box.found(k, DataModel.digest(v))
                }
                return .ok
            }
        case "unwatch":
            guard n == 1 else { return .reply(Self.arity(name)) }
            session.watch = nil
            return .reply(.ok)
        case "quit", "reset":
            return nil
        default:
            guard session.transaction != nil else { return nil }
            let reply: RESPValue
            // A command across keys of one hash-tag group joins as one step (GroupTransactions.swift).
            let planned =
                crossCall(name, args, session).map { DataPlanned.call($0) }
                ?? dataPlanned(name, args, session)
            switch planned {
            case .call(let c):
                // One Paxos key: one key, or keys of one hash-tag group (GroupTransactions.swift).
                let keys = Set(
                    ((session.transaction ?? []).compactMap(Self.queuedKey) + [c.key]).map(keyLayout.paxosKey)
                )
                if keys.count > 1 {
                    reply = crossKeyError
                } else {
                    session.transaction?.append(args)
                    return .reply(.simpleString("QUEUED"))
                }
            case .plan(.reply(.error(let text))):
                reply = .error(text)
            case nil where ["ping", "echo"].contains(name):
                // Keyless and pure: answered in place when EXEC runs.
                session.transaction?.append(args)
                return .reply(.simpleString("QUEUED"))
            case .plan, nil:
                reply = Self.err(
                    "'\(name)' cannot run inside a Tern transaction: transactions take data commands on one "
                        + "key (docs/DATA.md)")
            }
            session.transactionAborted = true
            return .reply(reply)
        }
    }

    /// The key of a queued command (its first key position: LMPOP's is the third argument,
    /// XREAD's the first stream after STREAMS, XGROUP's and XINFO's the one after the
    /// subcommand), nil for the keyless ones (PING, ECHO).
    static func queuedKey(_ args: [[UInt8]]) -> [UInt8]? {
        let name = String(decoding: args[0], as: UTF8.self).lowercased()
        guard name != "ping" && name != "echo" else { return nil }
        if let streams = streamReadKeyPositions(name, args) { return streams.first.map { args[$0] } }
        let at = dataCommands[name]?.keys.0 ?? (name == "xgroup" || name == "xinfo" ? 2 : 1)
        return at < args.count ? args[at] : nil
    }

    /// EXEC's plan: the queued commands (planned again, now) as one `multi` write on their key.
    func exec(_ queued: [[[UInt8]]], watched: [[UInt8]: String?], _ session: Session) -> CommandPlan {
        var calls: [DataCall] = []
        // Replies of keyless commands (PING, ECHO), by their place in the transaction.
        var inPlace: [Int: RESPValue] = [:]
        for (k, args) in queued.enumerated() {
            let name = String(decoding: args[0], as: UTF8.self).lowercased()
            if name == "ping" || name == "echo" {
                var s = session
                s.transaction = nil
                guard case .reply(let r) = plan(RESPCommand(args: args), session: &s) else {
                    return .reply(.error("EXECABORT Transaction discarded because of previous errors."))
                }
                inPlace[k] = r
                continue
            }
            // Planned as inside the transaction (a blocking pop then joins as its one-key write; a
            // blocking stream read runs once, without waiting).
            var inside = session
            inside.transaction = session.transaction ?? []
            if let c = crossCall(name, args, inside) {
                calls.append(c)
                continue
            }
            guard case .call(let c) = dataPlanned(name, args, inside) else {
                return .reply(.error("EXECABORT Transaction discarded because of previous errors."))
            }
            calls.append(c)
        }
        if calls.isEmpty && watched.isEmpty {
            return .reply(.array((0..<queued.count).map { inPlace[$0] ?? .null }))
        }
        guard let key = calls.first?.key ?? watched.keys.first else { return .reply(.array([])) }
        if let grouped = groupExec(calls, watched: watched, inPlace: inPlace) { return grouped }
        // WATCH guards the transaction's own key only: another key's change could not be checked
        // in the same instance.
        var guardDigest = "-"
        for (k, digest) in watched {
            guard k == key || calls.isEmpty else { return .reply(crossKeyError) }
            // WATCH's read had not answered when EXEC came: treat the key as changed.
            guard let d = digest else { return .reply(.array(nil)) }
            guardDigest = d
        }
        if calls.isEmpty && guardDigest == "-" { return .reply(.array([])) }
        var a: [[UInt8]] = [
            Array("multi".utf8), key, Array(String(max(0, clock() / 1000)).utf8), Array(guardDigest.utf8),
        ]
        for c in calls {
            a.append(c.write ? [UInt8(ascii: "w")] : [UInt8(ascii: "r")])
            a.append(Array(String(c.args.count).utf8))
            a += c.args
        }
        return .requests([(key, .write(.data(a)))], Self.execAnswer(calls, inPlace))
    }

    /// EXEC's answer from its one write's reply: each command's reply in its place, the keyless
    /// ones (`fixed`) among them.
    static func execAnswer(_ planned: [DataCall], _ fixed: [Int: RESPValue])
        -> @Sendable ([NodeReply]) -> RESPValue
    {
        { replies in
            let calls = planned
            switch replies[0] {
            case .done(.data(.array(nil))): return .array(nil)
            case .done(.data(.array(let rs?))) where rs.count == calls.count:
                var out: [RESPValue] = []
                var next = zip(calls, rs).map { $0.convert($1) }.makeIterator()
                for k in 0..<(calls.count + fixed.count) { out.append(fixed[k] ?? next.next() ?? .null) }
                return .array(out)
            case .done(.data(let other)): return Self.resp(other, false)
            case .done(.previousForgotten): return Self.forgotten
            default: return Self.failure(replies[0], write: true)
            }
        }
    }

    /// Whether `reply` refused a command before it ran (Redis's rejected_calls: arity, NOAUTH,
    /// subscribed mode, a refused MULTI), rather than failing while it ran (failed_calls).
    public static func isRejection(_ reply: RESPValue) -> Bool {
        guard case .error(let text) = reply else { return false }
        return text.hasPrefix("ERR wrong number of arguments") || text.hasPrefix("NOAUTH")
            || text.hasPrefix("ERR Can't execute") || text.hasPrefix("ERR unknown subcommand")
            || (text.hasPrefix("ERR '") && text.contains("cannot run inside a Tern transaction"))
            || text.hasPrefix("CROSSSLOT Tern transactions") || text.hasPrefix("OOM command not allowed")
            || text.hasPrefix("EXECABORT Transaction discarded because of: ")
            || text.hasPrefix("ERR Command not allowed inside a transaction")
    }

    static func unknownCommand(_ args: [[UInt8]]) -> RESPValue {
        let name = String(decoding: args[0].prefix(128), as: UTF8.self)
        var text = "unknown command '\(name)', with args beginning with: "
        for a in args.dropFirst() { text += "'\(String(decoding: a.prefix(128), as: UTF8.self))' " }
        return err(text)
    }

    // MARK: - Dispatch

    /// The plan for `command` in `session` (which HELLO, AUTH and SELECT may change).
    public func plan(_ command: RESPCommand, session: inout Session) -> CommandPlan {
        let p = unchecked(command, session: &session)
        noteAccess(command.args, plan: p, session: session)
        // A key too long for the cluster refuses the whole command before any key is written.
        if case .requests(let reqs, _) = p,
            let long = reqs.first(where: { $0.key.count > ReplicaNode.keyBytesMax })
        {
            return .reply(Self.failure(.keyTooLong(long.key.count), write: false))
        }
        if case .blocking(let call) = p,
            let long = call.keys.first(where: { $0.count > ReplicaNode.keyBytesMax })
        {
            return .reply(Self.failure(.keyTooLong(long.count), write: false))
        }
        return p
    }

    /// Records the keys of a command that runs now (not queued in MULTI, not refused) as used.
    private func noteAccess(_ args: [[UInt8]], plan: CommandPlan, session: Session) {
        if case .reply(let r) = plan, case .error = r { return }
        guard session.transaction == nil, let spec = commandTable.spec(for: args),
            !AccessTimes.noTouch.contains(spec.name.split(separator: "|").first.map(String.init) ?? "")
        else { return }
        let positions = spec.keyPositions(args.count)
        guard !positions.isEmpty else { return }
        accessTimes.touch(positions.filter { $0 < args.count }.map { args[$0] }, nowMs: clock() / 1000)
    }

    private func unchecked(_ command: RESPCommand, session: inout Session) -> CommandPlan {
        let args = command.args
        guard let first = args.first else { return .reply(Self.err("empty command")) }
        let name = String(decoding: first, as: UTF8.self).lowercased()
        if command.oversized {
            return .reply(Self.err("value too large (the largest accepted is \(maxValueBytes) bytes)"))
        }
        if !session.authenticated && !["auth", "hello", "quit", "reset"].contains(name) {
            return .reply(Self.noAuth)
        }
        if let refusal = noMultiRefusal(name, args, &session) { return .reply(refusal) }
        // ACL: the user's command and key permissions (ACL.swift); a refused command inside MULTI
        // fails to queue, so EXEC then runs nothing.
        if let refusal = aclRefusal(name, args, session) {
            if session.transaction != nil && !["exec", "discard", "multi"].contains(name) {
                session.transactionAborted = true
            }
            return .reply(refusal)
        }
        // maxmemory: over it, commands that may grow memory are refused (MaxMemory.swift).
        if let refusal = memoryRefusal(name, args, &session) { return .reply(refusal) }
        if let answer = transaction(name, args, &session) { return answer }
        if let db = session.missingDatabase, !Self.withoutDatabase.contains(name) {
            return .reply(Self.missingDatabase(db))
        }
        // Keys starting with \0 are the services' (ReservedKeys.swift).
        if let refusal = Self.reservedKeyRefusal(name, args) { return .reply(refusal) }
        let n = args.count
        // Redis's subscribed mode (RESP2 only): a connection that subscribed takes only these.
        if session.version == .v2 && !(session.channels.isEmpty && session.patterns.isEmpty) {
            if name == "ping" {
                return .reply(.array([.bulkString(Array("pong".utf8)), .bulkString(n >= 2 ? args[1] : [])]))
            }
            if !Self.subscribedModeCommands.contains(name) {
                return .reply(
                    Self.err(
                        "Can't execute '\(name)': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / "
                            + "RESET are allowed in this context"))
            }
        }
        if let p = crossPlan(name, args, session) { return p }
        if let p = dataPlan(name, args, session) { return p }
        switch name {
        case "ping":
            guard n <= 2 else { return .reply(Self.arity(name)) }
            return .reply(n == 2 ? .bulkString(args[1]) : .simpleString("PONG"))
        case "echo":
            guard n == 2 else { return .reply(Self.arity(name)) }
            return .reply(.bulkString(args[1]))
        case "quit":
            return .replyAndClose(.ok)
        case "auth":
            guard n == 2 || n == 3 else { return .reply(Self.arity(name)) }
            return paced(
                auth(args.dropFirst().map { String(decoding: $0, as: UTF8.self) }, &session), &session)
        case "hello":
            return paced(hello(Array(args.dropFirst()), &session), &session)
        case "acl":
            return acl(args, &session)
        case "select":
            guard n == 2 else { return .reply(Self.arity(name)) }
            guard let db = KeyValue.strictInteger(args[1]) else { return .reply(Self.notInteger) }
            session.missingDatabase = db == 0 ? nil : db
            return .reply(db == 0 ? .ok : Self.err("DB index is out of range"))
        case "info":
            let sections = Self.infoSelection(args[1...])
            return .frontend { view in
                view.facts().map { .verbatim(self.infoText($0, sections: sections)) }
            }
        case "command", "config", "client", "function":
            return container(name, args, &session)
        case "reset":
            guard n == 1 else { return .reply(Self.arity(name)) }
            return reset(&session)
        case "monitor":
            // Every command this node reads, from now on (Redis's line format); per node, not
            // cluster-wide (docs/SERVER.md).
            guard n == 1 else { return .reply(Self.arity(name)) }
            return .frontend { view in
                view.eventLoop.makeSucceededFuture(
                    view.monitor() ? .ok : Self.err("MONITOR: connection closing"))
            }
        case "time", "lastsave", "role", "save", "bgrewriteaof", "bgsave", "wait", "debug", "shutdown":
            return server(name, args)
        default:
            for m in modules {
                if let plan = m.plan(name: name, args: args, session: &session) { return plan }
            }
            return .reply(Self.unknownCommand(args))
        }
    }

    /// Whether `pattern` (Redis's glob, case-insensitive as CONFIG GET) matches `name`. Linear in
    /// pattern × name (a table, not backtracking), so no pattern is slow.
    static func globMatches(_ pattern: [UInt8], _ name: String) -> Bool {
        let lowered = Array(String(decoding: pattern, as: UTF8.self).lowercased().utf8)
        let s = Array(name.lowercased().utf8)
        // As Redis's CONFIG GET: without `*`, `?` or `[` the pattern is a name, compared as is.
        guard
            lowered.contains(where: {
                $0 == UInt8(ascii: "*") || $0 == UInt8(ascii: "?") || $0 == UInt8(ascii: "[")
            })
        else { return lowered == s }
        return Glob.matches(lowered, s)
    }

    static let subscribedModeCommands: Set<String> = [
        "subscribe", "unsubscribe", "psubscribe", "punsubscribe", "ssubscribe", "sunsubscribe", "quit",
        "reset",
    ]

    static let forgotten = err("the write was applied, but the old value it returned is no longer known")

    private func auth(_ args: [String], _ session: inout Session) -> RESPValue {
        authenticate(args, &session)
    }

    /// HELLO [protover [AUTH username password] [SETNAME name]].
    private func hello(_ args: [[UInt8]], _ session: inout Session) -> RESPValue {
        var version = session.version
        var i = 0
        if let first = args.first {
            guard let v = KeyValue.strictInteger(first) else {
                return Self.err("Protocol version is not an integer or out of range")
            }
            guard v == 2 || v == 3 else { return .error("NOPROTO unsupported protocol version") }
            version = v == 3 ? .v3 : .v2
            i = 1
        }
        var next = session
        while i < args.count {
            let opt = String(decoding: args[i], as: UTF8.self).uppercased()
            if opt == "AUTH", i + 2 < args.count {
                let r = auth(
                    [
                        String(decoding: args[i + 1], as: UTF8.self),
                        String(decoding: args[i + 2], as: UTF8.self),
                    ], &next)
                if case .error = r {
                    session.pendingAuthFailure = next.pendingAuthFailure
                    return r
                }
                i += 3
            } else if opt == "SETNAME", i + 1 < args.count {
                // CLIENT SETNAME's rule and error; an empty name clears it.
                guard Self.validClientName(args[i + 1]) else {
                    return Self.err("Client names cannot contain spaces, newlines or special characters.")
                }
                next.name = args[i + 1].isEmpty ? nil : String(decoding: args[i + 1], as: UTF8.self)
                i += 2
            } else {
                // The option as the client wrote it, as Redis.
                return Self.err(
                    "Syntax error in HELLO option '\(String(decoding: args[i].prefix(128), as: UTF8.self))'")
            }
        }
        guard next.authenticated else { return Self.noAuth }
        next.version = version
        session = next
        return .map([
            .bulkString("server"), .bulkString("tern"), .bulkString("version"), .bulkString("7.0.0"),
            .bulkString("proto"), .integer(version == .v3 ? 3 : 2), .bulkString("id"),
            .integer(Int64(session.clientID)),
            .bulkString("mode"), .bulkString("standalone"), .bulkString("role"), .bulkString("master"),
            .bulkString("modules"), .array([]),
        ])
    }
}
