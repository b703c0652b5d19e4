import TernConsensus
import TernCore
import Testing

/// Hash-tag groups (docs/DATA.md): the mapping of keys onto group keys, and a group's instances.
@Suite struct HashTagGroupTests {
    static let groups = KeyLayout.hashTagGroups
    static let t = KeyLayout.groupPrefix + bytes("t")

    /// Applies `ops` (each on its member key) to `v` as one instance, as the proposer does.
    static func apply(
        _ v: KeyValue, _ ops: [(String, [String])], horizonMs: UInt64 = 0, bytesMax: Int = 0,
        events: inout [String]?
    ) -> (KeyValue, [OperationResult]) {
        var counter: UInt64 = 0
        let calls: [(Operation, RequestID)] = ops.map { key, args in
            counter += 1
            let routed = groups.route(bytes(key), .write(.data(args.map(bytes))), groupBytesMax: bytesMax)
            guard case .write(let op) = routed.request else { fatalError() }
            return (op, rid(counter + 100 * UInt64(v.recent.count)))
        }
        let next = v.applying(calls, window: 32, instance: 2, horizonMs: horizonMs, events: &events)
        return (next, calls.map { next.result(for: $0.1)! })
    }
    static func apply(_ v: KeyValue, _ ops: [(String, [String])], horizonMs: UInt64 = 0, bytesMax: Int = 0)
        -> (KeyValue, [OperationResult])
    {
        var none: [String]?
        return apply(v, ops, horizonMs: horizonMs, bytesMax: bytesMax, events: &none)
    }

    @Test("The tag is Redis Cluster's: between the first { and the next }, not empty")
    func tagRule() {
        #expect(HashTag.of(bytes("blist{t}")) == bytes("t")[...])
        #expect(HashTag.of(bytes("{user1000}.following")) == bytes("user1000")[...])
        #expect(HashTag.of(bytes("foo{}{bar}")) == nil, "an empty first tag: the whole key")
        #expect(HashTag.of(bytes("foo{{bar}}zap")).map(Array.init) == bytes("{bar"))
        #expect(HashTag.of(bytes("foo{bar}{zap}")).map(Array.init) == bytes("bar"))
        #expect(HashTag.of(bytes("no{tag")) == nil)
        #expect(HashTag.of(bytes("plain")) == nil)
    }

