public import TernCheck
public import TernConsensus
import TernCore
import TernStorage

/// The outcome of one simulation.
public struct SimResult: Sendable {
    /// What was run.
    public var config: SimConfig
    /// Every client operation, as the clients saw it.
    public var history: [HistoryOperation]
    /// Safety violations found (empty = clean).
    public var violations: [SimViolation]
    /// Hash of everything that happened (messages, replies, history): same seed, same hash.
    public var traceHash: UInt64
    /// Simulated time at the end.
    public var ticks: UInt64
    /// Frames sent between nodes.
    public var messages: Int
    /// Faults injected.
    public var crashes: Int
    public var pauses = 0
    public var partitions: Int
    public var corruptions: Int
    /// Storage activity under the faults: merges swapped in, merges cut short by a crash, and
    /// bytes of torn tails the engine's recovery cut off.
    public var merges: Int
    public var mergesInterrupted: Int
    public var tornBytes: UInt64
    /// Keys on which the linearizability checker ran out of budget (neither proved nor refuted;
    /// the partial checks still ran on them).
    public var uncheckedKeys: [String]
    /// SEQ.NEXT calls answered (the seq workload).
    public var seqReplies = 0
    /// Sequence-service peer messages sent (forwards to a section's owner and their replies).
    public var seqMessages = 0
    /// Every SEQ.NEXT call of the seq workload.
    public var seqHistory: [SeqOperation] = []
    /// The repair workload: repairs by cause, its faults, passes (zero when it is off).
    public var repair = RepairStats()
    /// Repair peer messages sent (scanner summaries, key lists, missing-key notices).
    public var repairMessages = 0
    /// Every call of the envelope workload.
    public var envelopeCalls: [EnvelopeCall] = []
    /// The data workload: its history and expiry counts (empty when it is off).
    public var data = DataStats()
    /// The stream workload: its calls and the streams' final counts (empty when it is off).
    public var streams = StreamStats()
}

/// A broken invariant, with what is needed to reproduce it.
public struct SimViolation: Sendable, CustomStringConvertible {
    public var seed: UInt64
    /// Which check fired (observer, bank, linearizability).
    public var check: String
    public var key: String
    public var detail: String
    /// The smallest sub-history we can show for it (the key's operations around the failure).
    public var subHistory: [HistoryOperation]
    public var replay: String
    public var description: String {
        var s = "VIOLATION seed=\(seed) check=\(check) key=\(key): \(detail)\n"
        for op in subHistory {
            s +=
                "  client \(op.client) \(op.input) -> \(op.output) [\(op.call), \(op.ret.map(String.init) ?? "?")]\n"
        }
        if !subHistory.isEmpty { s += "  (times in half-ticks: a call at tick t is 2t+1, a return 2t)\n" }
        s += "  replay: \(replay)"
        return s
    }
}

/// Runs the whole three-campus cluster in one thread from one seed.
///
/// Time is an integer tick. Each tick: deliver the messages due, inject faults, let clients act,
/// tick and flush every live node (so everything that arrived in one tick shares one fsync), then
/// route the frames through the faulty network. Nothing here iterates a hashed collection, so a
/// seed replays identically in every process.
public final class Simulation {
    let config: SimConfig
    var faults: FaultConfig
    var rng: SplitMix64
    let ids = [NodeID(1), NodeID(2), NodeID(3)]
    var storages: [BitcaskReplicaStorage] = []
    var nodes: [ReplicaNode?] = []
    var downUntil: [UInt64] = [0, 0, 0]
    var incarnation: [UInt64] = [0, 0, 0]
    public private(set) var now: UInt64 = 0
    /// Message buckets by arrival tick (ring of `bucketCount`).
    var buckets: [[Frame]]
    let bucketCount: Int
    /// cut[from][to]: frames on that link are dropped.
    var cut: [[Bool]] = Array(repeating: [false, false, false], count: 3)
    var partitionUntil: UInt64 = 0
    var flapping: (Int, Int)?
    var clients: [SimClient] = []
    var history: [HistoryOperation] = []
    var pendingReplies: [(at: UInt64, reply: ClientReply)] = []
    var tagOwner: [UInt64: Int] = [:]
    var nextTag: UInt64 = 1
    var observer = Observer()
    var violations: [SimViolation] = []
    var hash: UInt64 = 0xCBF2_9CE4_8422_2325
    var messages = 0
    var crashes = 0
    var pauses = 0
    /// Per node: paused (its process stopped) until this tick; what reaches it meanwhile waits in
    /// `held`, in arrival order, and runs when it resumes.
    var pausedUntil: [UInt64?] = [nil, nil, nil]
    var held: [[() -> Void]] = [[], [], []]
    var partitions = 0
    var corruptions = 0
    var tornBytes: UInt64 = 0
    /// Per node: the tick at which a copied merge is swapped in.
    var mergeSwapAt: [UInt64] = [0, 0, 0]
    var uncheckedKeys: [String] = []
    var opsIssued = 0
    var healed = false
    var finalReads: [Int] = []
    /// (node, key) whose corrupted record has not been re-learned yet. The fault model's guard:
    /// three replicas survive the loss of ONE replica's state of a key, not two at once.
    var unrepaired: [(node: Int, key: [UInt8])] = []
    var scenarioReplies: [UInt64: ClientOutcome] = [:]
    /// The sequence workload (SeqWorkload.swift).
    var seq = SeqWorkload()
    /// The repair workload (RepairWorkload.swift).
    var repair = RepairWorkload()
    /// The red-envelope workload (EnvelopeWorkload.swift).
    var envelope = EnvelopeWorkload()
    /// The data workload (DataWorkload.swift).
    var data = DataWorkload()
    /// The stream workload (StreamWorkload.swift).
    var streams = StreamWorkload()

