import NIOCore
import TernConsensus
import TernCore
import TernRESP
import Testing

@testable import TernServer

/// SORT and SORT_RO (SortCommand.swift): Redis 7.0.15's answers and error texts (each case checked
/// against redis-server 7.0.15), without a cluster.
@Suite struct SortCommandTests {
    static func list(_ items: [String]) -> StoredValue {
        StoredValue(kind: .list, deadlineMs: 0, bytes: DataModel.encodeItems(items.map { Array($0.utf8) }))
    }
    static func string(_ s: String) -> StoredValue {
        StoredValue(kind: .string, deadlineMs: 0, bytes: Array(s.utf8))
    }
    static func hash(_ pairs: [String]) -> StoredValue {
        StoredValue(kind: .hash, deadlineMs: 0, bytes: DataModel.encodeItems(pairs.map { Array($0.utf8) }))
    }
    static let l = list(["3", "10", "2", "1.5"])
    /// The keys BY and GET read in Redis's check: `w_*` weights, `o_*` names, `h_*->f` hash fields.
    static let others: [[UInt8]: StoredValue] = [
        b("w_3"): string("1"), b("w_10"): string("4"), b("w_2"): string("3"), b("w_1.5"): string("2"),
        b("o_3"): string("three"), b("o_10"): string("ten"), b("h_3"): hash(["f", "c"]),
        b("h_10"): hash(["f", "a"]), b("h_2"): hash(["f", "b"]),
    ]

    /// SORT's answer on `value` with the other keys above, as text (`nil` for a missing GET).
    func sorted(_ args: [String], _ value: StoredValue? = l) -> String {
        let a = args.map { Array($0.utf8) }
        guard case .success(let q) = SortQuery.parse(a, readonly: a[0] == b("sort_ro")) else {
            return "parse"
        }
        switch SortEngine.run(q, value, { Self.others[$0] }) {
        case .failure(let f):
            guard case .error(let text) = f.reply else { return "?" }
            return text
        case .success(let out):
            return out.map { $0.map { String(decoding: $0, as: UTF8.self) } ?? "nil" }.joined(separator: " ")
        }
    }

