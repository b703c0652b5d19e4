import NIOCore
import TernConsensus
import TernRESP

/// One round of a command that reads before it takes (LMPOP, ZMPOP, LMOVE between two keys and
/// the blocking pops): the key requests it runs at once, and what to do with their replies.
/// Rounds never write while there is nothing to take: the first round reads, and only a key found
/// non-empty is popped (by a one-key Paxos write, so two takers never get the same element; the
/// loser of a race reads again).
struct TakeRound: Sendable {
    var requests: [(key: [UInt8], request: KeyRequest)]
    var step: @Sendable ([NodeReply]) -> TakeStep
}

/// What a round's replies lead to.
indirect enum TakeStep: Sendable {
    /// Done: answer this.
    case answer(RESPValue)
    /// Run this round next.
    case again(TakeRound)
    /// Nothing to take now: the non-blocking form answers its null, the blocking form waits.
    case empty
}

/// Reads a round takes before it gives up on a key that other takers keep emptying first.
let takeAttemptsMax = 8

extension TakeRound {
    /// The pop of the first non-empty key of `keys` holding `kind` (Redis's order: the first key
    /// that exists decides; one of another kind answers WRONGTYPE). `pop(key)` is the write
    /// that takes; `answer(key, reply)` turns its reply into the command's answer, or nil when
    /// the key turned out empty (another taker won: read again).
    static func pop(
        _ keys: [[UInt8]], kind: ValueKind, attempts: Int = takeAttemptsMax,
        pop: @escaping @Sendable ([UInt8]) -> [[UInt8]],
        answer: @escaping @Sendable ([UInt8], DataReply) -> RESPValue?
    ) -> TakeRound {
        TakeRound(requests: keys.map { ($0, .read) }) { replies in
            for (key, r) in zip(keys, replies) {
                guard let v = CommandProcessor.stored(r) else {
                    return .answer(CommandProcessor.failure(r, write: false))
                }
                guard let v else { continue }
                guard v.kind == kind else { return .answer(CommandProcessor.wrongType) }
                return .again(
                    TakeRound(requests: [(key, .write(.data(pop(key))))]) { written in
                        switch written[0] {
                        case .done(.data(.error(let text))): return .answer(.error(text))
                        case .done(.data(let d)):
                            if let a = answer(key, d) { return .answer(a) }
                            guard attempts > 1 else { return .empty }
                            return .again(
                                Self.pop(keys, kind: kind, attempts: attempts - 1, pop: pop, answer: answer))
                        case .done(.previousForgotten): return .answer(CommandProcessor.forgotten)
                        default: return .answer(CommandProcessor.failure(written[0], write: true))
                        }
                    })
            }
            return .empty
        }
    }

