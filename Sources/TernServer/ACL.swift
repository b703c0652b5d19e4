import Crypto
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import TernConsensus
import TernCore
import TernPlacement
import TernRESP

// ACL users, Redis 7's model for the commands Tern serves (docs/ACL.md).
//
//   ACL SETUSER on node 1 ──► read \0acl ─► apply the rules ─► CAS \0acl (Paxos, as SET)
//                                                              │ chosen: node 1 adopts it now
//   every node, every second ──► read \0acl ─► changed? parse and adopt
//
// The rules, the users and the log are values (`ACLUser`, `ACLTable`, `ACLLog`); `AccessControl`
// is the shell's shared box around them, and the processor's hooks (`aclRefusal`, `authenticate`,
// `acl`) read it.

/// Why an ACL rule, file or change was refused: Redis's text, without the `ERR ` prefix.
public struct ACLError: Error, Sendable, Equatable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// One user: whether it is on, its password hashes, its key patterns and its command rules.
public struct ACLUser: Sendable, Equatable {
    /// One `+cmd`, `-cmd`, `+@cat` or `-@cat` rule, kept in the order given (as Redis 7.2 shows
    /// them; 7.0 re-derives a list from its bitmap, which names the same commands).
    public struct CommandRule: Sendable, Equatable {
        public var allow: Bool
        public var category: Bool
        /// A lowercase command name (`client|kill` for a subcommand) or category (no `@`).
        public var target: String
        public var text: String { (allow ? "+" : "-") + (category ? "@" : "") + target }
    }

    public var name: String
    public var enabled = false
    public var noPass = false
    /// SHA-256 of each password, 64 lowercase hexadecimal digits, in the order added.
    public var passwords: [String] = []
    public var allKeys = false
    public var keyPatterns: [[UInt8]] = []
    /// `&*`: may SUBSCRIBE (Tern has no other channel patterns).
    public var allChannels = false
    /// Whether the command rules start from every command (`+@all`) or none (`-@all`).
    public var allCommandsBase = false
    public var commandRules: [CommandRule] = []

    /// A new user: off, no password, no keys, no channels, no commands (Redis's defaults).
    public init(name: String) { self.name = name }

    /// The categories a rule may name: Redis's for the commands Tern has, and Tern's own.
    public static let categories = [
        "keyspace", "read", "write", "string", "pubsub", "admin", "fast", "slow", "blocking", "dangerous",
        "connection", "transaction", "scripting", "seq", "sync",
    ]

    /// SHA-256 of `password`, lowercase hex.
    public static func hash(_ password: String) -> String {
        SHA256.hash(data: Array(password.utf8)).map { String(format: "%02x", $0) }.joined()
    }

    /// Applies one rule, or throws Redis's reason and leaves the user as it was.
    public mutating func apply(_ rule: String, table: CommandTable) throws(ACLError) {
        let lower = rule.lowercased()
        switch lower {
        case "on": enabled = true
        case "off": enabled = false
        case "nopass":
            noPass = true
            passwords = []
        case "resetpass":
            noPass = false
            passwords = []
        case "allkeys":
            allKeys = true
            keyPatterns = []
        case "resetkeys":
            allKeys = false
            keyPatterns = []
        case "allchannels": allChannels = true
        case "resetchannels": allChannels = false
        case "allcommands", "+@all":
            allCommandsBase = true
            commandRules = []
        case "nocommands", "-@all":
            allCommandsBase = false
            commandRules = []
        case "reset":
            self = ACLUser(name: name)
        // Payload sanitizing concerns RESTORE, which Tern does not have; selectors: none to clear.
        case "sanitize-payload", "skip-sanitize-payload", "clearselectors": break
        default:
            try applyValued(rule, table: table)
        }
    }

    private mutating func applyValued(_ rule: String, table: CommandTable) throws(ACLError) {
        guard let first = rule.first else { throw ACLError("Syntax error") }
        let rest = String(rule.dropFirst())
        switch first {
        case ">":
            let h = Self.hash(rest)
            if !passwords.contains(h) { passwords.append(h) }
            noPass = false
        case "<":
            let h = Self.hash(rest)
            guard let i = passwords.firstIndex(of: h) else {
                throw ACLError("The password you are trying to remove from the user does not exist")
            }
            passwords.remove(at: i)
        case "#", "!":
            guard rest.utf8.count == 64,
                rest.utf8.allSatisfy({ (48...57).contains($0) || (97...102).contains($0) })
            else {
                throw ACLError(
                    "The password hash must be exactly 64 characters and contain only lowercase hexadecimal characters"
                )
            }
            if first == "#" {
                if !passwords.contains(rest) { passwords.append(rest) }
                noPass = false
            } else {
                guard let i = passwords.firstIndex(of: rest) else {
                    throw ACLError("The password you are trying to remove from the user does not exist")
                }
                passwords.remove(at: i)
            }
        case "~":
            if allKeys {
                throw ACLError(
                    "Adding a pattern after the * pattern (or the 'allkeys' flag) is not valid and does not "
                        + "have any effect. Try 'resetkeys' to start with an empty list of patterns")
            }
            if rest == "*" {
                allKeys = true
                keyPatterns = []
            } else if !keyPatterns.contains(Array(rest.utf8)) {
                keyPatterns.append(Array(rest.utf8))
            }
        case "&":
            guard rest == "*" else {
                throw ACLError("Tern has no channel patterns but '&*' (allchannels) and resetchannels")
            }
            allChannels = true
        case "%":
            throw ACLError("Tern does not support read/write key permissions (%R~, %W~); use ~pattern")
        case "(":
            throw ACLError("Tern does not support selectors")
        case "+", "-":
            let allow = first == "+"
            var target = rest.lowercased()
            let category = target.hasPrefix("@")
            if category {
                target.removeFirst()
                guard Self.categories.contains(target) else {
                    throw ACLError("Unknown command or category name in ACL")
                }
            } else {
                guard table.spec(target) != nil else {
                    throw ACLError("Unknown command or category name in ACL")
                }
            }
            // A later rule on the same command or category replaces the earlier one.
            commandRules.removeAll { $0.category == category && $0.target == target }
            commandRules.append(CommandRule(allow: allow, category: category, target: target))
        default:
            throw ACLError("Syntax error")
        }
    }

