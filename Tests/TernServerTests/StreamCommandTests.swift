import TernConsensus
import TernRESP
import TernServer
import Testing

/// The stream commands' shell: arity, subcommands, XREAD/XREADGROUP options (Redis 7.0.15's
/// texts), the normalised form the proposer applies, and the blocking plan's first attempt.
@Suite struct StreamCommandTests {
    @Test("Arity, subcommands and XREAD/XREADGROUP option errors, as Redis 7.0.15 words them")
    func errors() {
        #expect(wire(["XADD", "s", "*"]) == "-ERR wrong number of arguments for 'xadd' command\r\n")
        #expect(
            wire(["XGROUP", "create", "s"])
                == "-ERR wrong number of arguments for 'xgroup|create' command\r\n")
        #expect(
            wire(["XINFO", "consumers", "s"])
                == "-ERR wrong number of arguments for 'xinfo|consumers' command\r\n")
        #expect(wire(["XINFO", "bogus"]) == "-ERR unknown subcommand 'bogus'. Try XINFO HELP.\r\n")
        #expect(wire(["XGROUP", "HELP"]).hasPrefix("*17\r\n+XGROUP <subcommand>"))
        #expect(wire(["XINFO", "help"]).hasPrefix("*9\r\n+XINFO <subcommand>"))
        #expect(
            wire(["XREAD", "STREAMS", "s", "0", "0"])
                == "-ERR Unbalanced XREAD list of streams: for each stream key an ID or '$' must be specified.\r\n"
        )
        #expect(
            wire(["XREAD", "GROUP", "g", "c", "STREAMS", "s", "0"])
                == "-ERR The GROUP option is only supported by XREADGROUP. You called XREAD instead.\r\n")
        #expect(
            wire(["XREAD", "NOACK", "STREAMS", "s", "0"])
                == "-ERR The NOACK option is only supported by XREADGROUP. You called XREAD instead.\r\n")
        #expect(wire(["XREAD", "COUNT", "1", "s"]) == "-ERR syntax error\r\n")
        #expect(
            wire(["XREAD", "BLOCK", "x", "STREAMS", "s", "0"])
                == "-ERR timeout is not an integer or out of range\r\n")
        #expect(wire(["XREAD", "BLOCK", "-1", "STREAMS", "s", "0"]) == "-ERR timeout is negative\r\n")
        #expect(
            wire(["XREAD", "STREAMS", "s", ">"])
                == "-ERR The > ID can be specified only when calling XREADGROUP using the GROUP <group> <consumer> option.\r\n"
        )
        #expect(
            wire(["XREAD", "STREAMS", "s", "x"])
                == "-ERR Invalid stream ID specified as stream command argument\r\n")
        #expect(
            wire(["XREADGROUP", "COUNT", "1", "NOACK", "STREAMS", "s", ">"])
                == "-ERR Missing GROUP option for XREADGROUP\r\n")
        #expect(
            wire(["XREADGROUP", "GROUP", "g", "c", "STREAMS", "s", "$"]).hasPrefix(
                "-ERR The $ ID is meaningless"))
        #expect(
            wire(["XREADGROUP", "GROUP", "g", "c", "COUNT", "x", "STREAMS", "s", ">"])
                == "-ERR value is not an integer or out of range\r\n")
    }

    @Test("Writes carry this node's clock and the backlog bound; XREAD of several streams is one read each")
    func normalised() {
        var p = CommandProcessor(password: nil, maxValueBytes: 16)
        p.clock = { 5_000_000 }  // 5000 ms
        p.streamMaxEntries = 7
        var s = Session(authenticated: true)
        let (_, add) = wire(
            ["XADD", "jobs", "*", "f", "v"], replies: [.done(.data(.bulk(Array("5000-0".utf8))))],
            session: &s,
            processor: p)
        guard case .write(.data(let args)) = add.first?.request else {
            Issue.record("not a data write")
            return
        }
        #expect(args == bytes(["xadd", "jobs", "5000", "7", "*", "f", "v"]))
        let (_, group) = wire(
            ["XGROUP", "CREATE", "jobs", "g", "$"], replies: [.done(.data(.ok))], session: &s, processor: p)
        guard case .write(.data(let gargs)) = group.first?.request else {
            Issue.record("not a data write")
            return
        }
        #expect(gargs == bytes(["xgroup", "jobs", "5000", "7", "create", "g", "$"]))
        // Two streams: two reads; both absent answers nil.
        let (answer, reads) = wire(
            ["XREAD", "COUNT", "2", "STREAMS", "a", "b", "0", "0"], replies: [.value(nil), .value(nil)],
            session: &s,
            processor: p)
        #expect(reads.map(\.key) == [bytes(["a"])[0], bytes(["b"])[0]])
        #expect(answer == "*-1\r\n")
    }

    @Test(
        "XREAD BLOCK reads first; XREADGROUP BLOCK on one stream takes at once, and waits when it took nothing"
    )
    func blocking() {
        var s = Session(authenticated: true)
        // XREAD BLOCK on an absent stream: wait.
        #expect(
            wire(["XREAD", "BLOCK", "100", "STREAMS", "s", "$"], replies: [.value(nil)], session: &s).0
                == "+WAIT\r\n")
        /// XREADGROUP BLOCK's first attempt on `v`: the take it sends, applied to `v` as the
        /// proposer applies it, and the command's answer (or WAIT).
        func first(_ v: KeyValue) -> (String, [[UInt8]]) {
            let args = ["XREADGROUP", "GROUP", "g", "c", "BLOCK", "0", "STREAMS", "s", ">"]
            let (_, requests) = wire(args, replies: [.done(.data(.array(nil)))], session: &s)
            guard requests.count == 1, case .write(.data(let take)) = requests[0].request else {
                Issue.record("no take")
                return ("", [])
            }
            let after = v.applying([(.data(take), RequestID(client: 9, counter: 9))], window: 8, instance: 9)
            guard let result = after.result(for: RequestID(client: 9, counter: 9)) else { return ("", take) }
            return (wire(args, replies: [.done(result)], session: &s).0, take)
        }
        // No such group: NOGROUP at once, Redis's text.
        #expect(
            first(KeyValue()).0
                == "-NOGROUP No such key 's' or consumer group 'g' in XREADGROUP with GROUP option\r\n")
        // A stream whose group has a new entry: taken (a write) by the first attempt.
        var v = KeyValue()
        for line in [
            ["xadd", "s", "1", "0", "1-0", "f", "v"], ["xgroup", "s", "1", "0", "create", "g", "0"],
        ] {
            v = v.applying(
                [(.data(bytes(line)), RequestID(client: 1, counter: UInt64(line[4].count)))], window: 8,
                instance: 1)
        }
        let (taken, take) = first(v)
        #expect(take.first == bytes(["xreadgroup"])[0] && take.last == [UInt8(ascii: ">")])
        #expect(taken == "*1\r\n*2\r\n$1\r\ns\r\n*1\r\n*2\r\n$3\r\n1-0\r\n*2\r\n$1\r\nf\r\n$1\r\nv\r\n")
        // Nothing new: wait (and look before the next take).
        v = v.applying([(.data(take), RequestID(client: 2, counter: 1))], window: 8, instance: 2)
        #expect(first(v).0 == "+WAIT\r\n")
        // Two streams: look first, then take what is there.
        let stored = StoredValue(kind: v.kind, deadlineMs: 0, bytes: v.bytes!)
        let (again, requests) = wire(
            ["XREADGROUP", "GROUP", "g", "c", "BLOCK", "0", "STREAMS", "s", "s2", ">", ">"],
            replies: [.typed(stored), .value(nil)], session: &s)
        #expect(again.hasPrefix("-NOGROUP") && requests.allSatisfy { $0.request == .read })
        // Inside MULTI, a blocking read is queued as a plain one-key call.
        #expect(wire(["MULTI"], session: &s).0 == "+OK\r\n")
        #expect(wire(["XREAD", "BLOCK", "0", "STREAMS", "s", "$"], session: &s).0 == "+QUEUED\r\n")
    }
}

