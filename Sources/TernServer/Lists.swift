// The shell's side of big lists kept in buckets (docs/DATA.md, "Big lists";
// TernConsensus/DataListBuckets.swift holds the pure rules): when a write answers a
// `ListBuckets.Need`, the node does the work (writes buckets and seals them, brings an end bucket
// back into the head, or makes the list one value again) and runs the write again under a fresh
// request id; a read of a bucketed list reads only the buckets its answer lies in (LRANGE,
// LINDEX, LLEN) or assembles the whole list (every other read sees one plain value). Buckets are
// immutable and named by their content's hash, so a copy read once is cached here.
import NIOCore
import TernConsensus
import TernCore

/// Decoded buckets this node read or wrote (a big list's elements, a big set's or hash's members),
/// by bucket key (a bucket never changes: its key names its content's hash), bounded by bytes
/// (`size` estimates an entry's), oldest out first. On the node's loop.
struct BucketCache<Value> {
    var items: [[UInt8]: Value] = [:]
    var order: [[UInt8]] = []
    var head = 0
    var bytes = 0
    let budget: Int
    let size: (Value) -> Int

    mutating func put(_ key: [UInt8], _ v: Value) {
        guard items[key] == nil else { return }
        items[key] = v
        order.append(key)
        bytes += size(v)
        while bytes > budget, head < order.count {
            if let gone = items.removeValue(forKey: order[head]) { bytes -= size(gone) }
            head += 1
        }
        if head > 4096 && head * 2 > order.count {
            order.removeFirst(head)
            head = 0
        }
    }
    mutating func remove(_ key: [UInt8]) {
        if let gone = items.removeValue(forKey: key) { bytes -= size(gone) }
    }
}

extension BucketCache where Value == [[UInt8]] {
    /// A list's buckets: 32 MiB.
    static func lists() -> Self { Self(budget: 32 << 20, size: { $0.reduce(64) { $0 + 32 + $1.count } }) }
}

extension BucketCache where Value == [[UInt8]: [UInt8]] {
    /// Sets' and hashes' buckets, member → value: 48 MiB.
    static func keyed() -> Self {
        Self(budget: 48 << 20, size: { $0.reduce(64) { $0 + 48 + $1.key.count + $1.value.count } })
    }
}

extension Node {
    /// What reading some of a head's buckets came to.
    enum BucketsRead<Value> {
        case items([Int: Value])
        /// A bucket is gone (a concurrent pop, flush or join removed it from the head): read the
        /// head again.
        case missing
        case failed(NodeReply)
    }
    typealias BucketFetch = BucketsRead<[[UInt8]]>

    var bucketElements: Int { options.listBucketElements }
    var bucketBytes: Int { options.listBucketBytes }

    static func word(_ s: String) -> [UInt8] { Array(s.utf8) }
    /// Reads answered from a value's kind and deadline alone.
    static let metaReads: Set<[UInt8]> = Set(["type", "ttl", "pttl", "expiretime", "pexpiretime"].map(word))

    // MARK: - Reads

    /// A read's reply, with a bucketed list assembled into one plain value (every reader but the
    /// three that read through the head sees lists as before).
    func assembleList(_ key: [UInt8], _ r: NodeReply, attempts: Int) -> EventLoopFuture<NodeReply> {
        guard case .typed(let v) = r, v.kind == .list, let h = ListBuckets(v.bytes) else {
            return eventLoop.makeSucceededFuture(r)
        }
        return readBuckets(key, h, Array(h.index.indices), attempts: attempts) { r, left in
            self.assembleList(key, r, attempts: left)
        } answer: { got in
            let all = h.assembled(h.index.indices.map { got[$0] ?? [] })
            var plain = v
            plain.bytes = DataModel.encodeItems(all)
            return .typed(plain)
        }
    }

