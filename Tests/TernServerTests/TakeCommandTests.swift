import NIOCore
import TernConsensus
import TernRESP
import Testing

@testable import TernServer

private let wrongType = RESPValue.error("WRONGTYPE Operation against a key holding the wrong kind of value")

/// Redis's error texts of the bit commands, LCS, LMPOP/ZMPOP, the blocking pops and LPOP/INCRBYFLOAT
/// (checked against redis-server 7.0.15), without a cluster.
@Suite struct TakeCommandErrorTests {
    @Test("Bit commands and LCS: arity, offsets, bits, units, options")
    func bits() {
        #expect(wire(["SETBIT", "k", "0", "2"]) == "-ERR bit is not an integer or out of range\r\n")
        #expect(wire(["SETBIT", "k", "-1", "1"]) == "-ERR bit offset is not an integer or out of range\r\n")
        #expect(wire(["SETBIT", "k", "x", "1"]) == "-ERR bit offset is not an integer or out of range\r\n")
        #expect(
            wire(["SETBIT", "k", "4294967296", "1"])
                == "-ERR bit offset is not an integer or out of range\r\n")
        // Past Tern's value bound (16 bytes in `wire`'s processor): refused as Redis refuses
        // offsets past its own.
        #expect(wire(["SETBIT", "k", "128", "1"]) == "-ERR bit offset is not an integer or out of range\r\n")
        #expect(wire(["GETBIT", "k", "-1"]) == "-ERR bit offset is not an integer or out of range\r\n")
        #expect(wire(["BITCOUNT", "k", "1"]) == "-ERR syntax error\r\n")
        #expect(wire(["BITCOUNT", "k", "1", "x"]) == "-ERR value is not an integer or out of range\r\n")
        #expect(wire(["BITCOUNT", "k", "0", "1", "foo"]) == "-ERR syntax error\r\n")
        #expect(wire(["BITPOS", "k", "2"]) == "-ERR The bit argument must be 1 or 0.\r\n")
        #expect(wire(["BITPOS", "k", "1", "x"]) == "-ERR value is not an integer or out of range\r\n")
        #expect(wire(["BITPOS", "k", "1", "0", "1", "foo"]) == "-ERR syntax error\r\n")
        #expect(wire(["LCS", "a"]) == "-ERR wrong number of arguments for 'lcs' command\r\n")
        #expect(wire(["LCS", "a", "b", "foo"]) == "-ERR syntax error\r\n")
        #expect(
            wire(["LCS", "a", "b", "LEN", "IDX"])
                == "-ERR If you want both the length and indexes, please just use IDX.\r\n")
        #expect(
            wire(["LCS", "a", "b", "IDX", "MINMATCHLEN", "x"])
                == "-ERR value is not an integer or out of range\r\n")
    }

    @Test("LCS answers from two reads: the string, LEN, IDX with match lengths, WRONGTYPE")
    func lcs() {
        let values: [NodeReply] = [.value(b("ohmytext")), .value(b("mynewtext"))]
        #expect(wire(["LCS", "a", "b"], replies: values) == "$6\r\nmytext\r\n")
        #expect(wire(["LCS", "a", "b", "LEN"], replies: values) == ":6\r\n")
        #expect(
            wire(["LCS", "a", "b", "IDX", "MINMATCHLEN", "4", "WITHMATCHLEN"], replies: values)
                == "*4\r\n$7\r\nmatches\r\n*1\r\n*3\r\n*2\r\n:4\r\n:7\r\n*2\r\n:5\r\n:8\r\n:4\r\n$3\r\nlen\r\n:6\r\n"
        )
        #expect(wire(["LCS", "a", "nokey"], replies: [.value(b("x")), .value(nil)]) == "$0\r\n\r\n")
        let list = NodeReply.typed(
            StoredValue(kind: .list, deadlineMs: 0, bytes: DataModel.encodeItems([b("x")])))
        #expect(
            wire(["LCS", "a", "l"], replies: [.value(b("x")), list])
                == "-ERR The specified keys must contain string values\r\n")
    }

    @Test("LMPOP/ZMPOP/BLMPOP/BZPOPMIN/BLMOVE: numkeys, ends, COUNT, timeouts")
    func pops() {
        #expect(wire(["LMPOP", "0", "l", "left"]) == "-ERR numkeys should be greater than 0\r\n")
        #expect(wire(["LMPOP", "x", "l", "left"]) == "-ERR numkeys should be greater than 0\r\n")
        #expect(wire(["LMPOP", "2", "l", "left"]) == "-ERR syntax error\r\n")
        #expect(wire(["LMPOP", "1", "l", "middle"]) == "-ERR syntax error\r\n")
        #expect(wire(["LMPOP", "1", "l", "left", "count", "0"]) == "-ERR count should be greater than 0\r\n")
        #expect(wire(["LMPOP", "1", "l", "left", "count", "x"]) == "-ERR count should be greater than 0\r\n")
        #expect(wire(["LMPOP", "1", "l", "left", "foo"]) == "-ERR syntax error\r\n")
        #expect(wire(["LMPOP", "1", "l", "left", "count", "1", "count", "2"]) == "-ERR syntax error\r\n")
        #expect(wire(["LMPOP", "1", "l"]) == "-ERR wrong number of arguments for 'lmpop' command\r\n")
        #expect(wire(["ZMPOP", "1", "z", "left"]) == "-ERR syntax error\r\n")
        #expect(wire(["ZMPOP", "0", "z", "min"]) == "-ERR numkeys should be greater than 0\r\n")
        #expect(wire(["BLMPOP", "x", "1", "l", "left"]) == "-ERR timeout is not a float or out of range\r\n")
        #expect(wire(["BZMPOP", "-1", "1", "z", "min"]) == "-ERR timeout is negative\r\n")
        #expect(wire(["BZPOPMIN", "z", "-1"]) == "-ERR timeout is negative\r\n")
        #expect(wire(["BZPOPMAX", "z", "0.1x"]) == "-ERR timeout is not a float or out of range\r\n")
        #expect(wire(["BLMOVE", "a", "b", "left", "middle", "0"]) == "-ERR syntax error\r\n")
        #expect(wire(["BRPOPLPUSH", "a", "b", "-1"]) == "-ERR timeout is negative\r\n")
        #expect(wire(["LPOP", "k", "1", "2"]) == "-ERR wrong number of arguments for 'lpop' command\r\n")
        #expect(wire(["RPOP", "k", "a"]) == "-ERR value is out of range, must be positive\r\n")
        #expect(wire(["INCRBYFLOAT", "k", "nan"]) == "-ERR value is not a valid float\r\n")
        // An infinite increment reaches the model, which answers Redis's "would produce".
        var s = Session(authenticated: true)
        let modelError = NodeReply.done(.data(.error("ERR increment would produce NaN or Infinity")))
        let (text, reqs) = wire(["INCRBYFLOAT", "k", "+inf"], replies: [modelError], session: &s)
        #expect(reqs.count == 1 && text == "-ERR increment would produce NaN or Infinity\r\n")
        #expect(wire(["HINCRBYFLOAT", "h", "f", "+inf"]) == "-ERR value is NaN or Infinity\r\n")
        // Found by Redis's "SETRANGE with huge offset": the offset plus the value's length overflowed
        // and stopped the node.
        for offset in ["9223372036854775807", "2147483647"] {
            #expect(
                wire(["SETRANGE", "k", offset, "A"])
                    == "-ERR string exceeds maximum allowed size (proto-max-bulk-len)\r\n")
        }
    }

    @Test("Inside MULTI a blocking pop of one key joins as its one-key write; of two keys it cannot")
    func insideTransaction() {
        var s = Session(authenticated: true)
        #expect(wire(["MULTI"], session: &s).0 == "+OK\r\n")
        #expect(wire(["BLPOP", "l", "0"], session: &s).0 == "+QUEUED\r\n")
        #expect(wire(["PING"], session: &s).0 == "+QUEUED\r\n")
        #expect(wire(["BLMPOP", "0", "1", "l", "right", "count", "2"], session: &s).0 == "+QUEUED\r\n")
        #expect(wire(["BRPOPLPUSH", "l", "l", "0"], session: &s).0 == "+QUEUED\r\n")
        let list = DataModel.encodeItems([b("a"), b("b"), b("c")])
        let (answer, reqs) = wire(
            ["EXEC"],
            replies: [
                .done(
                    .data(
                        .array([
                            .bulk(b("a")), .array([.bulk(b("c")), .bulk(b("b"))]), .bulk(nil),
                        ])))
            ], session: &s)
        #expect(reqs.count == 1 && reqs[0].key == b("l"))
        _ = list
        #expect(
            answer
                == "*4\r\n*2\r\n$1\r\nl\r\n$1\r\na\r\n+PONG\r\n*2\r\n$1\r\nl\r\n*2\r\n$1\r\nc\r\n$1\r\nb\r\n$-1\r\n"
        )
        // An empty list inside a transaction: the null array at once.
        #expect(wire(["MULTI"], session: &s).0 == "+OK\r\n")
        #expect(wire(["BZPOPMIN", "z", "0"], session: &s).0 == "+QUEUED\r\n")
        #expect(
            wire(["EXEC"], replies: [.done(.data(.array([.array([])])))], session: &s).0 == "*1\r\n*-1\r\n")
        // Two keys cannot join a one-key transaction.
        #expect(wire(["MULTI"], session: &s).0 == "+OK\r\n")
        #expect(wire(["BLPOP", "a", "b", "0"], session: &s).0.hasPrefix("-ERR 'blpop' cannot run inside"))
        #expect(wire(["DISCARD"], session: &s).0 == "+OK\r\n")
    }

    @Test("MULTI with ECHO or PING queued before a command on a key: neither is taken for a key")
    func keylessQueued() {
        var s = Session(authenticated: true)
        #expect(wire(["MULTI"], session: &s).0 == "+OK\r\n")
        #expect(wire(["PING"], session: &s).0 == "+QUEUED\r\n")
        #expect(wire(["ECHO", "x"], session: &s).0 == "+QUEUED\r\n")
        #expect(wire(["SET", "k", "v"], session: &s).0 == "+QUEUED\r\n")
        #expect(wire(["LMPOP", "1", "k", "left"], session: &s).0 == "+QUEUED\r\n")
        #expect(wire(["DISCARD"], session: &s).0 == "+OK\r\n")
    }
}

