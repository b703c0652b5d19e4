import Logging
import NIOConcurrencyHelpers
import NIOCore
import TernConsensus
import TernCore
import TernRESP
import Testing

@testable import TernServer

/// The pure parts of the keyspace enumeration: cursor, listing and merge, glob on bytes, messages.
@Suite struct KeyspaceScanTests {
    @Test("SCAN cursor: 0 starts, a bucket resumes, past the ring ends, anything else is invalid")
    func cursor() {
        #expect(KeyspaceScan.parseCursor(b("0")) == .some(0))
        #expect(KeyspaceScan.parseCursor(b("17")) == .some(17))
        #expect(KeyspaceScan.parseCursor(b("4095")) == .some(4095))
        #expect(KeyspaceScan.parseCursor(b("4096")) == .none)
        #expect(KeyspaceScan.parseCursor(b("18446744073709551615")) == .none)
        #expect(KeyspaceScan.parseCursor(b("-1")) == .none)  // strtoul, as Redis: past the end
        for bad in ["", "-", "--1", "-x", "abc", "1a", " 1", "99999999999999999999999"] {
            #expect(KeyspaceScan.parseCursor(b(bad)) == .some(nil), "\(bad)")
        }
        #expect(KeyspaceScan.cursorText(next: 4096) == "0")
        #expect(KeyspaceScan.cursorText(next: 12) == "12")
    }

    /// Three "nodes", each holding a different two-thirds of the keys (every key on at least two,
    /// as a campus pair holds every acknowledged key); a walk with any COUNT returns each key once.
    @Test("Listing + merge: every key exactly once whatever the COUNT", arguments: [1, 10, 97, 5000])
    func everyKeyOnce(count: Int) {
        let keys = (0..<600).map { b("key:\($0)") }
        var held: [[[UInt8]]] = [[], [], []]
        for (i, k) in keys.enumerated() {
            for n in 0..<3 where n != i % 3 { held[n].append(k) }
        }
        held[0].append([0] + b("reserved"))  // a service's key: never listed
        var seen: [[UInt8]: Int] = [:]
        var from = 0
        var steps = 0
        repeat {
            // Any two of the three answer (here: the last two, then the first two).
            let answering = steps % 2 == 0 ? [1, 2] : [0, 1]
            let m = KeyspaceScan.merge(
                answering.map { KeyspaceScan.listing(held[$0], from: from, want: count) })
            #expect(m.next > from)
            for k in m.keys { seen[k, default: 0] += 1 }
            from = m.next
            steps += 1
        } while from < KeyspaceScan.bucketCount
        #expect(seen.count == keys.count)
        #expect(seen.values.allSatisfy { $0 == 1 })
        if count >= 600 { #expect(steps == 1) }
    }

    @Test("A listing stops at a bucket boundary: a bucket is never split between steps")
    func wholeBuckets() {
        let keys = (0..<500).map { b("k\($0)") }
        let l = KeyspaceScan.listing(keys, from: 0, want: 1)
        #expect(!l.keys.isEmpty)
        let buckets = Set(l.keys.map(KeyspaceScan.bucket(of:)))
        #expect(buckets.count == 1)
        #expect(keys.filter { KeyspaceScan.bucket(of: $0) == buckets.first! }.count == l.keys.count)
        #expect(
            keys.allSatisfy {
                KeyspaceScan.bucket(of: $0) >= l.next || buckets.contains(KeyspaceScan.bucket(of: $0))
            })
    }

