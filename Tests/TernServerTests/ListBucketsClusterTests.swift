import NIOCore
import TernConsensus
import TernCore
import TernRESP
import Testing

@testable import TernServer

/// Big lists kept in buckets, through three loopback nodes (docs/DATA.md, "Big lists"): every list
/// command checked against a plain array while the list is sealed, unsealed and joined.
@Suite(.timeLimit(.minutes(3))) struct ListBucketsClusterTests {
    static func start() async throws -> KeyspaceCluster {
        var o = LoopbackCluster.options
        o.listBucketElements = 16
        o.listBucketBytes = 1 << 12
        return try await KeyspaceCluster.start(options: o) { _, node in
            var processor = CommandProcessor(password: nil, maxValueBytes: 1 << 20)
            processor.modules.append(KeyspaceService(node: node, options: KeyspaceOptions()))
            return processor
        }
    }

    /// The list's head as node `n` reads it (nil: not bucketed).
    func head(_ c: KeyspaceCluster, _ key: String) async -> ListBuckets? {
        let node = c.cluster.nodes.values.first!
        guard case .typed(let v) = try? await node.submit(key: Array(key.utf8), .read).get() else {
            return nil
        }
        return ListBuckets(v.bytes)
    }

    func bulks(_ items: ArraySlice<String>) -> RESPValue { .array(items.map { bulk($0) }) }

    @Test("Pushes, pops, reads and middle commands on a bucketed list match a plain array")
    func againstModel() async throws {
        let c = try await Self.start()
        let clients = [try await c.client(0), try await c.client(1), try await c.client(2)]
        var model = (0..<1300).map { "v\($0)" }
        #expect(try await clients[0].send(["RPUSH", "big"] + model) == .integer(1300))
        // Full: the next push makes it bucketed first.
        #expect(try await clients[1].send(["LPUSH", "big", "a"]) == .integer(1301))
        model.insert("a", at: 0)
        guard let h = await head(c, "big") else {
            Issue.record("the list was not made bucketed")
            await c.stop()
            return
        }
        #expect(h.index.count > 50)
        #expect(try await clients[2].send(["LRANGE", "big", "0", "-1"]) == bulks(model[...]))
        #expect(try await clients[2].send(["LLEN", "big"]) == .integer(1301))
        var rng = SystemRandomNumberGenerator()
        var serial = 0
        for step in 0..<400 {
            let cl = clients[step % 3]
            serial += 1
            switch Int.random(in: 0..<100, using: &rng) {
            case 0..<25:
                let n = Int.random(in: 1...20, using: &rng)
                let items = (0..<n).map { "s\(serial)-\($0)" }
                if Bool.random(using: &rng) {
                    #expect(try await cl.send(["LPUSH", "big"] + items) == .integer(Int64(model.count + n)))
                    model.insert(contentsOf: items.reversed(), at: 0)
                } else {
                    #expect(try await cl.send(["RPUSH", "big"] + items) == .integer(Int64(model.count + n)))
                    model += items
                }
            case 25..<50:
                let left = Bool.random(using: &rng)
                let n = Int.random(in: 1...40, using: &rng)
                let got = try await cl.send([left ? "LPOP" : "RPOP", "big", String(n)])
                let k = min(n, model.count)
                let want = left ? Array(model.prefix(k)) : Array(model.suffix(k).reversed())
                #expect(got == .array(want.map { bulk($0) }), "step \(step)")
                if left { model.removeFirst(k) } else { model.removeLast(k) }
            case 50..<70:
                let s = Int.random(in: -model.count...model.count, using: &rng)
                let e = s + Int.random(in: 0...300, using: &rng)
                let got = try await cl.send(["LRANGE", "big", String(s), String(e)])
                let n = model.count
                let lo = max(0, s < 0 ? n + s : s)
                let hi = min(n - 1, e < 0 ? n + e : e)
                #expect(got == (lo <= hi ? bulks(model[lo...hi]) : .array([])), "step \(step)")
            case 70..<80:
                let i = Int.random(in: -model.count..<model.count, using: &rng)
                let got = try await cl.send(["LINDEX", "big", String(i)])
                #expect(got == bulk(model[i < 0 ? model.count + i : i]), "step \(step)")
            case 80..<84:
                let i = Int.random(in: 0..<model.count, using: &rng)
                #expect(try await cl.send(["LSET", "big", String(i), "set\(serial)"]) == .ok)
                model[i] = "set\(serial)"
            case 84..<87:
                let i = Int.random(in: 0..<model.count, using: &rng)
                let pivot = model[i]
                #expect(
                    try await cl.send(["LINSERT", "big", "AFTER", pivot, "ins\(serial)"])
                        == .integer(Int64(model.count + 1)))
                model.insert("ins\(serial)", at: model.firstIndex(of: pivot)! + 1)
            case 87..<90:
                let i = Int.random(in: 0..<model.count, using: &rng)
                let e = model[i]
                let removed = model.filter { $0 == e }.count
                #expect(try await cl.send(["LREM", "big", "0", e]) == .integer(Int64(removed)))
                model.removeAll { $0 == e }
            case 90..<93:
                let i = Int.random(in: 0..<model.count, using: &rng)
                #expect(
                    try await cl.send(["LPOS", "big", model[i]])
                        == .integer(Int64(model.firstIndex(of: model[i])!)))
            default:
                #expect(try await cl.send(["LLEN", "big"]) == .integer(Int64(model.count)))
            }
            if model.count < 100 {
                let items = (0..<1500).map { "r\(serial)-\($0)" }
                #expect(try await cl.send(["RPUSH", "big"] + items) == .integer(Int64(model.count + 1500)))
                model += items
            }
        }
        #expect(try await clients[1].send(["LRANGE", "big", "0", "-1"]) == bulks(model[...]))
        // A transaction and a DUMP see the whole list.
        #expect(try await clients[0].send(["MULTI"]) == .ok)
        #expect(try await clients[0].send(["RPUSH", "big", "t"]) == .simpleString("QUEUED"))
        #expect(try await clients[0].send(["LINDEX", "big", "0"]) == .simpleString("QUEUED"))
        #expect(
            try await clients[0].send(["EXEC"]) == .array([.integer(Int64(model.count + 1)), bulk(model[0])]))
        model.append("t")
        #expect(try await clients[2].send(["TYPE", "big"]) == .simpleString("list"))
        #expect(try await clients[2].send(["LRANGE", "big", "0", "-1"]) == bulks(model[...]))
        for cl in clients { await cl.close() }
        await c.stop()
    }

    @Test("A list of repeated elements: buckets with the same content stay distinct keys")
    func repeatedElements() async throws {
        // A seal cuts a run of identical elements into buckets with identical content; they once
        // shared one key (nonce, generation, content hash), so the unseal that deleted one end
        // bucket deleted the others the head still listed (found from the set buckets' bug).
        let c = try await Self.start()
        let a = try await c.client(0)
        #expect(try await a.send(["RPUSH", "same"] + Array(repeating: "x", count: 1300)) == .integer(1300))
        #expect(try await a.send(["LPUSH", "same", "x"]) == .integer(1301))
        guard let h = await head(c, "same") else {
            Issue.record("not bucketed")
            await c.stop()
            return
        }
        #expect(h.index.count > 20)
        let b = try await c.client(1)
        var left = 1301
        for _ in 0..<12 {
            #expect(
                try await b.send(["LPOP", "same", "50"]) == .array(Array(repeating: bulk("x"), count: 50)))
            left -= 50
        }
        #expect(try await a.send(["LLEN", "same"]) == .integer(Int64(left)))
        #expect(
            try await a.send(["LRANGE", "same", "0", "-1"])
                == .array(Array(repeating: bulk("x"), count: left)))
        await a.close()
        await b.close()
        await c.stop()
    }

    @Test("Buckets nothing reaches are collected after DEL; the live list's buckets are kept")
    func collector() async throws {
        let c = try await Self.start()
        let a = try await c.client(0)
        #expect(try await a.send(["RPUSH", "gone"] + (0..<1200).map { "x\($0)" }) == .integer(1200))
        #expect(try await a.send(["RPUSH", "gone", "y"]) == .integer(1201))
        // The first RPUSH's count starts the node's own seal in the background (`noteListOp`): the
        // second push may land on the head it made (`lsegment`, every element in front, no bucket
        // yet) before that seal ends. Wait for the buckets (a head with none failed this test).
        var head = await head(c, "gone")
        for _ in 0..<100 where head?.index.isEmpty ?? false {
            try await Task.sleep(for: .milliseconds(20))
            head = await self.head(c, "gone")
        }
        guard let h = head, !h.index.isEmpty else {
            Issue.record(
                "not bucketed: \(head.map { "\($0.index.count) buckets, gen \($0.gen)" } ?? "no head")")
            await c.stop()
            return
        }
        let node = c.cluster.nodes.values.first!
        let keys = h.index.map { ListBuckets.bucketKey(list: Array("gone".utf8), nonce: h.nonce, entry: $0) }
        func exists(_ k: [UInt8]) async -> Bool {
            if case .value(let b?) = try? await node.submit(key: k, .read).get() { return !b.isEmpty }
            return false
        }
        #expect(await exists(keys[0]))
        // While the list lives, its buckets stay.
        try await node.eventLoop.submit { node.collectListBucket(keys[0]) }.get()
        try await Task.sleep(for: .milliseconds(300))
        #expect(await exists(keys[0]))
        #expect(try await a.send(["DEL", "gone"]) == .integer(1))
        for k in keys.prefix(5) { try await node.eventLoop.submit { node.collectListBucket(k) }.get() }
        var left = 5
        for _ in 0..<40 where left > 0 {
            try await Task.sleep(for: .milliseconds(100))
            left = 0
            for k in keys.prefix(5) where await exists(k) { left += 1 }
        }
        #expect(left == 0)
        await a.close()
        await c.stop()
    }
}
