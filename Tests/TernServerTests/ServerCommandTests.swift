import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import TernConsensus
import TernRESP
import TernServer
import Testing

/// A front end for `CommandProcessor`'s `.frontend` plans: canned clients and figures, and a
/// record of what the commands changed.
final class FakeView: FrontendView, Sendable {
    let loop = MultiThreadedEventLoopGroup.singleton.next()
    var eventLoop: any EventLoop { loop }
    let meFacts: ClientFacts
    let all: [ClientFacts]
    let figures: ServerFacts
    struct Changes {
        var maxClients = 10_000
        var killed: [ClientFilter] = []
        var resets = 0
    }
    let changes = NIOLockedValueBox(Changes())

    init(
        me: ClientFacts = ClientFacts(id: 7, addr: "127.0.0.1:5000", laddr: "127.0.0.1:7379"),
        clients: [ClientFacts] = [], facts: ServerFacts = ServerFacts()
    ) {
        meFacts = me
        all = clients.isEmpty ? [me] : clients
        figures = facts
    }

    func me() -> ClientFacts { meFacts }
    func clients() -> EventLoopFuture<[ClientFacts]> { loop.makeSucceededFuture(all) }
    func facts() -> EventLoopFuture<ServerFacts> { loop.makeSucceededFuture(figures) }
    func kill(_ filter: ClientFilter) -> EventLoopFuture<Int> {
        changes.withLockedValue { $0.killed.append(filter) }
        return loop.makeSucceededFuture(all.filter { filter.matches($0) }.count)
    }
    var maxClients: Int { changes.withLockedValue { $0.maxClients } }
    func setMaxClients(_ n: Int) { changes.withLockedValue { $0.maxClients = n } }
    var port: Int { 7379 }
    func resetStats() { changes.withLockedValue { $0.resets += 1 } }
    func unblock(_ id: UInt64, error: Bool) -> EventLoopFuture<Bool> { eventLoop.makeSucceededFuture(false) }
    func monitor() -> Bool { false }
}

/// The processor with the two services' command tables, as the server has it (the services'
/// `plan` is never reached by these tests).
struct SpecModule: CommandModule {
    let commandSpecs: [CommandSpec]
    func plan(name: String, args: [[UInt8]], session: inout Session) -> CommandPlan? { nil }
}

