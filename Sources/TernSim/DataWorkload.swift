public import TernCheck
public import TernConsensus
import TernCore

/// Deliberately broken expiry (tests only), to prove the data workload's check can fail.
public enum DataMutant: String, Sendable, Hashable, CaseIterable {
    case none
    /// A read that meets a value past the serving node's horizon answers from it, without
    /// proposing its removal (the node trusts the value it read).
    case readsSkipExpiry = "reads-skip-expiry"
    /// Every node's horizon is its own clock, without the skew bound (the node trusts its clock).
    case horizonOwnClock = "horizon-own-clock"
    /// A transaction (MULTI … EXEC on one key) is applied command by command, each its own
    /// instance, instead of as one: the bug a refused MULTI once had (issue 12, "Unsafe today").
    case multiPiecemeal = "multi-piecemeal"
    /// With `--data-lists`: a seal proposed without its buckets written first (ListBucketSim.swift).
    case listSealUnwritten = "list-seal-unwritten"
    /// With `--data-lists`: a read of a bucketed list that ignores its entries' trims (the
    /// elements a partial unseal moved into the head, read again from the bucket they stay in).
    case listReadsIgnoreTrims = "list-reads-ignore-trims"
    /// With `--data-lists`: a read of a bucketed list answered from its head alone.
    case listReadsSkipBuckets = "list-reads-skip-buckets"
    /// With `--data-keyed`: a flush proposed without its buckets written first (KeyedBucketSim.swift).
    case keyedFlushUnwritten = "keyed-flush-unwritten"
    /// With `--data-keyed`: a read of a bucketed set or hash that ignores its overlay.
    case keyedReadsSkipOverlay = "keyed-reads-skip-overlay"
}

/// One data command as a simulated client saw it. Times are half-ticks, like `HistoryOperation`.
public struct DataOperation: Sendable, Hashable, CustomStringConvertible {
    public var client: Int
    public var key: String
    /// The normalised command (`Operation.data`'s arguments, or a read's), name first.
    public var args: [[UInt8]]
    public var write: Bool
    /// nil: no answer (the outcome is unknown).
    public var reply: DataReply?
    public var call: UInt64
    public var ret: UInt64?
    /// A write that certainly did not take effect (never reached an Accept).
    public var failed = false
    public var description: String {
        let cmd = args.map { String(decoding: $0, as: UTF8.self) }.joined(separator: " ")
        let out = failed ? "failed" : (reply.map(Self.render) ?? "unknown")
        return "client \(client) \(cmd) -> \(out) [\(call), \(ret.map(String.init) ?? "?")]"
    }
}

extension DataOperation {
    /// A reply as redis-cli would roughly show it.
    static func render(_ r: DataReply) -> String {
        switch r {
        case .ok: "OK"
        case .error(let e): "(error) \(e)"
        case .integer(let n): "\(n)"
        case .bulk(let b?): "\"\(String(decoding: b, as: UTF8.self))\""
        case .bulk(nil), .array(nil): "(nil)"
        case .array(let a?), .map(let a), .set(let a): "[" + a.map(render).joined(separator: " ") + "]"
        case .double(let d): DataModel.formatScore(d)
        case .status(let s): s
        }
    }
}

