import TernCheck
import TernConsensus
import TernCore

/// Big sets, hashes and sorted sets kept in buckets under the simulator (docs/DATA.md, "Big sets, hashes and
/// sorted sets"; `--data-keyed`): the data workload's set, hash and sorted-set keys become bucketed (buckets of one or two
/// members, so that splits, flushes and joins happen all the time), the clients do the upkeep a
/// write's answer asks for (facts read from the members' buckets, a flush, a join) and run the
/// write again, as `Node` does (TernServer/KeyedCollections.swift), and also start upkeep rounds of
/// their own, racing the other clients' commands. Reads of a head read the buckets their answer
/// needs. The upkeep is not in the history: a split, flush or join that changed a collection shows
/// as a linearizability violation; a head that lists a bucket a read found absent is a violation
/// of its own ("keyed-buckets").
struct KeyedFlight {
    /// This flight's upkeep steps are a set's or hash's (not a list's).
    var on = false
    var need: KeyedBuckets.Need?
    /// An upkeep round the client started by itself: no command of the history waits for it.
    var proactive = false
    var head: KeyedBuckets?
    var kind: ValueKind = .set
    var deadlineMs: UInt64 = 0
    /// Bucket writes (key, value) still to send, in order.
    var puts: [([UInt8], [UInt8])] = []
    /// The upkeep command to propose once the buckets are read or written.
    var op: [[UInt8]] = []
    /// Bucket keys to delete once `op` applied.
    var drops: [[UInt8]] = []
    var wanted: [Int] = []
    var fetched: [Int: [[UInt8]]] = [:]
    var rounds = 0
    var rereads = 0
    var missing: [UInt8]?
    /// The command wrapped with facts (`kf facts args…`), sent instead of the command itself.
    var wrapped: [[UInt8]]?
}

extension Simulation {
    private static func w(_ s: String) -> [UInt8] { Array(s.utf8) }
    var keyedBucketsOn: Bool { config.dataKeyed && !config.dataGroups }

    func bucketKey(_ f: DataWorkload.Flight, _ h: KeyedBuckets, _ k: Int) -> [UInt8] {
        KeyedBuckets.bucketKey(of: f.key, nonce: h.nonce, entry: h.index[k])
    }

    /// A client's own upkeep round on set or hash `k`: make it bucketed, flush it, or join it.
    func keyedIssueUpkeep(_ c: Int, key k: [UInt8]) {
        let need: KeyedBuckets.Need = [.split, .split, .flush, .flush, .join][Int(rng.below(5))]
        data.clients[c].counter += 1
        let n = data.clients[c].counter
        var f = DataWorkload.Flight(
            history: -1, key: k, args: [], write: true,
            rid: RequestID(client: UInt32(2000 + c), counter: n << 4),
            node: Int(rng.below(3)))
        f.keyed.on = true
        f.keyed.need = need
        f.keyed.proactive = true
        f.phase = .upkeepHead
        data.clients[c].inFlight = f
        data.upkeeps += 1
        dataSend(c)
    }

    /// A write answered `need`: the upkeep first, then the write again.
    func keyedStartUpkeep(_ c: Int, _ need: KeyedBuckets.Need) {
        guard var f = data.clients[c].inFlight else { return }
        f.keyed.rounds += 1
        guard f.keyed.rounds <= 8 else { return dataFinish(c, nil, failed: true) }
        f.keyed.on = true
        f.keyed.need = need
        f.keyed.wrapped = nil
        f.phase = .upkeepHead
        data.clients[c].inFlight = f
        dataSend(c)
    }

    func keyedSend(_ c: Int, _ f: DataWorkload.Flight, tag: UInt64) {
        guard let n = nodes[f.node] else { return }
        let rid = RequestID(client: UInt32(4000 + c), counter: tag)
        switch f.phase {
        case .upkeepHead:
            whenRunning(f.node) { n.read(key: f.key, tag: tag) }
        case .upkeepPut:
            let (k, v) = f.keyed.puts[0]
            whenRunning(f.node) { n.propose(key: k, .put(v), id: rid, tag: tag) }
        case .upkeepOp:
            let op = f.keyed.op
            whenRunning(f.node) { n.propose(key: f.key, .data(op), id: rid, tag: tag) }
        case .upkeepDelete:
            let k = f.keyed.drops[0]
            whenRunning(f.node) { n.propose(key: k, .delete, id: rid, tag: tag) }
        case .upkeepBucket, .readBuckets:
            guard let h = f.keyed.head, let k = f.keyed.wanted.first else { return }
            let bk = bucketKey(f, h, k)
            whenRunning(f.node) { n.read(key: bk, tag: tag) }
        default:
            return
        }
    }