@Suite struct StreamACLTests {
    @Test("ACL key patterns apply to XREAD's and XREADGROUP's streams (the keys after STREAMS)")
    func keys() async {
        let p = aclProcessor()
        var admin = Session(authenticated: true)
        #expect(
            await aclRun(p, ["ACL", "SETUSER", "worker", "on", ">w", "~jobs:*", "+@all"], &admin) == "+OK\r\n"
        )
        var s = Session(authenticated: true)
        #expect(await aclRun(p, ["AUTH", "worker", "w"], &s) == "+OK\r\n")
        let denied = "-NOPERM this user has no permissions to access one of the keys used as arguments\r\n"
        #expect(
            await aclRun(p, ["XREAD", "COUNT", "1", "STREAMS", "jobs:a", "secret", "0", "0"], &s) == denied)
        #expect(
            await aclRun(p, ["XREADGROUP", "GROUP", "streams", "c", "STREAMS", "secret", ">"], &s) == denied)
        #expect(await aclRun(p, ["XADD", "secret", "*", "f", "v"], &s) == denied)
        #expect(await aclRun(p, ["XINFO", "STREAM", "secret"], &s) == denied)
    }
}

@Suite struct StreamBlockingTests {
    /// The blocking plan of `args`, its first attempt run on `first` (XREADGROUP on one stream:
    /// a take that found nothing), then (if it waits) the next attempt on `then`: the answer,
    /// "WAIT" or "AGAIN".
    func twoAttempts(_ args: [String], first: [NodeReply], then: [NodeReply]) -> String {
        var s = Session(authenticated: true)
        let p = CommandProcessor(password: nil, maxValueBytes: 16)
        guard case .blocking(let call) = p.plan(RESPCommand(args: args.map { Array($0.utf8) }), session: &s),
            case .wait(let next) = call.step(
                call.requests.first?.request == .read ? first : [.done(.data(.array(nil)))])
        else { return "no wait" }
        switch next.step(then) {
        case .answer(.error(let e)): return "-" + e
        case .answer: return "answer"
        case .again: return "AGAIN"
        case .wait: return "WAIT"
        }
    }

