public import TernConsensus
public import TernCore
public import TernRepair
public import TernSeq

/// Fault probabilities of one simulation; `derived(from:)` draws them from the seed.
public struct FaultConfig: Sendable, Hashable {
    /// Per message.
    public var loss = 0.02
    public var duplicate = 0.01
    /// Network delay is uniform in 1...delayTicksMax (so messages reorder).
    public var delayTicksMax: UInt64 = 4
    /// Per tick: a node crashes (at most one down at a time: the fault model's guard).
    public var crash = 0.002
    public var downTicksMax: UInt64 = 200
    /// At a crash: a random prefix of the bytes written since the last fsync survives (a torn
    /// write, which the engine's recovery must cut back to whole batches), else all are lost.
    public var torn = 0.5
    /// At a crash: the node was merging its data files; the merge stops at a seeded step.
    public var crashInMerge = 0.3
    /// At a crash: one durable key record is corrupted.
    public var corrupt = 0.3
    /// Per tick: a partition starts (isolation, one-way cut or flapping link).
    public var partition = 0.002
    public var partitionTicksMax: UInt64 = 300
    /// Per tick: a node's process is paused (SIGSTOP, a long GC or VM stall): it takes no step,
    /// frames and requests sent to it wait (as in its sockets' buffers), and on resume it handles
    /// them all with its memory intact. Paused longer than a client's timeout, its callers give up
    /// while the rest of the cluster moves on (the shape of the double-apply found by the harness).
    public var pause = 0.001
    public var pauseTicksMax: UInt64 = 600
    /// At a crash, with the repair workload only: the node's whole disk is wiped (a fresh empty
    /// storage), or one of its records is dropped (lost with a damaged header the engine cannot
    /// attribute); either way it restarts learner-only and rebuilds through the scanner.
    public var wipe = 0.0
    public var drop = 0.0
    /// At a crash, with the repair workload only: the node's disk is replaced by an older copy of
    /// itself (a backup taken, half the time, at one of its earlier crashes: a cold backup). It
    /// restarts as if nothing happened; the incarnation check must find it stale (docs/REPAIR.md).
    /// With this above 0 the nodes run the incarnation check (`IncarnationGuard`).
    public var restore = 0.0
    /// Per Paxos frame: the frame is stalled, delivered `stallTicksMin…stallTicksMax` ticks later
    /// (a TCP connection stuck in retransmission, a frame in a paused peer's socket buffer): an
    /// old ballot's Accept then reaches a replica long after the cluster moved on — after a
    /// rebuilding node's copy, say, which the fence must make harmless (docs/REPAIR.md). Not
    /// scaled by the seed.
    public var stall = 0.0
    public var stallTicksMin: UInt64 = 50
    public var stallTicksMax: UInt64 = 400

    public init() {}

    /// No faults at all.
    public static let none: FaultConfig = {
        var f = FaultConfig()
        f.loss = 0
        f.duplicate = 0
        f.delayTicksMax = 1
        f.crash = 0
        f.torn = 0
        f.crashInMerge = 0
        f.corrupt = 0
        f.partition = 0
        f.pause = 0
        return f
    }()

    /// Frequent crashes, each corrupting a record: the mix that exercises damaged-key recovery.
    public static let storm: FaultConfig = {
        var f = FaultConfig()
        f.crash = 0.02
        f.corrupt = 1
        return f
    }()

    /// A seed's own mix: each probability scaled by a factor drawn from the seed (some seeds calm,
    /// some stormy), capped by `self` times two.
    public func derived(from rng: inout SplitMix64) -> FaultConfig {
        var f = self
        func scale(_ p: Double, _ rng: inout SplitMix64) -> Double { p * Double(rng.below(201)) / 100 }
        f.loss = scale(loss, &rng)
        f.duplicate = scale(duplicate, &rng)
        f.delayTicksMax = 1 + rng.below(max(delayTicksMax * 2, 1))
        f.crash = scale(crash, &rng)
        f.torn = torn
        f.corrupt = corrupt
        f.partition = scale(partition, &rng)
        // Drawn only when on, so seeds recorded before the pause fault replay unchanged with it off.
        if pause > 0 { f.pause = scale(pause, &rng) }
        return f
    }
}