    /// LMOVE between two different keys: read both; push the source's end element onto the
    /// destination; then pop it from the source only if that end still holds it (`lpopif`). If
    /// another taker got it first, the push is undone (`lpopif` on the destination) and the move
    /// starts again. What holds: an element is never lost (pushed before it is popped); without
    /// a failure between the push and the pop it is moved exactly once; a node failure there
    /// leaves it in both lists (docs/DATA.md).
    static func move(
        _ src: [UInt8], _ dst: [UInt8], from: String, to: String, attempts: Int = takeAttemptsMax
    ) -> TakeRound {
        let b = CommandProcessor.b
        if src == dst {
            // One key: the rotation is one write, once a read found something to rotate.
            return .pop(
                [src], kind: .list, attempts: attempts, pop: { [b("lmove"), $0, $0, b(from), b(to)] }
            ) {
                _, reply in
                guard case .bulk(let e?) = reply else { return nil }
                return .bulkString(e)
            }
        }
        return TakeRound(requests: [(src, .read), (dst, .read)]) { replies in
            guard let s = CommandProcessor.stored(replies[0]) else {
                return .answer(CommandProcessor.failure(replies[0], write: false))
            }
            guard let s else { return .empty }
            guard s.kind == .list else { return .answer(CommandProcessor.wrongType) }
            guard let d = CommandProcessor.stored(replies[1]) else {
                return .answer(CommandProcessor.failure(replies[1], write: false))
            }
            if let d, d.kind != .list { return .answer(CommandProcessor.wrongType) }
            let items = DataModel.decodeItems(s.bytes)
            guard let e = from == "left" ? items.first : items.last else { return .empty }
            let push = [b(to == "left" ? "lpush" : "rpush"), dst, e]
            return .again(
                TakeRound(requests: [(dst, .write(.data(push)))]) { pushed in
                    switch pushed[0] {
                    case .done(.data(.integer)): break
                    case .done(.data(.error(let text))): return .answer(.error(text))
                    default: return .answer(CommandProcessor.failure(pushed[0], write: true))
                    }
                    return .again(
                        TakeRound(requests: [(src, .write(.data([b("lpopif"), src, b(from), e])))]) {
                            popped in
                            if case .done(.data(.bulk(let got?))) = popped[0] {
                                return .answer(.bulkString(got))
                            }
                            guard case .done(.data) = popped[0] else {
                                return .answer(CommandProcessor.failure(popped[0], write: true))
                            }
                            // Someone took it first: take the copy back off the destination.
                            return .again(
                                TakeRound(requests: [(dst, .write(.data([b("lpopif"), dst, b(to), e])))]) {
                                    _ in
                                    guard attempts > 1 else {
                                        return .answer(
                                            CommandProcessor.err(
                                                "LMOVE gave up after \(takeAttemptsMax) attempts: other clients "
                                                    + "kept taking the source's element first"))
                                    }
                                    return .again(
                                        Self.move(src, dst, from: from, to: to, attempts: attempts - 1))
                                })
                        })
                })
        }
    }
}

extension TakeRound {
    /// This round as a blocking command's attempt: nothing to take parks on `keys` and runs
    /// `first` again when woken.
    func blocking(_ keys: [[UInt8]], timeoutMs: Int64, timeout: RESPValue, first: TakeRound) -> BlockingCall {
        BlockingCall(keys: keys, timeoutMs: timeoutMs, timeout: timeout, requests: requests) { replies in
            switch self.step(replies) {
            case .answer(let v): return .answer(v)
            case .again(let next):
                return .again(next.blocking(keys, timeoutMs: timeoutMs, timeout: timeout, first: first))
            case .empty:
                return .wait(first.blocking(keys, timeoutMs: timeoutMs, timeout: timeout, first: first))
            }
        }
    }

    /// This round as a command that does not wait: nothing to take answers `empty` (LMPOP, ZMPOP,
    /// LMOVE between two keys run on the blocking machinery for its rounds, never parking).
    func once(empty: RESPValue) -> BlockingCall {
        BlockingCall(keys: [], timeoutMs: 0, timeout: empty, requests: requests) { replies in
            switch self.step(replies) {
            case .answer(let v): return .answer(v)
            case .again(let next): return .again(next.once(empty: empty))
            case .empty: return .answer(empty)
            }
        }
    }
}

extension CommandProcessor {
    /// The commands of this file: LMPOP, ZMPOP, LMOVE/RPOPLPUSH between two keys, and the blocking
    /// BLPOP, BRPOP, BLMOVE, BRPOPLPUSH, BLMPOP, BZPOPMIN, BZPOPMAX, BZMPOP.
    static let takeCommands: [String: DataCommand] = [
        "lmpop": DataCommand(arity: -4, write: true, group: "list", keys: (2, -1, 1)),
        "zmpop": DataCommand(arity: -4, write: true, group: "sorted-set", keys: (2, -1, 1)),
        "blmpop": DataCommand(arity: -5, write: true, group: "list", keys: (3, -1, 1)),
        "bzmpop": DataCommand(arity: -5, write: true, group: "sorted-set", keys: (3, -1, 1)),
        "blmove": DataCommand(arity: 6, write: true, group: "list", keys: (1, 2, 1)),
        "brpoplpush": DataCommand(arity: 4, write: true, group: "list", keys: (1, 2, 1)),
        "bzpopmin": DataCommand(arity: -3, write: true, group: "sorted-set", keys: (1, -2, 1)),
        "bzpopmax": DataCommand(arity: -3, write: true, group: "sorted-set", keys: (1, -2, 1)),
        "blpop": DataCommand(arity: -3, write: true, group: "list", keys: (1, -2, 1)),
        "brpop": DataCommand(arity: -3, write: true, group: "list", keys: (1, -2, 1)),
    ]
    static let takeBlocking: Set<String> = [
        "blmpop", "bzmpop", "blmove", "brpoplpush", "bzpopmin", "bzpopmax", "blpop", "brpop",
    ]