    /// Reads buckets `positions` of head `h` and answers from them (`answer`); when one is gone
    /// (a concurrent pop or join dropped it), reads the head again and starts over (`again`, with
    /// the attempts left), at most `attempts` times.
    func readBuckets(
        _ key: [UInt8], _ h: some ListHeadReading, _ positions: [Int], attempts: Int,
        again: @escaping (NodeReply, Int) -> EventLoopFuture<NodeReply>,
        answer: @escaping ([Int: [[UInt8]]]) -> NodeReply
    ) -> EventLoopFuture<NodeReply> {
        fetchBuckets(key, h, positions).flatMap { f in
            switch f {
            case .failed(let why): return self.eventLoop.makeSucceededFuture(why)
            case .missing:
                guard attempts > 0 else {
                    return self.eventLoop.makeSucceededFuture(
                        .unknown("the list kept changing while it was read"))
                }
                return self.rereadHead(key).flatMap { again($0, attempts - 1) }
            case .items(let got): return self.eventLoop.makeSucceededFuture(answer(got))
            }
        }
    }

    /// `.readData`: the read's answer as `.done(.data(reply))`, or `.value(nil)` when the key is
    /// absent (the caller answers from nothing), or the read's failure.
    func answerData(_ key: [UInt8], _ args: [[UInt8]], _ r: NodeReply, attempts: Int) -> EventLoopFuture<
        NodeReply
    > {
        let nowMs = UInt64(max(0, CommandProcessor.unixMicros() / 1000))
        func answer(_ v: StoredValue) -> NodeReply {
            .done(.data(DataModel.read(args, v, nowMs: nowMs, seed: UInt64.random(in: .min ... .max))))
        }
        switch r {
        case .value(nil): return eventLoop.makeSucceededFuture(r)
        case .value(let b?):
            return eventLoop.makeSucceededFuture(answer(StoredValue(kind: .string, deadlineMs: 0, bytes: b)))
        case .typed(let v):
            if let keyed = answerKeyed(key, args, v, attempts: attempts) { return keyed }
            guard v.kind == .list, let h = ListHeadView(v.bytes) else {
                return eventLoop.makeSucceededFuture(answer(v))
            }
            // TYPE and the TTL family read the kind and the deadline only: the head has them.
            if let name = args.first, Self.metaReads.contains(name) {
                return eventLoop.makeSucceededFuture(answer(v))
            }
            let needed: [Int]
            switch DataModel.listReadPlan(args, h) {
            case .answer(let a): return eventLoop.makeSucceededFuture(.done(.data(a)))
            case .buckets(let ks): needed = ks
            case .whole:
                return assembleList(key, r, attempts: attempts).map { a in
                    guard case .typed(let plain) = a else { return a }
                    return answer(plain)
                }
            }
            return readBuckets(key, h, needed, attempts: attempts) { r, left in
                self.answerData(key, args, r, attempts: left)
            } answer: { got in
                .done(.data(DataModel.listAnswer(args, h, got)))
            }
        default:
            return eventLoop.makeSucceededFuture(r)
        }
    }

    /// The head read again (linearizably, expiry settled).
    func rereadHead(_ key: [UInt8]) -> EventLoopFuture<NodeReply> {
        submit(key: key, .read).flatMap { self.settleExpiry(key: key, $0, attempts: 3) }
    }

    /// Reads the buckets at index positions `positions` of head `h` (from the cache where it has
    /// them), each checked against the hash the head names.
    func fetchBuckets(_ key: [UInt8], _ h: some ListHeadReading, _ positions: [Int]) -> EventLoopFuture<
        BucketFetch
    > {
        loadBuckets(
            key,
            positions.map {
                (
                    position: $0,
                    key: ListBuckets.bucketKey(list: key, nonce: h.headNonce, entry: h.index[$0]),
                    hash: h.index[$0].hash
                )
            },
            cache: \.bucketCache, what: "list key"
        ) { $0 }
    }

