import TernCheck
import TernConsensus
import TernCore

/// A node-level simulation: the server's request layer (`NodeCore`: routing, forwarding, retries,
/// waiters, key loading, group commit) on several nodes per campus, so forwarding between nodes
/// runs under the same kind of faults as consensus — message loss, duplication and delay, one node
/// isolated, crashed (losing what was not synced) or paused (frozen with its memory, then resumed).
/// Clients send each request to any node, as RESP clients do; every key's history goes through
/// the linearizability checker. One seed replays exactly (nothing iterates a hashed collection).
public struct NodeSimConfig: Sendable {
    public var seed: UInt64 = 1
    /// Nodes per campus (2 or more puts forwarding under test: most nodes are not a key's replica).
    public var nodesPerCampus = 2
    public var clients = 6
    public var ops = 300
    public var counterKeys = 2
    public var registerKeys = 2
    public var loss = 0.03
    public var duplicate = 0.02
    public var delayTicksMax: UInt64 = 3
    /// Chance per tick that a fault starts (when none is active): crash, pause or isolation.
    public var fault = 0.004
    public var faultTicksMax: UInt64 = 300
    /// One tick of simulated time (what the core's nanosecond deadlines see).
    public var tickNanos: UInt64 = 5_000_000
    /// A client's own timeout (1 s), as a test harness has: a paused node never answers.
    public var clientTimeoutTicks: UInt64 = 200
    public var ticksMax: UInt64 = 200_000
    public var mutant: NodeMutant = .none
    /// Requests each key's de-dup window remembers (`PaxosConfig.dedupWindow`; small values
    /// stress exactly-once across forwards, relays and routes).
    public var dedupWindow = PaxosConfig().dedupWindow
    /// `NodeCoreOptions.routeSlack` (tests compare values).
    public var routeSlack = NodeCoreOptions().routeSlack
    public var checkStepsPerKeyMax = 2_000_000
    public init() {}

    /// The command that replays this run.
    public var replayCommand: String {
        "tern sim --nodes --seed \(seed) --nodes-per-campus \(nodesPerCampus)"
            + (dedupWindow == PaxosConfig().dedupWindow ? "" : " --dedup-window \(dedupWindow)")
            + (routeSlack == NodeCoreOptions().routeSlack ? "" : " --route-slack \(routeSlack)")
            + (mutant == .none ? "" : " --node-mutant \(mutant.rawValue)")
    }
}

public struct NodeSimResult: Sendable {
    public var config: NodeSimConfig
    public var history: [HistoryOperation]
    public var violations: [SimViolation]
    public var traceHash: UInt64
    public var ticks: UInt64
    public var messages = 0
    public var forwarded = 0
    /// Hot-key writes routed to another replica's proposer (part of `forwarded`), and routes taken
    /// back after they went silent.
    public var routed = 0
    public var routesTakenBack = 0
    /// Writes forwarded to a replica by another node and relayed to the replica proposing on the
    /// key (`NodeCore.relay`).
    public var relayed = 0
    /// Operations whose client got no definite answer (`.unknown`: a timeout, or a write that may
    /// have applied). Without faults there should be none.
    public var unanswered: Int { history.filter { $0.output == .unknown }.count }
    public var crashes = 0
    public var pauses = 0
    public var isolations = 0
    public var uncheckedKeys: [String] = []
    /// The longest stretch of simulated time (ms) in which no operation succeeded, while the
    /// workload ran (before the final heal): the availability gap the faults caused.
    public var longestGapMillis: UInt64 = 0
    /// The tick at which that gap began.
    public var longestGapAt: UInt64 = 0
    /// The same for the surviving nodes' clients (what issue 10's target and the real-process test
    /// measure): operations whose entry node was under no fault while they ran; a stretch counts
    /// while at least one of them is waiting and none succeeds. Requests sent to the frozen,
    /// crashed or isolated node itself are left out: nothing can answer them.
    public var survivorGapMillis: UInt64 = 0
    public var survivorGapAt: UInt64 = 0
    /// Per operation of `history`, the node its client sent it to (0-based); and the faults, as
    /// (node, first tick, last tick, what: crash, pause or isolation).
    public var entryNodes: [Int] = []
    public var faults: [(node: Int, from: UInt64, to: UInt64, kind: String)] = []
}