    @Test("Two complete campuses make a listing; a campus with one silent node does not count")
    func completeNeedsTwoCampuses() {
        let nodes: [(id: NodeID, campus: Campus)] = [
            (NodeID(1), .a), (NodeID(2), .a), (NodeID(3), .b), (NodeID(4), .c),
        ]
        let some = (next: 5, keys: [b("x")])
        #expect(KeyspaceScan.complete(nodes: nodes, answered: [NodeID(1): some, NodeID(3): some]) == nil)
        #expect(
            KeyspaceScan.complete(nodes: nodes, answered: [NodeID(3): some, NodeID(4): some])?.count == 2)
        #expect(
            KeyspaceScan.complete(
                nodes: nodes, answered: [NodeID(1): some, NodeID(2): some, NodeID(4): some])?
                .count == 3)
    }

    @Test("Glob on bytes (KEYS, SCAN MATCH): Redis's rules, case-sensitive, any byte")
    func globOnBytes() {
        func m(_ p: String, _ s: [UInt8]) -> Bool {
            Glob.matches(b(p), s)
        }
        #expect(m("*", b("")))
        #expect(m("a*", b("abc")))
        #expect(!m("A*", b("abc")))
        #expect(m("h?llo", b("hello")) && !m("h?llo", b("heello")))
        #expect(m("h[ae]llo", b("hallo")) && !m("h[ae]llo", b("hillo")))
        #expect(m("h[^e]llo", b("hallo")) && !m("h[^e]llo", b("hello")))
        #expect(m("h[a-b]llo", b("hbllo")) && !m("h[a-b]llo", b("hcllo")))
        #expect(m("a\\*b", b("a*b")) && !m("a\\*b", b("axb")))
        #expect(m("key:*", b("key:") + [0xFF, 0x00, 0x80]))
        #expect(m("*\u{7f}", [1, 2, 0x7F]))
        // No exponential blow-up on a pathological pattern.
        #expect(
            !m(String(repeating: "*a", count: 200) + "b", Array(repeating: UInt8(ascii: "a"), count: 2000)))
    }

    @Test(
        "After a refused SELECT n (redis-cli -n 1), commands are refused until SELECT 0 or RESET, never run on db 0"
    )
    func missingDatabase() {
        var s = Session(authenticated: true)
        #expect(wire(["SELECT", "1"], session: &s).0 == "-ERR DB index is out of range\r\n")
        let refused =
            "-ERR not run: this connection selected database 1, which does not exist (Tern has one database, 0); "
            + "send SELECT 0 to use it\r\n"
        let get = wire(["GET", "k"], replies: [.value(b("v"))], session: &s)
        #expect(get.0 == refused && get.1.isEmpty)
        #expect(wire(["DBSIZE"], session: &s).0 == refused)
        #expect(wire(["PING"], session: &s).0 == "+PONG\r\n")
        #expect(wire(["SELECT", "0"], session: &s).0 == "+OK\r\n")
        #expect(wire(["GET", "k"], replies: [.value(b("v"))], session: &s).0 == "$1\r\nv\r\n")
        #expect(wire(["SELECT", "2"], session: &s).0 == "-ERR DB index is out of range\r\n")
        #expect(wire(["RESET"], session: &s).0 == "+RESET\r\n")
        #expect(wire(["GET", "k"], replies: [.value(b("v"))], session: &s).0 == "$1\r\nv\r\n")
    }

    @Test("Listing messages round-trip; malformed ones are refused")
    func messages() {
        let ms: [KeyspaceMessage] = [
            .list(id: 7, from: 12, want: 1000),
            .keys(id: 7, voting: true, next: 4096, keys: [b("a"), [], [0xFF, 0]]),
            .keys(id: 9, voting: false, next: 3, keys: []),
        ]
        for m in ms {
            #expect(KeyspaceMessage.decode(m.encode()) == m)
            let bytes = m.encode()
            #expect(KeyspaceMessage.decode(Array(bytes.dropLast())) == nil)
            #expect(KeyspaceMessage.decode(bytes + [0]) == nil)
        }
        #expect(KeyspaceMessage.decode([]) == nil)
        #expect(KeyspaceMessage.decode([9]) == nil)
        // next beyond the ring
        #expect(
            KeyspaceMessage.decode(KeyspaceMessage.keys(id: 1, voting: true, next: 4097, keys: []).encode())
                == nil)
    }
}

/// A loopback cluster (one node per campus) with the keyspace commands on each node's RESP port.
struct KeyspaceCluster {
    let cluster: LoopbackCluster
    var fronts: [RESPFrontend] = []

