import TernConsensus
import TernCore
import TernRESP
import TernServer
import Testing

/// What Redis's own `unit/multi` found, one test per fix.
@Suite struct MultiSuiteTests {
    @Test(
        "A queued XREAD/XREADGROUP's key is its stream (after STREAMS), so later commands on keys of its tag still join ('Blocking commands ignores the timeout')"
    )
    func streamReadsKeepTheirKey() {
        var p = CommandProcessor(password: nil, maxValueBytes: 1 << 20)
        p.keyLayout = .hashTagGroups
        var s = Session(authenticated: true)
        func run(_ args: [String]) -> String { wire(args, session: &s, processor: p).0 }
        #expect(run(["MULTI"]) == "+OK\r\n")
        for cmd in [
            ["BLPOP", "empty_list{t}", "0"], ["XREAD", "BLOCK", "0", "STREAMS", "s{t}", "$"],
            ["XREADGROUP", "GROUP", "g", "c", "BLOCK", "0", "STREAMS", "s{t}", ">"],
            ["XINFO", "STREAM", "s{t}"], ["BZPOPMIN", "empty_zset{t}", "0"],
        ] {
            #expect(run(cmd) == "+QUEUED\r\n", "\(cmd)")
        }
        #expect(!s.transactionAborted)
        #expect(run(["DISCARD"]) == "+OK\r\n")
        // A key of another tag still cannot join.
        _ = run(["MULTI"])
        _ = run(["XREAD", "STREAMS", "s{t}", "0"])
        #expect(run(["GET", "other{u}"]).hasPrefix("-CROSSSLOT"))
        _ = run(["DISCARD"])
    }

    @Test(
        "SAVE inside MULTI: Redis's 'Command not allowed inside a transaction', also over maxmemory; EXEC aborts"
    )
    func noMulti() {
        var p = CommandProcessor(password: nil, maxValueBytes: 1 << 20)
        p.memory = MemoryLimit(measure: { 1000 })
        var s = Session(authenticated: true)
        func run(_ args: [String]) -> String { wire(args, session: &s, processor: p).0 }
        #expect(run(["SAVE"]) == "+OK\r\n")
        _ = run(["MULTI"])
        #expect(run(["SET", "foo", "bar"]) == "+QUEUED\r\n")
        p.memory.setLimit(1)
        #expect(run(["SAVE"]) == "-ERR Command not allowed inside a transaction\r\n")
        p.memory.setLimit(0)
        #expect(run(["EXEC"]) == "-EXECABORT Transaction discarded because of previous errors.\r\n")
        #expect(CommandProcessor.isRejection(.error("ERR Command not allowed inside a transaction")))
        // SHUTDOWN too ('MULTI with SHUTDOWN'); outside MULTI it is refused: a client does not stop a node.
        _ = run(["MULTI"])
        #expect(run(["SHUTDOWN"]) == "-ERR Command not allowed inside a transaction\r\n")
        #expect(run(["EXEC"]).hasPrefix("-EXECABORT"))
        #expect(
            run(["SHUTDOWN", "NOSAVE"]).hasPrefix(
                "-ERR SHUTDOWN is not allowed in Tern: stop a node with SIGTERM"))
    }
}
