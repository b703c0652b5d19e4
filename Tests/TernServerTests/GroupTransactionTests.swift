import NIOCore
import TernConsensus
import TernCore
import TernRESP
import TernServer
import Testing

/// MULTI … EXEC on the keys of one hash-tag group (docs/DATA.md, "Hash-tag groups").
@Suite struct GroupTransactionTests {
    static var processor: CommandProcessor {
        var p = CommandProcessor(password: nil, maxValueBytes: 1 << 20)
        p.keyLayout = .hashTagGroups
        return p
    }
    static let group = KeyLayout.groupPrefix + Array("t".utf8)

    @Test("Keys of one tag make one transaction: one write on the group key, each reply in its place")
    func oneGroup() {
        var s = Session(authenticated: true)
        let p = Self.processor
        #expect(wire(["MULTI"], session: &s, processor: p).0 == "+OK\r\n")
        #expect(wire(["RPUSH", "blist{t}", "a"], session: &s, processor: p).0 == "+QUEUED\r\n")
        #expect(wire(["LPUSH", "target{t}", "b"], session: &s, processor: p).0 == "+QUEUED\r\n")
        #expect(wire(["PING"], session: &s, processor: p).0 == "+QUEUED\r\n")
        #expect(wire(["GET", "{t}c"], session: &s, processor: p).0 == "+QUEUED\r\n")
        let (exec, reqs) = wire(
            ["EXEC"], replies: [.done(.data(.array([.integer(1), .integer(1), .bulk(nil)])))], session: &s,
            processor: p)
        #expect(exec == "*4\r\n:1\r\n:1\r\n+PONG\r\n$-1\r\n")
        #expect(reqs.count == 1, "one Paxos instance")
        #expect(reqs.first?.key == Self.group)
        guard case .write(.group(let g)) = reqs.first?.request, case .transaction(let args) = g.kind else {
            Issue.record("EXEC went out as \(reqs)")
            return
        }
        #expect(g.bytesMax == 1 << 20)
        #expect(args[1] == Array("0".utf8), "no WATCH")
        #expect(
            Array(args[2...])
                == bytes([
                    "w", "blist{t}", "3", "rpush", "blist{t}", "a", "w", "target{t}", "3", "lpush",
                    "target{t}", "b",
                    "r", "{t}c", "2", "get", "{t}c",
                ]))
    }

    @Test(
        "A transaction mixing tags, or a tagged and an untagged key, still answers CROSSSLOT and runs nothing"
    )
    func mixedTags() {
        let p = Self.processor
        for second in ["b{u}", "plain"] {
            var s = Session(authenticated: true)
            _ = wire(["MULTI"], session: &s, processor: p)
            #expect(wire(["SET", "a{t}", "1"], session: &s, processor: p).0 == "+QUEUED\r\n")
            let (refused, reqs) = wire(["SET", second, "1"], session: &s, processor: p)
            #expect(
                refused.hasPrefix(
                    "-CROSSSLOT Tern transactions take commands on one key, or on keys that share"))
            #expect(reqs.isEmpty)
            let (abort, none) = wire(["EXEC"], session: &s, processor: p)
            #expect(abort == "-EXECABORT Transaction discarded because of previous errors.\r\n")
            #expect(none.isEmpty)
        }
        // Without groups the same transaction is refused as before.
        var s = Session(authenticated: true)
        _ = wire(["MULTI"], session: &s)
        _ = wire(["SET", "a{t}", "1"], session: &s)
        #expect(
            wire(["SET", "b{t}", "1"], session: &s).0.hasPrefix(
                "-CROSSSLOT Tern transactions take commands on one key:"))
    }

    @Test("WATCH may name any key of the transaction's group; the guards travel with the write")
    func watchInGroup() {
        var s = Session(authenticated: true)
        let p = Self.processor
        _ = wire(
            ["WATCH", "a{t}", "b{t}"], replies: [.value(Array("1".utf8)), .value(nil)], session: &s,
            processor: p)
        _ = wire(["MULTI"], session: &s, processor: p)
        _ = wire(["INCR", "a{t}"], session: &s, processor: p)
        let (changed, reqs) = wire(["EXEC"], replies: [.done(.data(.array(nil)))], session: &s, processor: p)
        #expect(changed == "*-1\r\n")
        guard case .write(.group(let g)) = reqs.first?.request, case .transaction(let args) = g.kind else {
            Issue.record("EXEC went out as \(reqs)")
            return
        }
        let one = DataModel.digest(StoredValue(kind: .string, deadlineMs: 0, bytes: Array("1".utf8)))
        #expect(Array(args[1...5]) == bytes(["2", "a{t}", one, "b{t}", DataModel.digest(nil)]))
    }
}