/// The data workload's state inside a `Simulation` (docs/DATA.md, "Simulator workload"): clients
/// running hash, sorted-set, set, list and expiring-string commands and one-key transactions
/// (MULTI … EXEC) on a few hot keys, each node's wall clock skewed within the bound, and the
/// history the timed checker judges.
struct DataWorkload {
    enum Phase {
        /// The command itself (a write, or a read's linearizable read).
        case command
        /// A read met a value past the horizon: the `expirecheck` write is in flight.
        case expireCheck
        /// A big list's upkeep (`--data-lists`, ListBucketSim.swift): the head read, the bucket
        /// writes, the maintenance command, the dropped buckets' deletes, bucket reads.
        case upkeepHead, upkeepPut, upkeepOp, upkeepDelete, upkeepBucket
        /// A read of a bucketed list reads the buckets its answer needs.
        case readBuckets
        var isListStep: Bool {
            switch self {
            case .command, .expireCheck: false
            default: true
            }
        }
    }
    struct Flight {
        var history: Int
        var key: [UInt8]
        var args: [[UInt8]]
        var write: Bool
        var rid: RequestID
        var node: Int
        var tag: UInt64 = 0
        var deadline: UInt64 = 0
        var attempts = 0
        var maybeApplied = false
        var delivered = false
        var phase = Phase.command
        /// Reads again after an `expirecheck` found the key written meanwhile.
        var rereads = 0
        /// The `multi-piecemeal` mutant: the transaction's commands, sent one instance each, and
        /// the replies so far.
        var pieces: [[[UInt8]]] = []
        var pieceReplies: [DataReply] = []
        /// A big list's upkeep or bucket reads (`--data-lists`).
        var list = ListFlight()
        /// A big set's or hash's upkeep, facts or bucket reads (`--data-keyed`).
        var keyed = KeyedFlight()
    }
    struct Client {
        var nextAt: UInt64
        var counter: UInt64 = 0
        var inFlight: Flight?
    }
    var clients: [Client] = []
    var tags: [UInt64: Int] = [:]
    var history: [DataOperation] = []
    var issued = 0
    /// Each node's clock offset from true time, within ± the skew bound.
    var skewMs: [Int64] = [0, 0, 0]
    /// `expirecheck` writes proposed by reads, and reads answered absent by them.
    var expireChecks = 0
    var expiredReads = 0
    /// Upkeep rounds the clients started by themselves (`--data-lists`).
    var upkeeps = 0
    var idle: Bool { clients.allSatisfy { $0.inFlight == nil } }
}

/// The data workload's numbers for one seed.
public struct DataStats: Sendable {
    public var history: [DataOperation] = []
    public var expireChecks = 0
    public var expiredReads = 0
    /// Each node's clock offset from true time (ms).
    public var skewMs: [Int64] = []
    /// Big-list upkeep rounds the clients started by themselves (`--data-lists`).
    public var listUpkeeps = 0
}

extension Simulation {
    /// Simulated wall time: a tick is the server's 5 ms tick, from an arbitrary Unix epoch moment.
    static let dataBaseMs: Int64 = 1_700_000_000_000
    static let dataMsPerTick: Int64 = 5
    func wallMs(tick: UInt64) -> Int64 { Self.dataBaseMs + Int64(tick) * Self.dataMsPerTick }
    /// Node `i`'s (skewed) wall clock now.
    func nodeClockMs(_ i: Int) -> Int64 { wallMs(tick: now) + data.skewMs[i] }
    /// Node `i`'s expiry horizon: its clock plus the bound (the mutant: its clock alone).
    func horizonMs(_ i: Int) -> UInt64 {
        let bound = config.dataMutant == .horizonOwnClock ? 0 : Int64(config.clockSkewBoundMs)
        return UInt64(nodeClockMs(i) + bound)
    }

    var dataDone: Bool { data.issued >= config.dataOps && data.idle }

    func dataSetUp() {
        guard config.dataOps > 0 else { return }
        let b = Int64(config.clockSkewBoundMs)
        for i in 0..<3 {
            // Mostly at the bound's edges (where expiry is hardest), sometimes in between.
            switch rng.below(3) {
            case 0: data.skewMs[i] = -b
            case 1: data.skewMs[i] = b
            default: data.skewMs[i] = Int64(rng.below(UInt64(2 * b + 1))) - b
            }
        }
        for _ in 0..<config.dataClients { data.clients.append(.init(nextAt: rng.below(5))) }
    }

    /// Feeds every running node its horizon (before it handles anything this tick).
    func dataClocks() {
        guard config.dataOps > 0 else { return }
        for i in 0..<3 { nodes[i]?.expiryHorizonMs = horizonMs(i) }
    }

    // MARK: Clients

