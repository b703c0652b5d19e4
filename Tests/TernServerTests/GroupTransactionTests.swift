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