    /// Reads buckets `wanted` of `owner`'s head (from `cache` where it has them), each checked
    /// against its hash and its owner, decoded by `decode` and cached; one bucket absent makes
    /// the whole read `.missing`.
    func loadBuckets<Value>(
        _ owner: [UInt8], _ wanted: [(position: Int, key: [UInt8], hash: UInt64)],
        cache: ReferenceWritableKeyPath<Node, BucketCache<Value>>, what: String,
        decode: @escaping ([[UInt8]]) -> Value
    ) -> EventLoopFuture<BucketsRead<Value>> {
        var got: [Int: Value] = [:]
        var reads: [(Int, [UInt8], UInt64, EventLoopFuture<NodeReply>)] = []
        for w in wanted {
            if let v = self[keyPath: cache].items[w.key] {
                got[w.position] = v
            } else {
                reads.append((w.position, w.key, w.hash, submit(key: w.key, .read)))
            }
        }
        guard !reads.isEmpty else { return eventLoop.makeSucceededFuture(.items(got)) }
        return EventLoopFuture.whenAllSucceed(reads.map(\.3), on: eventLoop).map { replies in
            var missing = false
            for ((k, bk, hash, _), reply) in zip(reads, replies) {
                switch reply {
                case .value(nil): missing = true
                case .value(let b?):
                    guard let (o, items) = ListBuckets.parseBucketValue(b, hash: hash), o == owner else {
                        return .failed(.unknown("a bucket of \(what) failed its check"))
                    }
                    let v = decode(items)
                    self[keyPath: cache].put(bk, v)
                    got[k] = v
                default: return .failed(reply)
                }
            }
            return missing ? .missing : .items(got)
        }
    }

    // MARK: - Writes

    /// A data write's reply, after the list upkeep its first answer asked for (and the write run
    /// again), at most `attempts` times.
    func afterListWrite(_ key: [UInt8], _ op: Operation, _ r: NodeReply, attempts: Int) -> EventLoopFuture<
        NodeReply
    > {
        if case .done(.data(let d)) = r, let need = KeyedBuckets.need(d) {
            // A command other than a set's or hash's own writes (MULTI, …) met a bucketed set or
            // hash: its upkeep (a join), then the command again (KeyedCollections.swift).
            guard attempts > 0 else {
                return eventLoop.makeSucceededFuture(
                    .notApplied(
                        "the set or hash kept changing while it was made one value; not applied, try again"))
            }
            return maintainKeyed(key, need).flatMap { failure in
                if let failure { return self.eventLoop.makeSucceededFuture(failure) }
                return self.submit(key: key, .write(op)).flatMap {
                    self.afterListWrite(key, op, $0, attempts: attempts - 1)
                }
            }
        }
        guard case .done(.data(let d)) = r, let need = ListBuckets.need(d) else {
            if case .done(.data(let d)) = r { noteListOp(key, op, d) }
            return eventLoop.makeSucceededFuture(r)
        }
        guard attempts > 0 else {
            return eventLoop.makeSucceededFuture(
                .notApplied(
                    "the list kept changing while its buckets were rearranged; not applied, try again"))
        }
        return maintain(key, need, popping: Self.popCount(op)).flatMap { failure in
            if let failure { return self.eventLoop.makeSucceededFuture(failure) }
            return self.submit(key: key, .write(op)).flatMap {
                self.afterListWrite(key, op, $0, attempts: attempts - 1)
            }
        }
    }

    /// Counts a push or pop this node served on a list that may be bucketed; every 64 pushes or 8
    /// pops, the list's upkeep runs by itself, off the client's path: a seal when an end segment
    /// reached a quarter bucket, else an unseal when the end popped fell below a sixteenth of one.
    /// So pushes and pops rarely meet a full or empty segment, which would make every write merged
    /// into that instance wait for the upkeep.
    func noteListOp(_ key: [UInt8], _ op: Operation, _ reply: DataReply) {
        // On every write: the name checked on its bytes, no string made.
        guard case .data(let args) = op, let first = args.first, (4...6).contains(first.count),
            first[0] == UInt8(ascii: "l") || first[0] == UInt8(ascii: "r")
        else { return }
        let tail = first.dropFirst()
        let push = tail.elementsEqual("push".utf8) || tail.elementsEqual("pushx".utf8)
        // A hash-tag group's member lists stay one value (the group is one value anyway).
        guard push || tail.elementsEqual("pop".utf8), layout.groupKey(of: key) == nil else { return }
        if push {
            guard case .integer(let len) = reply, len >= Int64(max(2, bucketElements / 4)) else { return }
        }
        let slot = Int(XXH64.hash(key) & 4095)
        let n = Int(listOpCounts[slot]) + (push ? max(1, args.count - 2) : 1)
        guard n >= (push ? 64 : 8) else {
            listOpCounts[slot] = UInt8(n)
            return
        }
        listOpCounts[slot] = 0
        guard upkeepUnderWay[key] == nil else { return }
        // After pushes: seal a full end (either: a bulk push may have filled the other). After
        // pops: bring back part of the end bucket of a low end. (Both after either undid each
        // other: a seal after pops put back what the unseal the pops had needed brought, every 64
        // pops — measured, LPOP on a bucketed list ran at 0.55× SET.)
        let left = first[0] == UInt8(ascii: "l")
        // This node's own copy of the head decides: nothing to do, no read at all (two checks in
        // three found nothing after pushes); work to do, the upkeep starts from that copy without
        // a linearizable read of the head (four peer messages a seal): its operations apply only
        // at the generation and on the elements they name, so a stale copy costs a seal that does
        // not apply (and a bucket for the collector), never a wrong list.
        var head: StoredValue?
        if let local = localValue(key), local.kind == .list, let b = local.bytes {
            if let due = ListBuckets.upkeepDue(b, push: push, left: left) {
                if !due { return }
                head = StoredValue(kind: .list, deadlineMs: local.deadlineMs, bytes: b)
            } else if push, !DataModel.plainListFull(b) {
                return
            }
        }
        track(
            key,
            push
                ? sealList(key, left: left, segmented: false, head: head)
                : unsealList(key, left: left, onlyIfLow: true, head: head))
    }

