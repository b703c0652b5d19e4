import TernConsensus
import TernCore
import TernRESP

// Transactions on the keys of one hash-tag group (docs/DATA.md, "Hash-tag groups"): with the key
// layout `hash-tag-groups`, keys that share a `{tag}` are members of one Paxos key, so MULTI … EXEC
// on several of them runs as one instance of that key — atomic and linearizable — and WATCH may
// name any of them.
extension CommandProcessor {
    /// The refusal of a transaction that spans Paxos keys.
    var crossKeyError: RESPValue {
        guard keyLayout == .hashTagGroups else { return Self.crossKey }
        return .error(
            "CROSSSLOT Tern transactions take commands on one key, or on keys that share one {hash tag}: "
                + "each is one Paxos group (docs/DATA.md)")
    }

    /// EXEC's plan when its keys (commands and WATCHed keys) are several members of one group:
    /// one `transaction` write on the group key. Nil when they are not (one key, no group, or
    /// keys of several groups: the caller answers those).
    func groupExec(_ calls: [DataCall], watched: [[UInt8]: String?], inPlace: [Int: RESPValue])
        -> CommandPlan?
    {
        let keys = Set(calls.flatMap(Self.callKeys) + watched.keys)
        guard keys.count > 1 || calls.contains(where: Self.isCross), let first = keys.first,
            let group = keyLayout.groupKey(of: first),
            keys.allSatisfy({ keyLayout.groupKey(of: $0) == group })
        else { return nil }
        var args: [[UInt8]] = [Array(String(max(0, clock() / 1000)).utf8), Array(String(watched.count).utf8)]
        for (k, digest) in watched.sorted(by: { $0.key.lexicographicallyPrecedes($1.key) }) {
            // WATCH's read had not answered when EXEC came: treat the key as changed.
            guard let d = digest else { return .reply(.array(nil)) }
            args += [k, Array(d.utf8)]
        }
        // No command but the guards (WATCH a{t} b{t}; MULTI; PING; EXEC): the write still checks them.
        for c in calls {
            args.append(
                Self.isCross(c) ? [UInt8(ascii: "x")] : c.write ? [UInt8(ascii: "w")] : [UInt8(ascii: "r")])
            args.append(c.key)
            args.append(Array(String(c.args.count).utf8))
            args += c.args
        }
        let op = Operation.group(GroupOperation(.transaction(args), bytesMax: maxValueBytes))
        return .requests([(group, .write(op))], Self.execAnswer(calls, inPlace))
    }
}

// Commands across keys of one group (LMOVE, RPOPLPUSH, SMOVE, RENAME, RENAMENX, COPY, LMPOP):
// one instance of the group key instead of the rounds of one-key requests they take between
// unrelated keys (HashTagGroupCommands.swift).
extension CommandProcessor {
    static func isCross(_ c: DataCall) -> Bool {
        GroupValue.crossCommands.contains(String(decoding: c.args[0], as: UTF8.self))
    }

    /// The keys a call touches.
    static func callKeys(_ c: DataCall) -> [[UInt8]] { isCross(c) ? GroupValue.crossKeys(c.args) : [c.key] }

    /// `name args` as a command across members of one group, when it is one (well formed, every
    /// key in the same group; errors are left to the ordinary plan); nil otherwise.
    func crossCall(_ name: String, _ args: [[UInt8]], _ session: Session) -> DataCall? {
        guard keyLayout == .hashTagGroups else { return nil }
        let b = Self.b
        let v3 = session.version == .v3
        var cross: [[UInt8]]
        var convert: @Sendable (DataReply) -> RESPValue = { Self.resp($0, v3) }
        var name = name
        var args = args
        // Inside MULTI a blocking command never waits (Redis): BRPOPLPUSH, BLMOVE and BLMPOP are
        // their non-blocking forms there.
        if session.transaction != nil, ["brpoplpush", "blmove", "blmpop"].contains(name), args.count >= 3 {
            let at = name == "blmpop" ? 1 : args.count - 1
            guard case .ms = BlockingCall.seconds(args[at]) else { return nil }
            args.remove(at: at)
            name = String(name.dropFirst())
        }
        switch name {
        case "lmove", "rpoplpush":
            if name == "rpoplpush" {
                guard args.count == 3 else { return nil }
                cross = [b("lmove"), args[1], args[2], b("right"), b("left")]
            } else {
                guard args.count == 5 else { return nil }
                let (from, to) = (Self.word(args[3]), Self.word(args[4]))
                guard ["left", "right"].contains(from), ["left", "right"].contains(to) else { return nil }
                cross = [b("lmove"), args[1], args[2], b(from), b(to)]
            }
        case "del", "unlink", "exists", "touch", "mget":
            // Several keys of one tag: one instance (one key: the ordinary one-key command).
            guard args.count >= 3 else { return nil }
            let op =
                ["del": "mdel", "unlink": "mdel", "exists": "mexists", "touch": "mexists"][name] ?? "mget"
            cross = [b(op)] + args.dropFirst()
        case "mset":
            guard args.count >= 5, args.count % 2 == 1 else { return nil }
            cross = [b("mset")] + args.dropFirst()
        case "smove":
            guard args.count == 4 else { return nil }
            cross = [b("smove"), args[1], args[2], args[3]]
        case "rename", "renamenx":
            guard args.count == 3 else { return nil }
            cross = [b("rename"), args[1], args[2], b(name == "renamenx" ? "nx" : "-")]
        case "copy":
            guard args.count == 3 || (args.count == 4 && Self.word(args[3]) == "replace") else { return nil }
            cross = [b("copy"), args[1], args[2], b(args.count == 4 ? "replace" : "-")]
        case "lmpop":
            // LMPOP numkeys key… LEFT|RIGHT [COUNT n]
            guard args.count >= 4, let n = KeyValue.strictInteger(args[1]), n >= 1, Int(n) + 3 <= args.count
            else { return nil }
            let keys = Array(args[2..<(2 + Int(n))])
            let rest = Array(args[(2 + Int(n))...])
            let side = Self.word(rest[0])
            guard ["left", "right"].contains(side) else { return nil }
            var count: Int64 = 1
            if rest.count == 3, Self.word(rest[1]) == "count", let c = KeyValue.strictInteger(rest[2]), c > 0
            {
                count = c
            } else if rest.count != 1 {
                return nil
            }
            cross = [b("lmpop"), b(side), b(String(count))] + keys
            convert = { r in
                // [key, [elements]]: a RESP3 client reads a map-like pair as Redis sends it.
                guard case .array(let pair?) = r, pair.count == 2 else { return Self.resp(r, v3) }
                return .array([Self.resp(pair[0], v3), Self.resp(pair[1], v3)])
            }
        default:
            return nil
        }
        let keys = GroupValue.crossKeys(cross)
        guard let first = keys.first, let group = keyLayout.groupKey(of: first),
            keys.allSatisfy({ keyLayout.groupKey(of: $0) == group })
        else { return nil }
        return DataCall(key: first, args: cross, write: true, convert: convert)
    }

