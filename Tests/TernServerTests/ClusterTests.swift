import Foundation
import NIOCore
import NIOPosix
import TernCheck
import TernCore
import TernRESP
import Testing

#if canImport(Glibc)
    import Glibc
#endif

let n1 = NodeID(1)
let n2 = NodeID(2)
let n3 = NodeID(3)

/// A monotonic clock in microseconds for histories.
func nowMicros() -> UInt64 { DispatchTime.now().uptimeNanoseconds / 1000 }

/// Records client operations as a TernCheck history.
final class Recorder: @unchecked Sendable {
    // @unchecked Sendable: `ops` is guarded by `lock`.
    private let lock = NSLock()
    private(set) var ops: [HistoryOperation] = []
    func add(_ op: HistoryOperation) { lock.withLock { ops.append(op) } }
    var all: [HistoryOperation] { lock.withLock { ops } }
}

/// One client's operation through RESP, recorded with its outcome.
func recordedOp(
    _ c: RESPClient, client: Int, key: String, input: OperationInput, recorder: Recorder
) async -> OperationOutput {
    let call = nowMicros()
    var output: OperationOutput
    do {
        let reply: RESPValue
        switch input {
        case .get: reply = try await c.send(["GET", key])
        case .put(let v): reply = try await c.send(["SET", key, v])
        case .incr(let d): reply = try await c.send(["INCRBY", key, "\(d)"])
        case .delete: reply = try await c.send(["DEL", key])
        case .cas: reply = .error("ERR not used")
        }
        switch (input, reply) {
        case (.get, .bulkString(let b)): output = .value(b.map { String(decoding: $0, as: UTF8.self) })
        case (.get, .null): output = .value(nil)
        case (.put, .simpleString("OK")): output = .ok
        case (.incr, .integer(let n)): output = .number(n)
        case (.delete, .integer): output = .ok
        case (_, .error(let e))
        where e.hasPrefix("NOQUORUM write not applied") || e.hasPrefix("NOQUORUM read"):
            output = .failed
        case (.get, _): output = .failed
        default: output = .unknown
        }
    } catch {
        // The connection died: a read observed nothing, a write may have happened.
        if case .get = input { output = .failed } else { output = .unknown }
    }
    recorder.add(
        HistoryOperation(
            client: client, key: key, input: input, output: output, call: call,
            ret: output == .unknown ? nil : nowMicros()))
    return output
}