    /// Whether the user may run `spec` (a subcommand's entry when there is one; `container` is
    /// then its container's): the base, then every rule in order, the last that names it wins.
    public func permits(_ spec: CommandSpec, container: CommandSpec? = nil) -> Bool {
        var ok = allCommandsBase
        for r in commandRules {
            if r.category {
                if spec.categories.contains("@" + r.target) { ok = r.allow }
            } else if r.target == spec.name || r.target == container?.name {
                ok = r.allow
            }
        }
        return ok
    }

    /// Whether the user may name `key`: `allkeys`, or one of its patterns matches (Redis's glob,
    /// case-sensitive).
    public func permits(key: [UInt8]) -> Bool {
        allKeys || keyPatterns.contains { Glob.matches($0, key) }
    }

    /// Whether `password` is one of the user's (or the user needs none).
    public func accepts(_ password: String) -> Bool {
        if noPass { return true }
        let h = Array(Self.hash(password).utf8)
        var found = false
        // Every stored hash is compared in full: the time does not say which matched.
        for p in passwords {
            var diff: UInt8 = 0
            for (a, b) in zip(Array(p.utf8), h) { diff |= a ^ b }
            if diff == 0 { found = true }
        }
        return found
    }

    /// The command rules as one string (`+@all -@write`).
    public var commandsDescription: String {
        ([allCommandsBase ? "+@all" : "-@all"] + commandRules.map(\.text)).joined(separator: " ")
    }

    /// The keys part (`~*`, `~a* ~b`, or empty).
    public var keysDescription: String {
        allKeys ? "~*" : keyPatterns.map { "~" + String(decoding: $0, as: UTF8.self) }.joined(separator: " ")
    }

    /// ACL LIST's line, which is also the aclfile's: `user alice on #… ~inbox:* resetchannels -@all +@read`.
    public var line: String {
        var parts = ["user", name, enabled ? "on" : "off"]
        if noPass { parts.append("nopass") }
        parts += passwords.map { "#" + $0 }
        if !keysDescription.isEmpty { parts.append(keysDescription) }
        parts.append(allChannels ? "&*" : "resetchannels")
        parts.append(commandsDescription)
        return parts.joined(separator: " ")
    }

    /// ACL GETUSER's map.
    var getUserReply: RESPValue {
        var flags: [RESPValue] = [.bulkString(enabled ? "on" : "off")]
        if noPass { flags.append(.bulkString("nopass")) }
        return .map([
            .bulkString("flags"), .array(flags),
            .bulkString("passwords"), .array(passwords.map { .bulkString($0) }),
            .bulkString("commands"), .bulkString(commandsDescription),
            .bulkString("keys"), .bulkString(keysDescription),
            .bulkString("channels"), .bulkString(allChannels ? "&*" : ""),
            .bulkString("selectors"), .array([]),
        ])
    }
}

/// Every user, by name; its text form is the aclfile's (one `user …` line each, by name).
public struct ACLTable: Sendable, Equatable {
    public var users: [String: ACLUser]

    /// Only `default`: with `password`, `on #<sha> ~* &* +@all`; without, `on nopass ~* &* +@all`
    /// (today's single password is the default user's).
    public static func defaults(password: String?) -> ACLTable {
        var d = ACLUser(name: "default")
        d.enabled = true
        if let password { d.passwords = [ACLUser.hash(password)] } else { d.noPass = true }
        d.allKeys = true
        d.allChannels = true
        d.allCommandsBase = true
        return ACLTable(users: ["default": d])
    }

    /// Whether `name` may be a user's name (Redis: no spaces, no NUL).
    public static func validName(_ name: String) -> Bool {
        !name.isEmpty
            && !name.utf8.contains(where: { $0 == 0 || $0 == 32 || $0 == 9 || $0 == 10 || $0 == 13 })
    }