    static func start(flushAllowed: [Bool] = [true, true, false]) async throws -> KeyspaceCluster {
        try await start { i, node in
            var options = KeyspaceOptions()
            options.flushAllowed = flushAllowed[i]
            options.stepKeys = 64  // several steps in KEYS/DBSIZE/FLUSHALL
            var processor = CommandProcessor(password: nil, maxValueBytes: 1 << 20)
            processor.modules.append(KeyspaceService(node: node, options: options))
            return processor
        }
    }

    /// The cluster with each node's command processor made by `processor` (the node's index in id
    /// order, the node): the keyspace events' tests give it pub/sub and the notifier too.
    static func start(
        layout: KeyLayout = .perKey, options: NodeOptions = LoopbackCluster.options,
        processor make: (Int, Node) -> CommandProcessor
    )
        async throws
        -> KeyspaceCluster
    {
        let c = try await LoopbackCluster.start(perCampus: 1, options: options, layout: layout)
        var k = KeyspaceCluster(cluster: c)
        var logger = Logger(label: "keyspace-test")
        logger.logLevel = .warning
        for (i, id) in c.nodes.keys.sorted(by: { $0.rawValue < $1.rawValue }).enumerated() {
            let node = c.nodes[id]!
            let processor = make(i, node)
            k.fronts.append(
                try await RESPFrontend.start(
                    host: "127.0.0.1", port: 0, node: node, processor: processor, group: c.group,
                    logger: logger))
        }
        return k
    }

    func client(_ i: Int) async throws -> RESPClient {
        try await RESPClient.connect(
            host: "127.0.0.1", port: fronts[i].port, group: cluster.group, requestTimeout: .seconds(20))
    }

    func stop() async {
        for f in fronts { await f.close() }
        await cluster.stop()
    }
}

/// The keys of a SCAN reply and its cursor.
func scanReply(_ v: RESPValue) -> (cursor: String, keys: [String])? {
    guard case .array(let parts?) = v, parts.count == 2, case .bulkString(let c?) = parts[0],
        case .array(let ks?) = parts[1]
    else { return nil }
    var keys: [String] = []
    for k in ks {
        guard case .bulkString(let s?) = k else { return nil }
        keys.append(String(decoding: s, as: UTF8.self))
    }
    return (String(decoding: c, as: UTF8.self), keys)
}

