// The shell's side of big sets, hashes and sorted sets kept in buckets (docs/DATA.md, "Big sets, hashes and sorted sets";
// TernConsensus/DataKeyedBuckets.swift holds the pure rules): a set or hash write on a bucketed
// head carries facts about the members it touches, read here from their buckets; when a write
// answers a `KeyedBuckets.Need`, the node does the work (reads the head again, makes a full plain
// value bucketed, folds the overlay into buckets, or makes the collection one value again) and
// runs the write again under a fresh request id. Reads of single members and counts read only the
// head and the members' buckets; every other read sees one plain value, assembled here.
import NIOCore
import TernConsensus
import TernCore

/// What this node last saw of a bucketed set's or hash's head: enough to attach facts to the
/// next write (a stale copy costs one round: the write answers `facts` and the head is read).
struct KeyedHeadInfo {
    var kind: ValueKind
    var nonce: UInt64
    var index: [KeyedBuckets.Entry]

    init?(_ v: StoredValue) {
        guard KeyedBuckets.isKeyedKind(v.kind), let h = KeyedBuckets(v.bytes) else { return nil }
        kind = v.kind
        nonce = h.nonce
        index = h.index
    }
    func position(of m: [UInt8]) -> Int {
        KeyedBuckets.position(in: index, KeyedBuckets.memberHash(m))
    }
}

extension Node {
    typealias KeyedFetch = BucketsRead<[[UInt8]: [UInt8]]>

    static func isKeyedWrite(_ args: [[UInt8]]) -> Bool {
        guard let first = args.first, (4...12).contains(first.count) else { return false }
        return KeyedBuckets.allWrites.contains(String(decoding: first, as: UTF8.self))
    }

    /// Notes what a read or write saw of `key`'s value: a bucketed head's index, or nothing.
    func noteKeyedHead(_ key: [UInt8], _ v: StoredValue?) {
        if let v, let info = KeyedHeadInfo(v) {
            if keyedHeads.count >= 4096 { keyedHeads.removeAll(keepingCapacity: true) }
            keyedHeads[key] = info
        } else if keyedHeads[key] != nil {
            keyedHeads[key] = nil
        }
    }

    // MARK: - Buckets

    /// Reads the buckets at index positions `positions` (from the cache where it has them), each
    /// checked against the hash the index names.
    func fetchKeyed(
        _ key: [UInt8], nonce: UInt64, _ index: [KeyedBuckets.Entry], _ positions: [Int], paired: Bool
    )
        -> EventLoopFuture<KeyedFetch>
    {
        loadBuckets(
            key,
            positions.map {
                (
                    position: $0, key: KeyedBuckets.bucketKey(of: key, nonce: nonce, entry: index[$0]),
                    hash: index[$0].hash
                )
            },
            cache: \.keyedCache, what: "a set, hash or sorted set"
        ) { items in
            var d: [[UInt8]: [UInt8]] = [:]
            d.reserveCapacity(items.count)
            for (m, v) in KeyedBuckets.pairs(items, hash: paired) { d[m] = v }
            return d
        }
    }

    /// Writes one bucket (durable on a quorum when the future succeeds with `.done`).
    func putKeyedBucket(
        _ key: [UInt8], nonce: UInt64, gen: UInt32, low: UInt64, _ pairs: [([UInt8], [UInt8])], paired: Bool
    ) -> (KeyedBuckets.Entry, EventLoopFuture<NodeReply>) {
        let enc = DataModel.encodeItems(KeyedBuckets.items(pairs, hash: paired))
        let e = KeyedBuckets.Entry(gen: gen, hash: XXH64.hash(enc), count: UInt32(pairs.count), low: low)
        let bk = KeyedBuckets.bucketKey(of: key, nonce: nonce, entry: e)
        var d: [[UInt8]: [UInt8]] = [:]
        for (m, v) in pairs { d[m] = v }
        keyedCache.put(bk, d)
        return (e, submit(key: bk, .write(.put(ListBuckets.bucketValue(list: key, encoding: enc)))))
    }

    func dropKeyedBuckets(_ key: [UInt8], _ nonce: UInt64, _ entries: [KeyedBuckets.Entry]) {
        for e in entries {
            let bk = KeyedBuckets.bucketKey(of: key, nonce: nonce, entry: e)
            keyedCache.remove(bk)
            _ = submit(key: bk, .write(.delete))
        }
    }

    // MARK: - Reads

