import NIOCore
import TernConsensus
import TernRESP

/// Redis's data commands across keys: set algebra (`SINTERCARD`, `S*STORE`, `SMOVE`) and
/// sorted-set algebra (`ZUNION/ZINTER/ZDIFF[STORE]`, `ZINTERCARD`, `ZRANGESTORE`). Each source
/// key is read linearizably, but the reads are **not one snapshot**, and a `…STORE`'s write of
/// its destination is a separate step: not atomic (docs/DATA.md, "Across keys").
extension KeyspaceService {
    static let crossKeySpecs: [CommandSpec] = {
        func spec(_ n: String, _ arity: Int, write: Bool, keys: (Int, Int, Int), group: String) -> CommandSpec
        {
            CommandSpec(
                n, arity: arity, flags: write ? CommandSpec.writeFlags(n) : ["readonly"], keys: keys,
                categories: ["@" + group.filter { $0 != "-" }, write ? "@write" : "@read", "@slow"],
                keySpec: [write ? "RW" : "RO"],
                summary: "Redis's \(n.uppercased()), not atomic across keys (docs/DATA.md).",
                group: group)
        }
        return [
            spec("sintercard", -3, write: false, keys: (2, -1, 1), group: "set"),
            spec("sinterstore", -3, write: true, keys: (1, -1, 1), group: "set"),
            spec("sunionstore", -3, write: true, keys: (1, -1, 1), group: "set"),
            spec("sdiffstore", -3, write: true, keys: (1, -1, 1), group: "set"),
            spec("smove", 4, write: true, keys: (1, 2, 1), group: "set"),
            spec("zunion", -3, write: false, keys: (2, -1, 1), group: "sorted-set"),
            spec("zinter", -3, write: false, keys: (2, -1, 1), group: "sorted-set"),
            spec("zdiff", -3, write: false, keys: (2, -1, 1), group: "sorted-set"),
            spec("zintercard", -3, write: false, keys: (2, -1, 1), group: "sorted-set"),
            spec("zunionstore", -4, write: true, keys: (1, -1, 1), group: "sorted-set"),
            spec("zinterstore", -4, write: true, keys: (1, -1, 1), group: "sorted-set"),
            spec("zdiffstore", -4, write: true, keys: (1, -1, 1), group: "sorted-set"),
            spec("zrangestore", -5, write: true, keys: (1, 2, 1), group: "sorted-set"),
        ]
    }()

    /// Reads `keys` (each linearizably, all at once); their values, or the failure as a reply.
    func readAll(_ keys: [[UInt8]]) -> EventLoopFuture<[StoredValue?]> { Self.readAll(keys, on: node) }

    /// Reads `keys` through `node` (each linearizably, all at once); their values, or a
    /// `KeyspaceError` holding the failure as a reply (also EVAL's snapshot, ScriptService.swift).
    static func readAll(_ keys: [[UInt8]], on node: Node) -> EventLoopFuture<[StoredValue?]> {
        let loop = node.eventLoop
        let reads = keys.map { node.execute(key: $0, .read) }
        return EventLoopFuture.whenAllComplete(reads, on: loop).flatMapThrowing { results in
            try results.map { r in
                let reply = (try? r.get()) ?? .unavailable("node stopped")
                guard let v = CommandProcessor.stored(reply) else {
                    throw KeyspaceError(reply: CommandProcessor.failure(reply, write: false))
                }
                return v
            }
        }
    }

    /// Writes `dest` as a whole new value of `kind` (or deletes it when `bytes` is nil).
    /// `event` is the keyspace event the write raises (`sinterstore`, `zunionstore`, …).
    func store(_ dest: [UInt8], _ kind: ValueKind, _ bytes: [UInt8]?, event: String) -> EventLoopFuture<Void>
    {
        guard let bytes else { return write(dest, .data([Array("del".utf8), dest])).map { _ in () } }
        return place(dest, StoredValue(kind: kind, deadlineMs: 0, bytes: bytes), replace: true, event: event)
            .map {
                _ in ()
            }
    }