    /// Frames held by the stall fault, with when they arrive.
    var stalled: [(at: UInt64, frame: Frame)] = []

    public init(_ config: SimConfig) {
        var config = config
        // The engines group key records by the scanners' buckets, as the server's do.
        if config.repair { config.storage.listingBucketBits = Self.repairBucketBits }
        self.config = config
        var r = SplitMix64(seed: config.seed)
        faults = config.deriveFaults ? config.faults.derived(from: &r) : config.faults
        rng = r
        bucketCount = Int(faults.delayTicksMax) + 2
        buckets = Array(repeating: [], count: bucketCount)
        for i in 0..<3 {
            // Each node's engine buffers appends differently: none (every batch reaches the page
            // cache, so a crash can tear it), a little, or a lot (unsynced batches vanish whole).
            let buffer = [0, 1 << 10, 1 << 20][Int(rng.below(3))]
            // A fresh engine on an empty simulated disk cannot fail; if it does, that is a bug.
            storages.append(try! BitcaskReplicaStorage(options: config.storage, writeBufferBytes: buffer))
            nodes.append(startNode(i))
        }
        for c in 0..<config.clients {
            clients.append(SimClient(id: c, home: c % 3, nextAt: rng.below(5)))
        }
        if !config.scenario {
            seqSetUp()
            envelopeSetUp()
            dataSetUp()
            streamSetUp()
        }
    }

    func startNode(_ i: Int) -> ReplicaNode {
        incarnation[i] += 1
        seqNodeStarted(i)
        // A node whose storage cannot even give back its epoch is a bug in the simulator.
        let n = try! ReplicaNode(
            id: ids[i], replicas: ids, storage: storages[i], config: config.paxos,
            seed: config.seed &* 31 &+ UInt64(i) &* 1_000_003 &+ incarnation[i])
        repairNodeStarted(i, n)
        if config.dataOps > 0 { n.expiryHorizonMs = horizonMs(i) }
        return n
    }

    func mix(_ v: UInt64) {
        hash = (hash ^ v) &* 0x0000_0100_0000_01B3
    }

    /// Runs to completion and returns the result (violations included).
    public func run() -> SimResult {
        while now < config.ticksMax {
            step()
            if healed && clients.allSatisfy({ $0.inFlight == nil }) && finalReads.isEmpty && seqDone
                && repairDone && envelopeFinished && dataDone && streamFinished
            {
                break
            }
            if !violations.isEmpty { break }
        }
        if now >= config.ticksMax {
            violations.append(
                violation(
                    check: "liveness", key: "-", detail: "did not finish within \(config.ticksMax) ticks"))
        }
        if violations.isEmpty { checkReplicasAgree() }
        if violations.isEmpty { checkSeq() }
        if violations.isEmpty { checkEnvelopes() }
        if violations.isEmpty { checkBank() }
        if violations.isEmpty { checkLinearizability() }
        if violations.isEmpty { checkData() }
        if violations.isEmpty { checkStreams() }
        // The partial checks below are implied by linearizability; they still matter on the keys
        // the checker could not decide within its budget, and cross-check the checker elsewhere.
        if violations.isEmpty { checkCounters() }
        if violations.isEmpty { checkRegisters() }
        for op in history {
            mix(UInt64(op.client))
            mix(op.call)
            mix(op.ret ?? 0)
            mix(
                UInt64(
                    truncatingIfNeeded: "\(op.key)\(op.input)\(op.output)".utf8.reduce(0) {
                        $0 &* 31 &+ Int($1)
                    }))
        }
        for s in storages {
            mix(UInt64(s.syncs))
            mix(UInt64(s.mergesFinished) << 32 | UInt64(s.mergesInterrupted))
            mix(UInt64(s.stats.files) << 32 | UInt64(s.stats.keys))
        }
        mix(tornBytes)
        var result = SimResult(
            config: config, history: history, violations: violations, traceHash: hash, ticks: now,
            messages: messages, crashes: crashes, partitions: partitions, corruptions: corruptions,
            merges: storages.reduce(0) { $0 + $1.mergesFinished },
            mergesInterrupted: storages.reduce(0) { $0 + $1.mergesInterrupted }, tornBytes: tornBytes,
            uncheckedKeys: uncheckedKeys)
        result.pauses = pauses
        result.seqReplies = seq.history.filter { $0.ret != nil }.count
        result.seqMessages = seq.messagesSent
        result.seqHistory = seq.history
        result.repair = repairResult()
        result.repairMessages = repair.messagesSent
        result.envelopeCalls = envelope.calls
        result.data = dataResult()
        result.streams = streamResult()
        return result
    }