    /// A read's reply, with a bucketed set or hash assembled into one plain value.
    func assembleKeyed(_ key: [UInt8], _ r: NodeReply, attempts: Int) -> EventLoopFuture<NodeReply> {
        guard case .typed(let v) = r, KeyedBuckets.isKeyedKind(v.kind), let h = KeyedBuckets(v.bytes) else {
            return eventLoop.makeSucceededFuture(r)
        }
        noteKeyedHead(key, v)
        let paired = KeyedBuckets.paired(v.kind)
        return fetchKeyed(key, nonce: h.nonce, h.index, Array(h.index.indices), paired: paired).flatMap { f in
            switch f {
            case .failed(let why): return self.eventLoop.makeSucceededFuture(why)
            case .missing:
                guard attempts > 0 else {
                    return self.eventLoop.makeSucceededFuture(
                        .unknown("the \(v.kind.name) kept changing while it was read"))
                }
                return self.rereadHead(key).flatMap { self.assembleKeyed(key, $0, attempts: attempts - 1) }
            case .items(let got):
                let buckets = h.index.indices.map { k in
                    KeyedBuckets.items((got[k] ?? [:]).map { ($0.key, $0.value) }, hash: paired)
                }
                var plain = v
                plain.bytes = h.assembledPlain(buckets, kind: v.kind)
                return self.eventLoop.makeSucceededFuture(.typed(plain))
            }
        }
    }

    /// `.readData` on a bucketed set or hash (nil: `v` is not one): counts from the head, single
    /// members from the overlay or their buckets, the rest from the assembled value.
    func answerKeyed(_ key: [UInt8], _ args: [[UInt8]], _ v: StoredValue, attempts: Int) -> EventLoopFuture<
        NodeReply
    >? {
        guard KeyedBuckets.isKeyedKind(v.kind), let h = KeyedBuckets(v.bytes) else { return nil }
        noteKeyedHead(key, v)
        let nowMs = UInt64(max(0, CommandProcessor.unixMicros() / 1000))
        if let name = args.first, Self.metaReads.contains(name) {
            return eventLoop.makeSucceededFuture(.done(.data(DataModel.read(args, v, nowMs: nowMs))))
        }
        switch h.readPlan(args, kind: v.kind) {
        case .answer(let a): return eventLoop.makeSucceededFuture(.done(.data(a)))
        case .whole:
            return assembleKeyed(key, .typed(v), attempts: attempts).map { r in
                guard case .typed(let plain) = r else { return r }
                return .done(
                    .data(DataModel.read(args, plain, nowMs: nowMs, seed: UInt64.random(in: .min ... .max))))
            }
        case .members(let ms):
            let positions = Array(Set(ms.filter { h.overlay[$0] == nil }.map { h.position(of: $0) }))
            let paired = KeyedBuckets.paired(v.kind)
            return fetchKeyed(key, nonce: h.nonce, h.index, positions, paired: paired).flatMap { f in
                switch f {
                case .failed(let why): return self.eventLoop.makeSucceededFuture(why)
                case .missing:
                    guard attempts > 0 else {
                        return self.eventLoop.makeSucceededFuture(
                            .unknown("the \(v.kind.name) kept changing while it was read"))
                    }
                    return self.rereadHead(key).flatMap {
                        self.answerData(key, args, $0, attempts: attempts - 1)
                    }
                case .items(let got):
                    let buckets = got.mapValues { d in
                        KeyedBuckets.items(d.map { ($0.key, $0.value) }, hash: paired)
                    }
                    return self.eventLoop.makeSucceededFuture(
                        .done(
                            .data(
                                h.answer(
                                    args, kind: v.kind, deadlineMs: v.deadlineMs, buckets: buckets,
                                    nowMs: nowMs)
                            )))
                }
            }
        }
    }

    // MARK: - Writes

    /// A set or hash write: with facts when this node knows the key is bucketed, then the upkeep
    /// its answer asks for and the write again, at most `attempts` times.
    func keyedWrite(_ key: [UInt8], _ args: [[UInt8]], id: RequestID?, attempts: Int) -> EventLoopFuture<
        NodeReply
    > {
        let first: EventLoopFuture<NodeReply>
        if let info = keyedHeads[key] {
            first = withFacts(key, args, info).flatMap { wrapped in
                self.submit(key: key, .write(.data(wrapped ?? args)), id: id)
            }
        } else {
            first = submit(key: key, .write(.data(args)), id: id)
        }
        return first.flatMap { r in
            guard case .done(.data(let d)) = r, let need = KeyedBuckets.need(d) else {
                if case .done(.data) = r, self.keyedHeads[key] != nil { self.noteKeyedOp(key) }
                return self.eventLoop.makeSucceededFuture(r)
            }
            guard attempts > 0 else {
                return self.eventLoop.makeSucceededFuture(
                    .notApplied(
                        "the collection kept changing while its buckets were rearranged; not applied, try again"
                    ))
            }
            let work: EventLoopFuture<NodeReply?>
            switch need {
            case .facts: work = self.refreshKeyedHead(key)
            default: work = self.maintainKeyed(key, need)
            }
            return work.flatMap { failure in
                if let failure { return self.eventLoop.makeSucceededFuture(failure) }
                return self.keyedWrite(key, args, id: nil, attempts: attempts - 1)
            }
        }
    }

