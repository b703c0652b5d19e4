import TernConsensus
import TernCore
import Testing

private func w(_ s: String) -> [UInt8] { Array(s.utf8) }

/// The pure rules of big lists kept in buckets (DataListBuckets.swift, docs/DATA.md "Big lists"):
/// a shell's steps played by hand, each checked against a plain array.
@Suite struct ListBucketsTests {
    /// Applies data command `args` as the proposer does for a key of its own.
    @discardableResult
    func apply(_ v: inout KeyValue, _ args: [[UInt8]]) -> DataReply {
        DataModel.apply(args, to: &v, seed: 1, lists: true)
    }
    func items(_ r: ClosedRange<Int>) -> [[UInt8]] { r.map { w("e\($0)") } }

    /// Seals what `need` asks, as the shell does: the chunks' buckets kept in `store`.
    func seal(_ v: inout KeyValue, left: Bool, store: inout [[UInt8]: [[UInt8]]], nonce: UInt64 = 7) {
        if !ListBuckets.isHead(v.bytes) {
            #expect(apply(&v, [w("lsegment"), w("k"), w(String(nonce)), w("8"), w("4096")]) == .integer(1))
        }
        #expect(sealEnd(&v, left: left, store: &store))
    }

    /// The whole list from the head and the stored buckets.
    func whole(_ v: KeyValue, _ store: [[UInt8]: [[UInt8]]]) -> [[UInt8]] {
        guard let h = ListBuckets(v.bytes ?? []) else { return DataModel.decodeItems(v.bytes ?? []) }
        return h.assembled(
            h.index.map { store[ListBuckets.bucketKey(list: w("k"), nonce: h.nonce, entry: $0)]! })
    }

    @Test("A full plain list asks to be sealed; sealed, it keeps its order, and pushes rewrite the head only")
    func sealKeepsOrder() {
        var v = KeyValue()
        var model = items(0...1199)
        #expect(apply(&v, [w("rpush"), w("k")] + model) == .integer(1200))
        // Full now: the next push changes nothing and names the work.
        let before = v
        #expect(ListBuckets.need(apply(&v, [w("lpush"), w("k"), w("x")])) == .seal(left: true))
        #expect(v.bytes == before.bytes)
        var store: [[UInt8]: [[UInt8]]] = [:]
        seal(&v, left: true, store: &store)
        let h = ListBuckets(v.bytes!)!
        #expect(h.front.count < 9 && !h.index.isEmpty && h.index.allSatisfy { $0.count == 8 })
        #expect(whole(v, store) == model)
        #expect(apply(&v, [w("lpush"), w("k"), w("x"), w("y")]) == .integer(1202))
        model.insert(contentsOf: [w("y"), w("x")], at: 0)
        #expect(apply(&v, [w("rpush"), w("k"), w("z")]) == .integer(1203))
        model.append(w("z"))
        #expect(whole(v, store) == model)
        // The head stays small: its bytes do not grow with the list.
        #expect(v.bytes!.count < 150 * 16 + 200)
    }