    func dataAct() {
        guard config.dataOps > 0 else { return }
        for c in data.clients.indices {
            if let f = data.clients[c].inFlight {
                if now >= f.deadline { dataAttemptFailed(c, unknown: f.write && f.delivered) }
                continue
            }
            guard !healed, now >= data.clients[c].nextAt, data.issued < config.dataOps else { continue }
            dataIssue(c)
        }
    }

    private static func b(_ s: String) -> [UInt8] { Array(s.utf8) }

    func dataIssue(_ c: Int) {
        if listBucketsOn && rng.chance(0.12) {
            // A round of big-list upkeep on a hot list, racing the other clients' commands.
            listIssueUpkeep(c, key: Self.b("l" + String(rng.below(2))))
            return
        }
        if keyedBucketsOn && rng.chance(0.12) {
            // A round of big-set, big-hash or big-sorted-set upkeep (split, flush, join), racing
            // the commands.
            keyedIssueUpkeep(c, key: Self.b(["S0", "S1", "h0", "h1", "z0", "z1"][Int(rng.below(6))]))
            return
        }
        data.issued += 1
        data.clients[c].counter += 1
        let n = data.clients[c].counter
        let node = Int(rng.below(3))
        let kind = rng.below(5)
        let keyName =
            ["h", "z", "s", "S", "l"][Int(kind)] + String(rng.below(2)) + (config.dataGroups ? "{g}" : "")
        let k = Self.b(keyName)
        let value = Self.b("v\(c).\(n)")
        let deadline = String(nodeClockMs(node) + 10 + Int64(rng.below(400)))
        var args: [[UInt8]]
        var write = true
        let roll = rng.below(100)
        // Expiry commands on every kind of key; the rest by kind.
        if roll >= 88 && (kind == 0 || kind == 4) {
            // A transaction on the key: two or three writes as one instance (`multi key nowMs
            // guard (w n args…)…`, as EXEC sends it). Each reply shows the state it met (a list's
            // length, a counter's value), so an interleaved write shows.
            var subs: [[[UInt8]]] = []
            for j in 0..<(2 + Int(rng.below(2))) {
                if kind == 4 {
                    subs.append([Self.b(rng.chance(0.5) ? "rpush" : "lpush"), k, Self.b("t\(c).\(n).\(j)")])
                } else {
                    subs.append([Self.b("hincrby"), k, Self.b("n"), Self.b(String(rng.below(3) + 1))])
                }
            }
            args = [Self.b("multi"), k, Self.b(String(nodeClockMs(node))), Self.b("-")]
            for s in subs { args += [Self.b("w"), Self.b(String(s.count))] + s }
        } else if roll < 10 {
            let cond = ["", "", "nx", "xx", "gt", "lt"][Int(rng.below(6))]
            args = [Self.b("pexpireat"), k, Self.b(deadline), Self.b(String(horizonMs(node)))]
            if !cond.isEmpty { args.append(Self.b(cond)) }
        } else if roll < 20 {
            args = [Self.b("pttl"), k]
            write = false
        } else {
            let field = Self.b("f\(rng.below(3))")
            let member = Self.b("m\(rng.below(4))")
            let score = Self.b(String(Int64(rng.below(7)) - 2))
            switch (kind, rng.below(6)) {
            case (0, 0), (0, 1): args = [Self.b("hset"), k, field, value]
            case (0, 2): args = [Self.b("hdel"), k, field]
            case (0, 3): args = [Self.b("hincrby"), k, Self.b("n"), Self.b(String(rng.below(5) + 1))]
            case (0, 4):
                args = [Self.b("hgetall"), k]
                write = false
            case (0, _):
                args = [Self.b("hget"), k, rng.chance(0.5) ? field : Self.b("n")]
                write = false
            case (1, 0), (1, 1):
                var flags: [[UInt8]] = []
                switch rng.below(8) {
                case 0: flags = [Self.b("nx")]
                case 1: flags = [Self.b("xx"), Self.b("ch")]
                case 2: flags = [Self.b("gt")]
                case 3: flags = [Self.b("lt"), Self.b("ch")]
                case 4: flags = [Self.b("incr")]
                default: break
                }
                args = [Self.b("zadd"), k] + flags + [score, member]
            case (1, 2): args = [Self.b("zincrby"), k, score, member]
            case (1, 3): args = [Self.b("zrem"), k, member]
            case (1, 4):
                args = [Self.b("zrange"), k, Self.b("0"), Self.b("-1"), Self.b("withscores")]
                write = false
            case (1, _):
                switch rng.below(5) {
                case 0: args = [Self.b("zmscore"), k, member, Self.b("m\(rng.below(4))")]
                case 1: args = [Self.b("zcard"), k]
                case 2:
                    // Pops need the whole sorted set (a bucketed one is joined first).
                    args = [Self.b("zpopmin"), k]
                default: args = [Self.b("zscore"), k, member]
                }
                write = args[0] == Self.b("zpopmin")
            case (3, 0), (3, 1): args = [Self.b("sadd"), k, member, Self.b("m\(rng.below(4))")]
            case (3, 2): args = [Self.b("srem"), k, member]
            case (3, 3):
                args = [Self.b("smembers"), k]
                write = false
            case (3, 4):
                args = [Self.b("scard"), k]
                write = false
            case (3, _):
                args = [Self.b("sismember"), k, member]
                write = false
            case (4, 0):
                // Sometimes one repeated element: bucketed lists then seal chunks with equal
                // content, which must still be distinct bucket keys.
                args = [
                    Self.b("rpush"), k, rng.chance(0.3) ? Self.b("r") : value,
                    rng.chance(0.3) ? Self.b("r") : value,
                ]
            case (4, 1): args = [Self.b("lpush"), k, value, Self.b("w\(c).\(n)")]
            case (4, 2): args = [Self.b(rng.chance(0.5) ? "lpop" : "rpop"), k]
            case (4, 3):
                switch rng.below(3) {
                case 0: args = [Self.b("lrem"), k, Self.b("0"), value]
                case 1: args = [Self.b("ltrim"), k, Self.b("0"), Self.b("4")]
                default: args = [Self.b("lset"), k, Self.b("0"), value]
                }
            case (4, 4):
                args = [Self.b("lrange"), k, Self.b("0"), Self.b("-1")]
                write = false
            case (4, _):
                args = [Self.b("llen"), k]
                write = false
            case (_, 0), (_, 1):
                args = [Self.b("set"), k, value, Self.b("pxat"), Self.b(deadline)]
            case (_, 2): args = [Self.b("set"), k, value]
            default:
                args = [Self.b("get"), k]
                write = false
            }
        }
        data.history.append(
            DataOperation(
                client: c, key: keyName, args: args, write: write, reply: nil, call: callTime, ret: nil))
        data.clients[c].inFlight = DataWorkload.Flight(
            history: data.history.count - 1, key: k, args: args, write: write,
            rid: RequestID(client: UInt32(2000 + c), counter: n << 4), node: node)
        if config.dataMutant == .multiPiecemeal && args[0] == Self.b("multi") {
            var pieces: [[[UInt8]]] = []
            var i = 4
            while i + 1 < args.count, let count = Int(String(decoding: args[i + 1], as: UTF8.self)) {
                pieces.append(Array(args[(i + 2)..<(i + 2 + count)]))
                i += 2 + count
            }
            data.clients[c].inFlight?.pieces = pieces
        }
        dataSend(c)
    }

