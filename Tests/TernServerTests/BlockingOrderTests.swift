import NIOConcurrencyHelpers
import NIOCore
import TernRESP
import Testing

@testable import TernServer

/// Blocked clients served in line (Blocking.swift, `BlockedKeys`): on one node, the client that has
/// waited longest on a key takes first, as Redis serves its blocked clients.
@Suite(.timeLimit(.minutes(2))) struct BlockingOrderTests {
    @Test("A change wakes the first in line only; its turn ends by answering (next woken) or parking")
    func line() {
        let r = BlockedKeys()
        let woken = NIOLockedValueBox<[String]>([])
        func waiter(_ name: String, _ keys: [String], _ ticket: UInt64?) -> UInt64 {
            r.add(keys.map(b), ticket: ticket) { woken.withLockedValue { $0.append(name) } }
        }
        let t1 = r.ticket()
        let t2 = r.ticket()
        let t3 = r.ticket()
        // Registered out of their order in line (a re-attempt registers again, keeping its ticket).
        _ = waiter("3", ["q"], t3)
        _ = waiter("1", ["q", "other"], t1)
        _ = waiter("2", ["q"], t2)
        _ = waiter("reader", ["q"], nil)
        r.wake([b("q")])
        #expect(woken.withLockedValue { $0 } == ["reader", "1"])
        // While 1's turn lasts (on both its keys), changes only mark it.
        r.wake([b("q")])
        r.wake([b("other")])
        #expect(woken.withLockedValue { $0 } == ["reader", "1"])
        // 1 answered: the next in line looks at once.
        r.turnEnded(t1, answered: true)
        #expect(woken.withLockedValue { $0 } == ["reader", "1", "2"])
        // 2 parks again (registered, same ticket) with no change during its turn: nobody is woken.
        _ = waiter("2", ["q"], t2)
        r.turnEnded(t2, answered: false)
        #expect(woken.withLockedValue { $0 } == ["reader", "1", "2"])
        // The next change: 2 again (it is still first), not 3.
        r.wake([b("q")])
        #expect(woken.withLockedValue { $0 } == ["reader", "1", "2", "2"])
        // A change during 2's turn, then 2 parks: the change is handed to the first in line.
        _ = waiter("2", ["q"], t2)
        r.wake([b("q")])
        r.turnEnded(t2, answered: false)
        #expect(woken.withLockedValue { $0 } == ["reader", "1", "2", "2", "2"])
        r.turnEnded(t2, answered: true)
        #expect(woken.withLockedValue { $0 } == ["reader", "1", "2", "2", "2", "3"])
        r.turnEnded(t3, answered: true)
        #expect(r.count == 0)
    }

    @Test("Five BLPOPs on one node get one RPUSH's five elements in the order they blocked")
    func blpopInOrder() async throws {
        let k = try await KeyspaceCluster.start()
        defer { Task { await k.stop() } }
        let pusher = try await k.client(1)
        var waiting: [RESPClient] = []
        var pops: [Task<RESPValue, any Error>] = []
        for i in 0..<5 {
            let c = try await k.client(0)
            waiting.append(c)
            pops.append(Task { try await c.send(["BLPOP", "line", "10"]) })
            // Each is parked before the next starts (its place in line is its start).
            let deadline = ContinuousClock.now + .seconds(5)
            while k.cluster.nodes.values.map(\.blockedKeys.count).reduce(0, +) < i + 1,
                ContinuousClock.now < deadline
            {
                try await Task.sleep(for: .milliseconds(10))
            }
        }
        _ = try await pusher.send(["RPUSH", "line", "a", "b", "c", "d", "e"])
        var got: [RESPValue] = []
        for p in pops { got.append(try await p.value) }
        #expect(got == ["a", "b", "c", "d", "e"].map { .array([bulk("line"), bulk($0)]) })
        for c in waiting + [pusher] { await c.close() }
    }
}