    /// This node's replica's chosen value of `key` (nil: not loaded here): what the upkeep's own
    /// triggers look at, and a list's upkeep starts from. Advisory only — a stale copy delays a
    /// seal or a flush by a few dozen writes at most; the upkeep's operations apply only at the
    /// generation they name.
    func localValue(_ key: [UInt8]) -> KeyValue? { core.replica.inspect(key)?.state.value }

    /// Does what `need` says for list `key`: nil when done (or found unnecessary), else the reply
    /// the client's command gets (it was not applied). One at a time per key on this node.
    /// `popping`: the elements the command pops (an unseal brings back at least that many).
    func maintain(_ key: [UInt8], _ need: ListBuckets.Need, popping: Int = 1) -> EventLoopFuture<NodeReply?> {
        if let running = upkeepUnderWay[key] { return running.map { _ in nil } }
        let work: EventLoopFuture<NodeReply?>
        switch need {
        case .seal(let left): work = sealList(key, left: left, segmented: false)
        case .unseal(let left): work = unsealList(key, left: left, popping: popping)
        case .join: work = joinList(key)
        }
        track(key, work)
        return work
    }

    /// Registers `work` as key's upkeep under way on this node until it ends (a big list's, set's
    /// or hash's: one at a time per key).
    func track(_ key: [UInt8], _ work: EventLoopFuture<NodeReply?>) {
        upkeepUnderWay[key] = work.map { _ in () }
        work.whenComplete { _ in self.upkeepUnderWay[key] = nil }
    }

    /// The elements write `op` pops (1 for anything else).
    static func popCount(_ op: Operation) -> Int {
        guard case .data(let args) = op, args.count == 3, args[0] == word("lpop") || args[0] == word("rpop"),
            let n = Int(String(decoding: args[2], as: UTF8.self))
        else { return 1 }
        return max(1, n)
    }

    /// A failed upkeep step's reply to the client (its command did not run); `what`: whose.
    static func upkeepFailed(_ r: NodeReply, _ what: String = "a big list's") -> NodeReply {
        switch r {
        case .notApplied(let s), .unknown(let s), .unavailable(let s), .refused(let s):
            return .notApplied("\(what) upkeep failed (\(s)); the command was not applied")
        case .done(.data(.error(let s))):
            return .done(.data(.error(s)))
        default:
            return .notApplied("\(what) upkeep failed; the command was not applied")
        }
    }

    /// A maintenance op on `key`: whether it applied, or the client's reply when it failed.
    func upkeep(_ key: [UInt8], _ args: [[UInt8]], _ what: String = "a big list's") -> EventLoopFuture<
        Result<Bool, NodeReplyBox>
    > {
        submit(key: key, .write(.data(args))).map { r in
            guard case .done(.data(let d)) = r else {
                return .failure(NodeReplyBox(Self.upkeepFailed(r, what)))
            }
            return .success(d == .integer(1))
        }
    }

