import TernCheck
import TernConsensus
import TernCore

/// Big lists kept in buckets under the simulator (docs/DATA.md, "Big lists"; `--data-lists`): the
/// data workload's list keys become bucketed (buckets of `bucketElements`, small so that seals,
/// unseals and joins happen all the time), clients do the upkeep a write's answer asks for and
/// run the write again, as `Node` does (TernServer/Lists.swift), and also start upkeep rounds of
/// their own on the hot lists, racing the other clients' commands. Reads of a bucketed head read
/// the buckets their answer needs. The upkeep is not in the history: the checker sees only the
/// clients' commands, so a seal, unseal or join that changed a list's elements shows as a
/// linearizability violation; a head that lists a bucket a read found absent is a violation of
/// its own ("list-buckets").
struct ListFlight {
    /// What the upkeep does (nil: none under way).
    var need: ListBuckets.Need?
    /// An upkeep round the client started by itself: no command of the history waits for it.
    var proactive = false
    var head: ListBuckets?
    /// The same head as a read sees it (the server's read path, `ListHeadView`).
    var view: ListHeadView?
    /// Bucket writes (key, value) still to send, in order.
    var puts: [([UInt8], [UInt8])] = []
    /// The maintenance command to propose once the buckets are read or written.
    var op: [[UInt8]] = []
    /// Bucket keys to delete once `op` applied.
    var drops: [[UInt8]] = []
    /// Index positions of the head's buckets still to read, and those read.
    var wanted: [Int] = []
    var fetched: [Int: [[UInt8]]] = [:]
    /// Upkeep rounds this command went through (bounded).
    var rounds = 0
    /// Head reads again after a bucket was found gone.
    var rereads = 0
    /// The bucket a read found absent (checked against the head read next).
    var missing: [UInt8]?
}

extension Simulation {
    static let simBucketElements = 3
    private static func w(_ s: String) -> [UInt8] { Array(s.utf8) }
    var listBucketsOn: Bool { config.dataLists && !config.dataGroups }

    /// A client's own upkeep round on list `k`: make it bucketed, seal, unseal or join.
    func listIssueUpkeep(_ c: Int, key k: [UInt8]) {
        let need: ListBuckets.Need
        switch rng.below(5) {
        case 0: need = .seal(left: true)
        case 1: need = .seal(left: false)
        case 2: need = .unseal(left: true)
        case 3: need = .unseal(left: false)
        default: need = .join
        }
        data.clients[c].counter += 1
        let n = data.clients[c].counter
        var f = DataWorkload.Flight(
            history: -1, key: k, args: [], write: true,
            rid: RequestID(client: UInt32(2000 + c), counter: n << 4),
            node: Int(rng.below(3)))
        f.list.need = need
        f.list.proactive = true
        f.phase = .upkeepHead
        data.clients[c].inFlight = f
        data.upkeeps += 1
        dataSend(c)
    }

    /// A write answered `need`: the upkeep first, then the write again.
    func listStartUpkeep(_ c: Int, _ need: ListBuckets.Need) {
        guard var f = data.clients[c].inFlight else { return }
        f.list.rounds += 1
        guard f.list.rounds <= 8 else {
            // Never applied: every attempt answered a need.
            dataFinish(c, nil, failed: true)
            return
        }
        f.list.need = need
        f.phase = .upkeepHead
        data.clients[c].inFlight = f
        dataSend(c)
    }

    /// Sends the upkeep's or the bucket read's current step.
    func listSend(_ c: Int, _ f: DataWorkload.Flight, tag: UInt64) {
        guard let n = nodes[f.node] else { return }
        let rid = RequestID(client: UInt32(4000 + c), counter: tag)
        switch f.phase {
        case .upkeepHead:
            if f.list.proactive && f.list.missing == nil && rng.chance(0.5) {
                // As the server's own upkeep starts (`Node.noteListOp`): from the node's copy of
                // the head, not a linearizable read — possibly stale; the upkeep's operations must
                // then fail to apply, never change the list.
                whenRunning(f.node) {
                    let v = n.inspect(f.key)?.state.value
                    let outcome: ClientOutcome =
                        v?.stored.map { .typed($0) } ?? .value(v?.bytes)
                    self.pendingReplies.append((self.now + 1, ClientReply(tag: tag, outcome: outcome)))
                }
                return
            }
            whenRunning(f.node) { n.read(key: f.key, tag: tag) }
        case .upkeepPut:
            let (k, v) = f.list.puts[0]
            whenRunning(f.node) { n.propose(key: k, .put(v), id: rid, tag: tag) }
        case .upkeepOp:
            let op = f.list.op
            whenRunning(f.node) { n.propose(key: f.key, .data(op), id: rid, tag: tag) }
        case .upkeepDelete:
            let k = f.list.drops[0]
            whenRunning(f.node) { n.propose(key: k, .delete, id: rid, tag: tag) }
        case .upkeepBucket, .readBuckets:
            guard let h = f.list.head, let k = f.list.wanted.first else { return }
            let bk = ListBuckets.bucketKey(list: f.key, nonce: h.nonce, entry: h.index[k])
            whenRunning(f.node) { n.read(key: bk, tag: tag) }
        default:
            return
        }
    }

