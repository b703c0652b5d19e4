import Foundation
import NIOCore
import NIOPosix
import TernCheck
import TernCore
import TernRESP
import TernServer
import Testing

#if canImport(Glibc)
    // With swift-nio-ssl in the build graph, `struct stat` is seen through CoreFoundation's module.
    import CoreFoundation
    import Glibc
#endif

/// Real `tern server` processes against the holes an independent harness found (issue 15).
@Suite(.serialized, .timeLimit(.minutes(3))) struct HolesProcessTests {
    @Test("SIGSTOP one node under many clients on two keys, SIGCONT: every INCR applies at most once")
    func pausedNodeAppliesOnce() async throws {
        let cluster = try ProcessCluster()
        defer { cluster.killAll() }
        try await cluster.startAll()
        let recorder = Recorder()
        let keys = ["c0", "c1"]
        let stop = NIOLockedValueBoxFlag()
        // Many clients on few keys push the per-key de-dup window (32) past the paused node's
        // requests while it is stopped: the shape of the double-apply.
        func worker(_ id: Int, node: NodeID) async {
            var k = id
            while !stop.value {
                guard let c = try? await cluster.client(node) else {
                    try? await Task.sleep(nanoseconds: 50_000_000)
                    continue
                }
                // One connection until an outcome is unknown (a timeout or a broken connection).
                while !stop.value {
                    k += 1
                    let out = await recordedOp(
                        c, client: id, key: keys[k % 2], input: .incr(1), recorder: recorder)
                    if out == .unknown || out == .failed { break }
                }
                await c.close()
            }
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for id in 0..<12 {
                group.addTask { await worker(id, node: [n1, n2, n3][id % 3]) }
            }
            try await Task.sleep(nanoseconds: 700_000_000)
            cluster.signalNoWait(n1, SIGSTOP)
            try await Task.sleep(nanoseconds: 2_500_000_000)
            cluster.signalNoWait(n1, SIGCONT)
            try await Task.sleep(nanoseconds: 2_500_000_000)
            stop.set()
            try await group.waitForAll()
        }
        let c = try await cluster.client(n2)
        defer { Task { await c.close() } }
        let history = recorder.all
        for key in keys {
            guard case .bulkString(let b?) = try await c.send(["GET", key]),
                let sum = Int(String(decoding: b, as: UTF8.self))
            else {
                Issue.record("GET \(key) did not return a number")
                continue
            }
            let mine = history.filter { $0.key == key }
            let acked = mine.filter { if case .number = $0.output { true } else { false } }.count
            let unknown = mine.filter { $0.output == .unknown }.count
            print("[holes] \(key): \(sum) = \(acked) acknowledged + \(sum - acked) of \(unknown) unknown")
            #expect(unknown < 100, "outcomes are unknown only around the pause")
            #expect(acked > 50, "the cluster kept serving")
            #expect(sum >= acked, "an acknowledged INCR was lost")
            #expect(sum <= acked + unknown, "an INCR took effect twice")
        }
    }

    @Test("A 64 KiB key is refused with an error; every node keeps serving; 32 KiB is the limit")
    func hugeKeyIsRefused() async throws {
        let cluster = try ProcessCluster()
        defer { cluster.killAll() }
        try await cluster.startAll()
        let c = try await cluster.client(n1)
        let huge = String(repeating: "k", count: 64 << 10)
        let reply = try await c.send(["SET", huge, "v"])
        #expect(reply == .error("ERR key is too long (65536 bytes; the limit is 32768)"))
        #expect(try await c.send(["MSET", "ok1", "v", huge, "v"]) == reply)
        #expect(try await c.send(["GET", "ok1"]) == .bulkString(nil), "MSET with a long key wrote nothing")
        let atLimit = String(repeating: "k", count: 32 << 10)
        #expect(try await c.send(["SET", atLimit, "v"]) == .simpleString("OK"))
        for n in [n1, n2, n3] {
            let cn = try await cluster.client(n)
            #expect(try await cn.send(["SET", "after", "\(n.rawValue)"]) == .simpleString("OK"), "node \(n)")
            #expect(try await cn.send(["GET", atLimit]) == .bulkString(Array("v".utf8)), "node \(n)")
            await cn.close()
            #expect(try await cluster.http("GET", "/health", node: n).status == 200, "node \(n)")
        }
        await c.close()
    }

    @Test("Run as a non-root user: the cluster serves; data directories are 0700 and files 0600")
    func nonRootAndFileModes() async throws {
        let cluster = try ProcessCluster(user: getuid() == 0 ? "nobody" : nil)
        defer { cluster.killAll() }
        try await cluster.startAll()
        for n in [n1, n2, n3] {
            let c = try await cluster.client(n)
            #expect(try await c.send(["SET", "k\(n.rawValue)", "v"]) == .simpleString("OK"), "node \(n)")
            #expect(try await c.send(["GET", "k\(n.rawValue)"]) == .bulkString(Array("v".utf8)), "node \(n)")
            await c.close()
        }
        for n in [n1, n2, n3] {
            let dir = cluster.dir + "/n\(n.rawValue)"
            var st = stat()
            #expect(stat(dir, &st) == 0)
            #expect(st.st_mode & 0o777 == 0o700, "\(dir) has mode \(String(st.st_mode & 0o777, radix: 8))")
            if getuid() == 0 { #expect(st.st_uid == 65534, "the server ran as nobody") }
            let files = try FileManager.default.contentsOfDirectory(atPath: dir)
            #expect(!files.isEmpty)
            for f in files {
                #expect(stat(dir + "/" + f, &st) == 0)
                #expect(
                    st.st_mode & 0o077 == 0, "\(dir)/\(f) has mode \(String(st.st_mode & 0o777, radix: 8))")
            }
        }
    }

    @Test("A record damaged on disk is logged and counted in /metrics; the value still comes back right")
    func damageIsCounted() async throws {
        let cluster = try ProcessCluster()
        defer { cluster.killAll() }
        try await cluster.startAll()
        let c = try await cluster.client(n1)
        let marker = "damage-me-" + String(repeating: "x", count: 40)
        #expect(try await c.send(["SET", "dk", marker]) == .simpleString("OK"))
        await c.close()
        await cluster.signal(n1, SIGTERM)
        // Flip one byte of the value in every data file of n1 that holds it.
        let dir = cluster.dir + "/n1"
        var flipped = 0
        for f in try FileManager.default.contentsOfDirectory(atPath: dir) where f.hasSuffix(".data") {
            var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: dir + "/" + f)))
            let needle = Array(marker.utf8)
            guard bytes.count >= needle.count else { continue }
            for at in 0...(bytes.count - needle.count) where Array(bytes[at..<at + needle.count]) == needle {
                bytes[at + 20] ^= 0x01
                flipped += 1
            }
            try Data(bytes).write(to: URL(fileURLWithPath: dir + "/" + f))
        }
        #expect(flipped > 0, "the value was found in n1's data files")
        // Hint files would let the engine skip the checksum at open; without them it scans.
        for f in try FileManager.default.contentsOfDirectory(atPath: dir) where f.hasSuffix(".hint") {
            try FileManager.default.removeItem(atPath: dir + "/" + f)
        }
        cluster.start(n1)
        try await cluster.waitHealthy(n1)
        let c1 = try await cluster.client(n1)
        #expect(try await c1.send(["GET", "dk"]) == .bulkString(Array(marker.utf8)))
        await c1.close()
        let metrics = try await cluster.http("GET", "/metrics", node: n1).body
        #expect((metricValue(metrics, "tern_storage_damaged_records") ?? 0) >= 1, "\(metrics)")
        #expect((metricValue(metrics, "tern_damaged_key_loads_total") ?? 0) >= 1, "\(metrics)")
        #expect(cluster.logTail(n1).contains("damaged"))
    }

    @Test("maxclients: the next connection gets Redis's error and is closed; a slot frees on close")
    func maxClients() async throws {
        let cluster = try ProcessCluster(maxClients: 3)
        defer { cluster.killAll() }
        try await cluster.startAll()
        var open: [RESPClient] = []
        for _ in 0..<3 { open.append(try await cluster.client(n1)) }
        for c in open { #expect(try await c.send(["PING"]) == .simpleString("PONG")) }
        let extra = try await cluster.client(n1)
        // The error arrives unasked (before any command), so the client hands it out as a push;
        // until 2026-12-06 neither it nor the close came, and this test accepted a timeout.
        #expect(await nextPush(extra) == .error("ERR max number of clients reached"))
        #expect(await eventually { !extra.isActive })
        await extra.close()
        #expect(
            try await open[0].send(["CONFIG", "GET", "maxclients"])
                == .array([.bulkString(Array("maxclients".utf8)), .bulkString(Array("3".utf8))]))
        await open[0].close()
        // The closed connection's slot is free again (the close may take a moment to be seen).
        var served = false
        for _ in 0..<50 where !served {
            let c = try await cluster.client(n1)
            served = (try? await c.send(["PING"])) == .simpleString("PONG")
            await c.close()
            if !served { try await Task.sleep(nanoseconds: 20_000_000) }
        }
        #expect(served)
        let metrics = try await cluster.http("GET", "/metrics", node: n1).body
        #expect(metrics.contains("tern_maxclients{node=\"1\",campus=\"A\"} 3.0"), "\(metrics)")
        #expect(!metrics.contains("tern_rejected_clients_total{node=\"1\",campus=\"A\"} 0.0"))
        for c in open.dropFirst() { await c.close() }
    }

    /// The value of metric `name` for the node in `metrics` (the /metrics text).
    func metricValue(_ metrics: String, _ name: String) -> Double? {
        metrics.split(separator: "\n").first { $0.hasPrefix(name + "{") }
            .flatMap { $0.split(separator: " ").last }.flatMap { Double($0) }
    }

    @Test(
        "A client that pipelines 600 GETs of a 1 MB value and never reads is closed; RSS stays under 250 MiB (611 MiB unbounded)"
    )
    func slowReaderIsBounded() async throws {
        let cluster = try ProcessCluster()
        defer { cluster.killAll() }
        try await cluster.startAll()
        let c = try await cluster.client(n1)
        let value = [UInt8](repeating: UInt8(ascii: "v"), count: 1_000_000)
        #expect(try await c.send(["SET".utf8.map { $0 }, Array("big".utf8), value]) == .simpleString("OK"))
        #expect(
            try await c.send(["CONFIG", "GET", "client-output-buffer-limit"])
                == .array([
                    .bulkString(Array("client-output-buffer-limit".utf8)),
                    .bulkString(Array("normal 67108864 0 0 pubsub 67108864 0 0".utf8)),
                ]))
        let before = cluster.memory(n1, "VmRSS") ?? 0
        // A client that never reads: autoRead off, so the replies fill the socket buffers and wait.
        let raw = try await ClientBootstrap(group: ProcessCluster.group).channelOption(
            .autoRead, value: false
        )
        .connect(host: "127.0.0.1", port: cluster.port(n1)).get()
        var gets = raw.allocator.buffer(capacity: 600 * 24)
        for _ in 0..<600 { gets.writeString("*2\r\n$3\r\nGET\r\n$3\r\nbig\r\n") }
        try await raw.writeAndFlush(gets).get()
        var evicted = 0.0
        for _ in 0..<200 where evicted < 1 {
            try await Task.sleep(nanoseconds: 50_000_000)
            let metrics = try await cluster.http("GET", "/metrics", node: n1).body
            evicted = metricValue(metrics, "tern_evicted_clients_output_total") ?? 0
        }
        #expect(evicted == 1, "the non-reading client was disconnected")
        let peak = cluster.memory(n1, "VmHWM") ?? .max
        // Without the bound the 600 replies (600 MB) pile up in the node.
        #expect(peak < 250 << 20, "peak RSS \(peak >> 20) MiB (was \(before >> 20) MiB before)")
        try? await raw.close()
        #expect(try await c.send(["STRLEN", "big"]) == .integer(1_000_000))
        #expect(cluster.logTail(n1).contains("client_output_buffer_limit"))
        await c.close()
    }

    @Test(
        "400 connections each holding half of a 1 MB SET: past maxmemory_clients they are closed; RSS under 160 MiB (254 MiB unbounded)"
    )
    func queryBuffersAreBounded() async throws {
        let cluster = try ProcessCluster(settings: { $0.maxMemoryClients = 48 << 20 })
        defer { cluster.killAll() }
        try await cluster.startAll()
        let c = try await cluster.client(n1)
        #expect(
            try await c.send(["CONFIG", "GET", "maxmemory-clients"])
                == .array([.bulkString(Array("maxmemory-clients".utf8)), .bulkString(Array("50331648".utf8))])
        )
        var channels: [any Channel] = []
        let half = [UInt8](repeating: UInt8(ascii: "x"), count: 500_000)
        for _ in 0..<400 {
            guard
                let ch = try? await ClientBootstrap(group: ProcessCluster.group)
                    .connect(host: "127.0.0.1", port: cluster.port(n1)).get()
            else { continue }
            var b = ch.allocator.buffer(capacity: half.count + 64)
            b.writeString("*3\r\n$3\r\nSET\r\n$1\r\nq\r\n$1000000\r\n")
            b.writeBytes(half)
            ch.writeAndFlush(b, promise: nil)
            channels.append(ch)
        }
        var evicted = 0.0
        for _ in 0..<200 where evicted < 100 {
            try await Task.sleep(nanoseconds: 50_000_000)
            let metrics = try await cluster.http("GET", "/metrics", node: n1).body
            evicted = metricValue(metrics, "tern_evicted_clients_memory_total") ?? 0
        }
        // 400 × 0.5 MB = 200 MB were sent; at most ~48 MiB of it may be held.
        #expect(evicted >= 100, "clients closed for maxmemory_clients: \(evicted)")
        let peak = cluster.memory(n1, "VmHWM") ?? .max
        #expect(peak < 160 << 20, "peak RSS \(peak >> 20) MiB")
        for ch in channels { try? await ch.close() }
        // The node still serves, and the buffers closed connections held are given back.
        #expect(try await c.send(["SET", "q", "small"]) == .simpleString("OK"))
        var held = Double.infinity
        for _ in 0..<100 where held > 0 {
            try await Task.sleep(nanoseconds: 50_000_000)
            held =
                metricValue(
                    try await cluster.http("GET", "/metrics", node: n1).body, "tern_client_buffer_bytes") ?? 0
        }
        #expect(held == 0, "client buffer bytes after every big connection closed: \(held)")
        await c.close()
    }
}
