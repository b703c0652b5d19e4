import NIOCore
import TernConsensus
import TernRESP
import TernServer
import Testing

/// The small Redis-compatibility items Redis's own suite found (docs/REDIS-COMPAT.md): each test
/// here failed before its fix.
@Suite struct CompatTests {
    static let palermo = 3_479_099_956_230_698.0

    static func zset(_ items: [(member: String, score: Double)]) -> StoredValue {
        StoredValue(
            kind: .zset, deadlineMs: 0,
            bytes: DataModel.zsetBytes(items.map { (Array($0.member.utf8), $0.score) }))
    }

    @Test(
        "GEOADD and the GEO reads join MULTI as one-key data calls (introspection-2's 'command stats for MULTI')"
    )
    func geoInsideMulti() {
        var s = Session(authenticated: true)
        #expect(wire(["MULTI"], session: &s).0 == "+OK\r\n")
        #expect(wire(["GEOADD", "g", "13.361389", "38.115556", "Palermo"], session: &s).0 == "+QUEUED\r\n")
        #expect(wire(["GEOPOS", "g", "Palermo", "nowhere"], session: &s).0 == "+QUEUED\r\n")
        #expect(wire(["GEODIST", "g", "Palermo", "Palermo", "km"], session: &s).0 == "+QUEUED\r\n")
        #expect(
            wire(["GEOSEARCH", "g", "FROMLONLAT", "13", "38", "BYRADIUS", "100", "km"], session: &s).0
                == "+QUEUED\r\n")
        let dumped = DataReply.array([
            .integer(3), .integer(0), .bulk(Self.zset([("Palermo", Self.palermo)]).bytes),
        ])
        let (exec, reqs) = wire(
            ["EXEC"], replies: [.done(.data(.array([.integer(1), dumped, dumped, dumped])))], session: &s)
        #expect(
            exec
                == "*4\r\n:1\r\n*2\r\n*2\r\n$20\r\n13.36138933897018433\r\n$20\r\n38.11555639549629859\r\n*-1\r\n"
                + "$6\r\n0.0000\r\n*1\r\n$7\r\nPalermo\r\n")
        #expect(reqs.count == 1)
        if case .write(.data(let a)) = reqs.first?.request {
            #expect(
                Array(a[4...])
                    == bytes([
                        "w", "4", "zadd", "g", "3479099956230698", "Palermo", "r", "2", "dumpvalue", "g", "r",
                        "2",
                        "dumpvalue", "g", "r", "2", "dumpvalue", "g",
                    ]))
        } else {
            Issue.record("EXEC went out as \(reqs)")
        }
        // The STORE forms write a second key: they cannot join.
        _ = wire(["MULTI"], session: &s)
        #expect(
            wire(["GEOSEARCHSTORE", "d", "g", "FROMMEMBER", "Palermo", "BYRADIUS", "1", "km"], session: &s).0
                .hasPrefix("-ERR 'geosearchstore' cannot run inside a Tern transaction"))
        #expect(s.transactionAborted)
        _ = wire(["DISCARD"], session: &s)
        // A GEO argument error fails to queue, in Redis's words.
        _ = wire(["MULTI"], session: &s)
        #expect(
            wire(["GEOADD", "g", "200", "1", "x"], session: &s).0
                == "-ERR invalid longitude,latitude pair 200.000000,1.000000\r\n")
        #expect(s.transactionAborted)
        _ = wire(["DISCARD"], session: &s)
    }

    @Test("GEO reads alone: a dumpvalue read of the sorted set, WRONGTYPE on another kind, empty when absent")
    func geoReadsAlone() {
        let string = StoredValue(kind: .string, deadlineMs: 0, bytes: Array("x".utf8))
        #expect(
            wire(["GEOPOS", "g", "Palermo"], replies: [.typed(string)])
                == "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n")
        #expect(wire(["GEOPOS", "g", "Palermo"], replies: [.value(nil)]) == "*1\r\n*-1\r\n")
        #expect(
            wire(["GEOHASH", "g", "Palermo"], replies: [.typed(Self.zset([("Palermo", Self.palermo)]))])
                == "*1\r\n$11\r\nsqc8b49rny0\r\n")
        #expect(wire(["GEORADIUS", "g", "13", "38", "100", "km"], replies: [.value(nil)]) == "*0\r\n")
        #expect(wire(["GEOADD", "g", "1", "1"]) == "-ERR wrong number of arguments for 'geoadd' command\r\n")
    }

    /// The events of `commands` applied in order to a fresh key, one list per command.
    static func events(_ commands: [[String]]) -> [[String]] {
        var v = KeyValue.absent
        return commands.map { c in
            let args = c.map { Array($0.utf8) }
            let before = v
            let r = DataModel.apply(args, to: &v, seed: 1)
            return KeyspaceEvents.events(args, reply: r, before: before, after: v, seed: 1)
        }
    }

    @Test("Stream events carry Redis's names (unit/pubsub 'Keyspace notifications: stream events test')")
    func streamEvents() {
        // Redis's test, as the server normalises it (`name key nowMs limit arg…`).
        #expect(
            Self.events([
                ["xgroup", "s", "5", "0", "create", "mygroup", "$", "mkstream"],
                ["xgroup", "s", "5", "0", "createconsumer", "mygroup", "Bob"],
                ["xadd", "s", "5", "0", "1", "field1", "A"],
                ["xreadgroup", "s", "5", "0", "mygroup", "Alice", "0", "0", ">"],
                ["xclaim", "s", "5", "0", "mygroup", "Mike", "0", "1-0", "force"],
                ["xgroup", "s", "5", "0", "delconsumer", "mygroup", "Lee"],
                ["xautoclaim", "s", "5", "0", "mygroup", "Bob", "0", "1-0"],
                ["xgroup", "s", "5", "0", "delconsumer", "mygroup", "Bob"],
            ])
                == [
                    ["new", "xgroup-create"], ["xgroup-createconsumer"], ["xadd"], ["xgroup-createconsumer"],
                    ["xgroup-createconsumer"], [], [], ["xgroup-delconsumer"],
                ])
        // XADD that trims raises xtrim after xadd; XTRIM/XDEL only when they removed something;
        // XACK none; SETID and DESTROY by name.
        #expect(
            Self.events([
                ["xadd", "t", "5", "0", "1", "f", "v"],
                ["xadd", "t", "5", "0", "maxlen", "1", "2", "f", "v"],
                ["xtrim", "t", "5", "0", "maxlen", "5"], ["xdel", "t", "5", "0", "9"],
                ["xdel", "t", "5", "0", "2"],
                ["xgroup", "t", "5", "0", "create", "g", "0"], ["xgroup", "t", "5", "0", "setid", "g", "0"],
                ["xsetid", "t", "5", "0", "10"], ["xack", "t", "5", "0", "g", "2"],
                ["xgroup", "t", "5", "0", "destroy", "g"], ["xgroup", "t", "5", "0", "destroy", "g"],
            ])
                == [
                    ["new", "xadd"], ["xadd", "xtrim"], [], [], ["xdel"], ["xgroup-create"], ["xgroup-setid"],
                    ["xsetid"], [], ["xgroup-destroy"], [],
                ])
    }

    /// Applies stream writes (`name key nowMs bounds arg…`) in order; the last reply and the length.
    static func streamRun(_ v: inout KeyValue, _ commands: [[String]]) -> DataReply {
        var last = DataReply.ok
        for c in commands { last = DataModel.apply(c.map { Array($0.utf8) }, to: &v, seed: 1) }
        return last
    }

    static func xlen(_ v: KeyValue) -> Int { v.bytes.flatMap { StreamValue($0) }?.entries.count ?? 0 }

    @Test(
        "CONFIG SET stream-node-max-entries: accepted, shown, and `~` trims by its nodes (Redis's stream tests)"
    )
    func streamNodeEntries() {
        let p = CommandProcessor(password: nil, maxValueBytes: 16)
        var s = Session(authenticated: true)
        #expect(
            wire(["CONFIG", "GET", "stream-node-max-*"], session: &s, processor: p).0
                == "*4\r\n$23\r\nstream-node-max-entries\r\n$3\r\n100\r\n$21\r\nstream-node-max-bytes\r\n$4\r\n4096\r\n"
        )
        // Redis's default: the write carries the bound alone, as before.
        let added = NodeReply.done(.data(.bulk(Array("1-0".utf8))))
        let (_, plain) = wire(["XADD", "s", "*", "f", "v"], replies: [added], session: &s, processor: p)
        if case .write(.data(let a)) = plain.first?.request { #expect(a[3] == Array("10000".utf8)) }
        #expect(
            wire(["CONFIG", "SET", "stream-node-max-entries", "10"], session: &s, processor: p).0 == "+OK\r\n"
        )
        #expect(
            wire(["CONFIG", "SET", "stream-node-max-entries", "-1"], session: &s, processor: p).0
                .hasSuffix("argument must be between 0 and 9223372036854775807 inclusive\r\n"))
        #expect(
            wire(["CONFIG", "SET", "stream-node-max-bytes", "8192"], session: &s, processor: p).0 == "+OK\r\n"
        )
        #expect(
            wire(["CONFIG", "GET", "stream-node-max-entries"], session: &s, processor: p).0
                == "*2\r\n$23\r\nstream-node-max-entries\r\n$2\r\n10\r\n")
        let (_, sized) = wire(
            ["XTRIM", "s", "MAXLEN", "~", "5"], replies: [.done(.data(.integer(0)))], session: &s,
            processor: p)
        if case .write(.data(let a)) = sized.first?.request {
            #expect(a[3] == Array("10000:10".utf8))
        } else {
            Issue.record("XTRIM went out as \(sized)")
        }

        // "XADD with LIMIT consecutive calls": nodes of 10, 100 entries.
        var v = KeyValue.absent
        _ = Self.streamRun(&v, (1...100).map { ["xadd", "s", "5", "10000:10", "\($0)", "x", "v"] })
        _ = Self.streamRun(
            &v, [["xadd", "s", "5", "10000:10", "maxlen", "~", "55", "limit", "30", "101", "x", "v"]])
        #expect(Self.xlen(v) == 71)
        _ = Self.streamRun(
            &v, [["xadd", "s", "5", "10000:10", "maxlen", "~", "55", "limit", "30", "102", "x", "v"]])
        #expect(Self.xlen(v) == 62)
        // "XTRIM with ~ is limited": nodes of 1, so the default LIMIT is 100.
        v = .absent
        _ = Self.streamRun(&v, (1...102).map { ["xadd", "s", "5", "10000:1", "\($0)", "x", "v"] })
        #expect(Self.streamRun(&v, [["xtrim", "s", "5", "10000:1", "maxlen", "~", "1"]]) == .integer(100))
        #expect(Self.xlen(v) == 2)
        // "XTRIM with LIMIT delete entries no more than limit": nodes of 2.
        v = .absent
        _ = Self.streamRun(&v, (1...3).map { ["xadd", "s", "5", "10000:2", "\($0)", "x", "v"] })
        #expect(
            Self.streamRun(&v, [["xtrim", "s", "5", "10000:2", "maxlen", "~", "0", "limit", "1"]])
                == .integer(0))
        #expect(
            Self.streamRun(&v, [["xtrim", "s", "5", "10000:2", "maxlen", "~", "0", "limit", "2"]])
                == .integer(2))
        // "XTRIM with MAXLEN option basic test": nodes follow insertion, so after exact trims the
        // first node is partial and `~` removes it alone.
        v = .absent
        _ = Self.streamRun(&v, (1...1000).map { ["xadd", "s", "5", "10000", "\($0)", "x", "v"] })
        _ = Self.streamRun(&v, [["xtrim", "s", "5", "10000", "maxlen", "666"]])
        _ = Self.streamRun(&v, [["xtrim", "s", "5", "10000", "maxlen", "=", "555"]])
        _ = Self.streamRun(&v, [["xtrim", "s", "5", "10000", "maxlen", "~", "444"]])
        #expect(Self.xlen(v) == 500)
        _ = Self.streamRun(&v, [["xtrim", "s", "5", "10000", "maxlen", "~", "400"]])
        #expect(Self.xlen(v) == 400)
        // A bad bounds argument is a syntax error, not a crash.
        #expect(
            Self.streamRun(&v, [["xtrim", "s", "5", "10000:-1", "maxlen", "0"]]) == .error("ERR syntax error")
        )
    }

    @Test("A MULTI of 2 000 XADDs encodes the stream once, not per XADD (Redis's mass insertion: 10 000)")
    func streamWritesInOneTransaction() {
        var multi: [[UInt8]] = bytes(["multi", "s", "5", "-"])
        for j in 1...2000 {
            multi +=
                [Array("w".utf8), Array("7".utf8)]
                + bytes(["xadd", "s", "5", "10000", "\(j)", "item", "\(j)"])
        }
        multi += bytes(["r", "2", "xlen", "s"])
        var v = KeyValue.absent
        let clock = ContinuousClock()
        let start = clock.now
        let reply = DataModel.apply(multi, to: &v, seed: 1)
        let took = clock.now - start
        guard case .array(let replies?) = reply else {
            Issue.record("MULTI answered \(reply)")
            return
        }
        #expect(replies.count == 2001)
        #expect(replies.first == .bulk(Array("1-0".utf8)) && replies.last == .integer(2000))
        // Every entry there, in order, once encoded.
        let stream = v.bytes.flatMap { StreamValue($0) }
        #expect(v.kind == .stream && stream?.entries.count == 2000 && stream?.entriesAdded == 2000)
        #expect(
            stream?.entries.last?.id == StreamID(2000, 0)
                && stream?.entries.last?.fields == bytes(["item", "2000"]))
        // Re-encoding per XADD took ~35 s here on a debug build (quadratic); once, well under a second.
        #expect(took < .seconds(10), "took \(took)")
    }
}