    func step() {
        now += 1
        // 0. A paused node resumes: it handles everything that waited for it, in order.
        for i in 0..<3 {
            if let until = pausedUntil[i], now >= until { resume(i) }
        }
        dataClocks()
        // 1. Messages due now (stalled ones first: they were sent long before).
        var due: [Frame] = []
        if !stalled.isEmpty {
            due = stalled.filter { $0.at <= now }.map(\.frame)
            stalled.removeAll { $0.at <= now }
        }
        due += buckets[Int(now % UInt64(bucketCount))]
        buckets[Int(now % UInt64(bucketCount))] = []
        for f in due {
            guard let i = ids.firstIndex(of: f.to), let n = nodes[i] else { continue }
            whenRunning(i) { n.receive(f) }
        }
        // 2. Client replies due now.
        var k = 0
        while k < pendingReplies.count {
            if pendingReplies[k].at <= now {
                let r = pendingReplies.remove(at: k).reply
                clientReply(r)
            } else {
                k += 1
            }
        }
        seqDeliver()
        repairDeliver()
        // 3. Faults.
        if !healed && !config.scenario { injectFaults() }
        for i in 0..<3 where nodes[i] == nil && now >= downUntil[i] {
            nodes[i] = startNode(i)
            observer.restarted(node: i)
        }
        // 4. Clients.
        if !config.scenario {
            clientsAct()
            seqAct()
            envelopeAct()
            dataAct()
            streamAct()
        }
        // 5. Nodes.
        for i in 0..<3 where pausedUntil[i] == nil {
            guard let n = nodes[i] else { continue }
            do {
                try n.tick()
                var rounds = 0
                repeat {
                    let out = try n.flush()
                    route(out, from: i)
                    rounds += 1
                } while n.hasWork && rounds < 4
            } catch {
                storageFailed(i, error)
            }
        }
        envelopeCheckStates()
        // 5b. The anti-entropy scanners (the repair workload), after the flushes.
        repairTick()
        // 6. Storage housekeeping: merges at the engine's thresholds and at seeded moments, the
        //    swap a few ticks after the copy (the node keeps writing in between).
        for i in 0..<3 where nodes[i] != nil && pausedUntil[i] == nil {
            let s = storages[i]
            do throws(StorageError) {
                if s.mergeCopied {
                    if now >= mergeSwapAt[i] { try s.finishMerge() }
                } else if s.needsMerge || rng.chance(config.storage.mergeChance) {
                    if try s.startMerge() {
                        mergeSwapAt[i] = now + rng.below(config.storage.mergeSwapDelayTicksMax + 1)
                    }
                }
            } catch {
                storageFailed(i, error)
            }
        }
    }

    /// The engine refused an operation the simulator never makes it fail: a bug, reported like a
    /// safety violation (with the seed to replay it).
    func storageFailed(_ i: Int, _ error: any Error) {
        guard violations.isEmpty else { return }
        violations.append(violation(check: "storage", key: "-", detail: "node \(i + 1): \(error)"))
    }

    // MARK: - Network

    func route(_ out: NodeOutput, from i: Int) {
        guard let n = nodes[i] else { return }
        repairNoteWritten(i, out.touched)
        repairFencesDurable(i, out.fencesDurable)
        for k in out.touched {
            if let r = n.inspect(k), !r.damaged, !unrepaired.isEmpty {
                unrepaired.removeAll { $0.node == i && $0.key == k }
            }
            if violations.isEmpty, let r = n.inspect(k), let v = observer.observe(node: i, key: k, replica: r)
            {
                violations.append(violation(check: "observer", key: keyName(k), detail: v))
            }
        }
        if let tk = config.traceKey {
            for k in out.touched where keyName(k) == tk {
                if let r = n.inspect(k) {
                    print(
                        "t=\(now) n\(i + 1) state chosen=\(r.state.chosen) promised=\(r.state.promised) accepted=\(r.state.accepted.map { "\($0.instance)@\($0.ballot)" } ?? "-") damaged=\(r.damaged)"
                    )
                }
            }
        }
        for f in out.frames {
            for item in f.items {
                observer.sent(node: i, key: item.key, message: item.message)
                if let tk = config.traceKey, keyName(item.key) == tk {
                    print("t=\(now) \(f.from)->\(f.to) \(item.message)")
                }
            }
            messages += 1
            mix(UInt64(f.from.rawValue) << 8 | UInt64(f.to.rawValue))
            mix(UInt64(f.items.count))
            guard let j = ids.firstIndex(of: f.to) else { continue }
            if cut[i][j] || rng.chance(faults.loss) { continue }
            // Drawn only when on, so seeds recorded before the stall fault replay unchanged.
            if faults.stall > 0 && rng.chance(faults.stall) {
                let span = faults.stallTicksMax - min(faults.stallTicksMin, faults.stallTicksMax)
                stalled.append((now + faults.stallTicksMin + rng.below(span + 1), f))
                continue
            }
            let copies = rng.chance(faults.duplicate) ? 2 : 1
            for _ in 0..<copies {
                let d = 1 + rng.below(faults.delayTicksMax)
                buckets[Int((now + d) % UInt64(bucketCount))].append(f)
            }
        }
        for r in out.replies {
            mix(r.tag)
            pendingReplies.append((now + 1, r))
        }
    }

