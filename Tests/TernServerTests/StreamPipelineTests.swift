import Logging
import NIOCore
import TernConsensus
import TernCore
import TernRESP
import TernServer
import Testing

/// A connection's pipelined stream writes on one key (RESPFrontend.swift, `StreamRun`): the
/// writes read while the connection's earlier request on the key runs go together as one Paxos
/// instance, and every command still gets the reply it gets alone, in order.
@Suite(.timeLimit(.minutes(1))) struct StreamPipelineTests {
    static func start() async throws -> (LoopbackCluster, [RESPFrontend]) {
        let c = try await LoopbackCluster.start(perCampus: 1)
        var logger = Logger(label: "stream-pipeline-test")
        logger.logLevel = .warning
        var fronts: [RESPFrontend] = []
        for id in c.nodes.keys.sorted(by: { $0.rawValue < $1.rawValue }) {
            fronts.append(
                try await RESPFrontend.start(
                    host: "127.0.0.1", port: 0, node: c.nodes[id]!,
                    processor: CommandProcessor(password: nil, maxValueBytes: 1 << 20), group: c.group,
                    logger: logger))
        }
        return (c, fronts)
    }

    /// A worker's session on stream `key`: adds, a group, a read, acknowledgements, deletions,
    /// errors (an unknown group, a bad id, WRONGTYPE) among them.
    static func commands(_ key: String) -> [[String]] {
        var cmds: [[String]] = []
        for i in 1...20 { cmds.append(["XADD", key, "1-\(i)", "n", "\(i)"]) }
        cmds.append(["XGROUP", "CREATE", key, "g", "0"])
        cmds.append(["XREADGROUP", "GROUP", "g", "c", "COUNT", "8", "STREAMS", key, ">"])
        for i in 1...8 { cmds.append(["XACK", key, "g", "1-\(i)"]) }
        cmds.append(["XACK", key, "nogroup", "1-9"])
        cmds.append(["XADD", key, "1-3", "too", "old"])
        cmds.append(["XDEL", key, "1-1", "1-2", "1-3"])
        cmds.append(["XLEN", key])
        cmds.append(["XADD", key, "MAXLEN", "5", "2-1", "n", "last"])
        cmds.append(["XPENDING", key, "g"])
        cmds.append(["SET", key + ":s", "v"])
        cmds.append(["XADD", key + ":s", "*", "a", "b"])
        cmds.append(["XADD", key + ":s", "*", "a", "b"])
        cmds.append(["XRANGE", key, "-", "+"])
        return cmds
    }

    static func renamed(_ v: RESPValue, _ from: String, _ to: String) -> RESPValue {
        switch v {
        case .bulkString(let b?) where b == Array(from.utf8): return .bulkString(Array(to.utf8))
        case .array(let a?): return .array(a.map { renamed($0, from, to) })
        default: return v
        }
    }

    @Test("Pipelined stream writes answer as sent one by one, in fewer instances")
    func pipelinedAsAlone() async throws {
        let (c, fronts) = try await Self.start()
        let client = try await RESPClient.connect(
            host: "127.0.0.1", port: fronts[0].port, group: c.group, requestTimeout: .seconds(20))
        let node = c.nodes[NodeID(1)]!
        // One by one: the reference.
        var alone: [RESPValue] = []
        for cmd in Self.commands("one") { alone.append(try await client.send(cmd)) }
        let before = await node.status().consensus.instancesProposed
        let piped = try await client.pipeline(Self.commands("run").map { $0.map { Array($0.utf8) } })
        let after = await node.status().consensus.instancesProposed
        #expect(piped.count == alone.count)
        for (k, (p, a)) in zip(piped, alone).enumerated() {
            #expect(Self.renamed(p, "run", "one") == a, "command \(k): \(Self.commands("run")[k])")
        }
        // 31 stream writes on the key (and 2 on the other) went in a handful of instances (37 one by
        // one; 4 when measured).
        #expect(after - before <= 8, "instances: \(after - before)")
        // The stream as the pipeline left it, read through another node.
        let other = try await RESPClient.connect(
            host: "127.0.0.1", port: fronts[2].port, group: c.group, requestTimeout: .seconds(20))
        #expect(
            Self.renamed(try await other.send(["XRANGE", "run", "-", "+"]), "run", "one")
                == (try await other.send(["XRANGE", "one", "-", "+"])))
        await client.close()
        await other.close()
        for f in fronts { await f.close() }
        await c.stop()
    }

    @Test("A pipeline beyond one run's bounds (writes, bytes) goes as several runs, in order")
    func beyondOneRun() async throws {
        let (c, fronts) = try await Self.start()
        let client = try await RESPClient.connect(
            host: "127.0.0.1", port: fronts[1].port, group: c.group, requestTimeout: .seconds(20))
        var cmds: [[[UInt8]]] = []
        for i in 1...300 { cmds.append(["XADD", "big", "1-\(i)", "n", "\(i)"].map { Array($0.utf8) }) }
        let large = [UInt8](repeating: UInt8(ascii: "x"), count: 100_000)
        for i in 1...6 { cmds.append([b("XADD"), b("big"), b("2-\(i)"), b("blob"), large]) }
        cmds.append(["XLEN", "big"].map { Array($0.utf8) })
        let replies = try await client.pipeline(cmds)
        for i in 1...300 { #expect(replies[i - 1] == .bulkString(b("1-\(i)"))) }
        for i in 1...6 { #expect(replies[299 + i] == .bulkString(b("2-\(i)"))) }
        #expect(replies.last == .integer(306))
        await client.close()
        for f in fronts { await f.close() }
        await c.stop()
    }
}