@Suite(.serialized, .timeLimit(.minutes(3))) struct ClusterTests {
    @Test("Basics through redis-cli and RESPClient, pipelining in order, garbage isolated, admin API")
    func basics() async throws {
        let cluster = try ProcessCluster()
        defer { cluster.killAll() }
        try await cluster.startAll()
        let cli = "/usr/bin/redis-cli"
        #expect(FileManager.default.isExecutableFile(atPath: cli), "scripts/test installs redis-tools")
        if FileManager.default.isExecutableFile(atPath: cli) {
            let p = "\(cluster.port(n1))"
            #expect(try run(cli, ["-p", p, "SET", "greeting", "hello"]).1 == "OK\n")
            #expect(try run(cli, ["-p", "\(cluster.port(n2))", "GET", "greeting"]).1 == "hello\n")
            #expect(try run(cli, ["-p", p, "INCR", "visits"]).1 == "1\n")
            #expect(try run(cli, ["-p", "\(cluster.port(n3))", "INCRBY", "visits", "41"]).1 == "42\n")
            #expect(try run(cli, ["-p", p, "MSET", "a", "1", "b", "2"]).1 == "OK\n")
            #expect(try run(cli, ["-p", p, "MGET", "a", "b", "nothing"]).1 == "1\n2\n\n")
            #expect(try run(cli, ["-p", p, "DEL", "a", "b", "nothing"]).1 == "2\n")
            #expect(try run(cli, ["-p", p, "APPEND", "greeting", "!"]).1 == "6\n")
            #expect(try run(cli, ["-p", p, "NOSUCH"]).1.hasPrefix("ERR unknown command 'NOSUCH'"))
            // Several commands on one connection (redis-cli reads them from standard input).
            let piped = try run(cli, ["-p", p], input: "SET x 1\nINCR x\nGET x\nPING\n").1
            #expect(piped == "OK\n2\n2\nPONG\n")
            // The whole server's services side by side: the keyspace listing (peer service kind 4)
            // answered with ACL's sharing (5) and pub/sub (6) registered beside it — when ACL took 4
            // too, every SCAN, KEYS and DBSIZE of a real server answered NOQUORUM.
            let keys = try run(cli, ["-p", "\(cluster.port(n3))", "KEYS", "*"]).1
            #expect(Set(keys.split(separator: "\n").map(String.init)) == ["greeting", "visits", "x"])
            #expect(try run(cli, ["-p", p, "DBSIZE"]).1 == "3\n")
            #expect(try run(cli, ["-p", p, "HSET", "h", "f", "v"]).1 == "1\n")
            #expect(try run(cli, ["-p", p, "TYPE", "h"]).1 == "hash\n")
            #expect(try run(cli, ["-p", p, "DEL", "h"]).1 == "1\n")
        }
        let c = try await cluster.client(n2)
        #expect(try await c.send(["SET", "k", "v"]) == .simpleString("OK"))
        #expect(try await c.send(["GET", "k"]) == .bulkString(Array("v".utf8)))
        // 200 pipelined commands over many keys (replicas complete them out of order): in order.
        var cmds: [[[UInt8]]] = []
        for i in 0..<100 {
            cmds.append(["INCRBY", "p\(i)", "\(i + 1)"].map { Array($0.utf8) })
            cmds.append(["GET", "p\(i)"].map { Array($0.utf8) })
        }
        let replies = try await c.pipeline(cmds)
        for i in 0..<100 {
            #expect(replies[2 * i] == .integer(Int64(i + 1)))
            #expect(replies[2 * i + 1] == .bulkString(Array("\(i + 1)".utf8)))
        }
        // Garbage on one connection: a protocol error, that connection closed, others unaffected.
        let raw = try await ClientBootstrap(group: ProcessCluster.group).connect(
            host: "127.0.0.1", port: cluster.port(n2)
        ).get()
        let collector = BodyCollector()
        try await raw.pipeline.addHandler(collector).get()
        var junk = raw.allocator.buffer(capacity: 16)
        junk.writeString("*1\r\n$abc\r\n")
        try await raw.writeAndFlush(junk).get()
        try await raw.closeFuture.get()
        #expect(collector.text.hasPrefix("-ERR Protocol error"))
        #expect(try await c.send(["GET", "k"]) == .bulkString(Array("v".utf8)))
        await c.close()
        // Admin endpoint.
        let status = try await cluster.http("GET", "/status", node: n1)
        #expect(
            status.status == 200 && status.body.contains("\"node\":1") && status.body.contains("\"fsyncs\""))
        let metrics = try await cluster.http("GET", "/metrics", node: n1)
        #expect(metrics.body.contains("tern_requests_total{node=\"1\",campus=\"A\"}"))
        #expect(try await cluster.http("POST", "/fault?peer=2&mode=drop", node: n1).status == 200)
        #expect(try await cluster.http("POST", "/fault?peer=2&mode=bogus", node: n1).status == 400)
        #expect(try await cluster.http("POST", "/fault?peer=2&mode=none", node: n1).status == 200)
        #expect(try await cluster.http("GET", "/nope", node: n1).status == 404)
        // Graceful stop: SIGTERM → exit 0.
        #expect(await cluster.signal(n3, SIGTERM) == 0)
    }

    @Test("SIGKILL one campus: the other two keep serving; restarted, it catches up; history linearizable")
    func oneCampusKilled() async throws {
        let cluster = try ProcessCluster()
        defer { cluster.killAll() }
        try await cluster.startAll()
        let recorder = Recorder()
        let keys = ["r0", "r1", "c0"]
        let stop = NIOLockedValueBoxFlag()
        let pauseMax = NIOLockedMax()
        // Two workers on each surviving node, one on the node that will die.
        func worker(_ id: Int, node: NodeID, survives: Bool) async {
            guard let c = try? await cluster.client(node) else { return }
            var rng = SystemRandomNumberGenerator()
            var last = nowMicros()
            var seq = 0
            while !stop.value {
                seq += 1
                let key = keys[Int.random(in: 0..<keys.count, using: &rng)]
                let input: OperationInput
                if key.hasPrefix("c") {
                    input = Bool.random(using: &rng) ? .incr(1) : .get
                } else {
                    input = Bool.random(using: &rng) ? .put("w\(id)-\(seq)") : .get
                }
                let out = await recordedOp(c, client: id, key: key, input: input, recorder: recorder)
                // A little think time: enough operations for the checks, without starving the machine.
                try? await Task.sleep(nanoseconds: 2_000_000)
                if out == .unknown && !survives { break }
                if out != .unknown && out != .failed && survives {
                    let now = nowMicros()
                    pauseMax.update(now - last)
                    last = now
                }
            }
            await c.close()
        }
        async let w1: Void = worker(1, node: n2, survives: true)
        async let w2: Void = worker(2, node: n2, survives: true)
        async let w3: Void = worker(3, node: n3, survives: true)
        async let w4: Void = worker(4, node: n3, survives: true)
        async let w5: Void = worker(5, node: n1, survives: false)
        try await Task.sleep(nanoseconds: 1_500_000_000)
        let killedAt = nowMicros()
        await cluster.signal(n1, SIGKILL)
        try await Task.sleep(nanoseconds: 2_500_000_000)
        cluster.start(n1)
        try await cluster.waitHealthy(n1)
        async let w6: Void = worker(6, node: n1, survives: false)
        try await Task.sleep(nanoseconds: 1_500_000_000)
        stop.set()
        _ = await (w1, w2, w3, w4, w5, w6)
        // The restarted node reads what was written while it was down.
        let c2 = try await cluster.client(n2)
        #expect(try await c2.send(["SET", "fresh", "after-restart"]) == .simpleString("OK"))
        let c1 = try await cluster.client(n1)
        #expect(try await c1.send(["GET", "fresh"]) == .bulkString(Array("after-restart".utf8)))
        let counter = try await c1.send(["GET", "c0"])
        await c1.close()
        await c2.close()
        let history = recorder.all
        let done = history.filter { $0.output != .unknown && $0.output != .failed }
        let afterKill = done.filter { $0.call > killedAt && ($0.client <= 4) }
        print(
            "[cluster] \(history.count) ops, \(afterKill.count) completed on the survivors after the kill; "
                + "longest pause between completions on the survivors: \(pauseMax.value / 1000) ms; counter \(counter)"
        )
        #expect(afterKill.count > 20, "the surviving campuses kept serving")
        #expect(pauseMax.value < 3_000_000, "no pause of 3 s or more on the surviving campuses")
        let path = cluster.dir + "/../tern-it-history-\(getpid()).jsonl"
        try HistoryFile.write(history, to: path)
        let verdict = checkLinearizable(history)
        #expect(verdict == .linearizable, "history at \(path): \(verdict)")
        if verdict == .linearizable { try? FileManager.default.removeItem(atPath: path) }
    }

    @Test("SIGKILL two campuses: writes fail with NOQUORUM; after restart nothing acknowledged is lost")
    func twoCampusesKilled() async throws {
        let cluster = try ProcessCluster(requestTimeoutMs: 800)
        defer { cluster.killAll() }
        try await cluster.startAll()
        let c = try await cluster.client(n1)
        for i in 0..<20 { #expect(try await c.send(["SET", "k\(i)", "v\(i)"]) == .simpleString("OK")) }
        #expect(try await c.send(["INCRBY", "n", "5"]) == .integer(5))
        await cluster.signal(n2, SIGKILL)
        await cluster.signal(n3, SIGKILL)
        let started = nowMicros()
        let w = try await c.send(["SET", "k0", "lost?"])
        guard case .error(let e) = w else {
            Issue.record("a write without a quorum answered \(w)")
            return
        }
        #expect(
            e.hasPrefix("NOQUORUM write not") && e.contains("campus B") && e.contains("campus C"), "got \(e)")
        #expect(nowMicros() - started < 5_000_000)
        let r = try await c.send(["GET", "k1"])
        guard case .error(let re) = r else {
            Issue.record("a read without a quorum answered \(r)")
            return
        }
        // The error names both missing campuses.
        #expect(
            re.hasPrefix("NOQUORUM read not served: no answer within") && re.contains("campus B")
                && re.contains("campus C"), "got \(re)")
        cluster.start(n2)
        cluster.start(n3)
        try await cluster.waitHealthy(n2)
        try await cluster.waitHealthy(n3)
        for node in [n1, n2, n3] {
            let cn = try await cluster.client(node)
            for i in 1..<20 {
                #expect(try await cn.send(["GET", "k\(i)"]) == .bulkString(Array("v\(i)".utf8)))
            }
            let k0 = try await cn.send(["GET", "k0"])
            #expect(k0 == .bulkString(Array("v0".utf8)) || k0 == .bulkString(Array("lost?".utf8)))
            #expect(try await cn.send(["GET", "n"]) == .bulkString(Array("5".utf8)))
            await cn.close()
        }
        await c.close()
    }

    @Test("redis-benchmark (set, get, incr; pipelined) completes without errors")
    func redisBenchmark() async throws {
        let bench = "/usr/bin/redis-benchmark"
        guard FileManager.default.isExecutableFile(atPath: bench) else {
            Issue.record("redis-benchmark missing: scripts/test installs redis-tools")
            return
        }
        let cluster = try ProcessCluster()
        defer { cluster.killAll() }
        try await cluster.startAll()
        // Small -n in debug CI; scripts/bench-redis runs -n 20000 against a release build. -n is a
        // multiple of clients × pipeline (50 × 16): redis-benchmark then sends exactly -n INCRs
        // (otherwise it overshoots by up to a pipeline), so the counter must end at exactly 3200.
        let (status, out) = try run(
            bench,
            ["-p", "\(cluster.port(n1))", "-t", "set,get,incr", "-c", "50", "-P", "16", "-n", "3200", "-q"])
        #expect(status == 0)
        #expect(!out.contains("Error"), "\(out)")
        #expect(out.contains("INCR:"))
        let c = try await cluster.client(n2)
        let counter = try await c.send(["GET", "counter:__rand_int__"])
        #expect(counter == .bulkString(Array("3200".utf8)), "\(out)")
        await c.close()
    }

    @Test(
        "tern dev: plans once, prints one line per node, serves, stops on SIGTERM with exit 0, reuses its data; reads during its start-up do not keep it learner-only"
    )
    func dev() async throws {
        let dir = NSTemporaryDirectory() + "tern-dev-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let base = freeDevBasePort()
        #expect(base != 0)
        for round in 0..<2 {
            let log = dir + ".out\(round)"
            defer { try? FileManager.default.removeItem(atPath: log) }
            let pid = spawnProcess(
                ternExecutable(), ["dev", "--dir", dir, "--base-port", "\(base)", "--start-timeout", "60"],
                log: log)
            // Clients reading never-written keys on every node while the new cluster starts: each
            // read loaded the key damaged on a learner-only node whose peers were learner-only
            // too, and the cluster never became healthy (fixed: `tern dev` starts a cluster it
            // just planned with --new-cluster).
            let readers = Task {
                while !Task.isCancelled {
                    for port in base..<(base + 3) {
                        if let c = try? await RESPClient.connect(
                            host: "127.0.0.1", port: port, group: ProcessCluster.group,
                            requestTimeout: .seconds(2))
                        {
                            for k in 0..<3 { _ = try? await c.send(["GET", "never-written:\(k)"]) }
                            await c.close()
                        }
                    }
                    try? await Task.sleep(nanoseconds: 20_000_000)
                }
            }
            var text = ""
            for _ in 0..<600 {
                text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
                if text.contains("healthy") || text.contains("not healthy") { break }
                try await Task.sleep(nanoseconds: 100_000_000)
            }
            readers.cancel()
            #expect(text.contains("all 3 nodes healthy"), "\(text)")
            #expect(text.contains("n1 campus A client 127.0.0.1:\(base) admin 127.0.0.1:\(base + 200)"))
            #expect(text.contains("n3 campus C client 127.0.0.1:\(base + 2)"))
            #expect(text.contains(round == 0 ? "planned a new cluster" : "reusing the cluster"))
            let c = try await RESPClient.connect(host: "127.0.0.1", port: base, group: ProcessCluster.group)
            #expect(try await c.send(["INCR", "dev-runs"]) == .integer(Int64(round + 1)))
            await c.close()
            kill(pid, SIGTERM)
            let status = await waitExit(pid, seconds: 20)
            if status == nil { kill(pid, SIGKILL) }
            #expect(status == 0)
        }
    }
}