    // MARK: - Faults

    func injectFaults() {
        // One node at a time is down or paused (the fault model's guard).
        let allRunning = nodes.allSatisfy({ $0 != nil }) && pausedUntil.allSatisfy({ $0 == nil })
        if allRunning && rng.chance(faults.crash) {
            var i = Int(rng.below(3))
            if let other = repairCrashTarget(i) { i = other }
            crash(i)
        } else if allRunning && faults.pause > 0 && rng.chance(faults.pause) {
            let i = Int(rng.below(3))
            pause(i, ticks: 1 + rng.below(max(faults.pauseTicksMax, 1)))
        }
        if now >= partitionUntil {
            cut = Array(repeating: [false, false, false], count: 3)
            flapping = nil
            if rng.chance(faults.partition) {
                partitions += 1
                partitionUntil = now + 10 + rng.below(faults.partitionTicksMax)
                let a = Int(rng.below(3))
                let b = (a + 1 + Int(rng.below(2))) % 3
                switch rng.below(3) {
                case 0:  // one campus cut off
                    for x in 0..<3 where x != a {
                        cut[a][x] = true
                        cut[x][a] = true
                    }
                case 1: cut[a][b] = true  // one-way
                default: flapping = (a, b)
                }
            }
        }
        if let (a, b) = flapping, now % 7 == 0 {
            cut[a][b].toggle()
            cut[b][a] = cut[a][b]
        }
    }

    func crash(_ i: Int) {
        crashes += 1
        nodes[i] = nil
        repairNodeStopped(i)
        let s = storages[i]
        let torn = rng.chance(faults.torn)
        var mergeStep: MergeStep?
        do throws(StorageError) {
            // Power fails in the middle of a merge: stop it at a seeded step, then crash.
            if rng.chance(faults.crashInMerge) {
                let steps = s.mergeCopied ? MergeStep.swapSteps : MergeStep.allCases
                let step = steps[Int(rng.below(UInt64(steps.count)))]
                mergeStep = step
                if s.mergeCopied { try s.finishMerge(stopAt: step) } else { try s.startMerge(stopAt: step) }
            }
            try s.crash(rng: &rng, tornWrites: torn)
            tornBytes += s.stats.truncatedBytes
        } catch {
            storageFailed(i, error)
            return
        }
        if repairFaultAtCrash(i) {
            // The disk was wiped, or a record dropped: the node restarts learner-only.
        } else if repairOthersIntact(i) && rng.chance(faults.corrupt) {
            let hot = s.recent.last(where: { $0.first == 1 })
            var recs = s.liveKeys.filter { k in
                k.first == 1 && !unrepaired.contains { $0.node != i && $0.key == Array(k.dropFirst()) }
            }
            if rng.chance(0.5), let hot, recs.contains(hot) { recs = [hot] }
            if !recs.isEmpty {
                let k = recs[Int(rng.below(UInt64(recs.count)))]
                corruptRecord(node: i, key: Array(k.dropFirst()))
            }
        }
        if let v = observer.crashed(node: i, load: { k in (try? s.load(k)) ?? .damaged }) {
            violations.append(violation(check: "observer", key: v.0, detail: v.1))
        }
        downUntil[i] = now + 5 + rng.below(faults.downTicksMax)
        if config.traceKey != nil {
            print(
                "t=\(now) CRASH n\(i + 1) until \(downUntil[i]), torn writes \(torn), merge stopped at \(mergeStep.map(\.rawValue) ?? "-")"
            )
        }
        mix(0xC0FFEE &+ UInt64(i))
    }