    /// Ends an upkeep: the command runs again under a fresh request id, or a client's own round ends.
    func listUpkeepDone(_ c: Int) {
        guard var f = data.clients[c].inFlight else { return }
        f.list.need = nil
        f.list.puts = []
        f.list.op = []
        f.list.drops = []
        f.list.wanted = []
        f.list.fetched = [:]
        f.list.head = nil
        if f.list.proactive {
            data.clients[c].inFlight = nil
            data.clients[c].nextAt = now + rng.below(6)
            return
        }
        f.phase = .command
        f.rid.counter += 1
        f.attempts = 0
        f.maybeApplied = false
        data.clients[c].inFlight = f
        dataSend(c)
    }

    /// An upkeep step failed (a timeout, a node down): the round is given up; the command it ran
    /// for was not applied (every attempt answered a need).
    func listUpkeepFailed(_ c: Int) {
        guard let f = data.clients[c].inFlight else { return }
        if f.list.proactive {
            data.clients[c].inFlight = nil
            data.clients[c].nextAt = now + rng.below(6)
        } else {
            dataFinish(c, nil, failed: true)
        }
    }

    /// A reply to an upkeep step or a bucket read.
    func listReply(_ c: Int, _ outcome: ClientOutcome) {
        guard var f = data.clients[c].inFlight else { return }
        switch outcome {
        case .retryable, .unknown:
            if f.phase == .readBuckets {
                dataAttemptFailed(c, unknown: false)
            } else {
                listUpkeepFailed(c)
            }
            return
        default: break
        }
        switch f.phase {
        case .upkeepHead:
            let v: StoredValue?
            switch outcome {
            case .typed(let t): v = t
            default: v = nil
            }
            guard let v, v.kind == .list else { return listUpkeepDone(c) }
            listPlan(c, &f, v)
        case .upkeepPut:
            guard case .done = outcome else { return listUpkeepFailed(c) }
            f.list.puts.removeFirst()
            f.phase = f.list.puts.isEmpty ? .upkeepOp : .upkeepPut
            data.clients[c].inFlight = f
            dataSend(c)
        case .upkeepOp:
            guard case .done(.data(let r)) = outcome else { return listUpkeepFailed(c) }
            let segmented = f.list.op.first == Self.w("lsegment")
            if r == .integer(1) && !f.list.drops.isEmpty {
                f.phase = .upkeepDelete
                data.clients[c].inFlight = f
                return dataSend(c)
            }
            if segmented && f.list.rounds < 8 {
                // Made bucketed: now seal what the write asked for.
                f.list.rounds += 1
                f.phase = .upkeepHead
                data.clients[c].inFlight = f
                return dataSend(c)
            }
            listUpkeepDone(c)
        case .upkeepDelete:
            f.list.drops.removeFirst()
            if f.list.drops.isEmpty { return listUpkeepDone(c) }
            data.clients[c].inFlight = f
            dataSend(c)
        case .upkeepBucket, .readBuckets:
            guard let h = f.list.head, let k = f.list.wanted.first else { return listUpkeepDone(c) }
            let bk = ListBuckets.bucketKey(list: f.key, nonce: h.nonce, entry: h.index[k])
            guard case .value(let b?) = outcome,
                let (list, items) = ListBuckets.parseBucketValue(b, hash: h.index[k].hash), list == f.key
            else {
                // Gone: a pop or a join dropped it meanwhile. Read the head again; if it still
                // lists this bucket, the bucket was lost.
                f.list.missing = bk
                f.list.rereads += 1
                guard f.list.rereads <= 4 else {
                    if f.phase == .readBuckets { return dataFinish(c, nil) }
                    return listUpkeepFailed(c)
                }
                f.list.wanted = []
                f.list.fetched = [:]
                if f.phase == .readBuckets { f.phase = .command } else { f.phase = .upkeepHead }
                data.clients[c].inFlight = f
                return dataSend(c)
            }
            f.list.fetched[k] = items
            f.list.wanted.removeFirst()
            if !f.list.wanted.isEmpty {
                data.clients[c].inFlight = f
                return dataSend(c)
            }
            if f.phase == .readBuckets {
                data.clients[c].inFlight = f
                return listAnswer(c, f)
            }
            listOp(c, &f)
        default:
            return
        }
    }