/// The rounds of a take, stepped by hand with canned replies: read first, pop only a non-empty key,
/// read again after a lost race, and LMOVE's push-then-pop with its undo.
@Suite struct TakeRoundTests {
    func list(_ items: [String]) -> NodeReply {
        .typed(StoredValue(kind: .list, deadlineMs: 0, bytes: DataModel.encodeItems(items.map(b))))
    }

    @Test("LMPOP: an absent first key is skipped, the first list found is popped; a lost race reads again")
    func mpop() {
        let round = TakeRound.pop([b("a"), b("b")], kind: .list) {
            [b("lpop"), $0, b("2")]
        } answer: { key, reply in
            CommandProcessor.popAnswer(key, reply, list: true, mpop: true)
        }
        #expect(round.requests.map(\.key) == [b("a"), b("b")])
        guard case .again(let pop) = round.step([.value(nil), list(["x", "y", "z"])]) else {
            Issue.record("no pop")
            return
        }
        #expect(pop.requests.count == 1 && pop.requests[0].key == b("b"))
        guard case .answer(let v) = pop.step([.done(.data(.array([.bulk(b("x")), .bulk(b("y"))])))]) else {
            Issue.record("no answer")
            return
        }
        #expect(v == .array([bulk("b"), .array([bulk("x"), bulk("y")])]))
        // Another client emptied it first: read again (never a write while empty).
        guard case .again(let reread) = pop.step([.done(.data(.array(nil)))]) else {
            Issue.record("no reread")
            return
        }
        #expect(reread.requests.allSatisfy { if case .read = $0.request { true } else { false } })
        guard case .empty = round.step([.value(nil), .value(nil)]) else {
            Issue.record("not empty")
            return
        }
        guard case .answer(let wrong) = round.step([.value(b("s")), list(["x"])]) else {
            Issue.record("no wrongtype")
            return
        }
        #expect(wrong == wrongType)
    }

