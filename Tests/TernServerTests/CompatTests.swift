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
}
