import TernCore
import Testing

@testable import TernConsensus

private func w(_ s: String) -> [UInt8] { Array(s.utf8) }

/// The pure rules of big sets and hashes kept in buckets (DataKeyedBuckets.swift, docs/DATA.md
/// "Big sets, hashes and sorted sets"): a shell played by hand — facts read from an older head, flushes planned
/// on one head and proposed after other writes — every reply and the whole collection checked
/// against the same commands on a plain value; and the deliberately broken rules caught.
@Suite struct KeyedBucketsTests {
    /// The shell: the key's value, its buckets, and the upkeep a need asks for.
    struct Shell {
        var v = KeyValue()
        var store: [[UInt8]: [[UInt8]]] = [:]
        let key = w("k")
        var mutant: KeyedMutant?
        var rng: SplitMix64
        /// A flush planned on an earlier head, proposed later (racing the writes in between).
        var pendingFlush: [[UInt8]]?
        /// A head seen earlier: writes sometimes carry facts read from it.
        var staleHead: KeyedBuckets?

        init(seed: UInt64, mutant: KeyedMutant?) {
            rng = SplitMix64(seed: seed)
            self.mutant = mutant
        }

        /// The kind being played (the value's own once it exists).
        var kind: ValueKind = .set
        var hash: Bool { KeyedBuckets.paired(kind) }

        mutating func apply(_ args: [[UInt8]]) -> DataReply {
            let name = String(decoding: args[0], as: UTF8.self)
            if let r = DataModel.applyKeyedBuckets(name, args, &v, seed: 3, mutant: mutant) { return r }
            return DataModel.apply(args, to: &v, seed: 3, lists: true)
        }

        func bucket(_ h: KeyedBuckets, _ k: Int) -> [([UInt8], [UInt8])] {
            KeyedBuckets.pairs(
                store[KeyedBuckets.bucketKey(of: key, nonce: h.nonce, entry: h.index[k])]!, hash: hash)
        }

        mutating func put(_ h: KeyedBuckets, gen: UInt32, low: UInt64, _ pairs: [([UInt8], [UInt8])])
            -> KeyedBuckets.Entry
        {
            let enc = DataModel.encodeItems(KeyedBuckets.items(pairs, hash: hash))
            let e = KeyedBuckets.Entry(gen: gen, hash: XXH64.hash(enc), count: UInt32(pairs.count), low: low)
            store[KeyedBuckets.bucketKey(of: key, nonce: h.nonce, entry: e)] = DataModel.decodeItems(enc)
            return e
        }

        /// The whole collection: member → value.
        func whole() -> [[UInt8]: [UInt8]] {
            guard let b = v.bytes else { return [:] }
            var out: [[UInt8]: [UInt8]] = [:]
            if let h = KeyedBuckets(b) {
                let items = h.assembled(
                    h.index.indices.map { k in KeyedBuckets.items(bucket(h, k), hash: hash) }, hash: hash)
                for (m, x) in KeyedBuckets.pairs(items, hash: hash) { out[m] = x }
            } else {
                for (m, x) in KeyedBuckets.plainPairs(b, kind: kind) { out[m] = x }
            }
            return out
        }

        /// `args` with facts read from head `h` (SPOP: a sample of random buckets' members).
        mutating func wrap(_ args: [[UInt8]], _ h: KeyedBuckets) -> [[UInt8]] {
            var facts: [[UInt8]: KeyedBuckets.Fact] = [:]
            if args[0] == w("spop") {
                for k in h.index.indices where rng.next() % 3 == 0 || h.index.count < 3 {
                    for (m, x) in bucket(h, k).prefix(8) {
                        facts[m] = KeyedBuckets.Fact(bucket: h.index[k].hash, value: x)
                    }
                }
            } else {
                for m in KeyedBuckets.members(args) {
                    let k = h.position(of: m)
                    facts[m] = KeyedBuckets.Fact(
                        bucket: h.index[k].hash, value: bucket(h, k).first(where: { $0.0 == m })?.1)
                }
            }
            return [w("kf"), KeyedBuckets.encodeFacts(facts)] + args
        }

        mutating func split() {
            guard let b = v.bytes, !KeyedBuckets.isHead(b) else { return }
            let shape = KeyedBuckets(nonce: 9, bucketMembers: 8, bucketBytes: 1 << 12, index: [], count: 0)
            var args = [w("ksplit"), key, w("9"), w(String(XXH64.hash(b))), w("8"), w("4096")]
            for c in KeyedBuckets.cut(
                KeyedBuckets.plainPairs(b, kind: kind), low: 0, target: 8, targetBytes: 4096
            ) {
                let e = put(shape, gen: 0, low: c.low, c.pairs)
                args += [w(String(e.count)), w(String(e.hash)), w(String(e.low))]
            }
            #expect(apply(args) == .integer(1))
        }