@Suite struct ServerCommandTests {
    @Test("COMMAND COUNT, INFO, LIST, GETKEYS, DOCS: the table with Redis 7's figures and errors")
    func command() {
        var p = CommandProcessor(password: nil, maxValueBytes: 16)
        p.modules = [
            SpecModule(commandSpecs: [
                CommandSpec(
                    "seq.next", arity: -2, flags: ["write"], categories: ["@write"], summary: "s",
                    group: "module"),
                // As the keyspace module's SORT (its keys: SortEngine.keyPositions).
                CommandSpec(
                    "sort", arity: -2, flags: ["write"], keys: (1, 1, 1), categories: ["@write"],
                    summary: "s",
                    group: "generic"),
            ])
        ]
        var s = Session(authenticated: true)
        func run(_ args: [String]) -> String { wire(args, session: &s, processor: p).0 }
        let count = p.commandTable.commands.count
        #expect(run(["COMMAND", "COUNT"]) == ":\(count)\r\n")
        #expect(p.commandTable.spec("seq.next") != nil)
        #expect(p.commandTable.spec("client|kill")?.arity == -3)
        // Redis 7.0's own entry for GET, byte for byte (RESP2).
        #expect(
            run(["COMMAND", "INFO", "get"])
                == "*1\r\n*10\r\n$3\r\nget\r\n:2\r\n*2\r\n+readonly\r\n+fast\r\n:1\r\n:1\r\n:1\r\n"
                + "*3\r\n+@read\r\n+@string\r\n+@fast\r\n*0\r\n"
                + "*1\r\n*6\r\n$5\r\nflags\r\n*2\r\n+RO\r\n+access\r\n"
                + "$12\r\nbegin_search\r\n*4\r\n$4\r\ntype\r\n$5\r\nindex\r\n$4\r\nspec\r\n*2\r\n$5\r\nindex\r\n:1\r\n"
                + "$9\r\nfind_keys\r\n*4\r\n$4\r\ntype\r\n$5\r\nrange\r\n$4\r\nspec\r\n"
                + "*6\r\n$7\r\nlastkey\r\n:0\r\n$7\r\nkeystep\r\n:1\r\n$5\r\nlimit\r\n:0\r\n*0\r\n")
        #expect(run(["COMMAND", "INFO", "nosuch"]) == "*1\r\n$-1\r\n")
        // Redis 7.0's entry for CLIENT LIST: its tip, no key spec.
        #expect(
            run(["COMMAND", "INFO", "client|list"])
                == "*1\r\n*10\r\n$11\r\nclient|list\r\n:-2\r\n*4\r\n+admin\r\n+noscript\r\n+loading\r\n+stale\r\n"
                + ":0\r\n:0\r\n:0\r\n*4\r\n+@admin\r\n+@slow\r\n+@dangerous\r\n+@connection\r\n"
                + "*1\r\n$23\r\nnondeterministic_output\r\n*0\r\n*0\r\n")
        // RESP3: flags, categories, tips, key specs and subcommands are sets, as Redis 7.0 sends them.
        var s3 = Session(authenticated: true)
        s3.version = .v3
        #expect(
            wire(["COMMAND", "INFO", "time"], session: &s3, processor: p).0
                == "*1\r\n*10\r\n$4\r\ntime\r\n:1\r\n~3\r\n+loading\r\n+stale\r\n+fast\r\n:0\r\n:0\r\n:0\r\n"
                + "~1\r\n+@fast\r\n~1\r\n$23\r\nnondeterministic_output\r\n~0\r\n~0\r\n")
        #expect(run(["command", "info", "MSET"]).contains("$4\r\nmset\r\n:-3\r\n"))
        #expect(run(["COMMAND", "GETKEYS", "MSET", "a", "1", "b", "2"]) == "*2\r\n$1\r\na\r\n$1\r\nb\r\n")
        #expect(
            run(["COMMAND", "GETKEYS", "DEL", "x", "y", "z"]) == "*3\r\n$1\r\nx\r\n$1\r\ny\r\n$1\r\nz\r\n")
        #expect(run(["COMMAND", "GETKEYS", "PING", "x"]) == "-ERR The command has no key arguments\r\n")
        // ... and are flagged movablekeys, as Redis flags them (introspection-2's "… is marked with movablekeys").
        #expect(run(["COMMAND", "INFO", "LMPOP"]).contains("movablekeys"))
        #expect(!run(["COMMAND", "INFO", "LPOP"]).contains("movablekeys"))
        // Commands that count their keys: only the keys (Redis's "COMMAND GETKEYS MORE THAN 256 KEYS").
        #expect(
            run(["COMMAND", "GETKEYS", "LMPOP", "2", "a", "b", "LEFT"]) == "*2\r\n$1\r\na\r\n$1\r\nb\r\n")
        #expect(
            run(["COMMAND", "GETKEYS", "BLMPOP", "0", "2", "a", "b", "LEFT"])
                == "*2\r\n$1\r\na\r\n$1\r\nb\r\n")
        // GETKEYSANDFLAGS: Redis 7.0's per-key flags (introspection-2's "COMMAND GETKEYSANDFLAGS").
        #expect(
            run(["COMMAND", "GETKEYSANDFLAGS", "SET", "k1", "v1"])
                == "*1\r\n*2\r\n$2\r\nk1\r\n*2\r\n+OW\r\n+update\r\n")
        #expect(
            run(["COMMAND", "GETKEYSANDFLAGS", "SET", "k1", "v1", "GET"])
                == "*1\r\n*2\r\n$2\r\nk1\r\n*3\r\n+RW\r\n+access\r\n+update\r\n")
        #expect(
            run(["COMMAND", "GETKEYSANDFLAGS", "LMOVE", "k1", "k2", "left", "right"])
                == "*2\r\n*2\r\n$2\r\nk1\r\n*3\r\n+RW\r\n+access\r\n+delete\r\n"
                + "*2\r\n$2\r\nk2\r\n*2\r\n+RW\r\n+insert\r\n")
        #expect(
            run(["COMMAND", "GETKEYSANDFLAGS", "SORT", "k1", "STORE", "k2"])
                == "*2\r\n*2\r\n$2\r\nk1\r\n*2\r\n+RO\r\n+access\r\n*2\r\n$2\r\nk2\r\n*2\r\n+OW\r\n+update\r\n"
        )
        #expect(
            run(["COMMAND", "GETKEYS", "GET", "a", "b"])
                == "-ERR Invalid number of arguments specified for command\r\n")
        #expect(run(["COMMAND", "GETKEYS", "NOSUCH", "a"]) == "-ERR Invalid command specified\r\n")
        #expect(
            run(["COMMAND", "GETKEYS", "GET"])
                == "-ERR wrong number of arguments for 'command|getkeys' command\r\n")
        #expect(run(["COMMAND", "LIST", "FILTERBY", "PATTERN", "seq*"]) == "*1\r\n$8\r\nseq.next\r\n")
        #expect(run(["COMMAND", "LIST", "FILTERBY", "MODULE", "x"]) == "*0\r\n")
        #expect(run(["COMMAND", "LIST", "FILTERBY", "ACLCAT", "transaction"]).hasPrefix("*5\r\n"))
        #expect(run(["COMMAND", "LIST", "FILTERBY", "BOGUS", "x"]) == "-ERR syntax error\r\n")
        #expect(run(["COMMAND", "LIST"]).contains("$11\r\nclient|list\r\n"))
        #expect(run(["COMMAND", "DOCS", "nosuch"]) == "*0\r\n")
        #expect(
            run(["COMMAND", "DOCS", "get"])
                == "*2\r\n$3\r\nget\r\n*6\r\n$7\r\nsummary\r\n$34\r\nReturns the string value of a key.\r\n"
                + "$5\r\nsince\r\n$5\r\n1.0.0\r\n$5\r\ngroup\r\n$6\r\nstring\r\n")
        #expect(run(["COMMAND", "FOO"]) == "-ERR unknown subcommand 'FOO'. Try COMMAND HELP.\r\n")
        #expect(
            run(["COMMAND", "COUNT", "x"]) == "-ERR wrong number of arguments for 'command|count' command\r\n"
        )
    }

    @Test("CONFIG GET every parameter clients read; SET maxclients only; RESETSTAT; REWRITE refused")
    func config() {
        let view = FakeView()
        var p = CommandProcessor(password: nil, maxValueBytes: 16)
        p.dataDirectory = "/data/n1"
        var s = Session(authenticated: true)
        func run(_ args: [String]) -> String { wire(args, session: &s, processor: p, view: view).0 }
        #expect(
            run(["CONFIG", "GET", "port", "databases"])
                == "*4\r\n$9\r\ndatabases\r\n$1\r\n1\r\n$4\r\nport\r\n$4\r\n7379\r\n")
        #expect(run(["CONFIG", "GET", "dir"]) == "*2\r\n$3\r\ndir\r\n$8\r\n/data/n1\r\n")
        #expect(run(["CONFIG", "GET", "appendfsync"]).hasSuffix("$6\r\nalways\r\n"))
        #expect(run(["CONFIG", "GET", "maxmemory-policy"]).hasSuffix("$10\r\nnoeviction\r\n"))
        #expect(run(["CONFIG", "GET", "hz"]).hasSuffix("$3\r\n200\r\n"))
        #expect(run(["CONFIG", "GET", "zset-max-*"]).hasPrefix("*8\r\n"))
        // Redis's whole glob: ?, sets, ranges, negation, escapes.
        #expect(run(["CONFIG", "GET", "h?"]) == "*2\r\n$2\r\nhz\r\n$3\r\n200\r\n")
        #expect(run(["CONFIG", "GET", "[p]or[s-u]"]) == "*2\r\n$4\r\nport\r\n$4\r\n7379\r\n")
        #expect(run(["CONFIG", "GET", "[^abcdefgijklmnopqrstuvwxyz]z"]) == "*2\r\n$2\r\nhz\r\n$3\r\n200\r\n")
        #expect(run(["CONFIG", "GET", "\\h\\z*"]) == "*2\r\n$2\r\nhz\r\n$3\r\n200\r\n")
        #expect(run(["CONFIG", "GET", "\\h\\z"]) == "*0\r\n")  // no glob character: a name, as Redis
        #expect(run(["CONFIG", "GET", "h[^z]"]) == "*0\r\n")
        #expect(run(["CONFIG", "GET", "*"]).hasPrefix("*80\r\n"))
        #expect(run(["CONFIG", "SET", "maxclients", "50"]) == "+OK\r\n")
        #expect(view.maxClients == 50)
        #expect(run(["CONFIG", "GET", "maxclients"]) == "*2\r\n$10\r\nmaxclients\r\n$2\r\n50\r\n")
        #expect(
            run(["CONFIG", "SET", "nosuch", "1"])
                == "-ERR Unknown option or number of arguments for CONFIG SET - 'nosuch'\r\n")
        #expect(
            run(["CONFIG", "SET", "appendonly", "no"])
                == "-ERR CONFIG SET failed (possibly related to argument 'appendonly') - Tern cannot change it at run "
                + "time (it is fixed, or set in server.toml)\r\n")
        #expect(
            run(["CONFIG", "SET", "maxclients", "abc"])
                == "-ERR CONFIG SET failed (possibly related to argument 'maxclients') - argument couldn't be parsed into an integer\r\n"
        )
        #expect(
            run(["CONFIG", "SET", "maxclients", "0"])
                == "-ERR CONFIG SET failed (possibly related to argument 'maxclients') - argument must be between 1 and 1000000 inclusive\r\n"
        )
        #expect(
            run(["CONFIG", "SET", "maxclients", "5", "maxclients", "6"])
                == "-ERR CONFIG SET failed (possibly related to argument 'maxclients') - duplicate parameter\r\n"
        )
        #expect(view.maxClients == 50)  // nothing of a refused CONFIG SET applies
        #expect(run(["CONFIG", "SET", "maxclients", "5", "x"]) == "-ERR syntax error\r\n")
        #expect(
            run(["CONFIG", "SET", "maxclients"])
                == "-ERR wrong number of arguments for 'config|set' command\r\n")
        #expect(run(["CONFIG", "RESETSTAT"]) == "+OK\r\n")
        #expect(view.changes.withLockedValue { $0.resets } == 1)
        #expect(run(["CONFIG", "REWRITE"]).hasPrefix("-ERR CONFIG REWRITE is not supported by Tern"))
        #expect(run(["CONFIG", "FOO"]) == "-ERR unknown subcommand 'FOO'. Try CONFIG HELP.\r\n")
        #expect(run(["CONFIG"]) == "-ERR wrong number of arguments for 'config' command\r\n")
    }

    @Test("INFO: sections chosen as Redis 7 does, Redis's field names, the front end's figures")
    func info() {
        var f = ServerFacts()
        f.uptimeSeconds = 90_000
        f.connectedClients = 3
        f.maxClients = 10_000
        f.totalCommands = 12
        f.opsPerSecond = 4
        f.rssBytes = 3 << 20
        f.cpuUser = 1.5
        f.commands = [CommandStat(name: "get", calls: 4, usec: 10, rejected: 1, failed: 2)]
        f.errors = ["NOQUORUM": 2, "ERR": 5]
        f.keyspaceHits = 6
        f.keyspaceMisses = 1
        let view = FakeView(facts: f)
        let p = CommandProcessor(password: nil, maxValueBytes: 16) { "tern_node:1\r\n" }
        var s = Session(authenticated: true)
        func run(_ args: [String]) -> String { wire(args, session: &s, processor: p, view: view).0 }
        let all = run(["INFO"])
        #expect(all.contains("# Server\r\nredis_version:7.0.0\r\n"))
        #expect(all.contains("uptime_in_days:1\r\n"))
        #expect(all.contains("tern_node:1\r\n\r\n# Clients\r\nconnected_clients:3\r\n"))
        #expect(all.contains("used_memory:3145728\r\nused_memory_human:3.00M\r\n"))
        #expect(all.contains("total_commands_processed:12\r\ninstantaneous_ops_per_sec:4\r\n"))
        #expect(all.contains("role:master\r\n"))
        #expect(all.contains("used_cpu_user:1.500000\r\n"))
        #expect(all.contains("aof_enabled:1\r\n"))
        #expect(all.hasSuffix("# Keyspace\r\n\r\n"))  // the bulk string's own CRLF follows
        #expect(!all.contains("cmdstat"))
        #expect(all.contains("keyspace_hits:6\r\nkeyspace_misses:1\r\n"))
        #expect(
            all.contains(
                "\r\n# Errorstats\r\nerrorstat_ERR:count=5\r\nerrorstat_NOQUORUM:count=2\r\n\r\n"
                    + "# Cluster\r\ncluster_enabled:0\r\n\r\n# Keyspace"))
        #expect(all.contains("\r\n# Modules\r\n\r\n# Errorstats"))
        #expect(run(["INFO", "all"]).contains("# Modules\r\n\r\n# Commandstats"))
        #expect(run(["INFO", "modules"]) == "$11\r\n# Modules\r\n\r\n")
        #expect(
            run(["INFO", "commandstats"])
                == "$96\r\n# Commandstats\r\ncmdstat_get:calls=4,usec=10,usec_per_call=2.50,rejected_calls=1,failed_calls=2\r\n\r\n"
        )
        #expect(run(["INFO", "everything"]).contains("cmdstat_get"))
        #expect(run(["INFO", "all"]).contains("cmdstat_get"))
        #expect(
            run(["INFO", "cpu", "replication"]).hasPrefix("$")
                && run(["INFO", "cpu", "replication"]).contains(
                    "# Replication\r\nrole:master\r\nconnected_slaves:0\r\nmaster_failover_state:no-failover\r\nmaster_repl_offset:0\r\n\r\n# CPU\r\n"
                ))
        #expect(run(["INFO", "nosuch"]) == "$0\r\n\r\n")
    }

    @Test("CLIENT: ID, SETNAME/GETNAME, SETINFO, NO-EVICT, INFO, LIST, KILL in Redis's formats and errors")
    func client() {
        var me = ClientFacts(id: 7, addr: "127.0.0.1:5000", laddr: "127.0.0.1:7379")
        me.cmd = "client|info"
        var other = ClientFacts(id: 9, addr: "127.0.0.1:6000", laddr: "127.0.0.1:7379")
        other.subscribed = true
        other.sub = 1
        let view = FakeView(me: me, clients: [other, me])
        var s = Session(authenticated: true, clientID: 7)
        func run(_ args: [String]) -> String { wire(args, session: &s, view: view).0 }
        #expect(run(["CLIENT", "ID"]) == ":7\r\n")
        #expect(run(["CLIENT", "GETNAME"]) == "$-1\r\n")
        #expect(
            run(["CLIENT", "SETNAME", "a b"])
                == "-ERR Client names cannot contain spaces, newlines or special characters.\r\n")
        #expect(run(["CLIENT", "SETNAME", "worker"]) == "+OK\r\n")
        #expect(s.name == "worker")
        #expect(run(["CLIENT", "GETNAME"]) == "$6\r\nworker\r\n")
        #expect(run(["CLIENT", "SETNAME", ""]) == "+OK\r\n")
        #expect(s.name == nil)
        #expect(
            run(["CLIENT", "SETNAME"]) == "-ERR wrong number of arguments for 'client|setname' command\r\n")
        #expect(run(["CLIENT", "SETINFO", "LIB-NAME", "redis-py"]) == "+OK\r\n")
        #expect(s.libName == "redis-py")
        #expect(run(["CLIENT", "SETINFO", "color", "x"]) == "-ERR Unrecognized option 'color'\r\n")
        #expect(run(["CLIENT", "NO-EVICT", "on"]) == "+OK\r\n")
        #expect(s.noEvict)
        #expect(run(["CLIENT", "NO-EVICT", "maybe"]) == "-ERR syntax error\r\n")
        let line =
            "id=7 addr=127.0.0.1:5000 laddr=127.0.0.1:7379 fd=-1 name= age=0 idle=0 flags=N db=0 sub=0 psub=0 "
            + "ssub=0 multi=-1 qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 omem=0 tot-mem=0 "
            + "events=r cmd=client|info user=default redir=-1 resp=2 lib-name= lib-ver=\n"
        #expect(run(["CLIENT", "INFO"]) == "$\(line.utf8.count)\r\n\(line)\r\n")
        let list = run(["CLIENT", "LIST"])
        #expect(list.contains("id=7 ") && list.contains("id=9 "))
        #expect(list.firstRange(of: "id=7 ")!.lowerBound < list.firstRange(of: "id=9 ")!.lowerBound)
        #expect(list.contains("flags=P db=0 sub=1"))
        #expect(!run(["CLIENT", "LIST", "TYPE", "normal"]).contains("id=9 "))
        #expect(run(["CLIENT", "LIST", "ID", "9"]).contains("id=9 "))
        #expect(!run(["CLIENT", "LIST", "ID", "9"]).contains("id=7 "))
        #expect(run(["CLIENT", "LIST", "TYPE", "foo"]) == "-ERR Unknown client type 'foo'\r\n")
        #expect(run(["CLIENT", "LIST", "ID", "0"]) == "$0\r\n\r\n")
        #expect(run(["CLIENT", "LIST", "ID", "x"]) == "-ERR Invalid client ID\r\n")
        #expect(run(["CLIENT", "KILL", "USER", "nobody"]) == "-ERR No such user 'nobody'\r\n")
        // CLIENT REPLY: the session records it; the front end drops the replies (FrontendTests).
        #expect(run(["CLIENT", "REPLY", "SKIP"]) == "+OK\r\n")
        #expect(s.skipNextReply && !s.repliesOff)
        #expect(run(["CLIENT", "REPLY", "OFF"]) == "+OK\r\n")
        #expect(s.repliesOff)
        #expect(run(["CLIENT", "REPLY", "ON"]) == "+OK\r\n")
        #expect(!s.repliesOff && !s.skipNextReply)
        #expect(run(["CLIENT", "REPLY", "x"]) == "-ERR syntax error\r\n")
        #expect(run(["CLIENT", "REPLY"]) == "-ERR wrong number of arguments for 'client|reply' command\r\n")
        // Old form: OK or the error; new form: the count, the asker skipped unless SKIPME no.
        #expect(run(["CLIENT", "KILL", "127.0.0.1:6000"]) == "+OK\r\n")
        #expect(run(["CLIENT", "KILL", "1.2.3.4:5"]) == "-ERR No such client\r\n")
        #expect(run(["CLIENT", "KILL", "ID", "7"]) == ":0\r\n")
        #expect(run(["CLIENT", "KILL", "ID", "7", "SKIPME", "no"]) == ":1\r\n")
        #expect(run(["CLIENT", "KILL", "TYPE", "pubsub"]) == ":1\r\n")
        #expect(run(["CLIENT", "KILL", "ADDR", "127.0.0.1:5000", "SKIPME", "no"]) == ":1\r\n")
        #expect(run(["CLIENT", "KILL", "ID", "x"]) == "-ERR client-id should be greater than 0\r\n")
        #expect(run(["CLIENT", "KILL", "TYPE", "foo"]) == "-ERR Unknown client type 'foo'\r\n")
        #expect(run(["CLIENT", "KILL", "foo", "bar"]) == "-ERR syntax error\r\n")
        #expect(run(["CLIENT", "KILL", "addr", "1.2.3.4:5", "skipme"]) == "-ERR syntax error\r\n")
        #expect(view.changes.withLockedValue { $0.killed.count } == 6)
        #expect(run(["CLIENT", "FOO"]) == "-ERR unknown subcommand 'FOO'. Try CLIENT HELP.\r\n")
        #expect(run(["CLIENT"]) == "-ERR wrong number of arguments for 'client' command\r\n")
        #expect(run(["HELLO"]).contains("$2\r\nid\r\n:7\r\n"))
        #expect(
            run(["HELLO", "2", "SETNAME", "a b"])
                == "-ERR Client names cannot contain spaces, newlines or special characters.\r\n")
        #expect(run(["HELLO", "2", "SETNAME"]) == "-ERR Syntax error in HELLO option 'SETNAME'\r\n")
        _ = run(["HELLO", "2", "SETNAME", "phone"])
        #expect(s.name == "phone")
    }

    @Test("ClientFacts' flags letters and ClientFilter's rules")
    func facts() {
        var c = ClientFacts(id: 1, addr: "a:1", laddr: "b:2")
        #expect(c.flags == "N")
        c.noEvict = true
        #expect(c.flags == "e")  // as Redis: no N once another letter is set
        c.subscribed = true
        #expect(c.flags == "Pe")
        var f = ClientFilter()
        f.skip = 1
        #expect(!f.matches(c))
        f.skip = nil
        f.type = "normal"
        #expect(!f.matches(c))
        f.type = "pubsub"
        #expect(f.matches(c))
        f.user = "someone"
        #expect(!f.matches(c))
    }

    @Test("TIME, LASTSAVE, SAVE/BGSAVE/BGREWRITEAOF, ROLE, WAIT, DEBUG, FUNCTION, SCRIPT: replies and errors")
    func server() {
        var p = CommandProcessor(password: nil, maxValueBytes: 16)
        p.clock = { 1_796_561_565_057_768 }
        var s = Session(authenticated: true)
        func run(_ args: [String]) -> String { wire(args, session: &s, processor: p).0 }
        #expect(run(["TIME"]) == "*2\r\n$10\r\n1796561565\r\n$5\r\n57768\r\n")
        #expect(run(["TIME", "x"]) == "-ERR wrong number of arguments for 'time' command\r\n")
        #expect(run(["LASTSAVE"]) == ":1796561565\r\n")
        #expect(run(["SAVE"]) == "+OK\r\n")
        #expect(run(["BGSAVE"]) == "+OK\r\n")
        #expect(run(["BGSAVE", "SCHEDULE"]) == "+OK\r\n")
        #expect(run(["BGSAVE", "x"]) == "-ERR syntax error\r\n")
        #expect(run(["BGREWRITEAOF"]) == "+OK\r\n")
        #expect(run(["ROLE"]) == "*3\r\n$6\r\nmaster\r\n:0\r\n*0\r\n")
        #expect(run(["ROLE", "x"]) == "-ERR wrong number of arguments for 'role' command\r\n")
        #expect(run(["WAIT", "1", "0"]) == ":2\r\n")
        #expect(run(["WAIT", "x", "0"]) == "-ERR value is not an integer or out of range\r\n")
        #expect(run(["WAIT", "1", "x"]) == "-ERR timeout is not an integer or out of range\r\n")
        #expect(run(["WAIT", "1", "-1"]) == "-ERR timeout is negative\r\n")
        #expect(run(["WAIT", "1"]) == "-ERR wrong number of arguments for 'wait' command\r\n")
        #expect(run(["DEBUG", "SLEEP", "0"]).hasPrefix("-ERR DEBUG command not allowed"))
        #expect(run(["FUNCTION", "LIST"]) == "*0\r\n")
        #expect(run(["FUNCTION", "FLUSH"]) == "+OK\r\n")
        #expect(run(["FUNCTION", "FLUSH", "ASYNC"]) == "+OK\r\n")
        #expect(run(["FUNCTION", "FLUSH", "x"]) == "-ERR FUNCTION FLUSH only supports SYNC|ASYNC option\r\n")
        // SCRIPT is the scripting module's (ScriptTests).
        #expect(
            run(["FUNCTION", "FLUSH", "ASYNC", "x"])
                == "-ERR unknown subcommand or wrong number of arguments for 'FLUSH'. Try FUNCTION HELP.\r\n")
        #expect(run(["FUNCTION", "LIST", "LIBRARYNAME"]) == "-ERR library name argument was not given\r\n")
        #expect(run(["FUNCTION", "LIST", "WITHCODE", "LIBRARYNAME", "x"]) == "*0\r\n")
        #expect(run(["FUNCTION", "LOAD", "x"]) == "-ERR unknown subcommand 'LOAD'. Try FUNCTION HELP.\r\n")
        #expect(run(["SELECT", "1"]) == "-ERR DB index is out of range\r\n")
    }

    @Test(
        "RESET: a fresh session (RESP2, no name, out of MULTI, unauthenticated with a password); the id stays"
    )
    func reset() {
        let p = CommandProcessor(password: "pw", maxValueBytes: 16)
        var s = Session(authenticated: true, clientID: 4)
        s.version = .v3
        s.name = "n"
        s.noEvict = true
        s.transaction = []
        s.channels = [Array("sync:1".utf8)]
        #expect(wire(["RESET"], session: &s, processor: p).0 == "+RESET\r\n")
        #expect(s == Session(authenticated: false, clientID: 4))
        var open = Session(authenticated: true)
        #expect(wire(["RESET"], session: &open).0 == "+RESET\r\n")
        #expect(open.authenticated)
        // Allowed before AUTH, as Redis.
        var locked = Session(authenticated: false)
        #expect(wire(["RESET"], session: &locked, processor: p).0 == "+RESET\r\n")
    }

    @Test("Rejected (before running) versus failed calls, as INFO commandstats counts them")
    func rejection() {
        #expect(CommandProcessor.isRejection(.error("ERR wrong number of arguments for 'get' command")))
        #expect(CommandProcessor.isRejection(.error("NOAUTH Authentication required.")))
        #expect(
            CommandProcessor.isRejection(
                .error("ERR 'seq.next' cannot run inside a Tern transaction: transactions take data commands")
            ))
        #expect(CommandProcessor.isRejection(.error("CROSSSLOT Tern transactions take commands on one key")))
        #expect(!CommandProcessor.isRejection(.error("ERR syntax error")))
        #expect(!CommandProcessor.isRejection(.ok))
    }
}