    /// The one write that runs cross call `c` on its group.
    func crossRequest(_ c: DataCall) -> (key: [UInt8], request: KeyRequest)? {
        guard let group = keyLayout.groupKey(of: c.key) else { return nil }
        let steps: [[UInt8]] =
            [Array(String(max(0, clock() / 1000)).utf8), Array("0".utf8), [UInt8(ascii: "x")], c.key]
            + [Array(String(c.args.count).utf8)] + c.args
        return (group, .write(.group(GroupOperation(.transaction(steps), bytesMax: maxValueBytes))))
    }

    /// BLMOVE, BRPOPLPUSH and BLMPOP on keys of one group, outside MULTI: the blocking rounds of
    /// TakeCommands.swift (read the keys; park while every one is empty, woken by a write of the
    /// group), but the take is one instance of the group (`crossRequest`), so the move is atomic.
    /// A take that finds the keys emptied meanwhile parks again.
    func crossBlockingPlan(_ name: String, _ args: [[UInt8]], _ session: Session) -> CommandPlan? {
        guard keyLayout == .hashTagGroups, session.transaction == nil,
            ["blmove", "brpoplpush", "blmpop"].contains(name), args.count >= 4
        else { return nil }
        let at = name == "blmpop" ? 1 : args.count - 1
        guard case .ms(let timeoutMs) = BlockingCall.seconds(args[at]) else { return nil }
        var plain = args
        plain.remove(at: at)
        guard let c = crossCall(String(name.dropFirst()), plain, session), let write = crossRequest(c) else {
            return nil
        }
        let keys = name == "blmpop" ? GroupValue.crossKeys(c.args) : [c.key]
        let nullArray: RESPValue = session.version == .v3 ? .null : .array(nil)
        let first = TakeRound(requests: keys.map { ($0, .read) }) { replies in
            var found = false
            for r in replies {
                guard let v = Self.stored(r) else { return .answer(Self.failure(r, write: false)) }
                guard let v else { continue }
                guard v.kind == .list else { return .answer(Self.wrongType) }
                found = true
                break
            }
            guard found else { return .empty }
            return .again(
                TakeRound(requests: [write]) { written in
                    switch written[0] {
                    case .done(.data(.array(let rs?))) where rs.count == 1:
                        switch rs[0] {
                        case .bulk(nil), .array(nil): return .empty  // another taker emptied it first
                        default: return .answer(c.convert(rs[0]))
                        }
                    case .done(.data(let other)): return .answer(Self.resp(other, false))
                    case .done(.previousForgotten): return .answer(Self.forgotten)
                    default: return .answer(Self.failure(written[0], write: true))
                    }
                })
        }
        return .blocking(first.blocking(keys, timeoutMs: timeoutMs, timeout: nullArray, first: first))
    }

    /// The plan of a command across members of one group outside MULTI: one instance.
    func crossPlan(_ name: String, _ args: [[UInt8]], _ session: Session) -> CommandPlan? {
        if let blocking = crossBlockingPlan(name, args, session) { return blocking }
        guard let c = crossCall(name, args, session), let write = crossRequest(c) else { return nil }
        return .requests([write]) { replies in
            switch replies[0] {
            case .done(.data(.array(let rs?))) where rs.count == 1: return c.convert(rs[0])
            case .done(.data(let other)): return Self.resp(other, false)
            case .done(.previousForgotten): return Self.forgotten
            default: return Self.failure(replies[0], write: true)
            }
        }
    }
}