    /// Reads `key`'s head (raw: a head stays a head) and continues with it when it is one of
    /// `kinds` (nil: absent, or another kind); a failed read ends the upkeep with the client's
    /// "not applied" reply instead.
    func withHead(
        _ key: [UInt8], kinds: Set<ValueKind>, _ what: String,
        _ next: @escaping (StoredValue?) -> EventLoopFuture<NodeReply?>
    ) -> EventLoopFuture<NodeReply?> {
        rereadHead(key).flatMap { r in
            switch r {
            case .typed(let v): return next(kinds.contains(v.kind) ? v : nil)
            case .value: return next(nil)
            default: return self.eventLoop.makeSucceededFuture(Self.upkeepFailed(r, what))
            }
        }
    }

    /// Reads list `key`'s head and continues with it (nil: absent, or not a list).
    func withListHead(
        _ key: [UInt8], given: StoredValue? = nil,
        _ next: @escaping (StoredValue?) -> EventLoopFuture<NodeReply?>
    )
        -> EventLoopFuture<NodeReply?>
    {
        if let given { return next(given) }
        return withHead(key, kinds: [.list], "a big list's", next)
    }

    /// Writes the buckets a seal of one end cuts, then proposes the seal. A plain list is first
    /// made a head with no buckets (`lsegment`, under a fresh nonce). `head`: this node's own copy
    /// of the head to start from (`noteListOp`), instead of a linearizable read.
    func sealList(_ key: [UInt8], left: Bool, segmented: Bool, rounds: Int = 2, head: StoredValue? = nil)
        -> EventLoopFuture<NodeReply?>
    {
        withListHead(key, given: head) { v in
            guard let v else { return self.eventLoop.makeSucceededFuture(nil) }
            guard let h = ListBuckets(v.bytes) else {
                guard !segmented, ListBuckets.plainFull(DataModel.decodeItems(v.bytes)) else {
                    return self.eventLoop.makeSucceededFuture(nil)
                }
                let nonce = UInt64.random(in: 1 ... .max)
                let args = [
                    Self.word("lsegment"), key, Self.word(String(nonce)),
                    Self.word(String(self.bucketElements)),
                    Self.word(String(self.bucketBytes)),
                ]
                return self.upkeep(key, args).flatMap { r in
                    if case .failure(let f) = r { return self.eventLoop.makeSucceededFuture(f.reply) }
                    return self.sealList(key, left: left, segmented: true, rounds: rounds)
                }
            }
            // The end asked for, or else the other (a list just made bucketed holds everything in
            // its front); each round seals one end, the next round the other if it is full too.
            var left = left
            if !h.full(left ? h.front : h.back) { left.toggle() }
            guard h.full(left ? h.front : h.back), rounds > 0 else {
                return self.eventLoop.makeSucceededFuture(nil)
            }
            let end = left ? 0 : h.index.count - 1
            let endRead: EventLoopFuture<BucketFetch> =
                h.sealNeedsEndBucket(left: left)
                ? self.fetchBuckets(key, h, [end]) : self.eventLoop.makeSucceededFuture(.items([:]))
            return endRead.flatMap { f in
                switch f {
                case .failed(let r): return self.eventLoop.makeSucceededFuture(Self.upkeepFailed(r))
                case .missing: return self.eventLoop.makeSucceededFuture(nil)
                case .items(let got):
                    return self.seal(
                        key, h, left: left, h.sealPlan(left: left, endItems: got[end]), rounds: rounds)
                }
            }
        }
    }

