import NIOCore
import TernConsensus
import TernRESP
import TernServer
import Testing

/// Runs a command through the processor with canned key replies, encodes the answer and returns
/// the bytes a client would read.
func wire(
    _ args: [String], replies: [NodeReply] = [], session: inout Session,
    processor: CommandProcessor = CommandProcessor(password: nil, maxValueBytes: 16),
    view: FakeView = FakeView()
) -> (String, [(key: [UInt8], request: KeyRequest)]) {
    let plan = processor.plan(RESPCommand(args: args.map { Array($0.utf8) }), session: &session)
    let value: RESPValue
    var requests: [(key: [UInt8], request: KeyRequest)] = []
    switch plan {
    case .reply(let v), .replyAndClose(let v): value = v
    case .requests(let reqs, let build):
        requests = reqs
        value = build(replies)
    case .blocking(let call):
        // A blocking command's first attempt with the canned replies: its answer, or what it does next.
        requests = call.requests
        switch call.step(replies) {
        case .answer(let v): value = v
        case .again(let next):
            requests += next.requests
            value = .simpleString("AGAIN")
        case .wait: value = .simpleString("WAIT")
        }
    case .run, .future, .barrier:
        // Service commands (SEQ.*, MSG.*, SYNC, SCAN…) run against a live node; tested in their suites.
        value = .simpleString("RUN")
    case .connection(let body):
        // Subscriptions (SUBSCRIBE sync:<uid>, SYNC.SUBSCRIBE) need a connection; see SyncTests.
        // Here: the frames with an outlet nobody reads (RESET).
        let frames = body(ConnectionOutlet(deliver: { _ in }))
        value = frames.count == 1 ? frames[0] : .simpleString("CONNECTION")
    case .frontend(let body):
        // INFO, CLIENT LIST/KILL, CONFIG: against the fake front end.
        value = (try? body(view).wait()) ?? .simpleString("FAILED")
    }
    var buffer = ByteBuffer()
    RESPEncoder.encode(value, version: session.version, into: &buffer)
    return (String(decoding: buffer.readableBytesView, as: UTF8.self), requests)
}

func wire(_ args: [String], replies: [NodeReply] = [], view: FakeView = FakeView()) -> String {
    var s = Session(authenticated: true)
    return wire(args, replies: replies, session: &s, view: view).0
}

func bytes(_ s: [String]) -> [[UInt8]] { s.map { Array($0.utf8) } }