    /// Parses an aclfile: `user NAME rule…` lines (blank lines skipped); a user the file does not
    /// name keeps its default (only `default` has one). All or nothing, as Redis's ACL LOAD.
    /// - Parameter source: the file's name in errors.
    public static func parse(_ text: String, source: String, table: CommandTable, password: String?)
        throws(ACLError) -> ACLTable
    {
        var out = defaults(password: password)
        var seen: Set<String> = []
        let warning =
            "WARNING: ACL errors detected, no change to the previously active ACL rules was performed"
        for (i, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let words = raw.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\r" }).map(String.init)
            guard !words.isEmpty else { continue }
            guard words[0] == "user", words.count >= 2 else {
                throw ACLError("\(source):\(i + 1) should start with user keyword. \(warning)")
            }
            let name = words[1]
            guard seen.insert(name).inserted else {
                throw ACLError("\(source):\(i + 1): Duplicate user '\(name)' found. \(warning)")
            }
            var user = ACLUser(name: name)
            for rule in words.dropFirst(2) {
                do throws(ACLError) {
                    try user.apply(rule, table: table)
                } catch {
                    throw ACLError("\(source):\(i + 1): \(error.message). \(warning)")
                }
            }
            out.users[name] = user
        }
        return out
    }

    /// The aclfile text: one line per user, by name.
    public var text: String {
        users.keys.sorted().map { users[$0]!.line + "\n" }.joined()
    }

    /// ACL SETUSER: the rules applied in order to the user (a new one starts from `ACLUser(name:)`);
    /// any error leaves the table as it was.
    public mutating func setUser(_ name: String, _ rules: [String], table: CommandTable) throws(ACLError) {
        var user = users[name] ?? ACLUser(name: name)
        for rule in rules {
            do throws(ACLError) {
                try user.apply(rule, table: table)
            } catch {
                throw ACLError("Error in ACL SETUSER modifier '\(rule)': \(error.message)")
            }
        }
        users[name] = user
    }

    /// ACL DELUSER: how many of `names` existed; `default` cannot be removed.
    public mutating func deleteUsers(_ names: [String]) throws(ACLError) -> Int {
        if names.contains("default") { throw ACLError("The 'default' user cannot be removed") }
        var n = 0
        for name in names where users.removeValue(forKey: name) != nil { n += 1 }
        return n
    }
}

/// ACL LOG: the last refusals, newest first; a refusal like a recent one (same reason, object and
/// user within 60 s) counts in that entry instead of adding one (Redis 7.0).
public struct ACLLog: Sendable {
    public struct Entry: Sendable, Equatable {
        public var count: Int
        /// `auth`, `command` or `key`.
        public var reason: String
        public var object: String
        public var username: String
        public var updatedMicros: Int64
        public var clientInfo: String
    }
    public private(set) var entries: [Entry] = []
    /// Redis's `acllog-max-len` default.
    public static let entriesMax = 128
    static let groupMicros: Int64 = 60_000_000

    public init() {}

    public mutating func add(
        reason: String, object: String, username: String, clientInfo: String, nowMicros: Int64
    ) {
        if let i = entries.firstIndex(where: {
            $0.reason == reason && $0.object == object && $0.username == username
                && nowMicros - $0.updatedMicros < Self.groupMicros
        }) {
            var e = entries.remove(at: i)
            e.count += 1
            e.updatedMicros = nowMicros
            e.clientInfo = clientInfo
            entries.insert(e, at: 0)
            return
        }
        entries.insert(
            Entry(
                count: 1, reason: reason, object: object, username: username, updatedMicros: nowMicros,
                clientInfo: clientInfo), at: 0)
        if entries.count > Self.entriesMax { entries.removeLast() }
    }

    public mutating func reset() { entries = [] }

    /// ACL LOG [count]'s reply.
    func reply(count: Int, nowMicros: Int64) -> RESPValue {
        .array(
            entries.prefix(count).map { e in
                .map([
                    .bulkString("count"), .integer(Int64(e.count)),
                    .bulkString("reason"), .bulkString(e.reason),
                    .bulkString("context"), .bulkString("toplevel"),
                    .bulkString("object"), .bulkString(e.object),
                    .bulkString("username"), .bulkString(e.username),
                    .bulkString("age-seconds"), .double(Double(nowMicros - e.updatedMicros) / 1_000_000),
                    .bulkString("client-info"), .bulkString(e.clientInfo),
                ])
            })
    }
}

/// When a wrong password's answer goes out: at least `delay` after it came, and node-wide at
/// least `spacing` after the previous wrong password's answer, so a node answers at most
/// 1 / `spacing` wrong passwords a second however many connections guess (100/s by default).
/// Right passwords are answered at once.
public struct AuthFailurePacer: Sendable {
    public var delay: TimeAmount
    public var spacing: TimeAmount
    var next = NIODeadline.uptimeNanoseconds(0)

    public init(delay: TimeAmount = .seconds(1), spacing: TimeAmount = .milliseconds(10)) {
        self.delay = delay
        self.spacing = spacing
    }

    /// The deadline for a wrong password that arrived at `now`.
    public mutating func due(now: NIODeadline) -> NIODeadline {
        let due = max(now + delay, next)
        next = due + spacing
        return due
    }
}

