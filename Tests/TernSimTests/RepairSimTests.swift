import TernConsensus
import TernRepair
import TernSim
import Testing

/// The repair workload (RepairWorkload.swift): the anti-entropy scanners on the real nodes, with
/// disks wiped and records dropped at crashes, and every key's replicas compared after healing.
@Suite struct RepairSimTests {
    /// The workload's fault mix: frequent crashes, half of them wiping the disk or dropping a
    /// record, short down times.
    static func config(_ seed: UInt64, ops: Int = 200) -> SimConfig {
        var c = SimConfig(seed: seed)
        c.ops = ops
        c.repair = true
        c.seqOps = 0
        c.faults.crash = 0.01
        c.faults.wipe = 0.2
        c.faults.drop = 0.2
        c.faults.downTicksMax = 50
        return c
    }

    @Test("Seeds of the repair workload pass, and repairs of every cause happen")
    func cleanSeedsRepairEveryCause() {
        var total = RepairStats()
        for s: UInt64 in 1...6 {
            let r = simulate(Self.config(s))
            #expect(r.violations.isEmpty, "seed \(s): \(r.violations.map(\.description))")
            #expect(r.repair.keysCompared > 0)
            total.behind += r.repair.behind
            total.taught += r.repair.taught
            total.missing += r.repair.missing
            total.peerMissing += r.repair.peerMissing
            total.damaged += r.repair.damaged
            total.rebuildLoads += r.repair.rebuildLoads
            total.wipes += r.repair.wipes
            total.drops += r.repair.drops
            total.rebuildsDone += r.repair.rebuildsDone
            total.completePasses += r.repair.completePasses
            #expect(r.repair.alarms == 0)
            #expect(r.repair.copies == 0)
        }
        #expect(total.wipes > 0 && total.drops > 0 && total.rebuildsDone > 0)
        #expect(total.behind > 0)
        #expect(total.taught > 0)
        #expect(total.rebuildLoads > 0)
        #expect(total.damaged > 0)
        #expect(total.completePasses > 0)
    }

    @Test("Same seed, same trace")
    func replay() {
        let a = simulate(Self.config(3))
        let b = simulate(Self.config(3))
        #expect(a.traceHash == b.traceHash)
        #expect(a.repair == b.repair)
        #expect(a.repair.passes > 0)
    }

    @Test("A learner-only node that votes anyway is caught", .timeLimit(.minutes(3)))
    func learnerVotesCaught() {
        var caughtAt: UInt64?
        for s: UInt64 in 1...30 {
            var c = Self.config(s)
            c.paxos.mutant = .learnerVotes
            if !simulate(c).violations.isEmpty {
                caughtAt = s
                break
            }
        }
        #expect(caughtAt != nil, "learner-votes survived 30 seeds")
    }

    @Test("A scanner that copies a peer's record bytes is caught", .timeLimit(.minutes(3)))
    func copyBytesCaught() {
        var caughtAt: UInt64?
        for s: UInt64 in 1...30 {
            var c = Self.config(s)
            c.repairMutant = .copyBytes
            if !simulate(c).violations.isEmpty {
                caughtAt = s
                break
            }
        }
        #expect(caughtAt != nil, "copy-bytes survived 30 seeds")
    }
}

/// The learner-only rebuild, driven by hand.
@Suite struct RepairScenarioTests {
    func cluster() -> Simulation {
        var c = SimConfig(seed: 1)
        c.scenario = true
        c.repair = true
        c.faults = .none
        c.deriveFaults = false
        return Simulation(c)
    }

    /// A's disk is wiped right after a value was chosen at A and B, before anyone but A learned it:
    /// B holds the value only as an accepted slot (chosen 0 there). The rebuild must still recover
    /// that key at A (under a fresh ballot both peers promise, which reports B's slot); otherwise A
    /// leaves learner-only with no memory of its vote, and A and C choose another value at the same
    /// instance.
    @Test("A wiped node rebuilds keys that peers hold only as an accepted slot")
    func rebuildCoversAcceptedOnlyKeys() {
        let sim = cluster()
        // C knows nothing of k.
        sim.isolate(2)
        let first = sim.write("k", .incr(1), at: 0)
        var steps = 0
        while sim.inspect("k", at: 1)?.state.accepted == nil && steps < 200 {
            sim.run(ticks: 1)
            steps += 1
        }
        #expect(sim.inspect("k", at: 1)?.state.accepted != nil)
        // B's Accepted is on its way to A; A's Chosen will not get out.
        sim.isolate(0)
        #expect(sim.await(first) == .done(.number(1)))
        sim.wipe(node: 0, downTicks: 5)
        sim.isolate(nil)
        sim.run(ticks: 10)
        #expect(sim.isLearnerOnly(0))
        steps = 0
        while sim.isLearnerOnly(0) && steps < 5_000 {
            sim.run(ticks: 10)
            steps += 1
        }
        #expect(!sim.isLearnerOnly(0), "the rebuild did not finish")
        // Now B is cut off: A and C alone must not choose a second value at instance 1.
        sim.isolate(1)
        #expect(sim.await(sim.write("k", .incr(1), at: 2)) == .done(.number(2)))
        #expect(sim.currentViolations.isEmpty, "\(sim.currentViolations.map(\.description))")
    }
}