    /// Reads `key`'s head again and notes its index.
    func refreshKeyedHead(_ key: [UInt8]) -> EventLoopFuture<NodeReply?> {
        rereadHead(key).map { r in
            switch r {
            case .typed(let v):
                self.noteKeyedHead(key, v)
                return nil
            case .value:
                self.noteKeyedHead(key, nil)
                return nil
            default: return Self.keyedUpkeepFailed(r)
            }
        }
    }

    /// `args` wrapped with facts about the members it touches (`kf facts args…`), from their
    /// buckets; nil when they could not be read (the write then goes plain and asks again).
    func withFacts(_ key: [UInt8], _ args: [[UInt8]], _ info: KeyedHeadInfo) -> EventLoopFuture<[[UInt8]]?> {
        let name = String(decoding: args[0], as: UTF8.self)
        let paired = KeyedBuckets.paired(info.kind)
        guard KeyedBuckets.writes(of: info.kind).contains(name) else {
            return eventLoop.makeSucceededFuture(nil)
        }
        let members = KeyedBuckets.members(args)
        var positions: [Int]
        var want = 0
        if name == "spop" {
            // Candidates from random buckets: at least twice the members asked for, and a few.
            want = args.count > 2 ? Int(String(decoding: args[2], as: UTF8.self)) ?? 1 : 1
            positions = []
            var have = 0
            for k in info.index.indices.shuffled() where have < 2 * want + 8 {
                positions.append(k)
                have += Int(info.index[k].count)
            }
        } else {
            positions = Array(Set(members.map { info.position(of: $0) }))
        }
        return fetchKeyed(key, nonce: info.nonce, info.index, positions, paired: paired).map { f in
            guard case .items(let got) = f else { return nil }
            var facts: [[UInt8]: KeyedBuckets.Fact] = [:]
            if name == "spop" {
                var pool: [([UInt8], [UInt8], UInt64)] = []
                for k in positions { for (m, v) in got[k] ?? [:] { pool.append((m, v, info.index[k].hash)) } }
                pool.shuffle()
                for (m, v, h) in pool.prefix(2 * want + 8) {
                    facts[m] = KeyedBuckets.Fact(bucket: h, value: v)
                }
            } else {
                for m in members {
                    let k = info.position(of: m)
                    facts[m] = KeyedBuckets.Fact(bucket: info.index[k].hash, value: got[k]?[m])
                }
            }
            return [Self.word("kf"), KeyedBuckets.encodeFacts(facts)] + args
        }
    }

    /// Counts writes served on a bucketed set or hash; every 32, a flush of its overlay runs by
    /// itself when the overlay is past its soft bound, off the client's path.
    func noteKeyedOp(_ key: [UInt8]) {
        let slot = Int(XXH64.hash(key) & 4095)
        let n = Int(keyedOpCounts[slot]) + 1
        guard n >= 32 else {
            keyedOpCounts[slot] = UInt8(n)
            return
        }
        keyedOpCounts[slot] = 0
        guard upkeepUnderWay[key] == nil else { return }
        // This node's own copy of the head says the overlay is below its soft bound: no read.
        if let local = localValue(key), KeyedBuckets.isKeyedKind(local.kind),
            let h = KeyedBuckets(local.bytes),
            !h.overlayFull
        {
            return
        }
        track(key, flushKeyed(key, force: false))
    }

    /// Does what `need` says for `key`: nil when done (or found unnecessary), else the reply the
    /// client's command gets (it was not applied). One at a time per key on this node.
    func maintainKeyed(_ key: [UInt8], _ need: KeyedBuckets.Need) -> EventLoopFuture<NodeReply?> {
        if let running = upkeepUnderWay[key] { return running.map { _ in nil } }
        let work: EventLoopFuture<NodeReply?>
        switch need {
        case .facts: work = refreshKeyedHead(key)
        case .split: work = splitKeyed(key)
        case .flush: work = flushKeyed(key, force: true)
        case .join: work = joinKeyed(key)
        }
        track(key, work)
        return work
    }

    static let keyedWhat = "a big set's, hash's or sorted set's"
    static func keyedUpkeepFailed(_ r: NodeReply) -> NodeReply { upkeepFailed(r, keyedWhat) }

