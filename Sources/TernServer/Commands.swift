import NIOCore
import TernConsensus
import TernRESP

/// Per-connection state the commands see.
public struct Session: Sendable, Hashable {
    public var version: RESPVersion = .v2
    public var authenticated: Bool
    public var name: String?
    /// Pub/sub channels this connection subscribed to (sync notices): a RESP2 connection with
    /// any is in subscribed mode, where only the subscribe family, PING and QUIT are accepted.
    public var channels: Set<[UInt8]> = []
    /// The connection sent MULTI, which Tern refuses: until EXEC or DISCARD every command is
    /// refused unrun, so a pipelined transaction is never applied piecemeal (docs/SERVER.md).
    public var inRefusedTransaction = false
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
    /// Per client, reply bytes waiting for the client past which it is disconnected.
    public var clientOutputBytesMax = 64 << 20
    /// All clients' query and output buffers together (Redis 7's maxmemory-clients).
    public var clientMemoryBytesMax = 1 << 30
    /// CONFIG GET's bind, dir and loglevel, and `hz` (1000 / the consensus tick).
    public var bind = ""
    public var dataDirectory = ""
    public var logLevel = "notice"
    public var hz = 200
    /// Microseconds since the Unix epoch (TIME, LASTSAVE); injected so tests fix it.
    public var clock: @Sendable () -> Int64 = { CommandProcessor.unixMicros() }
    /// ACL users, the log and the wrong-password pacer (ACL.swift), shared by every connection.
    public var access: AccessControl

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
        case .value:
            return err("unexpected value")
        }
    }

    /// MULTI/EXEC/DISCARD/WATCH, refused so that nothing of a transaction runs: MULTI answers an
    /// error and puts the connection in a refused transaction, where every command but EXEC,
    /// DISCARD and QUIT is refused unrun; EXEC then answers Redis's EXECABORT (what a client sees
    /// when a command failed to queue: nothing ran), DISCARD OK. Before, a pipelined
    /// `MULTI; SET; INCR; EXEC` got errors for MULTI and EXEC while SET and INCR ran one by one,
    /// so a client that retried the failed transaction applied them twice. Nil: not a
    /// transaction matter, plan the command as usual.
    static func transaction(_ name: String, _ n: Int, _ session: inout Session) -> CommandPlan? {
        switch name {
        case "multi":
            guard n == 1 else { return .reply(arity(name)) }
            if session.inRefusedTransaction { return .reply(err("MULTI calls can not be nested")) }
            session.inRefusedTransaction = true
            return .reply(
                err(
                    "MULTI is not supported by Tern (transactions are not built yet): the commands "
                        + "until EXEC or DISCARD will be refused, not run"))
        case "exec":
            guard n == 1 else { return .reply(arity(name)) }
            guard session.inRefusedTransaction else { return .reply(err("EXEC without MULTI")) }
            session.inRefusedTransaction = false
            return .reply(.error("EXECABORT Transaction discarded because of previous errors."))
        case "discard":
            guard n == 1 else { return .reply(arity(name)) }
            guard session.inRefusedTransaction else { return .reply(err("DISCARD without MULTI")) }
            session.inRefusedTransaction = false
            return .reply(.simpleString("OK"))
        case "watch", "unwatch":
            if session.inRefusedTransaction && name == "watch" {
                return .reply(err("WATCH inside MULTI is not allowed"))
            }
            return .reply(
                err("\(name.uppercased()) is not supported by Tern (transactions are not built yet)"))
        case "quit", "reset":
            return nil
        default:
            guard session.inRefusedTransaction else { return nil }
            return .reply(
                err(
                    "'\(name)' not run: this connection is in a MULTI that Tern refused; "
                        + "send EXEC or DISCARD"))
        }
    }

    /// Whether `reply` refused a command before it ran (Redis's rejected_calls: arity, NOAUTH,
    /// subscribed mode, a refused MULTI), rather than failing while it ran (failed_calls).
    public static func isRejection(_ reply: RESPValue) -> Bool {
        guard case .error(let text) = reply else { return false }
        return text.hasPrefix("ERR wrong number of arguments") || text.hasPrefix("NOAUTH")
            || text.hasPrefix("ERR Can't execute") || text.hasPrefix("ERR unknown subcommand")
            || (text.hasPrefix("ERR '") && text.contains("' not run: "))
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
        // A key too long for the cluster refuses the whole command before any key is written.
        if case .requests(let reqs, _) = p,
            let long = reqs.first(where: { $0.key.count > ReplicaNode.keyBytesMax })
        {
            return .reply(Self.failure(.keyTooLong(long.key.count), write: false))
        }
        return p
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
        if let answer = Self.transaction(name, args.count, &session) { return answer }
        // ACL: the user's command and key permissions (ACL.swift).
        if let refusal = aclRefusal(name, args, session) { return .reply(refusal) }
        // Keys starting with \0 are the services' (ReservedKeys.swift).
        if let refusal = Self.reservedKeyRefusal(name, args) { return .reply(refusal) }
        let n = args.count
        // Redis's subscribed mode (RESP2 only): a connection that subscribed takes only these.
        if session.version == .v2 && !session.channels.isEmpty {
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
            return .reply(db == 0 ? .ok : Self.err("DB index is out of range"))
        case "info":
            let sections = Self.infoSelection(args[1...])
            return .frontend { view in
                view.facts().map { .verbatim(self.infoText($0, sections: sections)) }
            }
        case "command", "config", "client", "function", "script":
            return container(name, args, &session)
        case "reset":
            guard n == 1 else { return .reply(Self.arity(name)) }
            return reset(&session)
        case "time", "lastsave", "role", "save", "bgrewriteaof", "bgsave", "wait", "debug":
            return server(name, args)
        case "get":
            guard n == 2 else { return .reply(Self.arity(name)) }
            return read(args[1]) { .bulkString($0) }
        case "strlen":
            guard n == 2 else { return .reply(Self.arity(name)) }
            return read(args[1]) { .integer(Int64($0?.count ?? 0)) }
        case "exists":
            guard n >= 2 else { return .reply(Self.arity(name)) }
            return .requests(args.dropFirst().map { ($0, .read) }) { replies in
                var count: Int64 = 0
                for r in replies {
                    guard case .value(let v) = r else { return Self.failure(r, write: false) }
                    if v != nil { count += 1 }
                }
                return .integer(count)
            }
        case "mget":
            guard n >= 2 else { return .reply(Self.arity(name)) }
            return .requests(args.dropFirst().map { ($0, .read) }) { replies in
                var out: [RESPValue] = []
                for r in replies {
                    guard case .value(let v) = r else { return Self.failure(r, write: false) }
                    out.append(.bulkString(v))
                }
                return .array(out)
            }
        case "set":
            guard n >= 3 else { return .reply(Self.arity(name)) }
            return set(args)
        case "getset":
            guard n == 3 else { return .reply(Self.arity(name)) }
            return write(args[1], .set(args[2], condition: .always, returnOld: true)) { result in
                switch result {
                case .previous(let old): .bulkString(old)
                case .previousForgotten: Self.forgotten
                default: Self.err("unexpected result \(result)")
                }
            }
        case "mset":
            guard n >= 3, n % 2 == 1 else { return .reply(Self.arity(name)) }
            var reqs: [(key: [UInt8], request: KeyRequest)] = []
            var k = 1
            while k < n {
                reqs.append((args[k], .write(.set(args[k + 1], condition: .always, returnOld: false))))
                k += 2
            }
            return .requests(reqs) { replies in
                for r in replies {
                    guard case .done = r else { return Self.failure(r, write: true) }
                }
                return .ok
            }
        case "del":
            guard n >= 2 else { return .reply(Self.arity(name)) }
            return .requests(args.dropFirst().map { ($0, .write(.remove)) }) { replies in
                var count: Int64 = 0
                for r in replies {
                    guard case .done(let res) = r else { return Self.failure(r, write: true) }
                    if res == .existed(true) { count += 1 }
                }
                return .integer(count)
            }
        case "incr", "decr":
            guard n == 2 else { return .reply(Self.arity(name)) }
            return incr(args[1], by: name == "incr" ? 1 : -1)
        case "incrby", "decrby":
            guard n == 3 else { return .reply(Self.arity(name)) }
            guard let d = KeyValue.strictInteger(args[2]) else { return .reply(Self.notInteger) }
            if name == "decrby" {
                guard d != .min else { return .reply(Self.err("decrement would overflow")) }
                return incr(args[1], by: -d)
            }
            return incr(args[1], by: d)
        case "append":
            guard n == 3 else { return .reply(Self.arity(name)) }
            return write(args[1], .append(args[2], maxBytes: maxValueBytes)) { result in
                switch result {
                case .number(let len): .integer(len)
                case .tooLarge: Self.tooLarge
                default: Self.err("unexpected result \(result)")
                }
            }
        default:
            for m in modules {
                if let plan = m.plan(name: name, args: args, session: &session) { return plan }
            }
            return .reply(Self.unknownCommand(args))
        }
    }

    /// One element of a glob pattern.
    enum GlobUnit {
        case any
        case one
        case literal(UInt8)
        case set(singles: [UInt8], ranges: [(UInt8, UInt8)], negated: Bool)

        func matches(_ c: UInt8) -> Bool {
            switch self {
            case .any, .one: return true
            case .literal(let l): return l == c
            case .set(let singles, let ranges, let negated):
                let hit = singles.contains(c) || ranges.contains { $0.0 <= c && c <= $0.1 }
                return hit != negated
            }
        }
    }

    /// Redis's glob (`stringmatchlen`): `*` any run, `?` any one byte, `[abc]`, `[^a-z]` sets and
    /// ranges, `\` escapes the next byte.
    static func globUnits(_ p: [UInt8]) -> [GlobUnit] {
        var units: [GlobUnit] = []
        var i = 0
        while i < p.count {
            switch p[i] {
            case UInt8(ascii: "*"): units.append(.any)
            case UInt8(ascii: "?"): units.append(.one)
            case UInt8(ascii: "\\") where i + 1 < p.count:
                i += 1
                units.append(.literal(p[i]))
            case UInt8(ascii: "["):
                i += 1
                var negated = false
                if i < p.count && p[i] == UInt8(ascii: "^") {
                    negated = true
                    i += 1
                }
                var singles: [UInt8] = []
                var ranges: [(UInt8, UInt8)] = []
                // Up to the closing bracket, or the pattern's end (as Redis).
                while i < p.count && p[i] != UInt8(ascii: "]") {
                    if p[i] == UInt8(ascii: "\\") && i + 1 < p.count {
                        i += 1
                        singles.append(p[i])
                    } else if i + 2 < p.count && p[i + 1] == UInt8(ascii: "-")
                        && p[i + 2] != UInt8(ascii: "]")
                    {
                        ranges.append((min(p[i], p[i + 2]), max(p[i], p[i + 2])))
                        i += 2
                    } else {
                        singles.append(p[i])
                    }
                    i += 1
                }
                units.append(.set(singles: singles, ranges: ranges, negated: negated))
            default: units.append(.literal(p[i]))
            }
            i += 1
        }
        return units
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
        let units = globUnits(lowered)
        // ok[j]: the units so far match s[..<j].
        var ok = [Bool](repeating: false, count: s.count + 1)
        ok[0] = true
        for u in units {
            var next = [Bool](repeating: false, count: s.count + 1)
            if case .any = u {
                var reached = false
                for j in 0...s.count {
                    reached = reached || ok[j]
                    next[j] = reached
                }
            } else {
                for j in 0..<s.count where ok[j] && u.matches(s[j]) { next[j + 1] = true }
            }
            ok = next
        }
        return ok[s.count]
    }

    static let subscribedModeCommands: Set<String> = [
        "subscribe", "unsubscribe", "psubscribe", "punsubscribe", "ssubscribe", "sunsubscribe", "quit",
        "reset",
    ]

    static let forgotten = err("the write was applied, but the old value it returned is no longer known")

    private func read(_ key: [UInt8], _ body: @escaping @Sendable ([UInt8]?) -> RESPValue) -> CommandPlan {
        .requests([(key, .read)]) { replies in
            guard case .value(let v) = replies[0] else { return Self.failure(replies[0], write: false) }
            return body(v)
        }
    }

    private func write(
        _ key: [UInt8], _ op: Operation, _ body: @escaping @Sendable (OperationResult) -> RESPValue
    )
        -> CommandPlan
    {
        .requests([(key, .write(op))]) { replies in
            guard case .done(let r) = replies[0] else { return Self.failure(replies[0], write: true) }
            return body(r)
        }
    }

    private func incr(_ key: [UInt8], by d: Int64) -> CommandPlan {
        write(key, .incr(d)) { result in
            switch result {
            case .number(let v): .integer(v)
            case .notANumber: Self.notInteger
            case .overflow: Self.overflow
            default: Self.err("unexpected result \(result)")
            }
        }
    }

    /// SET key value [NX | XX] [GET] [KEEPTTL]; EX/PX/EXAT/PXAT are refused (no expiry yet).
    private func set(_ args: [[UInt8]]) -> CommandPlan {
        var condition = SetCondition.always
        var get = false
        for raw in args.dropFirst(3) {
            switch String(decoding: raw, as: UTF8.self).uppercased() {
            case "NX":
                guard condition == .always else { return .reply(Self.syntax) }
                condition = .ifAbsent
            case "XX":
                guard condition == .always else { return .reply(Self.syntax) }
                condition = .ifPresent
            case "GET": get = true
            case "KEEPTTL": break
            case "EX", "PX", "EXAT", "PXAT": return .reply(Self.err("EX/PX not supported yet"))
            default: return .reply(Self.syntax)
            }
        }
        return write(args[1], .set(args[2], condition: condition, returnOld: get)) { result in
            switch result {
            case .swapped(true): .ok
            case .swapped(false): .bulkString(nil)
            case .previous(let old): .bulkString(old)
            case .previousForgotten: Self.forgotten
            default: Self.err("unexpected result \(result)")
            }
        }
    }

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
