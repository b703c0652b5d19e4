import TernConsensus
import TernCore
import Testing

private func b(_ s: String) -> [UInt8] { Array(s.utf8) }
private func cmd(_ s: String) -> [[UInt8]] { s.split(separator: " ").map { Array($0.utf8) } }

/// Applies `line` (a write) to `v` as instance `i` would, with `horizon` as the expiry horizon.
@discardableResult
private func apply(_ v: inout KeyValue, _ line: String, horizon: UInt64 = 0) -> DataReply {
    // Each write is a new request of a new instance (the same id would be de-duplicated).
    let i = (v.recent.last?.instance ?? 0) + 1
    v = v.applying(
        [(.data(cmd(line)), RequestID(client: 1, counter: i))], window: 8, instance: i, horizonMs: horizon)
    guard case .data(let r) = v.recent.last?.result else { return .error("no result") }
    return r
}
private func read(_ v: KeyValue, _ line: String, now: UInt64 = 0) -> DataReply {
    let s: StoredValue? = v.bytes.map { StoredValue(kind: v.kind, deadlineMs: v.deadlineMs, bytes: $0) }
    return DataModel.read(cmd(line), s, nowMs: now)
}

@Suite struct DataModelTests {
    @Test("Strings: SET's conditions, GET, INCRBY, APPEND and WRONGTYPE against other kinds")
    func strings() {
        var v = KeyValue()
        #expect(apply(&v, "set k a nx") == .ok)
        #expect(apply(&v, "set k b nx") == .bulk(nil))
        #expect(apply(&v, "set k c xx get") == .bulk(b("a")))
        #expect(read(v, "get k") == .bulk(b("c")))
        #expect(apply(&v, "incrby k 1") == .error("ERR value is not an integer or out of range"))
        #expect(apply(&v, "set k 9") == .ok)
        #expect(apply(&v, "incrby k 1") == .integer(10))
        #expect(
            apply(&v, "incrby k 9223372036854775807") == .error("ERR increment or decrement would overflow"))
        #expect(apply(&v, "append k xy 100") == .integer(4))
        #expect(
            apply(&v, "append k 0123456789 5")
                == .error("ERR string exceeds maximum allowed size (proto-max-bulk-len)"))
        var h = KeyValue()
        apply(&h, "hset h f v")
        let wrong = DataReply.error("WRONGTYPE Operation against a key holding the wrong kind of value")
        #expect(apply(&h, "incrby h 1") == wrong)
        #expect(apply(&h, "set h x get") == wrong)
        #expect(read(h, "get h") == wrong)
        #expect(read(h, "type h") == .status("hash"))
        // Plain SET overwrites any kind, as Redis.
        #expect(apply(&h, "set h x") == .ok)
        #expect(h.kind == .string && h.stored == nil)
    }

    @Test("Expiry: a deadline at or below the proposer's horizon removes the value before anything applies")
    func expiry() {
        var v = KeyValue()
        apply(&v, "set k v pxat 1000", horizon: 500)
        #expect(v.deadlineMs == 1000 && v.stored != nil)
        #expect(read(v, "pttl k", now: 400) == .integer(600))
        #expect(read(v, "ttl k", now: 400) == .integer(1))
        // INCR-like writes keep the TTL; at the horizon the value is gone first.
        apply(&v, "set k 5 keepttl", horizon: 900)
        #expect(v.deadlineMs == 1000)
        #expect(apply(&v, "incrby k 1", horizon: 999) == .integer(6))
        #expect(apply(&v, "incrby k 1", horizon: 1000) == .integer(1))
        #expect(v.deadlineMs == 0)
        // Without a clock (horizon 0) nothing expires.
        apply(&v, "set k v pxat 10", horizon: 0)
        #expect(apply(&v, "expirecheck k", horizon: 0) == .integer(1))
        #expect(apply(&v, "expirecheck k", horizon: 10) == .integer(0))
        #expect(v.bytes == nil)
        // PEXPIREAT's conditions; a deadline at or below the horizon deletes at once.
        apply(&v, "set k v")
        #expect(apply(&v, "pexpireat k 5000 100 xx") == .integer(0))
        #expect(apply(&v, "pexpireat k 5000 100 gt") == .integer(0))
        #expect(apply(&v, "pexpireat k 5000 100 lt") == .integer(1))
        #expect(apply(&v, "pexpireat k 6000 100 lt") == .integer(0))
        #expect(apply(&v, "pexpireat k 6000 100 gt") == .integer(1))
        #expect(apply(&v, "persist k") == .integer(1))
        #expect(apply(&v, "persist k") == .integer(0))
        #expect(apply(&v, "pexpireat k 50 100") == .integer(1))
        #expect(v.bytes == nil)
    }

    @Test("A read's expiry decision (one rule for the server and the simulator)")
    func readSettlement() {
        let v = StoredValue(kind: .hash, deadlineMs: 1000, bytes: [0, 0, 0, 0])
        #expect(DataModel.settle(v, horizonMs: 999) == .answer(v))
        #expect(DataModel.settle(v, horizonMs: 1000) == .expire)
        #expect(DataModel.settle(nil, horizonMs: 5000) == .answer(nil))
        let persistent = StoredValue(kind: .hash, deadlineMs: 0, bytes: [0, 0, 0, 0])
        #expect(DataModel.settle(persistent, horizonMs: 5000) == .answer(persistent))
        // The expirecheck write removes the value at the proposer's horizon and says what is left.
        var kv = KeyValue(bytes: Array("x".utf8), kind: .string, deadlineMs: 1000)
        kv = kv.applying(
            [(DataModel.expireCheck(Array("k".utf8)), RequestID(client: 1, counter: 1))], window: 8,
            instance: 2, horizonMs: 1000)
        #expect(kv.bytes == nil)
        #expect(kv.result(for: RequestID(client: 1, counter: 1)).flatMap(DataModel.afterExpireCheck) == true)
        #expect(DataModel.afterExpireCheck(.data(.integer(1))) == false)
        // Merged ops: a SET whose deadline is already at or below the horizon leaves nothing for
        // the next op of the same instance (a merged PEXPIREAT revived it).
        let ops: [(Operation, RequestID)] = [
            (
                .data(["set", "k", "v", "pxat", "1500"].map { Array($0.utf8) }),
                RequestID(client: 2, counter: 1)
            ),
            (
                .data(["pexpireat", "k", "9000", "2000"].map { Array($0.utf8) }),
                RequestID(client: 2, counter: 2)
            ),
        ]
        let merged = KeyValue().applying(ops, window: 8, instance: 1, horizonMs: 2000)
        #expect(merged.result(for: RequestID(client: 2, counter: 1)) == .data(.ok))
        #expect(merged.result(for: RequestID(client: 2, counter: 2)) == .data(.integer(0)))
        #expect(merged.bytes == nil)
        #expect(DataModel.afterExpireCheck(.ok) == nil)
    }

    @Test("Hashes, sets, sorted sets and lists: Redis's replies, and an emptied collection removes the key")
    func collections() {
        var h = KeyValue()
        #expect(apply(&h, "hset h a 1 b 2") == .integer(2))
        #expect(apply(&h, "hset h a 3") == .integer(0))
        #expect(read(h, "hgetall h") == .map([.bulk(b("a")), .bulk(b("3")), .bulk(b("b")), .bulk(b("2"))]))
        #expect(apply(&h, "hincrbyfloat h b 0.5") == .bulk(b("2.5")))
        #expect(apply(&h, "hincrby h b 1") == .error("ERR hash value is not an integer"))
        #expect(apply(&h, "hdel h a b c") == .integer(2))
        #expect(h.bytes == nil)

        var s = KeyValue()
        #expect(apply(&s, "sadd s x y x") == .integer(2))
        #expect(read(s, "smismember s x q") == .array([.integer(1), .integer(0)]))
        let popped = apply(&s, "spop s 5")
        guard case .set(let items) = popped else {
            Issue.record("spop gave \(popped)")
            return
        }
        #expect(Set(items) == [.bulk(b("x")), .bulk(b("y"))])
        #expect(s.bytes == nil)
        // The smallest count picks with repeats and does not overflow (it stopped a node).
        var big = KeyValue()
        apply(&big, "sadd s a")
        if case .array(let picks?) = read(big, "srandmember s -9223372036854775808") {
            #expect(picks.count == 1 << 24)
        } else {
            Issue.record("SRANDMEMBER with the smallest count")
        }

        var z = KeyValue()
        #expect(apply(&z, "zadd z 1 a 2 b 3 c") == .integer(3))
        #expect(apply(&z, "zadd z ch 5 a 2 b") == .integer(1))
        #expect(apply(&z, "zadd z incr 1 b") == .double(3))
        #expect(apply(&z, "zadd z gt 1 c") == .integer(0))
        #expect(
            read(z, "zrange z 0 -1 withscores")
                == .array([.bulk(b("b")), .double(3), .bulk(b("c")), .double(3), .bulk(b("a")), .double(5)]))
        #expect(read(z, "zrange z (3 +inf byscore") == .array([.bulk(b("a"))]))
        #expect(
            read(z, "zrange z +inf -inf byscore rev limit 0 2") == .array([.bulk(b("a")), .bulk(b("c"))]))
        #expect(read(z, "zrank z a") == .integer(2))
        #expect(read(z, "zrevrank z a") == .integer(0))
        #expect(read(z, "zcount z -inf (5") == .integer(2))
        #expect(apply(&z, "zpopmin z") == .array([.bulk(b("b")), .double(3)]))
        #expect(apply(&z, "zremrangebyscore z -inf +inf") == .integer(2))
        #expect(z.bytes == nil)

        var l = KeyValue()
        #expect(apply(&l, "rpush l a b c") == .integer(3))
        #expect(apply(&l, "lpush l x y") == .integer(5))
        #expect(read(l, "lrange l 0 -1") == .array(["y", "x", "a", "b", "c"].map { .bulk(b($0)) }))
        #expect(apply(&l, "lpop l 2") == .array([.bulk(b("y")), .bulk(b("x"))]))
        #expect(apply(&l, "linsert l before b q") == .integer(4))
        #expect(read(l, "lpos l q") == .integer(1))
        #expect(apply(&l, "lset l 9 z") == .error("ERR index out of range"))
        #expect(apply(&l, "ltrim l 5 10") == .ok)
        #expect(l.bytes == nil)
        #expect(apply(&l, "lpushx l a") == .integer(0))
    }

    @Test("Typed values, data replies and data operations survive their codecs")
    func codecs() {
        var v = KeyValue()
        apply(&v, "zadd z 1.5 m")
        apply(&v, "pexpireat z 99999 1")
        var s = KeyState()
        s.chosen = 2
        s.value = v
        #expect(PaxosCodec.decode(PaxosCodec.encode(s)) == s)
        var w = ByteWriter()
        let op = Operation.data(cmd("hset h a 1"))
        PaxosWire.encode(op, into: &w)
        PaxosWire.encode(
            ClientOutcome.typed(StoredValue(kind: .list, deadlineMs: 7, bytes: [1, 2])), into: &w)
        w.result(.data(.array([.map([.bulk(nil), .double(2)]), .set([]), .status("ok"), .array(nil)])))
        var r = ByteReader(w.bytes)
        #expect(PaxosWire.decodeOperation(&r) == op)
        #expect(
            PaxosWire.decodeOutcome(&r) == .typed(StoredValue(kind: .list, deadlineMs: 7, bytes: [1, 2])))
        #expect(
            r.result()
                == .data(.array([.map([.bulk(nil), .double(2)]), .set([]), .status("ok"), .array(nil)])))
        #expect(r.atEnd)
        // A plain string without expiry keeps the older record layout (flag 1).
        var plain = ByteWriter()
        plain.keyValue(KeyValue(bytes: [7]))
        #expect(plain.bytes[0] == 1)
    }
}

