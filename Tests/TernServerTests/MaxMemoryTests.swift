import NIOConcurrencyHelpers
import NIOPosix
import TernConsensus
import TernCore
import TernRESP
import Testing

@testable import TernServer

/// `maxmemory` with the noeviction policy (MaxMemory.swift): Redis 7.0.15's values, errors and
/// `processCommand` rules, with the used memory fixed at 1000 bytes.
@Suite struct MaxMemoryTests {
    static let oom = "-OOM command not allowed when used memory > 'maxmemory'.\r\n"
    static let execOOM =
        "-EXECABORT Transaction discarded because of: OOM command not allowed when used memory > 'maxmemory'.\r\n"

    /// A processor whose node uses 1000 bytes.
    static func processor() -> CommandProcessor {
        var p = CommandProcessor(password: nil, maxValueBytes: 1 << 20)
        p.memory = MemoryLimit(measure: { 1000 })
        return p
    }

    @Test("Redis 7.0.15's memory values: units, case, no sign or space, saturation; overflow refused")
    func parse() {
        // What redis-server 7.0.15 answers CONFIG GET maxmemory with after each CONFIG SET.
        let accepted: [(String, UInt64)] = [
            ("1", 1), ("1gb", 1 << 30), ("1GB", 1 << 30), ("1g", 1_000_000_000), ("1k", 1000), ("1kb", 1024),
            ("1m", 1_000_000), ("1mb", 1 << 20), ("1b", 1), ("1B", 1), ("", 0), ("gb", 0), ("007", 7),
            ("18446744073709551615", .max), ("18446744073709551616", .max),
        ]
        for (text, bytes) in accepted {
            #expect(MemoryLimit.parseBytes(Array(text.utf8)) == bytes, "\(text)")
        }
        for text in ["bla", "-1", "1.5gb", " 1", "1 ", "+1", "1tb", "0x10", "1%", "17179869184gb"] {
            #expect(MemoryLimit.parseBytes(Array(text.utf8)) == nil, "\(text)")
        }
    }