/// What a node's ACL state is replicated through: the node's key requests on `\0acl`, and a
/// best-effort message to every other node.
public struct ACLReplica: Sendable {
    public let execute: @Sendable ([UInt8], KeyRequest) async -> NodeReply
    public let broadcast: @Sendable ([UInt8]) -> Void
    public init(
        execute: @escaping @Sendable ([UInt8], KeyRequest) async -> NodeReply,
        broadcast: @escaping @Sendable ([UInt8]) -> Void = { _ in }
    ) {
        self.execute = execute
        self.broadcast = broadcast
    }
}

/// The node's ACL users, log and counters, shared by every connection (behind one lock: a command
/// takes it once, for its user's permissions).
public final class AccessControl: Sendable {
    /// The replicated key holding the aclfile text of the whole cluster (ReservedKeys.swift).
    public static let key: [UInt8] = Array("\0acl".utf8)

    struct State {
        var table: ACLTable
        /// The `\0acl` value `table` came from (nil: not from the cluster; the file's or defaults)
        /// and its generation (0: none).
        var replicated: [UInt8]?
        var generation: UInt64 = 0
        var log = ACLLog()
        var pacer: AuthFailurePacer
        var authFailures = 0
        var deniedCommands = 0
        var deniedKeys = 0
        var lastWarning = NIODeadline.uptimeNanoseconds(0)
        var failuresSinceWarning = 0
    }
    let state: NIOLockedValueBox<State>
    /// The configured `password` (the default user's when no file or cluster value names one).
    public let password: String?
    /// The aclfile (`aclfile` in server.toml), or nil.
    public let file: String?
    let logger: Logger
    let replica = NIOLockedValueBox<ACLReplica?>(nil)

    public init(
        password: String?, file: String? = nil, pacer: AuthFailurePacer = AuthFailurePacer(),
        logger: Logger = Logger(label: "tern.acl")
    ) {
        self.password = password
        self.file = file
        self.logger = logger
        state = NIOLockedValueBox(State(table: .defaults(password: password), pacer: pacer))
    }

    /// The users now.
    public var table: ACLTable { state.withLockedValue { $0.table } }

    /// Wrong passwords, refused commands and refused keys since start.
    public var counts: (authFailures: Int, deniedCommands: Int, deniedKeys: Int) {
        state.withLockedValue { ($0.authFailures, $0.deniedCommands, $0.deniedKeys) }
    }

    /// Replicates changes through `replica` from now on.
    public func setReplica(_ r: ACLReplica) { replica.withLockedValue { $0 = r } }

    /// Redis's answer to ACL LOAD and SAVE without an aclfile.
    static let noFile = ACLError(
        "This Redis instance is not configured to use an ACL file. You may want to specify users via "
            + "the ACL SETUSER command and then issue a CONFIG REWRITE (assuming you have a Redis "
            + "configuration file set) in order to store users in the Redis configuration.")

    /// Reads the aclfile (at start; ACL LOAD).
    public func readFile(table: CommandTable) throws(ACLError) -> ACLTable {
        guard let file else { throw Self.noFile }
        let text: String
        do {
            text = try String(contentsOfFile: file, encoding: .utf8)
        } catch {
            throw ACLError("Error loading ACLs, opening file '\(file)': \(error.localizedDescription)")
        }
        return try ACLTable.parse(text, source: file, table: table, password: password)
    }

    /// Loads the aclfile into this node (at start, before the cluster's value is read).
    public func loadFile(table: CommandTable) throws(ACLError) {
        let t = try readFile(table: table)
        state.withLockedValue { $0.table = t }
    }

    /// ACL SAVE: this node's users into its aclfile (written beside, then renamed over it).
    public func saveFile() throws(ACLError) {
        guard let file else { throw Self.noFile }
        let text = table.text
        do {
            try text.write(toFile: file + ".tmp", atomically: false, encoding: .utf8)
            if rename(file + ".tmp", file) != 0 { throw ACLError("rename failed: errno \(errno)") }
        } catch {
            throw ACLError(
                "There was an error trying to save the ACLs. Please check the server logs for more information"
            )
        }
    }

    /// The generation of the cluster's users in force here (0: none yet, the file's or defaults).
    public var generation: UInt64 { state.withLockedValue { $0.generation } }

    /// The `\0acl` value in force here, to pass on (nil: none yet).
    public var replicatedValue: [UInt8]? { state.withLockedValue { $0.replicated } }

    /// `\0acl`'s form: a generation line, then the aclfile text.
    static func encode(generation: UInt64, text: String) -> [UInt8] {
        Array("# tern-acl generation \(generation)\n\(text)".utf8)
    }

    static func decode(_ bytes: [UInt8]) -> (generation: UInt64, text: String)? {
        let s = String(decoding: bytes, as: UTF8.self)
        let prefix = "# tern-acl generation "
        guard s.hasPrefix(prefix), let nl = s.firstIndex(of: "\n"),
            let g = UInt64(s[s.index(s.startIndex, offsetBy: prefix.count)..<nl])
        else { return nil }
        return (g, String(s[s.index(after: nl)...]))
    }

