import NIOConcurrencyHelpers
import NIOCore
import TernCore
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

    /// Found by Redis's `unit/type/list` ("BLMOVE (left, left) with a client BLPOPing the target
    /// list") on hash-tag groups: `BLPOP target{t}` then `BLMOVE blist{t} target{t}` wait in one
    /// line (one Paxos key); `RPUSH blist{t}` woke only the BLPOP, which found nothing and parked,
    /// and the BLMOVE's poll was refused while the BLPOP waited ahead: both waited for ever.
    @Test(
        "Under hash-tag groups, a woken waiter that parks hands the change to one waiting on another member")
    func groupLineHandsOn() {
        let r = BlockedKeys(layout: .hashTagGroups)
        let woken = NIOLockedValueBox<[String]>([])
        func waiter(_ name: String, _ keys: [String], _ ticket: UInt64?) -> UInt64 {
            r.add(keys.map(b), ticket: ticket) { woken.withLockedValue { $0.append(name) } }
        }
        let t1 = r.ticket()
        let t2 = r.ticket()
        let t3 = r.ticket()
        _ = waiter("blpop", ["target{t}"], t1)
        _ = waiter("blmove", ["blist{t}"], t2)
        _ = waiter("blpop2", ["target{t}"], t3)
        // Another member waits ahead, but not on blist{t}: the BLMOVE's poll may look.
        #expect(r.mayLook(t2, [b("blist{t}")]))
        #expect(!r.mayLook(t3, [b("target{t}")]), "the first BLPOP is ahead on target{t}")
        // The push's write lands on the tag's Paxos key (the group), which is what a write wakes.
        r.wake([KeyLayout.hashTagGroups.paxosKey(b("blist{t}"))])
        #expect(woken.withLockedValue { $0 } == ["blpop"])
        // The BLPOP finds target{t} empty and parks (registered again, same ticket).
        _ = waiter("blpop", ["target{t}"], t1)
        r.turnEnded(t1, answered: false)
        #expect(woken.withLockedValue { $0 } == ["blpop", "blmove"], "handed on to the BLMOVE")
        // The BLMOVE moved the element: answered, the next in line looks (the first BLPOP).
        r.turnEnded(t2, answered: true)
        #expect(woken.withLockedValue { $0 } == ["blpop", "blmove", "blpop"])
        // The first BLPOP took the element: answered, the one behind it looks.
        r.turnEnded(t1, answered: true)
        #expect(woken.withLockedValue { $0 } == ["blpop", "blmove", "blpop", "blpop2"])
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