    @Test("Arity, syntax, LIMIT's integers, STORE refused by SORT_RO, ACL on BY/GET")
    func errors() {
        #expect(wire(["SORT"]) == "-ERR wrong number of arguments for 'sort' command\r\n")
        #expect(wire(["SORT_RO"]) == "-ERR wrong number of arguments for 'sort_ro' command\r\n")
        for args in [
            ["SORT", "l", "limit", "1"], ["SORT", "l", "foo"], ["SORT", "l", "by"], ["SORT", "l", "get"],
            ["SORT", "l", "store"], ["SORT_RO", "l", "store", "d"], ["SORT", "l", "alpha", "limit", "0"],
        ] {
            #expect(wire(args) == "-ERR syntax error\r\n", "\(args)")
        }
        #expect(wire(["SORT", "l", "limit", "x", "1"]) == "-ERR value is not an integer or out of range\r\n")
        #expect(wire(["SORT", "l", "limit", "1", "x"]) == "-ERR value is not an integer or out of range\r\n")
        // The first error in the arguments' order wins.
        #expect(wire(["SORT", "l", "foo", "limit", "x", "1"]) == "-ERR syntax error\r\n")
        let denied = SortQuery.parse(
            bytes(["SORT", "l", "BY", "w_*"]), readonly: false, fullKeyAccess: false)
        #expect(
            denied
                == .failure(
                    SortFailure(.error("ERR BY option of SORT denied due to insufficient ACL permissions."))))
        // BY without `*` reads nothing: allowed; GET always reads.
        #expect(
            (try? SortQuery.parse(
                bytes(["SORT", "l", "BY", "nosort"]), readonly: false, fullKeyAccess: false
            ).get())
                != nil)
        #expect(
            SortQuery.parse(bytes(["SORT", "l", "GET", "#"]), readonly: false, fullKeyAccess: false)
                == .failure(
                    SortFailure(.error("ERR GET option of SORT denied due to insufficient ACL permissions.")))
        )
    }

    @Test("One key: a read answered by the processor; numbers, ALPHA, DESC, LIMIT, WRONGTYPE, bad doubles")
    func oneKey() {
        let l = NodeReply.typed(Self.l)
        var s = Session(authenticated: true)
        let (text, reqs) = wire(["SORT", "l"], replies: [l], session: &s)
        #expect(
            reqs.count == 1 && reqs[0].key == b("l")
                && text == "*4\r\n$3\r\n1.5\r\n$1\r\n2\r\n$1\r\n3\r\n$2\r\n10\r\n")
        #expect(wire(["sort", "l", "desc"], replies: [l]).hasPrefix("*4\r\n$2\r\n10\r\n$1\r\n3\r\n"))
        #expect(
            wire(["SORT_RO", "l", "ALPHA", "LIMIT", "0", "2"], replies: [l])
                == "*2\r\n$3\r\n1.5\r\n$2\r\n10\r\n")
        #expect(wire(["SORT", "nokey"], replies: [.value(nil)]) == "*0\r\n")
        #expect(wire(["SORT", "s"], replies: [.value(b("x"))]) == "-\(DataCommandsWrongType.text)\r\n")
        #expect(
            wire(["SORT", "h"], replies: [.typed(Self.hash(["f", "1"]))])
                == "-\(DataCommandsWrongType.text)\r\n")
        let words = NodeReply.typed(Self.list(["3", "a"]))
        #expect(
            wire(["SORT", "l"], replies: [words])
                == "-ERR One or more scores can't be converted into double\r\n")
        // GET with no `*` names no key: nil for every element, and nothing else is read.
        #expect(
            wire(["SORT", "l", "GET", "foo", "GET", "#", "ALPHA"], replies: [words])
                == "*4\r\n$-1\r\n$1\r\n3\r\n$-1\r\n$1\r\na\r\n")
    }

    @Test("Redis's answers: LIMIT clamping, BY keys and hash fields, GET, BY nosort on lists and sorted sets")
    func answers() {
        #expect(sorted(["SORT", "l"]) == "1.5 2 3 10")
        #expect(sorted(["SORT", "l", "alpha"]) == "1.5 10 2 3")
        #expect(sorted(["SORT", "l", "limit", "1", "2"]) == "2 3")
        #expect(sorted(["SORT", "l", "limit", "-5", "2"]) == "1.5 2")
        #expect(sorted(["SORT", "l", "limit", "2", "9223372036854775807"]) == "3 10")
        #expect(sorted(["SORT", "l", "limit", "10", "10"]) == "")
        #expect(sorted(["SORT", "l", "by", "w_*"]) == "3 1.5 2 10")
        #expect(sorted(["SORT", "l", "by", "w_*", "desc", "limit", "0", "2"]) == "10 2")
        // ALPHA by a hash field: a missing value sorts first.
        #expect(sorted(["SORT", "l", "by", "h_*->f", "alpha"]) == "1.5 10 2 3")
        #expect(sorted(["SORT", "l", "by", "h_*->f", "alpha", "desc"]) == "3 2 10 1.5")
        #expect(sorted(["SORT", "l", "get", "#", "get", "o_*"]) == "1.5 nil 2 nil 3 three 10 ten")
        #expect(sorted(["SORT", "l", "by", "nosort", "desc", "limit", "1", "2"]) == "2 10")
        // A BY without `*` anywhere turns sorting off, whatever BY follows (Redis's parse).
        #expect(sorted(["SORT", "l", "by", "nosort", "by", "w_*"]) == "3 10 2 1.5")
        #expect(sorted(["SORT", "l", "by", "w_*", "by", "nosort"]) == "3 10 2 1.5")
        #expect(sorted(["SORT", "l", "by", "nosort", "get", "h_*->f"]) == "c a b nil")
        // A pattern ending in `->` is a key name, not a hash field.
        #expect(sorted(["SORT", "l", "get", "x_*->"]) == "nil nil nil nil")
        // Missing BY values are 0; ties sort by the elements' bytes.
        #expect(sorted(["SORT", "l", "by", "none_*"]) == "1.5 10 2 3")
        let z = StoredValue(
            kind: .zset, deadlineMs: 0,
            bytes: DataModel.encodeZSet([(b("d"), 0), (b("a"), 1), (b("b"), 2), (b("c"), 3)]))
        #expect(sorted(["SORT", "z", "by", "nosort"], z) == "d a b c")
        #expect(sorted(["SORT", "z", "by", "nosort", "desc", "limit", "1", "2"], z) == "b a")
        #expect(sorted(["SORT", "z", "by", "nosort", "limit", "5", "10"], z) == "")
        #expect(sorted(["SORT", "z", "by", "nosort", "limit", "-10", "100"], z) == "d a b c")
        #expect(sorted(["SORT", "z", "alpha"], z) == "a b c d")
        let set = StoredValue(
            kind: .set, deadlineMs: 0, bytes: DataModel.encodeItems([b("b"), b("c"), b("a")]))
        // A set in no order is sorted by ALPHA when stored (a deterministic list); DESC then applies.
        #expect(sorted(["SORT", "s", "by", "nosort", "store", "d"], set) == "a b c")
        #expect(sorted(["SORT", "s", "by", "nosort"], set) == "b c a")
        #expect(sorted(["SORT", "s", "alpha", "desc"], set) == "c b a")
    }

    @Test("Numbers as Redis's strtod reads them; patterns as C strings; service keys never read")
    func edges() {
        #expect(SortEngine.score(b("")) == 0)
        #expect(SortEngine.score(b(" 1.5")) == 1.5)
        #expect(SortEngine.score(b("0x10")) == 16)
        #expect(SortEngine.score(b("-inf")) == -.infinity)
        #expect(SortEngine.score(b("1\u{0}x")) == 1)
        for bad in ["nan", "1x", "1e999", "1 "] { #expect(SortEngine.score(b(bad)) == nil, "\(bad)") }
        let plain = SortEngine.substitute(b("w_*"), b("3"))
        #expect(plain?.key == b("w_3") && plain?.field == nil)
        let field = SortEngine.substitute(b("h_*_x->f"), b("3"))
        #expect(field?.key == b("h_3_x") && field?.field == b("f"))
        #expect(SortEngine.substitute(b("nostar"), b("3")) == nil)
        #expect(SortEngine.substitute(b("a\u{0}*"), b("3")) == nil)
        // `*` alone and an element starting with a zero byte would name a service's key (`\0acl`).
        #expect(SortEngine.substitute(b("*"), [0] + b("acl")) == nil)
        #expect(SortEngine.isHash(b("#")) && !SortEngine.isHash(b("##")))
        #expect(
            SortQuery(key: b("k"), by: b("nosort"), dontSort: true, gets: [b("#"), b("x")]).readsOtherKeys
                == false)
        #expect(SortQuery(key: b("k"), gets: [b("x_*")]).readsOtherKeys)
        #expect(SortQuery(key: b("k"), by: b("w_*")).readsOtherKeys)
    }

    @Test("COMMAND INFO's key specs and GETKEYS' STORE (the last one), as Redis 7.0")
    func keys() {
        #expect(SortEngine.keyPositions("sort", bytes(["sort", "abc", "store", "def"])) == [1, 3])
        #expect(
            SortEngine.keyPositions(
                "sort", bytes(["sort", "abc", "store", "invalid", "store", "stillbad", "store", "def"]))
                == [1, 7])
        #expect(
            SortEngine.keyPositions("sort", bytes(["sort", "abc", "get", "store", "limit", "store", "1"]))
                == [1])
        #expect(SortEngine.keyPositions("sort_ro", bytes(["sort_ro", "abc"])) == [1])
        #expect(SortEngine.keyPositions("get", bytes(["get", "abc"])) == nil)
        guard case .array(let info?) = KeyspaceService.sortSpecs[0].info, case .set(let specs) = info[8]
        else {
            Issue.record("COMMAND INFO sort")
            return
        }
        #expect(info[0] == .bulkString("sort") && info[1] == .integer(-2) && specs.count == 3)
        #expect(wire(["SET", "\u{0}acl", "x"]).hasPrefix("-ERR keys starting with a zero byte"))
        #expect(wire(["SORT", "l", "STORE", "\u{0}acl"]).hasPrefix("-ERR keys starting with a zero byte"))
    }

    @Test("Inside MULTI: the one-key form joins as a read; STORE or patterns fail to queue")
    func transaction() {
        var s = Session(authenticated: true)
        #expect(wire(["MULTI"], session: &s).0 == "+OK\r\n")
        #expect(wire(["RPUSH", "l", "2", "1"], session: &s).0 == "+QUEUED\r\n")
        #expect(wire(["SORT", "l", "DESC"], session: &s).0 == "+QUEUED\r\n")
        let (answer, reqs) = wire(
            ["EXEC"],
            replies: [
                .done(
                    .data(
                        .array([
                            .integer(2),
                            .array([
                                .integer(Int64(ValueKind.list.rawValue)), .integer(0), .bulk(Self.l.bytes),
                            ]),
                        ])))
            ], session: &s)
        #expect(reqs.count == 1 && reqs[0].key == b("l"))
        #expect(answer == "*2\r\n:2\r\n*4\r\n$2\r\n10\r\n$1\r\n3\r\n$1\r\n2\r\n$3\r\n1.5\r\n")
        #expect(wire(["MULTI"], session: &s).0 == "+OK\r\n")
        #expect(
            wire(["SORT", "l", "STORE", "l"], session: &s).0.hasPrefix(
                "-ERR SORT with STORE, or with a BY or GET pattern, cannot run inside a Tern transaction"))
        #expect(wire(["SORT", "l", "GET", "o_*"], session: &s).0.hasPrefix("-ERR SORT with STORE"))
        #expect(
            wire(["EXEC"], session: &s).0
                == "-EXECABORT Transaction discarded because of previous errors.\r\n")
    }
}

