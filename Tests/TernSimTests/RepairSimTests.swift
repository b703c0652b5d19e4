import TernConsensus
import TernRepair
import TernSim
import Testing

/// The repair workload (RepairWorkload.swift): the anti-entropy scanners on the real nodes, with
/// disks wiped and records dropped at crashes, and every key's replicas compared after healing.
@Suite struct RepairSimTests {
    /// The storm mix of the CI campaign (`tern sim --repair --ops 300 --crash 0.02 --down-ticks 10
    /// --loss 0.2 --partition 0.02 --wipe 0.5 --drop 0.3`): frequent crashes, most of which wipe
    /// the disk or drop a record, short down times, heavy loss and partitions.
    static func storm(_ seed: UInt64, ops: Int = 300) -> SimConfig {
        var c = SimConfig(seed: seed)
        c.ops = ops
        c.repair = true
        c.seqOps = 0
        c.faults.crash = 0.02
        c.faults.downTicksMax = 10
        c.faults.loss = 0.2
        c.faults.partition = 0.02
        c.faults.wipe = 0.5
        c.faults.drop = 0.3
        return c
    }

    /// The moderate mix (`--crash 0.005 --down-ticks 30 --wipe 0.5 --drop 0.3`): rebuilds finish
    /// while the clients still run, and the rebuilt node votes again under load.
    static func moderate(_ seed: UInt64, ops: Int = 300) -> SimConfig {
        var c = SimConfig(seed: seed)
        c.ops = ops
        c.repair = true
        c.seqOps = 0
        c.faults.crash = 0.005
        c.faults.downTicksMax = 30
        c.faults.wipe = 0.5
        c.faults.drop = 0.3
        return c
    }