/// One simulation run.
public struct SimConfig: Sendable, Hashable {
    /// Every random choice of the run derives from it.
    public var seed: UInt64
    /// Client operations to issue (plus the final counter reads).
    public var ops = 200
    /// Concurrent clients, each with one operation in flight; client c lives in campus c % 3.
    public var clients = 6
    /// Register keys `r0…` (get/put/delete/cas) and counter keys `c0…` (incr/get).
    public var registerKeys = 3
    public var counterKeys = 4
    /// Ticks a client waits for a reply before it gives up on that attempt.
    public var clientTimeoutTicks: UInt64 = 120
    /// The fault mix (scaled per seed unless `deriveFaults` is false).
    public var faults = FaultConfig()
    /// Draw the fault mix from the seed (the campaign default) rather than use `faults` as is.
    public var deriveFaults = true
    public var paxos = PaxosConfig()
    /// The storage engine's tuning under the simulator (small files, frequent merges).
    public var storage = SimStorageOptions()
    /// The linearizability checker's search budget per key (and for shrinking a violation).
    public var checkStepsPerKeyMax = 2_000_000
    /// Scenario mode: no workload clients and no random faults; a test drives the cluster through
    /// `Simulation`'s scenario methods.
    public var scenario = false
    /// Print every message, crash and state change about this key (debugging a failing seed).
    public var traceKey: String?
    /// SEQ.NEXT calls per seed (the seq workload; 0 = off), by `seqClients` clients on random
    /// nodes, over uids 0..<seqUIDs in sections of `seqSectionUIDs`, ceiling raised by `seqStep`.
    public var seqOps = 60
    public var seqClients = 3
    public var seqUIDs = 6
    public var seqSectionUIDs: UInt64 = 3
    public var seqStep: UInt64 = 6
    /// Deliberately broken allocator (tests only).
    public var seqMutant: SeqMutant = .none
    /// The repair workload (RepairWorkload.swift): one anti-entropy scanner per node, the wipe and
    /// drop faults, and the replicas-agree check after healing.
    public var repair = false
    /// Deliberately broken scanner (tests only).
    public var repairMutant: RepairMutant = .none
    /// With the repair workload: the nodes run the incarnation check (`IncarnationGuard`) even
    /// without `--restore` (scenario tests restore backups by hand).
    public var incarnationCheck = false
    /// With the incarnation check: a running node bumps its incarnation this many ticks after the
    /// current one is confirmed (0: never; `NodeOptions.incarnationBump` in the server).
    public var incarnationBumpTicks: UInt64 = 150
    /// Red-envelope calls per seed (the envelope workload, EnvelopeWorkload.swift; 0 = off).
    public var envelopeOps = 0
    /// Deliberately broken envelope opens (tests only).
    public var envelopeMutant: EnvelopeMutant = .none
    /// The data workload (DataWorkload.swift; 0 = off): commands on hashes, sorted sets and
    /// expiring strings by `dataClients` clients, each node's clock skewed within
    /// `clockSkewBoundMs`, checked by the timed checker against the data model.
    public var dataOps = 0
    public var dataClients = 5
    public var clockSkewBoundMs: UInt64 = 50
    /// Deliberately broken expiry (tests only).
    public var dataMutant: DataMutant = .none
    /// The stream workload (StreamWorkload.swift; 0 = off): calls of the task queue's commands.
    public var streamOps = 0
    /// Deliberately broken task completion (tests only).
    public var streamMutant: StreamMutant = .none
    /// The data workload's keys carry one hash tag (`h0{g}` …) and run on the key layout
    /// `hash-tag-groups`: all ten are members of one group key (docs/DATA.md).
    public var dataGroups = false
    /// The data workload's lists become bucketed (buckets of 3) and clients do the big-list upkeep
    /// (ListBucketSim.swift, docs/DATA.md "Big lists").
    public var dataLists = false
    /// The data workload's sets and hashes become bucketed (buckets of one or two members) and
    /// clients do the upkeep (KeyedBucketSim.swift, docs/DATA.md "Big sets, hashes and sorted sets").
    public var dataKeyed = false
    /// Hard bound on simulated time.
    public var ticksMax: UInt64 = 2_000_000
    public init(seed: UInt64) { self.seed = seed }

    /// The command that replays this run.
    public var replayCommand: String {
        var s = "swift run -c release tern sim --seed \(seed) --ops \(ops)"
        if paxos.mutant != .none { s += " --mutant \(paxos.mutant.rawValue)" }
        if !paxos.fastAccept { s += " --no-fast-accept" }
        if seqMutant != .none { s += " --mutant \(seqMutant.rawValue)" }
        if seqOps != SimConfig(seed: 0).seqOps { s += " --seq-ops \(seqOps)" }
        if registerKeys != SimConfig(seed: 0).registerKeys { s += " --keys \(registerKeys)" }
        if repair { s += " --repair" }
        if envelopeOps > 0 { s += " --envelope-ops \(envelopeOps)" }
        if envelopeMutant != .none { s += " --envelope-mutant \(envelopeMutant.rawValue)" }
        if repairMutant != .none { s += " --repair-mutant \(repairMutant.rawValue)" }
        if dataOps > 0 { s += " --data --data-ops \(dataOps) --skew-bound \(clockSkewBoundMs)" }
        if dataMutant != .none { s += " --data-mutant \(dataMutant.rawValue)" }
        if streamOps > 0 { s += " --stream-ops \(streamOps)" }
        if streamMutant != .none { s += " --stream-mutant \(streamMutant.rawValue)" }
        if dataGroups { s += " --data-groups" }
        if dataLists { s += " --data-lists" }
        if dataKeyed { s += " --data-keyed" }
        if !deriveFaults && faults == .none { return s + " --no-faults" }
        let d = FaultConfig()
        if faults.loss != d.loss { s += " --loss \(faults.loss)" }
        if faults.crash != d.crash { s += " --crash \(faults.crash)" }
        if faults.partition != d.partition { s += " --partition \(faults.partition)" }
        if faults.corrupt != d.corrupt { s += " --corrupt \(faults.corrupt)" }
        if faults.pause != d.pause { s += " --pause \(faults.pause)" }
        if faults.stall != d.stall { s += " --stall \(faults.stall)" }
        // Always with --repair: the command's defaults for them (SimCommand.repairWipe, .repairDrop)
        // are not FaultConfig's, so a replay without them ran another mix (seed 33 of the
        // restoring campaign did not reproduce from its printed line).
        if repair { s += " --wipe \(faults.wipe) --drop \(faults.drop)" }
        if repair && faults.restore != d.restore { s += " --restore \(faults.restore)" }
        if faults.downTicksMax != d.downTicksMax { s += " --down-ticks \(faults.downTicksMax)" }
        if paxos.dedupWindow != PaxosConfig().dedupWindow { s += " --dedup-window \(paxos.dedupWindow)" }
        return s
    }
}