    func crossKeyPlan(_ name: String, _ args: [[UInt8]], _ session: Session) -> CommandPlan? {
        guard let spec = Self.crossKeySpecs.first(where: { $0.name == name }) else { return nil }
        guard spec.accepts(args.count) else { return .reply(CommandProcessor.arity(name)) }
        let v3 = session.version == .v3
        switch name {
        case "sinterstore", "sunionstore", "sdiffstore", "sintercard":
            var keys = Array(args.dropFirst())
            var limit = 0
            if name == "sintercard" {
                // Redis answers a numkeys that is not a number as it answers 0.
                guard let n = KeyValue.strictInteger(args[1]), n > 0 else {
                    return .reply(CommandProcessor.err("numkeys should be greater than 0"))
                }
                guard Int(n) <= args.count - 2 else {
                    return .reply(CommandProcessor.err("Number of keys can't be greater than number of args"))
                }
                keys = Array(args[2..<(2 + Int(n))])
                let rest = Array(args[(2 + Int(n))...])
                if !rest.isEmpty {
                    guard rest.count == 2, CommandProcessor.word(rest[0]) == "limit" else {
                        return .reply(CommandProcessor.syntax)
                    }
                    // Redis answers a LIMIT that is not a number as it answers a negative one.
                    guard let l = KeyValue.strictInteger(rest[1]), l >= 0 else {
                        return .reply(CommandProcessor.err("LIMIT can't be negative"))
                    }
                    limit = Int(l)
                }
            }
            let dest = name == "sintercard" ? nil : keys.removeFirst()
            // "sinter" (6 letters) for SINTERCARD: its first 5 ("sinte") fell through to the union.
            let op = name == "sintercard" ? "sinter" : String(name.dropLast(5))
            let sources = keys
            let limitCount = limit
            return barrier {
                self.readAll(sources).flatMap { values -> EventLoopFuture<RESPValue> in
                    var sets: [[[UInt8]]] = []
                    for v in values {
                        guard let v else {
                            sets.append([])
                            continue
                        }
                        guard v.kind == .set else {
                            return self.node.eventLoop.makeSucceededFuture(CommandProcessor.wrongType)
                        }
                        sets.append(DataModel.decodeItems(v.bytes))
                    }
                    var acc = sets[0]
                    for s in sets.dropFirst() {
                        let other = Set(s)
                        switch op {
                        case "sinter": acc = acc.filter { other.contains($0) }
                        case "sdiff": acc = acc.filter { !other.contains($0) }
                        default:
                            let have = Set(acc)
                            acc += s.filter { !have.contains($0) }
                        }
                    }
                    guard let dest else {
                        return self.node.eventLoop.makeSucceededFuture(
                            .integer(Int64(limitCount > 0 ? min(limitCount, acc.count) : acc.count)))
                    }
                    return self.store(dest, .set, acc.isEmpty ? nil : DataModel.encodeItems(acc), event: name)
                        .map {
                            .integer(Int64(acc.count))
                        }
                }
            }
        case "smove":
            let (src, dst, member) = (args[1], args[2], args[3])
            return barrier {
                self.readAll([src, dst]).flatMap { values -> EventLoopFuture<RESPValue> in
                    for v in values where v != nil && v!.kind != .set {
                        return self.node.eventLoop.makeSucceededFuture(CommandProcessor.wrongType)
                    }
                    guard let s = values[0], DataModel.decodeItems(s.bytes).contains(member) else {
                        return self.node.eventLoop.makeSucceededFuture(.integer(0))
                    }
                    if src == dst { return self.node.eventLoop.makeSucceededFuture(.integer(1)) }
                    // Add first, then remove: a failure between leaves the member in both, never
                    // in neither.
                    return self.write(dst, .data([Array("sadd".utf8), dst, member])).flatMap { _ in
                        self.write(src, .data([Array("srem".utf8), src, member])).map { _ in .integer(1) }
                    }
                }
            }
        case "zunion", "zinter", "zdiff", "zunionstore", "zinterstore", "zdiffstore", "zintercard":
            let storing = name.hasSuffix("store")
            let op = storing ? String(name.dropLast(5)) : (name == "zintercard" ? "zinter" : name)
            let at = storing ? 2 : 1
            guard let n = KeyValue.strictInteger(args[at]) else { return .reply(CommandProcessor.notInteger) }
            guard n > 0 else {
                return .reply(CommandProcessor.err("at least 1 input key is needed for '\(name)' command"))
            }
            guard Int(n) <= args.count - at - 1 else { return .reply(CommandProcessor.syntax) }
            let keys = Array(args[(at + 1)..<(at + 1 + Int(n))])
            var weights = [Double](repeating: 1, count: keys.count)
            var aggregate = "sum"
            var withScores = false
            var limit = 0
            var i = at + 1 + Int(n)
            while i < args.count {
                let w = CommandProcessor.word(args[i])
                if w == "weights" && op != "zdiff" && name != "zintercard" {
                    guard i + keys.count < args.count else { return .reply(CommandProcessor.syntax) }
                    for k in 0..<keys.count {
                        guard let d = DataModel.parseDouble(args[i + 1 + k]) else {
                            return .reply(CommandProcessor.err("weight value is not a float"))
                        }
                        weights[k] = d
                    }
                    i += 1 + keys.count
                } else if w == "aggregate" && op != "zdiff" && name != "zintercard" && i + 1 < args.count {
                    aggregate = CommandProcessor.word(args[i + 1])
                    guard ["sum", "min", "max"].contains(aggregate) else {
                        return .reply(CommandProcessor.syntax)
                    }
                    i += 2
                } else if w == "withscores" && !storing && name != "zintercard" {
                    withScores = true
                    i += 1
                } else if w == "limit" && name == "zintercard" && i + 1 < args.count {
                    guard let l = KeyValue.strictInteger(args[i + 1]), l >= 0 else {
                        return .reply(CommandProcessor.err("LIMIT can't be negative"))
                    }
                    limit = Int(l)
                    i += 2
                } else {
                    return .reply(CommandProcessor.syntax)
                }
            }
            let dest: [UInt8]? = storing ? args[1] : nil
            let (ws, ag, scores, lim) = (weights, aggregate, withScores, limit)
            return barrier {
                self.readAll(keys).flatMap { values -> EventLoopFuture<RESPValue> in
                    var inputs: [[(member: [UInt8], score: Double)]] = []
                    for v in values {
                        guard let items = DataModel.zsetItems(v) else {
                            return self.node.eventLoop.makeSucceededFuture(CommandProcessor.wrongType)
                        }
                        inputs.append(items)
                    }
                    let out = DataModel.combine(op, inputs, weights: ws, aggregate: ag)
                    if name == "zintercard" {
                        return self.node.eventLoop.makeSucceededFuture(
                            .integer(Int64(lim > 0 ? min(lim, out.count) : out.count)))
                    }
                    guard let dest else {
                        let reply = DataReply.array(
                            out.flatMap { p -> [DataReply] in
                                scores ? [.bulk(p.member), .double(p.score)] : [.bulk(p.member)]
                            })
                        return self.node.eventLoop.makeSucceededFuture(
                            CommandProcessor.resp(reply, v3, pairs: scores))
                    }
                    return self.store(dest, .zset, out.isEmpty ? nil : DataModel.zsetBytes(out), event: name)
                        .map {
                            .integer(Int64(out.count))
                        }
                }
            }
        case "zrangestore":
            // zrangestore dst src min max [BYSCORE|BYLEX] [REV] [LIMIT o c]: ZRANGE's parse, on src.
            let (dst, src) = (args[1], args[2])
            // WITHSCORES is ZRANGE's, not ZRANGESTORE's: Redis answers a syntax error.
            if args.dropFirst(5).contains(where: { CommandProcessor.word($0) == "withscores" }) {
                return .reply(CommandProcessor.syntax)
            }
            let rangeArgs = [Array("zrange".utf8), src] + Array(args[3...])
            let probe = CommandProcessor(password: nil, maxValueBytes: 0)
            var s = session
            guard case .requests(let reqs, _) = probe.plan(RESPCommand(args: rangeArgs), session: &s),
                reqs.count == 1
            else {
                if case .reply(let r) = probe.plan(RESPCommand(args: rangeArgs), session: &s) {
                    return .reply(r)
                }
                return .reply(CommandProcessor.syntax)
            }
            // The normalised ZRANGE with scores, answered from the source's value. ZRANGE refuses
            // WITHSCORES with BYLEX (Redis's rule), so a BYLEX range reads the members only and
            // takes their scores from the source (Redis's "ZRANGESTORE BYLEX" was a syntax error).
            let byLex = rangeArgs.contains { CommandProcessor.word($0) == "bylex" }
            guard
                case .call(let call) = probe.dataPlanned(
                    "zrange", byLex ? rangeArgs : rangeArgs + [Array("withscores".utf8)], s)
            else {
                return .reply(CommandProcessor.syntax)
            }
            return barrier {
                self.readAll([src]).flatMap { values -> EventLoopFuture<RESPValue> in
                    if let v = values[0], v.kind != .zset {
                        return self.node.eventLoop.makeSucceededFuture(CommandProcessor.wrongType)
                    }
                    guard case .array(let flat?) = DataModel.read(call.args, values[0], nowMs: 0) else {
                        return self.node.eventLoop.makeSucceededFuture(CommandProcessor.syntax)
                    }
                    var items: [(member: [UInt8], score: Double)] = []
                    if byLex {
                        var scores: [[UInt8]: Double] = [:]
                        for item in DataModel.zsetItems(values[0]) ?? [] { scores[item.member] = item.score }
                        for case .bulk(let m?) in flat { items.append((m, scores[m] ?? 0)) }
                    }
                    var k = 0
                    while !byLex && k + 1 < flat.count {
                        if case .bulk(let m?) = flat[k], case .double(let d) = flat[k + 1] {
                            items.append((m, d))
                        }
                        k += 2
                    }
                    return self.store(
                        dst, .zset, items.isEmpty ? nil : DataModel.zsetBytes(items), event: name
                    ).map {
                        .integer(Int64(items.count))
                    }
                }
            }
        default:
            return nil
        }
    }
}
