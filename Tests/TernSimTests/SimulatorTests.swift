import TernCheck
import TernConsensus
import TernSim
import Testing

@Suite struct SimulatorTests {
    @Test("Same seed, same history and trace, byte for byte")
    func deterministic() {
        var c = SimConfig(seed: 42)
        c.ops = 150
        let a = simulate(c)
        let b = simulate(c)
        #expect(HistoryFile.encode(a.history) == HistoryFile.encode(b.history))
        #expect(a.history == b.history)
        #expect(a.traceHash == b.traceHash)
        #expect(a.messages == b.messages)
        #expect(a.merges == b.merges && a.tornBytes == b.tornBytes && a.crashes == b.crashes)
        var other = c
        other.seed = 43
        #expect(simulate(other).traceHash != a.traceHash)
    }

    @Test("No faults: every operation completes and every check passes")
    func calm() {
        var c = SimConfig(seed: 7)
        c.ops = 200
        c.faults = .none
        c.deriveFaults = false
        let r = simulate(c)
        #expect(r.violations.isEmpty, "\(r.violations)")
        #expect(r.history.count == 200 + c.counterKeys)
        #expect(r.history.allSatisfy { $0.output != .unknown && $0.output != .failed })
    }

    @Test("A CI batch of faulty seeds is clean", arguments: [UInt64(1)...UInt64(40)])
    func campaign(seeds: ClosedRange<UInt64>) {
        var clean = 0
        for s in seeds {
            var c = SimConfig(seed: s)
            c.ops = 150
            let r = simulate(c)
            #expect(r.violations.isEmpty, "\(r.violations.map(\.description).joined(separator: "\n"))")
            if r.violations.isEmpty { clean += 1 }
        }
        #expect(clean == seeds.count)
    }

    @Test("Faults actually happen across a batch (a simulator without faults proves little)")
    func faultsHappen() {
        var crashes = 0
        var pauses = 0
        var partitions = 0
        var corruptions = 0
        var unknown = 0
        var merges = 0
        var mergesInterrupted = 0
        var tornBytes: UInt64 = 0
        for s in UInt64(1)...80 {
            var c = SimConfig(seed: s)
            c.ops = 150
            let r = simulate(c)
            crashes += r.crashes
            pauses += r.pauses
            partitions += r.partitions
            corruptions += r.corruptions
            unknown += r.history.filter { $0.output == .unknown }.count
            merges += r.merges
            mergesInterrupted += r.mergesInterrupted
            tornBytes += r.tornBytes
        }
        #expect(crashes > 0)
        #expect(pauses > 0)
        #expect(partitions > 0)
        #expect(corruptions > 0)
        #expect(unknown > 0)
        // The storage engine's own hard paths run under the simulator too.
        #expect(merges > 0)
        #expect(mergesInterrupted > 0)
        #expect(tornBytes > 0)
    }

    @Test("Every history goes through the linearizability checker: a stale read is shown shrunk")
    func linearizabilityCheckerIsWired() {
        var found: SimViolation?
        for s in UInt64(1)...30 {
            var c = SimConfig(seed: s)
            c.ops = 200
            c.paxos.mutant = .staleReads
            if let v = simulate(c).violations.first(where: { $0.check == "linearizability" }) {
                found = v
                break
            }
        }
        guard let v = found else {
            Issue.record("stale reads never reached the linearizability checker in 30 seeds")
            return
        }
        // The printed sub-history is the checker's witness: not linearizable on its own, and small.
        #expect(v.subHistory.allSatisfy { $0.key == v.key })
        #expect(v.subHistory.count <= 20)
        guard case .violation = checkLinearizable(v.subHistory) else {
            Issue.record("the printed witness is linearizable: \(v)")
            return
        }
    }

    @Test("Keys the checker cannot decide are counted, never passed silently")
    func undecidedKeysAreCounted() {
        var c = SimConfig(seed: 5)
        c.ops = 150
        c.checkStepsPerKeyMax = 20
        let r = simulate(c)
        #expect(r.violations.isEmpty)
        #expect(!r.uncheckedKeys.isEmpty)
        c.checkStepsPerKeyMax = SimConfig(seed: 5).checkStepsPerKeyMax
        #expect(simulate(c).uncheckedKeys.isEmpty)
    }

    @Test("Storm (a crash every ~50 ticks, each corrupting a record): damaged keys recover safely")
    func storm() {
        for s in UInt64(1)...25 {
            var c = SimConfig(seed: s)
            c.ops = 150
            c.faults = .storm
            let r = simulate(c)
            #expect(r.violations.isEmpty, "\(r.violations.map(\.description).joined(separator: "\n"))")
        }
    }