    /// Flips a bit in `key`'s latest record at (crashed) node `i` and reopens its engine, which
    /// must now report the key damaged.
    func corruptRecord(node i: Int, key: [UInt8]) {
        let outcome: BitcaskReplicaStorage.CorruptionOutcome
        do throws(StorageError) {
            outcome = try storages[i].corrupt([1] + key, rng: &rng)
        } catch {
            storageFailed(i, error)
            return
        }
        switch outcome {
        case .corrupted:
            corruptions += 1
            observer.corrupted(node: i, key: key)
            unrepaired.append((i, key))
            if config.traceKey != nil { print("t=\(now) CORRUPT n\(i + 1) \(keyName(key))") }
        case .notFound:
            break
        case .undetected:
            violations.append(
                violation(
                    check: "storage", key: keyName(key),
                    detail: "node \(i + 1): a bit flipped in the latest record, yet the engine serves it"))
        }
    }

    /// Runs `input` on node `i` now, or when it resumes if it is paused.
    func whenRunning(_ i: Int, _ input: @escaping () -> Void) {
        if pausedUntil[i] != nil {
            held[i].append(input)
        } else {
            input()
        }
    }

    /// Stops node `i`'s process for `ticks` ticks (its memory and disk stay as they are).
    func pause(_ i: Int, ticks: UInt64) {
        pauses += 1
        pausedUntil[i] = now + ticks
        if config.traceKey != nil { print("t=\(now) PAUSE n\(i + 1) until \(now + ticks)") }
        mix(0x9A05E &+ UInt64(i))
    }

    func resume(_ i: Int) {
        pausedUntil[i] = nil
        let inputs = held[i]
        held[i] = []
        if config.traceKey != nil { print("t=\(now) RESUME n\(i + 1) with \(inputs.count) inputs waiting") }
        for input in inputs { input() }
    }

    func heal() {
        healed = true
        for i in 0..<3 where pausedUntil[i] != nil { pausedUntil[i] = now }
        cut = Array(repeating: [false, false, false], count: 3)
        flapping = nil
        faults.loss = 0
        faults.duplicate = 0
        for i in 0..<3 where nodes[i] == nil { downUntil[i] = now }
        repairHealed()
    }

    // MARK: - Clients

    func keyName(_ k: [UInt8]) -> String { String(decoding: k, as: UTF8.self) }

    /// History times are half-ticks. Within a tick, replies reach clients (step 2) before clients
    /// invoke new operations (step 4), so a reply at tick t really precedes a call at tick t; with
    /// whole ticks the checker would have to treat the two as concurrent (equal times) and would
    /// miss a stale read issued right after the write it missed returned.
    var returnTime: UInt64 { 2 * now }
    var callTime: UInt64 { 2 * now + 1 }

    func clientsAct() {
        for c in clients.indices {
            if let f = clients[c].inFlight {
                // A write that reached a node may have been applied; one sent to a down node was lost.
                if now >= f.deadline { attemptFailed(c, unknown: f.isWrite && f.delivered) }
                continue
            }
            guard now >= clients[c].nextAt else { continue }
            if !healed && opsIssued < config.ops {
                issue(c)
            } else if healed, let key = finalReads.first, c == 0 {
                finalReads.removeFirst()
                begin(c, key: key, input: .get)
            }
        }
        if !healed && opsIssued >= config.ops && clients.allSatisfy({ $0.inFlight == nil }) && seqDone
            && envelopeDone
            && dataDone && streamDone
        {
            heal()
            finalReads = Array(0..<config.counterKeys)
            for c in clients.indices { clients[c].nextAt = now + 20 }
        }
    }

    func issue(_ c: Int) {
        opsIssued += 1
        let counters = config.counterKeys > 0 && (config.registerKeys == 0 || rng.chance(0.5))
        if counters {
            let k = Int(rng.below(UInt64(config.counterKeys)))
            let input: OperationInput = rng.chance(0.75) ? .incr(Int64(1 + rng.below(5))) : .get
            begin(c, key: k, input: input, counter: true)
        } else {
            let k = Int(rng.below(UInt64(config.registerKeys)))
            let v = "v\(c).\(clients[c].counter)"
            let input: OperationInput
            switch rng.below(10) {
            case 0..<4: input = .get
            case 4..<7: input = .put(v)
            case 7: input = .delete
            default:
                let expected = clients[c].lastSeen[k, default: nil]
                input = .cas(expected: expected, new: v)
            }
            begin(c, key: k, input: input, counter: false)
        }
    }

    func begin(_ c: Int, key k: Int, input: OperationInput, counter: Bool = true) {
        let key = counter ? "c\(k)" : "r\(k)"
        clients[c].counter += 1
        let rid = RequestID(client: UInt32(c + 1), counter: clients[c].counter)
        history.append(
            HistoryOperation(client: c, key: key, input: input, output: .unknown, call: callTime, ret: nil))
        var f = InFlight(
            history: history.count - 1, key: key, keyIndex: k, input: input, rid: rid, node: clients[c].home,
            tag: 0, deadline: 0, attempts: 0, maybeApplied: false)
        f.isWrite = input != .get
        clients[c].inFlight = f
        send(c)
    }