/// One placement per key: a node of each campus picked by the key's hash.
struct HashPlacement: ReplicaPlacement {
    let perCampus: Int
    func replicas(for key: [UInt8]) -> [NodeID] {
        var h: UInt64 = 0xCBF2_9CE4_8422_2325
        for b in key { h = (h ^ UInt64(b)) &* 0x0000_0100_0000_01B3 }
        return (0..<3).map { c in
            let i = Int((h >> UInt64(c * 16)) % UInt64(perCampus))
            return NodeID(UInt32(c + 3 * i + 1))
        }
    }
    /// The campus-A replica, as on the ring (`RingPlacement`).
    func fastAcceptOwner(for key: [UInt8]) -> NodeID? { replicas(for: key).first }
}

/// A node's disk: what was synced, and batches appended since (lost, from some batch on, in a crash).
final class SimDisk {
    var durable: [[UInt8]: [UInt8]] = [:]
    var unsynced: [[(key: [UInt8], value: [UInt8])]] = []
    func get(_ k: [UInt8]) -> [UInt8]? {
        for batch in unsynced.reversed() {
            if let r = batch.last(where: { $0.key == k }) { return r.value }
        }
        return durable[k]
    }
    func write(_ batch: [(key: [UInt8], value: [UInt8])], sync: Bool) {
        unsynced.append(batch)
        if sync { settle(unsynced.count) }
    }
    /// The first `keep` unsynced batches reach the disk; the rest are gone.
    func settle(_ keep: Int) {
        for batch in unsynced.prefix(keep) {
            for r in batch { durable[r.key] = r.value }
        }
        unsynced = []
    }
}

public final class NodeClusterSimulation {
    enum Input {
        case message(from: Int, bytes: [UInt8])
        case loaded([UInt8], incarnation: UInt64)
        case flushed(PreparedFlush, incarnation: UInt64)
        case request(client: Int, op: Int, key: String, KeyRequest)
    }
    struct Client {
        var busy: (history: Int, node: Int, wid: UInt64?, giveUpAt: UInt64)?
        var nextAt: UInt64 = 0
        var counter = 0
    }

    let config: NodeSimConfig
    var rng: SplitMix64
    let count: Int
    let placement: HashPlacement
    var cores: [NodeCore?]
    var disks: [SimDisk]
    var incarnation: [UInt64]
    var downUntil: [UInt64]
    var pausedUntil: [UInt64?]
    var isolated: Int?
    var isolatedUntil: UInt64 = 0
    var held: [[Input]]
    /// Inputs by arrival tick (node, input), in the order they were queued.
    var due: [UInt64: [(node: Int, input: Input)]] = [:]
    var clients: [Client] = []
    var history: [HistoryOperation] = []
    /// Per operation: the node the client sent it to, and the tick it ended (answered or given up).
    var entryNode: [Int] = []
    var endTick: [UInt64] = []
    /// Faults as (node, first tick, last tick, what).
    var faultWindows: [(node: Int, from: UInt64, to: UInt64, kind: String)] = []
    var now: UInt64 = 0
    var opsIssued = 0
    var healed = false
    var healedAt: UInt64 = .max / 4
    var finalReads: [String] = []
    var violations: [SimViolation] = []
    var hash: UInt64 = 0xCBF2_9CE4_8422_2325
    var result: NodeSimResult

    public init(_ config: NodeSimConfig) {
        self.config = config
        rng = SplitMix64(seed: config.seed ^ 0x4E0D_E5)
        count = 3 * max(config.nodesPerCampus, 1)
        placement = HashPlacement(perCampus: max(config.nodesPerCampus, 1))
        cores = Array(repeating: nil, count: count)
        disks = (0..<count).map { _ in SimDisk() }
        incarnation = Array(repeating: 0, count: count)
        downUntil = Array(repeating: 0, count: count)
        pausedUntil = Array(repeating: nil, count: count)
        held = Array(repeating: [], count: count)
        clients = Array(repeating: Client(), count: config.clients)
        result = NodeSimResult(config: config, history: [], violations: [], traceHash: 0, ticks: 0)
        for i in 0..<count { start(i) }
    }

    var nanos: UInt64 { now * config.tickNanos }
    var returnTime: UInt64 { 2 * now }
    var callTime: UInt64 { 2 * now + 1 }
    func mix(_ v: UInt64) { hash = (hash ^ v) &* 0x0000_0100_0000_01B3 }
    func key(_ s: String) -> [UInt8] { Array(s.utf8) }