    /// Carries out a seal plan of head `h`: writes the new buckets (each durable on a quorum
    /// before the head stops holding its elements), then proposes `lseal` or `lmerge`; a merged
    /// end bucket is then deleted. Then the other end, if it is full too.
    func seal(_ key: [UInt8], _ h: ListBuckets, left: Bool, _ plan: ListBuckets.SealPlan, rounds: Int)
        -> EventLoopFuture<NodeReply?>
    {
        var chunks: [[[UInt8]]]
        var args = [
            Self.word("lseal"), key, Self.word(String(h.nonce)), Self.word(String(h.gen)),
            Self.word(left ? "left" : "right"),
        ]
        var dropped: [ListBuckets.Entry] = []
        switch plan {
        case .none: return eventLoop.makeSucceededFuture(nil)
        case .seal(let c): chunks = c
        case .merge(let old, let oldItems, let items):
            chunks = [items]
            let enc = DataModel.encodeItems(items)
            args[0] = Self.word("lmerge")
            args += [
                Self.word(String(items.count)), Self.word(String(XXH64.hash(enc))),
                Self.word(String(old.hash)),
                DataModel.encodeItems(oldItems),
            ]
            dropped = [old]
        }
        var puts: [EventLoopFuture<NodeReply>] = []
        for (i, c) in chunks.enumerated() {
            let enc = DataModel.encodeItems(c)
            // Chunk i of a seal is written at generation gen + i (`ListBuckets.seal`).
            let e = ListBuckets.Entry(gen: h.gen &+ UInt32(i), hash: XXH64.hash(enc), count: UInt32(c.count))
            let bk = ListBuckets.bucketKey(list: key, nonce: h.nonce, entry: e)
            puts.append(submit(key: bk, .write(.put(ListBuckets.bucketValue(list: key, encoding: enc)))))
            bucketCache.put(bk, c)
            if dropped.isEmpty { args += [Self.word(String(c.count)), Self.word(String(e.hash))] }
        }
        return EventLoopFuture.whenAllSucceed(puts, on: eventLoop).flatMap { replies in
            for r in replies {
                guard case .done = r else { return self.eventLoop.makeSucceededFuture(Self.upkeepFailed(r)) }
            }
            return self.upkeep(key, args).flatMap { r in
                switch r {
                case .failure(let f): return self.eventLoop.makeSucceededFuture(f.reply)
                case .success(let applied):
                    guard applied else { return self.eventLoop.makeSucceededFuture(nil) }
                    if !dropped.isEmpty { self.dropBuckets(key, h.nonce, dropped) }
                    // The other end too, if it was full in the head this seal read (a linearizable
                    // read of the head per seal saved; pushes to the other end seal it themselves).
                    guard h.full(left ? h.back : h.front) else {
                        return self.eventLoop.makeSucceededFuture(nil)
                    }
                    return self.sealList(key, left: !left, segmented: true, rounds: rounds - 1)
                }
            }
        }
    }

    /// Brings the end bucket's outer sixteenth back into the head (`ListBuckets.unsealTake`: the
    /// head's entry is trimmed, the bucket stays as it is), or all its elements when it holds
    /// little more or a pop needs more (`popping` elements), then deletes it. So a run of pops
    /// carries a small head and writes nothing but the head. `onlyIfLow` (the node's own upkeep,
    /// ahead of the pops): only when the end segment is low.
    func unsealList(
        _ key: [UInt8], left: Bool, onlyIfLow: Bool = false, popping: Int = 1, head: StoredValue? = nil
    )
        -> EventLoopFuture<NodeReply?>
    {
        withListHead(key, given: head) { v in
            guard let v, let h = ListBuckets(v.bytes), !h.index.isEmpty, !onlyIfLow || h.endLow(left: left)
            else {
                return self.eventLoop.makeSucceededFuture(nil)
            }
            let k = left ? 0 : h.index.count - 1
            let e = h.index[k]
            return self.fetchBuckets(key, h, [k]).flatMap { f in
                switch f {
                case .failed(let r): return self.eventLoop.makeSucceededFuture(Self.upkeepFailed(r))
                case .missing: return self.eventLoop.makeSucceededFuture(nil)
                case .items(let got):
                    guard let items = got[k], let visible = e.visible(items) else {
                        return self.eventLoop.makeSucceededFuture(nil)
                    }
                    // The same bucket comes back a sixteenth at a time: encoded once.
                    let bk = ListBuckets.bucketKey(list: key, nonce: h.nonce, entry: e)
                    let enc: [UInt8]
                    if let m = self.unsealEncoding, m.key == bk {
                        enc = m.bytes
                    } else {
                        enc = DataModel.encodeItems(items)
                        self.unsealEncoding = (bk, enc)
                    }
                    var args = [
                        Self.word("lunseal"), key, Self.word(String(h.nonce)),
                        Self.word(left ? "left" : "right"), Self.word(String(e.hash)), enc,
                    ]
                    let side = left ? h.front.count : h.back.count
                    let take = h.unsealTake(left: left, items: visible).flatMap {
                        side + $0 >= popping ? $0 : nil
                    }
                    if let take { args.append(Self.word(String(take))) }
                    return self.upkeep(key, args).map { r in
                        switch r {
                        case .failure(let f): return f.reply
                        case .success(let applied):
                            // A partial unseal leaves the bucket listed; the last one drops it.
                            if applied && take == nil { self.dropBuckets(key, h.nonce, [e]) }
                            return nil
                        }
                    }
                }
            }
        }
    }