    func send(_ c: Int) {
        guard var f = clients[c].inFlight else { return }
        let tag = nextTag
        nextTag += 1
        tagOwner[tag] = c
        f.tag = tag
        f.attempts += 1
        f.deadline = now + config.clientTimeoutTicks
        f.delivered = nodes[f.node] != nil
        clients[c].inFlight = f
        guard let n = nodes[f.node] else { return }  // down: the request is lost, the client times out
        let key = Array(f.key.utf8)
        whenRunning(f.node) {
            switch f.input {
            case .get: n.read(key: key, tag: tag)
            case .put(let v): n.propose(key: key, .put(Array(v.utf8)), id: f.rid, tag: tag)
            case .delete: n.propose(key: key, .delete, id: f.rid, tag: tag)
            case .incr(let d): n.propose(key: key, .incr(d), id: f.rid, tag: tag)
            case .cas(let e, let v):
                n.propose(
                    key: key, .cas(expected: e.map { Array($0.utf8) }, new: Array(v.utf8)), id: f.rid,
                    tag: tag)
            }
        }
    }

    /// The attempt failed; retry once at the next campus (same request id), else give up.
    func attemptFailed(_ c: Int, unknown: Bool) {
        guard var f = clients[c].inFlight else { return }
        if unknown { f.maybeApplied = true }
        // A write that may have been applied is never sent again (the Node's rule: only the
        // replica that carried it can still tell; docs/SERVER.md, "Exactly once").
        let mayRetry = !(f.isWrite && f.maybeApplied) || config.paxos.mutant == .forgetfulRetry
        if mayRetry && (f.attempts < 2 || (healed && f.attempts < 6)) {
            f.node = (f.node + 1) % 3
            clients[c].inFlight = f
            send(c)
        } else {
            finish(c, f.maybeApplied || !f.isWrite ? .unknown : .failed)
        }
    }

    func clientReply(_ r: ClientReply) {
        if let k = seq.keyTags.removeValue(forKey: r.tag) {
            seqKeyReply(k, r.outcome)
            return
        }
        if envelopeReply(r) { return }
        if streamReply(r) { return }
        if let c = data.tags.removeValue(forKey: r.tag) {
            if data.clients[c].inFlight?.tag == r.tag { dataReply(c, r.outcome) }
            return
        }
        if config.scenario {
            scenarioReplies[r.tag] = r.outcome
            return
        }
        guard let c = tagOwner.removeValue(forKey: r.tag), let f = clients[c].inFlight, f.tag == r.tag else {
            return
        }
        switch r.outcome {
        case .retryable: attemptFailed(c, unknown: false)
        case .unknown: attemptFailed(c, unknown: true)
        case .value(let b):
            let s = b.map { String(decoding: $0, as: UTF8.self) }
            if f.key.first == "r" { clients[c].lastSeen[f.keyIndex] = s }
            finish(c, .value(s))
        case .typed(let v):
            violations.append(violation(check: "workload", key: f.key, detail: "unexpected typed value \(v)"))
            finish(c, .unknown)
        case .done(let res):
            switch res {
            case .ok: finish(c, .ok)
            case .number(let n): finish(c, .number(n))
            case .swapped(let b): finish(c, .swapped(b))
            case .notANumber, .tooLarge, .previous, .previousForgotten, .existed, .overflow, .inboxAppended,
                .inboxRefused, .inboxFull, .inboxSealed, .data, .envelope, .inboxAppendedAt:
                violations.append(
                    violation(check: "workload", key: f.key, detail: "unexpected result \(res)"))
                finish(c, .unknown)
            }
        }
    }

    func finish(_ c: Int, _ out: OperationOutput) {
        guard let f = clients[c].inFlight else { return }
        history[f.history].output = out
        history[f.history].ret = out == .unknown ? nil : returnTime
        clients[c].inFlight = nil
        clients[c].nextAt = now + rng.below(6)
        mix(UInt64(f.history) << 3 | UInt64(c))
    }

    // MARK: - Checks

    func violation(check: String, key: String, detail: String) -> SimViolation {
        let ops = history.filter { $0.key == key }
        return SimViolation(
            seed: config.seed, check: check, key: key, detail: detail, subHistory: Array(ops.suffix(12)),
            replay: config.replayCommand)
    }

    /// Every key's sub-history through the linearizability checker (TernCheck). A violation fails
    /// the seed with the checker's shrunk witness; a key on which the search budget runs out is
    /// counted in `uncheckedKeys` (never passed silently).
    func checkLinearizability() {
        let r = checkEveryKey(history, stepsPerKeyMax: config.checkStepsPerKeyMax)
        uncheckedKeys += r.unchecked
        if let (key, v) = r.violation {
            var bad = violation(
                check: "linearizability", key: key,
                detail:
                    "no linearization of these \(v.history.count) operations (shrunk from \(v.originalCount))"
            )
            bad.subHistory = v.history
            violations.append(bad)
        }
    }