    /// Reads `key`'s head and continues with its set or hash value (nil: absent or another kind),
    /// noting what it saw.
    func withKeyedValue(_ key: [UInt8], _ next: @escaping (StoredValue?) -> EventLoopFuture<NodeReply?>)
        -> EventLoopFuture<NodeReply?>
    {
        withHead(key, kinds: [.set, .hash, .zset], Self.keyedWhat) { v in
            self.noteKeyedHead(key, v)
            return next(v)
        }
    }

    /// Waits for bucket writes; nil when all are durable, else the client's reply.
    func allDone(_ puts: [EventLoopFuture<NodeReply>]) -> EventLoopFuture<NodeReply?> {
        EventLoopFuture.whenAllSucceed(puts, on: eventLoop).map { replies in
            for r in replies {
                guard case .done = r else { return Self.keyedUpkeepFailed(r) }
            }
            return nil
        }
    }

    /// Makes a full plain set or hash bucketed: writes its members in buckets by member hash
    /// (durable on a quorum), then proposes `ksplit`, which applies only if the value is unchanged.
    func splitKeyed(_ key: [UInt8]) -> EventLoopFuture<NodeReply?> {
        withKeyedValue(key) { v in
            guard let v, !KeyedBuckets.isHead(v.bytes), DataModel.plainKeyedFull(v.bytes) else {
                return self.eventLoop.makeSucceededFuture(nil)
            }
            let paired = KeyedBuckets.paired(v.kind)
            let nonce = UInt64.random(in: 1 ... .max)
            let chunks = KeyedBuckets.cut(
                KeyedBuckets.plainPairs(v.bytes, kind: v.kind), low: 0,
                target: self.options.keyedBucketMembers, targetBytes: self.options.keyedBucketBytes)
            var args = [
                Self.word("ksplit"), key, Self.word(String(nonce)), Self.word(String(XXH64.hash(v.bytes))),
                Self.word(String(self.options.keyedBucketMembers)),
                Self.word(String(self.options.keyedBucketBytes)),
            ]
            var puts: [EventLoopFuture<NodeReply>] = []
            for c in chunks {
                let (e, put) = self.putKeyedBucket(
                    key, nonce: nonce, gen: 0, low: c.low, c.pairs, paired: paired)
                puts.append(put)
                args += [Self.word(String(e.count)), Self.word(String(e.hash)), Self.word(String(e.low))]
            }
            return self.allDone(puts).flatMap { failed in
                if let failed { return self.eventLoop.makeSucceededFuture(failed) }
                return self.upkeep(key, args, Self.keyedWhat).flatMap { r in
                    if case .failure(let f) = r { return self.eventLoop.makeSucceededFuture(f.reply) }
                    return self.refreshKeyedHead(key)
                }
            }
        }
    }