@Test("tern dev refuses to start on ports another server holds (it used to report that one healthy)")
func devRefusesPortsInUse() async throws {
    let dir = NSTemporaryDirectory() + "tern-dev-busy-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let base = freeDevBasePort()
    try #require(base != 0)
    // Another listener on n2's admin port (a cluster left running, say).
    let other = try await ServerBootstrap(group: ProcessCluster.group)
        .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
        .bind(host: "127.0.0.1", port: base + 201).get()
    let log = dir + ".out"
    defer { try? FileManager.default.removeItem(atPath: log) }
    let pid = spawnProcess(
        ternExecutable(), ["dev", "--dir", dir, "--base-port", "\(base)", "--start-timeout", "5"], log: log)
    let status = await waitExit(pid, seconds: 60)
    if status == nil { kill(pid, SIGKILL) }
    try await other.close()
    let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
    #expect(status != nil && status != 0, "\(text)")
    #expect(text.contains("127.0.0.1:\(base + 201) (n2's admin port) is in use"), "\(text)")
    #expect(!text.contains("healthy"), "\(text)")
}

/// A base port for `tern dev` whose nine ports (base, base+100, base+200, each +0…2) are free
/// now, or 0.
func freeDevBasePort() -> Int {
    for _ in 0..<50 {
        let b = Int.random(in: 20000...40000)
        if (0..<3).allSatisfy({ i in [0, 100, 200].allSatisfy { portIsFree(b + i + $0) } }) { return b }
    }
    return 0
}

func portIsFree(_ port: Int) -> Bool {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_port = UInt16(port).bigEndian
    inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr)
    return withUnsafePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
        }
    } == 0
}

/// A flag shared by test tasks.
final class NIOLockedValueBoxFlag: @unchecked Sendable {
    // @unchecked Sendable: guarded by `lock`.
    private let lock = NSLock()
    private var flag = false
    var value: Bool { lock.withLock { flag } }
    func set() { lock.withLock { flag = true } }
}

/// A running maximum shared by test tasks.
final class NIOLockedMax: @unchecked Sendable {
    // @unchecked Sendable: guarded by `lock`.
    private let lock = NSLock()
    private var m: UInt64 = 0
    var value: UInt64 { lock.withLock { m } }
    func update(_ v: UInt64) { lock.withLock { m = max(m, v) } }
}