        /// A flush of head `h` as the shell plans it (its buckets written now).
        mutating func planFlush(_ h: KeyedBuckets) -> [[UInt8]] {
            var byPosition: [Int: [[UInt8]]] = [:]
            for m in h.overlay.keys { byPosition[h.position(of: m), default: []].append(m) }
            var groups: [DataModel.KeyedFlush.Group] = []
            var folded = Overlay()
            for k in byPosition.keys.sorted() {
                var d: [[UInt8]: [UInt8]] = [:]
                for (m, x) in bucket(h, k) { d[m] = x }
                for m in byPosition[k]! {
                    folded[m] = .some(h.overlay[m]!)
                    d[m] = h.overlay[m]!
                }
                let pairs = d.map { ($0.key, $0.value) }
                let old = h.index[k]
                let chunks =
                    pairs.count > 2 * h.bucketMembers
                    ? KeyedBuckets.cut(
                        pairs, low: old.low, target: h.bucketMembers, targetBytes: h.bucketBytes)
                    : [(low: old.low, pairs: pairs)]
                groups.append(
                    .init(old: old, new: chunks.map { put(h, gen: h.gen, low: $0.low, $0.pairs) }))
            }
            return [
                w("kflush"), key, w(String(h.nonce)), w(String(h.gen)),
                DataModel.KeyedFlush(groups: groups, folded: folded).encoded,
            ]
        }

        /// Runs a client's write as the shell does: facts when the key is bucketed (sometimes
        /// from an older head), the upkeep each need asks for, and again.
        mutating func run(_ args: [[UInt8]]) -> DataReply {
            var fresh = false
            for _ in 0..<12 {
                var sent = args
                if let h = KeyedBuckets(v.bytes) {
                    let from = !fresh && rng.next() % 4 == 0 ? (staleHead ?? h) : h
                    sent = wrap(args, from)
                    if rng.next() % 8 == 0 { staleHead = h }
                }
                let r = apply(sent)
                guard let need = KeyedBuckets.need(r) else { return r }
                switch need {
                case .facts: fresh = true
                case .split: split()
                case .flush:
                    let h = KeyedBuckets(v.bytes)!
                    let f = planFlush(h)
                    #expect(apply(f) == .integer(1))
                case .join:
                    let h = KeyedBuckets(v.bytes)!
                    let encs = h.index.indices.map {
                        DataModel.encodeItems(KeyedBuckets.items(bucket(h, $0), hash: hash))
                    }
                    #expect(apply([w("kjoin"), key, w(String(h.nonce))] + encs) == .integer(1))
                }
            }
            // (A mismatch with the model's reply, so the caller reports it.)
            return .error("no progress on \(String(decoding: args[0], as: UTF8.self))")
        }

        /// Between commands: sometimes plan a flush (proposed a few writes later), sometimes
        /// propose the one planned.
        mutating func upkeep() {
            guard let h = KeyedBuckets(v.bytes) else { return }
            if let f = pendingFlush, rng.next() % 3 == 0 {
                _ = apply(f)
                pendingFlush = nil
            } else if pendingFlush == nil, !h.overlay.isEmpty, rng.next() % 6 == 0 {
                pendingFlush = planFlush(h)
            }
        }
    }

