import ArgumentParser
import TernCheck
import TernConsensus
import TernRepair
import TernSeq
import TernSim

#if canImport(Glibc)
    // With swift-nio-ssl in the build graph, `timespec` is seen through CoreFoundation's module.
    import CoreFoundation
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// `tern sim`: runs seeds of the deterministic cluster simulator and reports violations.
struct SimCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sim",
        abstract: "Run the deterministic three-campus cluster simulator over many seeds."
    )

    @Option(help: "Number of seeds to run (seeds first-seed ..< first-seed + N).")
    var seeds: Int = 100

    @Option(help: "Replay exactly this seed (prints its history).")
    var seed: UInt64?

    @Option(help: "First seed of a campaign.")
    var firstSeed: UInt64 = 1

    @Option(help: "Client operations per seed.")
    var ops: Int = 200

    @Option(
        help: """
            Deliberately broken protocol: \(Mutant.allCases.map(\.rawValue).joined(separator: ", ")); \
            or sequence allocator: \(SeqMutant.allCases.dropFirst().map(\.rawValue).joined(separator: ", ")).
            """)
    var mutant: String = "none"

    @Option(help: "SEQ.NEXT calls per seed on random nodes (the sequence workload; 0 = off).")
    var seqOps: Int = SimConfig(seed: 0).seqOps

    @Option(help: "Red-envelope calls per seed on random nodes (the envelope workload; 0 = off).")
    var envelopeOps: Int = 0

    @Option(
        help:
            "With --envelope-ops: broken opens: \(EnvelopeMutant.allCases.dropFirst().map(\.rawValue).joined(separator: ", "))."
    )
    var envelopeMutant: String = "none"

    @Option(help: "Register keys (r0, r1, ...; counters are c0...c3).")
    var keys: Int = SimConfig(seed: 0).registerKeys

    @Option(help: "Message loss probability (per message; the seed scales it 0–2×).")
    var loss: Double = FaultConfig().loss

    @Option(help: "Crash probability per tick (the seed scales it 0–2×).")
    var crash: Double = FaultConfig().crash

    @Option(help: "Partition probability per tick (the seed scales it 0–2×).")
    var partition: Double = FaultConfig().partition

    @Option(
        help:
            "Per Paxos frame: stalled, delivered 50–400 ticks later (an old ballot's messages arriving long after)."
    )
    var stall: Double = 0

    @Option(help: "Process-pause probability per tick (the seed scales it 0–2×).")
    var pause: Double = FaultConfig().pause

    @Option(help: "Requests each key's de-dup window remembers (small values stress exactly-once).")
    var dedupWindow: Int = PaxosConfig().dedupWindow

    @Option(
        help:
            "With --nodes: instances above its chosen one a routed write may be carried at (NodeCoreOptions.routeSlack)."
    )
    var routeSlack: UInt64 = NodeCoreOptions().routeSlack

    @Option(help: "Corrupt-a-record probability at each crash.")
    var corrupt: Double = FaultConfig().corrupt

    @Option(help: "Trace every message and state change of this key (with --seed).")
    var trace: String?

    @Flag(help: "Disable every fault.")
    var noFaults = false

    @Flag(help: "No round 0 on fresh keys: every first write runs Phase 1 (as before 2026-12-07).")
    var noFastAccept = false

    @Flag(help: "Print the history of a replayed seed.")
    var verbose = false

    @Option(help: "Write the replayed seed's history to this file (JSON lines, for `tern check`).")
    var history: String?

    @Flag(
        help: """
            The repair workload: an anti-entropy scanner per node, disks wiped and records dropped at \
            crashes (learner-only rebuilds), and every key's replicas compared after healing.
            """)
    var repair = false

    @Option(
        help:
            "With --repair: a broken scanner: \(RepairMutant.allCases.dropFirst().map(\.rawValue).joined(separator: ", "))."
    )
    var repairMutant: String = "none"

    @Option(
        help: "With --repair: wipe-the-disk probability at each crash (default \(SimCommand.repairWipe)).")
    var wipe: Double?

    @Option(
        help: "With --repair: drop-a-record probability at each crash (default \(SimCommand.repairDrop)).")
    var drop: Double?

    @Option(
        help: """
            With --repair: restore-an-older-backup probability at each crash (default 0: the \
            incarnation check then does not run in the simulator).
            """)
    var restore: Double?

    @Flag(
        help: """
            The data workload: hash, sorted-set and expiring-string commands on hot keys, every node's \
            clock skewed within --skew-bound, checked against the data model with the expiry rule.
            """)
    var data = false

    @Option(help: "With --data: data commands per seed.")
    var dataOps = 300

    @Option(help: "With --data: the clock-skew bound in ms (each node's clock is off by up to this).")
    var skewBound: UInt64 = SimConfig(seed: 0).clockSkewBoundMs

    @Option(
        help:
            "With --data: broken expiry: \(DataMutant.allCases.dropFirst().map(\.rawValue).joined(separator: ", "))."
    )
    var dataMutant: String = "none"

    @Option(
        help: """
            Task-queue calls per seed (the stream workload: XADD with and without IDMP, XREADGROUP, \
            XACK, XACKADD, XAUTOCLAIM on two streams; 0 = off).
            """)
    var streamOps = 0

    @Option(
        help:
            "With --stream-ops: broken completions: \(StreamMutant.allCases.dropFirst().map(\.rawValue).joined(separator: ", "))."
    )
    var streamMutant: String = "none"
    @Flag(
        help: "With --data: the keys share one hash tag and run as members of one group key (docs/DATA.md).")
    var dataGroups = false

    @Flag(
        help: """
            With --data: the lists become bucketed (buckets of 3 elements) and the clients do the \
            big-list upkeep, racing each other (docs/DATA.md, "Big lists").
            """)
    var dataLists = false

    @Flag(
        help: """
            With --data: the sets and hashes become bucketed (buckets of one or two members) and the \
            clients do the upkeep, racing each other (docs/DATA.md, "Big sets, hashes and sorted sets").
            """)
    var dataKeyed = false

    @Option(help: "A crashed node stays down 5 + U(0, N) ticks; this sets N.")
    var downTicks: UInt64 = FaultConfig().downTicksMax

    @Flag(help: "Run the node-level simulation (NodeCore: forwarding, retries, several nodes per campus).")
    var nodes = false

    @Option(help: "With --nodes: nodes per campus.")
    var nodesPerCampus = 2

    @Option(
        help:
            "With --nodes: a broken request layer: \(NodeMutant.allCases.dropFirst().map(\.rawValue).joined(separator: ", "))."
    )
    var nodeMutant: String = "none"

    func run() throws {
        if nodes { return try runNodes() }
        let seqMutant = SeqMutant(rawValue: mutant) ?? .none
        guard let m = seqMutant != .none ? Mutant.none : Mutant(rawValue: mutant) else {
            throw ValidationError("unknown mutant \(mutant)")
        }
        if history != nil && seed == nil { throw ValidationError("--history needs --seed") }
        guard let em = EnvelopeMutant(rawValue: envelopeMutant) else {
            throw ValidationError("unknown envelope mutant \(envelopeMutant)")
        }
        if em != .none && envelopeOps == 0 { throw ValidationError("--envelope-mutant needs --envelope-ops") }
        var faults = FaultConfig()
        faults.loss = loss
        faults.crash = crash
        faults.partition = partition
        faults.corrupt = corrupt
        faults.pause = pause
        faults.stall = stall
        guard dedupWindow >= 1 else { throw ValidationError("--dedup-window must be at least 1") }
        faults.downTicksMax = max(downTicks, 1)
        guard keys >= 1 else { throw ValidationError("--keys must be at least 1") }
        guard let rm = RepairMutant(rawValue: repairMutant) else {
            throw ValidationError("unknown repair mutant \(repairMutant)")
        }
        if !repair && (rm != .none || wipe != nil || drop != nil || restore != nil) {
            throw ValidationError("--repair-mutant, --wipe, --drop and --restore need --repair")
        }
        guard let dm = DataMutant(rawValue: dataMutant) else {
            throw ValidationError("unknown data mutant \(dataMutant)")
        }
        if !data && dm != .none { throw ValidationError("--data-mutant needs --data") }
        guard let sm = StreamMutant(rawValue: streamMutant) else {
            throw ValidationError("unknown stream mutant \(streamMutant)")
        }
        if sm != .none && streamOps == 0 { throw ValidationError("--stream-mutant needs --stream-ops") }
        if repair {
            faults.wipe = wipe ?? Self.repairWipe
            faults.drop = drop ?? Self.repairDrop
            faults.restore = restore ?? 0
        }
        if noFaults { faults = .none }
        func config(_ s: UInt64) -> SimConfig {
            var c = SimConfig(seed: s)
            c.ops = ops
            c.faults = faults
            c.deriveFaults = !noFaults
            c.paxos.mutant = m
            c.paxos.fastAccept = !noFastAccept
            c.paxos.dedupWindow = dedupWindow
            c.seqMutant = seqMutant
            c.seqOps = seqOps
            c.traceKey = trace
            c.repair = repair
            c.registerKeys = keys
            c.repairMutant = rm
            c.envelopeOps = envelopeOps
            c.envelopeMutant = em
            c.streamOps = max(streamOps, 0)
            c.streamMutant = sm
            if data {
                c.dataOps = max(dataOps, 1)
                c.clockSkewBoundMs = skewBound
                c.dataMutant = dm
                c.dataGroups = dataGroups
                c.dataLists = dataLists
                c.dataKeyed = dataKeyed
            }
            return c
        }
        let list: [UInt64] = seed.map { [$0] } ?? (0..<UInt64(max(seeds, 0))).map { firstSeed + $0 }
        var failed = 0
        var opsDone = 0
        var unchecked = 0
        var uncheckedSeeds = 0
        var repairs = RepairStats()
        var settleMax: UInt64 = 0
        let start = monotonicSeconds()
        let progress = Progress("tern sim", unit: "seeds", total: list.count)
        for (n, s) in list.enumerated() {
            let r = simulate(config(s))
            opsDone += r.history.count
            unchecked += r.uncheckedKeys.count
            if !r.uncheckedKeys.isEmpty { uncheckedSeeds += 1 }
            if repair {
                repairs.add(r.repair)
                settleMax = max(settleMax, r.repair.settleTicks)
            }
            if seed != nil {
                print(
                    "seed \(s): \(r.history.count) ops, \(r.ticks) ticks, \(r.messages) frames, "
                        + "\(r.crashes) crashes, \(r.pauses) pauses, \(r.partitions) partitions, \(r.corruptions) corruptions, "
                        + "\(r.merges) merges (\(r.mergesInterrupted) cut by a crash), \(r.tornBytes) torn bytes, "
                        + "\(r.seqReplies) SEQ.NEXT answered, unchecked keys: \(r.uncheckedKeys.isEmpty ? "none" : r.uncheckedKeys.joined(separator: " ")), "
                        + "trace \(String(r.traceHash, radix: 16))")
                if data {
                    let d = r.data
                    print(
                        "  data: \(d.history.count) commands (\(d.history.filter { $0.ret != nil }.count) answered), "
                            + "node clock offsets \(d.skewMs) ms, \(d.expireChecks) expirechecks proposed by reads, "
                            + "\(d.expiredReads) reads answered absent by them")
                    if verbose { for op in d.history { print("  \(op)") } }
                }
                if streamOps > 0 {
                    let st = r.streams
                    print(
                        "  streams: \(st.calls.count) calls (\(st.calls.filter { $0.ret != nil }.count) answered, "
                            + "\(st.calls.reduce(0) { $0 + $1.freshRetries }) fresh retries), \(st.entries) entries "
                            + "(\(st.followUps) follow-ups), \(st.pending) pending at the end, \(st.claimed) claimed"
                    )
                    if verbose { for call in st.calls { print("  \(call)") } }
                }
                if repair {
                    print(
                        "  repair: \(r.repair.summary), \(r.repairMessages) repair messages, settled \(r.repair.settleTicks) ticks after the heal"
                    )
                }
                if let path = history { try HistoryFile.write(r.history, to: path) }
                if verbose {
                    for op in r.seqHistory { print("  \(op)") }
                    for call in r.envelopeCalls { print("  \(call)") }
                    for op in r.history {
                        print(
                            "  c\(op.client) \(op.key) \(op.input) -> \(op.output) [\(op.call), \(op.ret.map(String.init) ?? "?")]"
                        )
                    }
                }
            }
            for v in r.violations {
                failed += 1
                print(v)
            }
            // A line rewritten in place on a terminal, a plain line every few seconds in a log.
            progress.update(
                done: n + 1, detail: "\(opsDone) ops, \(failed) violations, unchecked keys: \(unchecked)",
                force: n + 1 == list.count)
        }
        progress.finish()
        let elapsed = monotonicSeconds() - start
        print(
            "done: \(list.count) seeds in \(format1(elapsed)) s (\(format1(Double(list.count) / max(elapsed, 1e-9))) seeds/s), \(failed) violations, "
                + "unchecked keys: \(unchecked) (in \(uncheckedSeeds) seeds)"
        )
        if repair {
            print("repair: \(repairs.summary); slowest settle \(settleMax) ticks after the heal")
        }
        if failed > 0 { throw ExitCode(1) }
    }
}