@Suite(.timeLimit(.minutes(2))) struct KeyspaceClusterTests {
    /// Every SCAN from every node with several COUNTs returns each present key exactly once.
    func fullScan(_ client: RESPClient, _ extra: [String] = []) async throws -> [String: Int] {
        var seen: [String: Int] = [:]
        var cursor = "0"
        var calls = 0
        repeat {
            let r = try #require(scanReply(try await client.send(["SCAN", cursor] + extra)))
            for k in r.keys { seen[k, default: 0] += 1 }
            cursor = r.cursor
            calls += 1
        } while cursor != "0" && calls < 10_000
        return seen
    }

    @Test(
        "SCAN over a 3-node cluster: every key once for COUNT 1…1000; KEYS and DBSIZE agree; deleted and reserved keys never appear"
    )
    func scanKeysDbsize() async throws {
        let k = try await KeyspaceCluster.start()
        defer { Task { await k.stop() } }
        let c = try await k.client(0)
        for i in 0..<200 { _ = try await c.send(["SET", "user:\(i)", "v\(i)"]) }
        for i in 0..<20 { _ = try await c.send(["DEL", "user:\(i)"]) }
        // A service's key (sync inbox, sequence section): never listed, never flushed.
        let node = k.cluster.nodes[NodeID(1)]!
        #expect(await node.execute(key: [0] + b("svc"), .write(.put(b("x")))) == .done(.ok))
        let expected = Set((20..<200).map { "user:\($0)" })
        for (i, count) in [1, 7, 10, 100, 1000].enumerated() {
            let client = try await k.client(i % 3)
            let seen = try await fullScan(client, ["COUNT", "\(count)"])
            #expect(Set(seen.keys) == expected, "COUNT \(count)")
            #expect(seen.values.allSatisfy { $0 == 1 }, "COUNT \(count)")
            await client.close()
        }
        // MATCH, and TYPE (a hash and a sorted set among the strings; typed values are listed and
        // found present like strings).
        let matched = try await fullScan(c, ["MATCH", "user:2?", "COUNT", "50"])
        #expect(Set(matched.keys) == Set((20..<30).map { "user:\($0)" }))
        _ = try await c.send(["HSET", "profile:1", "name", "a"])
        _ = try await c.send(["ZADD", "recent", "1", "a"])
        #expect(try await fullScan(c, ["TYPE", "string", "COUNT", "500"]).count == 180)
        #expect(Array(try await fullScan(c, ["TYPE", "hash", "COUNT", "500"]).keys) == ["profile:1"])
        #expect(Array(try await fullScan(c, ["TYPE", "zset", "COUNT", "500"]).keys) == ["recent"])
        _ = try await c.send(["DEL", "profile:1", "recent"])
        // KEYS and DBSIZE agree with SCAN.
        guard case .array(let keys?) = try await c.send(["KEYS", "*"]) else {
            Issue.record("KEYS")
            return
        }
        #expect(
            Set(
                keys.compactMap { v -> String? in
                    if case .bulkString(let s?) = v { return String(decoding: s, as: UTF8.self) }
                    return nil
                }) == expected)
        #expect(keys.count == 180)
        #expect(
            try await c.send(["KEYS", "user:19?"]).sortedArray()
                == .array((190..<200).map { bulk("user:\($0)") }))
        #expect(try await c.send(["DBSIZE"]) == .integer(180))
        // TOUCH counts existing keys; UNLINK deletes like DEL.
        #expect(try await c.send(["TOUCH", "user:1", "user:21", "user:22", "nope"]) == .integer(2))
        #expect(try await c.send(["UNLINK", "user:21", "user:22", "nope"]) == .integer(2))
        #expect(try await c.send(["DBSIZE"]) == .integer(178))
        // RANDOMKEY returns a present key.
        let r = try await c.send(["RANDOMKEY"])
        guard case .bulkString(let rk?) = r else {
            Issue.record("RANDOMKEY \(r)")
            return
        }
        #expect(expected.contains(String(decoding: rk, as: UTF8.self)))
        // Errors as Redis.
        #expect(try await c.send(["SCAN", "x"]) == .error("ERR invalid cursor"))
        #expect(try await c.send(["SCAN", "0", "COUNT", "0"]) == .error("ERR syntax error"))
        #expect(try await c.send(["SCAN", "0", "COUNT"]) == .error("ERR syntax error"))
        #expect(try await c.send(["SCAN", "0", "FOO", "1"]) == .error("ERR syntax error"))
        #expect(try await c.send(["KEYS"]) == .error("ERR wrong number of arguments for 'keys' command"))
        #expect(
            try await c.send(["UNLINK", "\u{0}svc"])
                == .error("ERR keys starting with a zero byte are reserved for Tern's services"))

        // FLUSHALL: refused where not enabled, with the setting's name; elsewhere it empties.
        let refusing = try await k.client(2)
        guard case .error(let text) = try await refusing.send(["FLUSHALL"]) else {
            Issue.record("FLUSHALL was not refused")
            return
        }
        #expect(text.contains("flushall = true") && text.contains("server.toml"))
        #expect(try await refusing.send(["DBSIZE"]) == .integer(178))
        #expect(try await c.send(["FLUSHALL", "BOGUS"]) == .error("ERR syntax error"))
        #expect(try await c.send(["FLUSHALL", "ASYNC"]) == .ok)
        #expect(try await c.send(["DBSIZE"]) == .integer(0))
        #expect(try await refusing.send(["KEYS", "*"]) == .array([]))
        #expect(try await c.send(["RANDOMKEY"]) == .bulkString(nil))
        #expect(await node.execute(key: [0] + b("svc"), .read) == .value(b("x")))
        // A pipelined SET after FLUSHDB survives it; a SET before it does not.
        let replies = try await c.pipeline([
            [b("SET"), b("before"), b("1")], [b("FLUSHDB")], [b("SET"), b("after"), b("1")],
            [b("DBSIZE")],
        ])
        #expect(replies == [.ok, .ok, .ok, .integer(1)])
        #expect(try await c.send(["KEYS", "*"]) == .array([bulk("after")]))
        await refusing.close()
        await c.close()
    }

    @Test("RENAME, RENAMENX and COPY: Redis's replies and errors")
    func renameAndCopy() async throws {
        let k = try await KeyspaceCluster.start()
        defer { Task { await k.stop() } }
        let c = try await k.client(1)
        #expect(try await c.send(["RENAME", "nope", "x"]) == .error("ERR no such key"))
        #expect(try await c.send(["RENAMENX", "nope", "x"]) == .error("ERR no such key"))
        _ = try await c.send(["SET", "a", "1"])
        _ = try await c.send(["SET", "b", "2"])
        #expect(try await c.send(["RENAME", "a", "a"]) == .ok)
        #expect(try await c.send(["RENAMENX", "a", "a"]) == .integer(0))
        #expect(try await c.send(["RENAMENX", "a", "b"]) == .integer(0))
        #expect(try await c.send(["MGET", "a", "b"]) == .array([bulk("1"), bulk("2")]))
        #expect(try await c.send(["RENAME", "a", "b"]) == .ok)
        #expect(try await c.send(["MGET", "a", "b"]) == .array([.bulkString(nil), bulk("1")]))
        #expect(try await c.send(["RENAMENX", "b", "c"]) == .integer(1))
        #expect(try await c.send(["MGET", "b", "c"]) == .array([.bulkString(nil), bulk("1")]))
        #expect(
            try await c.send(["COPY", "c", "c"]) == .error("ERR source and destination objects are the same"))
        #expect(try await c.send(["COPY", "nope", "d"]) == .integer(0))
        #expect(try await c.send(["COPY", "c", "d"]) == .integer(1))
        _ = try await c.send(["SET", "c", "9"])
        #expect(try await c.send(["COPY", "c", "d"]) == .integer(0))
        #expect(try await c.send(["COPY", "c", "d", "REPLACE", "DB", "0"]) == .integer(1))
        #expect(try await c.send(["GET", "d"]) == bulk("9"))
        #expect(try await c.send(["COPY", "c", "d", "DB", "1"]) == .error("ERR DB index is out of range"))
        #expect(try await c.send(["COPY", "c", "d", "BOGUS"]) == .error("ERR syntax error"))
        await c.close()
    }

    @Test("SCAN goes on with one campus cut off (two campuses answer), and fails clearly with two")
    func scanWithCampusDown() async throws {
        let k = try await KeyspaceCluster.start()
        defer { Task { await k.stop() } }
        let c = try await k.client(0)
        for i in 0..<100 { _ = try await c.send(["SET", "k\(i)", "v"]) }
        k.cluster.net.down.withLockedValue { $0 = [NodeID(3)] }
        let seen = try await fullScan(c, ["COUNT", "20"])
        #expect(seen.count == 100 && seen.values.allSatisfy { $0 == 1 })
        k.cluster.net.down.withLockedValue { $0 = [NodeID(2), NodeID(3)] }
        guard case .error(let text) = try await c.send(["DBSIZE"]) else {
            Issue.record("DBSIZE answered with two campuses down")
            return
        }
        #expect(text.hasPrefix("NOQUORUM"))
        k.cluster.net.down.withLockedValue { $0 = [] }
        await c.close()
    }
}

extension RESPValue {
    /// The array's elements sorted by their bulk-string bytes (KEYS' order is unspecified).
    func sortedArray() -> RESPValue {
        guard case .array(let items?) = self else { return self }
        return .array(
            items.sorted { a, b in
                if case .bulkString(let x?) = a, case .bulkString(let y?) = b {
                    return x.lexicographicallyPrecedes(y)
                }
                return false
            })
    }
}