    @Test("Seeds of the repair workload pass, and repairs of every cause happen")
    func cleanSeedsRepairEveryCause() {
        var total = RepairStats()
        // Storm seeds 1–4, storm seed 20 (damaged records found by the scan), storm seed 22 (a
        // blank replica marked missing), moderate seed 2 (a rebuild finished under load). Round 0
        // on fresh keys (2026-12-07) changed every seed's schedule: until then storm seed 70 and
        // moderate seed 1 were those (and moderate seed 8 before recovery took one round trip);
        // the Commit message (2026-12-08) moved the damaged record from seed 4 to seed 20.
        let runs = [1, 2, 3, 4, 20, 22].map { Self.storm($0) } + [Self.moderate(2)]
        for c in runs {
            let r = simulate(c)
            #expect(r.violations.isEmpty, "seed \(c.seed): \(r.violations.map(\.description))")
            #expect(r.repair.keysCompared >= 7, "seed \(c.seed): every key compared across the replicas")
            #expect(r.repair.alarms == 0 && r.repair.copies == 0)
            total.behind += r.repair.behind
            total.taught += r.repair.taught
            total.missingMarked += r.repair.missingMarked
            total.damaged += r.repair.damaged
            total.rebuildLoads += r.repair.rebuildLoads
            total.installed += r.repair.installed
            total.wipes += r.repair.wipes
            total.drops += r.repair.drops
            total.rebuildsDone += r.repair.rebuildsDone
            total.rebuildsDoneUnderLoad += r.repair.rebuildsDoneUnderLoad
        }
        #expect(total.wipes > 0 && total.drops > 0)
        #expect(total.behind > 0, "a replica behind learned")
        #expect(total.taught > 0, "a peer behind was taught")
        #expect(total.missingMarked > 0, "a blank replica was marked missing")
        #expect(total.damaged > 0, "the scan found a damaged record")
        // A learner-only node copies the keys its peers hold (bulk), or loads (recovers) one by one
        // those already in its memory.
        #expect(total.rebuildLoads + total.installed > 0, "a learner-only node rebuilt keys its peers hold")
        #expect(
            total.rebuildsDone > 0 && total.rebuildsDoneUnderLoad > 0, "rebuilds finished, one under load")
    }

    @Test("Same seed, same trace")
    func replay() {
        let a = simulate(Self.storm(3))
        let b = simulate(Self.storm(3))
        #expect(a.traceHash == b.traceHash)
        #expect(a.repair == b.repair)
        #expect(a.repair.passes > 0)
        #expect(simulate(Self.storm(4)).traceHash != a.traceHash)
    }

    /// Caught in 82 of the first 200 storm seeds × 300 ops (release; first: seed 2).
    @Test("A learner-only node that votes anyway is caught within 10 seeds")
    func learnerVotesCaught() {
        #expect(
            Self.firstCaught(seeds: 1...10) {
                var c = Self.storm($0)
                c.paxos.mutant = .learnerVotes
                return c
            } != nil, "learner-votes survived 10 seeds")
    }

    /// Caught in 27 of the first 200 seeds of the storm mix with 40 register keys and stalled
    /// frames (`--keys 40 --stall 0.02`; release, first: seed 1): a copied key that promises
    /// nothing forgets the promise its node gave before it lost its disk.
    @Test("A bulk copy with no fence is caught within 5 seeds (copy-unfenced)")
    func copyUnfencedCaught() {
        #expect(
            Self.firstCaught(seeds: 1...5) {
                var c = Self.storm($0)
                c.registerKeys = 40
                c.faults.stall = 0.02
                c.repairMutant = .copyUnfenced
                return c
            } != nil, "copy-unfenced survived 5 seeds")
    }

    /// The first seed of `seeds` whose run of `config(seed)` has a violation (a mutant caught).
    static func firstCaught(seeds: ClosedRange<UInt64>, _ config: (UInt64) -> SimConfig) -> UInt64? {
        seeds.first { !simulate(config($0)).violations.isEmpty }
    }

    /// The storm mix with disks restored from older backups instead of wiped (`--wipe 0 --drop 0
    /// --restore 0.8`).
    static func restoring(_ seed: UInt64) -> SimConfig {
        var c = storm(seed)
        c.faults.wipe = 0
        c.faults.drop = 0
        c.faults.restore = 0.8
        return c
    }

    @Test("A disk restored from an older backup is found stale by the incarnation check and rebuilt")
    func restoredBackupsAreFoundStale() {
        var restores = 0
        var stale = 0
        for s: UInt64 in 1...3 {
            let r = simulate(Self.restoring(s))
            #expect(r.violations.isEmpty, "seed \(s): \(r.violations.map(\.description))")
            restores += r.repair.restores
            stale += r.repair.staleDetected
        }
        #expect(restores > 0, "no backup was restored")
        #expect(stale > 0, "no restored directory was found stale")
    }

    /// Caught in 9 of the first 20 restoring seeds × 300 ops (debug; first: seed 4, two values
    /// chosen at one instance).
    @Test("A restarted node that skips the incarnation check is caught within 20 restoring seeds")
    func skipIncarnationCheckCaught() {
        #expect(
            Self.firstCaught(seeds: 1...20) {
                var c = Self.restoring($0)
                c.repairMutant = .skipIncarnationCheck
                return c
            } != nil, "skip-incarnation-check survived 20 seeds")
    }

    /// Caught in 158 of the first 200 storm seeds × 300 ops (release; first: seed 1).
    @Test("A scanner that copies a peer's record bytes is caught within 10 seeds")
    func copyBytesCaught() {
        #expect(
            Self.firstCaught(seeds: 1...10) {
                var c = Self.storm($0)
                c.repairMutant = .copyBytes
                return c
            } != nil, "copy-bytes survived 10 seeds")
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
        let sim = acceptedOnlyScenario(mutant: .none)
        #expect(sim.currentViolations.isEmpty, "\(sim.currentViolations.map(\.description))")
    }

    /// The bulk rebuild's mutant that copies chosen values but not the peers' open slots loses the
    /// value B holds only as a slot: A and C then choose a second value at the same instance.
    @Test("A bulk copy without the peers' open slots is caught (copy-without-slots)")
    func copyWithoutSlotsCaught() {
        let sim = acceptedOnlyScenario(mutant: .copyWithoutSlots)
        #expect(!sim.currentViolations.isEmpty, "the mutant survived the scenario")
    }

    func acceptedOnlyScenario(mutant: RepairMutant) -> Simulation {
        var c = SimConfig(seed: 1)
        c.scenario = true
        c.repair = true
        c.faults = .none
        c.deriveFaults = false
        c.repairMutant = mutant
        let sim = Simulation(c)
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
        let second = sim.await(sim.write("k", .incr(1), at: 2))
        if mutant == .none { #expect(second == .done(.number(2))) }
        return sim
    }
}