    /// Real-time order on counters (a cheap, partial linearizability check): increments are positive, so an `incr` must return more, and a `get` at least, than
    /// every counter value observed by an operation that returned before it was invoked.
    func checkCounters() {
        for k in 0..<config.counterKeys {
            let key = "c\(k)"
            var done: [(call: UInt64, ret: UInt64, n: Int64, incr: Bool, index: Int)] = []
            for (i, op) in history.enumerated() where op.key == key {
                guard let ret = op.ret else { continue }
                switch (op.input, op.output) {
                case (.incr, .number(let n)): done.append((op.call, ret, n, true, i))
                case (.get, .value(let s)):
                    done.append((op.call, ret, s.flatMap { Int64($0) } ?? 0, false, i))
                default: break
                }
            }
            let byRet = done.sorted { ($0.ret, $0.index) < ($1.ret, $1.index) }
            var p = 0
            var maxBefore: Int64 = -1
            var maxOp = -1
            for b in done.sorted(by: { ($0.call, $0.index) < ($1.call, $1.index) }) {
                while p < byRet.count && byRet[p].ret <= b.call {
                    if byRet[p].n > maxBefore {
                        maxBefore = byRet[p].n
                        maxOp = byRet[p].index
                    }
                    p += 1
                }
                if b.incr ? b.n <= maxBefore : b.n < maxBefore {
                    var v = violation(
                        check: "counter-order", key: key,
                        detail:
                            "\(history[b.index].input) returned \(b.n) but \(maxBefore) was observed before it began"
                    )
                    v.subHistory = [history[maxOp], history[b.index]]
                    violations.append(v)
                    return
                }
            }
        }
    }

    /// Registers (another partial linearizability check): every written value is unique, so a `get`
    /// returning X must come from a write of X invoked before the get returned, and must not be
    /// stale — no acknowledged write may sit wholly between X's write and the get.
    func checkRegisters() {
        for k in 0..<config.registerKeys {
            let key = "r\(k)"
            var writes: [(value: String, call: UInt64, ret: UInt64?, index: Int)] = []
            for (i, op) in history.enumerated() where op.key == key {
                switch (op.input, op.output) {
                case (.put(let v), .ok), (.put(let v), .unknown): writes.append((v, op.call, op.ret, i))
                case (.cas(_, let v), .swapped(true)), (.cas(_, let v), .unknown):
                    writes.append((v, op.call, op.ret, i))
                default: break
                }
            }
            // Acknowledged overwrites (put, successful cas, delete) of this key.
            var acked: [(call: UInt64, ret: UInt64, index: Int)] = []
            for (i, op) in history.enumerated() where op.key == key {
                guard let ret = op.ret else { continue }
                switch (op.input, op.output) {
                case (.put, .ok), (.delete, .ok), (.cas, .swapped(true)): acked.append((op.call, ret, i))
                default: break
                }
            }
            for (gi, g) in history.enumerated() where g.key == key && g.input == .get {
                guard case .value(let v?) = g.output, let gret = g.ret else { continue }
                guard let w = writes.first(where: { $0.value == v }), w.call <= gret else {
                    var bad = violation(
                        check: "register", key: key, detail: "get returned \(v), which no earlier write wrote"
                    )
                    bad.subHistory = [g]
                    violations.append(bad)
                    return
                }
                guard let wret = w.ret else { continue }
                if let over = acked.first(where: {
                    $0.index != w.index && $0.call >= wret && $0.ret <= g.call
                }) {
                    var bad = violation(
                        check: "register", key: key,
                        detail:
                            "get returned \(v) although a later acknowledged write finished before it began")
                    bad.subHistory = [history[w.index], history[over.index], history[gi]]
                    violations.append(bad)
                    return
                }
            }
        }
    }

    /// Bank-style invariant: the counters' final sum lies between the acknowledged increments and
    /// those plus every increment of unknown outcome.
    func checkBank() {
        var acked: Int64 = 0
        var unknown: Int64 = 0
        var total: Int64 = 0
        var readAll = true
        for op in history where op.key.first == "c" {
            if case .incr(let d) = op.input {
                switch op.output {
                case .number: acked += d
                case .unknown: unknown += d
                default: break
                }
            }
        }
        for k in 0..<config.counterKeys {
            let key = "c\(k)"
            guard
                let last = history.last(where: { $0.key == key && $0.input == .get }),
                case .value(let s) = last.output
            else {
                readAll = false
                continue
            }
            total += s.flatMap { Int64($0) } ?? 0
        }
        guard readAll else { return }
        if total < acked || total > acked + unknown {
            violations.append(
                violation(
                    check: "bank", key: "c*",
                    detail:
                        "sum of counters \(total) outside [\(acked), \(acked + unknown)] (acked, +unknown)"))
        }
    }
}

// MARK: - Scenario language (tests drive the cluster by hand)