@Suite struct CommandTests {
    @Test("Connection commands, byte for byte")
    func connection() {
        #expect(wire(["PING"]) == "+PONG\r\n")
        #expect(wire(["ping", "hi"]) == "$2\r\nhi\r\n")
        #expect(wire(["ECHO", "x"]) == "$1\r\nx\r\n")
        #expect(wire(["SELECT", "0"]) == "+OK\r\n")
        #expect(wire(["SELECT", "1"]) == "-ERR DB index is out of range\r\n")
        #expect(wire(["QUIT"]) == "+OK\r\n")
        #expect(wire(["CONFIG", "GET", "save"]) == "*2\r\n$4\r\nsave\r\n$0\r\n\r\n")
        #expect(wire(["CONFIG", "GET", "nothing-like-this"]) == "*0\r\n")
        #expect(wire(["CONFIG", "GET", "MAXCLIENTS"]) == "*2\r\n$10\r\nmaxclients\r\n$5\r\n10000\r\n")
        #expect(
            wire(["CONFIG", "GET", "max*", "append*"])
                == "*12\r\n$10\r\nmaxclients\r\n$5\r\n10000\r\n$17\r\nmaxmemory-clients\r\n$10\r\n1073741824\r\n"
                + "$10\r\nappendonly\r\n$3\r\nyes\r\n"
                + "$11\r\nappendfsync\r\n$6\r\nalways\r\n"
                + "$9\r\nmaxmemory\r\n$1\r\n0\r\n$16\r\nmaxmemory-policy\r\n$10\r\nnoeviction\r\n")
        #expect(wire(["CONFIG", "GET", "tern-max-key-bytes"]).hasSuffix("$5\r\n32768\r\n"))
        #expect(wire(["CONFIG", "GET"]) == "-ERR wrong number of arguments for 'config|get' command\r\n")
        // A pathological pattern is linear, not exponential.
        #expect(wire(["CONFIG", "GET", String(repeating: "*a", count: 5000) + "b"]) == "*0\r\n")
    }

    @Test("Redis's error wording: unknown command, arity, syntax, integers, EX/PX")
    func errors() {
        #expect(
            wire(["FOO", "a", "b"]) == "-ERR unknown command 'FOO', with args beginning with: 'a' 'b' \r\n")
        #expect(wire(["FOO"]) == "-ERR unknown command 'FOO', with args beginning with: \r\n")
        #expect(wire(["GET"]) == "-ERR wrong number of arguments for 'get' command\r\n")
        #expect(wire(["get", "a", "b"]) == "-ERR wrong number of arguments for 'get' command\r\n")
        #expect(wire(["MSET", "a"]) == "-ERR wrong number of arguments for 'mset' command\r\n")
        #expect(wire(["MSET", "a", "1", "b"]) == "-ERR wrong number of arguments for 'mset' command\r\n")
        #expect(wire(["SET", "k", "v", "NX", "XX"]) == "-ERR syntax error\r\n")
        #expect(wire(["SET", "k", "v", "BOGUS"]) == "-ERR syntax error\r\n")
        #expect(wire(["SET", "k", "v", "EX", "0"]) == "-ERR invalid expire time in 'set' command\r\n")
        #expect(wire(["SET", "k", "v", "px", "-5"]) == "-ERR invalid expire time in 'set' command\r\n")
        #expect(wire(["SET", "k", "v", "EX", "10", "PX", "5"]) == "-ERR syntax error\r\n")
        #expect(wire(["SET", "k", "v", "EX", "10", "KEEPTTL"]) == "-ERR syntax error\r\n")
        #expect(wire(["SET", "k", "v", "EX", "ten"]) == "-ERR value is not an integer or out of range\r\n")
        #expect(wire(["INCRBY", "k", "1.5"]) == "-ERR value is not an integer or out of range\r\n")
        #expect(wire(["INCRBY", "k", "+1"]) == "-ERR value is not an integer or out of range\r\n")
        #expect(wire(["DECRBY", "k", "-9223372036854775808"]) == "-ERR decrement would overflow\r\n")
        #expect(wire(["EXPIRE", "k", "10", "NX", "XX"]).hasPrefix("-ERR NX and XX, GT or LT options"))
        #expect(wire(["EXPIRE", "k", "10", "GT", "LT"]).hasPrefix("-ERR GT and LT options"))
        #expect(
            wire(["ZADD", "z", "NX", "XX", "1", "a"])
                == "-ERR XX and NX options at the same time are not compatible\r\n")
        #expect(wire(["ZADD", "z", "x", "a"]) == "-ERR value is not a valid float\r\n")
        #expect(wire(["ZADD", "z", "1", "a", "2"]) == "-ERR syntax error\r\n")
        #expect(wire(["HSET", "h", "f"]) == "-ERR wrong number of arguments for 'hset' command\r\n")
        #expect(
            wire(["HSET", "h", "f", "v", "g"]) == "-ERR wrong number of arguments for 'hset' command\r\n")
        // Between two keys LMOVE reads both first (TakeCommands.swift): an absent source answers nil.
        #expect(
            wire(["LMOVE", "a", "b", "LEFT", "RIGHT"], replies: [.value(nil), .value(nil)]) == "$-1\r\n")
        #expect(
            wire(["ZRANGE", "z", "0", "1", "LIMIT", "0", "1"]).hasPrefix("-ERR syntax error, LIMIT is only"))
        // Errors decided where the value is (the proposer applying the write) come back as data replies.
        #expect(
            wire(
                ["INCR", "k"], replies: [.done(.data(.error("ERR value is not an integer or out of range")))])
                == "-ERR value is not an integer or out of range\r\n")
        #expect(
            wire(
                ["HGET", "k", "f"],
                replies: [
                    .typed(StoredValue(kind: .list, deadlineMs: 0, bytes: DataModel.encodeItems([[1]])))
                ])
                == "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n")
    }

    @Test(
        "MULTI … EXEC on one key is one write; a command that cannot join aborts the whole transaction, nothing runs"
    )
    func transactions() {
        var s = Session(authenticated: true)
        // What redis-py's pipeline(transaction=True) sends in one write, on two keys: refused whole.
        #expect(wire(["MULTI"], session: &s).0 == "+OK\r\n")
        let (set, setReqs) = wire(["SET", "k", "v"], session: &s)
        #expect(set == "+QUEUED\r\n")
        #expect(setReqs.isEmpty)
        let (incr, incrReqs) = wire(["INCR", "n"], session: &s)
        #expect(incr.hasPrefix("-CROSSSLOT Tern transactions take commands on one key"))
        #expect(incrReqs.isEmpty)
        #expect(
            wire(["SEQ.NEXT", "1"], session: &s).0.hasPrefix(
                "-ERR 'seq.next' cannot run inside a Tern transaction"))
        #expect(wire(["MULTI"], session: &s).0 == "-ERR MULTI calls can not be nested\r\n")
        #expect(wire(["WATCH", "k"], session: &s).0 == "-ERR WATCH inside MULTI is not allowed\r\n")
        let (abort, abortReqs) = wire(["EXEC"], session: &s)
        #expect(abort == "-EXECABORT Transaction discarded because of previous errors.\r\n")
        #expect(abortReqs.isEmpty)
        // One key: one `multi` write, its replies in order, each in its command's shape.
        _ = wire(["MULTI"], session: &s)
        #expect(wire(["SET", "k", "1"], session: &s).0 == "+QUEUED\r\n")
        #expect(wire(["INCR", "k"], session: &s).0 == "+QUEUED\r\n")
        #expect(wire(["GET", "k"], session: &s).0 == "+QUEUED\r\n")
        #expect(
            wire(["HSET", "k", "f"], session: &s).0 == "-ERR wrong number of arguments for 'hset' command\r\n"
        )
        #expect(s.transactionAborted)
        _ = wire(["DISCARD"], session: &s)
        _ = wire(["MULTI"], session: &s)
        _ = wire(["SET", "k", "1"], session: &s)
        _ = wire(["INCR", "k"], session: &s)
        _ = wire(["GET", "k"], session: &s)
        let (exec, execReqs) = wire(
            ["EXEC"], replies: [.done(.data(.array([.ok, .integer(2), .bulk(Array("2".utf8))])))], session: &s
        )
        #expect(exec == "*3\r\n+OK\r\n:2\r\n$1\r\n2\r\n")
        #expect(execReqs.count == 1)
        if case .write(.data(let a)) = execReqs.first?.request {
            #expect(a[0] == Array("multi".utf8) && a[1] == Array("k".utf8) && a[3] == Array("-".utf8))
            #expect(
                Array(a[4...])
                    == bytes(["w", "3", "set", "k", "1", "w", "3", "incrby", "k", "1", "r", "2", "get", "k"]))
        } else {
            Issue.record("EXEC went out as \(execReqs)")
        }
        #expect(s.transaction == nil)
        #expect(wire(["EXEC"], session: &s).0 == "-ERR EXEC without MULTI\r\n")
        #expect(wire(["DISCARD"], session: &s).0 == "-ERR DISCARD without MULTI\r\n")
        // DEL and EXISTS of one key join a transaction (Redis's multi suite opens with DEL).
        _ = wire(["MULTI"], session: &s)
        #expect(wire(["DEL", "k"], session: &s).0 == "+QUEUED\r\n")
        #expect(wire(["EXISTS", "k"], session: &s).0 == "+QUEUED\r\n")
        _ = wire(["DISCARD"], session: &s)
        #expect(
            wire(["MULTI", "x"], session: &s).0 == "-ERR wrong number of arguments for 'multi' command\r\n")
        // WATCH: the watched value's fingerprint guards the write; a nil array when it changed.
        let (watch, watchReqs) = wire(["WATCH", "k"], replies: [.value(Array("1".utf8))], session: &s)
        #expect(watch == "+OK\r\n" && watchReqs.map(\.request) == [.read])
        _ = wire(["MULTI"], session: &s)
        _ = wire(["INCR", "k"], session: &s)
        let (changed, guarded) = wire(["EXEC"], replies: [.done(.data(.array(nil)))], session: &s)
        #expect(changed == "*-1\r\n")
        if case .write(.data(let a)) = guarded.first?.request {
            #expect(
                a[3]
                    == Array(
                        DataModel.digest(StoredValue(kind: .string, deadlineMs: 0, bytes: Array("1".utf8)))
                            .utf8))
        } else {
            Issue.record("EXEC after WATCH went out as \(guarded)")
        }
        #expect(s.watch == nil)
    }

    @Test("Key commands map to the right requests and replies")
    func keyCommands() {
        var s = Session(authenticated: true)
        let (get, getReqs) = wire(["GET", "k"], replies: [.value(Array("v".utf8))], session: &s)
        #expect(get == "$1\r\nv\r\n")
        #expect(getReqs.map(\.request) == [.read])
        #expect(wire(["GET", "k"], replies: [.value(nil)]) == "$-1\r\n")
        let (set, setReqs) = wire(["SET", "k", "v"], replies: [.done(.data(.ok))], session: &s)
        #expect(set == "+OK\r\n")
        #expect(setReqs.map(\.request) == [.write(.data(bytes(["set", "k", "v"])))])
        let (_, nxget) = wire(
            ["SET", "k", "v", "nx", "GET", "EX", "100"], replies: [.done(.data(.bulk(nil)))], session: &s)
        // A relative TTL becomes an absolute deadline where the command arrived (the test clock).
        let deadline = String(CommandProcessor(password: nil, maxValueBytes: 16).clock() / 1000 + 100_000)
        if case .write(.data(let a)) = nxget[0].request {
            #expect(a.prefix(5) == bytes(["set", "k", "v", "nx", "get"])[...])
            #expect(a[5] == Array("pxat".utf8))
            #expect(abs(Int(String(decoding: a[6], as: UTF8.self))! - Int(deadline)!) < 5000)
        } else {
            Issue.record("SET … EX went out as \(nxget)")
        }
        #expect(wire(["SET", "k", "v", "XX"], replies: [.done(.data(.bulk(nil)))]) == "$-1\r\n")
        #expect(
            wire(["SET", "k", "v", "GET"], replies: [.done(.data(.bulk(Array("o".utf8))))]) == "$1\r\no\r\n")
        #expect(wire(["GETSET", "k", "v"], replies: [.done(.data(.bulk(nil)))]) == "$-1\r\n")
        #expect(
            wire(["GETSET", "k", "v"], replies: [.done(.previousForgotten)]).hasPrefix(
                "-ERR the write was applied"))
        #expect(
            wire(
                ["DEL", "a", "b", "c"],
                replies: [.done(.data(.integer(1))), .done(.data(.integer(0))), .done(.data(.integer(1)))])
                == ":2\r\n")
        #expect(wire(["EXISTS", "a", "a"], replies: [.value([]), .value([])]) == ":2\r\n")
        #expect(
            wire(
                ["MGET", "a", "b", "h"],
                replies: [
                    .value(Array("1".utf8)), .value(nil),
                    .typed(StoredValue(kind: .hash, deadlineMs: 0, bytes: [])),
                ])
                == "*3\r\n$1\r\n1\r\n$-1\r\n$-1\r\n")
        #expect(
            wire(["MSET", "a", "1", "b", "2"], replies: [.done(.data(.ok)), .done(.data(.ok))])
                == "+OK\r\n")
        #expect(wire(["INCR", "k"], replies: [.done(.data(.integer(7)))]) == ":7\r\n")
        let (_, decr) = wire(["DECRBY", "k", "5"], replies: [.done(.data(.integer(-5)))], session: &s)
        #expect(decr.map(\.request) == [.write(.data(bytes(["incrby", "k", "-5"])))])
        #expect(wire(["APPEND", "k", "xy"], replies: [.done(.data(.integer(4)))]) == ":4\r\n")
        #expect(wire(["STRLEN", "k"], replies: [.value(Array("abc".utf8))]) == ":3\r\n")
        #expect(wire(["STRLEN", "k"], replies: [.value(nil)]) == ":0\r\n")
        #expect(wire(["TYPE", "k"], replies: [.value(nil)]) == "+none\r\n")
        // OBJECT: Redis 7.0's encoding names by kind and size; nil for a missing key.
        #expect(wire(["OBJECT", "ENCODING", "k"], replies: [.value(Array("12".utf8))]) == "$3\r\nint\r\n")
        #expect(
            wire(
                ["OBJECT", "ENCODING", "k"],
                replies: [.typed(StoredValue(kind: .list, deadlineMs: 0, bytes: []))])
                == "$9\r\nquicklist\r\n")
        #expect(wire(["OBJECT", "REFCOUNT", "k"], replies: [.value(nil)]) == "$-1\r\n")
        #expect(wire(["OBJECT", "NOPE", "k"]).hasPrefix("-ERR unknown subcommand 'NOPE'. Try OBJECT HELP."))
        // A count of -2^63 stopped the node (an overflow in the pick); now Redis's refusal.
        #expect(wire(["SRANDMEMBER", "s", "-9223372036854775808"]) == "-ERR value is out of range\r\n")
        #expect(
            wire(["HRANDFIELD", "h", "-9223372036854775808", "WITHVALUES"])
                == "-ERR value is out of range\r\n")
        #expect(
            wire(["TYPE", "k"], replies: [.typed(StoredValue(kind: .zset, deadlineMs: 0, bytes: []))])
                == "+zset\r\n")
        // ZSCORE: RESP2 Redis's number text, RESP3 a double.
        let z = StoredValue(kind: .zset, deadlineMs: 0, bytes: DataModel.encodeZSet([(Array("m".utf8), 1.5)]))
        #expect(wire(["ZSCORE", "z", "m"], replies: [.typed(z)]) == "$3\r\n1.5\r\n")
        var v3 = Session(authenticated: true)
        v3.version = .v3
        #expect(wire(["ZSCORE", "z", "m"], replies: [.typed(z)], session: &v3).0 == ",1.5\r\n")
        #expect(
            wire(["ZRANGE", "z", "0", "-1", "WITHSCORES"], replies: [.typed(z)], session: &v3).0
                == "*1\r\n*2\r\n$1\r\nm\r\n,1.5\r\n")
    }

    @Test("Failures: the documented NOQUORUM and UNAVAILABLE errors")
    func failures() {
        #expect(
            wire(["SET", "k", "v"], replies: [.notApplied("no answer from campus B")])
                == "-NOQUORUM write not applied: no answer from campus B\r\n")
        #expect(
            wire(["INCR", "k"], replies: [.unknown("no answer from campus C")])
                == "-NOQUORUM write not acknowledged (it may or may not have been applied): no answer from campus C\r\n"
        )
        #expect(
            wire(["GET", "k"], replies: [.notApplied("x")]) == "-NOQUORUM read not served: x\r\n")
        #expect(
            wire(["MGET", "a", "b"], replies: [.value(nil), .unavailable("node is shutting down")])
                == "-UNAVAILABLE node is shutting down\r\n")
    }

    @Test("HELLO 3 switches to RESP3 (the reply itself is RESP3); AUTH and NOAUTH")
    func helloAndAuth() {
        let p = CommandProcessor(password: "pw", maxValueBytes: 16)
        var s = Session(authenticated: false)
        #expect(wire(["GET", "k"], session: &s, processor: p).0 == "-NOAUTH Authentication required.\r\n")
        #expect(wire(["HELLO", "3"], session: &s, processor: p).0 == "-NOAUTH Authentication required.\r\n")
        #expect(
            wire(["AUTH", "nope"], session: &s, processor: p).0
                == "-WRONGPASS invalid username-password pair or user is disabled.\r\n")
        let hello = wire(["HELLO", "3", "AUTH", "default", "pw"], session: &s, processor: p).0
        #expect(s.authenticated && s.version == .v3)
        #expect(hello.hasPrefix("%7\r\n$6\r\nserver\r\n$4\r\ntern\r\n"))
        #expect(wire(["GET", "k"], replies: [.value(nil)], session: &s, processor: p).0 == "_\r\n")
        #expect(
            wire(["HELLO", "4"], session: &s, processor: p).0 == "-NOPROTO unsupported protocol version\r\n")
        var open = Session(authenticated: true)
        #expect(
            wire(["AUTH", "x"], session: &open).0
                == "-ERR AUTH <password> called without any password configured for the default user. "
                + "Are you sure your configuration is correct?\r\n")
    }

    @Test("An oversized value is refused with an error, the connection kept")
    func oversized() {
        var s = Session(authenticated: true)
        let p = CommandProcessor(password: nil, maxValueBytes: 16)
        let plan = p.plan(
            RESPCommand(args: [Array("SET".utf8), Array("k".utf8), []], oversized: true), session: &s)
        guard case .reply(let v) = plan else {
            Issue.record("expected an immediate reply")
            return
        }
        #expect(v == .error("ERR value too large (the largest accepted is 16 bytes)"))
    }
}