    /// Makes the list one value again (a command that works on the whole list), then deletes
    /// its buckets. Refused beyond `max_value_bytes`: one value that large could not be written.
    func joinList(_ key: [UInt8]) -> EventLoopFuture<NodeReply?> {
        withListHead(key) { v in
            guard let v, let h = ListBuckets(v.bytes) else { return self.eventLoop.makeSucceededFuture(nil) }
            return self.fetchBuckets(key, h, Array(h.index.indices)).flatMap { f in
                switch f {
                case .failed(let r): return self.eventLoop.makeSucceededFuture(Self.upkeepFailed(r))
                case .missing: return self.eventLoop.makeSucceededFuture(nil)
                case .items(let got):
                    let encs = h.index.indices.map { DataModel.encodeItems(got[$0] ?? []) }
                    let total = v.bytes.count + encs.reduce(0) { $0 + $1.count }
                    guard total <= self.options.groupBytesMax else {
                        return self.eventLoop.makeSucceededFuture(
                            .done(
                                .data(
                                    .error(
                                        "ERR this command needs the list as one value, and this list (\(h.count) "
                                            + "elements, \(total) bytes) is larger than max_value_bytes "
                                            + "(\(self.options.groupBytesMax)); Tern keeps it in buckets, where "
                                            + "pushes, pops, LLEN, LINDEX, LRANGE and reads of the whole list work"
                                    ))))
                    }
                    let args = [Self.word("ljoin"), key, Self.word(String(h.nonce))] + encs
                    return self.upkeep(key, args).map { r in
                        switch r {
                        case .failure(let f): return f.reply
                        case .success(let applied):
                            if applied { self.dropBuckets(key, h.nonce, h.index) }
                            return nil
                        }
                    }
                }
            }
        }
    }

    /// Deletes buckets no head lists any more (their generation is below the head's, so none
    /// ever will); a failed delete is left to the collector.
    func dropBuckets(_ key: [UInt8], _ nonce: UInt64, _ entries: [ListBuckets.Entry]) {
        for e in entries {
            let bk = ListBuckets.bucketKey(list: key, nonce: nonce, entry: e)
            bucketCache.remove(bk)
            _ = submit(key: bk, .write(.delete))
        }
    }

    /// The repair scan's collector of big lists' bucket keys no head reaches (a seal that lost its
    /// race, a crash before a delete, a list deleted, overwritten or expired).
    func collectListBucket(_ bk: [UInt8]) {
        collectBucket(bk, keyHash: ListBuckets.parseBucketKey(bk)?.keyHash) {
            ListBuckets.isOrphan(bucketKey: bk, head: $0)
        }
    }

    /// Deletes bucket `bk` (whose key names its owner's hash, `keyHash`) when `isOrphan` says
    /// so of its owner's head, read linearizably; counted as a collected orphan.
    func collectBucket(_ bk: [UInt8], keyHash: UInt64?, isOrphan: @escaping (StoredValue?) -> Bool) {
        submit(key: bk, .read).whenSuccess { r in
            guard case .value(let b?) = r, let (owner, _) = ListBuckets.parseBucketValue(b, hash: nil),
                keyHash == XXH64.hash(owner)
            else { return }
            self.rereadHead(owner).whenSuccess { head in
                let stored: StoredValue?
                switch head {
                case .typed(let v): stored = v
                case .value: stored = nil
                default: return
                }
                guard isOrphan(stored) else { return }
                self.submit(key: bk, .write(.delete)).whenSuccess { d in
                    if case .done = d { self.countGarbageCollected() }
                }
            }
        }
    }
}

/// A `NodeReply` as an `Error`, for `Result`.
struct NodeReplyBox: Error {
    var reply: NodeReply
    init(_ r: NodeReply) { reply = r }
}
