import Foundation
import NIOCore
import TernConsensus
import TernCore
import TernRESP
import TernServer
import TernStorage
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Real `tern server` processes: the anti-entropy scanner finds and repairs replicas that lost
/// data, and a node that lost what it promised rebuilds learner-only by itself (issue 11,
/// docs/REPAIR.md).
@Suite(.serialized, .timeLimit(.minutes(4))) struct RepairProcessTests {
    let n1 = NodeID(1)
    let n2 = NodeID(2)
    let n3 = NodeID(3)

    /// What `/status` says of a node's rebuild and scanner.
    struct View: Decodable {
        var learner_only: Bool
        var damaged_keys: Int
        var repair: RepairStatus?
    }

    func view(_ cluster: ProcessCluster, _ id: NodeID) async -> View? {
        guard let r = try? await cluster.http("GET", "/status", node: id), r.status == 200 else { return nil }
        return try? JSONDecoder().decode(View.self, from: Data(r.body.utf8))
    }

    /// Starts a full-pace pass on `id` and waits until a complete pass that began after this call
    /// ended there, the node is not learner-only and no key is damaged.
    func repaired(_ cluster: ProcessCluster, _ id: NodeID, seconds: Double = 60) async throws -> View {
        let deadline = Date().addingTimeInterval(seconds)
        var start: UInt64?
        var last: View?
        while Date() < deadline {
            if let v = await view(cluster, id), let r = v.repair {
                last = v
                if start == nil {
                    start = r.pass
                    _ = try? await cluster.http("POST", "/repair", node: id)
                } else if !r.running && r.pass > start! && r.lastPassComplete && !v.learner_only
                    && v.damaged_keys == 0
                {
                    return v
                }
            }
            try await Task.sleep(nanoseconds: 100_000_000)
        }
        throw ClusterTestError(
            "n\(id.rawValue) not repaired after \(seconds) s: \(String(describing: last)); log:\n\(cluster.logTail(id))"
        )
    }

    @Test(
        "Lost durable bytes (the harness's case): v2 acknowledged with n2 down, 250 bytes cut from n3's newest file; n3 rebuilds learner-only, never serves v1 nor builds on it, and v2 reads everywhere"
    )
    func lostDurableBytesRebuild() async throws {
        let cluster = try ProcessCluster()
        defer { cluster.killAll() }
        try await cluster.startAll()
        let c = try await cluster.client(n1)
        #expect(try await c.send(["SET", "K", "v1"]) == .simpleString("OK"))
        await cluster.signal(n2, SIGTERM)
        #expect(try await c.send(["SET", "K", "v2"]) == .simpleString("OK"))  // only n1 and n3 hold it
        await c.close()
        await cluster.signal(n3, SIGTERM)
        let dir = cluster.dir + "/n3"
        let newest = try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.hasSuffix(".data") }
            .sorted().last!
        let path = dir + "/" + newest
        let size = try FileManager.default.attributesOfItem(atPath: path)[.size] as! UInt64
        #expect(truncate(path, off_t(size - 250)) == 0)
        cluster.start(n3)
        // n3 comes up learner-only: it says why, and /health says it is not serving.
        var learner = false
        for _ in 0..<100 where !learner {
            learner = await view(cluster, n3)?.learner_only == true
            if !learner { try await Task.sleep(nanoseconds: 100_000_000) }
        }
        #expect(learner, "\(cluster.logTail(n3))")
        #expect(cluster.logTail(n3).contains("lost fsynced bytes"))
        #expect(try await cluster.http("GET", "/health", node: n3).status == 503)
        // With n1 down, n2 (which missed v2) and the rebuilding n3 are no majority: nothing stale
        // (v1) is ever served, and nothing builds on it.
        await cluster.signal(n1, SIGTERM)
        cluster.start(n2)
        try await cluster.waitHealthy(n2)
        for node in [n2, n3] {
            let cn = try await cluster.client(node)
            let got = try? await cn.send(["GET", "K"])
            #expect(
                got != .bulkString(Array("v1".utf8)), "n\(node.rawValue) served the lost write's predecessor")
            let appended = try? await cn.send(["APPEND", "K", "-v3"])
            if case .integer = appended { Issue.record("APPEND built on a value with n1 down: \(appended!)") }
            await cn.close()
        }
        // n1 returns: n3's rebuild finishes by itself and every node reads v2.
        cluster.start(n1)
        try await cluster.waitHealthy(n1)
        let v = try await repaired(cluster, n3)
        #expect(v.repair?.passesCompleted ?? 0 >= 1)
        for node in [n1, n2, n3] {
            let cn = try await cluster.client(node)
            // The APPEND above had an unknown outcome (no majority then): it may apply later, on v2.
            let got = try await cn.send(["GET", "K"])
            #expect(
                got == .bulkString(Array("v2".utf8)) || got == .bulkString(Array("v2-v3".utf8)),
                "n\(node.rawValue): \(got); \(cluster.logTail(node))")
            await cn.close()
        }
    }

    @Test(
        "A directory restored from an older backup: n3's directory copied while it is stopped, n3 restarted, v2 acknowledged with n2 down, n3's directory replaced by the copy; n3 is found stale, never serves v1 nor lets n2 serve it, rebuilds, and v2 reads everywhere"
    )
    func restoredBackupRebuilds() async throws {
        let cluster = try ProcessCluster()
        defer { cluster.killAll() }
        try await cluster.startAll()
        let c = try await cluster.client(n1)
        #expect(try await c.send(["SET", "K", "v1"]) == .simpleString("OK"))
        await c.close()
        // A cold backup of n3, then a new start of n3 that n1 and n2 acknowledge.
        await cluster.signal(n3, SIGTERM)
        let dir3 = cluster.dir + "/n3"
        let backup = cluster.dir + "/n3-backup"
        try FileManager.default.copyItem(atPath: dir3, toPath: backup)
        cluster.start(n3)
        try await cluster.waitHealthy(n3)
        var confirmed = false
        for _ in 0..<100 where !confirmed {
            confirmed = ((try? String(contentsOfFile: cluster.log(n3), encoding: .utf8)) ?? "").contains(
                "incarnation confirmed")
            if !confirmed { try await Task.sleep(nanoseconds: 100_000_000) }
        }
        #expect(confirmed, "\(cluster.logTail(n3))")
        // v2 with n2 down: only n1 and n3 hold it.
        await cluster.signal(n2, SIGTERM)
        let c1 = try await cluster.client(n1)
        #expect(try await c1.send(["SET", "K", "v2"]) == .simpleString("OK"))
        await c1.close()
        // n3's disk replaced by the backup (which holds v1 only); n1 down.
        await cluster.signal(n3, SIGTERM)
        await cluster.signal(n1, SIGTERM)
        try FileManager.default.removeItem(atPath: dir3)
        try FileManager.default.moveItem(atPath: backup, toPath: dir3)
        cluster.start(n2)
        cluster.start(n3)
        try await cluster.waitHealthy(n2)
        // n2 acknowledged n3's later start: n3 is told its directory is stale and rebuilds.
        var learner = false
        for _ in 0..<100 where !learner {
            learner = await view(cluster, n3)?.learner_only == true
            if !learner { try await Task.sleep(nanoseconds: 100_000_000) }
        }
        #expect(learner, "\(cluster.logTail(n3))")
        #expect(
            ((try? String(contentsOfFile: cluster.log(n3), encoding: .utf8)) ?? "").contains(
                "stale data directory"))
        // With n1 down, n2 and the restored n3 are no majority: v1 is never served.
        for node in [n2, n3] {
            let cn = try await cluster.client(node)
            let got = try? await cn.send(["GET", "K"])
            #expect(
                got != .bulkString(Array("v1".utf8)), "n\(node.rawValue) served the lost write's predecessor")
            await cn.close()
        }
        cluster.start(n1)
        try await cluster.waitHealthy(n1)
        _ = try await repaired(cluster, n3)
        for node in [n1, n2, n3] {
            let cn = try await cluster.client(node)
            let got = try await cn.send(["GET", "K"])
            #expect(
                got == .bulkString(Array("v2".utf8)), "n\(node.rawValue): \(got); \(cluster.logTail(node))")
            await cn.close()
        }
    }

    /// Writes `keys` keys through all three nodes, one writer per key: the value each key must
    /// read now (an unknown outcome keeps both candidates).
    func load(_ cluster: ProcessCluster, keys: Range<Int>, round: Int, via nodes: [NodeID]) async throws
        -> [String:
        Set<String>]
    {
        var expected: [String: Set<String>] = [:]
        var clients: [RESPClient] = []
        for n in nodes { clients.append(try await cluster.client(n)) }
        for k in keys {
            let key = "key\(k)"
            let value = "r\(round)-\(k)-" + String(repeating: "x", count: k % 50)
            let reply = try? await clients[k % clients.count].send(["SET", key, value])
            if reply == .simpleString("OK") {
                expected[key] = [value]
            } else {
                expected[key, default: []].insert(value)
            }
        }
        for c in clients { await c.close() }
        return expected
    }

    /// Every key reads one of its expected values through every node.
    func checkReads(_ cluster: ProcessCluster, _ expected: [String: Set<String>]) async throws {
        for node in [n1, n2, n3] {
            let c = try await cluster.client(node)
            for (key, values) in expected.sorted(by: { $0.key < $1.key }) {
                let got = try await c.send(["GET", key])
                guard case .bulkString(let b?) = got, values.contains(String(decoding: b, as: UTF8.self))
                else {
                    Issue.record("n\(node.rawValue): \(key) read \(got), expected one of \(values)")
                    continue
                }
            }
            await c.close()
        }
    }

    /// Every key's chosen instance and value are the same in the three nodes' stored records
    /// (read offline from the data directories after a graceful stop).
    func checkStoredReplicasAgree(_ cluster: ProcessCluster, keys: [String]) throws {
        var states: [[String: KeyState]] = []
        for node in [n1, n2, n3] {
            let b = try Bitcask(directory: cluster.dir + "/n\(node.rawValue)", fileSystem: PosixFileSystem())
            var s: [String: KeyState] = [:]
            for k in keys {
                if let rec = try b.get(ReplicaNode.recordKey(Array(k.utf8))), let st = PaxosCodec.decode(rec)
                {
                    s[k] = st
                }
            }
            b.close()
            states.append(s)
        }
        for k in keys {
            let chosen = states.map { $0[k]?.chosen }
            let values = states.map { $0[k]?.value }
            #expect(Set(chosen).count == 1 && Set(values).count == 1, "\(k): chosen \(chosen) at n1/n2/n3")
        }
    }

    @Test(
        "Bit flips in one node's files, then another node's whole directory deleted while it is down: each comes back, the scan repairs it without clients touching the keys, and every key reads right everywhere"
    )
    func flippedBitsAndWipedDisk() async throws {
        let cluster = try ProcessCluster()
        defer { cluster.killAll() }
        try await cluster.startAll()
        var expected = try await load(cluster, keys: 0..<400, round: 1, via: [n1, n2, n3])
        // 1. n2 down; flip bytes in its newest data file; keys written meanwhile miss n2.
        await cluster.signal(n2, SIGTERM)
        let dir2 = cluster.dir + "/n2"
        let data2 = try FileManager.default.contentsOfDirectory(atPath: dir2).filter { $0.hasSuffix(".data") }
            .sorted()
        let handle = try FileHandle(forUpdating: URL(fileURLWithPath: dir2 + "/" + data2.last!))
        let size = try handle.seekToEnd()
        var rng = SplitMix64(seed: 42)
        for _ in 0..<12 {
            let at = 64 + rng.below(size - 128)
            try handle.seek(toOffset: at)
            let byte = try handle.read(upToCount: 1)![0]
            try handle.seek(toOffset: at)
            try handle.write(contentsOf: [byte ^ 0x5A])
        }
        try handle.close()
        for (k, v) in try await load(cluster, keys: 400..<500, round: 2, via: [n1, n3]) { expected[k] = v }
        cluster.start(n2)
        let v2 = try await repaired(cluster, n2)
        let r2 = v2.repair!
        #expect(r2.repairedDamaged + r2.repairedBehind + r2.repairedMissing + r2.rebuilt > 0, "\(r2)")
        // 2. n3 down; its whole data directory deleted (a replaced disk); more writes meanwhile.
        await cluster.signal(n3, SIGTERM)
        try FileManager.default.removeItem(atPath: cluster.dir + "/n3")
        for (k, v) in try await load(cluster, keys: 450..<550, round: 3, via: [n1, n2]) { expected[k] = v }
        cluster.start(n3)
        let v3 = try await repaired(cluster, n3, seconds: 90)
        // Copied in bulk (docs/REPAIR.md), or recovered one by one where a key was in use.
        #expect(v3.repair!.rebuilt + v3.repair!.copied >= 550, "\(v3)")
        #expect(v3.repair!.copied > 0, "\(v3)")
        // The scanners of n1 and n2 agree too (one more complete pass each).
        _ = try await repaired(cluster, n1)
        _ = try await repaired(cluster, n2)
        try await checkReads(cluster, expected)
        let metrics = try await cluster.http("GET", "/metrics", node: n3).body
        #expect(
            !metrics.contains("tern_repairs_total{node=\"3\",campus=\"C\",cause=\"copied\"} 0.0"),
            "\(metrics)")
        #expect(metrics.contains("tern_repair_safety_alarms_total{node=\"3\",campus=\"C\"} 0.0"))
        for n in [n1, n2, n3] { await cluster.signal(n, SIGTERM) }
        try checkStoredReplicasAgree(cluster, keys: expected.keys.sorted())
    }
}