@Suite struct DataTransactionTests {
    @Test(
        "A one-key transaction applies its commands in order in one instance; reads see earlier writes; a WATCH guard that no longer matches runs nothing"
    )
    func transaction() {
        var v = KeyValue()
        apply(&v, "set k 1")
        let digest = DataModel.digest(StoredValue(kind: .string, deadlineMs: 0, bytes: b("1")))
        #expect(
            apply(&v, "multi k 0 \(digest) w 3 incrby k 1 r 2 get k w 4 hset k f v")
                == .array([
                    .integer(2), .bulk(b("2")),
                    .error("WRONGTYPE Operation against a key holding the wrong kind of value"),
                ]))
        // The guard was "1"; the value is now "2": nothing runs.
        #expect(apply(&v, "multi k 0 \(digest) w 3 incrby k 1") == .array(nil))
        #expect(read(v, "get k") == .bulk(b("2")))
        #expect(
            apply(&v, "multi k 0 - w 3 incrby k 5 r 2 type k") == .array([.integer(7), .status("string")]))
        // A SET whose deadline is already at or below the horizon leaves nothing for the
        // transaction's next command (Redis deletes the key at the SET); it used to be revived.
        #expect(
            apply(&v, "multi k 0 - w 5 set k v pxat 1500 w 4 pexpireat k 9000 2000 r 2 get k", horizon: 2000)
                == .array([.ok, .integer(0), .bulk(nil)]))
        #expect(v.bytes == nil)
    }
}