    @Test("LMOVE between keys: push to the destination, then pop the source's end only if it still holds it")
    func move() {
        let round = TakeRound.move(b("src"), b("dst"), from: "right", to: "left")
        guard case .answer(let wrong) = round.step([list(["a"]), .value(b("s"))]) else {
            Issue.record("no wrongtype")
            return
        }
        #expect(wrong == wrongType)
        guard case .empty = round.step([.value(nil), .value(b("s"))]) else {
            Issue.record("absent source is empty, whatever the destination")
            return
        }
        guard case .again(let push) = round.step([list(["a", "b"]), .value(nil)]) else {
            Issue.record("no push")
            return
        }
        #expect(push.requests[0].key == b("dst"))
        if case .write(.data(let a)) = push.requests[0].request {
            #expect(a == [b("lpush"), b("dst"), b("b")])
        }
        guard case .again(let pop) = push.step([.done(.data(.integer(1)))]) else {
            Issue.record("no pop")
            return
        }
        if case .write(.data(let a)) = pop.requests[0].request {
            #expect(a == [b("lpopif"), b("src"), b("right"), b("b")])
        }
        guard case .answer(let moved) = pop.step([.done(.data(.bulk(b("b"))))]) else {
            Issue.record("no answer")
            return
        }
        #expect(moved == bulk("b"))
        // Lost the race: undo the push on the destination, then start over.
        guard case .again(let undo) = pop.step([.done(.data(.bulk(nil)))]) else {
            Issue.record("no undo")
            return
        }
        if case .write(.data(let a)) = undo.requests[0].request {
            #expect(a == [b("lpopif"), b("dst"), b("left"), b("b")])
        }
        guard case .again(let again) = undo.step([.done(.data(.bulk(b("b"))))]) else {
            Issue.record("no retry")
            return
        }
        #expect(again.requests.count == 2)
    }
}