extension RepairScenarioTests {
    @Test("Restarted in the middle of a rebuild, a node is learner-only again; rebuilt, it drops the marker")
    func markerSurvivesRestart() throws {
        let sim = cluster()
        #expect(sim.await(sim.write("k", .put(Array("v".utf8)), at: 0)) == .done(.ok))
        sim.wipe(node: 2, downTicks: 5)
        // Cut off, its rebuild cannot finish (no complete pass).
        sim.isolate(2)
        sim.run(ticks: 200)
        #expect(sim.isLearnerOnly(2))
        sim.crash(node: 2, downTicks: 5)
        sim.run(ticks: 10)
        #expect(sim.isLearnerOnly(2), "the durable marker makes the restart learner-only again")
        sim.isolate(nil)
        var steps = 0
        while sim.isLearnerOnly(2) && steps < 500 {
            sim.run(ticks: 10)
            steps += 1
        }
        #expect(!sim.isLearnerOnly(2))
        #expect(try sim.storage(at: 2).load(ReplicaNode.rebuildKey) == .absent)
        // Copied in bulk: on its disk, not necessarily in memory; read, it loads whole.
        guard case .state(let rec) = try sim.storage(at: 2).load(ReplicaNode.recordKey(Array("k".utf8)))
        else {
            Issue.record("k was not rebuilt on C's disk")
            return
        }
        #expect(PaxosCodec.decode(rec)?.chosen == 1)
        #expect(sim.await(sim.read("k", at: 2), ticksMax: 1_000) == .value(Array("v".utf8)))
        #expect(sim.inspect("k", at: 2)?.damaged == false)
        #expect(sim.currentViolations.isEmpty)
    }
}

/// A liveness bug this workload found, and its fix.
@Suite struct RepairLivenessTests {
    /// B and C choose k while A is cut off, so A never holds k; then C's disk is wiped. The scan finds A blank where B has k chosen and marks A's
    /// replica missing (damaged: its record might have been lost with promises), while C rebuilds
    /// learner-only (damaged too). Each of the two damaged replicas needed a fresh ballot promised
    /// by *both* its peers, and each refused to promise while damaged: k was stuck for good,
    /// although only one disk was lost and A and B together are a majority that lost nothing.
    /// Seeds of the workload that hit it: moderate mix with the seq workload seed 8 (key
    /// "\0seq:1"), storm mix with the seq workload seed 70 (r1). The fix: once C asks for full
    /// lists (it is rebuilding), A trusts its blank memory again (`clearSuspicions`), and no key
    /// is newly marked missing while one of its replicas rebuilds.
    @Test("A key marked missing on one replica while another rebuilds recovers (it was stuck for good)")
    func missingWhileRebuildingRecovers() {
        var c = SimConfig(seed: 1)
        c.scenario = true
        c.repair = true
        c.faults = .none
        c.deriveFaults = false
        let sim = Simulation(c)
        sim.isolate(0)
        #expect(sim.await(sim.write("k", .put(Array("v".utf8)), at: 1)) == .done(.ok))
        sim.wipe(node: 2, downTicks: 400)
        sim.isolate(nil)
        // While C is down, the scans of A and B find A blank on k: marked missing.
        sim.run(ticks: 300)
        #expect(sim.inspect("k", at: 0)?.damaged == true)
        #expect(sim.isLearnerOnly(2) == false)
        sim.run(ticks: 3_000)
        #expect(!sim.isLearnerOnly(2), "C finished its rebuild")
        #expect(sim.inspect("k", at: 0)?.damaged == false, "A trusts its memory again")
        #expect(sim.await(sim.read("k", at: 1), ticksMax: 1_000) == .value(Array("v".utf8)))
        #expect(sim.await(sim.read("k", at: 0), ticksMax: 1_000) == .value(Array("v".utf8)))
    }
}

/// A directory restored from an older backup, driven by hand (docs/REPAIR.md, "the incarnation
/// check").
@Suite struct RestoredBackupScenarioTests {
    func cluster(mutant: RepairMutant, bumpTicks: UInt64 = SimConfig(seed: 1).incarnationBumpTicks)
        -> Simulation
    {
        var c = SimConfig(seed: 1)
        c.scenario = true
        c.repair = true
        c.incarnationCheck = true
        c.incarnationBumpTicks = bumpTicks
        c.repairMutant = mutant
        c.faults = .none
        c.deriveFaults = false
        return Simulation(c)
    }

    /// C is backed up, restarts (A and B acknowledge that start), then accepts "x" at instance 2
    /// with A while B is cut off, so "x" is chosen by A and C alone. C's disk is then replaced by
    /// the backup and A is cut off: B and the restored C must not choose another value at
    /// instance 2. With the check, C is told by B that its directory is stale and rebuilds; the
    /// mutant votes with the backup's promises and they choose "y" over "x".
    ///
    /// With `startOnceUnheard`, the restored C first starts cut off from both (its hellos lost),
    /// crashes again before any node answered, and only then meets B: its directory now
    /// remembers a start with the number B recorded for the lost disk's start (seed 33 of the
    /// restoring campaign, docs/REPAIR.md). It must still be found stale.
    func run(_ mutant: RepairMutant, startOnceUnheard: Bool = false) -> (Simulation, ClientOutcome?) {
        let sim = cluster(mutant: mutant)
        #expect(sim.await(sim.write("k", .put(Array("w".utf8)), at: 0)) == .done(.ok))
        sim.run(ticks: 20)
        sim.crashAndBackUp(node: 2, downTicks: 5)
        sim.run(ticks: 200)
        sim.isolate(1)
        #expect(sim.await(sim.write("k", .put(Array("x".utf8)), at: 0)) == .done(.ok))
        #expect(sim.inspect("k", at: 1)?.state.chosen == 1, "B did not hear of x")
        sim.crashAndRestoreBackup(node: 2, downTicks: 5)
        if startOnceUnheard {
            sim.isolate(2)
            sim.run(ticks: 10)
            sim.crash(node: 2, downTicks: 5)
        }
        sim.isolate(0)
        sim.run(ticks: 10)
        let y = sim.await(sim.write("k", .put(Array("y".utf8)), at: 1), ticksMax: 1500)
        return (sim, y)
    }