    /// A value of `\0acl` a peer passed on (or this node wrote): adopted when its generation is
    /// above the one in force, so values arriving out of order never go back.
    public func adopt(_ bytes: [UInt8], table: CommandTable) {
        guard let (g, text) = Self.decode(bytes), g > generation else { return }
        let parsed: Result<ACLTable, ACLError>
        do throws(ACLError) {
            parsed = .success(try ACLTable.parse(text, source: "\\0acl", table: table, password: password))
        } catch {
            parsed = .failure(error)
        }
        let adopted = state.withLockedValue { s -> Bool in
            guard g > s.generation else { return false }
            s.generation = g
            s.replicated = bytes
            // A value this node cannot parse (written by a newer node: an unknown command or
            // category) leaves its users as they are.
            if case .success(let t) = parsed { s.table = t }
            return true
        }
        guard adopted else { return }
        switch parsed {
        case .success(let t):
            logger.info(
                "ACL users changed in the cluster",
                metadata: ["users": "\(t.users.count)", "generation": "\(g)"])
        case .failure(let e):
            logger.error("the cluster's ACL value does not parse here, keeping ours: \(e.message)")
        }
    }

    /// A change of the users (SETUSER, DELUSER, LOAD): on a node, a read-modify-write of `\0acl`
    /// (the value read, or this node's users if the cluster has none yet; retried when another
    /// change won the instance), adopted here once chosen; without a replica, here only.
    public func change<R: Sendable>(
        table: CommandTable, _ body: @Sendable (inout ACLTable) throws(ACLError) -> R
    ) async -> Result<R, ACLError> {
        guard let replica = replica.withLockedValue({ $0 }) else {
            return state.withLockedValue { s in
                var t = s.table
                do throws(ACLError) {
                    let r = try body(&t)
                    s.table = t
                    return .success(r)
                } catch {
                    return .failure(error)
                }
            }
        }
        for _ in 0..<16 {
            let read = await replica.execute(Self.key, .read)
            guard case .value(let old) = read else {
                return .failure(ACLError(Self.failureText(read, write: false)))
            }
            var t: ACLTable
            var generation: UInt64 = 0
            if let old {
                guard let (g, text) = Self.decode(old) else {
                    return .failure(ACLError("the cluster's ACL value is not in Tern's form"))
                }
                generation = g
                do throws(ACLError) {
                    t = try ACLTable.parse(text, source: "\\0acl", table: table, password: password)
                } catch {
                    return .failure(error)
                }
            } else {
                t = self.table
            }
            let r: R
            do throws(ACLError) { r = try body(&t) } catch { return .failure(error) }
            let new = Self.encode(generation: generation + 1, text: t.text)
            let wrote = await replica.execute(Self.key, .write(.cas(expected: old, new: new)))
            switch wrote {
            case .done(.swapped(true)):
                adopt(new, table: table)
                replica.broadcast(new)
                return .success(r)
            case .done(.swapped(false)): continue
            default: return .failure(ACLError(Self.failureText(wrote, write: true)))
            }
        }
        return .failure(ACLError("ACL change not applied: too many concurrent changes, try again"))
    }

    static func failureText(_ r: NodeReply, write: Bool) -> String {
        guard case .error(let text) = CommandProcessor.failure(r, write: write) else { return "\(r)" }
        return text.hasPrefix("ERR ") ? String(text.dropFirst(4)) : text
    }

    /// Whether a new connection starts authenticated as `default` (on, and needs no password).
    public var defaultUserOpen: Bool {
        state.withLockedValue { s in s.table.users["default"].map { $0.enabled && $0.noPass } ?? false }
    }

    /// AUTH's check: `user` exists, is on, and `password` is one of its own.
    public func check(user: String, password: String) -> Bool {
        state.withLockedValue { s in s.table.users[user].map { $0.enabled && $0.accepts(password) } ?? false }
    }

    /// Counts and logs a wrong password (a warning line at most every 10 s, with how many came
    /// since the last line); returns when its answer goes out.
    func failedAuth(user: String, clientInfo: String, nowMicros: Int64) -> NIODeadline {
        let now = NIODeadline.now()
        let (due, warn) = state.withLockedValue { s -> (NIODeadline, Int) in
            s.authFailures += 1
            s.failuresSinceWarning += 1
            s.log.add(
                reason: "auth", object: "AUTH", username: user, clientInfo: clientInfo, nowMicros: nowMicros)
            let due = s.pacer.due(now: now)
            guard now - s.lastWarning >= .seconds(10) else { return (due, 0) }
            s.lastWarning = now
            defer { s.failuresSinceWarning = 0 }
            return (due, s.failuresSinceWarning)
        }
        if warn > 0 {
            logger.warning(
                "wrong password for an ACL user (\(warn) since the last such line; ACL LOG has the detail)",
                metadata: ["user": "\(user)", "client": "\(clientInfo)"])
        }
        return due
    }

