import NIOConcurrencyHelpers
import TernConsensus
import TernCore
import TernServer
import Testing

/// XADD IDMP through a cluster (docs/QUEUE.md, "Retries: XADD IDMP"): the stream's replicated
/// memory answers a retry that lands on another node, after the first node went away.
@Suite(.timeLimit(.minutes(1))) struct StreamRetryTests {
    /// XADD as `CommandProcessor` normalises it on a node whose clock says `nowMs`.
    static func xadd(_ key: String, nowMs: Int, _ rest: String) -> KeyRequest {
        let a =
            [b("xadd"), b(key), b(String(nowMs)), b("0")] + rest.split(separator: " ").map { Array($0.utf8) }
        return .write(.data(a))
    }

    @Test(
        "A retry through another node, after the first node is cut off, answers the first id and adds nothing"
    )
    func retryThroughAnotherNode() async throws {
        let c = try await LoopbackCluster.start(perCampus: 1)
        let n = [NodeID(1), NodeID(2), NodeID(3)].map { c.nodes[$0]! }
        let first = await n[0].execute(key: b("q"), Self.xadd("q", nowMs: 1_000, "idmp app-1 job-7 * task a"))
        #expect(first == .done(.data(.bulk(b("1000-0")))))
        // The producer's connection to n1 broke before the answer came: n1 is gone, the client
        // retries through n2 and n3 (their clocks ahead), as redis-py does after a failover.
        c.net.down.withLockedValue { $0.insert(NodeID(1)) }
        #expect(
            await n[1].execute(key: b("q"), Self.xadd("q", nowMs: 3_000, "idmp app-1 job-7 * task a"))
                == first)
        #expect(
            await n[2].execute(key: b("q"), Self.xadd("q", nowMs: 4_000, "idmp app-1 job-7 * task a"))
                == first)
        // Another job of the producer is a new entry; a plain XADD too.
        #expect(
            await n[1].execute(key: b("q"), Self.xadd("q", nowMs: 5_000, "idmp app-1 job-8 * task b"))
                == .done(.data(.bulk(b("5000-0")))))
        #expect(
            await n[2].execute(key: b("q"), Self.xadd("q", nowMs: 5_000, "* task c"))
                == .done(.data(.bulk(b("5000-1")))))
        let read = await n[2].execute(key: b("q"), .read)
        guard case .typed(let v) = read, let s = StreamValue(v.bytes) else {
            Issue.record("read: \(read)")
            return
        }
        #expect(s.entries.map(\.id.description) == ["1000-0", "5000-0", "5000-1"])
        await c.stop()
    }

    @Test("Concurrent tries of one XADD IDMP on all three nodes: one entry, one answer")
    func concurrentTries() async throws {
        let c = try await LoopbackCluster.start(perCampus: 1)
        let nodes = [NodeID(1), NodeID(2), NodeID(3)].map { c.nodes[$0]! }
        let answers = await withTaskGroup(of: NodeReply.self) { g in
            for k in 0..<9 {
                g.addTask {
                    await nodes[k % 3].execute(
                        key: b("cq"), Self.xadd("cq", nowMs: 1_000 + k, "idmp p dup * n \(k)"))
                }
            }
            var out: [NodeReply] = []
            for await r in g { out.append(r) }
            return out
        }
        #expect(Set(answers).count == 1 && answers.count == 9, "\(answers)")
        let read = await nodes[0].execute(key: b("cq"), .read)
        guard case .typed(let v) = read, let s = StreamValue(v.bytes) else {
            Issue.record("read: \(read)")
            return
        }
        #expect(s.entries.count == 1)
        #expect(answers.first == .done(.data(.bulk(Array(s.entries[0].id.description.utf8)))))
        await c.stop()
    }
}