extension SimCommand {
    /// `tern sim --nodes`: seeds of the node-level simulation (TernSim/NodeClusterSim.swift).
    func runNodes() throws {
        guard let m = NodeMutant(rawValue: nodeMutant) else {
            throw ValidationError("unknown node mutant \(nodeMutant)")
        }
        guard nodesPerCampus >= 1 else { throw ValidationError("--nodes-per-campus must be at least 1") }
        let list: [UInt64] = seed.map { [$0] } ?? (0..<UInt64(max(seeds, 0))).map { firstSeed + $0 }
        var failed = 0
        var unchecked = 0
        var unanswered = 0
        var worst: (gap: UInt64, seed: UInt64, at: UInt64) = (0, 0, 0)
        var survivors: (gap: UInt64, seed: UInt64, at: UInt64) = (0, 0, 0)
        let start = monotonicSeconds()
        let progress = Progress("tern sim --nodes", unit: "seeds", total: list.count)
        for (n, s) in list.enumerated() {
            defer { progress.update(done: n + 1, detail: "\(failed) violations", force: n + 1 == list.count) }
            var c = NodeSimConfig()
            c.seed = s
            c.ops = ops
            c.nodesPerCampus = nodesPerCampus
            c.mutant = m
            c.dedupWindow = dedupWindow
            c.routeSlack = max(routeSlack, 1)
            if noFaults {
                c.loss = 0
                c.duplicate = 0
                c.fault = 0
            }
            let r = simulateNodes(c)
            unchecked += r.uncheckedKeys.count
            unanswered += r.unanswered
            if r.longestGapMillis > worst.gap { worst = (r.longestGapMillis, s, r.longestGapAt) }
            if r.survivorGapMillis > survivors.gap { survivors = (r.survivorGapMillis, s, r.survivorGapAt) }
            if seed != nil {
                print(
                    "seed \(s): \(r.history.count) ops, \(r.ticks) ticks, \(r.messages) messages, \(r.forwarded) forwarded (\(r.routed) routed, \(r.routesTakenBack) taken back, \(r.relayed) relayed), \(r.unanswered) unanswered, "
                        + "\(r.crashes) crashes, \(r.pauses) pauses, \(r.isolations) isolations, longest gap \(r.longestGapMillis) ms at tick \(r.longestGapAt) (survivors' clients \(r.survivorGapMillis) ms at tick \(r.survivorGapAt)), trace \(String(r.traceHash, radix: 16))"
                )
                if verbose {
                    for f in r.faults { print("  \(f.kind) of n\(f.node + 1), ticks \(f.from)...\(f.to)") }
                    for (k, op) in r.history.enumerated() {
                        print(
                            "  c\(op.client) \(op.key) \(op.input) -> \(op.output) [\(op.call), \(op.ret.map(String.init) ?? "?")] via n\(r.entryNodes[k] + 1)"
                        )
                    }
                }
            }
            for v in r.violations {
                failed += 1
                print(v)
            }
        }
        progress.finish()
        let elapsed = monotonicSeconds() - start
        print(
            "done (nodes, \(nodesPerCampus) per campus): \(list.count) seeds in \(format1(elapsed)) s, \(failed) violations, "
                + "unchecked keys: \(unchecked), unanswered operations: \(unanswered), longest gap without a "
                + "successful operation \(worst.gap) ms (simulated; seed \(worst.seed), tick \(worst.at)), on the "
                + "surviving nodes' clients \(survivors.gap) ms (seed \(survivors.seed), tick \(survivors.at))"
        )
        if failed > 0 { throw ExitCode(1) }
    }
}

extension SimCommand {
    /// `--repair`'s fault mix unless `--wipe`/`--drop` say otherwise.
    static let repairWipe = 0.2
    static let repairDrop = 0.2
}

extension RepairStats {
    /// Adds one seed's figures to a campaign's.
    mutating func add(_ o: RepairStats) {
        behind += o.behind
        taught += o.taught
        missing += o.missing
        missingMarked += o.missingMarked
        peerMissing += o.peerMissing
        damaged += o.damaged
        rebuildLoads += o.rebuildLoads
        copies += o.copies
        installed += o.installed
        fences += o.fences
        alarms += o.alarms
        passes += o.passes
        completePasses += o.completePasses
        wipes += o.wipes
        drops += o.drops
        restores += o.restores
        staleDetected += o.staleDetected
        rebuildStarts += o.rebuildStarts
        rebuildsDone += o.rebuildsDone
        rebuildsDoneUnderLoad += o.rebuildsDoneUnderLoad
        keysCompared += o.keysCompared
    }
}

func format1(_ x: Double) -> String {
    let t = (x * 10).rounded() / 10
    return String(t)
}

func monotonicSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}