    /// Why `user` may not run `args` (nil: it may): NOAUTH if the user was deleted or turned off
    /// since it authenticated, else NOPERM for the command or a key, logged in ACL LOG.
    /// - Parameter lookup: the command's entry and its container's (nil: not a command the ACL
    ///   checks); called only for a user with restrictions.
    func refusal(
        user: String, args: [[UInt8]], clientInfo: () -> String, nowMicros: () -> Int64, log: Bool = true,
        lookup: () -> (spec: CommandSpec, container: CommandSpec?)?
    ) -> RESPValue? {
        state.withLockedValue { s in
            guard let u = s.table.users[user], u.enabled else { return CommandProcessor.noAuth }
            // The default user's rules (+@all, ~*, &*) need no look at the command or its keys.
            if u.allCommandsBase && u.commandRules.isEmpty && u.allKeys && u.allChannels { return nil }
            guard let (spec, container) = lookup() else { return nil }
            guard u.permits(spec, container: container) else {
                if log {
                    s.deniedCommands += 1
                    s.log.add(
                        reason: "command", object: spec.name, username: user, clientInfo: clientInfo(),
                        nowMicros: nowMicros())
                }
                return .error("NOPERM this user has no permissions to run the '\(spec.name)' command")
            }
            if !u.allChannels && Self.subscribing.contains(spec.name) {
                if log {
                    s.deniedCommands += 1
                    s.log.add(
                        reason: "channel",
                        object: String(decoding: args.dropFirst().first ?? [], as: UTF8.self),
                        username: user, clientInfo: clientInfo(), nowMicros: nowMicros())
                }
                return .error(
                    "NOPERM this user has no permissions to access one of the channels used as arguments")
            }
            let positions =
                CommandProcessor.streamReadKeyPositions(spec.name, args) ?? SortEngine.keyPositions(
                    spec.name, args)
                ?? spec.keyPositions(args.count)
            for p in positions where !u.permits(key: args[p]) {
                if log {
                    s.deniedKeys += 1
                    s.log.add(
                        reason: "key", object: String(decoding: args[p], as: UTF8.self), username: user,
                        clientInfo: clientInfo(), nowMicros: nowMicros())
                }
                return .error(
                    "NOPERM this user has no permissions to access one of the keys used as arguments")
            }
            return nil
        }
    }

    /// The commands that subscribe to channels: they need `&*` (allchannels).
    static let subscribing: Set<String> = ["subscribe"]

    func logReply(count: Int, nowMicros: Int64) -> RESPValue {
        state.withLockedValue { $0.log.reply(count: count, nowMicros: nowMicros) }
    }
    func resetLog() { state.withLockedValue { $0.log.reset() } }
}

// MARK: - The processor's hooks

extension CommandProcessor {
    /// A short CLIENT LIST-style line for ACL LOG's client-info.
    static func clientInfo(_ s: Session) -> String {
        "id=\(s.clientID) addr=\(s.address) name=\(s.name ?? "") user=\(s.user) resp=\(s.version == .v3 ? 3 : 2)"
    }

    /// The ACL's refusal of `args` for the session's user, if any (called for every command once
    /// the connection is authenticated; AUTH, HELLO, QUIT and RESET are always allowed, as in Redis
    /// where they carry `no_auth`).
    func aclRefusal(_ name: String, _ args: [[UInt8]], _ session: Session) -> RESPValue? {
        let table = commandTable
        return access.refusal(
            user: session.user, args: args, clientInfo: { Self.clientInfo(session) }, nowMicros: clock
        ) {
            guard let spec = table.spec(for: args), !spec.flags.contains("no_auth") else { return nil }
            return (spec, spec.name.contains("|") ? table.spec(name) : nil)
        }
    }

    /// AUTH [user] password (and HELLO's AUTH): OK and the session's user set, or WRONGPASS,
    /// counted and logged.
    func authenticate(_ args: [String], _ session: inout Session) -> RESPValue {
        let (user, pass) = args.count == 2 ? (args[0], args[1]) : ("default", args[0])
        if args.count == 1, access.table.users["default"]?.noPass == true {
            return Self.err(
                "AUTH <password> called without any password configured for the default user. "
                    + "Are you sure your configuration is correct?")
        }
        guard access.check(user: user, password: pass) else {
            session.pendingAuthFailure = user
            return .error("WRONGPASS invalid username-password pair or user is disabled.")
        }
        session.authenticated = true
        session.user = user
        return .ok
    }

    /// A WRONGPASS answered after the pacer's delay (scheduled on the connection's loop, which
    /// goes on serving meanwhile); anything else at once.
    func paced(_ value: RESPValue, _ session: inout Session) -> CommandPlan {
        guard let user = session.pendingAuthFailure else { return .reply(value) }
        session.pendingAuthFailure = nil
        let info = Self.clientInfo(session)
        let access = self.access
        let now = clock()
        return .frontend { view in
            let due = access.failedAuth(user: user, clientInfo: info, nowMicros: now)
            return view.eventLoop.scheduleTask(deadline: due) { value }.futureResult
        }
    }