/// The commands across keys and the blocking ones on a three-node loopback cluster.
@Suite(.timeLimit(.minutes(2))) struct TakeClusterTests {
    @Test("MSETNX, BITOP, LMOVE between keys, LMPOP/ZMPOP, BLMOVE and BZPOPMIN woken from another node")
    func acrossKeys() async throws {
        let k = try await KeyspaceCluster.start()
        defer { Task { await k.stop() } }
        let a = try await k.client(0)
        let c = try await k.client(1)

        // MSETNX: all or none; the last value of a key named twice wins.
        #expect(try await a.send(["MSETNX", "x1", "xxx", "y2", "yyy"]) == .integer(1))
        #expect(try await a.send(["MSETNX", "x1", "n", "z3", "n"]) == .integer(0))
        #expect(try await a.send(["EXISTS", "z3"]) == .integer(0))
        #expect(try await a.send(["MSETNX", "w", "1", "w", "2"]) == .integer(1))
        #expect(try await a.send(["GET", "w"]) == bulk("2"))
        #expect(
            try await a.send(["MSETNX", "a", "1", "b"])
                == .error("ERR wrong number of arguments for 'msetnx' command"))

        // BITOP over two strings and an absent key; an empty result deletes the destination.
        _ = try await a.send([b("SET"), b("b1"), [0x0f]])
        _ = try await a.send([b("SET"), b("b2"), [0xf0, 0x01]])
        #expect(try await a.send(["BITOP", "OR", "bd", "b1", "b2", "nokey"]) == .integer(2))
        #expect(try await a.send(["GET", "bd"]) == .bulkString([0xff, 0x01]))
        #expect(try await a.send(["BITOP", "AND", "bd", "nokey"]) == .integer(0))
        #expect(try await a.send(["EXISTS", "bd"]) == .integer(0))
        #expect(
            try await a.send(["BITOP", "NOT", "bd", "b1", "b2"])
                == .error("ERR BITOP NOT must be called with a single source key."))
        _ = try await a.send(["RPUSH", "li", "x"])
        #expect(try await a.send(["BITOP", "AND", "bd", "li"]) == wrongType)

        // SINTERCARD intersects (it counted the union: Redis's "SINTERCARD with two sets").
        _ = try await a.send(["SADD", "s1", "a", "b", "c", "d"])
        _ = try await a.send(["SADD", "s2", "c", "d", "e"])
        #expect(try await a.send(["SINTERCARD", "2", "s1", "s2"]) == .integer(2))
        #expect(try await a.send(["SINTERCARD", "2", "s1", "s2", "LIMIT", "1"]) == .integer(1))
        #expect(try await a.send(["SINTERCARD", "1", "s1"]) == .integer(4))

        // ZRANGESTORE BYLEX stores the members with their scores (it was "syntax error": the
        // normalised ZRANGE added WITHSCORES, which ZRANGE refuses with BYLEX; Redis's
        // "ZRANGESTORE BYLEX").
        _ = try await a.send(["ZADD", "zl", "1", "a", "2", "b", "3", "c", "4", "d"])
        #expect(try await a.send(["ZRANGESTORE", "zl2", "zl", "[b", "[c", "BYLEX"]) == .integer(2))
        #expect(
            try await a.send(["ZRANGE", "zl2", "0", "-1", "WITHSCORES"])
                == .array([bulk("b"), bulk("2"), bulk("c"), bulk("3")]))
        #expect(
            try await a.send(["ZRANGESTORE", "zl2", "zl", "[c", "-", "BYLEX", "REV", "LIMIT", "0", "1"])
                == .integer(1))
        #expect(try await a.send(["ZRANGE", "zl2", "0", "-1"]) == .array([bulk("c")]))
        // WITHSCORES is not ZRANGESTORE's (it stored the range: Redis's "ZRANGESTORE invalid syntax").
        #expect(
            try await a.send(["ZRANGESTORE", "zl2", "zl", "0", "-1", "WITHSCORES"])
                == .error("ERR syntax error"))
        #expect(try await a.send(["ZRANGE", "zl2", "0", "-1"]) == .array([bulk("c")]))

        // ZRANDMEMBER picks at random on every call (it was seeded by the set's size, so it always
        // answered the same member: Redis's "ZRANDMEMBER - listpack"); a count on a missing key is
        // an empty array, not a null.
        var seen = Set<RESPValue>()
        for _ in 0..<100 { seen.insert(try await a.send(["ZRANDMEMBER", "zl"])) }
        #expect(seen == [bulk("a"), bulk("b"), bulk("c"), bulk("d")])
        #expect(try await a.send(["ZRANDMEMBER", "nozset", "3"]) == .array([]))

        // LMOVE/RPOPLPUSH between two keys.
        _ = try await a.send(["RPUSH", "src", "a", "b", "c"])
        #expect(try await a.send(["RPOPLPUSH", "src", "dst"]) == bulk("c"))
        #expect(try await a.send(["LMOVE", "src", "dst", "LEFT", "RIGHT"]) == bulk("a"))
        #expect(try await a.send(["LRANGE", "dst", "0", "-1"]) == .array([bulk("c"), bulk("a")]))
        #expect(try await a.send(["LRANGE", "src", "0", "-1"]) == .array([bulk("b")]))
        #expect(try await a.send(["LMOVE", "nosrc", "dst", "LEFT", "LEFT"]) == .bulkString(nil))
        #expect(try await a.send(["LMOVE", "src", "b1", "LEFT", "LEFT"]) == wrongType)
        #expect(try await a.send(["LLEN", "src"]) == .integer(1))

        // LMPOP / ZMPOP: the first non-empty key; nothing: a null array.
        #expect(
            try await a.send(["LMPOP", "2", "nokey", "dst", "RIGHT", "COUNT", "5"])
                == .array([bulk("dst"), .array([bulk("a"), bulk("c")])]))
        #expect(try await a.send(["LMPOP", "1", "dst", "LEFT"]) == .array(nil))
        _ = try await a.send(["ZADD", "z", "1", "m1", "2", "m2", "3", "m3"])
        #expect(
            try await a.send(["ZMPOP", "1", "z", "MAX", "COUNT", "2"])
                == .array([
                    bulk("z"), .array([.array([bulk("m3"), bulk("3")]), .array([bulk("m2"), bulk("2")])]),
                ]))
        #expect(
            try await a.send(["ZMPOP", "2", "z", "li", "MIN"])
                == .array([bulk("z"), .array([.array([bulk("m1"), bulk("1")])])]))
        #expect(try await a.send(["ZMPOP", "2", "li", "z", "MIN"]) == wrongType)

        // Blocking: BLMOVE parked on an empty source, woken by a push on another node.
        async let moved = a.send(["BLMOVE", "bsrc", "bdst", "RIGHT", "LEFT", "10"])
        try await Task.sleep(for: .milliseconds(300))
        _ = try await c.send(["RPUSH", "bsrc", "one", "two"])
        #expect(try await moved == bulk("two"))
        #expect(try await c.send(["LRANGE", "bdst", "0", "-1"]) == .array([bulk("two")]))
        // BZPOPMIN / BZMPOP: at once when there is something, the null array when time runs out.
        _ = try await c.send(["ZADD", "bz", "5", "five", "4", "four"])
        #expect(
            try await a.send(["BZPOPMIN", "nokey", "bz", "1"])
                == .array([bulk("bz"), bulk("four"), bulk("4")]))
        #expect(
            try await a.send(["BZMPOP", "1", "1", "bz", "MAX"])
                == .array([bulk("bz"), .array([.array([bulk("five"), bulk("5")])])]))
        #expect(try await a.send(["BZPOPMAX", "bz", "0.2"]) == .array(nil))
        async let popped = a.send(["BLMPOP", "10", "2", "q1", "q2", "LEFT", "COUNT", "2"])
        try await Task.sleep(for: .milliseconds(300))
        _ = try await c.send(["RPUSH", "q2", "p", "q", "r"])
        #expect(try await popped == .array([bulk("q2"), .array([bulk("p"), bulk("q")])]))
        // A transaction: BLPOP of an empty list answers at once.
        _ = try await a.send(["MULTI"])
        _ = try await a.send(["BLPOP", "empty", "0"])
        _ = try await a.send(["RPUSH", "empty", "e"])
        _ = try await a.send(["BRPOP", "empty", "0"])
        #expect(
            try await a.send(["EXEC"])
                == .array([.array(nil), .integer(1), .array([bulk("empty"), bulk("e")])]))
        for x in [a, c] { await x.close() }
    }
}
