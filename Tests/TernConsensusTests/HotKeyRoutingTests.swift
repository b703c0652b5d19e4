import TernCore
import Testing

@testable import TernConsensus

/// Routing a hot key to one proposer (`NodeCore.route`, docs/PROTOCOL.md "Routing a hot key to one
/// proposer"), on the hand-driven cluster of `NodeCoreTests` (nodes 1–3 replicate every key, in
/// that order).
@Suite("HotKeyRouting")
struct HotKeyRoutingTests {
    typealias Cluster = NodeCoreTests.Cluster
    let key = Array("hot".utf8)

    func value(_ c: Cluster, at node: Int) -> [UInt8]? {
        c.cores[node].replica.inspect(key)?.state.value.bytes
    }
    func chosen(_ c: Cluster, at node: Int) -> UInt64 {
        c.cores[node].replica.inspect(key)?.state.chosen ?? 0
    }

    /// Node 1 writes the key once, so nodes 2 and 3 have seen it propose.
    func warm(_ c: Cluster) {
        _ = c.cores[0].request(key: key, .write(.incr(1)), now: c.now)
        c.settle()
    }

    /// Ticks `node` `n` times, 10 ms apart, carrying out everything after each tick.
    func tick(_ c: Cluster, _ node: Int, _ n: Int, dropping drop: (Int, Int) -> Bool = { _, _ in false }) {
        for _ in 0..<n {
            c.now += 10_000_000
            c.cores[node].tick(now: c.now)
            c.settle(dropping: drop)
        }
    }

    @Test("A write of a key that a replica earlier in the order is proposing on goes to that proposer")
    func routesToTheProposer() {
        let c = Cluster()
        warm(c)
        let w = c.cores[1].request(key: key, .write(.incr(1)), now: c.now)
        c.settle()
        #expect(c.cores[1].counters.routed == 1)
        #expect(c.cores[0].counters.forwardedIn == 1)
        #expect(c.replies[1]?.first { $0.0 == w }?.1 == .done(.number(2)))
        // Node 2 proposed nothing itself: one instance each for the two writes, both node 1's.
        #expect(c.cores[1].replica.stats.instancesProposed == 0)
        #expect(chosen(c, at: 2) == 2)
        #expect(value(c, at: 2) == Array("2".utf8))
    }

    @Test("The replica first in the order never routes; a later one routes to the earliest proposing")
    func firstInOrderProposes() {
        let c = Cluster()
        // Node 2 proposes first: node 1 (earlier) keeps proposing itself, node 3 routes to node 2.
        _ = c.cores[1].request(key: key, .write(.incr(1)), now: c.now)
        c.settle()
        _ = c.cores[0].request(key: key, .write(.incr(1)), now: c.now)
        c.settle()
        #expect(c.cores[0].counters.routed == 0)
        // Now both 1 and 2 proposed lately: node 3 goes to node 1, the first of them.
        let w = c.cores[2].request(key: key, .write(.incr(1)), now: c.now)
        c.settle()
        #expect(c.cores[2].counters.routed == 1)
        #expect(c.cores[0].counters.forwardedIn == 1)
        #expect(c.replies[2]?.first { $0.0 == w }?.1 == .done(.number(3)))
    }

    @Test("Past the window (routeWindowTicks) a replica proposes itself again")
    func windowEnds() {
        let c = Cluster()
        warm(c)
        // Seen at tick 0: still routed at tick 20 (within the window), not at 21.
        tick(c, 1, Int(NodeCoreOptions().routeWindowTicks))
        #expect(c.cores[1].replica.proposalHint(HashedKey(key), within: 20)?.proposing == [NodeID(1)])
        tick(c, 1, 1)
        let w = c.cores[1].request(key: key, .write(.incr(1)), now: c.now)
        c.settle()
        #expect(c.cores[1].counters.routed == 0)
        #expect(c.cores[1].replica.stats.instancesProposed == 1)
        #expect(c.replies[1]?.first { $0.0 == w }?.1 == .done(.number(2)))
    }