    /// Sends the flight's current step to its node: the command, or the `expirecheck` write.
    func dataSend(_ c: Int) {
        guard var f = data.clients[c].inFlight else { return }
        let tag = nextTag
        nextTag += 1
        data.tags[tag] = c
        f.tag = tag
        if f.phase == .command { f.attempts += 1 }
        f.deadline = now + config.clientTimeoutTicks
        f.delivered = nodes[f.node] != nil
        data.clients[c].inFlight = f
        guard let n = nodes[f.node] else { return }
        let key = f.key
        // With --data-groups the key is a member of its group key, as `Node.submit` routes it.
        let layout: KeyLayout = config.dataGroups ? .hashTagGroups : .perKey
        let propose = { (op: Operation, rid: RequestID) in
            let routed = layout.route(key, .write(op), groupBytesMax: 0)
            guard case .write(let o) = routed.request else { return }
            self.whenRunning(f.node) { n.propose(key: routed.key, o, id: rid, tag: tag) }
        }
        switch f.phase {
        case .command where f.write && !f.pieces.isEmpty:
            // The mutant: the transaction's next command as an instance of its own.
            let piece = f.pieces[f.pieceReplies.count]
            var rid = f.rid
            rid.counter += UInt64(f.pieceReplies.count)
            propose(.data(piece), rid)
        case .command where f.write:
            propose(.data(f.keyed.wrapped ?? f.args), f.rid)
        case .command:
            whenRunning(f.node) { n.read(key: layout.paxosKey(key), tag: tag) }
        case .upkeepHead, .upkeepPut, .upkeepOp, .upkeepDelete, .upkeepBucket, .readBuckets:
            if f.keyed.on { keyedSend(c, f, tag: tag) } else { listSend(c, f, tag: tag) }
        case .expireCheck:
            // The node's own request, as `Node.settleExpiry` submits it.
            data.expireChecks += 1
            let rid = RequestID(client: UInt32(3000 + c), counter: tag)
            propose(DataModel.expireCheck(key), rid)
        }
    }