    /// Folds the overlay into buckets: each bucket with overlay members is rewritten with them
    /// (cut in two past twice its target), the new buckets made durable, then `kflush` proposed
    /// at the generation read. `force`: even when the overlay is below its soft bound.
    func flushKeyed(_ key: [UInt8], force: Bool) -> EventLoopFuture<NodeReply?> {
        withKeyedValue(key) { v in
            guard let v, let h = KeyedBuckets(v.bytes), !h.overlay.isEmpty, force || h.overlayFull else {
                return self.eventLoop.makeSucceededFuture(nil)
            }
            let paired = KeyedBuckets.paired(v.kind)
            var byPosition: [Int: [[UInt8]]] = [:]
            for m in h.overlay.keys { byPosition[h.position(of: m), default: []].append(m) }
            // The buckets with the most overlay members first; at most 64 per flush.
            let positions = byPosition.keys.sorted {
                (byPosition[$0]!.count, $1) > (byPosition[$1]!.count, $0)
            }
            .prefix(64)
            return self.fetchKeyed(key, nonce: h.nonce, h.index, Array(positions), paired: paired).flatMap {
                f in
                switch f {
                case .failed(let r): return self.eventLoop.makeSucceededFuture(Self.keyedUpkeepFailed(r))
                case .missing: return self.eventLoop.makeSucceededFuture(nil)
                case .items(let got):
                    var groups: [DataModel.KeyedFlush.Group] = []
                    var folded = Overlay()
                    var puts: [EventLoopFuture<NodeReply>] = []
                    for k in positions {
                        var d = got[k] ?? [:]
                        for m in byPosition[k]! {
                            let s = h.overlay[m]!
                            folded[m] = .some(s)
                            d[m] = s
                        }
                        let pairs = d.map { ($0.key, $0.value) }
                        let bytes = pairs.reduce(0) { $0 + 8 + $1.0.count + $1.1.count }
                        let old = h.index[k]
                        let chunks: [(low: UInt64, pairs: [([UInt8], [UInt8])])] =
                            pairs.count > 2 * h.bucketMembers || bytes > 2 * h.bucketBytes
                            ? KeyedBuckets.cut(
                                pairs, low: old.low, target: h.bucketMembers, targetBytes: h.bucketBytes)
                            : [(old.low, pairs)]
                        var new: [KeyedBuckets.Entry] = []
                        for c in chunks {
                            let (e, put) = self.putKeyedBucket(
                                key, nonce: h.nonce, gen: h.gen, low: c.low, c.pairs, paired: paired)
                            new.append(e)
                            puts.append(put)
                        }
                        groups.append(DataModel.KeyedFlush.Group(old: old, new: new))
                    }
                    let body = DataModel.KeyedFlush(groups: groups, folded: folded)
                    let args = [
                        Self.word("kflush"), key, Self.word(String(h.nonce)), Self.word(String(h.gen)),
                        body.encoded,
                    ]
                    return self.allDone(puts).flatMap { failed in
                        if let failed { return self.eventLoop.makeSucceededFuture(failed) }
                        return self.upkeep(key, args, Self.keyedWhat).flatMap { r in
                            switch r {
                            case .failure(let f): return self.eventLoop.makeSucceededFuture(f.reply)
                            case .success(let applied):
                                // (A flush that lost its race leaves its buckets to the collector:
                                // the winner may have written the same bytes under the same keys.)
                                if applied { self.dropKeyedBuckets(key, h.nonce, groups.map(\.old)) }
                                return self.refreshKeyedHead(key)
                            }
                        }
                    }
                }
            }
        }
    }

    /// Makes the collection one value again (a command that works on all of it), then deletes its
    /// buckets. Refused beyond `max_value_bytes`.
    func joinKeyed(_ key: [UInt8]) -> EventLoopFuture<NodeReply?> {
        withKeyedValue(key) { v in
            guard let v, let h = KeyedBuckets(v.bytes) else { return self.eventLoop.makeSucceededFuture(nil) }
            return self.bucketEncodings(key, h).flatMap { encs in
                guard let encs else { return self.eventLoop.makeSucceededFuture(nil) }
                let total = encs.reduce(v.bytes.count) { $0 + $1.count }
                guard total <= self.options.groupBytesMax else {
                    return self.eventLoop.makeSucceededFuture(
                        .done(
                            .data(
                                .error(
                                    "ERR this command needs the \(v.kind.name) as one value, and this "
                                        + "\(v.kind.name) (\(h.count) members, \(total) bytes) is larger than "
                                        + "max_value_bytes (\(self.options.groupBytesMax)); Tern keeps it in "
                                        + "buckets, where single-member writes and reads, counts and reads of "
                                        + "the whole \(v.kind.name) work"))))
                }
                let args = [Self.word("kjoin"), key, Self.word(String(h.nonce))] + encs
                return self.upkeep(key, args, Self.keyedWhat).map { r in
                    switch r {
                    case .failure(let f): return f.reply
                    case .success(let applied):
                        if applied {
                            self.dropKeyedBuckets(key, h.nonce, h.index)
                            self.keyedHeads[key] = nil
                        }
                        return nil
                    }
                }
            }
        }
    }

    /// Each bucket's stored encoding, in index order (nil: one is gone or failed its check).
    func bucketEncodings(_ key: [UInt8], _ h: KeyedBuckets) -> EventLoopFuture<[[UInt8]]?> {
        let reads = h.index.map {
            submit(key: KeyedBuckets.bucketKey(of: key, nonce: h.nonce, entry: $0), .read)
        }
        return EventLoopFuture.whenAllSucceed(reads, on: eventLoop).map { replies in
            var out: [[UInt8]] = []
            for (e, r) in zip(h.index, replies) {
                guard case .value(let b?) = r else { return nil }
                var reader = ByteReader(b)
                guard reader.u8() == 1, reader.blob() == key else { return nil }
                let enc = Array(b[reader.at...])
                guard XXH64.hash(enc) == e.hash else { return nil }
                out.append(enc)
            }
            return out
        }
    }

    /// The repair scan's collector of set and hash bucket keys no head reaches.
    func collectKeyedBucket(_ bk: [UInt8]) {
        collectBucket(bk, keyHash: KeyedBuckets.parseBucketKey(bk)?.keyHash) {
            KeyedBuckets.isOrphan(bucketKey: bk, head: $0)
        }
    }
}
