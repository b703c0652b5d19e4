import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import TernConsensus
import TernRESP
import TernServer
import Testing

/// A processor with Tern's service commands in its table (so `+@seq`, `+@sync` name commands).
func aclProcessor(password: String? = nil, delay: TimeAmount = .milliseconds(200)) -> CommandProcessor {
    var p = CommandProcessor(password: password, maxValueBytes: 1 << 20)
    p.modules = [FakeModule()]
    p.access = AccessControl(password: password, pacer: AuthFailurePacer(delay: delay))
    return p
}

/// The specs of the seq and sync commands, with no behaviour (ACL only looks at the table).
struct FakeModule: CommandModule {
    func plan(name: String, args: [[UInt8]], session: inout Session) -> CommandPlan? {
        commandNames.contains(name) ? .reply(.ok) : nil
    }
    var commandSpecs: [CommandSpec] {
        [
            CommandSpec(
                "seq.next", arity: -2, flags: ["write"], keys: (1, 1, 1),
                categories: ["@write", "@fast", "@seq"],
                summary: "s", group: "module"),
            CommandSpec(
                "msg.send", arity: 3, flags: ["write"], keys: (1, 1, 1),
                categories: ["@write", "@slow", "@sync"],
                summary: "s", group: "module"),
            CommandSpec(
                "subscribe", arity: -2, flags: ["pubsub"], categories: ["@pubsub", "@slow", "@sync"],
                summary: "s", group: "pubsub"),
        ]
    }
}

/// Runs one command to its answer (awaiting `.run`, `.frontend` and `.requests` with canned
/// replies), RESP2-encoded as a client reads it.
func aclRun(
    _ p: CommandProcessor, _ args: [String], _ s: inout Session, replies: [NodeReply] = []
) async -> String {
    let plan = p.plan(RESPCommand(args: args.map { Array($0.utf8) }), session: &s)
    let value: RESPValue
    switch plan {
    case .reply(let v), .replyAndClose(let v): value = v
    case .requests(let reqs, let build):
        value = build(replies.isEmpty ? reqs.map { _ in .value(nil) } : replies)
    case .run(let task): value = await task()
    case .frontend(let body): value = (try? await body(FakeView()).get()) ?? .simpleString("FAILED")
    case .future(let make), .barrier(let make): value = (try? await make().get()) ?? .simpleString("FAILED")
    case .connection(let body): value = body(ConnectionOutlet(deliver: { _ in })).first ?? .null
    case .blocking(let call):
        guard
            case .answer(let v) = call.step(
                replies.isEmpty ? call.requests.map { _ in .value(nil) } : replies)
        else {
            value = .simpleString("WAIT")
            break
        }
        value = v
    }
    var b = ByteBuffer()
    RESPEncoder.encode(value, version: .v2, into: &b)
    return String(decoding: b.readableBytesView, as: UTF8.self)
}

@Suite struct ACLTests {
    let table = aclProcessor().commandTable