    /// A head read found `v` (the list's key holds a list): decide the upkeep's steps.
    func listPlan(_ c: Int, _ f: inout DataWorkload.Flight, _ v: StoredValue) {
        listCheckMissing(f, v)
        f.list.missing = nil
        guard let need = f.list.need else { return listUpkeepDone(c) }
        guard let h = ListBuckets(v.bytes) else {
            // A plain list: make it bucketed (a seal's first step, or a client's own round).
            guard case .seal = need, !v.bytes.isEmpty else { return listUpkeepDone(c) }
            f.list.op = [
                Self.w("lsegment"), f.key, Self.w(String(rng.next() | 1)),
                Self.w(String(Self.simBucketElements)),
                Self.w("4096"),
            ]
            f.phase = .upkeepOp
            data.clients[c].inFlight = f
            return dataSend(c)
        }
        f.list.head = h
        switch need {
        case .seal(let left):
            // The end asked for, or else the other; the end bucket read first when the seal
            // may merge into it (as `Node.sealList`).
            var side = left
            if !h.full(side ? h.front : h.back) { side.toggle() }
            guard h.full(side ? h.front : h.back) else { return listUpkeepDone(c) }
            f.list.need = .seal(left: side)
            if h.sealNeedsEndBucket(left: side) {
                f.list.wanted = [side ? 0 : h.index.count - 1]
                f.phase = .upkeepBucket
            } else {
                guard listSealSteps(&f, h, left: side, endItems: nil) else { return listUpkeepDone(c) }
            }
        case .unseal(let left):
            guard !h.index.isEmpty else { return listUpkeepDone(c) }
            f.list.wanted = [left ? 0 : h.index.count - 1]
            f.phase = .upkeepBucket
        case .join:
            f.list.wanted = Array(h.index.indices)
            guard !f.list.wanted.isEmpty else { return listUpkeepDone(c) }
            f.phase = .upkeepBucket
        }
        data.clients[c].inFlight = f
        dataSend(c)
    }

    /// The steps of a seal of head `h`'s end (`ListBuckets.sealPlan`): the buckets to write, then
    /// `lseal` or `lmerge`, then the merged bucket to delete. False: nothing to seal.
    func listSealSteps(_ f: inout DataWorkload.Flight, _ h: ListBuckets, left: Bool, endItems: [[UInt8]]?)
        -> Bool
    {
        var op = [
            Self.w("lseal"), f.key, Self.w(String(h.nonce)), Self.w(String(h.gen)),
            Self.w(left ? "left" : "right"),
        ]
        let chunks: [[[UInt8]]]
        f.list.drops = []
        switch h.sealPlan(left: left, endItems: endItems) {
        case .none: return false
        case .seal(let cs): chunks = cs
        case .merge(let old, let oldItems, let items):
            chunks = [items]
            op[0] = Self.w("lmerge")
            op += [
                Self.w(String(items.count)), Self.w(String(XXH64.hash(DataModel.encodeItems(items)))),
                Self.w(String(old.hash)), DataModel.encodeItems(oldItems),
            ]
            f.list.drops = [ListBuckets.bucketKey(list: f.key, nonce: h.nonce, entry: old)]
        }
        var puts: [([UInt8], [UInt8])] = []
        for (i, ch) in chunks.enumerated() {
            let enc = DataModel.encodeItems(ch)
            let e = ListBuckets.Entry(gen: h.gen &+ UInt32(i), hash: XXH64.hash(enc), count: UInt32(ch.count))
            puts.append(
                (
                    ListBuckets.bucketKey(list: f.key, nonce: h.nonce, entry: e),
                    ListBuckets.bucketValue(list: f.key, encoding: enc)
                ))
            if f.list.drops.isEmpty { op += [Self.w(String(ch.count)), Self.w(String(e.hash))] }
        }
        f.list.op = op
        // The mutant: the seal proposed without its buckets written.
        f.list.puts = config.dataMutant == .listSealUnwritten ? [] : puts
        f.phase = f.list.puts.isEmpty ? .upkeepOp : .upkeepPut
        return true
    }

