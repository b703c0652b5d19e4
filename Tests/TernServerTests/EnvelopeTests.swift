import Logging
import NIOConcurrencyHelpers
import NIOCore
import TernConsensus
import TernCore
import TernRESP
import TernServer
import Testing

/// A loopback cluster (one node per campus) with the envelope service on each node, all on one
/// settable clock.
struct EnvelopeCluster {
    let cluster: LoopbackCluster
    var fronts: [RESPFrontend] = []
    let nowMs = NIOLockedValueBox<UInt64>(1_000_000)

    static func start() async throws -> EnvelopeCluster {
        let c = try await LoopbackCluster.start(perCampus: 1)
        var s = EnvelopeCluster(cluster: c)
        var logger = Logger(label: "envelope-test")
        logger.logLevel = .warning
        let clock = s.nowMs
        for id in c.nodes.keys.sorted(by: { $0.rawValue < $1.rawValue }) {
            var processor = CommandProcessor(password: nil, maxValueBytes: 1 << 20)
            processor.modules.append(
                EnvelopeService(node: c.nodes[id]!, clock: { clock.withLockedValue { $0 } }))
            s.fronts.append(
                try await RESPFrontend.start(
                    host: "127.0.0.1", port: 0, node: c.nodes[id]!, processor: processor, group: c.group,
                    logger: logger))
        }
        return s
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

/// INFO's fields by name.
func envelopeInfo(_ v: RESPValue) -> [String: RESPValue] {
    guard case .array(let f?) = v else { return [:] }
    var out: [String: RESPValue] = [:]
    for k in stride(from: 0, to: f.count - 1, by: 2) {
        if case .bulkString(let n?) = f[k] { out[String(decoding: n, as: UTF8.self)] = f[k + 1] }
    }
    return out
}

@Suite(.timeLimit(.minutes(2))) struct EnvelopeServiceTests {
    @Test(
        "CREATE, OPEN through every node, INFO: the shares sum to the total; opening twice answers the same")
    func openEverywhere() async throws {
        let s = try await EnvelopeCluster.start()
        let cs = [try await s.client(0), try await s.client(1), try await s.client(2)]
        #expect(try await cs[0].send(["ENVELOPE.CREATE", "red1", "1000", "5"]) == .simpleString("OK"))
        var got: [Int64] = []
        for u in 0..<5 {
            guard case .integer(let a) = try await cs[u % 3].send(["ENVELOPE.OPEN", "red1", String(u)]) else {
                Issue.record("open \(u)")
                continue
            }
            #expect(a >= 1)
            got.append(a)
            #expect(try await cs[(u + 1) % 3].send(["ENVELOPE.OPEN", "red1", String(u)]) == .integer(a))
        }
        #expect(got.reduce(0, +) == 1000)
        #expect(
            try await cs[1].send(["ENVELOPE.OPEN", "red1", "99"])
                == .error("ERR envelope is empty: all its shares were taken"))
        let info = envelopeInfo(try await cs[2].send(["ENVELOPE.INFO", "red1"]))
        #expect(info["total_cents"] == .integer(1000))
        #expect(info["remaining_cents"] == .integer(0))
        #expect(info["opened"] == .integer(5))
        #expect(info["expired"] == .integer(0))
        #expect(
            info["shares"]
                == .array((0..<5).map { .array([.integer(Int64($0)), .integer(got[$0])]) }))
        for c in cs { await c.close() }
        await s.stop()
    }