@Suite struct ScoreTextTests {
    @Test("Scores read as Redis's string2d: the largest double written out in full, no overflow or underflow")
    func parse() {
        // The suite's "zset score double range": 309 digits and 17 decimals (was refused at 256 bytes).
        let full = "17976931348623157" + String(repeating: "0", count: 292) + ".00000000000000000"
        #expect(DataModel.parseDouble(b(full)) == Double.greatestFiniteMagnitude)
        #expect(DataModel.parseDouble(b("1e400")) == nil)  // ERANGE, HUGE_VAL
        #expect(DataModel.parseDouble(b("-1e400")) == nil)
        #expect(DataModel.parseDouble(b("1e-400")) == nil)  // ERANGE, 0
        #expect(DataModel.parseDouble(b("0e10")) == 0)
        #expect(DataModel.parseDouble(b("inf")) == .infinity)
        #expect(DataModel.parseDouble(b(" 1")) == nil)
        #expect(DataModel.parseDouble(b("1.5")) == 1.5)
    }

    @Test("Scores print as Redis 7.0's %.17g (what 7.0.15's suite compares against)")
    func format() {
        #expect(DataModel.formatScore(10) == "10")
        #expect(DataModel.formatScore(1.5) == "1.5")
        #expect(DataModel.formatScore(0.1) == "0.10000000000000001")
        #expect(DataModel.formatScore(0.042916661148386381) == "0.042916661148386381")
        #expect(DataModel.formatScore(Double.greatestFiniteMagnitude) == "1.7976931348623157e+308")
        #expect(DataModel.formatScore(-.infinity) == "-inf")
    }
}