    /// LMPOP/ZMPOP's arguments from numkeys (`at`: its index): the keys, the end (`left`/`right`,
    /// `min`/`max`) and the count; or Redis's error.
    static func mpopArguments(_ args: [[UInt8]], at: Int, ends: [String]) -> Result<
        (keys: [[UInt8]], end: String, count: Int64), TakeError
    > {
        guard let n = KeyValue.strictInteger(args[at]), n > 0 else {
            return .failure(TakeError(reply: err("numkeys should be greater than 0")))
        }
        // numkeys keys, then the end word.
        guard Int64(args.count - at - 1) > n else { return .failure(TakeError(reply: syntax)) }
        let keys = Array(args[(at + 1)...(at + Int(n))])
        var i = at + 1 + Int(n)
        let end = word(args[i])
        guard ends.contains(end) else { return .failure(TakeError(reply: syntax)) }
        i += 1
        var count: Int64 = 1
        if i < args.count {
            guard word(args[i]) == "count", i + 2 == args.count else {
                return .failure(TakeError(reply: syntax))
            }
            guard let c = KeyValue.strictInteger(args[i + 1]), c > 0 else {
                return .failure(TakeError(reply: err("count should be greater than 0")))
            }
            count = c
        }
        return .success((keys, end, count))
    }

    struct TakeError: Error { var reply: RESPValue }

    /// The write that pops `count` (nil: one, without a count) from `key`'s `end`.
    static func popArgs(_ key: [UInt8], list: Bool, end: String, count: Int64?) -> [[UInt8]] {
        let verb = list ? (end == "left" ? "lpop" : "rpop") : (end == "min" ? "zpopmin" : "zpopmax")
        return [b(verb), key] + (count.map { [b(String($0))] } ?? [])
    }

    /// A pop's reply as the command's answer: `mpop` `[key, elements]` (LMPOP, ZMPOP with
    /// [member, score] pairs), otherwise `[key, element]` / `[key, member, score]` (BLPOP,
    /// BZPOPMIN); nil when nothing was popped.
    static func popAnswer(_ key: [UInt8], _ reply: DataReply, list: Bool, mpop: Bool) -> RESPValue? {
        if list {
            switch reply {
            case .bulk(let e?): return .array([.bulkString(key), .bulkString(e)])
            case .array(let items?) where !items.isEmpty:
                return .array([.bulkString(key), .array(items.map { resp($0, false) })])
            default: return nil
            }
        }
        guard case .array(let items?) = reply, items.count >= 2 else { return nil }
        var pairs: [[RESPValue]] = []
        var k = 0
        while k + 1 < items.count {
            guard case .bulk(let m?) = items[k], case .double(let s) = items[k + 1] else { return nil }
            pairs.append([.bulkString(m), .double(s)])
            k += 2
        }
        if !mpop { return .array([.bulkString(key)] + pairs[0]) }
        return .array([.bulkString(key), .array(pairs.map { .array($0) })])
    }