/// Commands across keys of one hash-tag group: one write on the group key.
@Suite struct GroupCrossCommandTests {
    @Test(
        "LMOVE, SMOVE, RENAME, COPY, LMPOP on keys of one tag are one write; across tags they keep their rounds"
    )
    func oneWrite() {
        let p = GroupTransactionTests.processor
        let g = GroupTransactionTests.group
        let cases: [([String], DataReply, String, [String])] = [
            (
                ["LMOVE", "a{t}", "b{t}", "LEFT", "RIGHT"], .bulk(Array("x".utf8)), "$1\r\nx\r\n",
                ["lmove", "a{t}", "b{t}", "left", "right"]
            ),
            (
                ["RPOPLPUSH", "a{t}", "b{t}"], .bulk(nil), "$-1\r\n",
                ["lmove", "a{t}", "b{t}", "right", "left"]
            ),
            (["SMOVE", "a{t}", "b{t}", "m"], .integer(1), ":1\r\n", ["smove", "a{t}", "b{t}", "m"]),
            (["RENAME", "a{t}", "b{t}"], .ok, "+OK\r\n", ["rename", "a{t}", "b{t}", "-"]),
            (["RENAMENX", "a{t}", "b{t}"], .integer(0), ":0\r\n", ["rename", "a{t}", "b{t}", "nx"]),
            (
                ["COPY", "a{t}", "b{t}", "REPLACE"], .integer(1), ":1\r\n",
                ["copy", "a{t}", "b{t}", "replace"]
            ),
            (
                ["LMPOP", "2", "a{t}", "b{t}", "RIGHT", "COUNT", "2"], .array(nil), "*-1\r\n",
                ["lmpop", "right", "2", "a{t}", "b{t}"]
            ),
        ]
        for (command, reply, answer, step) in cases {
            var s = Session(authenticated: true)
            let (out, reqs) = wire(
                command, replies: [.done(.data(.array([reply])))], session: &s, processor: p)
            #expect(out == answer, "\(command)")
            #expect(reqs.count == 1 && reqs.first?.key == g, "\(command)")
            guard case .write(.group(let op)) = reqs.first?.request, case .transaction(let args) = op.kind
            else {
                Issue.record("\(command) went out as \(reqs)")
                continue
            }
            #expect(Array(args[1...]) == bytes(["0", "x", "a{t}", String(step.count)] + step), "\(command)")
        }
        // Keys of two tags: not a group command (LMOVE's rounds read both keys first).
        var s = Session(authenticated: true)
        let (_, reqs) = wire(
            ["LMOVE", "a{t}", "b{u}", "LEFT", "RIGHT"], replies: [.value(nil), .value(nil)], session: &s,
            processor: p)
        #expect(reqs.map(\.key) == [Array("a{t}".utf8), Array("b{u}".utf8)])
    }

    @Test(
        "BLMOVE on keys of one tag reads its source, then takes with one write on the group key; parks while empty"
    )
    func blockingMove() {
        let p = GroupTransactionTests.processor
        var s = Session(authenticated: true)
        let plan = p.plan(
            RESPCommand(args: bytes(["BLMOVE", "a{t}", "b{t}", "LEFT", "RIGHT", "0"])), session: &s)
        guard case .blocking(let call) = plan else {
            Issue.record("BLMOVE planned as \(plan)")
            return
        }
        #expect(call.keys == [Array("a{t}".utf8)])
        #expect(call.requests.map(\.key) == [Array("a{t}".utf8)])
        guard case .wait = call.step([.value(nil)]) else {
            Issue.record("an empty source does not park")
            return
        }
        let list = StoredValue(kind: .list, deadlineMs: 0, bytes: DataModel.encodeItems([Array("x".utf8)]))
        guard case .again(let take) = call.step([.typed(list)]) else {
            Issue.record("a non-empty source does not take")
            return
        }
        #expect(take.requests.map(\.key) == [GroupTransactionTests.group])
        guard case .answer(let v) = take.step([.done(.data(.array([.bulk(Array("x".utf8))])))]) else {
            Issue.record("the take does not answer")
            return
        }
        #expect(v == .bulkString(Array("x".utf8)))
        guard case .wait = take.step([.done(.data(.array([.bulk(nil)])))]) else {
            Issue.record("a lost race does not park again")
            return
        }
    }

    @Test("Inside MULTI they join the group's transaction; BRPOPLPUSH there does not wait")
    func inMulti() {
        let p = GroupTransactionTests.processor
        var s = Session(authenticated: true)
        _ = wire(["MULTI"], session: &s, processor: p)
        #expect(wire(["RPUSH", "src{t}", "e"], session: &s, processor: p).0 == "+QUEUED\r\n")
        #expect(wire(["BRPOPLPUSH", "src{t}", "dst{t}", "0"], session: &s, processor: p).0 == "+QUEUED\r\n")
        let (exec, reqs) = wire(
            ["EXEC"], replies: [.done(.data(.array([.integer(1), .bulk(Array("e".utf8))])))], session: &s,
            processor: p)
        #expect(exec == "*2\r\n:1\r\n$1\r\ne\r\n")
        guard case .write(.group(let op)) = reqs.first?.request, case .transaction(let args) = op.kind else {
            Issue.record("EXEC went out as \(reqs)")
            return
        }
        #expect(
            Array(args[2...])
                == bytes([
                    "w", "src{t}", "3", "rpush", "src{t}", "e", "x", "src{t}", "5", "lmove", "src{t}",
                    "dst{t}", "right",
                    "left",
                ]))
    }
}
