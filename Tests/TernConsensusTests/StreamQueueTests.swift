import TernConsensus
import TernCore
import Testing

private func b(_ s: String) -> [UInt8] { Array(s.utf8) }
private func words(_ s: String) -> [[UInt8]] { s.split(separator: " ").map { Array($0.utf8) } }

/// A stream write as the server normalises it (`name key nowMs limit rest…`), applied as a new
/// instance.
@discardableResult
private func w(_ v: inout KeyValue, _ line: String, now: UInt64 = 1000, limit: Int = 0) -> DataReply {
    w(&v, words(line), now: now, limit: limit)
}
@discardableResult
private func w(_ v: inout KeyValue, _ args: [[UInt8]], now: UInt64 = 1000, limit: Int = 0) -> DataReply {
    var a = args
    a.insert(contentsOf: [b(String(now)), b(String(limit))], at: 2)
    let i = (v.recent.last?.instance ?? 0) + 1
    v = v.applying([(.data(a), RequestID(client: 1, counter: i))], window: 8, instance: i)
    guard case .data(let r) = v.recent.last?.result else { return .error("no result") }
    return r
}
private func r(_ v: KeyValue, _ line: String, now: UInt64 = 1000) -> DataReply {
    let s: StoredValue? = v.bytes.map { StoredValue(kind: v.kind, deadlineMs: v.deadlineMs, bytes: $0) }
    return DataModel.read(words(line), s, nowMs: now)
}
private func id(_ s: String) -> DataReply { .bulk(b(s)) }
private func err(_ s: String) -> DataReply { .error("ERR " + s) }

/// The queue's additions on the pure stream value (docs/QUEUE.md): the summary /metrics shows.
@Suite struct StreamQueueTests {
    @Test(
        "The summary /metrics shows: length, and per group backlog after its last-delivered id, pending, consumers"
    )
    func summary() throws {
        var v = KeyValue()
        for i in 1...6 { w(&v, "xadd s \(i)-0 f v\(i)") }
        w(&v, "xgroup s create workers 0")
        w(&v, "xgroup s create late $")
        w(&v, "xgroup s create empty 0")
        // workers: 4 delivered to two consumers, one of them acknowledged; 2 left to deliver.
        w(&v, "xreadgroup s workers w1 3 0 >")
        w(&v, "xreadgroup s workers w2 1 0 >")
        w(&v, "xack s workers 2-0")
        // A deleted entry after the last-delivered id is not backlog (it will never be delivered).
        w(&v, "xdel s 6-0")
        w(&v, "xadd s 7-0 f v7")
        let bytes = try #require(v.bytes)
        let s = try #require(StreamValue.summary(bytes))
        #expect(s.length == 6)
        #expect(
            s.groups == [
                .init(name: b("empty"), backlog: 6, pending: 0, consumers: 0),
                .init(name: b("late"), backlog: 1, pending: 0, consumers: 0),
                .init(name: b("workers"), backlog: 2, pending: 3, consumers: 2),
            ])
        // The same as the decoded value and XINFO GROUPS say.
        let decoded = try #require(StreamValue(bytes))
        #expect(s.length == decoded.entries.count)
        #expect(s.groups.map(\.pending) == decoded.groups.map(\.pending.count))
        guard case .array(let summary?) = r(v, "xpending s workers") else {
            Issue.record("XPENDING")
            return
        }
        #expect(summary.first == .integer(3))
        // Not a stream's bytes: nil, never a crash.
        #expect(StreamValue.summary([1, 2, 3]) == nil)
        #expect(StreamValue.summary(Array(bytes.dropLast(3))) == nil)
        #expect(StreamValue.summary([255, 255, 255, 255]) == nil)
        #expect(StreamValue.summary(StreamValue().encoded) == .init(length: 0, groups: []))
    }
}