extension Simulation {
    /// Submits a write at `node` (0, 1, 2 = campus A, B, C); returns the tag to `await`.
    public func write(_ key: String, _ op: Operation, at node: Int, id: RequestID? = nil) -> UInt64 {
        let tag = nextTag
        nextTag += 1
        let rid = id ?? RequestID(client: 1000, counter: tag)
        if let n = nodes[node] {
            whenRunning(node) { n.propose(key: Array(key.utf8), op, id: rid, tag: tag) }
        }
        return tag
    }

    /// Submits a linearizable read at `node`; returns the tag to `await`.
    public func read(_ key: String, at node: Int, staleOK: Bool = false) -> UInt64 {
        let tag = nextTag
        nextTag += 1
        if let n = nodes[node] {
            whenRunning(node) { n.read(key: Array(key.utf8), staleOK: staleOK, tag: tag) }
        }
        return tag
    }

    /// Runs until `tag` is answered (or `ticksMax` passes) and returns its outcome.
    public func await(_ tag: UInt64, ticksMax: UInt64 = 3000) -> ClientOutcome? {
        let end = now + ticksMax
        while now < end && scenarioReplies[tag] == nil { step() }
        return scenarioReplies.removeValue(forKey: tag)
    }

    /// Runs `ticks` ticks.
    public func run(ticks: UInt64) { for _ in 0..<ticks { step() } }

    /// Cuts `node`'s campus off (both directions), or heals every link.
    public func isolate(_ node: Int?) {
        cut = Array(repeating: [false, false, false], count: 3)
        flapping = nil
        partitionUntil = UInt64.max
        guard let a = node else { return }
        for x in 0..<3 where x != a {
            cut[a][x] = true
            cut[x][a] = true
        }
    }

    /// Crashes `node` now (unsynced writes lost, no torn tail); it restarts after `downTicks`.
    /// With `corrupt`, a bit of that key's latest stored record is flipped, so the engine reports
    /// the key damaged at restart.
    public func crash(node i: Int, downTicks: UInt64, corrupt key: String? = nil) {
        nodes[i] = nil
        repairNodeStopped(i)
        do throws(StorageError) {
            try storages[i].crash(rng: &rng, tornWrites: false)
        } catch {
            storageFailed(i, error)
            return
        }
        if let k = key { corruptRecord(node: i, key: Array(k.utf8)) }
        let s = storages[i]
        if let v = observer.crashed(node: i, load: { k in (try? s.load(k)) ?? .damaged }) {
            violations.append(violation(check: "observer", key: v.0, detail: v.1))
        }
        downUntil[i] = now + downTicks
    }

    /// Pauses `node`'s process for `ticks` ticks: it takes no step; frames and requests sent to it
    /// wait and are handled, in order, when it resumes.
    public func pause(node i: Int, ticks: UInt64) { pause(i, ticks: ticks) }

    /// Node `node`'s storage (its engine and simulated disk), for tests.
    public func storage(at node: Int) -> BitcaskReplicaStorage { storages[node] }

    /// The loaded state of `key` at `node` (nil if down or never loaded).
    public func inspect(_ key: String, at node: Int) -> KeyReplica? { nodes[node]?.inspect(Array(key.utf8)) }

    /// Violations found so far.
    public var currentViolations: [SimViolation] { violations }
}

struct SimClient {
    var id: Int
    var home: Int
    var nextAt: UInt64
    var counter: UInt64 = 0
    var inFlight: InFlight?
    var lastSeen: [Int: String?] = [:]
}

struct InFlight {
    var history: Int
    var key: String
    var keyIndex: Int
    var input: OperationInput
    var rid: RequestID
    var node: Int
    var tag: UInt64
    var deadline: UInt64
    var attempts: Int
    var maybeApplied: Bool
    var isWrite = true
    /// The current attempt reached a node (not lost to a down one).
    var delivered = false
}

/// Runs one seed.
public func simulate(_ config: SimConfig) -> SimResult { Simulation(config).run() }

/// Every key's sub-history through the linearizability checker (TernCheck), keys in sorted order:
/// the first violation (with the checker's shrunk witness) and the keys on which the search budget
/// ran out (counted, never passed silently). Both simulators use it.
func checkEveryKey(_ history: [HistoryOperation], stepsPerKeyMax: Int) -> (
    violation: (key: String, witness: Violation)?, unchecked: [String]
) {
    var byKey: [String: [HistoryOperation]] = [:]
    for op in history { byKey[op.key, default: []].append(op) }
    let options = CheckOptions(stepsPerKeyMax: stepsPerKeyMax, shrinkStepsMax: stepsPerKeyMax)
    var unchecked: [String] = []
    for key in byKey.keys.sorted() {
        switch checkLinearizable(byKey[key]!, options: options) {
        case .linearizable: continue
        case .unknown: unchecked.append(key)
        case .violation(let v): return ((key, v), unchecked)
        }
    }
    return (nil, unchecked)
}