extension SortCommandTests {
    @Test("Inside MULTI on a hash-tag group: the one-read SORT is a read step of the group's instance")
    func groupTransaction() {
        var p = CommandProcessor(password: nil, maxValueBytes: 1 << 20)
        p.keyLayout = .hashTagGroups
        var s = Session(authenticated: true)
        #expect(wire(["MULTI"], session: &s, processor: p).0 == "+OK\r\n")
        #expect(wire(["RPUSH", "l{t}", "2", "1"], session: &s, processor: p).0 == "+QUEUED\r\n")
        #expect(wire(["SORT", "l{t}", "LIMIT", "0", "1"], session: &s, processor: p).0 == "+QUEUED\r\n")
        #expect(
            wire(["SORT", "l{t}", "STORE", "d{t}"], session: &s, processor: p).0.hasPrefix(
                "-ERR SORT with STORE"))
        #expect(wire(["DISCARD"], session: &s, processor: p).0 == "+OK\r\n")
        #expect(wire(["MULTI"], session: &s, processor: p).0 == "+OK\r\n")
        #expect(wire(["RPUSH", "m{t}", "2", "1"], session: &s, processor: p).0 == "+QUEUED\r\n")
        #expect(wire(["SORT_RO", "l{t}", "LIMIT", "0", "1"], session: &s, processor: p).0 == "+QUEUED\r\n")
        let list = DataReply.array([
            .integer(Int64(ValueKind.list.rawValue)), .integer(0),
            .bulk(DataModel.encodeItems([b("2"), b("1")])),
        ])
        let (exec, reqs) = wire(
            ["EXEC"], replies: [.done(.data(.array([.integer(2), list])))], session: &s, processor: p)
        #expect(exec == "*2\r\n:2\r\n*1\r\n$1\r\n1\r\n")
        #expect(reqs.count == 1 && reqs.first?.key == KeyLayout.groupPrefix + b("t"))
        guard case .write(.group(let g)) = reqs.first?.request, case .transaction(let args) = g.kind else {
            Issue.record("EXEC went out as \(reqs)")
            return
        }
        #expect(Array(args.suffix(5)) == bytes(["r", "l{t}", "2", "dumpvalue", "l{t}"]))
    }
}