    @Test("A seal applies only at its generation and with its elements' hashes")
    func sealChecks() {
        var v = KeyValue()
        apply(&v, [w("rpush"), w("k")] + items(0...99))
        #expect(apply(&v, [w("lsegment"), w("k"), w("9"), w("8"), w("4096")]) == .integer(1))
        #expect(apply(&v, [w("lsegment"), w("k"), w("10"), w("8"), w("4096")]) == .integer(0))
        let h = ListBuckets(v.bytes!)!
        guard case .seal(let chunks) = h.sealPlan(left: true, endItems: nil) else {
            Issue.record("a full front with no bucket seals new buckets")
            return
        }
        let c = chunks[0]
        let hash = XXH64.hash(DataModel.encodeItems(c))
        #expect(
            apply(&v, [w("lseal"), w("k"), w("9"), w("1"), w("left"), w("8"), w(String(hash))]) == .integer(0)
        )
        #expect(
            apply(&v, [w("lseal"), w("k"), w("9"), w("0"), w("left"), w("8"), w(String(hash ^ 1))])
                == .integer(0))
        #expect(
            apply(&v, [w("lseal"), w("k"), w("8"), w("0"), w("left"), w("8"), w(String(hash))]) == .integer(0)
        )
        #expect(
            apply(&v, [w("lseal"), w("k"), w("9"), w("0"), w("left"), w("8"), w(String(hash))]) == .integer(1)
        )
        // The same seal again: the generation moved on.
        #expect(
            apply(&v, [w("lseal"), w("k"), w("9"), w("0"), w("left"), w("8"), w(String(hash))]) == .integer(0)
        )
        #expect(ListBuckets(v.bytes!)!.gen == 1)
    }

    @Test("Chunks of one seal with the same elements get distinct bucket keys")
    func repeatedChunksDistinct() {
        // A run of one repeated element sealed as two chunks: same content hash. They once shared
        // a key, so the unseal that deleted one deleted the other (ListBucketsClusterTests
        // .repeatedElements shows it through three nodes).
        var v = KeyValue()
        apply(&v, [w("rpush"), w("k")] + Array(repeating: w("x"), count: 40))
        #expect(apply(&v, [w("lsegment"), w("k"), w("9"), w("8"), w("4096")]) == .integer(1))
        let hash = XXH64.hash(DataModel.encodeItems(Array(repeating: w("x"), count: 8)))
        #expect(
            apply(
                &v,
                [
                    w("lseal"), w("k"), w("9"), w("0"), w("left"), w("8"), w(String(hash)), w("8"),
                    w(String(hash)),
                ])
                == .integer(1))
        let h = ListBuckets(v.bytes!)!
        #expect(h.index.count == 2 && h.gen == 2)
        let keys = Set(h.index.map { ListBuckets.bucketKey(list: w("k"), nonce: 9, entry: $0) })
        #expect(keys.count == 2)
    }

    @Test("Pops reach into buckets through unseal; middle commands through join; an emptied list is gone")
    func popsAndJoin() {
        var v = KeyValue()
        var model = items(0...1199)
        apply(&v, [w("rpush"), w("k")] + model)
        var store: [[UInt8]: [[UInt8]]] = [:]
        seal(&v, left: true, store: &store)
        var h = ListBuckets(v.bytes!)!
        // Pop the front segment dry, then the next pop asks for the first bucket.
        for _ in 0..<h.front.count {
            #expect(apply(&v, [w("lpop"), w("k")]) == .bulk(model.removeFirst()))
        }
        #expect(ListBuckets.need(apply(&v, [w("lpop"), w("k")])) == .unseal(left: true))
        h = ListBuckets(v.bytes!)!
        let first = h.index[0]
        let enc = DataModel.encodeItems(
            store[ListBuckets.bucketKey(list: w("k"), nonce: h.nonce, entry: first)]!)
        // A wrong hash or a bucket that is not the end one changes nothing.
        #expect(
            apply(&v, [w("lunseal"), w("k"), w(String(h.nonce)), w("right"), w(String(first.hash)), enc])
                == .integer(0))
        #expect(
            apply(&v, [w("lunseal"), w("k"), w(String(h.nonce)), w("left"), w(String(first.hash)), enc])
                == .integer(1))
        #expect(apply(&v, [w("lpop"), w("k"), w("3")]) == .array(model.prefix(3).map { .bulk($0) }))
        model.removeFirst(3)
        #expect(whole(v, store) == model)
        // LSET needs the whole list: join first.
        #expect(ListBuckets.need(apply(&v, [w("lset"), w("k"), w("500"), w("new")])) == .join)
        h = ListBuckets(v.bytes!)!
        let encs = h.index.map {
            DataModel.encodeItems(store[ListBuckets.bucketKey(list: w("k"), nonce: h.nonce, entry: $0)]!)
        }
        #expect(apply(&v, [w("ljoin"), w("k"), w(String(h.nonce))] + encs.dropLast()) == .integer(0))
        #expect(apply(&v, [w("ljoin"), w("k"), w(String(h.nonce))] + encs) == .integer(1))
        #expect(!ListBuckets.isHead(v.bytes))
        #expect(apply(&v, [w("lset"), w("k"), w("500"), w("new")]) == .ok)
        model[500] = w("new")
        #expect(DataModel.decodeItems(v.bytes!) == model)
        // A transaction on a head joins first too.
        seal(&v, left: true, store: &store, nonce: 8)
        #expect(
            ListBuckets.need(apply(&v, [w("multi"), w("k"), w("0"), w("-"), w("w"), w("1"), w("llen")]))
                == .join)
        // Popping everything removes the key.
        let n = model.count
        var rounds = 0
        while v.bytes != nil && rounds < 10_000 {
            rounds += 1
            let r = apply(&v, [w("rpop"), w("k")])
            if let need = ListBuckets.need(r) {
                #expect(need == .unseal(left: false))
                let hh = ListBuckets(v.bytes!)!
                let last = hh.index.last!
                let e = DataModel.encodeItems(
                    store[ListBuckets.bucketKey(list: w("k"), nonce: hh.nonce, entry: last)]!)
                #expect(
                    apply(
                        &v, [w("lunseal"), w("k"), w(String(hh.nonce)), w("right"), w(String(last.hash)), e])
                        == .integer(1))
                continue
            }
            #expect(r == .bulk(model.removeLast()))
        }
        #expect(model.isEmpty && v.bytes == nil && rounds > n)
    }

    @Test(
        "A partial unseal brings back the end bucket's outer quarter; the rest stays a bucket at the head's generation"
    )
    func partialUnseal() {
        var v = KeyValue()
        var model = items(0...1199)
        apply(&v, [w("rpush"), w("k")] + model)
        #expect(apply(&v, [w("lsegment"), w("k"), w("9"), w("64"), w("65536")]) == .integer(1))
        var store: [[UInt8]: [[UInt8]]] = [:]
        #expect(sealEnd(&v, left: true, store: &store))
        #expect(ListBuckets(v.bytes!)!.index.count > 10)
        /// One partial unseal of `left`'s end bucket, as the node's upkeep does it.
        func partial(left: Bool) -> Bool {
            let h = ListBuckets(v.bytes!)!
            let end = left ? h.index.first! : h.index.last!
            let items = store[ListBuckets.bucketKey(list: w("k"), nonce: h.nonce, entry: end)]!
            guard let visible = end.visible(items), let take = h.unsealTake(left: left, items: visible) else {
                return false
            }
            #expect(take >= 1 && take <= 16 && take < visible.count)
            let base = [
                w("lunseal"), w("k"), w(String(h.nonce)), w(left ? "left" : "right"), w(String(end.hash)),
                DataModel.encodeItems(items),
            ]
            // Taking nothing, everything that is left, or from elements that do not hash as the
            // head names changes nothing.
            let before = v.bytes
            #expect(apply(&v, base + [w("0")]) == .integer(0))
            #expect(apply(&v, base + [w(String(visible.count))]) == .integer(0))
            var wrong = base
            wrong[5] = DataModel.encodeItems(Array(items.dropFirst()))
            #expect(apply(&v, wrong + [w(String(take))]) == .integer(0))
            #expect(v.bytes == before)
            #expect(apply(&v, base + [w(String(take))]) == .integer(1))
            // The bucket stays as it is: the head lists it trimmed, at the same generation.
            let after = ListBuckets(v.bytes!)!
            #expect(after.gen == h.gen && after.index.count == h.index.count)
            let now = left ? after.index.first! : after.index.last!
            #expect(now.gen == end.gen && now.hash == end.hash && now.stored == items.count)
            #expect(Int(now.count) == visible.count - take)
            #expect(left ? now.lo == end.lo + UInt32(take) : now.hi == end.hi + UInt32(take))
            return true
        }
        #expect(partial(left: true))
        #expect(whole(v, store) == model)
        #expect(partial(left: false))
        #expect(whole(v, store) == model)
        // Pop everything from the left, bringing buckets back in parts whenever the front runs dry.
        var rounds = 0
        while v.bytes != nil && rounds < 20_000 {
            rounds += 1
            let r = apply(&v, [w("lpop"), w("k")])
            if let need = ListBuckets.need(r) {
                #expect(need == .unseal(left: true))
                if !partial(left: true) {
                    let h = ListBuckets(v.bytes!)!
                    let first = h.index[0]
                    let e = DataModel.encodeItems(
                        store[ListBuckets.bucketKey(list: w("k"), nonce: h.nonce, entry: first)]!)
                    #expect(
                        apply(
                            &v,
                            [w("lunseal"), w("k"), w(String(h.nonce)), w("left"), w(String(first.hash)), e])
                            == .integer(1))
                }
                continue
            }
            #expect(r == .bulk(model.removeFirst()))
            if rounds % 97 == 0 { #expect(whole(v, store) == model) }
        }
        #expect(model.isEmpty && v.bytes == nil)
    }

    @Test("Reads from the head name only the buckets their answer lies in")
    func readPlans() {
        var v = KeyValue()
        var model = items(0...1199)
        apply(&v, [w("rpush"), w("k")] + model)
        var store: [[UInt8]: [[UInt8]]] = [:]
        seal(&v, left: true, store: &store)
        // One element in the front segment, before the buckets.
        #expect(apply(&v, [w("lpush"), w("k"), w("first")]) == .integer(1201))
        model.insert(w("first"), at: 0)
        let h = ListBuckets(v.bytes!)!
        #expect(DataModel.listReadPlan([w("llen"), w("k")], h) == .answer(.integer(1201)))
        #expect(
            DataModel.listReadPlan([w("lrange"), w("k"), w("0"), w(String(h.front.count - 1))], h)
                == .answer(.array(model.prefix(h.front.count).map { .bulk($0) })))
        #expect(
            DataModel.listReadPlan([w("lrange"), w("k"), w("0"), w("-1")], h)
                == .buckets(Array(h.index.indices)))
        #expect(DataModel.listReadPlan([w("lpos"), w("k"), w("e3")], h) == .whole)
        let at = h.front.count + 8 * 3 + 2
        guard case .buckets(let ks) = DataModel.listReadPlan([w("lindex"), w("k"), w(String(at))], h) else {
            Issue.record("LINDEX inside a bucket needs it")
            return
        }
        #expect(ks == [3])
        var fetched: [Int: [[UInt8]]] = [:]
        for k in h.index.indices {
            fetched[k] = store[ListBuckets.bucketKey(list: w("k"), nonce: h.nonce, entry: h.index[k])]
        }
        #expect(DataModel.listAnswer([w("lindex"), w("k"), w(String(at))], h, fetched) == .bulk(model[at]))
        // The server's view of the same head (segments read from the bytes) answers the same.
        let view = ListHeadView(v.bytes!)!
        #expect(view.count == h.count && view.frontCount == h.front.count && view.index == h.index)
        for (s, e) in [(0, 5), (-30, -2), (100, 1000), (0, -1), (1190, 1300), (3, 3)] {
            let args = [w("lrange"), w("k"), w(String(s)), w(String(e))]
            #expect(DataModel.listReadPlan(args, view) == DataModel.listReadPlan(args, h))
            #expect(DataModel.listAnswer(args, view, fetched) == DataModel.listAnswer(args, h, fetched))
        }
        #expect(DataModel.listAnswer([w("lindex"), w("k"), w("-1")], h, fetched) == .bulk(model.last))
        #expect(
            DataModel.listAnswer([w("lrange"), w("k"), w("-30"), w("-2")], h, fetched)
                == .array(model[1171...1199].map { .bulk($0) }))
        #expect(
            DataModel.listAnswer([w("lrange"), w("k"), w("100"), w("1000")], h, fetched)
                == .array(model[100...1000].map { .bulk($0) }))
    }

    @Test("The collector's rule: unreferenced buckets below the head's generation, or of another incarnation")
    func orphans() {
        var v = KeyValue()
        apply(&v, [w("rpush"), w("k")] + items(0...1199))
        var store: [[UInt8]: [[UInt8]]] = [:]
        seal(&v, left: true, store: &store)
        let h = ListBuckets(v.bytes!)!
        let head = v.stored
        let live = ListBuckets.bucketKey(list: w("k"), nonce: h.nonce, entry: h.index[0])
        #expect(!ListBuckets.isOrphan(bucketKey: live, head: head))
        #expect(ListBuckets.isOrphan(bucketKey: live, head: nil))
        #expect(
            ListBuckets.isOrphan(
                bucketKey: live, head: StoredValue(kind: .list, deadlineMs: 0, bytes: [0, 0, 0, 0])))
        let lost = ListBuckets.bucketKey(
            list: w("k"), nonce: h.nonce, entry: .init(gen: 0, hash: 1, count: 8))
        #expect(ListBuckets.isOrphan(bucketKey: lost, head: head))
        // At or above the head's generation: a seal may be in flight.
        let flight = ListBuckets.bucketKey(
            list: w("k"), nonce: h.nonce, entry: .init(gen: h.gen, hash: 1, count: 8))
        #expect(!ListBuckets.isOrphan(bucketKey: flight, head: head))
        let other = ListBuckets.bucketKey(list: w("k"), nonce: h.nonce &+ 1, entry: h.index[0])
        #expect(ListBuckets.isOrphan(bucketKey: other, head: head))
        #expect(ListBuckets.parseBucketKey(live)?.gen == h.index[0].gen)
        #expect(ListBuckets.parseBucketKey(live)?.keyHash == XXH64.hash(w("k")))
    }

    @Test("A hash-tag group's member (lists: false) stays one value however long")
    func groupMembersStayPlain() {
        var v = KeyValue()
        DataModel.apply([w("rpush"), w("k")] + items(0...1999), to: &v, seed: 1)
        #expect(DataModel.apply([w("rpush"), w("k"), w("x")], to: &v, seed: 1) == .integer(2001))
        #expect(!ListBuckets.isHead(v.bytes))
    }
}