    func stream(_ lines: [[String]]) -> StoredValue {
        var v = KeyValue()
        for (i, line) in lines.enumerated() {
            v = v.applying(
                [(.data(bytes(line)), RequestID(client: 1, counter: UInt64(i + 1)))], window: 8,
                instance: UInt64(i + 1))
        }
        return StoredValue(kind: v.kind, deadlineMs: 0, bytes: v.bytes!)
    }

    @Test(
        "Once blocked: XREADGROUP's stream deleted or retyped ends with UNBLOCKED; XREAD waits on (Redis's suite)"
    )
    func keyChanged() {
        let grouped = stream([
            ["xadd", "s", "1", "0", "1-0", "f", "v"], ["xgroup", "s", "1", "0", "create", "g", "$"],
        ])
        let text = StoredValue(kind: .set, deadlineMs: 0, bytes: [])
        let readGroup = ["XREADGROUP", "GROUP", "g", "c", "BLOCK", "0", "STREAMS", "s", ">"]
        #expect(
            twoAttempts(readGroup, first: [.typed(grouped)], then: [.value(nil)])
                == "-UNBLOCKED the stream key no longer exists")
        #expect(
            twoAttempts(readGroup, first: [.typed(grouped)], then: [.typed(text)])
                == "-UNBLOCKED the stream key no longer exists")
        #expect(twoAttempts(readGroup, first: [.typed(grouped)], then: [.typed(grouped)]) == "WAIT")
        let read = ["XREAD", "BLOCK", "0", "STREAMS", "s", "$"]
        #expect(twoAttempts(read, first: [.typed(grouped)], then: [.typed(text)]) == "WAIT")
        #expect(twoAttempts(read, first: [.typed(grouped)], then: [.value(nil)]) == "WAIT")
    }
}