    @Test(
        "A route that went silent (forward lost) is taken back and applied once, above the instances the proposer could carry it at"
    )
    func silentRouteTakenBack() {
        let c = Cluster()
        warm(c)
        let w = c.cores[1].request(key: key, .write(.incr(1)), now: c.now)
        #expect(c.cores[1].counters.routed == 1)
        c.settle(dropping: { from, to in from == 1 && to == 0 })  // the forward is lost
        #expect(c.cores[0].counters.forwardedIn == 0)
        // Past the forward timeout (300 ms): taken back, held up to instance 1 + routeSlack.
        tick(c, 1, 40)
        #expect(c.cores[1].counters.routesTakenBack == 1)
        #expect(c.replies[1]?.first { $0.0 == w }?.1 == .done(.number(2)))
        let last = 1 + NodeCoreOptions().routeSlack
        #expect(chosen(c, at: 1) == last + 1)
        #expect(value(c, at: 1) == Array("2".utf8))
        #expect(value(c, at: 2) == Array("2".utf8))
    }

    @Test(
        "A route whose proposer applied the write but whose answer was lost: taken back, answered its first result, not applied twice"
    )
    func lostAnswerNotAppliedTwice() {
        let c = Cluster()
        warm(c)
        let w = c.cores[1].request(key: key, .write(.incr(1)), now: c.now)
        // Nothing from node 1 reaches node 2: node 1 applies the write with node 3, its answer is lost.
        c.settle(dropping: { from, to in from == 0 && to == 1 })
        #expect(c.cores[0].counters.forwardedIn == 1)
        #expect(chosen(c, at: 2) == 2)
        tick(c, 1, 40)
        #expect(c.cores[1].counters.routesTakenBack == 1)
        #expect(c.replies[1]?.first { $0.0 == w }?.1 == .done(.number(2)))
        // Applied once: the key is at 2 everywhere that learned it, and nothing was chosen above 2.
        #expect(value(c, at: 1) == Array("2".utf8))
        #expect(value(c, at: 2) == Array("2".utf8))
        #expect(chosen(c, at: 1) == 2)
    }

    @Test(
        "A route whose proposer applied the write, then more writes than the de-dup window remembers: taken back, it ends 'unknown', never applied twice"
    )
    func takenBackAfterTheWindowForgot() {
        var options = NodeCoreOptions()
        options.paxos.dedupWindow = 1
        let c = Cluster(options: options)
        warm(c)
        let w = c.cores[1].request(key: key, .write(.incr(1)), now: c.now)
        // Node 1 applies it with node 3 (its answer to node 2 is lost), then three writes of its own.
        c.settle(dropping: { from, to in from == 0 && to == 1 })
        for _ in 0..<3 {
            _ = c.cores[0].request(key: key, .write(.incr(1)), now: c.now)
            c.settle(dropping: { from, to in from == 0 && to == 1 })
        }
        #expect(c.cores[0].replica.inspect(key)?.state.value.bytes == Array("5".utf8))
        // Taken back: `recent` no longer lists it and `floor` is past the route's first instance, so
        // its fate cannot be told (proposed as a fresh write it would make the counter 6): answered
        // at once, not at the request deadline.
        tick(c, 1, 40)
        #expect(c.cores[1].counters.routesTakenBack == 1)
        guard case .unknown = c.replies[1]?.first(where: { $0.0 == w })?.1 else {
            Issue.record("answered \(String(describing: c.replies[1]?.first { $0.0 == w }))")
            return
        }
        _ = c.cores[2].request(key: key, .read, now: c.now)
        c.settle()
        #expect(c.replies[2]?.last?.1 == .value(Array("5".utf8)))
    }

    @Test("A routed write whose last instance is already decided is answered 'not applied' at once")
    func boundPassed() {
        let r = ReplicaNode(
            id: NodeID(1), placement: FixedPlacement([NodeID(1), NodeID(2), NodeID(3)]), epoch: 1,
            config: PaxosConfig(), seed: 1)
        r.install(key, .absent)
        r.propose(key: key, .incr(1), id: RequestID(client: 9, counter: 1), tag: 7, bound: .carryUntil(0))
        let out = r.finishFlush(r.beginFlush())
        #expect(out.replies.contains { $0.tag == 7 && $0.outcome == .retryable })
        #expect(r.inspect(key)?.queuedWrites == 0)
    }
}