/// The pushes and pops done on the encoded bytes (`ListBytes`) against an array, on plain lists and
/// on bucketed heads, with and without counts.
@Suite struct ListBytesTests {
    @Test("Random pushes and pops on the bytes keep a plain list and a head equal to an array")
    func randomEnds() {
        var rng = SplitMix64(seed: 42)
        // Trimmed entries seen, and those a seal has since put another bucket beyond.
        var trimmed = 0
        var trimmedInside = 0
        defer { #expect(trimmed > 100 && trimmedInside > 10, "\(trimmed) trimmed, \(trimmedInside) inside") }
        for bucketed in [false, true] {
            var v = KeyValue()
            var model: [[UInt8]] = []
            var store: [[UInt8]: [[UInt8]]] = [:]
            for step in 0..<3000 {
                let roll = rng.below(10)
                var args: [[UInt8]]
                let n = Int(rng.below(4)) + 1
                let items = (0..<n).map { Array("s\(step)-\($0)".utf8) }
                switch roll {
                case 0..<3: args = [Array("lpush".utf8), Array("k".utf8)] + items
                case 3..<6: args = [Array("rpush".utf8), Array("k".utf8)] + items
                case 6, 7: args = [Array((roll == 6 ? "lpop" : "rpop").utf8), Array("k".utf8)]
                default:
                    args = [
                        Array((roll == 8 ? "lpop" : "rpop").utf8), Array("k".utf8),
                        Array(String(rng.below(5)).utf8),
                    ]
                }
                var r = DataModel.apply(args, to: &v, seed: 1, lists: true)
                // The upkeep a need asks for, done here as the shell would, then the command again.
                var rounds = 0
                while let need = ListBuckets.need(r), rounds < 4 {
                    rounds += 1
                    if !ListBuckets.isHead(v.bytes) {
                        _ = DataModel.apply(
                            [
                                Array("lsegment".utf8), Array("k".utf8), Array("5".utf8), Array("4".utf8),
                                Array("4096".utf8),
                            ],
                            to: &v, seed: 1, lists: true)
                    }
                    let h = ListBuckets(v.bytes!)!
                    switch need {
                    case .seal(let left):
                        for side in [left, !left] { _ = sealEnd(&v, left: side, store: &store) }
                    case .unseal(let left):
                        let e = left ? h.index.first! : h.index.last!
                        let stored = store[
                            ListBuckets.bucketKey(list: Array("k".utf8), nonce: h.nonce, entry: e)]!
                        var a = [
                            Array("lunseal".utf8), Array("k".utf8), Array(String(h.nonce).utf8),
                            Array((left ? "left" : "right").utf8), Array(String(e.hash).utf8),
                            DataModel.encodeItems(stored),
                        ]
                        // Half the time a partial unseal: the entry trimmed, the bucket kept.
                        if e.count > 1 && rng.below(2) == 0 {
                            a.append(Array(String(1 + rng.below(UInt64(e.count - 1))).utf8))
                        }
                        #expect(DataModel.apply(a, to: &v, seed: 1, lists: true) == .integer(1))
                    case .join:
                        let encs = h.index.map {
                            DataModel.encodeItems(
                                store[
                                    ListBuckets.bucketKey(list: Array("k".utf8), nonce: h.nonce, entry: $0)]!)
                        }
                        #expect(
                            DataModel.apply(
                                [Array("ljoin".utf8), Array("k".utf8), Array(String(h.nonce).utf8)] + encs,
                                to: &v, seed: 1,
                                lists: true) == .integer(1))
                    }
                    r = DataModel.apply(args, to: &v, seed: 1, lists: true)
                }
                // The same command on an array, as Redis's list does it.
                let name = String(decoding: args[0], as: UTF8.self)
                let want: DataReply
                switch name {
                case "lpush":
                    model.insert(contentsOf: items.reversed(), at: 0)
                    want = .integer(Int64(model.count))
                case "rpush":
                    model += items
                    want = .integer(Int64(model.count))
                default:
                    let left = name == "lpop"
                    if model.isEmpty {
                        want = args.count > 2 ? .array(nil) : .bulk(nil)
                    } else if args.count > 2 {
                        let k = min(Int(String(decoding: args[2], as: UTF8.self))!, model.count)
                        want = .array(
                            (left ? Array(model.prefix(k)) : Array(model.suffix(k).reversed())).map {
                                .bulk($0)
                            })
                        if left { model.removeFirst(k) } else { model.removeLast(k) }
                    } else {
                        want = .bulk(left ? model.removeFirst() : model.removeLast())
                    }
                }
                #expect(r == want, "step \(step) \(name)")
                // Small heads become bucketed on the next round when the test asks for it.
                if bucketed && !ListBuckets.isHead(v.bytes) && model.count > 8 {
                    _ = DataModel.apply(
                        [
                            Array("lsegment".utf8), Array("k".utf8), Array("5".utf8), Array("4".utf8),
                            Array("4096".utf8),
                        ],
                        to: &v, seed: 1, lists: true)
                }
                let whole: [[UInt8]]
                if let h = ListBuckets(v.bytes ?? []) {
                    let buckets = h.index.map {
                        store[ListBuckets.bucketKey(list: Array("k".utf8), nonce: h.nonce, entry: $0)]!
                    }
                    whole = h.assembled(buckets)
                    // The head's bytes read back the same, and a read through the view (trims
                    // and all) sees the same elements.
                    #expect(ListBuckets(h.encoded) == h)
                    for (k, e) in h.index.enumerated() where e.lo != 0 || e.hi != 0 {
                        trimmed += 1
                        if k != 0 && k != h.index.count - 1 { trimmedInside += 1 }
                    }
                    // The node's check on the bytes agrees with the decoded head's.
                    #expect(
                        ListBuckets.upkeepDue(v.bytes!, push: true, left: true)
                            == (h.full(h.front) || h.full(h.back)))
                    for left in [true, false] {
                        #expect(
                            ListBuckets.upkeepDue(v.bytes!, push: false, left: left) == h.endLow(left: left))
                    }
                    let view = ListHeadView(v.bytes!)!
                    #expect(view.count == h.count && view.index == h.index)
                    let fetched = Dictionary(uniqueKeysWithValues: buckets.enumerated().map { ($0, $1) })
                    if h.count > 0 { #expect(view.elements(0...(h.count - 1), fetched) == model) }
                    let lo = Int(rng.below(UInt64(h.count)))
                    let hi = lo + Int(rng.below(UInt64(h.count - lo)))
                    #expect(view.elements(lo...hi, fetched) == Array(model[lo...hi]))
                    #expect(h.elements(lo...hi, fetched) == Array(model[lo...hi]))
                    // Now and then the list made one value and bucketed again.
                    if rng.below(50) == 0 {
                        let a =
                            [Array("ljoin".utf8), Array("k".utf8), Array(String(h.nonce).utf8)]
                            + buckets.map(DataModel.encodeItems)
                        #expect(DataModel.apply(a, to: &v, seed: 1, lists: true) == .integer(1))
                        #expect(DataModel.decodeItems(v.bytes!) == model)
                    }
                } else {
                    whole = DataModel.decodeItems(v.bytes ?? [])
                }
                #expect(whole == model, "step \(step)")
                if whole != model { return }
            }
        }
    }
}