    /// Ends an upkeep: the command runs again under a fresh request id (with its facts, when the
    /// upkeep read them), or a client's own round ends.
    func keyedUpkeepDone(_ c: Int) {
        guard var f = data.clients[c].inFlight else { return }
        let wrapped = f.keyed.need == .facts ? f.keyed.wrapped : nil
        let rounds = f.keyed.rounds
        f.keyed = KeyedFlight()
        f.keyed.rounds = rounds
        f.keyed.wrapped = wrapped
        if f.history < 0 {
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

    func keyedUpkeepFailed(_ c: Int) {
        guard let f = data.clients[c].inFlight else { return }
        if f.history < 0 {
            data.clients[c].inFlight = nil
            data.clients[c].nextAt = now + rng.below(6)
        } else {
            dataFinish(c, nil, failed: true)
        }
    }

    func keyedReply(_ c: Int, _ outcome: ClientOutcome) {
        guard var f = data.clients[c].inFlight else { return }
        switch outcome {
        case .retryable, .unknown:
            if f.phase == .readBuckets {
                f.keyed = KeyedFlight()
                data.clients[c].inFlight = f
                dataAttemptFailed(c, unknown: false)
            } else {
                keyedUpkeepFailed(c)
            }
            return
        default: break
        }
        switch f.phase {
        case .upkeepHead:
            var v: StoredValue?
            if case .typed(let t) = outcome { v = t }
            keyedCheckMissing(f, v)
            f.keyed.missing = nil
            keyedPlan(c, &f, v)
        case .upkeepPut:
            guard case .done = outcome else { return keyedUpkeepFailed(c) }
            f.keyed.puts.removeFirst()
            f.phase = f.keyed.puts.isEmpty ? .upkeepOp : .upkeepPut
            data.clients[c].inFlight = f
            dataSend(c)
        case .upkeepOp:
            guard case .done(.data(let r)) = outcome else { return keyedUpkeepFailed(c) }
            if r == .integer(1) && !f.keyed.drops.isEmpty {
                f.phase = .upkeepDelete
                data.clients[c].inFlight = f
                return dataSend(c)
            }
            keyedUpkeepDone(c)
        case .upkeepDelete:
            f.keyed.drops.removeFirst()
            if f.keyed.drops.isEmpty { return keyedUpkeepDone(c) }
            data.clients[c].inFlight = f
            dataSend(c)
        case .upkeepBucket, .readBuckets:
            guard let h = f.keyed.head, let k = f.keyed.wanted.first else { return keyedUpkeepDone(c) }
            let bk = bucketKey(f, h, k)
            guard case .value(let b?) = outcome,
                let (owner, items) = ListBuckets.parseBucketValue(b, hash: h.index[k].hash), owner == f.key
            else {
                // Gone: a flush or join dropped it meanwhile. Read the head again; if it still
                // lists this bucket, the bucket was lost.
                f.keyed.missing = bk
                f.keyed.rereads += 1
                guard f.keyed.rereads <= 4 else {
                    if f.phase == .readBuckets { return dataFinish(c, nil) }
                    return keyedUpkeepFailed(c)
                }
                f.keyed.wanted = []
                f.keyed.fetched = [:]
                f.phase = f.phase == .readBuckets ? .command : .upkeepHead
                data.clients[c].inFlight = f
                return dataSend(c)
            }
            f.keyed.fetched[k] = items
            f.keyed.wanted.removeFirst()
            data.clients[c].inFlight = f
            if !f.keyed.wanted.isEmpty { return dataSend(c) }
            if f.phase == .readBuckets { return keyedAnswer(c, f) }
            keyedOp(c, &f)
        default:
            return
        }
    }

    /// A head read found `v`: decide the upkeep's steps.
    func keyedPlan(_ c: Int, _ f: inout DataWorkload.Flight, _ v: StoredValue?) {
        guard let need = f.keyed.need, let v, KeyedBuckets.isKeyedKind(v.kind) else {
            return keyedUpkeepDone(c)
        }
        f.keyed.kind = v.kind
        let hash = KeyedBuckets.paired(v.kind)
        guard let h = KeyedBuckets(v.bytes) else {
            // A plain set or hash: make it bucketed (buckets of one or two members).
            guard need == .split, !v.bytes.isEmpty, !KeyedBuckets.isHead(v.bytes) else {
                return keyedUpkeepDone(c)
            }
            let nonce = rng.next() | 1
            var op = [
                Self.w("ksplit"), f.key, Self.w(String(nonce)), Self.w(String(XXH64.hash(v.bytes))),
                Self.w("2"), Self.w("4096"),
            ]
            let shape = KeyedBuckets(nonce: nonce, bucketMembers: 2, bucketBytes: 4096, index: [], count: 0)
            var puts: [([UInt8], [UInt8])] = []
            for chunk in KeyedBuckets.cut(
                KeyedBuckets.plainPairs(v.bytes, kind: v.kind), low: 0, target: 1,
                targetBytes: 4096)
            {
                let (e, put) = keyedBucketPut(f.key, shape, gen: 0, low: chunk.low, chunk.pairs, hash: hash)
                puts.append(put)
                op += [Self.w(String(e.count)), Self.w(String(e.hash)), Self.w(String(e.low))]
            }
            f.keyed.op = op
            f.keyed.puts = puts
            f.phase = .upkeepPut
            data.clients[c].inFlight = f
            return dataSend(c)
        }
        f.keyed.head = h
        f.keyed.deadlineMs = v.deadlineMs
        switch need {
        case .facts:
            f.keyed.wanted = Array(Set(KeyedBuckets.members(f.args).map { h.position(of: $0) })).sorted()
        case .flush:
            guard !h.overlay.isEmpty else { return keyedUpkeepDone(c) }
            f.keyed.wanted = Array(Set(h.overlay.keys.map { h.position(of: $0) })).sorted()
        case .join:
            f.keyed.wanted = Array(h.index.indices)
        case .split:
            return keyedUpkeepDone(c)
        }
        f.keyed.fetched = [:]
        if f.keyed.wanted.isEmpty { return keyedOp(c, &f) }
        f.phase = .upkeepBucket
        data.clients[c].inFlight = f
        dataSend(c)
    }

    func keyedBucketPut(
        _ key: [UInt8], _ h: KeyedBuckets, gen: UInt32, low: UInt64, _ pairs: [([UInt8], [UInt8])], hash: Bool
    ) -> (KeyedBuckets.Entry, ([UInt8], [UInt8])) {
        let enc = DataModel.encodeItems(KeyedBuckets.items(pairs, hash: hash))
        let e = KeyedBuckets.Entry(gen: gen, hash: XXH64.hash(enc), count: UInt32(pairs.count), low: low)
        return (
            e,
            (
                KeyedBuckets.bucketKey(of: key, nonce: h.nonce, entry: e),
                ListBuckets.bucketValue(list: key, encoding: enc)
            )
        )
    }

    /// The buckets the upkeep needs are read: the facts, or the flush or join to propose.
    func keyedOp(_ c: Int, _ f: inout DataWorkload.Flight) {
        guard let h = f.keyed.head, let need = f.keyed.need else { return keyedUpkeepDone(c) }
        let hash = KeyedBuckets.paired(f.keyed.kind)
        switch need {
        case .facts:
            var facts: [[UInt8]: KeyedBuckets.Fact] = [:]
            for m in KeyedBuckets.members(f.args) {
                let k = h.position(of: m)
                let pairs = KeyedBuckets.pairs(f.keyed.fetched[k] ?? [], hash: hash)
                facts[m] = KeyedBuckets.Fact(bucket: h.index[k].hash, value: pairs.first { $0.0 == m }?.1)
            }
            f.keyed.wrapped = [Self.w("kf"), KeyedBuckets.encodeFacts(facts)] + f.args
            data.clients[c].inFlight = f
            return keyedUpkeepDone(c)
        case .flush:
            var groups: [DataModel.KeyedFlush.Group] = []
            var folded = Overlay()
            var puts: [([UInt8], [UInt8])] = []
            for k in f.keyed.wanted.isEmpty ? Array(f.keyed.fetched.keys).sorted() : [] {
                var d: [[UInt8]: [UInt8]] = [:]
                for (m, x) in KeyedBuckets.pairs(f.keyed.fetched[k] ?? [], hash: hash) { d[m] = x }
                for m in h.overlay.keys where h.position(of: m) == k {
                    folded[m] = .some(h.overlay[m]!)
                    d[m] = h.overlay[m]!
                }
                let pairs = d.map { ($0.key, $0.value) }.sorted { $0.0.lexicographicallyPrecedes($1.0) }
                let old = h.index[k]
                let chunks =
                    pairs.count > 2 * h.bucketMembers
                    ? KeyedBuckets.cut(
                        pairs, low: old.low, target: h.bucketMembers, targetBytes: h.bucketBytes)
                    : [(low: old.low, pairs: pairs)]
                var new: [KeyedBuckets.Entry] = []
                for ch in chunks {
                    let (e, put) = keyedBucketPut(f.key, h, gen: h.gen, low: ch.low, ch.pairs, hash: hash)
                    new.append(e)
                    puts.append(put)
                }
                groups.append(.init(old: old, new: new))
            }
            f.keyed.op = [
                Self.w("kflush"), f.key, Self.w(String(h.nonce)), Self.w(String(h.gen)),
                DataModel.KeyedFlush(groups: groups, folded: folded).encoded,
            ]
            f.keyed.drops = groups.map { KeyedBuckets.bucketKey(of: f.key, nonce: h.nonce, entry: $0.old) }
            // The mutant: the flush proposed without its buckets written.
            f.keyed.puts = config.dataMutant == .keyedFlushUnwritten ? [] : puts
        case .join:
            let encs = h.index.indices.map { DataModel.encodeItems(f.keyed.fetched[$0] ?? []) }
            f.keyed.op = [Self.w("kjoin"), f.key, Self.w(String(h.nonce))] + encs
            f.keyed.drops = h.index.indices.map { bucketKey(f, h, $0) }
        case .split:
            return keyedUpkeepDone(c)
        }
        f.phase = f.keyed.puts.isEmpty ? .upkeepOp : .upkeepPut
        data.clients[c].inFlight = f
        dataSend(c)
    }

    /// A head read after a bucket read found the bucket absent: if the head still lists it, it was
    /// lost (a bucket leaves a head before it is deleted, and never comes back).
    func keyedCheckMissing(_ f: DataWorkload.Flight, _ v: StoredValue?) {
        guard let bk = f.keyed.missing, let v, let h = KeyedBuckets(v.bytes) else { return }
        if h.index.indices.contains(where: { bucketKey(f, h, $0) == bk }) {
            violations.append(
                violation(
                    check: "keyed-buckets", key: String(decoding: f.key, as: UTF8.self),
                    detail: "the head lists a bucket that a linearizable read found absent"))
        }
    }

    /// A read met a bucketed head `v`: answer from the head, or read its buckets first. True when
    /// it took the read over.
    func keyedRead(_ c: Int, _ v: StoredValue) -> Bool {
        guard keyedBucketsOn, KeyedBuckets.isKeyedKind(v.kind), let h = KeyedBuckets(v.bytes),
            var f = data.clients[c].inFlight
        else { return false }
        keyedCheckMissing(f, v)
        f.keyed.missing = nil
        let name = String(decoding: f.args[0], as: UTF8.self)
        if ["type", "ttl", "pttl", "expiretime", "pexpiretime"].contains(name) { return false }
        f.keyed.on = true
        f.keyed.head = h
        f.keyed.kind = v.kind
        f.keyed.deadlineMs = v.deadlineMs
        switch h.readPlan(f.args, kind: v.kind) {
        case .answer(let r):
            data.clients[c].inFlight = f
            dataFinish(c, r)
            return true
        case .members(let ms):
            f.keyed.wanted = Array(Set(ms.filter { h.overlay[$0] == nil }.map { h.position(of: $0) }))
                .sorted()
        case .whole:
            f.keyed.wanted = Array(h.index.indices)
        }
        f.keyed.fetched = [:]
        data.clients[c].inFlight = f
        if f.keyed.wanted.isEmpty {
            keyedAnswer(c, f)
            return true
        }
        f.phase = .readBuckets
        data.clients[c].inFlight = f
        dataSend(c)
        return true
    }

    func keyedAnswer(_ c: Int, _ f: DataWorkload.Flight) {
        guard var h = f.keyed.head else { return }
        // The mutant: the overlay (the newest changes) ignored.
        if config.dataMutant == .keyedReadsSkipOverlay { h.overlay = [:] }
        let reply: DataReply
        switch h.readPlan(f.args, kind: f.keyed.kind) {
        case .answer(let r): reply = r
        case .members:
            reply = h.answer(
                f.args, kind: f.keyed.kind, deadlineMs: f.keyed.deadlineMs, buckets: f.keyed.fetched,
                nowMs: UInt64(nodeClockMs(f.node)))
        case .whole:
            let plain = h.assembledPlain(
                h.index.indices.map { f.keyed.fetched[$0] ?? [] }, kind: f.keyed.kind)
            let v = StoredValue(kind: f.keyed.kind, deadlineMs: f.keyed.deadlineMs, bytes: plain)
            reply = DataModel.read(f.args, v, nowMs: UInt64(nodeClockMs(f.node)))
        }
        dataFinish(c, reply)
    }
}