    @Test(
        "TTL: past the deadline an open is refused, INFO expires it through the protocol and shows the refund"
    )
    func expiry() async throws {
        let s = try await EnvelopeCluster.start()
        let c = try await s.client(0)
        #expect(try await c.send(["ENVELOPE.CREATE", "t", "500", "4", "TTL", "60"]) == .simpleString("OK"))
        guard case .integer(let a) = try await c.send(["ENVELOPE.OPEN", "t", "1"]) else {
            Issue.record("open")
            return
        }
        s.nowMs.withLockedValue { $0 += 60_000 }
        let info = envelopeInfo(try await c.send(["ENVELOPE.INFO", "t"]))
        #expect(info["expired"] == .integer(1))
        #expect(info["refunded_cents"] == .integer(500 - a))
        #expect(info["remaining_cents"] == .integer(0))
        #expect(
            try await c.send(["ENVELOPE.OPEN", "t", "2"])
                == .error("ERR envelope expired (\(500 - a) cents refunded)"))
        // The one who opened in time keeps (and is answered) its share.
        #expect(try await c.send(["ENVELOPE.OPEN", "t", "1"]) == .integer(a))
        await c.close()
        await s.stop()
    }

    @Test("Bad input and missing envelopes get clear errors")
    func errors() async throws {
        let s = try await EnvelopeCluster.start()
        let c = try await s.client(1)
        func isError(_ v: RESPValue, _ prefix: String) -> Bool {
            if case .error(let e) = v { return e.hasPrefix(prefix) }
            return false
        }
        #expect(isError(try await c.send(["ENVELOPE.CREATE", "x", "10"]), "ERR wrong number of arguments"))
        #expect(isError(try await c.send(["ENVELOPE.CREATE", "x", "ten", "2"]), "ERR total_cents must be"))
        #expect(isError(try await c.send(["ENVELOPE.CREATE", "x", "0", "2"]), "ERR total_cents must be"))
        #expect(
            isError(try await c.send(["ENVELOPE.CREATE", "x", "4294967296", "2"]), "ERR total_cents must be"))
        #expect(isError(try await c.send(["ENVELOPE.CREATE", "x", "10", "0"]), "ERR count must be"))
        #expect(isError(try await c.send(["ENVELOPE.CREATE", "x", "100000", "10001"]), "ERR count must be"))
        #expect(
            isError(
                try await c.send(["ENVELOPE.CREATE", "x", "3", "4"]), "ERR total_cents must be at least count"
            ))
        #expect(
            isError(try await c.send(["ENVELOPE.CREATE", "x", "10", "2", "TTL", "0"]), "ERR TTL must be"))
        #expect(
            isError(try await c.send(["ENVELOPE.CREATE", "x", "10", "2", "EX", "5"]), "ERR syntax error"))
        #expect(try await c.send(["ENVELOPE.CREATE", "x", "10", "2"]) == .simpleString("OK"))
        #expect(
            try await c.send(["ENVELOPE.CREATE", "x", "10", "2"]) == .error("ERR envelope already exists"))
        #expect(isError(try await c.send(["ENVELOPE.OPEN", "x", "-3"]), "ERR uid must be"))
        #expect(isError(try await c.send(["ENVELOPE.OPEN", "x"]), "ERR wrong number of arguments"))
        #expect(try await c.send(["ENVELOPE.OPEN", "nope", "1"]) == .error("ERR no such envelope"))
        #expect(try await c.send(["ENVELOPE.INFO", "nope"]) == .error("ERR no such envelope"))
        await c.close()
        await s.stop()
    }

    @Test("600 concurrent opens of one envelope through three nodes: 400 shares that sum to the total")
    func hotEnvelope() async throws {
        let s = try await EnvelopeCluster.start()
        let c = try await s.client(0)
        #expect(try await c.send(["ENVELOPE.CREATE", "hot", "100000", "400"]) == .simpleString("OK"))
        let clients = [try await s.client(0), try await s.client(1), try await s.client(2)]
        // Each client's answers, by uid (client k opens uids k, k+3, k+6, …).
        func open(_ k: Int) async -> [RESPValue] {
            let cmds = (0..<200).map { ["ENVELOPE.OPEN", "hot", String($0 * 3 + k)].map { Array($0.utf8) } }
            do {
                return try await clients[k].pipeline(cmds)
            } catch {
                return [.error("pipeline failed: \(error)")]
            }
        }
        async let a0 = open(0)
        async let a1 = open(1)
        async let a2 = open(2)
        let byClient = [0: await a0, 1: await a1, 2: await a2]
        var answers: [RESPValue] = []
        // An open whose outcome is unknown (NOQUORUM "may or may not have been applied": under
        // load a hot key's routed writes can be taken back, docs/PROTOCOL.md §4) is retried, as a
        // client does: opening twice answers the same share (opens are de-duplicated by uid).
        for k in 0..<3 {
            for (j, a) in (byClient[k] ?? []).enumerated() {
                var answer = a
                for _ in 0..<5 {
                    guard case .error(let text) = answer, text.hasPrefix("NOQUORUM") else { break }
                    answer = try await c.send(["ENVELOPE.OPEN", "hot", String(j * 3 + k)])
                }
                answers.append(answer)
            }
        }
        let settled = answers
        let amounts = settled.compactMap { v -> Int64? in if case .integer(let a) = v { a } else { nil } }
        #expect(
            amounts.count == 400,
            "\(Set(settled.filter { if case .integer = $0 { false } else { true } }.map { "\($0)" }))")
        #expect(amounts.reduce(0, +) == 100_000)
        #expect(answers.count == 600)
        let info = envelopeInfo(try await c.send(["ENVELOPE.INFO", "hot"]))
        #expect(info["opened"] == .integer(400))
        for x in clients { await x.close() }
        await c.close()
        await s.stop()
    }
}