/// XADD's idempotency key (docs/QUEUE.md, "Retries: XADD IDMP"), Redis 8.6's syntax.
@Suite struct StreamIdempotencyTests {
    @Test("IDMP: a retry answers the first id and adds nothing; another iid or producer adds")
    func retryAnswersFirstID() throws {
        var v = KeyValue()
        #expect(w(&v, "xadd s idmp p1 pay-1 * amount 100", now: 5) == id("5-0"))
        // The retry: other fields, a later clock, options in another order — the first id.
        #expect(w(&v, "xadd s idmp p1 pay-1 * amount 200", now: 9) == id("5-0"))
        #expect(w(&v, "xadd s maxlen ~ 100 idmp p1 pay-1 * amount 300", now: 9) == id("5-0"))
        #expect(r(v, "xlen s") == .integer(1))
        #expect(
            r(v, "xrange s - +")
                == .array([.array([id("5-0"), .array([.bulk(b("amount")), .bulk(b("100"))])])]))
        #expect(w(&v, "xadd s idmp p1 pay-2 * amount 100", now: 9) == id("9-0"))
        #expect(w(&v, "xadd s idmp p2 pay-1 * amount 100", now: 9) == id("9-1"))
        #expect(w(&v, "xadd s nomkstream idmp p2 pay-1 * amount 1", now: 9) == id("9-1"))
        // A plain XADD is untouched by all this.
        #expect(w(&v, "xadd s * amount 100", now: 9) == id("9-2"))
        #expect(r(v, "xlen s") == .integer(4))
        // Remembered through the value's codec, like the rest of the stream.
        let bytes = try #require(v.bytes)
        let decoded = try #require(StreamValue(bytes))
        #expect(decoded.idempotent.count == 3)
        #expect(decoded.encoded == v.bytes)
        // Deleting the entry does not make the retry add it again (the id is answered).
        w(&v, "xdel s 5-0")
        #expect(w(&v, "xadd s idmp p1 pay-1 * amount 100", now: 10) == id("5-0"))
        #expect(r(v, "xlen s") == .integer(3))
        // NOMKSTREAM on an absent stream answers nil whatever the key.
        var none = KeyValue()
        #expect(w(&none, "xadd s nomkstream idmp p1 pay-1 * f v") == .bulk(nil))
        #expect(none.bytes == nil)
    }

    @Test("The memory's section: absent when unused, a later version's section skipped, a torn one refused")
    func section() throws {
        var v = KeyValue()
        w(&v, "xadd s 1-1 f v")
        let plain = try #require(v.bytes)
        // Without IDMP the stream encodes as before the section existed: a later kind is skipped.
        #expect(StreamValue(plain + [2, 9, 9, 9])?.entries.count == 1)
        w(&v, "xadd s idmp p a * f v", now: 5)
        let keyed = try #require(v.bytes)
        #expect(keyed.count == plain.count + 30 + 1 + 4 + 56)  // the entry, the tag, the count, one pair
        #expect(StreamValue(keyed)?.idempotent.count == 1)
        #expect(StreamValue(Array(keyed.dropLast(8))) == nil)
    }

    @Test("IDMPAUTO: the idempotent id is the entry's fields and values")
    func auto() {
        var v = KeyValue()
        #expect(w(&v, "xadd s idmpauto p * a 1 b 2", now: 5) == id("5-0"))
        #expect(w(&v, "xadd s idmpauto p * a 1 b 2", now: 6) == id("5-0"))
        #expect(w(&v, "xadd s idmpauto p * a 1 b 3", now: 6) == id("6-0"))
        // Field boundaries count: "a1" "b" is not "a" "1b".
        #expect(w(&v, "xadd s idmpauto p * a1 b", now: 6) == id("6-1"))
        #expect(w(&v, "xadd s idmpauto p * a 1b", now: 6) == id("6-2"))
        #expect(w(&v, "xadd s idmpauto q * a 1 b 2", now: 7) == id("7-0"))
        #expect(r(v, "xlen s") == .integer(5))
    }

    @Test("IDMP's errors are Redis 8.6's; a plain Redis 7 XADD answers as before")
    func errors() {
        var v = KeyValue()
        #expect(
            w(&v, "xadd s idmp p1 iid1 1-1 f v")
                == err("IDMP/IDMPAUTO can be used only with auto-generated IDs"))
        #expect(
            w(&v, "xadd s idmp p1 iid1 1-* f v")
                == err("IDMP/IDMPAUTO can be used only with auto-generated IDs"))
        #expect(
            w(&v, "xadd s idmp p1 * f v") == err("Invalid stream ID specified as stream command argument"))
        #expect(w(&v, "xadd s idmp p1 i1 idmp p2 i2 * f v") == err("IDMP/IDMPAUTO specified multiple times"))
        #expect(w(&v, "xadd s idmpauto p1 idmp p2 i2 * f v") == err("IDMP/IDMPAUTO specified multiple times"))
        #expect(
            w(&v, [b("xadd"), b("s"), b("idmp"), [], b("i"), b("*"), b("f"), b("v")])
                == err("IDMP requires a non-empty producer ID"))
        #expect(
            w(&v, [b("xadd"), b("s"), b("idmp"), b("p"), [], b("*"), b("f"), b("v")])
                == err("IDMP requires a non-empty idempotent ID"))
        #expect(
            w(&v, [b("xadd"), b("s"), b("idmpauto"), [], b("*"), b("f"), b("v")])
                == err("IDMPAUTO requires a non-empty producer ID"))
        #expect(w(&v, "xadd s idmp p1 i1 * f") == err("wrong number of arguments for 'xadd' command"))
        // Too few arguments after IDMP: not the option, so the id (as Redis 7 and 8.6 read it).
        #expect(w(&v, "xadd s idmp p1") == err("Invalid stream ID specified as stream command argument"))
        #expect(v.bytes == nil)
        // XTRIM takes no IDMP.
        #expect(w(&v, "xadd s 1-1 f v") == id("1-1"))
        #expect(w(&v, "xtrim s idmp p i maxlen 1") == .error("ERR syntax error"))
    }

    @Test("The window: 100 s, 100 pairs per producer, 1 000 per stream; a refusal is not remembered")
    func window() {
        var v = KeyValue()
        #expect(w(&v, "xadd s idmp p a * f v", now: 1_000) == id("1000-0"))
        #expect(w(&v, "xadd s idmp p a * f v", now: 100_999) == id("1000-0"))
        // 100 s after the first add the pair is forgotten: the same call adds again.
        #expect(w(&v, "xadd s idmp p a * f v", now: 101_000) == id("101000-0"))
        // 100 newer pairs of the same producer push the oldest out; another producer's do not.
        var u = KeyValue()
        w(&u, "xadd s idmp p first * f v", now: 5)
        w(&u, "xadd s idmp q other * f v", now: 5)
        for i in 0..<99 { w(&u, "xadd s idmp p k\(i) * f v", now: 6) }
        #expect(w(&u, "xadd s idmp p first * f v", now: 7) == id("5-0"))
        w(&u, "xadd s idmp p k99 * f v", now: 7)
        #expect(w(&u, "xadd s idmp p first * f v", now: 7) != id("5-0"))
        #expect(w(&u, "xadd s idmp q other * f v", now: 7) == id("5-1"))
        // At most 1 000 pairs per stream, all producers together.
        var t = KeyValue()
        w(&t, "xadd s idmp p0 k * f v", now: 5)
        // 999 pairs of other producers after it (written straight into the value: 999 XADDs
        // would rewrite a growing stream 999 times).
        var filled = StreamValue(t.bytes!)!
        for i in 1..<1_000 {
            let key = StreamValue.IdempotencyKey(producer: UInt64(i), producer2: 0, iid: 0, iid2: 0)
            filled.idempotent.append(.init(key: key, id: StreamID(5, 0), addedMs: 6))
        }
        t.bytes = filled.encoded
        #expect(w(&t, "xadd s idmp p0 k * f v", now: 6) == id("5-0"))
        w(&t, "xadd s idmp p1000 k * f v", now: 6)
        #expect(StreamValue(t.bytes!)?.idempotent.count == 1_000)
        #expect(w(&t, "xadd s idmp p0 k * f v", now: 6) != id("5-0"))
        // A full stream: a retry of an add it remembers answers the id; a new one is refused and,
        // once there is room, added (the refusal was not remembered).
        var f = KeyValue()
        #expect(w(&f, "xadd s idmp p a * f v", now: 5, limit: 1) == id("5-0"))
        #expect(w(&f, "xadd s idmp p a * f v", now: 6, limit: 1) == id("5-0"))
        guard case .error(let e) = w(&f, "xadd s idmp p b * f v", now: 6, limit: 1) else {
            Issue.record("not refused")
            return
        }
        #expect(e.hasPrefix("OVERLOADED"))
        w(&f, "xdel s 5-0")
        #expect(w(&f, "xadd s idmp p b * f v", now: 7, limit: 1) == id("7-0"))
    }

    @Test("Two tries of one pair merged into one instance add one entry and answer the same id")
    func mergedRetries() {
        func args(_ fields: String) -> [[UInt8]] {
            [b("xadd"), b("s"), b("50"), b("0"), b("idmp"), b("p"), b("x"), b("*")] + words(fields)
        }
        let v = KeyValue().applying(
            [
                (.data(args("f 1")), RequestID(client: 1, counter: 1)),
                (.data(args("f 2")), RequestID(client: 2, counter: 1)),
            ], window: 8, instance: 1)
        #expect(v.recent.map(\.result) == [.data(id("50-0")), .data(id("50-0"))])
        #expect(r(v, "xlen s") == .integer(1))
    }
}