    /// The attempt failed: retry once at another node (same request id, never a write that may
    /// have been applied: the clients' rule in `attemptFailed`), else give up.
    func dataAttemptFailed(_ c: Int, unknown: Bool) {
        guard var f = data.clients[c].inFlight else { return }
        if f.phase.isListStep && f.phase != .readBuckets {
            return f.keyed.on ? keyedUpkeepFailed(c) : listUpkeepFailed(c)
        }
        if unknown && f.write { f.maybeApplied = true }
        f.phase = .command
        if !(f.write && f.maybeApplied) && f.attempts < 2 {
            f.node = (f.node + 1) % 3
            data.clients[c].inFlight = f
            dataSend(c)
        } else {
            dataFinish(c, nil, failed: f.write && !f.maybeApplied)
        }
    }

    func dataReply(_ c: Int, _ outcome: ClientOutcome) {
        guard var f = data.clients[c].inFlight else { return }
        var outcome = outcome
        if config.dataGroups {
            // A read of the group answers the member's value (`KeyLayout.reply`, as the server).
            let member: NodeReply?
            switch outcome {
            case .value(let b): member = KeyLayout.hashTagGroups.reply(f.key, .value(b))
            case .typed(let v): member = KeyLayout.hashTagGroups.reply(f.key, .typed(v))
            default: member = nil
            }
            switch member {
            case .value(let b)?: outcome = .value(b)
            case .typed(let v)?: outcome = .typed(v)
            default: break
            }
        }
        if f.phase.isListStep { return f.keyed.on ? keyedReply(c, outcome) : listReply(c, outcome) }
        switch (f.phase, outcome) {
        case (_, .retryable): dataAttemptFailed(c, unknown: false)
        case (_, .unknown): dataAttemptFailed(c, unknown: true)
        case (.command, .done(.data(let r))) where f.write && !f.pieces.isEmpty:
            f.pieceReplies.append(r)
            data.clients[c].inFlight = f
            if f.pieceReplies.count < f.pieces.count {
                dataSend(c)
            } else {
                dataFinish(c, .array(f.pieceReplies))
            }
        case (.command, .done(.data(let r))) where f.write:
            if listBucketsOn, let need = ListBuckets.need(r) { return listStartUpkeep(c, need) }
            if keyedBucketsOn, let need = KeyedBuckets.need(r) { return keyedStartUpkeep(c, need) }
            dataFinish(c, r)
        case (.command, .done) where f.write:
            // A large reply forgotten by a retry's time: applied, answer unknown.
            f.maybeApplied = true
            data.clients[c].inFlight = f
            dataFinish(c, nil)
        case (.command, .value(let b)):
            dataSettle(c, b.map { StoredValue(kind: .string, deadlineMs: 0, bytes: $0) })
        case (.command, .typed(let v)):
            dataSettle(c, v)
        case (.expireCheck, .done(let r)):
            switch DataModel.afterExpireCheck(r) {
            case true?:
                data.expiredReads += 1
                dataFinish(c, DataModel.read(f.args, nil, nowMs: UInt64(nodeClockMs(f.node))))
            case false? where f.rereads < 3, nil where f.rereads < 3:
                f.rereads += 1
                f.phase = .command
                data.clients[c].inFlight = f
                dataSend(c)
            default:
                dataFinish(c, nil)
            }
        default:
            violations.append(
                violation(
                    check: "workload", key: String(decoding: f.key, as: UTF8.self),
                    detail: "unexpected \(outcome)"))
            dataFinish(c, nil)
        }
    }

