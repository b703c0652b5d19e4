import TernCheck
import TernConsensus
import Testing

@testable import TernSim

/// The node-level simulation: `NodeCore` (routing, forwarding, retries, key loading, group
/// commit) on several nodes per campus under loss, duplication, delay, crashes, pauses and
/// isolation, every history checked for linearizability.
@Suite("Node-level simulation")
struct NodeSimTests {
    func config(_ seed: UInt64, perCampus: Int = 2) -> NodeSimConfig {
        var c = NodeSimConfig()
        c.seed = seed
        c.nodesPerCampus = perCampus
        return c
    }

    /// Issue 10's availability target in simulated time: after a crash, pause or isolation of one
    /// node, the other nodes' clients are never 0.35 s without a successful operation (requests sent
    /// to the faulty node itself are left out: `NodeSimResult.survivorGapMillis`). One node per
    /// campus, as `tern dev`. With the route slack of 8 instances used until 2026-12-08, a write
    /// taken back from a silent proposer waited for 8 instances to run empty: seeds 4, 17 and 19
    /// went past it (395, 855 and 575 ms).
    @Test("One node per campus, under faults: the survivors' clients are never 0.35 s without a success")
    func survivorsGap() {
        var worst: (UInt64, UInt64) = (0, 0)
        for s in UInt64(1)...20 {
            var c = config(s, perCampus: 1)
            c.ops = 300
            let r = simulateNodes(c)
            #expect(r.violations.isEmpty, "seed \(s): \(r.violations.first.map { "\($0)" } ?? "")")
            if r.survivorGapMillis > worst.0 { worst = (r.survivorGapMillis, s) }
        }
        #expect(worst.0 <= 350, "seed \(worst.1): \(worst.0) ms")
        // The measure can fail: the old slack.
        var old = config(17, perCampus: 1)
        old.ops = 300
        old.routeSlack = 8
        #expect(simulateNodes(old).survivorGapMillis > 350)
    }

    @Test("Same seed, same history and trace")
    func replays() {
        let a = simulateNodes(config(7))
        let b = simulateNodes(config(7))
        #expect(a.traceHash == b.traceHash)
        #expect(a.history == b.history)
        #expect(a.violations.isEmpty)
    }

    @Test("No faults: every operation completes, most through a forward")
    func noFaults() {
        var c = config(3)
        c.loss = 0
        c.duplicate = 0
        c.fault = 0
        let r = simulateNodes(c)
        #expect(r.violations.isEmpty)
        #expect(r.history.allSatisfy { $0.ret != nil && $0.output != .unknown && $0.output != .failed })
        // With two nodes per campus a node is a replica of about half the keys: forwards happen.
        #expect(r.forwarded > r.history.count / 4)
    }

    @Test(
        "No faults, hot keys written through every node: writes forwarded into a replica are relayed to the key's proposer, and every client is answered"
    )
    func noFaultsRelayed() {
        // Before the relay (`NodeCore.relay`) each campus's replica proposed what its own campus's
        // nodes forwarded, and on a hot key the proposers duelled: clients past their 1 s timeout
        // in these seeds (2 per campus: 30, 42, 45, 55; 3 per campus: 5, 7, 28, 31, 50), 35 unanswered
        // operations in 400 seeds; 3 with the relay.
        var relayed = 0
        for (seed, perCampus) in [
            (30, 2), (42, 2), (45, 2), (55, 2), (5, 3), (7, 3), (28, 3), (31, 3), (50, 3),
        ] {
            var c = config(UInt64(seed), perCampus: perCampus)
            c.loss = 0
            c.duplicate = 0
            c.fault = 0
            let r = simulateNodes(c)
            #expect(r.violations.isEmpty, "seed \(seed): \(r.violations.first.map { "\($0)" } ?? "")")
            #expect(r.unanswered == 0, "seed \(seed) (\(perCampus) per campus): \(r.unanswered) unanswered")
            relayed += r.relayed
        }
        #expect(relayed > 0)
    }

    @Test("A batch of faulty seeds is clean, and the faults happen", arguments: [2, 3])
    func batch(perCampus: Int) {
        var crashes = 0
        var pauses = 0
        var isolations = 0
        for s in UInt64(1)...UInt64(perCampus == 2 ? 30 : 10) {
            let r = simulateNodes(config(s, perCampus: perCampus))
            #expect(r.violations.isEmpty, "seed \(s): \(r.violations.first.map { "\($0)" } ?? "")")
            #expect(r.uncheckedKeys.isEmpty)
            crashes += r.crashes
            pauses += r.pauses
            isolations += r.isolations
        }
        #expect(crashes > 0 && pauses > 0 && isolations > 0)
    }

    @Test(
        "One node per campus: hot keys written through every node are routed to one proposer, routes are taken back, the history stays clean"
    )
    func hotKeysRouted() {
        // Seed 2 (two pauses): 60 writes routed, 1 route taken back (`tern sim --nodes
        // --nodes-per-campus 1 --seed 2`); more seeds in scripts/test.
        let r = simulateNodes(config(2, perCampus: 1))
        #expect(r.violations.isEmpty, "\(r.violations.first.map { "\($0)" } ?? "")")
        #expect(r.routed > 0 && r.routesTakenBack > 0)
    }

    /// Each mutant of the request layer, with where it shows: the fresh-id mutant at the defaults;
    /// the relay's and the route's with a de-dup window of 2 (at 32 a second application is
    /// nearly always still recognised by `recent`; relay-unknown-as-retryable: 36 of 40 seeds,
    /// first seed 3; taken-back-unheld, one node per campus so every node routes: first seed 2).
    @Test(
        "Mutants of the request layer are caught within 20 seeds",
        arguments: [
            (NodeMutant.freshIDAfterSilentForward, 2, 32), (.relayUnknownAsRetryable, 2, 2),
            (.takenBackUnheld, 1, 2),
        ])
    func mutantCaught(mutant: NodeMutant, perCampus: Int, window: Int) {
        var caught: SimViolation?
        for s in UInt64(1)...UInt64(20) where caught == nil {
            var c = config(s, perCampus: perCampus)
            c.dedupWindow = window
            c.mutant = mutant
            caught = simulateNodes(c).violations.first
        }
        #expect(caught?.check == "linearizability")
        #expect(caught?.replay.contains("--node-mutant \(mutant.rawValue)") ?? false)
    }
}