    /// The exactly-once hole (a write applied twice after its proposer was paused past the de-dup
    /// window): a window of 2 makes the window's edge a common case rather than a rare one.
    @Test("Pauses with a tiny de-dup window: every write applies at most once")
    func pausesTinyWindow() {
        var pauses = 0
        for s in UInt64(1)...40 {
            var c = SimConfig(seed: s)
            c.ops = 150
            c.faults.pause = 0.004
            c.paxos.dedupWindow = 2
            let r = simulate(c)
            pauses += r.pauses
            #expect(r.violations.isEmpty, "\(r.violations.map(\.description).joined(separator: "\n"))")
        }
        #expect(pauses > 20, "the pause fault must actually fire")
    }

    @Test("Mutant forgetfulRetry (re-propose what the window forgot) is caught under pauses")
    func forgetfulRetryCaught() {
        let caught = firstViolation(seeds: 40) { c in
            c.faults.pause = 0.004
            c.paxos.dedupWindow = 2
            c.paxos.mutant = .forgetfulRetry
        }
        #expect(caught != nil, "forgetfulRetry survived 40 seeds")
        #expect(caught?.replay.contains("--mutant forgetfulRetry") ?? false)
        #expect(
            caught.map { $0.replay.contains("--pause 0.004") && $0.replay.contains("--dedup-window 2") }
                ?? false)
    }

    /// The proof that the checks can fail: each mutant must be caught within a bounded number of seeds.
    @Test(
        "Every mutant is caught within 60 seeds",
        arguments: [
            (Mutant.replyBeforePersist, false), (.ignoreAcceptedValue, false), (.damagedAnswersFresh, true),
            (.staleReads, false), (.fastAcceptOverwrites, false), (.commitAnyBallot, false),
        ])
    func mutantCaught(mutant: Mutant, storm: Bool) {
        let caught = firstViolation(seeds: 60) { c in
            if storm { c.faults = .storm }
            c.paxos.mutant = mutant
        }
        #expect(caught != nil, "mutant \(mutant) survived 60 seeds")
        #expect(caught?.replay.contains("--mutant \(mutant.rawValue)") ?? false)
    }

    /// Every replica of a fresh key opening it with round 0 needs a lost Chosen to show (docs/PROTOCOL.md
    /// §5, "Why one owner per key"): under loss 0.3, seed 22 is the first of the campaign's.
    @Test("Mutant fastAcceptAnyNode (round 0 at every replica) is caught under heavy loss")
    func fastAcceptAnyNodeCaught() {
        let caught = firstViolation(seeds: 60) { c in
            c.faults.loss = 0.3
            c.paxos.mutant = .fastAcceptAnyNode
        }
        #expect(caught != nil, "fastAcceptAnyNode survived 60 seeds")
        #expect(caught?.replay.contains("--mutant fastAcceptAnyNode") ?? false)
    }

    /// The first violation over seeds 1...`seeds` (200 ops each, `configure` applied), if any.
    func firstViolation(seeds: UInt64, _ configure: (inout SimConfig) -> Void) -> SimViolation? {
        for s in UInt64(1)...seeds {
            var c = SimConfig(seed: s)
            c.ops = 200
            configure(&c)
            if let v = simulate(c).violations.first { return v }
        }
        return nil
    }
}

@Suite struct ReplayTests {
    @Test("The printed replay command carries every non-default knob")
    func replayCommand() {
        var c = SimConfig(seed: 9)
        c.ops = 300
        c.faults = .storm
        c.paxos.mutant = .staleReads
        #expect(
            c.replayCommand
                == "swift run -c release tern sim --seed 9 --ops 300 --mutant staleReads --crash 0.02 --corrupt 1.0"
        )
    }
}

@Suite struct RegressionSeeds {
    /// With whole-tick times, the write's return and the stale read's call fell on the same tick,
    /// which the checker must treat as concurrent: only the partial counter check saw the fault.
    @Test("A stale read invoked in the tick its write returned is a linearizability violation")
    func staleReadInTheSameTick() {
        var c = SimConfig(seed: 8)
        c.ops = 200
        c.paxos.mutant = .staleReads
        c.seqOps = 0  // recorded before the seq workload, which changes every seed's schedule
        c.faults.pause = 0  // and before the pause fault
        let r = simulate(c)
        #expect(r.violations.first?.check == "linearizability", "\(r.violations)")
    }

    /// Seeds that once failed; each names the bug it found.
    @Test(
        "Storm seeds that found 'a damaged key overwrote its corrupt record'",
        arguments: [UInt64(20273), 21175])
    func damagedKeyWritesNothing(seed: UInt64) {
        var c = SimConfig(seed: seed)
        c.ops = 300
        c.faults = .storm
        c.seqOps = 0  // recorded before the seq workload, which changes every seed's schedule
        c.faults.pause = 0  // and before the pause fault
        let r = simulate(c)
        #expect(r.violations.isEmpty, "\(r.violations.map(\.description).joined(separator: "\n"))")
    }
}
