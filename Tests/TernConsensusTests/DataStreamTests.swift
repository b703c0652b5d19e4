import TernConsensus
import TernCore
import Testing

private func b(_ s: String) -> [UInt8] { Array(s.utf8) }
private func words(_ s: String) -> [[UInt8]] { s.split(separator: " ").map { Array($0.utf8) } }

/// A stream write as the server normalises it: `name key nowMs limit rest…`, applied as a new
/// instance (so the request window does not de-duplicate it).
@discardableResult
private func w(_ v: inout KeyValue, _ line: String, now: UInt64 = 1000, limit: Int = 0) -> DataReply {
    var a = words(line)
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
private func entry(_ i: String, _ fields: String...) -> DataReply {
    .array([id(i), .array(fields.map { .bulk(b($0)) })])
}
private func err(_ s: String) -> DataReply { .error("ERR " + s) }

@Suite struct DataStreamTests {
    @Test("XADD: explicit, ms-*, and * ids from the clock passed in, never going backwards; Redis's errors")
    func xadd() {
        var v = KeyValue()
        #expect(w(&v, "xadd s 5-1 f v") == id("5-1"))
        #expect(v.kind == .stream && r(v, "type s") == .status("stream"))
        #expect(
            w(&v, "xadd s 5-1 f v")
                == err("The ID specified in XADD is equal or smaller than the target stream top item"))
        #expect(w(&v, "xadd s 5-* f v") == id("5-2"))
        #expect(
            w(&v, "xadd s 4-* f v")
                == err("The ID specified in XADD is equal or smaller than the target stream top item"))
        // `*` with a clock behind the last id: the last id's ms, next sequence.
        #expect(w(&v, "xadd s * f v", now: 3) == id("5-3"))
        #expect(w(&v, "xadd s * f v", now: 9) == id("9-0"))
        #expect(w(&v, "xadd s 10 f v") == id("10-0"))
        #expect(w(&v, "xadd s 0-0 f v") == err("The ID specified in XADD must be greater than 0-0"))
        #expect(w(&v, "xadd s abc f v") == err("Invalid stream ID specified as stream command argument"))
        #expect(w(&v, "xadd s - f v") == err("Invalid stream ID specified as stream command argument"))
        #expect(w(&v, "xadd s * f") == err("wrong number of arguments for 'xadd' command"))
        #expect(r(v, "xlen s") == .integer(5))
        #expect(
            w(&v, "xadd s 18446744073709551615-18446744073709551615 f v")
                == id("18446744073709551615-18446744073709551615"))
        #expect(
            w(&v, "xadd s * f v")
                == err("The stream has exhausted the last possible ID, unable to add more items"))
        // NOMKSTREAM on an absent key: nil, nothing created.
        var none = KeyValue()
        #expect(w(&none, "xadd s nomkstream * f v") == .bulk(nil))
        #expect(none.bytes == nil)
        // WRONGTYPE both ways.
        var str = KeyValue()
        str.bytes = b("x")
        #expect(
            w(&str, "xadd s * f v")
                == .error("WRONGTYPE Operation against a key holding the wrong kind of value"))
        #expect(r(v, "get s") == .error("WRONGTYPE Operation against a key holding the wrong kind of value"))
    }

    @Test("Trimming: MAXLEN/MINID with = and ~, LIMIT, XTRIM, and the option errors")
    func trimming() {
        var v = KeyValue()
        for k in 1...5 { w(&v, "xadd s \(k)-0 f v\(k)") }
        #expect(w(&v, "xadd s maxlen 3 6-0 f v6") == id("6-0"))
        #expect(r(v, "xlen s") == .integer(3))
        #expect(w(&v, "xtrim s minid 5") == .integer(1))
        // `~` removes whole nodes of 100 entries only (Redis's stream-node-max-entries).
        #expect(w(&v, "xtrim s maxlen ~ 0 limit 1") == .integer(0))
        #expect(w(&v, "xtrim s maxlen ~ 0") == .integer(0))
        #expect(w(&v, "xtrim s maxlen = 1") == .integer(1))
        #expect(r(v, "xrange s - +") == .array([entry("6-0", "f", "v6")]))
        #expect(
            w(&v, "xadd s maxlen 1 minid 1 * f v")
                == err("syntax error, MAXLEN and MINID options at the same time are not compatible"))
        #expect(
            w(&v, "xadd s maxlen 1 limit 1 * f v")
                == err("syntax error, LIMIT cannot be used without the special ~ option"))
        #expect(
            w(&v, "xadd s limit 1 * f v")
                == err("syntax error, LIMIT cannot be used without specifying a trimming strategy"))
        #expect(w(&v, "xadd s maxlen -1 * f v") == err("The MAXLEN argument must be >= 0."))
        #expect(w(&v, "xadd s maxlen ~ 1 limit -1 * f v") == err("The LIMIT argument must be >= 0."))
        #expect(w(&v, "xadd s maxlen x * f v") == err("value is not an integer or out of range"))
        #expect(w(&v, "xtrim s foo 1") == err("syntax error"))
        #expect(
            w(&v, "xadd s maxlen = 3 limit 1 x f v")
                == err("Invalid stream ID specified as stream command argument"))
        var big = KeyValue()
        for k in 1...250 { w(&big, "xadd b \(k)-0 f v") }
        #expect(w(&big, "xtrim b maxlen ~ 10") == .integer(200))
        #expect(w(&big, "xtrim b minid ~ 250 limit 10") == .integer(0))
        #expect(w(&v, "xtrim s maxlen = 0") == .integer(1))
        // An emptied stream stays (Redis keeps empty streams).
        #expect(r(v, "type s") == .status("stream"))
    }

    @Test("XRANGE/XREVRANGE: -, +, incomplete ids, ( exclusive, COUNT, and the interval errors")
    func ranges() {
        var v = KeyValue()
        for k in 1...4 { w(&v, "xadd s \(k)-\(k) f v\(k)") }
        #expect(r(v, "xrange s 2 3") == .array([entry("2-2", "f", "v2"), entry("3-3", "f", "v3")]))
        #expect(r(v, "xrange s (2-2 + count 1") == .array([entry("3-3", "f", "v3")]))
        #expect(
            r(v, "xrevrange s + - count 2") == .array([entry("4-4", "f", "v4"), entry("3-3", "f", "v3")]))
        #expect(r(v, "xrevrange s (4-4 (1-1") == .array([entry("3-3", "f", "v3"), entry("2-2", "f", "v2")]))
        #expect(r(v, "xrange s - + count 0") == .array(nil))
        #expect(r(v, "xrange s - + count -1") == .array(nil))
        #expect(r(v, "xrange s (- +") == err("Invalid stream ID specified as stream command argument"))
        #expect(
            r(v, "xrange s (18446744073709551615-18446744073709551615 +")
                == err("invalid start ID for the interval"))
        #expect(r(v, "xrange s - (0-0") == err("invalid end ID for the interval"))
        #expect(r(v, "xrange s - + foo 1") == err("syntax error"))
        #expect(r(v, "xrange s - + count x") == err("value is not an integer or out of range"))
        #expect(r(KeyValue(), "xrange s - +") == .array([]))
        #expect(r(KeyValue(), "xrange s - + count 0") == .array([]))
        #expect(r(KeyValue(), "xlen s") == .integer(0))
    }

    @Test("XDEL, XSETID: tombstones, counters, and XSETID's errors")
    func delAndSetID() {
        var v = KeyValue()
        for k in 1...3 { w(&v, "xadd s \(k)-0 f v") }
        #expect(w(&v, "xdel s 2-0 9-0") == .integer(1))
        #expect(w(&v, "xdel s x") == err("Invalid stream ID specified as stream command argument"))
        #expect(
            w(&v, "xsetid s 1-0")
                == err("The ID specified in XSETID is smaller than the target stream top item"))
        // Redis checks the top item before entries_added.
        #expect(
            w(&v, "xsetid s 1-0 entriesadded 0")
                == err("The ID specified in XSETID is smaller than the target stream top item"))
        #expect(
            w(&v, "xsetid s 5-0 entriesadded 1")
                == err("The entries_added specified in XSETID is smaller than the target stream length"))
        #expect(
            w(&v, "xsetid s 5-0 maxdeletedid 6-0")
                == err("The ID specified in XSETID is smaller than the provided max_deleted_entry_id"))
        #expect(w(&v, "xsetid s 5-0 entriesadded -1") == err("entries_added must be positive"))
        #expect(w(&v, "xsetid s 5-0 entriesadded 7") == .ok)
        var none = KeyValue()
        #expect(w(&none, "xsetid s 5-0") == err("no such key"))
        #expect(w(&v, "xadd s * f v", now: 2) == id("5-1"))
        guard case .map(let info) = r(v, "xinfo s stream") else {
            Issue.record("no map")
            return
        }
        #expect(info[1] == .integer(3))
        #expect(info[7] == id("5-1"))  // last-generated-id
        #expect(info[9] == id("2-0"))  // max-deleted-entry-id
        #expect(info[11] == .integer(8))  // entries-added
    }

    @Test("Groups: XGROUP's subcommands, XREADGROUP > and history, XACK, XPENDING both forms")
    func groups() {
        var v = KeyValue()
        #expect(
            w(&v, "xgroup s create g $")
                == err(
                    "The XGROUP subcommand requires the key to exist. Note that for CREATE you may want to use the "
                        + "MKSTREAM option to create an empty stream automatically."))
        #expect(w(&v, "xgroup s create g $ mkstream") == .ok)
        #expect(w(&v, "xgroup s create g 0") == .error("BUSYGROUP Consumer Group name already exists"))
        #expect(
            w(&v, "xgroup s create g2 0 entriesread -5")
                == err("value for ENTRIESREAD must be positive or -1"))
        #expect(
            w(&v, "xgroup s create g3 0 bar")
                == err("unknown subcommand or wrong number of arguments for 'create'. Try XGROUP HELP."))
        #expect(
            w(&v, "xgroup s setid nog 0") == .error("NOGROUP No such consumer group 'nog' for key name 's'"))
        #expect(w(&v, "xgroup s destroy nog") == .integer(0))
        for k in 1...3 { w(&v, "xadd s \(k)-0 f v\(k)") }
        // `>`: new entries, into the PEL with this delivery time.
        #expect(w(&v, "xreadgroup s g c1 1 0 >", now: 2000) == .array([entry("1-0", "f", "v1")]))
        #expect(
            w(&v, "xreadgroup s g c2 0 0 >", now: 2500)
                == .array([entry("2-0", "f", "v2"), entry("3-0", "f", "v3")]))
        #expect(w(&v, "xreadgroup s g c2 0 0 >") == .array(nil))
        #expect(
            w(&v, "xreadgroup s nog c 0 0 >")
                == .error("NOGROUP No such key 's' or consumer group 'nog' in XREADGROUP with GROUP option"))
        #expect(
            r(v, "xpending s g")
                == .array([
                    .integer(3), id("1-0"), id("3-0"),
                    .array([
                        .array([.bulk(b("c1")), .bulk(b("1"))]), .array([.bulk(b("c2")), .bulk(b("2"))]),
                    ]),
                ]))
        #expect(
            r(v, "xpending s g - + 10", now: 3000)
                == .array([
                    .array([id("1-0"), .bulk(b("c1")), .integer(1000), .integer(1)]),
                    .array([id("2-0"), .bulk(b("c2")), .integer(500), .integer(1)]),
                    .array([id("3-0"), .bulk(b("c2")), .integer(500), .integer(1)]),
                ]))
        #expect(
            r(v, "xpending s g idle 600 - + 10", now: 3000)
                == .array([.array([id("1-0"), .bulk(b("c1")), .integer(1000), .integer(1)])]))
        #expect(
            r(v, "xpending s g - + 10 c2", now: 3000)
                == .array([
                    .array([id("2-0"), .bulk(b("c2")), .integer(500), .integer(1)]),
                    .array([id("3-0"), .bulk(b("c2")), .integer(500), .integer(1)]),
                ]))
        #expect(r(v, "xpending s g - +") == err("syntax error"))
        #expect(r(v, "xpending s g - + x") == err("value is not an integer or out of range"))
        #expect(r(v, "xpending s nog") == .error("NOGROUP No such key 's' or consumer group 'nog'"))
        // History: the consumer's own pending entries, counted as deliveries; a deleted one as nil.
        w(&v, "xdel s 2-0")
        #expect(
            w(&v, "xreadgroup s g c2 0 0 0")
                == .array([.array([id("2-0"), .array(nil)]), entry("3-0", "f", "v3")]))
        #expect(
            r(v, "xpending s g 3-0 3-0 1 c2")
                == .array([.array([id("3-0"), .bulk(b("c2")), .integer(0), .integer(2)])]))
        // XACK: 0 for unknown groups and keys, errors for bad ids.
        #expect(w(&v, "xack s g 1-0 9-0") == .integer(1))
        #expect(w(&v, "xack s nog 1-0") == .integer(0))
        #expect(w(&v, "xack s g x") == err("Invalid stream ID specified as stream command argument"))
        // NOACK: delivered, not pending.
        w(&v, "xadd s 4-0 f v4")
        #expect(w(&v, "xreadgroup s g c3 0 1 >") == .array([entry("4-0", "f", "v4")]))
        #expect(r(v, "xpending s g - + 10 c3") == .array([]))
        #expect(w(&v, "xgroup s createconsumer g c4") == .integer(1))
        #expect(w(&v, "xgroup s createconsumer g c4") == .integer(0))
        #expect(w(&v, "xgroup s delconsumer g c2") == .integer(2))
        #expect(r(v, "xpending s g") == .array([.integer(0), .bulk(nil), .bulk(nil), .array(nil)]))
        #expect(w(&v, "xgroup s destroy g") == .integer(1))
        #expect(r(v, "xinfo s groups") == .array([]))
    }

    @Test("XCLAIM and XAUTOCLAIM: idle times from the clock passed in, deleted entries dropped, options")
    func claims() {
        var v = KeyValue()
        for k in 1...4 { w(&v, "xadd s \(k)-0 f v\(k)") }
        w(&v, "xgroup s create g 0")
        w(&v, "xreadgroup s g dead 0 0 >", now: 1000)
        // Not idle long enough at 1500; idle enough at 3000.
        #expect(w(&v, "xclaim s g w 1000 1-0", now: 1500) == .array([]))
        #expect(w(&v, "xclaim s g w 1000 1-0", now: 3000) == .array([entry("1-0", "f", "v1")]))
        #expect(
            r(v, "xpending s g - + 1", now: 3000)
                == .array([.array([id("1-0"), .bulk(b("w")), .integer(0), .integer(2)])]))
        #expect(w(&v, "xclaim s g w 0 2-0 justid retrycount 7 idle 100", now: 3000) == .array([id("2-0")]))
        #expect(
            r(v, "xpending s g 2-0 2-0 1", now: 3000)
                == .array([.array([id("2-0"), .bulk(b("w")), .integer(100), .integer(7)])]))
        #expect(w(&v, "xclaim s g w x 1-0") == err("Invalid min-idle-time argument for XCLAIM"))
        #expect(w(&v, "xclaim s g w 0 1-0 idle x") == err("Invalid IDLE option argument for XCLAIM"))
        #expect(w(&v, "xclaim s g w 0 1-0 foo") == err("Unrecognized XCLAIM option 'foo'"))
        #expect(w(&v, "xclaim s nog w 0 1-0") == .error("NOGROUP No such key 's' or consumer group 'nog'"))
        // FORCE creates a pending entry for an existing entry; LASTID moves the group forward.
        w(&v, "xadd s 5-0 f v5")
        #expect(w(&v, "xclaim s g w 0 5-0 force justid lastid 5-0") == .array([id("5-0")]))
        guard case .array(let gs?) = r(v, "xinfo s groups"), case .map(let g) = gs[0] else {
            Issue.record("no groups")
            return
        }
        #expect(g[7] == id("5-0"))
        // XAUTOCLAIM: cursor, claimed, deleted (a deleted entry leaves the PEL).
        w(&v, "xdel s 3-0")
        #expect(
            w(&v, "xautoclaim s g z 0 0 count 2", now: 4000)
                == .array([
                    id("3-0"), .array([entry("1-0", "f", "v1"), entry("2-0", "f", "v2")]), .array([]),
                ]))
        #expect(
            w(&v, "xautoclaim s g z 0 (2-0 justid", now: 4000)
                == .array([id("0-0"), .array([id("4-0"), id("5-0")]), .array([id("3-0")])]))
        #expect(w(&v, "xautoclaim s g z 0 0 count 0") == err("COUNT must be > 0"))
        #expect(
            w(&v, "xautoclaim s g z 0 x") == err("Invalid stream ID specified as stream command argument"))
        #expect(w(&v, "xautoclaim s nog z 0 0") == .error("NOGROUP No such key 's' or consumer group 'nog'"))
        #expect(w(&v, "xautoclaim s g z 5000 0", now: 5000) == .array([id("0-0"), .array([]), .array([])]))
    }

    @Test("XACKADD: acknowledges and adds follow-ups in one step, only when this call removed the id")
    func ackAdd() {
        var v = KeyValue()
        w(&v, "xadd s 1-0 job parent")
        w(&v, "xgroup s create g 0")
        w(&v, "xreadgroup s g w 0 0 >")
        #expect(
            w(&v, "xackadd s g 1-0 fields 1 job a fields 2 job b extra x", now: 7)
                == .array([.integer(1), .array([id("7-0"), id("7-1")])]))
        #expect(
            r(v, "xrange s (1-0 +")
                == .array([entry("7-0", "job", "a"), entry("7-1", "job", "b", "extra", "x")]))
        // A retry (or a second worker that also held it): nothing acknowledged, nothing added.
        #expect(w(&v, "xackadd s g 1-0 fields 1 job a", now: 8) == .array([.integer(0), .array([])]))
        #expect(r(v, "xlen s") == .integer(3))
        #expect(
            w(&v, "xackadd s g 1-0 fields 2 job a")
                == err("FIELDS takes a number of field-value pairs (at least 1) that follow it"))
        #expect(w(&v, "xackadd s g 1-0 job a") == err("syntax error"))
        #expect(w(&v, "xackadd s nog 1-0") == .error("NOGROUP No such key 's' or consumer group 'nog'"))
        // Over the backlog limit: refused whole — the entry stays pending, nothing added.
        w(&v, "xreadgroup s g w 0 0 >")
        let full = w(&v, "xackadd s g 7-0 fields 1 job c", limit: 3)
        #expect("\(full)".contains("OVERLOADED"))
        #expect(
            r(v, "xpending s g - + 10 w")
                == .array([
                    .array([id("7-0"), .bulk(b("w")), .integer(0), .integer(1)]),
                    .array([id("7-1"), .bulk(b("w")), .integer(0), .integer(1)]),
                ]))
        #expect(r(v, "xlen s") == .integer(3))
    }

    @Test("Backlog limit: XADD beyond it answers OVERLOADED; MAXLEN in the same XADD still adds")
    func backlog() {
        var v = KeyValue()
        for k in 1...3 { #expect(w(&v, "xadd s \(k)-0 f v", limit: 3) == id("\(k)-0")) }
        #expect(
            w(&v, "xadd s 4-0 f v", limit: 3)
                == .error(
                    "OVERLOADED stream 's' is at its backlog limit of 3 entries (stream_max_entries): back off and "
                        + "retry later, or trim with MAXLEN/MINID"))
        #expect(r(v, "xlen s") == .integer(3))
        #expect(w(&v, "xadd s maxlen 3 4-0 f v", limit: 3) == id("4-0"))
        // `~` alone would remove nothing (no whole node of 100): at the bound it trims exactly.
        #expect(w(&v, "xadd s maxlen ~ 3 5-0 f v", limit: 3) == id("5-0"))
        #expect(r(v, "xlen s") == .integer(3))
        #expect(r(v, "xrange s - + count 1") == .array([entry("3-0", "f", "v")]))
    }

    @Test("XINFO: STREAM (and FULL), GROUPS with entries-read and lag, CONSUMERS with idle")
    func info() {
        var v = KeyValue()
        for k in 1...3 { w(&v, "xadd s \(k)-0 f v\(k)") }
        w(&v, "xgroup s create g 0")
        w(&v, "xreadgroup s g c 2 0 >", now: 1000)
        #expect(
            r(v, "xinfo s groups")
                == .array([
                    .map([
                        .bulk(b("name")), .bulk(b("g")), .bulk(b("consumers")), .integer(1),
                        .bulk(b("pending")),
                        .integer(2), .bulk(b("last-delivered-id")), id("2-0"), .bulk(b("entries-read")),
                        .integer(2),
                        .bulk(b("lag")), .integer(1),
                    ])
                ]))
        #expect(
            r(v, "xinfo s consumers g", now: 1500)
                == .array([
                    .map([
                        .bulk(b("name")), .bulk(b("c")), .bulk(b("pending")), .integer(2), .bulk(b("idle")),
                        .integer(500),
                    ])
                ]))
        #expect(
            r(v, "xinfo s consumers nog") == .error("NOGROUP No such consumer group 'nog' for key name 's'"))
        #expect(r(KeyValue(), "xinfo s stream") == err("no such key"))
        #expect(
            r(v, "xinfo s stream foo")
                == err("unknown subcommand or wrong number of arguments for 'stream'. Try XINFO HELP."))
        guard case .map(let full) = r(v, "xinfo s stream full count 1") else {
            Issue.record("no map")
            return
        }
        #expect(full[14] == .bulk(b("entries")) && full[15] == .array([entry("1-0", "f", "v1")]))
        // A deleted entry after the group's position makes the lag unknown (Redis's null).
        w(&v, "xdel s 3-0")
        guard case .array(let gs?) = r(v, "xinfo s groups"), case .map(let g) = gs[0] else {
            Issue.record("no groups")
            return
        }
        #expect(g[11] == .bulk(nil))
        w(&v, "xadd s 4-0 f v")
        w(&v, "xdel s 4-0")
        w(&v, "xadd s 5-0 f v")
        guard case .array(let gs2?) = r(v, "xinfo s groups"), case .map(let g2) = gs2[0] else {
            Issue.record("no groups")
            return
        }
        #expect(g2[11] == .bulk(nil))
    }

    @Test("The stream's encoding round-trips through the project's byte codec, and through a record")
    func codec() {
        var v = KeyValue()
        w(&v, "xadd s 1-0 f v")
        w(&v, "xgroup s create g 0")
        w(&v, "xreadgroup s g c 0 0 >", now: 77)
        let s = StreamValue(v.bytes!)
        #expect(s != nil && s!.encoded == v.bytes!)
        #expect(s!.groups[0].pending[0].deliveryMs == 77)
        #expect(StreamValue([1, 2, 3]) == nil)
        var state = KeyState()
        state.chosen = 4
        state.value = v
        #expect(PaxosCodec.decode(PaxosCodec.encode(state))?.value.kind == .stream)
    }
}