/// SORT through a three-node loopback cluster: BY/GET reading other keys, STORE waking a blocked
/// BLPOP (Redis's "BLPOP when result key is created by SORT..STORE"), a WATCHed destination
/// deleted by an empty STORE failing EXEC (Redis's unit/multi), and the `sortstore` event.
@Suite(.timeLimit(.minutes(2))) struct SortClusterTests {
    @Test("BY/GET across keys, STORE wakes BLPOP, an empty STORE trips WATCH, sortstore/del events")
    func acrossKeys() async throws {
        let c = try await EventCluster.start()
        let a = try await c.client(0)
        let sub = try await c.client(1)
        let blocker = try await c.client(2)
        #expect(try await a.send(["RPUSH", "l", "3", "10", "2", "1.5"]) == .integer(4))
        #expect(
            try await a.send(["MSET", "w_3", "1", "w_10", "4", "w_2", "3", "w_1.5", "2", "o_3", "three"])
                == .ok)
        #expect(try await a.send(["HSET", "h_3", "f", "c"]) == .integer(1))
        #expect(try await a.send(["HSET", "h_10", "f", "a"]) == .integer(1))
        #expect(try await a.send(["HSET", "h_2", "f", "b"]) == .integer(1))
        #expect(try await a.send(["SORT", "l", "BY", "w_*"]) == .array(["3", "1.5", "2", "10"].map(bulk)))
        #expect(
            try await blocker.send(["SORT_RO", "l", "BY", "h_*->f", "ALPHA", "GET", "#", "GET", "o_*"])
                == .array([
                    bulk("1.5"), .bulkString(nil), bulk("10"), .bulkString(nil), bulk("2"), .bulkString(nil),
                    bulk("3"), bulk("three"),
                ]))
        #expect(try await a.send(["SET", "s", "x"]) == .ok)
        #expect(try await a.send(["SORT", "s", "BY", "w_*"]) == .error(DataCommandsWrongType.text))
        #expect(
            try await a.send(["SORT", "l", "BY", "o_*"])
                == .error("ERR One or more scores can't be converted into double"))

        // A BLPOP parked on foo (another node) is woken by SORT … STORE foo.
        async let popped = blocker.send(["BLPOP", "foo", "5"])
        try await Task.sleep(for: .milliseconds(300))
        #expect(
            try await a.send(["LPUSH", "notfoo", "hello", "hola", "aguacate", "konichiwa", "zanzibar"])
                == .integer(5))
        #expect(try await a.send(["SORT", "notfoo", "ALPHA", "STORE", "foo"]) == .integer(5))
        #expect(try await popped == .array([bulk("foo"), bulk("aguacate")]))

        // WATCHed destination, deleted by a STORE with an empty result: EXEC fails.
        let w = try await c.client(1)
        #expect(try await a.send(["LPUSH", "dst", "bar"]) == .integer(1))
        #expect(try await w.send(["WATCH", "dst"]) == .ok)
        #expect(try await a.send(["SORT", "emptylist", "STORE", "dst"]) == .integer(0))
        #expect(try await w.send(["MULTI"]) == .ok)
        #expect(try await w.send(["PING"]) == .simpleString("QUEUED"))
        #expect(try await w.send(["EXEC"]) == .array(nil))
        #expect(try await a.send(["EXISTS", "dst"]) == .integer(0))

        // Events: sortstore for a stored list, del for a destination an empty result removes.
        #expect(try await a.send(["CONFIG", "SET", "notify-keyspace-events", "KEA"]) == .ok)
        #expect(
            try await sub.send(["PSUBSCRIBE", "__key*"])
                == .array([bulk("psubscribe"), bulk("__key*"), .integer(1)]))
        func next() async -> String? {
            guard case .array(let p?) = await nextPush(sub), p.count == 4, case .bulkString(let ch?) = p[2],
                case .bulkString(let m?) = p[3]
            else { return nil }
            return String(decoding: ch, as: UTF8.self) + " " + String(decoding: m, as: UTF8.self)
        }
        #expect(try await a.send(["SORT", "l", "BY", "w_*", "GET", "o_*", "STORE", "dst"]) == .integer(4))
        #expect(await next() == "__keyspace@0__:dst sortstore")
        #expect(await next() == "__keyevent@0__:sortstore dst")
        #expect(try await a.send(["LRANGE", "dst", "0", "-1"]) == .array(["three", "", "", ""].map(bulk)))
        #expect(try await a.send(["SORT", "emptylist", "STORE", "dst"]) == .integer(0))
        #expect(await next() == "__keyspace@0__:dst del")
        #expect(await next() == "__keyevent@0__:del dst")
        for cl in [a, sub, blocker, w] { await cl.close() }
        await c.stop()
    }
    @Test("Hash-tag groups (Redis's own test's keys): SORT notfoo{t} ALPHA STORE foo{t} wakes BLPOP foo{t}")
    func groupWake() async throws {
        let c = try await KeyspaceCluster.start(layout: .hashTagGroups) { _, node in
            var processor = CommandProcessor(password: nil, maxValueBytes: 1 << 20)
            processor.keyLayout = .hashTagGroups
            processor.modules.append(KeyspaceService(node: node, options: KeyspaceOptions()))
            return processor
        }
        let a = try await c.client(0)
        let blocker = try await c.client(1)
        async let popped = blocker.send(["BLPOP", "foo{t}", "5"])
        try await Task.sleep(for: .milliseconds(300))
        #expect(
            try await a.send(["LPUSH", "notfoo{t}", "hello", "hola", "aguacate", "konichiwa", "zanzibar"])
                == .integer(5))
        #expect(try await a.send(["SORT", "notfoo{t}", "ALPHA", "STORE", "foo{t}"]) == .integer(5))
        #expect(try await popped == .array([bulk("foo{t}"), bulk("aguacate")]))
        #expect(
            try await a.send(["LRANGE", "foo{t}", "0", "-1"])
                == .array(["hello", "hola", "konichiwa", "zanzibar"].map(bulk)))
        for cl in [a, blocker] { await cl.close() }
        await c.stop()
    }
}