    @Test("CONFIG SET/GET maxmemory and maxmemory-policy, INFO memory's lines, Redis's error texts")
    func config() {
        let p = Self.processor()
        let view = FakeView()
        var s = Session(authenticated: true)
        func run(_ args: [String]) -> String { wire(args, session: &s, processor: p, view: view).0 }
        #expect(run(["CONFIG", "GET", "maxmemory"]) == "*2\r\n$9\r\nmaxmemory\r\n$1\r\n0\r\n")
        #expect(run(["CONFIG", "SET", "maxmemory", "1gb"]) == "+OK\r\n")
        #expect(run(["CONFIG", "GET", "maxmemory"]) == "*2\r\n$9\r\nmaxmemory\r\n$10\r\n1073741824\r\n")
        #expect(
            run(["INFO", "memory"]).contains(
                "maxmemory:1073741824\r\nmaxmemory_human:1.00G\r\nmaxmemory_policy:noeviction\r\n"))
        #expect(
            run(["CONFIG", "SET", "maxmemory", "bla"])
                == "-ERR CONFIG SET failed (possibly related to argument 'maxmemory') - argument must be a memory value\r\n"
        )
        // All parameters are checked before any is applied.
        #expect(
            run(["CONFIG", "SET", "maxmemory", "5", "maxclients", "0"]).hasPrefix("-ERR CONFIG SET failed"))
        #expect(p.memory.limitBytes == 1 << 30)
        #expect(run(["CONFIG", "SET", "maxmemory", "0"]) == "+OK\r\n")
        #expect(
            run(["INFO", "memory"]).contains(
                "maxmemory:0\r\nmaxmemory_human:0B\r\nmaxmemory_policy:noeviction\r\n"))
        #expect(run(["CONFIG", "SET", "maxmemory-policy", "NoEviction"]) == "+OK\r\n")
        #expect(
            run(["CONFIG", "GET", "maxmemory-policy"])
                == "*2\r\n$16\r\nmaxmemory-policy\r\n$10\r\nnoeviction\r\n")
        #expect(
            run(["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"])
                == "-ERR CONFIG SET failed (possibly related to argument 'maxmemory-policy') - Tern never evicts "
                + "acknowledged data: noeviction is the only maxmemory-policy (docs/SERVER.md)\r\n")
        #expect(
            run(["CONFIG", "SET", "maxmemory-policy", "bla"])
                == "-ERR CONFIG SET failed (possibly related to argument 'maxmemory-policy') - argument(s) must be one "
                + "of the following: volatile-lru, volatile-lfu, volatile-random, volatile-ttl, allkeys-lru, "
                + "allkeys-lfu, allkeys-random, noeviction\r\n")
        #expect(run(["CONFIG", "GET", "maxmemory-policy"]).hasSuffix("$10\r\nnoeviction\r\n"))
    }

    @Test(
        "Over maxmemory: denyoom commands get -OOM; reads, DEL, pops and errors go on; under it or at 0, all run"
    )
    func refusals() {
        let p = Self.processor()
        var s = Session(authenticated: true)
        func run(_ args: [String]) -> String { wire(args, session: &s, processor: p).0 }
        // How many key requests the command's plan sends (0: answered at once).
        func requests(_ args: [String]) -> Int {
            guard
                case .requests(let r, _) = p.plan(RESPCommand(args: args.map { Array($0.utf8) }), session: &s)
            else { return 0 }
            return r.count
        }
        p.memory.setLimit(1000)  // used == limit: not over
        #expect(requests(["SET", "k", "v"]) == 1)
        p.memory.setLimit(999)
        #expect(p.memory.exceeded)
        for cmd in [
            ["SET", "k", "v"], ["set", "k", "v"], ["INCR", "n"], ["LPUSH", "l", "a"],
            ["HSET", "h", "f", "v"],
            ["SADD", "s", "m"], ["ZADD", "z", "1", "m"], ["XADD", "x", "*", "f", "v"], ["APPEND", "k", "v"],
            ["XGROUP", "CREATE", "x", "g", "$"], ["SETBIT", "b", "1", "1"], ["MSET", "a", "1", "b", "2"],
        ] {
            let (reply, reqs) = wire(cmd, session: &s, processor: p)
            #expect(reply == Self.oom, "\(cmd)")
            #expect(reqs.isEmpty, "\(cmd)")
        }
        for cmd in [
            ["GET", "k"], ["DEL", "k"], ["LPOP", "l"], ["EXPIRE", "k", "10"], ["SREM", "s", "m"],
            ["XGROUP", "DESTROY", "x", "g"],
        ] {
            #expect(requests(cmd) == 1, "\(cmd)")
        }
        #expect(run(["PING"]) == "+PONG\r\n")
        // Unknown commands and wrong arity keep their own errors (Redis checks them first).
        #expect(run(["NOSUCH"]).hasPrefix("-ERR unknown command 'NOSUCH'"))
        #expect(run(["SET", "k"]) == "-ERR wrong number of arguments for 'set' command\r\n")
        p.memory.setLimit(0)
        #expect(requests(["SET", "k", "v"]) == 1)
        #expect(p.memory.refusals == 12)  // /metrics' tern_oom_rejected_total
    }

    @Test("OOM inside MULTI: any command but EXEC/DISCARD/QUIT/RESET is refused and EXEC aborts (unit/multi)")
    func transactions() {
        var p = Self.processor()
        p.keyLayout = .hashTagGroups  // as the suite's run: foo1{t} and foo2{t} share a Paxos key
        var s = Session(authenticated: true)
        func run(_ args: [String]) -> String { wire(args, session: &s, processor: p).0 }
        // "EXEC fails if there are errors while queueing commands #2".
        #expect(run(["MULTI"]) == "+OK\r\n")
        #expect(run(["SET", "foo1{t}", "bar1"]) == "+QUEUED\r\n")
        p.memory.setLimit(1)
        #expect(run(["LPUSH", "mylist{t}", "myvalue"]) == Self.oom)
        p.memory.setLimit(0)
        #expect(run(["SET", "foo2{t}", "bar2"]) == "+QUEUED\r\n")
        #expect(run(["EXEC"]) == "-EXECABORT Transaction discarded because of previous errors.\r\n")
        // "DISCARD should not fail during OOM": MULTI starts, a read inside is refused too.
        p.memory.setLimit(1)
        #expect(run(["MULTI"]) == "+OK\r\n")
        #expect(run(["SET", "x", "1"]) == Self.oom)
        #expect(run(["GET", "x"]) == Self.oom)
        #expect(run(["MULTI"]) == Self.oom)
        #expect(s.transactionAborted)
        #expect(run(["DISCARD"]) == "+OK\r\n")
        #expect(s.transaction == nil)
        p.memory.setLimit(0)
        #expect(run(["PING"]) == "+PONG\r\n")
        // "EXEC with only read commands should not be rejected when OOM".
        _ = run(["MULTI"])
        _ = run(["GET", "x"])
        _ = run(["PING"])
        p.memory.setLimit(1)
        let (exec, reqs) = wire(
            ["EXEC"], replies: [.done(.data(.array([.bulk(Array("value".utf8))])))], session: &s, processor: p
        )
        #expect(exec == "*2\r\n$5\r\nvalue\r\n+PONG\r\n")
        #expect(reqs.count == 1)
        // "EXEC with at least one use-memory command should fail": discarded, nothing sent.
        p.memory.setLimit(0)
        _ = run(["MULTI"])
        _ = run(["SET", "x", "1"])
        _ = run(["GET", "x"])
        p.memory.setLimit(1)
        let (abort, none) = wire(["EXEC"], session: &s, processor: p)
        #expect(abort == Self.execOOM)
        #expect(none.isEmpty)
        #expect(s.transaction == nil && !s.transactionAborted)
        #expect(run(["EXEC"]) == "-ERR EXEC without MULTI\r\n")
        // The OOM refusal counts as rejected (INFO commandstats' rejected_calls), as in Redis.
        #expect(CommandProcessor.isRejection(.error(String(Self.oom.dropFirst().dropLast(2)))))
        #expect(CommandProcessor.isRejection(.error(String(Self.execOOM.dropFirst().dropLast(2)))))
    }

    @Test("COMMAND INFO's denyoom flag is Redis 7.0.15's for every write command both serve")
    func flags() {
        var p = Self.processor()
        // The keyspace service's commands (COPY, RENAME, the …STORE and GEO ones), as the server has them.
        p.modules = [
            SpecModule(
                commandSpecs: KeyspaceService.specs + KeyspaceService.crossKeySpecs
                    + KeyspaceService.crossKeyWriteSpecs + KeyspaceService.geoSpecs)
        ]
        // redis-server 7.0.15's COMMAND: its write commands with denyoom, and without.
        let deny: Set<String> = [
            "append", "bitfield", "bitop", "blmove", "brpoplpush", "copy", "decr", "decrby", "geoadd",
            "georadius", "georadiusbymember", "geosearchstore", "getset", "hincrby", "hincrbyfloat", "hmset",
            "hset", "hsetnx", "incr", "incrby", "incrbyfloat", "linsert", "lmove", "lpush", "lpushx", "lset",
            "mset", "msetnx", "pfadd", "pfmerge", "psetex", "restore", "rpoplpush", "rpush", "rpushx", "sadd",
            "sdiffstore", "set", "setbit", "setex", "setnx", "setrange", "sinterstore", "sort", "sunionstore",
            "xadd", "xsetid", "zadd", "zdiffstore", "zincrby", "zinterstore", "zrangestore", "zunionstore",
        ]
        let plain: Set<String> = [
            "blmpop", "blpop", "brpop", "bzmpop", "bzpopmax", "bzpopmin", "del", "expire", "expireat",
            "flushall",
            "flushdb", "getdel", "getex", "hdel", "lmpop", "lpop", "lrem", "ltrim", "move", "persist",
            "pexpire",
            "pexpireat", "rename", "renamenx", "rpop", "smove", "spop", "srem", "swapdb", "unlink", "xack",
            "xautoclaim", "xclaim", "xdel", "xreadgroup", "xtrim", "zmpop", "zpopmax", "zpopmin", "zrem",
            "zremrangebylex", "zremrangebyrank", "zremrangebyscore",
        ]
        var checked = 0
        for name in deny.union(plain) {
            guard let spec = p.commandTable.spec(name) else { continue }
            #expect(spec.flags.contains("denyoom") == deny.contains(name), "\(name): \(spec.flags)")
            checked += 1
        }
        #expect(checked >= 80)
    }

    @Test("The shell samples used memory every 100 ms until stopped; the default figure is the process's RSS")
    func sampling() async throws {
        #expect(MemoryLimit.residentBytes() > 1 << 20)
        let calls = NIOLockedValueBox<UInt64>(0)
        let limit = MemoryLimit(
            limitBytes: 2,
            measure: {
                calls.withLockedValue {
                    $0 += 1
                    return $0
                }
            })
        #expect(limit.usedBytes == 1 && !limit.exceeded)  // measured once at creation
        #expect(MemoryLimit(measure: { 5 }).usedBytes == 0)  // without a limit, not at all
        limit.startSampling(on: MultiThreadedEventLoopGroup.singleton.next())
        try await Task.sleep(for: .milliseconds(350))
        limit.stopSampling()
        let sampled = limit.usedBytes
        #expect(sampled >= 3 && limit.exceeded, "\(sampled) samples")
        try await Task.sleep(for: .milliseconds(150))
        #expect(limit.usedBytes == sampled)
    }

    @Test("server.toml's maxmemory: bytes or a string with Redis's units; toml() keeps it")
    func serverToml() throws {
        let secret = "[server]\nsecret = \"" + String(repeating: "ab", count: 16) + "\"\n"
        #expect(try ServerConfig(toml: secret).maxmemoryBytes == 0)
        #expect(try !ServerConfig(toml: secret).toml().contains("maxmemory ="))
        #expect(try ServerConfig(toml: secret + "maxmemory = 1048576\n").maxmemoryBytes == 1 << 20)
        let four = try ServerConfig(toml: secret + "maxmemory = \"4gb\"\n")
        #expect(four.maxmemoryBytes == 4 << 30)
        #expect(try ServerConfig(toml: four.toml()).maxmemoryBytes == 4 << 30)
        var huge = four
        huge.maxmemoryBytes = .max
        #expect(try ServerConfig(toml: huge.toml()).maxmemoryBytes == .max)
        for bad in ["-1", "\"bla\"", "true"] {
            #expect(throws: ServerConfigError.self) {
                try ServerConfig(toml: secret + "maxmemory = \(bad)\n")
            }
        }
    }
}