    /// Starts (or restarts) node `i` from its disk: a new epoch, durable before anything is sent.
    func start(_ i: Int) {
        incarnation[i] += 1
        let d = disks[i]
        let stored = d.get(ReplicaNode.epochKey).map { LoadResult.state($0) } ?? .absent
        guard let next = try? ReplicaNode.nextEpoch(after: stored) else {
            violations.append(violation("storage", "-", "node \(i + 1): its epoch record is unreadable"))
            return
        }
        d.write([next.record], sync: true)
        var o = NodeCoreOptions()
        o.mutant = config.mutant
        o.paxos.dedupWindow = config.dedupWindow
        o.routeSlack = config.routeSlack
        cores[i] = NodeCore(
            id: NodeID(UInt32(i + 1)), campusIndex: i % 3, placement: placement, epoch: next.epoch,
            options: o,
            now: nanos)
    }

    public func run() -> NodeSimResult {
        while now < config.ticksMax && violations.isEmpty {
            step()
            if healed && finalReads.isEmpty && clients.allSatisfy({ $0.busy == nil }) { break }
        }
        if now >= config.ticksMax {
            violations.append(violation("liveness", "-", "did not finish within \(config.ticksMax) ticks"))
        }
        if violations.isEmpty { checkLinearizability() }
        for op in history {
            mix(op.call)
            mix(op.ret ?? 0)
        }
        // History times are half-ticks.
        let done = history.compactMap { op -> UInt64? in
            guard let r = op.ret, op.output != .failed, op.output != .unknown, r < healedAt * 2 else {
                return nil
            }
            return r
        }.sorted()
        for (a, b) in zip(done, done.dropFirst()) where b - a > result.longestGapMillis {
            result.longestGapMillis = b - a
            result.longestGapAt = a / 2
        }
        result.longestGapMillis = result.longestGapMillis * config.tickNanos / 2 / 1_000_000
        survivorGap()
        result.history = history
        result.violations = violations
        result.traceHash = hash
        result.ticks = now
        result.forwarded = cores.compactMap { $0?.counters.forwardedOut }.reduce(0, +)
        result.routed = cores.compactMap { $0?.counters.routed }.reduce(0, +)
        result.routesTakenBack = cores.compactMap { $0?.counters.routesTakenBack }.reduce(0, +)
        result.relayed = cores.compactMap { $0?.counters.relayed }.reduce(0, +)
        return result
    }

    /// `NodeSimResult.survivorGapMillis`: a sweep over the operations of healthy entry nodes.
    func survivorGap() {
        func healthy(_ k: Int) -> Bool {
            let from = history[k].call / 2
            let to = endTick[k]
            return !faultWindows.contains { $0.node == entryNode[k] && $0.from <= to && from <= $0.to }
        }
        // (tick, +1 start / 0 success / -1 other end), ends before starts at one tick.
        var events: [(UInt64, Int)] = []
        for k in history.indices where endTick[k] > 0 && endTick[k] < healedAt && healthy(k) {
            events.append((history[k].call / 2, 1))
            let ok = history[k].ret != nil && history[k].output != .failed
            events.append((endTick[k], ok ? 0 : -1))
        }
        events.sort { $0.0 != $1.0 ? $0.0 < $1.0 : $0.1 < $1.1 }
        var pending = 0
        var since: UInt64?
        var worst: (UInt64, UInt64) = (0, 0)
        for (t, kind) in events {
            if kind == 1 {
                pending += 1
                if pending == 1 { since = t }
                continue
            }
            pending -= 1
            if let a = since, t - a > worst.0 { worst = (t - a, a) }
            since = kind == 0 ? (pending > 0 ? t : nil) : (pending > 0 ? since : nil)
        }
        result.survivorGapMillis = worst.0 * config.tickNanos / 1_000_000
        result.survivorGapAt = worst.1
        result.entryNodes = entryNode
        result.faults = faultWindows
    }

    func step() {
        now += 1
        for i in 0..<count {
            if let until = pausedUntil[i], now >= until {
                pausedUntil[i] = nil
                let inputs = held[i]
                held[i] = []
                for input in inputs { deliver(i, input) }
            }
            if cores[i] == nil && now >= downUntil[i] { start(i) }
        }
        if isolated != nil && now >= isolatedUntil { isolated = nil }
        for (i, input) in due.removeValue(forKey: now) ?? [] { deliver(i, input) }
        if !healed { injectFaults() }
        clientsAct()
        for i in 0..<count where pausedUntil[i] == nil {
            guard let c = cores[i] else { continue }
            c.tick(now: nanos)
            drive(i)
        }
    }