    /// The plan of a command of this file, nil when `name` is not one. Inside MULTI a command on
    /// one key joins the transaction as its one-key write (a blocking one does not wait, as in
    /// Redis); on several keys it cannot join.
    func takePlanned(_ name: String, _ args: [[UInt8]], _ session: Session) -> DataPlanned? {
        let blocking = name.hasPrefix("b")
        let v3 = session.version == .v3
        let nullArray: RESPValue = v3 ? .null : .array(nil)
        var timeoutMs: Int64 = 0
        if blocking {
            let at = name.hasSuffix("mpop") ? 1 : args.count - 1
            switch BlockingCall.seconds(args[at]) {
            case .invalid(let e): return .reply(e)
            case .ms(let ms): timeoutMs = ms
            }
        }
        let inTransaction = session.transaction != nil
        switch name {
        case "lmpop", "zmpop", "blmpop", "bzmpop":
            let list = name.hasSuffix("lmpop")
            let parsed = Self.mpopArguments(
                args, at: blocking ? 2 : 1, ends: list ? ["left", "right"] : ["min", "max"])
            guard case .success(let a) = parsed else {
                if case .failure(let e) = parsed { return .reply(e.reply) }
                return .reply(Self.syntax)
            }
            if inTransaction && a.keys.count == 1 {
                let key = a.keys[0]
                return .call(
                    DataCall(
                        key: key, args: Self.popArgs(key, list: list, end: a.end, count: a.count), write: true
                    ) {
                        Self.popAnswer(key, $0, list: list, mpop: true) ?? (Self.errorReply($0) ?? nullArray)
                    })
            }
            let round = TakeRound.pop(a.keys, kind: list ? .list : .zset) { key in
                Self.popArgs(key, list: list, end: a.end, count: a.count)
            } answer: { key, reply in
                Self.popAnswer(key, reply, list: list, mpop: true)
            }
            return .plan(
                .blocking(
                    blocking
                        ? round.blocking(a.keys, timeoutMs: timeoutMs, timeout: nullArray, first: round)
                        : round.once(empty: nullArray)))
        case "blpop", "brpop", "bzpopmin", "bzpopmax":
            // BLPOP/BRPOP key … timeout: [key, element]; BZPOPMIN/BZPOPMAX: [key, member, score].
            let keys = Array(args[1..<(args.count - 1)])
            let list = name.hasPrefix("bl") || name.hasPrefix("br")
            let end = ["blpop": "left", "brpop": "right", "bzpopmin": "min", "bzpopmax": "max"][name]!
            if inTransaction && keys.count == 1 {
                let key = keys[0]
                return .call(
                    DataCall(
                        key: key, args: Self.popArgs(key, list: list, end: end, count: nil), write: true
                    ) {
                        Self.popAnswer(key, $0, list: list, mpop: false)
                            ?? (Self.errorReply($0) ?? nullArray)
                    })
            }
            let round = TakeRound.pop(keys, kind: list ? .list : .zset) { key in
                Self.popArgs(key, list: list, end: end, count: nil)
            } answer: { key, reply in
                Self.popAnswer(key, reply, list: list, mpop: false)
            }
            return .plan(
                .blocking(round.blocking(keys, timeoutMs: timeoutMs, timeout: nullArray, first: round)))
        case "lmove", "rpoplpush", "blmove", "brpoplpush":
            let (src, dst) = (args[1], args[2])
            var from = "right"
            var to = "left"
            if name.hasSuffix("lmove") {
                from = Self.word(args[3])
                to = Self.word(args[4])
                guard ["left", "right"].contains(from), ["left", "right"].contains(to) else {
                    return .reply(Self.syntax)
                }
            }
            if src == dst && (inTransaction || !blocking) {
                // One key: one write (the rotation), which can also join a transaction.
                return .call(
                    DataCall(
                        key: src, args: [Self.b("lmove"), src, src, Self.b(from), Self.b(to)], write: true
                    ) {
                        Self.resp($0, v3)
                    })
            }
            // Between two keys nothing can join a transaction (it is not one key's write).
            if inTransaction { return nil }
            let round = TakeRound.move(src, dst, from: from, to: to)
            return .plan(
                .blocking(
                    blocking
                        ? round.blocking([src], timeoutMs: timeoutMs, timeout: nullArray, first: round)
                        : round.once(empty: .bulkString(nil))))
        default:
            return nil
        }
    }

    /// A data reply that is an error, as RESP.
    static func errorReply(_ r: DataReply) -> RESPValue? {
        if case .error(let text) = r { return .error(text) }
        return nil
    }
}