    /// ACL's subcommands.
    func acl(_ args: [[UInt8]], _ session: inout Session) -> CommandPlan {
        let n = args.count
        guard n >= 2 else { return .reply(Self.arity("acl")) }
        let sub = String(decoding: args[1], as: UTF8.self).lowercased()
        guard let spec = commandTable.spec("acl|" + sub) else {
            return .reply(Self.unknownSubcommand(args[1], "acl"))
        }
        guard spec.accepts(n) else { return .reply(Self.arity(spec.name)) }
        let strings = args.dropFirst(2).map { String(decoding: $0, as: UTF8.self) }
        let access = self.access
        let table = commandTable
        func changed<R: Sendable>(
            _ reply: @escaping @Sendable (R) -> RESPValue,
            _ body: @escaping @Sendable (inout ACLTable) throws(ACLError) -> R
        ) -> CommandPlan {
            .run {
                switch await access.change(table: table, body) {
                case .success(let r): return reply(r)
                case .failure(let e): return Self.aclError(e)
                }
            }
        }
        switch sub {
        case "setuser":
            let name = strings[0]
            guard ACLTable.validName(name) else {
                return .reply(Self.err("Usernames can't contain spaces or null characters"))
            }
            let rules = Array(strings.dropFirst())
            // Checked here first, so a bad rule costs no round trip.
            var probe = access.table
            do throws(ACLError) { try probe.setUser(name, rules, table: table) } catch {
                return .reply(Self.aclError(error))
            }
            return changed({ _ in .ok }) { (t: inout ACLTable) throws(ACLError) in
                try t.setUser(name, rules, table: table)
            }
        case "deluser":
            if strings.contains("default") { return .reply(Self.err("The 'default' user cannot be removed")) }
            return changed({ .integer(Int64($0)) }) { (t: inout ACLTable) throws(ACLError) in
                try t.deleteUsers(strings)
            }
        case "getuser":
            return .reply(access.table.users[strings[0]]?.getUserReply ?? .null)
        case "list":
            let t = access.table
            return .reply(.array(t.users.keys.sorted().map { .bulkString(t.users[$0]!.line) }))
        case "users":
            return .reply(.array(access.table.users.keys.sorted().map { .bulkString($0) }))
        case "whoami":
            return .reply(.bulkString(session.user))
        case "cat":
            guard let category = strings.first?.lowercased() else {
                return .reply(.array(ACLUser.categories.map { .bulkString($0) }))
            }
            guard ACLUser.categories.contains(category) else {
                return .reply(Self.err("Unknown category '\(strings[0])'"))
            }
            var names: [RESPValue] = []
            for c in table.commands {
                for s in [c] + c.subcommands where s.categories.contains("@" + category) {
                    names.append(.bulkString(s.name))
                }
            }
            return .reply(.array(names))
        case "log":
            if let arg = strings.first {
                if arg.uppercased() == "RESET" {
                    access.resetLog()
                    return .reply(.ok)
                }
                guard let count = KeyValue.strictInteger(args[2]), count >= 0 else {
                    return .reply(Self.notInteger)
                }
                return .reply(access.logReply(count: Int(count), nowMicros: clock()))
            }
            return .reply(access.logReply(count: 10, nowMicros: clock()))
        case "save":
            do throws(ACLError) { try access.saveFile() } catch { return .reply(Self.aclError(error)) }
            return .reply(.ok)
        case "load":
            let loaded: ACLTable
            do throws(ACLError) { loaded = try access.readFile(table: table) } catch {
                return .reply(Self.aclError(error))
            }
            return changed({ _ in .ok }) { (t: inout ACLTable) throws(ACLError) in t = loaded }
        case "dryrun":
            let target = Array(args.dropFirst(3))
            guard access.table.users[strings[0]] != nil else {
                return .reply(Self.err("User '\(strings[0])' not found"))
            }
            guard let cspec = table.spec(for: target) else {
                return .reply(Self.err("Command '\(strings[1])' not found"))
            }
            guard cspec.accepts(target.count) else { return .reply(Self.arity(cspec.name)) }
            let container = cspec.name.contains("|") ? table.spec(strings[1].lowercased()) : nil
            let r = access.refusal(
                user: strings[0], args: target, clientInfo: { "" }, nowMicros: { 0 }, log: false
            ) { (cspec, container) }
            switch r {
            case nil: return .reply(.ok)
            case .error(let text) where text.hasPrefix("NOPERM this user has no permissions to run"):
                return .reply(.bulkString("This user has no permissions to run the '\(cspec.name)' command"))
            case .error(let text) where text.hasPrefix("NOPERM"):
                let key = cspec.keyPositions(target.count).first {
                    access.table.users[strings[0]]?.permits(key: target[$0]) == false
                }
                let name = key.map { String(decoding: target[$0], as: UTF8.self) } ?? ""
                return .reply(.bulkString("This user has no permissions to access the '\(name)' key"))
            default:
                return .reply(.bulkString("This user is disabled"))
            }
        case "genpass":
            var bits = 256
            if n == 3 {
                guard let b = KeyValue.strictInteger(args[2]), b > 0, b <= 4096 else {
                    return .reply(
                        Self.err(
                            "ACL GENPASS argument must be the number of bits for the output password, a positive number up to 4096"
                        ))
                }
                bits = Int(b)
            }
            let chars = (bits + 3) / 4
            var g = SystemRandomNumberGenerator()
            let bytes = (0..<(chars + 1) / 2).map { _ in UInt8.random(in: 0...255, using: &g) }
            let hex = bytes.map { String(format: "%02x", $0) }.joined()
            return .reply(.bulkString(String(hex.prefix(chars))))
        default:
            return .reply(
                Self.help(
                    "acl",
                    [
                        "CAT [<category>]",
                        "    List all commands that belong to <category>, or all command categories",
                        "    when no category is specified.",
                        "DELUSER <username> [<username> ...]", "    Delete a list of users.",
                        "DRYRUN <username> <command> [<arg> ...]",
                        "    Returns whether the user can execute the given command without executing the command.",
                        "GETUSER <username>", "    Get the user's details.",
                        "GENPASS [<bits>]",
                        "    Generate a secure 256-bit user password. The optional `bits` argument can",
                        "    be used to specify a different size.",
                        "LIST", "    Show users details in config file format.",
                        "LOAD", "    Reload users from the ACL file (and publish them to every node).",
                        "LOG [<count> | RESET]", "    Show the ACL log entries.",
                        "SAVE", "    Save the current config to the ACL file.",
                        "SETUSER <username> <attribute> [<attribute> ...]",
                        "    Create or modify a user with the specified attributes.",
                        "USERS", "    List all the registered usernames.",
                        "WHOAMI", "    Return the current connection username.",
                    ]))
        }
    }