    /// Plays `steps` random writes on a set, hash or sorted set grown past the plain bound;
    /// returns the first mismatch with the plain model (nil: none).
    func play(kind: ValueKind, seed: UInt64, steps: Int, mutant: KeyedMutant? = nil) -> String? {
        var s = Shell(seed: seed, mutant: mutant)
        s.kind = kind
        let hash = kind == .hash
        var model = KeyValue()
        var rng = SplitMix64(seed: seed ^ 0xABCD)
        func member() -> [UInt8] { w("m\(rng.next() % 1600)") }
        func score() -> [UInt8] { w(String(Int(rng.next() % 9) - 4)) }
        // Grow it plain first, past the bound.
        for chunk in 0..<13 {
            var args = [w(["sadd", "hset", "zadd"][kind == .set ? 0 : hash ? 1 : 2]), w("k")]
            for i in (chunk * 100)..<(chunk * 100 + 100) {
                if kind == .zset { args.append(w("\(i % 17)")) }
                args.append(w("m\(i)"))
                if hash { args.append(w("\(i)")) }
            }
            let r = s.run(args)
            let want = DataModel.apply(args, to: &model, seed: 3)
            if r != want { return "grow \(chunk): \(r) != \(want)" }
        }
        guard KeyedBuckets.isHead(s.v.bytes) else { return "not bucketed after 1 300 members" }
        for step in 0..<steps {
            var args: [[UInt8]]
            let roll = rng.next() % 100
            if kind == .zset {
                switch roll {
                case 0..<30: args = [w("zadd"), w("k"), score(), member(), score(), member()]
                case 30..<40:
                    let flags = [["nx"], ["xx", "ch"], ["gt"], ["lt", "ch"], ["gt", "ch"]][
                        Int(rng.next() % 5)]
                    args = [w("zadd"), w("k")] + flags.map(w) + [score(), member()]
                case 40..<47: args = [w("zadd"), w("k"), w("incr"), score(), member()]
                case 47..<65: args = [w("zincrby"), w("k"), score(), member()]
                case 65..<98: args = [w("zrem"), w("k"), member(), member(), member()]
                default: args = [w("zpopmin"), w("k"), w("2")]
                }
            } else if hash {
                switch roll {
                case 0..<35: args = [w("hset"), w("k"), member(), w("\(rng.next() % 100)"), member(), w("x")]
                case 35..<55: args = [w("hdel"), w("k"), member(), member()]
                case 55..<75: args = [w("hincrby"), w("k"), member(), w("\(rng.next() % 7)")]
                case 75..<85: args = [w("hsetnx"), w("k"), member(), w("nx")]
                default: args = [w("hincrbyfloat"), w("k"), member(), w("1.5")]
                }
            } else {
                switch roll {
                case 0..<45: args = [w("sadd"), w("k"), member(), member()]
                case 45..<85: args = [w("srem"), w("k"), member(), member(), member()]
                default: args = [w("spop"), w("k"), w("\(1 + rng.next() % 3)")]
                }
            }
            let r = s.run(args)
            if args[0] == w("spop") {
                guard case .set(let popped) = r else { return "step \(step): spop answered \(r)" }
                var rem = [w("srem"), w("k")]
                for p in popped {
                    guard case .bulk(let m?) = p else { return "step \(step): spop item \(p)" }
                    rem.append(m)
                }
                let n = DataModel.apply(rem, to: &model, seed: 3)
                if n != .integer(Int64(popped.count)) { return "step \(step): spop popped non-members" }
            } else {
                let want = DataModel.apply(args, to: &model, seed: 3)
                if r != want {
                    return "step \(step) \(args.map { String(decoding: $0, as: UTF8.self) }): \(r) != \(want)"
                }
            }
            s.upkeep()
            var plain: [[UInt8]: [UInt8]] = [:]
            for (m, x) in KeyedBuckets.plainPairs(model.bytes, kind: kind) { plain[m] = x }
            if s.whole() != plain { return "step \(step): the collection differs from the model" }
            if let h = KeyedBuckets(s.v.bytes) {
                if h.count != UInt64(plain.count) {
                    return "step \(step): count \(h.count) != \(plain.count)"
                }
                // A member read through the head matches the plain read.
                let m = member()
                let read = [w(["sismember", "hget", "zscore"][kind == .set ? 0 : hash ? 1 : 2]), w("k"), m]
                var buckets: [Int: [[UInt8]]] = [:]
                let k = h.position(of: m)
                buckets[k] = KeyedBuckets.items(s.bucket(h, k), hash: s.hash)
                let got = h.answer(read, kind: s.v.kind, deadlineMs: 0, buckets: buckets, nowMs: 0)
                let want = DataModel.read(
                    read, StoredValue(kind: model.kind, deadlineMs: 0, bytes: model.bytes!), nowMs: 0)
                if got != want { return "step \(step): read \(got) != \(want)" }
            }
        }
        return nil
    }

    @Test(
        "A bucketed set matches a plain one under stale facts and racing flushes",
        arguments: [1, 2, 3] as [UInt64])
    func setAgainstModel(seed: UInt64) {
        #expect(play(kind: .set, seed: seed, steps: 800) == nil)
    }

    @Test(
        "A bucketed hash matches a plain one under stale facts and racing flushes",
        arguments: [1, 2, 3] as [UInt64])
    func hashAgainstModel(seed: UInt64) {
        #expect(play(kind: .hash, seed: seed, steps: 800) == nil)
    }

    @Test(
        "A bucketed sorted set matches a plain one under stale facts and racing flushes",
        arguments: [1, 2, 3] as [UInt64])
    func zsetAgainstModel(seed: UInt64) {
        #expect(play(kind: .zset, seed: seed, steps: 800) == nil)
    }