/// One end sealed as the shell does (`ListBuckets.sealPlan`, then `lseal` or `lmerge` with the
/// buckets kept in `store`, a merged bucket removed from it); false when the end is not full.
@discardableResult
func sealEnd(
    _ v: inout KeyValue, left: Bool, store: inout [[UInt8]: [[UInt8]]], key: [UInt8] = Array("k".utf8)
)
    -> Bool
{
    func w(_ s: String) -> [UInt8] { Array(s.utf8) }
    let h = ListBuckets(v.bytes!)!
    let end = left ? h.index.first : h.index.last
    let endItems = end.map { store[ListBuckets.bucketKey(list: key, nonce: h.nonce, entry: $0)]! }
    var args = [w("lseal"), key, w(String(h.nonce)), w(String(h.gen)), w(left ? "left" : "right")]
    switch h.sealPlan(left: left, endItems: endItems) {
    case .none: return false
    case .seal(let chunks):
        for (i, c) in chunks.enumerated() {
            let enc = DataModel.encodeItems(c)
            let e = ListBuckets.Entry(gen: h.gen &+ UInt32(i), hash: XXH64.hash(enc), count: UInt32(c.count))
            store[ListBuckets.bucketKey(list: key, nonce: h.nonce, entry: e)] = c
            args += [w(String(c.count)), w(String(e.hash))]
        }
    case .merge(let old, let oldItems, let items):
        let hash = XXH64.hash(DataModel.encodeItems(items))
        let e = ListBuckets.Entry(gen: h.gen, hash: hash, count: UInt32(items.count))
        store[ListBuckets.bucketKey(list: key, nonce: h.nonce, entry: e)] = items
        args[0] = w("lmerge")
        args += [
            w(String(items.count)), w(String(hash)), w(String(old.hash)), DataModel.encodeItems(oldItems),
        ]
    }
    let applied = DataModel.apply(args, to: &v, seed: 1, lists: true) == .integer(1)
    #expect(applied)
    return applied
}