    @Test("Rules become Redis 7's ACL LIST lines (as redis-server 7.0.15 prints them)")
    func lines() throws {
        var t = ACLTable.defaults(password: nil)
        try t.setUser("alice", ["on", ">pw", "~inbox:*", "+@read"], table: table)
        try t.setUser("bob", ["on", "nopass", "allkeys", "allcommands", "-@write"], table: table)
        try t.setUser("carol", [], table: table)
        try t.setUser("i", ["+client", "-client|kill", "+config|get"], table: table)
        try t.setUser("h", ["on", ">x", "nopass", "resetpass"], table: table)
        try t.setUser("f", ["on", ">x", "~k", "reset"], table: table)
        #expect(
            t.text == """
                user alice on #30c952fab122c3f9759f02a6d95c3758b246b4fee239957b2d4fee46e26170c4 ~inbox:* resetchannels -@all +@read
                user bob on nopass ~* resetchannels +@all -@write
                user carol off resetchannels -@all
                user default on nopass ~* &* +@all
                user f off resetchannels -@all
                user h on resetchannels -@all
                user i off resetchannels -@all +client -client|kill +config|get

                """)
        // A later rule on the same command replaces the earlier one.
        try t.setUser("i", ["-config|get", "+@seq", "+@sync"], table: table)
        #expect(t.users["i"]!.commandsDescription == "-@all +client -client|kill -config|get +@seq +@sync")
        // The file form reads back to the same users.
        #expect(try ACLTable.parse(t.text, source: "f", table: table, password: nil) == t)
        // The configured password is the default user's.
        #expect(
            ACLTable.defaults(password: "pw").users["default"]!.line
                == "user default on #30c952fab122c3f9759f02a6d95c3758b246b4fee239957b2d4fee46e26170c4 ~* &* +@all"
        )
    }

    @Test("Errors in Redis 7's words")
    func errors() {
        var t = ACLTable.defaults(password: nil)
        func message(_ rules: [String]) -> String? {
            do throws(ACLError) {
                try t.setUser("x", rules, table: table)
                return nil
            } catch { return error.message }
        }
        #expect(message(["badrule"]) == "Error in ACL SETUSER modifier 'badrule': Syntax error")
        #expect(
            message(["+nosuch"])
                == "Error in ACL SETUSER modifier '+nosuch': Unknown command or category name in ACL")
        #expect(
            message(["+@nosuch"])
                == "Error in ACL SETUSER modifier '+@nosuch': Unknown command or category name in ACL")
        #expect(
            message(["#abc"])
                == "Error in ACL SETUSER modifier '#abc': The password hash must be exactly 64 characters and "
                + "contain only lowercase hexadecimal characters")
        #expect(
            message(["<nonexist"])
                == "Error in ACL SETUSER modifier '<nonexist': The password you are trying to remove from the user "
                + "does not exist")
        #expect(
            message(["allkeys", "~x"])
                == "Error in ACL SETUSER modifier '~x': Adding a pattern after the * pattern (or the 'allkeys' flag) "
                + "is not valid and does not have any effect. Try 'resetkeys' to start with an empty list of patterns"
        )
        // A failed SETUSER changes nothing.
        #expect(t.users["x"] == nil)
        #expect(throws: ACLError("The 'default' user cannot be removed")) {
            _ = try t.deleteUsers(["default"])
        }
        #expect(
            throws: ACLError(
                "f:2: Syntax error. WARNING: ACL errors detected, no change to the previously active ACL rules was performed"
            )
        ) {
            _ = try ACLTable.parse("user a on\nuser z on bogus\n", source: "f", table: table, password: nil)
        }
        #expect(
            throws: ACLError(
                "f:1 should start with user keyword. WARNING: ACL errors detected, no change to the previously "
                    + "active ACL rules was performed")
        ) {
            _ = try ACLTable.parse("alice on\n", source: "f", table: table, password: nil)
        }
    }

    @Test("Commands by category and name, subcommands through their container, keys by glob (case-sensitive)")
    func matching() throws {
        var u = ACLUser(name: "u")
        for r in ["on", "-@all", "+@read", "+client", "-client|kill", "~inbox:*", "~user:[0-9]?"] {
            try u.apply(r, table: table)
        }
        #expect(u.permits(table.spec("get")!))
        #expect(!u.permits(table.spec("set")!))
        #expect(u.permits(table.spec("client|id")!, container: table.spec("client")))
        #expect(!u.permits(table.spec("client|kill")!, container: table.spec("client")))
        #expect(u.permits(key: Array("inbox:42".utf8)))
        #expect(!u.permits(key: Array("INBOX:42".utf8)))
        #expect(u.permits(key: Array("user:7x".utf8)))
        #expect(!u.permits(key: Array("user:x7".utf8)))
        try u.apply("+@seq", table: table)
        #expect(u.permits(table.spec("seq.next")!))
        #expect(!u.permits(table.spec("msg.send")!))
        try u.apply("+@sync", table: table)
        #expect(u.permits(table.spec("msg.send")!))
    }

    @Test("A user without @write gets NOPERM; keys outside its patterns too; both in ACL LOG")
    func noperm() async {
        let p = aclProcessor()
        var admin = Session(authenticated: true)
        #expect(
            await aclRun(p, ["ACL", "SETUSER", "reader", "on", ">r", "~inbox:*", "+@read"], &admin)
                == "+OK\r\n")
        var s = Session(authenticated: true)
        #expect(await aclRun(p, ["AUTH", "reader", "r"], &s) == "+OK\r\n")
        #expect(await aclRun(p, ["ACL", "WHOAMI"], &s).contains("NOPERM"))
        #expect(await aclRun(p, ["GET", "inbox:1"], &s) == "$-1\r\n")
        #expect(
            await aclRun(p, ["SET", "inbox:1", "v"], &s)
                == "-NOPERM this user has no permissions to run the 'set' command\r\n")
        #expect(
            await aclRun(p, ["MGET", "inbox:1", "other"], &s)
                == "-NOPERM this user has no permissions to access one of the keys used as arguments\r\n")
        let log = await aclRun(p, ["ACL", "LOG"], &admin)
        #expect(log.hasPrefix("*3\r\n"))  // key, command, whoami's command
        #expect(
            log.contains("$3\r\nkey\r\n$7\r\ncontext\r\n$8\r\ntoplevel\r\n$6\r\nobject\r\n$5\r\nother\r\n"))
        #expect(log.contains("$6\r\nobject\r\n$3\r\nset\r\n$8\r\nusername\r\n$6\r\nreader\r\n"))
        #expect(p.access.counts.deniedCommands == 2 && p.access.counts.deniedKeys == 1)
        #expect(await aclRun(p, ["ACL", "LOG", "RESET"], &admin) == "+OK\r\n")
        #expect(await aclRun(p, ["ACL", "LOG"], &admin) == "*0\r\n")
        // Deleted: the connection's next command is refused.
        #expect(await aclRun(p, ["ACL", "DELUSER", "reader", "nobody"], &admin) == ":1\r\n")
        #expect(await aclRun(p, ["GET", "inbox:1"], &s) == "-NOAUTH Authentication required.\r\n")
        // SUBSCRIBE needs &*.
        _ = await aclRun(p, ["ACL", "SETUSER", "sub", "on", "nopass", "+@all"], &admin)
        var t = Session(authenticated: true)
        _ = await aclRun(p, ["AUTH", "sub", "x"], &t)
        #expect(await aclRun(p, ["SUBSCRIBE", "sync:1"], &t).hasPrefix("-NOPERM"))
        _ = await aclRun(p, ["ACL", "SETUSER", "sub", "&*"], &admin)
        #expect(await aclRun(p, ["SUBSCRIBE", "sync:1"], &t) == "+OK\r\n")
    }

    @Test("A wrong password: WRONGPASS after the delay, counted, logged; a right one at once")
    func wrongPassword() async {
        let p = aclProcessor(password: "pw", delay: .milliseconds(300))
        var s = Session(authenticated: p.access.defaultUserOpen)
        #expect(!s.authenticated)
        var start = Date()
        #expect(
            await aclRun(p, ["AUTH", "nope"], &s)
                == "-WRONGPASS invalid username-password pair or user is disabled.\r\n")
        #expect(Date().timeIntervalSince(start) >= 0.29)
        #expect(!s.authenticated)
        start = Date()
        #expect(
            await aclRun(p, ["HELLO", "3", "AUTH", "ghost", "x"], &s)
                == "-WRONGPASS invalid username-password pair or user is disabled.\r\n")
        #expect(Date().timeIntervalSince(start) >= 0.29)
        #expect(p.access.counts.authFailures == 2)
        start = Date()
        #expect(await aclRun(p, ["AUTH", "default", "pw"], &s) == "+OK\r\n")
        #expect(Date().timeIntervalSince(start) < 0.25)
        let log = await aclRun(p, ["ACL", "LOG"], &s)
        #expect(
            log.contains(
                "$6\r\nreason\r\n$4\r\nauth\r\n$7\r\ncontext\r\n$8\r\ntoplevel\r\n$6\r\nobject\r\n$4\r\nAUTH\r\n"
            ))
        #expect(log.contains("$8\r\nusername\r\n$5\r\nghost\r\n"))
        // Nodewide spacing: the n-th wrong password within the delay waits n × spacing more.
        var pacer = AuthFailurePacer(delay: .seconds(1), spacing: .milliseconds(10))
        let now = NIODeadline.now()
        #expect(pacer.due(now: now) == now + .seconds(1))
        #expect(pacer.due(now: now) == now + .milliseconds(1010))
        #expect(pacer.due(now: now + .seconds(5)) == now + .seconds(6))
    }

    @Test("ACL GETUSER, USERS, CAT, DRYRUN, GENPASS, SAVE without a file")
    func commands() async {
        let p = aclProcessor()
        var s = Session(authenticated: true)
        _ = await aclRun(p, ["ACL", "SETUSER", "dave", "on", ">p", "~a*", "-@all", "+get", "+set"], &s)
        #expect(
            await aclRun(p, ["ACL", "GETUSER", "dave"], &s)
                == "*12\r\n$5\r\nflags\r\n*1\r\n$2\r\non\r\n$9\r\npasswords\r\n*1\r\n"
                + "$64\r\n148de9c5a7a44d19e56cd9ae1a554bf67847afb0c58f6e12fa29ac7ddfca9940\r\n"
                + "$8\r\ncommands\r\n$15\r\n-@all +get +set\r\n$4\r\nkeys\r\n$3\r\n~a*\r\n$8\r\nchannels\r\n$0\r\n\r\n"
                + "$9\r\nselectors\r\n*0\r\n")
        #expect(await aclRun(p, ["ACL", "GETUSER", "nosuch"], &s) == "$-1\r\n")
        #expect(await aclRun(p, ["ACL", "USERS"], &s) == "*2\r\n$4\r\ndave\r\n$7\r\ndefault\r\n")
        #expect(await aclRun(p, ["ACL", "CAT", "nosuch"], &s) == "-ERR Unknown category 'nosuch'\r\n")
        #expect(await aclRun(p, ["ACL", "CAT", "seq"], &s) == "*1\r\n$8\r\nseq.next\r\n")
        #expect(await aclRun(p, ["ACL", "CAT"], &s).contains("$4\r\nsync\r\n"))
        #expect(await aclRun(p, ["ACL", "DRYRUN", "dave", "get", "a"], &s) == "+OK\r\n")
        #expect(
            await aclRun(p, ["ACL", "DRYRUN", "dave", "del", "a"], &s)
                == "$53\r\nThis user has no permissions to run the 'del' command\r\n")
        #expect(
            await aclRun(p, ["ACL", "DRYRUN", "dave", "get", "b"], &s)
                == "$50\r\nThis user has no permissions to access the 'b' key\r\n")
        #expect(
            await aclRun(p, ["ACL", "DRYRUN", "nouser", "get", "a"], &s) == "-ERR User 'nouser' not found\r\n"
        )
        #expect(await aclRun(p, ["ACL", "GENPASS"], &s).hasPrefix("$64\r\n"))
        #expect(await aclRun(p, ["ACL", "GENPASS", "32"], &s).hasPrefix("$8\r\n"))
        #expect(
            await aclRun(p, ["ACL", "SAVE"], &s).hasPrefix(
                "-ERR This Redis instance is not configured to use an ACL file."))
        #expect(await aclRun(p, ["ACL", "FOO"], &s) == "-ERR unknown subcommand 'FOO'. Try ACL HELP.\r\n")
        #expect(
            await aclRun(p, ["ACL", "SETUSER"], &s)
                == "-ERR wrong number of arguments for 'acl|setuser' command\r\n")
        #expect(
            await aclRun(p, ["ACL", "SETUSER", "a b", "on"], &s)
                == "-ERR Usernames can't contain spaces or null characters\r\n")
        #expect(
            await aclRun(p, ["ACL", "DELUSER", "default"], &s)
                == "-ERR The 'default' user cannot be removed\r\n")
        // The default user's password, changed by ACL, is what AUTH <password> takes.
        _ = await aclRun(p, ["ACL", "SETUSER", "default", "resetpass", ">new"], &s)
        #expect(!p.access.defaultUserOpen)
        var fresh = Session(authenticated: false)
        #expect(await aclRun(p, ["AUTH", "new"], &fresh) == "+OK\r\n")
        #expect(fresh.user == "default")
    }

    @Test("ACL SAVE writes the aclfile, a node loads it at start, ACL LOAD reads it again")
    func file() async throws {
        let path = NSTemporaryDirectory() + "tern-acl-\(UInt32.random(in: 0...UInt32.max)).acl"
        defer { try? FileManager.default.removeItem(atPath: path) }
        try "user alice on >a ~inbox:* +@read\n".write(toFile: path, atomically: true, encoding: .utf8)
        var p = aclProcessor()
        p.access = AccessControl(password: "pw", file: path)
        try p.access.loadFile(table: p.commandTable)
        #expect(p.access.check(user: "alice", password: "a"))
        #expect(p.access.check(user: "default", password: "pw"))
        var s = Session(authenticated: true)
        _ = await aclRun(p, ["ACL", "SETUSER", "bob", "on", "nopass"], &s)
        #expect(await aclRun(p, ["ACL", "SAVE"], &s) == "+OK\r\n")
        let saved = try String(contentsOfFile: path, encoding: .utf8)
        #expect(saved.contains("user bob on nopass resetchannels -@all\n"))
        #expect(
            saved.contains(
                "user default on #30c952fab122c3f9759f02a6d95c3758b246b4fee239957b2d4fee46e26170c4 ~* &* +@all\n"
            ))
        try "user carol on >c\n".write(toFile: path, atomically: true, encoding: .utf8)
        #expect(await aclRun(p, ["ACL", "LOAD"], &s) == "+OK\r\n")
        #expect(await aclRun(p, ["ACL", "USERS"], &s) == "*2\r\n$5\r\ncarol\r\n$7\r\ndefault\r\n")
        try "user carol on bogus\n".write(toFile: path, atomically: true, encoding: .utf8)
        #expect(
            await aclRun(p, ["ACL", "LOAD"], &s)
                == "-ERR \(path):1: Syntax error. WARNING: ACL errors detected, no change to the previously active ACL rules was performed\r\n"
        )
        #expect(p.access.table.users["carol"] != nil)
    }
}