    /// A read returned `v` at node `f.node`: answer from it, or remove it through the protocol
    /// first (the shell's rule, `DataModel.settle`).
    func dataSettle(_ c: Int, _ v: StoredValue?) {
        guard var f = data.clients[c].inFlight else { return }
        let decision =
            config.dataMutant == .readsSkipExpiry
            ? .answer(v) : DataModel.settle(v, horizonMs: horizonMs(f.node))
        switch decision {
        case .answer(let v):
            if let v, listRead(c, v) { return }
            if let v, keyedRead(c, v) { return }
            dataFinish(c, DataModel.read(f.args, v, nowMs: UInt64(nodeClockMs(f.node))))
        case .expire:
            f.phase = .expireCheck
            data.clients[c].inFlight = f
            dataSend(c)
        }
    }

    func dataFinish(_ c: Int, _ reply: DataReply?, failed: Bool = false) {
        guard let f = data.clients[c].inFlight else { return }
        data.history[f.history].reply = reply
        data.history[f.history].ret = reply == nil ? nil : returnTime
        data.history[f.history].failed = failed
        data.clients[c].inFlight = nil
        data.clients[c].nextAt = now + rng.below(6)
        mix(UInt64(f.history) << 3 | UInt64(c) | 0xDA7A_0000_0000)
    }

    // MARK: Check

    /// Every data key's history through the timed checker against `DataSpec` (the data model
    /// itself, with the expiry rule).
    func checkData() {
        guard config.dataOps > 0 else { return }
        let spec = DataSpec(boundMs: Int64(config.clockSkewBoundMs))
        var keys: [String] = []
        for op in data.history where !keys.contains(op.key) { keys.append(op.key) }
        for key in keys.sorted() {
            let ops = data.history.filter { $0.key == key && !$0.failed && ($0.write || $0.ret != nil) }
            let timed = ops.map { op in
                TimedOperation(
                    op: DataSpec.Op(args: op.args, write: op.write, reply: op.reply, callMs: wall(op.call)),
                    call: op.call, ret: op.ret, callTime: wall(op.call), returnTime: op.ret.map(wall) ?? .max)
            }
            switch checkTimedLinearizable(timed, spec: spec, stepsMax: config.checkStepsPerKeyMax) {
            case .linearizable: continue
            case .unknown: uncheckedKeys.append(key)
            case .violation(let deepest):
                var detail =
                    "no linearization of these \(ops.count) data operations with the expiry rule "
                    + "(bound \(config.clockSkewBoundMs) ms, node clock offsets \(data.skewMs) ms); "
                    + "the deepest order found, then the operation it could not place:"
                for i in deepest.suffix(14) {
                    detail += "\n    \(ops[i]) at \(wall(ops[i].call) - Self.dataBaseMs) ms"
                }
                violations.append(violation(check: "data-linearizability", key: key, detail: detail))
                return
            }
        }
    }