    func deliver(_ i: Int, _ input: Input) {
        guard let core = cores[i] else {
            // A crashed process refuses the connection: certainly not applied.
            if case .request(let c, let op, _, _) = input, clients[c].busy?.history == op {
                finish(c, .failed)
            }
            return
        }
        if pausedUntil[i] != nil {
            held[i].append(input)
            return
        }
        switch input {
        case .message(let from, let bytes):
            core.receive(from: NodeID(UInt32(from + 1)), [bytes], now: nanos)
        case .loaded(let k, let inc):
            guard inc == incarnation[i] else { return }
            let d = disks[i]
            core.loaded(k, d.get(ReplicaNode.recordKey(k)).map { .state($0) } ?? .absent)
        case .flushed(let p, let inc):
            guard inc == incarnation[i] else { return }
            disks[i].write(p.records, sync: p.mustSync)
            core.flushed(p)
        case .request(let c, let op, let k, let r):
            let wid = core.request(key: key(k), r, now: nanos)
            // A request the client already gave up on still runs (it may apply), unanswered.
            if clients[c].busy?.history == op {
                clients[c].busy?.wid = wid
                clients[c].busy?.node = i
            }
        }
        drive(i)
    }

    func later(_ i: Int, _ input: Input, in ticks: UInt64) {
        due[now + ticks, default: []].append((i, input))
    }

    /// Carries out node `i`'s ready: messages through the faulty network, replies to clients,
    /// loads and batch writes a tick or two later.
    func drive(_ i: Int) {
        guard let core = cores[i] else { return }
        var rounds = 0
        while rounds < 8 {
            rounds += 1
            let r = core.ready()
            for m in r.messages {
                result.messages += 1
                let j = Int(m.to.rawValue) - 1
                mix(UInt64(i) << 8 | UInt64(j))
                if isolated == i || isolated == j || rng.chance(config.loss) { continue }
                let copies = rng.chance(config.duplicate) ? 2 : 1
                for _ in 0..<copies {
                    later(j, .message(from: i, bytes: m.bytes), in: 1 + rng.below(config.delayTicksMax))
                }
            }
            for (wid, reply) in r.replies { clientReply(node: i, wid: wid, reply) }
            for k in r.loads { later(i, .loaded(k, incarnation: incarnation[i]), in: 1 + rng.below(2)) }
            if let p = r.flush { later(i, .flushed(p, incarnation: incarnation[i]), in: 1 + rng.below(2)) }
            if !r.more { break }
        }
    }

    // MARK: - Faults (one at a time)

    func injectFaults() {
        let quiet = isolated == nil && cores.allSatisfy { $0 != nil } && pausedUntil.allSatisfy { $0 == nil }
        guard quiet, rng.chance(config.fault) else { return }
        let i = Int(rng.below(UInt64(count)))
        let length = 10 + rng.below(config.faultTicksMax)
        switch rng.below(3) {
        case 0:
            faultWindows.append((i, now, now + length, "crash"))
            result.crashes += 1
            cores[i] = nil
            incarnation[i] += 1
            // Power fails: a seeded prefix of the unsynced batches reached the disk.
            let d = disks[i]
            d.settle(Int(rng.below(UInt64(d.unsynced.count + 1))))
            downUntil[i] = now + length
            mix(0xC0FFEE &+ UInt64(i))
        case 1:
            faultWindows.append((i, now, now + length, "pause"))
            result.pauses += 1
            pausedUntil[i] = now + length
            mix(0x9A05E &+ UInt64(i))
        default:
            faultWindows.append((i, now, now + length, "isolation"))
            result.isolations += 1
            isolated = i
            isolatedUntil = now + length
            mix(0x150 &+ UInt64(i))
        }
    }

    // MARK: - Clients

    func clientsAct() {
        for c in clients.indices {
            if let b = clients[c].busy {
                // Its node crashed or the request was lost with it: the outcome is unknown.
                if now >= b.giveUpAt { finish(c, .unknown) }
                continue
            }
            guard now >= clients[c].nextAt else { continue }
            if !healed && opsIssued < config.ops {
                issue(c)
            } else if healed, c == 0, let k = finalReads.first {
                finalReads.removeFirst()
                begin(c, k, .get)
            }
        }
        if !healed && opsIssued >= config.ops && clients.allSatisfy({ $0.busy == nil }) {
            healed = true
            healedAt = now
            isolated = nil
            for i in 0..<count where pausedUntil[i] != nil { pausedUntil[i] = now + 1 }
            for i in 0..<count where cores[i] == nil { downUntil[i] = now + 1 }
            finalReads =
                (0..<config.counterKeys).map { "c\($0)" } + (0..<config.registerKeys).map { "r\($0)" }
            clients[0].nextAt = now + 20
        }
    }