@Suite struct ACLReplicationTests {
    @Test("Values from peers are adopted by generation: an older one arriving late never goes back")
    func generations() {
        let p = aclProcessor()
        let table = p.commandTable
        var a = ACLTable.defaults(password: nil)
        try? a.setUser("a", ["on"], table: table)
        var b = ACLTable.defaults(password: nil)
        try? b.setUser("b", ["on"], table: table)
        p.access.adopt(Array("# tern-acl generation 2\n\(b.text)".utf8), table: table)
        #expect(p.access.table.users["b"] != nil && p.access.generation == 2)
        p.access.adopt(Array("# tern-acl generation 1\n\(a.text)".utf8), table: table)
        #expect(p.access.table.users["b"] != nil && p.access.table.users["a"] == nil)
        // A value that does not parse here keeps the users in force.
        p.access.adopt(Array("# tern-acl generation 3\nuser x on +nosuch\n".utf8), table: table)
        #expect(p.access.table.users["b"] != nil && p.access.generation == 3)
        p.access.adopt(Array("user y on\n".utf8), table: table)
        #expect(p.access.table.users["y"] == nil)
    }

    @Test("A change is a compare-and-set of \\0acl with the next generation, adopted and sent to peers")
    func change() async {
        let store = NIOLockedValueBox<[UInt8]?>(nil)
        let sent = NIOLockedValueBox<[[UInt8]]>([])
        let p = aclProcessor()
        p.access.setReplica(
            ACLReplica(
                execute: { key, request in
                    #expect(key == AccessControl.key)
                    switch request {
                    case .read: return .value(store.withLockedValue { $0 })
                    case .write(.cas(let expected, let new)):
                        return store.withLockedValue { v in
                            guard v == expected else { return .done(.swapped(false)) }
                            v = new
                            return .done(.swapped(true))
                        }
                    default: return .unavailable("unexpected")
                    }
                }, broadcast: { bytes in sent.withLockedValue { $0.append(bytes) } }))
        var s = Session(authenticated: true)
        #expect(await aclRun(p, ["ACL", "SETUSER", "a", "on"], &s) == "+OK\r\n")
        #expect(await aclRun(p, ["ACL", "SETUSER", "b", "on"], &s) == "+OK\r\n")
        let value = String(decoding: store.withLockedValue { $0 } ?? [], as: UTF8.self)
        #expect(value.hasPrefix("# tern-acl generation 2\nuser a on resetchannels -@all\nuser b on"))
        #expect(p.access.generation == 2 && sent.withLockedValue { $0.count } == 2)
        // Another node changed it meanwhile: the next change starts from the cluster's users.
        var other = ACLTable.defaults(password: nil)
        try? other.setUser("c", ["on"], table: p.commandTable)
        store.withLockedValue { $0 = Array("# tern-acl generation 7\n\(other.text)".utf8) }
        #expect(await aclRun(p, ["ACL", "DELUSER", "a"], &s) == ":0\r\n")
        #expect(p.access.generation == 8)
        #expect(await aclRun(p, ["ACL", "USERS"], &s) == "*2\r\n$1\r\nc\r\n$7\r\ndefault\r\n")
    }
}

@Suite struct ACLConfigTests {
    @Test("server.toml's aclfile: read, written back, refused when empty")
    func aclfile() throws {
        let c = try ServerConfig(
            toml:
                "[server]\nsecret = \"\(String(repeating: "ab", count: 16))\"\naclfile = \"/etc/tern/users.acl\"\n"
        )
        #expect(c.aclFile == "/etc/tern/users.acl")
        #expect(try ServerConfig(toml: c.toml()).aclFile == "/etc/tern/users.acl")
        #expect(throws: ServerConfigError.self) {
            _ = try ServerConfig(
                toml: "[server]\nsecret = \"\(String(repeating: "ab", count: 16))\"\naclfile = \"\"\n")
        }
    }
}