    /// True milliseconds of a half-tick history time.
    func wall(_ halfTick: UInt64) -> Int64 { wallMs(tick: halfTick / 2) }

    func dataResult() -> DataStats {
        DataStats(
            history: data.history, expireChecks: data.expireChecks, expiredReads: data.expiredReads,
            skewMs: data.skewMs, listUpkeeps: data.upkeeps)
    }
}

/// The sequential specification of one key under the data model, with the expiry rule
/// (docs/DATA.md, "Simulator workload"). The state is the key's value (nil: absent).
///
/// - A write applies `DataModel.apply` to the value. If its call came at or after the value's
///   deadline (true time), the value is gone first: the proposer applied it at or after the call,
///   with a horizon at or past true time.
/// - A read answers `DataModel.read` from the value; if it takes effect at or after the deadline
///   the value is gone (the node that served it would have seen the deadline at or below its
///   horizon). PTTL's remaining time is compared within the node clock's uncertainty.
/// - A value with a deadline may vanish on its own (a node's `expirecheck`, or any write it
///   proposes) at any time from `deadline − 2 × bound` on: the earliest a node whose clock runs
///   a bound ahead has the deadline at or below its horizon.
struct DataSpec: TimedSpec {
    struct Op {
        var args: [[UInt8]]
        var write: Bool
        var reply: DataReply?
        var callMs: Int64
    }
    let boundMs: Int64
    var initial: StoredValue? { nil }

    func successors(of state: StoredValue?, _ op: Op, at time: Int64, known: Bool, returnTime: Int64)
        -> [(StoredValue?, Int64)]
    {
        var starts: [(StoredValue?, Int64)] = [(state, time)]
        if let v = state, v.deadlineMs != 0 {
            let d = Int64(v.deadlineMs)
            if (op.write ? op.callMs : time) >= d {
                starts = [(nil, time)]
            } else {
                starts.append((nil, max(time, d - 2 * boundMs)))
            }
        }
        var out: [(StoredValue?, Int64)] = []
        for (s, t) in starts {
            if op.write {
                var kv = KeyValue(bytes: s?.bytes, kind: s?.kind ?? .string, deadlineMs: s?.deadlineMs ?? 0)
                let r = DataModel.apply(op.args, to: &kv, seed: 0)
                if known && r != op.reply { continue }
                out.append(
                    (kv.bytes.map { StoredValue(kind: kv.kind, deadlineMs: kv.deadlineMs, bytes: $0) }, t))
            } else if readMatches(op, s, at: t, returnTime: returnTime) {
                out.append((s, t))
            }
        }
        return out
    }

    /// A reply whose order Redis does not promise (SMEMBERS' set, HGETALL's map) in one canonical
    /// order: a big set or hash kept in buckets (`--data-keyed`) lists its members in bucket order.
    static func unordered(_ r: DataReply) -> DataReply {
        switch r {
        case .set(let a): return .set(a.sorted { DataOperation.render($0) < DataOperation.render($1) })
        case .map(let a):
            var pairs: [(DataReply, DataReply)] = []
            var k = 0
            while k + 1 < a.count {
                pairs.append((a[k], a[k + 1]))
                k += 2
            }
            pairs.sort { DataOperation.render($0.0) < DataOperation.render($1.0) }
            return .map(pairs.flatMap { [$0.0, $0.1] })
        default: return r
        }
    }

    /// PTTL is computed from the serving node's clock when the answer left it, some time in
    /// [t, return] and off by at most the bound: any remaining time in that window is right.
    func readMatches(_ op: Op, _ s: StoredValue?, at t: Int64, returnTime: Int64) -> Bool {
        guard op.args.first == Array("pttl".utf8), let v = s, v.deadlineMs != 0 else {
            return op.reply.map(Self.unordered) == Self.unordered(DataModel.read(op.args, s, nowMs: 0))
        }
        guard case .integer(let p)? = op.reply else { return false }
        let d = Int64(v.deadlineMs)
        return p >= max(0, d - returnTime - boundMs) && p <= max(0, d - t + boundMs)
    }
}