    func issue(_ c: Int) {
        opsIssued += 1
        clients[c].counter += 1
        if config.registerKeys == 0 || (config.counterKeys > 0 && rng.chance(0.5)) {
            let k = "c\(rng.below(UInt64(config.counterKeys)))"
            begin(c, k, rng.chance(0.75) ? .incr(Int64(1 + rng.below(5))) : .get)
        } else {
            let k = "r\(rng.below(UInt64(config.registerKeys)))"
            switch rng.below(10) {
            case 0..<4: begin(c, k, .get)
            case 4..<9: begin(c, k, .put("v\(c).\(clients[c].counter)"))
            default: begin(c, k, .delete)
            }
        }
    }

    func begin(_ c: Int, _ k: String, _ input: OperationInput) {
        history.append(
            HistoryOperation(client: c, key: k, input: input, output: .unknown, call: callTime, ret: nil))
        let request: KeyRequest
        switch input {
        case .get: request = .read
        case .put(let v): request = .write(.put(Array(v.utf8)))
        case .delete: request = .write(.delete)
        case .incr(let d): request = .write(.incr(d))
        case .cas(let e, let v):
            request = .write(.cas(expected: e.map { Array($0.utf8) }, new: Array(v.utf8)))
        }
        // Any node (clients do not know the ring); the core routes. A client gives up after
        // `clientTimeoutTicks` (a paused node answers nothing); the outcome is then unknown.
        let i = Int(rng.below(UInt64(count)))
        clients[c].busy = (history.count - 1, i, nil, now + config.clientTimeoutTicks)
        entryNode.append(i)
        endTick.append(0)
        later(i, .request(client: c, op: history.count - 1, key: k, request), in: 1)
    }

    func clientReply(node i: Int, wid: UInt64, _ reply: NodeReply) {
        guard let c = clients.firstIndex(where: { $0.busy?.node == i && $0.busy?.wid == wid }) else { return }
        mix(UInt64(c) << 32 | wid)
        switch reply {
        case .done(let r):
            switch r {
            case .ok: finish(c, .ok)
            case .number(let n): finish(c, .number(n))
            case .swapped(let b): finish(c, .swapped(b))
            default:
                violations.append(
                    violation("workload", history[clients[c].busy!.history].key, "unexpected result \(r)"))
                finish(c, .unknown)
            }
        case .value(let v): finish(c, .value(v.map { String(decoding: $0, as: UTF8.self) }))
        case .typed(let v):
            violations.append(
                violation("workload", history[clients[c].busy!.history].key, "unexpected typed value \(v)"))
            finish(c, .unknown)
        case .notApplied, .refused: finish(c, .failed)
        case .unknown, .unavailable: finish(c, .unknown)
        }
    }

    func finish(_ c: Int, _ out: OperationOutput) {
        guard let b = clients[c].busy else { return }
        let isRead = history[b.history].input == .get
        // A read that failed tells nothing; a write that failed is certainly not applied.
        history[b.history].output = (out == .failed && isRead) ? .unknown : out
        history[b.history].ret = history[b.history].output == .unknown ? nil : returnTime
        endTick[b.history] = now
        clients[c].busy = nil
        clients[c].nextAt = now + rng.below(6)
    }

    // MARK: - Checks

    func violation(_ check: String, _ key: String, _ detail: String) -> SimViolation {
        SimViolation(
            seed: config.seed, check: check, key: key, detail: detail,
            subHistory: Array(history.filter { $0.key == key }.suffix(12)), replay: config.replayCommand)
    }

    func checkLinearizability() {
        let r = checkEveryKey(history, stepsPerKeyMax: config.checkStepsPerKeyMax)
        result.uncheckedKeys += r.unchecked
        if let (key, v) = r.violation {
            var bad = violation(
                "linearizability", key,
                "no linearization of these \(v.history.count) operations (shrunk from \(v.originalCount))")
            bad.subHistory = v.history
            violations.append(bad)
        }
    }
}

/// Runs one node-level simulation.
public func simulateNodes(_ config: NodeSimConfig) -> NodeSimResult { NodeClusterSimulation(config).run() }