    @Test("Tagged keys map to their tag's group key; untagged and reserved keys stay their own")
    func mapping() {
        #expect(Self.groups.paxosKey(bytes("a{t}")) == Self.t)
        #expect(Self.groups.paxosKey(bytes("{t}b")) == Self.t)
        #expect(Self.groups.paxosKey(bytes("a")) == bytes("a"))
        #expect(Self.groups.paxosKey([0] + bytes("inbox:{x}")) == [0] + bytes("inbox:{x}"))
        #expect(KeyLayout.perKey.paxosKey(bytes("a{t}")) == bytes("a{t}"))
        #expect(KeyLayout.isGroupKey(Self.t) && !KeyLayout.isGroupKey(bytes("a{t}")))
        // A read goes to the group; a write becomes the member's operation.
        let r = Self.groups.route(bytes("a{t}"), .read, groupBytesMax: 0)
        #expect(r.key == Self.t && r.request == .read)
        let w = Self.groups.route(bytes("a{t}"), .write(.remove), groupBytesMax: 9)
        #expect(w.key == Self.t)
        #expect(w.request == .write(.group(GroupOperation(.member(bytes("a{t}"), .remove), bytesMax: 9))))
        #expect(
            KeyLayout.perKey.route(bytes("a{t}"), .write(.remove), groupBytesMax: 9).request
                == .write(.remove))
    }

    @Test("Members of one group are written in one instance and read back as keys of their own")
    func members() {
        let (v, results) = Self.apply(
            KeyValue(),
            [
                ("a{t}", ["set", "a{t}", "x"]), ("n{t}", ["incrby", "n{t}", "5"]),
                ("l{t}", ["rpush", "l{t}", "p", "q"]), ("a{t}", ["append", "a{t}", "y", "100"]),
            ])
        #expect(results == [.data(.ok), .data(.integer(5)), .data(.integer(2)), .data(.integer(2))])
        #expect(Self.groups.reply(bytes("a{t}"), .value(v.bytes)) == .value(bytes("xy")))
        #expect(Self.groups.reply(bytes("n{t}"), .value(v.bytes)) == .value(bytes("5")))
        #expect(
            Self.groups.reply(bytes("l{t}"), .value(v.bytes))
                == .typed(
                    StoredValue(
                        kind: .list, deadlineMs: 0, bytes: DataModel.encodeItems([bytes("p"), bytes("q")]))))
        #expect(Self.groups.reply(bytes("zz{t}"), .value(v.bytes)) == .value(nil))
        #expect(
            GroupValue(v.bytes).members.map(\.key) == [bytes("a{t}"), bytes("l{t}"), bytes("n{t}")], "sorted")
        // WRONGTYPE is per member; deleting every member removes the group key's value.
        let (w, r2) = Self.apply(
            v,
            [
                ("a{t}", ["lpop", "a{t}"]), ("a{t}", ["del", "a{t}"]), ("n{t}", ["del", "n{t}"]),
                ("l{t}", ["del", "l{t}"]),
            ])
        #expect(r2[0] == .data(.error("WRONGTYPE Operation against a key holding the wrong kind of value")))
        #expect(r2[1...].allSatisfy { $0 == .data(.integer(1)) })
        #expect(w.bytes == nil)
    }

    @Test(
        "Expiry stays per member: a member past the horizon goes (raising 'expired' for it), the others stay")
    func memberExpiry() {
        var events: [String]? = []
        let (v, _) = Self.apply(
            KeyValue(), [("a{t}", ["set", "a{t}", "x", "pxat", "100"]), ("b{t}", ["set", "b{t}", "y"])],
            horizonMs: 50, events: &events)
        #expect(GroupValue(v.bytes).member(bytes("a{t}"))?.deadlineMs == 100)
        #expect(
            GroupValue(v.bytes).hasExpired(horizonMs: 100) && !GroupValue(v.bytes).hasExpired(horizonMs: 99))
        #expect(GroupValue(v.bytes).live(horizonMs: 100).map(\.key) == [bytes("b{t}")])
        // The next instance, with the horizon past a{t}'s deadline: any operation of the group removes it.
        events = []
        let (w, r) = Self.apply(v, [("c{t}", ["incrby", "c{t}", "1"])], horizonMs: 200, events: &events)
        #expect(r == [.data(.integer(1))])
        #expect(GroupValue(w.bytes).member(bytes("a{t}")) == nil)
        #expect(GroupValue(w.bytes).member(bytes("b{t}"))?.bytes == bytes("y"))
        let named = (events ?? []).map { KeyEventProbe.decode(Self.t, $0) }
        #expect(named.first == KeyEventProbe(key: bytes("a{t}"), event: "expired"))
        // The sweep's operation does only that.
        let s = v.applying(
            [(.group(GroupOperation(.sweep, bytesMax: 0)), rid(99))], window: 8, instance: 3, horizonMs: 200)
        #expect(GroupValue(s.bytes).members.map(\.key) == [bytes("b{t}")])
        #expect(s.result(for: rid(99)) == .data(.integer(1)))
    }

    @Test("A transaction over members is one instance; a changed WATCHed member runs nothing")
    func transaction() {
        let (v, _) = Self.apply(KeyValue(), [("a{t}", ["set", "a{t}", "1"])])
        let digest = DataModel.digest(GroupValue(v.bytes).member(bytes("a{t}")))
        func tx(_ guardDigest: String) -> (KeyValue, OperationResult?) {
            let args =
                ["0", "1", "a{t}", guardDigest]
                + ["w", "b{t}", "3", "rpush", "b{t}", "x"] + ["w", "a{t}", "3", "incrby", "a{t}", "1"]
                + ["r", "a{t}", "2", "get", "a{t}"] + ["r", "b{t}", "4", "lrange", "b{t}", "0", "-1"]
            let op = Operation.group(GroupOperation(.transaction(args.map(bytes)), bytesMax: 0))
            let next = v.applying([(op, rid(50))], window: 8, instance: 3)
            return (next, next.result(for: rid(50)))
        }
        let (after, result) = tx(digest)
        #expect(
            result
                == .data(.array([.integer(1), .integer(2), .bulk(bytes("2")), .array([.bulk(bytes("x"))])])))
        #expect(GroupValue(after.bytes).member(bytes("b{t}"))?.kind == .list)
        let (same, changed) = tx("other")
        #expect(changed == .data(.array(nil)))
        #expect(same.bytes == v.bytes)
    }

    /// Runs cross command `args` (one `x` step) on `v`; its reply and the new value.
    static func cross(_ v: KeyValue, _ args: [String], events: inout [String]?) -> (KeyValue, DataReply?) {
        let steps = ["0", "0", "x", "-", String(args.count)] + args
        let op = Operation.group(GroupOperation(.transaction(steps.map(bytes)), bytesMax: 0))
        let next = v.applying([(op, rid(77))], window: 8, instance: 5, horizonMs: 0, events: &events)
        guard case .data(.array(let rs?)) = next.result(for: rid(77)), rs.count == 1 else {
            return (next, nil)
        }
        return (next, rs[0])
    }
    static func cross(_ v: KeyValue, _ args: [String]) -> (KeyValue, DataReply?) {
        var none: [String]?
        return cross(v, args, events: &none)
    }

    @Test(
        "LMOVE, SMOVE, RENAME, COPY and LMPOP across members run in one instance, with the one-key commands' replies and events"
    )
    func crossCommands() {
        let (v, _) = Self.apply(
            KeyValue(),
            [
                ("l1{t}", ["rpush", "l1{t}", "a", "b"]), ("s1{t}", ["sadd", "s1{t}", "m"]),
                ("str{t}", ["set", "str{t}", "x", "pxat", "999999999999999"]),
            ])
        var events: [String]? = []
        let (moved, r) = Self.cross(v, ["lmove", "l1{t}", "l2{t}", "left", "right"], events: &events)
        #expect(r == .bulk(bytes("a")))
        let g = GroupValue(moved.bytes)
        #expect(g.member(bytes("l1{t}"))?.bytes == DataModel.encodeItems([bytes("b")]))
        #expect(g.member(bytes("l2{t}"))?.bytes == DataModel.encodeItems([bytes("a")]))
        let named = (events ?? []).map { KeyEventProbe.decode(Self.t, $0) }
        #expect(
            named == [
                KeyEventProbe(key: bytes("l1{t}"), event: "lpop"),
                KeyEventProbe(key: bytes("l2{t}"), event: "new"),
                KeyEventProbe(key: bytes("l2{t}"), event: "rpush"),
            ])
        // Wrong type at the destination: an error, nothing moved.
        let (same, wrong) = Self.cross(v, ["lmove", "l1{t}", "str{t}", "left", "right"])
        #expect(wrong == .error("WRONGTYPE Operation against a key holding the wrong kind of value"))
        #expect(same.bytes == v.bytes)
        #expect(Self.cross(v, ["lmove", "none{t}", "l2{t}", "left", "right"]).1 == .bulk(nil))
        // SMOVE.
        let (smoved, sr) = Self.cross(v, ["smove", "s1{t}", "s2{t}", "m"])
        #expect(sr == .integer(1))
        #expect(GroupValue(smoved.bytes).member(bytes("s1{t}")) == nil, "emptied: gone")
        #expect(GroupValue(smoved.bytes).member(bytes("s2{t}"))?.kind == .set)
        #expect(Self.cross(v, ["smove", "s1{t}", "s2{t}", "zz"]).1 == .integer(0))
        // RENAME keeps kind and deadline; RENAMENX onto an existing key does nothing.
        let (renamed, rr) = Self.cross(v, ["rename", "str{t}", "new{t}", "-"])
        #expect(rr == .ok)
        #expect(GroupValue(renamed.bytes).member(bytes("str{t}")) == nil)
        #expect(GroupValue(renamed.bytes).member(bytes("new{t}"))?.deadlineMs == 999_999_999_999_999)
        #expect(Self.cross(v, ["rename", "str{t}", "l1{t}", "nx"]).1 == .integer(0))
        #expect(Self.cross(v, ["rename", "gone{t}", "x{t}", "-"]).1 == .error("ERR no such key"))
        // COPY.
        let (copied, cr) = Self.cross(v, ["copy", "l1{t}", "c{t}", "-"])
        #expect(cr == .integer(1))
        #expect(
            GroupValue(copied.bytes).member(bytes("c{t}")) == GroupValue(copied.bytes).member(bytes("l1{t}")))
        #expect(Self.cross(v, ["copy", "l1{t}", "s1{t}", "-"]).1 == .integer(0))
        // LMPOP: the first non-empty list.
        let (_, lr) = Self.cross(v, ["lmpop", "left", "5", "empty{t}", "l1{t}"])
        #expect(lr == .array([.bulk(bytes("l1{t}")), .array([.bulk(bytes("a")), .bulk(bytes("b"))])]))
        #expect(Self.cross(v, ["lmpop", "left", "1", "empty{t}"]).1 == .array(nil))
    }

    @Test("A group is one value: a write that would pass its bound is refused and changes nothing")
    func bound() {
        let (v, _) = Self.apply(KeyValue(), [("a{t}", ["set", "a{t}", "x"])], bytesMax: 64)
        let (w, r) = Self.apply(
            v, [("b{t}", ["set", "b{t}", String(repeating: "y", count: 80)])], bytesMax: 64)
        guard case .data(.error(let text)) = r[0] else {
            Issue.record("not refused: \(r)")
            return
        }
        #expect(text.contains("max_value_bytes"))
        #expect(w.bytes == v.bytes)
        // Shrinking a group past its bound is allowed.
        let (_, r2) = Self.apply(v, [("a{t}", ["del", "a{t}"])], bytesMax: 1)
        #expect(r2 == [.data(.integer(1))])
    }

    @Test("Group operations cross the wire (forwarded requests) unchanged; nesting is refused")
    func wire() {
        let ops: [Operation] = [
            .group(
                GroupOperation(
                    .member(bytes("a{t}"), .data([bytes("set"), bytes("a{t}"), bytes("v")])), bytesMax: 7)),
            .group(GroupOperation(.member(bytes("a{t}"), .remove), bytesMax: 0)),
            .group(GroupOperation(.transaction([bytes("0"), bytes("0")]), bytesMax: 1 << 20)),
            .group(GroupOperation(.sweep, bytesMax: 0)),
        ]
        for op in ops {
            var w = ByteWriter()
            PaxosWire.encode(op, into: &w)
            var r = ByteReader(w.bytes)
            #expect(PaxosWire.decodeOperation(&r) == op)
        }
        var w = ByteWriter()
        PaxosWire.encode(.group(GroupOperation(.member(bytes("a"), ops[3]), bytesMax: 0)), into: &w)
        var r = ByteReader(w.bytes)
        #expect(PaxosWire.decodeOperation(&r) == nil)
    }
}

/// A keyspace event as the shell publishes it (`KeyEvent`), read from the proposer's list.
struct KeyEventProbe: Equatable {
    var key: [UInt8]
    var event: String
    static func decode(_ paxosKey: [UInt8], _ raised: String) -> KeyEventProbe {
        let e = KeyEvent.raised(by: paxosKey, raised)
        return KeyEventProbe(key: e.key, event: e.event)
    }
}