    static func aclError(_ e: ACLError) -> RESPValue {
        e.message.hasPrefix("NOQUORUM") || e.message.hasPrefix("UNAVAILABLE")
            ? .error(e.message) : err(e.message)
    }
}

extension CommandSpec {
    /// ACL and its subcommands, as Redis 7.0's COMMAND INFO shows them.
    static let acl: CommandSpec = {
        let adminFlags = ["admin", "noscript", "loading", "stale"]
        let plain = ["noscript", "loading", "stale"]
        func s(
            _ name: String, _ arity: Int, _ flags: [String], _ cats: [String], _ summary: String,
            _ since: String
        )
            -> CommandSpec
        {
            sub("acl|" + name, arity, flags, cats, summary, since: since, group: "server")
        }
        return CommandSpec(
            "acl", arity: -2, flags: [], categories: ["@slow"],
            summary: "A container for Access List Control commands.",
            since: "6.0.0", group: "server",
            subcommands: [
                s(
                    "cat", -2, plain, ["@slow"],
                    "Lists the ACL categories, or the commands inside a category.", "6.0.0"),
                s(
                    "deluser", -3, adminFlags, admin, "Deletes ACL users, and terminates their connections.",
                    "6.0.0"),
                s(
                    "dryrun", -4, adminFlags, admin,
                    "Simulates the execution of a command by a user, without executing the command.", "7.0.0"),
                s(
                    "genpass", -2, plain, ["@slow"],
                    "Generates a pseudorandom, secure password that can be used to identify ACL users.",
                    "6.0.0"),
                s("getuser", 3, adminFlags, admin, "Lists the ACL rules of a user.", "6.0.0"),
                s("list", 2, adminFlags, admin, "Dumps the effective rules in ACL file format.", "6.0.0"),
                s("load", 2, adminFlags, admin, "Reloads the rules from the configured ACL file.", "6.0.0"),
                s(
                    "log", -2, adminFlags, admin, "Lists recent security events generated due to ACL rules.",
                    "6.0.0"),
                s(
                    "save", 2, adminFlags, admin, "Saves the effective ACL rules in the configured ACL file.",
                    "6.0.0"),
                s(
                    "setuser", -3, adminFlags, admin, "Creates and modifies an ACL user and its rules.",
                    "6.0.0"),
                s("users", 2, adminFlags, admin, "Lists all ACL users.", "6.0.0"),
                s(
                    "whoami", 2, plain, ["@slow"],
                    "Returns the authenticated username of the current connection.", "6.0.0"),
                s(
                    "help", 2, ["loading", "stale"], ["@slow"],
                    "Returns helpful text about the different subcommands.", "6.0.0"),
            ])
    }()
}

extension AccessControl {
    /// The peer-message kind of ACL values (1 seq, 2 sync, 3 repair: Node.setServiceHandler).
    static let serviceKind: UInt8 = 5
    /// How often a node passes its `\0acl` value to every other node, so that one that missed a
    /// change (down, cut off, restarted) catches up.
    public static let gossipInterval = TimeAmount.seconds(2)

    /// Wires `access` to `node`: changes go through `\0acl` and are sent to every node at once;
    /// values from peers are adopted; every `gossipInterval` the value in force is sent again.
    /// No read of `\0acl` happens but in a change: a read's Paxos round loads the key on its
    /// replicas, and on a replica still rebuilding (learner-only) an absent key loads as damaged
    /// and keeps the node learner-only (docs/ACL.md).
    static func startSharing(_ access: AccessControl, node: Node, table: CommandTable) -> RepeatedTask {
        let others = node.map.nodes.map(\.id).filter { $0 != node.id }
        let broadcast: @Sendable ([UInt8]) -> Void = { bytes in
            for peer in others { node.sendService(serviceKind, bytes, to: peer) }
        }
        node.setServiceHandler(serviceKind) { _, payload in access.adopt(payload, table: table) }
        access.setReplica(
            ACLReplica(
                execute: { key, request in await node.execute(key: key, request) }, broadcast: broadcast))
        return node.eventLoop.scheduleRepeatedTask(initialDelay: gossipInterval, delay: gossipInterval) { _ in
            if let bytes = access.replicatedValue { broadcast(bytes) }
        }
    }
}