    @Test(
        "Each broken rule is caught", arguments: [KeyedMutant.staleFacts, .factsOverOverlay, .flushDropsAll])
    func mutantsCaught(mutant: KeyedMutant) {
        let caught = (1...6).contains { seed in
            play(kind: .set, seed: seed, steps: 800, mutant: mutant) != nil
                || play(kind: .hash, seed: seed, steps: 800, mutant: mutant) != nil
        }
        #expect(caught)
    }

    @Test(
        "Each broken rule is caught on a sorted set",
        arguments: [KeyedMutant.staleFacts, .factsOverOverlay, .flushDropsAll])
    func zsetMutantsCaught(mutant: KeyedMutant) {
        #expect((1...6).contains { play(kind: .zset, seed: $0, steps: 800, mutant: mutant) != nil })
    }

    @Test("Head and flush bodies read back as written")
    func codec() {
        var h = KeyedBuckets(
            nonce: 5, bucketMembers: 8, bucketBytes: 4096,
            index: [
                .init(gen: 0, hash: 1, count: 3, low: 0), .init(gen: 0, hash: 2, count: 4, low: 1 << 40),
            ],
            count: 7)
        h.overlay[w("a")] = .some(w("1"))
        h.overlay[w("b")] = .some(nil)
        #expect(KeyedBuckets(h.encoded) == h)
        #expect(ListBuckets(h.encoded) == nil)
        let f = DataModel.KeyedFlush(
            groups: [.init(old: h.index[0], new: [.init(gen: 0, hash: 9, count: 2, low: 0)])],
            folded: [w("a"): w("1"), w("b"): nil])
        #expect(DataModel.KeyedFlush(f.encoded) == f)
    }

    @Test("Buckets of one head with the same content have different keys (found by the simulator)")
    func bucketKeysUnique() {
        // Two empty buckets of one generation: deleting the one a flush replaced must not delete
        // the other (`tern sim --data --data-keyed` found the head listing a deleted bucket).
        let empty = XXH64.hash(DataModel.encodeItems([]))
        let a = KeyedBuckets.Entry(gen: 1, hash: empty, count: 0, low: 0)
        let b = KeyedBuckets.Entry(gen: 1, hash: empty, count: 0, low: 1 << 63)
        #expect(
            KeyedBuckets.bucketKey(of: w("k"), nonce: 5, entry: a)
                != KeyedBuckets.bucketKey(of: w("k"), nonce: 5, entry: b))
        // A flush writes at the head's generation, which a split starts above its buckets' (0): a
        // flushed bucket with unchanged content never takes the key of the one it replaces.
        let plain = DataModel.encodeItems([w("x"), w("y")])
        var v = KeyValue(bytes: plain, kind: .set)
        let enc = DataModel.encodeItems([w("x"), w("y")])
        let args = [
            w("ksplit"), w("k"), w("5"), w(String(XXH64.hash(plain))), w("8"), w("4096"), w("2"),
            w(String(XXH64.hash(enc))), w("0"),
        ]
        #expect(DataModel.apply(args, to: &v, seed: 1, lists: true) == .integer(1))
        #expect(KeyedBuckets(v.bytes)?.gen == 1)
        #expect(KeyedBuckets(v.bytes)?.index.first?.gen == 0)
    }

    @Test("The collector's rule: a bucket no head lists below the head's generation is an orphan")
    func orphans() {
        var h = KeyedBuckets(
            nonce: 5, bucketMembers: 8, bucketBytes: 4096, index: [.init(gen: 0, hash: 1, count: 3, low: 0)],
            count: 3)
        h.gen = 2
        let head = StoredValue(kind: .set, deadlineMs: 0, bytes: h.encoded)
        let listed = KeyedBuckets.bucketKey(of: w("k"), nonce: 5, entry: h.index[0])
        let old = KeyedBuckets.bucketKey(
            of: w("k"), nonce: 5, entry: .init(gen: 1, hash: 7, count: 1, low: 0))
        let inFlight = KeyedBuckets.bucketKey(
            of: w("k"), nonce: 5, entry: .init(gen: 2, hash: 8, count: 1, low: 0))
        let otherNonce = KeyedBuckets.bucketKey(of: w("k"), nonce: 6, entry: h.index[0])
        #expect(!KeyedBuckets.isOrphan(bucketKey: listed, head: head))
        #expect(KeyedBuckets.isOrphan(bucketKey: old, head: head))
        #expect(!KeyedBuckets.isOrphan(bucketKey: inFlight, head: head))
        #expect(KeyedBuckets.isOrphan(bucketKey: otherNonce, head: head))
        #expect(KeyedBuckets.isOrphan(bucketKey: listed, head: nil))
        #expect(
            KeyedBuckets.isOrphan(
                bucketKey: listed, head: StoredValue(kind: .string, deadlineMs: 0, bytes: [1])))
    }
}