    /// The buckets an unseal or a join needs are read: propose it.
    func listOp(_ c: Int, _ f: inout DataWorkload.Flight) {
        guard let h = f.list.head, let need = f.list.need else { return listUpkeepDone(c) }
        let encs = h.index.indices.compactMap { f.list.fetched[$0].map(DataModel.encodeItems) }
        switch need {
        case .unseal(let left):
            let k = left ? 0 : h.index.count - 1
            guard let items = f.list.fetched[k], let visible = h.index[k].visible(items) else {
                return listUpkeepDone(c)
            }
            f.list.op = [
                Self.w("lunseal"), f.key, Self.w(String(h.nonce)), Self.w(left ? "left" : "right"),
                Self.w(String(h.index[k].hash)), DataModel.encodeItems(items),
            ]
            // Half the time only the bucket's outer part comes back, the head's entry trimmed and
            // the bucket kept (as the node's own upkeep does, `Node.unsealList`); the last part
            // back drops it.
            if rng.chance(0.5), visible.count > 1 {
                let take =
                    h.unsealTake(left: left, items: visible) ?? Int(1 + rng.below(UInt64(visible.count - 1)))
                f.list.op.append(Self.w(String(take)))
            } else {
                f.list.drops = [ListBuckets.bucketKey(list: f.key, nonce: h.nonce, entry: h.index[k])]
            }
        case .join:
            f.list.op = [Self.w("ljoin"), f.key, Self.w(String(h.nonce))] + encs
            f.list.drops = h.index.map { ListBuckets.bucketKey(list: f.key, nonce: h.nonce, entry: $0) }
        case .seal(let left):
            guard listSealSteps(&f, h, left: left, endItems: f.list.fetched[left ? 0 : h.index.count - 1])
            else {
                return listUpkeepDone(c)
            }
            data.clients[c].inFlight = f
            return dataSend(c)
        }
        f.phase = .upkeepOp
        data.clients[c].inFlight = f
        dataSend(c)
    }

    /// A head read after a bucket read found the bucket absent: if the head still lists it, it was
    /// lost (a bucket leaves a head before it is deleted, and never comes back).
    func listCheckMissing(_ f: DataWorkload.Flight, _ v: StoredValue?) {
        guard let bk = f.list.missing, let v, let h = ListBuckets(v.bytes) else { return }
        if h.index.contains(where: { ListBuckets.bucketKey(list: f.key, nonce: h.nonce, entry: $0) == bk }) {
            violations.append(
                violation(
                    check: "list-buckets", key: String(decoding: f.key, as: UTF8.self),
                    detail: "the head lists a bucket that a linearizable read found absent"))
        }
    }

    /// A read command met a bucketed head `v`: answer from the head, or read its buckets first.
    /// True when it took the read over.
    func listRead(_ c: Int, _ v: StoredValue) -> Bool {
        guard listBucketsOn, v.kind == .list, var h = ListBuckets(v.bytes),
            var f = data.clients[c].inFlight
        else { return false }
        listCheckMissing(f, v)
        f.list.missing = nil
        let name = String(decoding: f.args[0], as: UTF8.self)
        if ["type", "ttl", "pttl", "expiretime", "pexpiretime"].contains(name) { return false }
        var bytes = v.bytes
        if config.dataMutant == .listReadsIgnoreTrims {
            // The mutant: every bucket read whole, as if no partial unseal had trimmed it.
            for k in h.index.indices {
                h.index[k].count = UInt32(h.index[k].stored)
                h.index[k].lo = 0
                h.index[k].hi = 0
            }
            bytes = h.encoded
        }
        f.list.head = h
        guard let view = ListHeadView(bytes) else { return false }
        f.list.view = view
        switch DataModel.listReadPlan(f.args, view) {
        case .answer(let r):
            data.clients[c].inFlight = f
            dataFinish(c, r)
            return true
        case .buckets(let ks): f.list.wanted = ks
        case .whole: f.list.wanted = Array(h.index.indices)
        }
        f.list.fetched = [:]
        // The mutant: the answer from the head alone, as if its buckets held nothing.
        if config.dataMutant == .listReadsSkipBuckets {
            f.list.wanted = []
            data.clients[c].inFlight = f
            listAnswer(c, f)
            return true
        }
        f.phase = .readBuckets
        data.clients[c].inFlight = f
        dataSend(c)
        return true
    }

    /// Every bucket the read needs is here: its answer.
    func listAnswer(_ c: Int, _ f: DataWorkload.Flight) {
        guard let h = f.list.head, let view = f.list.view else { return }
        let reply: DataReply
        switch DataModel.listReadPlan(f.args, view) {
        case .answer(let r): reply = r
        case .buckets: reply = DataModel.listAnswer(f.args, view, f.list.fetched)
        case .whole:
            let all = h.assembled(h.index.indices.map { f.list.fetched[$0] ?? [] })
            let v = StoredValue(kind: .list, deadlineMs: 0, bytes: DataModel.encodeItems(all))
            reply = DataModel.read(f.args, v, nowMs: UInt64(nodeClockMs(f.node)))
        }
        dataFinish(c, reply)
    }
}