    @Test("With the incarnation check, a restored node is found stale and no second value is chosen")
    func restoredNodeIsFoundStale() {
        let (sim, y) = run(.none)
        #expect(sim.isLearnerOnly(2), "the restored node should rebuild")
        #expect(y != .done(.ok), "B and the restored C chose y over x")
        #expect(sim.currentViolations.isEmpty, "\(sim.currentViolations.map(\.description))")
        // A returns: C's rebuild finishes, and every replica holds x at instance 2.
        sim.isolate(nil)
        var steps = 0
        while sim.isLearnerOnly(2) && steps < 2_000 {
            sim.run(ticks: 10)
            steps += 1
        }
        #expect(!sim.isLearnerOnly(2), "the rebuild did not finish")
        sim.run(ticks: 200)
        #expect(sim.currentViolations.isEmpty, "\(sim.currentViolations.map(\.description))")
    }

    /// A hot backup: C's disk copied while it runs (no restart after it). C then bumps its
    /// incarnation while running (every `incarnationBumpTicks` once confirmed) and the peers record
    /// the bump; "x" is chosen by A and C alone; C's disk is replaced by the copy. Its directory
    /// remembers the incarnation of the copy, below the bump the peers hold: stale. Without the
    /// bump (`incarnationBumpTicks = 0`), nothing tells, and B and the restored C choose "y".
    func hotBackup(bumpTicks: UInt64) -> (Simulation, ClientOutcome?) {
        let sim = cluster(mutant: .none, bumpTicks: bumpTicks)
        #expect(sim.await(sim.write("k", .put(Array("w".utf8)), at: 0)) == .done(.ok))
        sim.run(ticks: 20)
        sim.backUpWhileRunning(node: 2)
        sim.run(ticks: 400)
        sim.isolate(1)
        #expect(sim.await(sim.write("k", .put(Array("x".utf8)), at: 0)) == .done(.ok))
        sim.crashAndRestoreBackup(node: 2, downTicks: 5)
        sim.isolate(0)
        sim.run(ticks: 10)
        let y = sim.await(sim.write("k", .put(Array("y".utf8)), at: 1), ticksMax: 1500)
        return (sim, y)
    }

    @Test("A hot backup restored after the running node bumped its incarnation is found stale")
    func hotBackupAfterABumpIsStale() {
        let (sim, y) = hotBackup(bumpTicks: 150)
        #expect(sim.isLearnerOnly(2), "the restored node should rebuild")
        #expect(y != .done(.ok), "B and the restored C chose y over x")
        sim.isolate(nil)
        sim.run(ticks: 500)
        #expect(sim.currentViolations.isEmpty, "\(sim.currentViolations.map(\.description))")
    }

    @Test(
        "Without the bump, the same hot backup passes the check and two values are chosen (why the bump exists)"
    )
    func hotBackupWithoutBumpIsCaught() {
        let (sim, _) = hotBackup(bumpTicks: 0)
        sim.isolate(nil)
        sim.run(ticks: 500)
        #expect(!sim.currentViolations.isEmpty, "the hot backup was not harmful: the scenario tests nothing")
    }

    @Test("A restored node that started once unheard and crashed is still found stale at its next start")
    func restoredNodeStartedOnceUnheardIsFoundStale() {
        let (sim, y) = run(.none, startOnceUnheard: true)
        #expect(sim.isLearnerOnly(2), "the restored node should rebuild")
        #expect(y != .done(.ok), "B and the restored C chose y over x")
        sim.isolate(nil)
        sim.run(ticks: 500)
        #expect(sim.currentViolations.isEmpty, "\(sim.currentViolations.map(\.description))")
    }

    @Test(
        "The skip-incarnation-check mutant votes with the backup's promises: two values at one instance, caught"
    )
    func skippingTheCheckIsCaught() {
        let (sim, _) = run(.skipIncarnationCheck)
        sim.isolate(nil)
        sim.run(ticks: 500)
        #expect(!sim.currentViolations.isEmpty, "the mutant was not caught")
    }
}
