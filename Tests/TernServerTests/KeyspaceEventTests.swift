import Foundation
import Logging
import NIOCore
import TernConsensus
import TernCore
import TernRESP
import Testing

@testable import TernServer

/// Keyspace notifications, DUMP/RESTORE and GEO: Redis's words and numbers (checked against
/// redis-server 7.0.15 on this machine), then the events across a three-node cluster.
@Suite struct KeyspaceEventTests {
    @Test("notify-keyspace-events: Redis's flag letters both ways, and its error for a bad one")
    func flags() {
        func round(_ s: String) -> String? {
            KeyspaceNotifier.parse(Array(s.utf8)).map(KeyspaceNotifier.format)
        }
        #expect(round("gKE") == "gKE")
        #expect(round("$lshzxeKE") == "$lshzxeKE")
        #expect(round("KA") == "AK")
        #expect(round("EA") == "AE")
        #expect(round("KEA") == "AKE")
        #expect(round("Km") == "Km")
        #expect(round("KAn") == "AK")  // A leaves out n and m; the text shows A only
        #expect(round("En") == "nE")
        #expect(round("") == "")
        #expect(round("KQ") == nil)
        #expect(
            wire(["CONFIG", "SET", "notify-keyspace-events", "KQ"])
                == "-ERR CONFIG SET failed (possibly related to argument 'notify-keyspace-events') - Invalid event "
                + "class character. Use 'Ag$lshzxeKEtmdn'.\r\n")
        // A processor's setting shows in CONFIG GET.
        let p = CommandProcessor(password: nil, maxValueBytes: 16)
        var s = Session(authenticated: true)
        _ = wire(["CONFIG", "SET", "notify-keyspace-events", "KEl"], session: &s, processor: p)
        #expect(
            wire(["CONFIG", "GET", "notify-keyspace-events"], session: &s, processor: p).0
                == "*2\r\n$22\r\nnotify-keyspace-events\r\n$3\r\nlKE\r\n")
    }

    @Test("Which messages an event makes: class filter, keyspace before keyevent")
    func messages() {
        let events = [
            KeyEvent(key: Array("k".utf8), event: "set"), KeyEvent(key: Array("l".utf8), event: "lpush"),
        ]
        func text(_ f: String) -> [String] {
            KeyspaceNotifier.messages(events, flags: KeyspaceNotifier.parse(Array(f.utf8))!).map {
                String(decoding: $0.0, as: UTF8.self) + " " + String(decoding: $0.1, as: UTF8.self)
            }
        }
        #expect(
            text("KEA") == [
                "__keyspace@0__:k set", "__keyevent@0__:set k", "__keyspace@0__:l lpush",
                "__keyevent@0__:lpush l",
            ])
        #expect(text("KEl") == ["__keyspace@0__:l lpush", "__keyevent@0__:lpush l"])
        #expect(text("El") == ["__keyevent@0__:lpush l"])
        #expect(text("A") == [])
        #expect(KeyspaceNotifier.eventClass("xadd") == KeyspaceNotifier.stream)
        #expect(KeyspaceNotifier.eventClass("expired") == KeyspaceNotifier.expired)
        #expect(KeyspaceNotifier.eventClass("rename_from") == KeyspaceNotifier.generic)
    }

    /// The events of `commands` applied in order to a fresh key, one list per command.
    func events(_ commands: [[String]]) -> [[String]] {
        var v = KeyValue.absent
        return commands.map { c in
            let args = c.map { Array($0.utf8) }
            let before = v
            let r = DataModel.apply(args, to: &v, seed: 1)
            return KeyspaceEvents.events(args, reply: r, before: before, after: v, seed: 1)
        }
    }

    @Test("Redis's event names per command, new first, del when a collection empties")
    func eventNames() {
        #expect(
            events([
                ["set", "k", "a"], ["set", "k", "b", "nx"],
                ["set", "k", "c", "xx", "pxat", "99999999999999"],
            ])
                == [["new", "set"], [], ["set", "expire"]])
        #expect(
            events([
                ["hset", "h", "f", "1"], ["hincrby", "h", "f", "2"], ["hdel", "h", "x"], ["hdel", "h", "f"],
            ])
                == [["new", "hset"], ["hincrby"], [], ["hdel", "del"]])
        #expect(
            events([["sadd", "s", "a"], ["sadd", "s", "a"], ["srem", "s", "a"]]) == [
                ["new", "sadd"], [], ["srem", "del"],
            ])
        #expect(
            events([
                ["zadd", "z", "1", "a"], ["zadd", "z", "1", "a"], ["zadd", "z", "incr", "2", "a"],
                ["zrem", "z", "a"],
            ])
                == [["new", "zadd"], [], ["zincr"], ["zrem", "del"]])
        #expect(
            events([["lpush", "l", "a"], ["rpush", "l", "b"], ["rpop", "l"], ["lpop", "l"]])
                == [["new", "lpush"], ["rpush"], ["rpop"], ["lpop", "del"]])
        #expect(
            events([
                ["incrby", "n", "1"], ["pexpireat", "n", "99999999999999", "1"], ["persist", "n"],
                ["del", "n"], ["del", "n"],
            ])
                == [["new", "incrby"], ["expire"], ["persist"], ["del"], []])
        #expect(events([["set", "k", "v"], ["pexpireat", "k", "5", "10"]]) == [["new", "set"], ["del"]])
        #expect(
            events([["incrby", "n", "1"], ["hset", "n", "f", "v"]]) == [["new", "incrby"], []],
            "WRONGTYPE: none")
        // A transaction: each command's events in order.
        #expect(
            events([["multi", "k", "0", "-", "w", "3", "set", "k", "v", "w", "2", "del", "k"]]) == [
                ["new", "set", "del"]
            ])
    }

    @Test("The proposer lists 'expired' when it removes a value past its horizon")
    func expiredEvent() {
        let v = KeyValue(bytes: Array("x".utf8), deadlineMs: 100)
        var events: [String]? = []
        let w = v.applying(
            [(.data(bytes(["set", "k", "y"])), RequestID(client: 1, counter: 1))],
            window: 8, instance: 2, horizonMs: 200, events: &events)
        #expect(w.bytes == Array("y".utf8))
        #expect(events == ["expired", "new", "set"])
        var none: [String]? = []
        _ = v.applying(
            [(.data(bytes(["expirecheck", "k"])), RequestID(client: 1, counter: 2))], window: 8, instance: 2,
            horizonMs: 50, events: &none)
        #expect(none == [], "not yet due: no event")
    }

    // MARK: - DUMP / RESTORE

    @Test("DUMP's payload round-trips; a changed byte or Redis's payload is refused")
    func dumpPayload() {
        let p = CommandProcessor.dumpPayload(.hash, DataModel.encodeItems(bytes(["f", "v"])))
        #expect(CommandProcessor.undump(p)?.kind == .hash)
        #expect(CommandProcessor.undump(p)?.bytes == DataModel.encodeItems(bytes(["f", "v"])))
        var bad = p
        bad[6] ^= 1
        #expect(CommandProcessor.undump(bad) == nil)
        // redis-server 7.0.15's DUMP of the string "v".
        #expect(
            CommandProcessor.undump([0, 1, 0x76, 0x0a, 0, 0x91, 0x08, 0xce, 0xb2, 0x19, 0x38, 0x8a, 0xce])
                == nil)
    }

    @Test("RESTORE's arguments and errors, as Redis 7 words them")
    func restoreErrors() {
        let good = String(decoding: CommandProcessor.dumpPayload(.string, Array("v".utf8)), as: UTF8.self)
        #expect(wire(["RESTORE", "k", "0"]) == "-ERR wrong number of arguments for 'restore' command\r\n")
        #expect(wire(["RESTORE", "k", "-1", good]) == "-ERR Invalid TTL value, must be >= 0\r\n")
        #expect(wire(["RESTORE", "k", "x", good]) == "-ERR value is not an integer or out of range\r\n")
        #expect(
            wire(["RESTORE", "k", "0", good, "IDLETIME", "-1"])
                == "-ERR Invalid IDLETIME value, must be >= 0\r\n")
        #expect(
            wire(["RESTORE", "k", "0", good, "FREQ", "300"])
                == "-ERR Invalid FREQ value, must be >= 0 and <= 255\r\n")
        #expect(wire(["RESTORE", "k", "0", good, "IDLETIME", "1", "FREQ", "2"]) == "-ERR syntax error\r\n")
        #expect(wire(["RESTORE", "k", "0", good, "FOO"]) == "-ERR syntax error\r\n")
        // The write: BUSYKEY before the payload's check, decided in the instance.
        var v = KeyValue(bytes: Array("old".utf8))
        let busy = DataModel.apply(bytes(["restore", "k", "0", "1", "-", "", "-"]), to: &v, seed: 0)
        #expect(busy == .error("BUSYKEY Target key name already exists."))
        let wrong = DataModel.apply(bytes(["restore", "k", "0", "1", "-", "", "replace"]), to: &v, seed: 0)
        #expect(wrong == .error("ERR DUMP payload version or checksum are wrong"))
        #expect(
            DataModel.apply(bytes(["restore", "k", "0", "1", "1", "xy", "replace"]), to: &v, seed: 0) == .ok)
        #expect(v.kind == .hash && v.bytes == Array("xy".utf8))
        // A TTL already past restores nothing (and REPLACE deletes), answering OK as Redis.
        #expect(
            DataModel.apply(bytes(["restore", "k", "5", "10", "0", "z", "replace"]), to: &v, seed: 0) == .ok)
        #expect(v.bytes == nil)
    }

    // MARK: - GEO

    @Test("Geohash scores, positions, distances and GEOHASH text equal redis-server 7.0.15's")
    func geoNumbers() {
        #expect(GeoHash.encode(lon: 13.361389, lat: 38.115556) == 3_479_099_956_230_698)
        #expect(GeoHash.encode(lon: 15.087269, lat: 37.502669) == 3_479_447_370_796_909)
        let p = GeoHash.decode(3_479_099_956_230_698)
        #expect(GeoHash.human(p.lon) == "13.36138933897018433")
        #expect(GeoHash.human(p.lat) == "38.11555639549629859")
        #expect(GeoHash.text(3_479_099_956_230_698) == "sqc8b49rny0")
        let c = GeoHash.decode(3_479_447_370_796_909)
        #expect(String(format: "%.4f", GeoHash.distance(p.lon, p.lat, c.lon, c.lat) / 1000) == "166.2742")
        #expect(String(format: "%.4f", GeoHash.distance(15, 37, c.lon, c.lat) / 1000) == "56.4413")
        #expect(String(format: "%.4f", GeoHash.distance(15, 37, p.lon, p.lat) / 1000) == "190.4424")
    }

    @Test("GEO's argument errors, as Redis 7 words them, and GEOADD/GEOPOS/GEODIST/GEOHASH through a cluster")
    func geoCommands() async throws {
        let c = try await EventCluster.start()
        let r = try await c.client(0)
        func w(_ a: [String]) async throws -> RESPValue { try await r.send(a) }
        func err(_ s: String) -> RESPValue { .error("ERR " + s) }
        #expect(
            try await w(["GEOADD", "g", "1", "1"]) == err("wrong number of arguments for 'geoadd' command"))
        #expect(
            try await w(["GEOADD", "g", "200", "100", "x"])
                == err("invalid longitude,latitude pair 200.000000,100.000000"))
        #expect(try await w(["GEOADD", "g", "nx", "xx", "1", "1", "a"]) == err("syntax error"))
        #expect(
            try await w(["GEODIST", "g", "a", "b", "foo"])
                == err("unsupported unit provided. please use M, KM, FT, MI"))
        #expect(try await w(["GEORADIUS", "g", "1", "1", "x", "km"]) == err("need numeric radius"))
        #expect(try await w(["GEORADIUS", "g", "1", "1", "-1", "km"]) == err("radius cannot be negative"))
        #expect(
            try await w(["GEORADIUS", "g", "1", "1", "1", "km", "COUNT", "0"]) == err("COUNT must be > 0"))
        #expect(
            try await w(["GEORADIUS", "g", "1", "1", "1", "km", "ANY"])
                == err("the ANY argument requires COUNT argument"))
        #expect(
            try await w(["GEORADIUS", "g", "1", "1", "1", "km", "STORE", "d", "WITHDIST"])
                == err(
                    "STORE option in GEORADIUS is not compatible with WITHDIST, WITHHASH and WITHCOORD options"
                ))
        #expect(try await w(["GEORADIUS_RO", "g", "1", "1", "1", "km", "STORE", "d"]) == err("syntax error"))
        #expect(
            try await w(["GEOSEARCH", "g", "BYRADIUS", "1", "km", "ASC", "WITHDIST"])
                == err("exactly one of FROMMEMBER or FROMLONLAT can be specified for GEOSEARCH"))
        #expect(
            try await w(["GEOSEARCH", "g", "FROMLONLAT", "1", "1", "ASC", "WITHDIST"])
                == err("exactly one of BYRADIUS and BYBOX can be specified for GEOSEARCH"))
        #expect(
            try await w(["GEOSEARCH", "g", "FROMLONLAT", "1", "1", "BYBOX", "-1", "1", "km"])
                == err("height or width cannot be negative"))
        #expect(
            try await w([
                "GEOSEARCHSTORE", "d", "g", "FROMLONLAT", "1", "1", "BYRADIUS", "1", "km", "WITHCOORD",
            ])
                == err("GEOSEARCHSTORE is not compatible with WITHDIST, WITHHASH and WITHCOORD options"))
        // The commands themselves (numbers as redis-server 7.0.15 answered them).
        #expect(
            try await w([
                "GEOADD", "g", "13.361389", "38.115556", "Palermo", "15.087269", "37.502669", "Catania",
            ]) == .integer(2))
        #expect(try await w(["ZSCORE", "g", "Palermo"]) == bulk("3479099956230698"))
        #expect(
            try await w(["GEOPOS", "g", "Palermo", "nope"])
                == .array([
                    .array([bulk("13.36138933897018433"), bulk("38.11555639549629859")]), .array(nil),
                ]))
        #expect(try await w(["GEOHASH", "g", "Palermo"]) == .array([bulk("sqc8b49rny0")]))
        #expect(try await w(["GEODIST", "g", "Palermo", "Catania", "km"]) == bulk("166.2742"))
        #expect(try await w(["GEODIST", "g", "Palermo", "nope"]) == .bulkString(nil))
        #expect(
            try await w(["GEORADIUS", "g", "15", "37", "200", "km", "WITHDIST", "ASC"])
                == .array([
                    .array([bulk("Catania"), bulk("56.4413")]), .array([bulk("Palermo"), bulk("190.4424")]),
                ]))
        #expect(
            try await w(["GEORADIUSBYMEMBER", "g", "nope", "1", "km"])
                == err("could not decode requested zset member"))
        #expect(
            try await w([
                "GEOSEARCHSTORE", "d", "g", "FROMMEMBER", "Palermo", "BYRADIUS", "100", "km", "STOREDIST",
            ]) == .integer(1))
        #expect(try await w(["ZSCORE", "d", "Palermo"]) == bulk("0"))
        #expect(try await w(["GEOPOS", "nokey", "a"]) == .array([.array(nil)]))
        #expect(
            try await w(["GEOSEARCH", "nokey", "FROMLONLAT", "1", "1", "BYRADIUS", "1", "km"]) == .array([]))
        _ = try await w(["SET", "s", "x"])
        #expect(
            try await w(["GEOADD", "s", "1", "1", "a"])
                == .error("WRONGTYPE Operation against a key holding the wrong kind of value"))
        await r.close()
        await c.stop()
    }

    @Test("GEORADIUS and GEOSEARCH answers from a sorted set, as redis-server 7.0.15 gives them")
    func geoSearch() throws {
        let items: [(member: [UInt8], score: Double)] = [
            (Array("Palermo".utf8), 3_479_099_956_230_698), (Array("Catania".utf8), 3_479_447_370_796_909),
        ]
        var q = try KeyspaceService.parseSearch(
            "georadius", bytes(["GEORADIUS", "g", "15", "37", "200", "km", "WITHDIST", "ASC"]))
        var found = try #require(KeyspaceService.search(items, q))
        #expect(found.map { String(decoding: $0.member, as: UTF8.self) } == ["Catania", "Palermo"])
        #expect(found.map { String(format: "%.4f", $0.dist) } == ["56.4413", "190.4424"])
        q = try KeyspaceService.parseSearch(
            "geosearch",
            bytes(["GEOSEARCH", "g", "FROMMEMBER", "Palermo", "BYBOX", "400", "400", "km", "ASC"]))
        found = try #require(KeyspaceService.search(items, q))
        #expect(found.map { String(format: "%.4f", $0.dist) } == ["0.0000", "166.2742"])
        q = try KeyspaceService.parseSearch(
            "geosearch", bytes(["GEOSEARCH", "g", "FROMLONLAT", "15", "37", "BYRADIUS", "100", "km", "DESC"]))
        #expect(try #require(KeyspaceService.search(items, q)).count == 1)
        q = try KeyspaceService.parseSearch(
            "georadiusbymember", bytes(["GEORADIUSBYMEMBER", "g", "nope", "1", "km"]))
        #expect(
            KeyspaceService.search(items, q) == nil,
            "a missing member: 'could not decode requested zset member'")
    }

    @Test("Events across nodes: CONFIG SET on one node, a write on another, a subscriber on a third")
    func eventsAcrossNodes() async throws {
        let c = try await EventCluster.start()
        let admin = try await c.client(0)
        let sub = try await c.client(1)
        let writer = try await c.client(2)
        #expect(
            try await sub.send(["PSUBSCRIBE", "*"]) == .array([bulk("psubscribe"), bulk("*"), .integer(1)]))
        #expect(try await admin.send(["CONFIG", "SET", "notify-keyspace-events", "KEA"]) == .ok)
        // The setting travels to the other nodes as a peer message: wait until the writer's node has it.
        var shown = ""
        for _ in 0..<50 {
            if case .array(let a?) = try await writer.send(["CONFIG", "GET", "notify-keyspace-events"]),
                a.count == 2,
                case .bulkString(let b?) = a[1]
            {
                shown = String(decoding: b, as: UTF8.self)
            }
            if shown == "AKE" { break }
            try await Task.sleep(nanoseconds: 20_000_000)
        }
        #expect(shown == "AKE")
        func next() async -> String? {
            guard case .array(let p?) = await nextPush(sub), p.count == 4, case .bulkString(let ch?) = p[2],
                case .bulkString(let m?) = p[3]
            else { return nil }
            return String(decoding: ch, as: UTF8.self) + " " + String(decoding: m, as: UTF8.self)
        }
        #expect(try await writer.send(["SET", "foo", "bar"]) == .ok)
        #expect(await next() == "__keyspace@0__:foo set")
        #expect(await next() == "__keyevent@0__:set foo")
        #expect(try await writer.send(["RENAME", "foo", "baz"]) == .ok)
        #expect(await next() == "__keyspace@0__:baz rename_to")
        #expect(await next() == "__keyevent@0__:rename_to baz")
        #expect(await next() == "__keyspace@0__:foo rename_from")
        #expect(await next() == "__keyevent@0__:rename_from foo")
        // Expiry: the proposer that removed the value publishes 'expired'.
        #expect(try await admin.send(["CONFIG", "SET", "notify-keyspace-events", "Ex"]) == .ok)
        try await Task.sleep(nanoseconds: 200_000_000)
        #expect(try await writer.send(["PSETEX", "e", "100", "1"]) == .ok)
        try await Task.sleep(nanoseconds: 300_000_000)
        #expect(try await writer.send(["EXISTS", "e"]) == .integer(0))
        #expect(await next() == "__keyevent@0__:expired e")
        // DUMP / RESTORE through the cluster, with their events off.
        #expect(try await writer.send(["HSET", "h", "f", "v"]) == .integer(1))
        guard case .bulkString(let payload?) = try await writer.send(["DUMP", "h"]) else {
            Issue.record("DUMP answered no payload")
            return
        }
        #expect(try await writer.send(["DUMP", "nokey"]) == .bulkString(nil))
        let text = String(decoding: payload, as: UTF8.self)
        #expect(
            try await writer.send(["RESTORE", "h", "0", text])
                == .error("BUSYKEY Target key name already exists."))
        #expect(
            try await writer.send(["RESTORE", "h2", "0", "junk"])
                == .error("ERR DUMP payload version or checksum are wrong"))
        #expect(try await writer.send(["RESTORE", "h2", "100000", text]) == .ok)
        #expect(try await writer.send(["HGET", "h2", "f"]) == bulk("v"))
        guard case .integer(let ttl) = try await writer.send(["PTTL", "h2"]) else {
            Issue.record("PTTL answered no integer")
            return
        }
        #expect(ttl > 90_000 && ttl <= 100_000)
        #expect(
            try await writer.send(["RESTORE", "h2", "0", text, "REPLACE", "ABSTTL", "IDLETIME", "5"]) == .ok)
        #expect(try await writer.send(["PTTL", "h2"]) == .integer(-1))
        for cl in [admin, sub, writer] { await cl.close() }
        await c.stop()
    }
}

/// A loopback cluster (one node per campus) with pub/sub, keyspace notifications and the keyspace
/// commands on each node's RESP port.
enum EventCluster {
    static func start() async throws -> KeyspaceCluster {
        try await KeyspaceCluster.start { _, node in
            var processor = CommandProcessor(password: nil, maxValueBytes: 1 << 20)
            let pubsub = PubSubService(node: node)
            processor.modules.append(pubsub)
            processor.notifier = KeyspaceNotifier(node: node, pubsub: pubsub)
            processor.modules.append(KeyspaceService(node: node, options: KeyspaceOptions()))
            return processor
        }
    }
}
