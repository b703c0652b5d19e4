// Commands across the members of one hash-tag group (docs/DATA.md, "Hash-tag groups"): LMOVE,
// SMOVE, RENAME, COPY and LMPOP on keys that share a tag run inside one instance of their group
// key, so they are atomic. Each is made of the members' own one-key writes (`lpop` then `rpush`,
// `srem` then `sadd`, `copyvalue` then `del`), applied in turn, so their replies, errors and
// keyspace events are exactly those of the one-key commands.
import TernCore

extension GroupValue {
    /// The commands `applyCross` takes (lower-cased): `lmove src dst left|right left|right`,
    /// `smove src dst member`, `rename src dst nx|-`, `copy src dst replace|-`,
    /// `lmpop left|right count key…`.
    /// `mdel key…`, `mexists key…`, `mget key…`, `mset key value…` (DEL/UNLINK, EXISTS/TOUCH,
    /// MGET and MSET on several keys of one tag).
    public static let crossCommands: Set<String> = [
        "lmove", "smove", "rename", "copy", "lmpop", "mdel", "mexists", "mget", "mset",
    ]

    /// The member keys a cross command names.
    public static func crossKeys(_ args: [[UInt8]]) -> [[UInt8]] {
        guard let first = args.first else { return [] }
        switch String(decoding: first, as: UTF8.self) {
        case "lmpop": return Array(args.dropFirst(3))
        case "mdel", "mexists", "mget": return Array(args.dropFirst())
        case "mset": return stride(from: 1, to: args.count, by: 2).map { args[$0] }
        default: break
        }
        return Array(args.dropFirst().prefix(2))
    }

    /// Applies a cross command; `events` collects (member, event) pairs.
    mutating func applyCross(
        _ args: [[UInt8]], seed: UInt64, horizonMs: UInt64, events: inout [([UInt8], String)]?
    ) -> DataReply {
        let b = { (s: String) in Array(s.utf8) }
        guard let first = args.first, args.count >= 2 else { return .syntax }
        // One member's write, its events recorded under its name.
        func write(_ key: [UInt8], _ sub: [[UInt8]]) -> DataReply {
            var v = keyValue(key)
            if v.isExpired(horizonMs: horizonMs) {
                DataModel.clear(&v)
                events?.append((key, KeyspaceEvents.expired))
            }
            let before = v
            let reply = DataModel.apply(sub, to: &v, seed: seed, horizonMs: horizonMs)
            if events != nil {
                for e in KeyspaceEvents.events(sub, reply: reply, before: before, after: v, seed: seed) {
                    events?.append((key, e))
                }
            }
            store(key, v)
            return reply
        }
        func value(_ key: [UInt8]) -> StoredValue? {
            guard let v = member(key), v.deadlineMs == 0 || horizonMs == 0 || v.deadlineMs > horizonMs else {
                return nil
            }
            return v
        }
        let name = String(decoding: first, as: UTF8.self)
        switch name {
        case "mdel":
            var n: Int64 = 0
            for k in args.dropFirst() where write(k, [b("del"), k]) == .integer(1) { n += 1 }
            return .integer(n)
        case "mexists":
            return .integer(Int64(args.dropFirst().filter { value($0) != nil }.count))
        case "mget":
            return .array(
                args.dropFirst().map { k in
                    value(k).map { $0.kind == .string ? .bulk($0.bytes) : .bulk(nil) } ?? .bulk(nil)
                })
        case "mset":
            var i = 1
            while i + 1 < args.count {
                _ = write(args[i], [b("set"), args[i], args[i + 1]])
                i += 2
            }
            return .ok
        default: break
        }
        guard args.count >= 3 else { return .syntax }
        let (src, dst) = (args[1], args[2])
        switch name {
        case "lmove":
            guard args.count == 5 else { return .syntax }
            if src == dst { return write(src, [b("lmove"), src, src, args[3], args[4]]) }
            guard let s = value(src) else { return .bulk(nil) }
            guard s.kind == .list else { return .wrongType }
            if let d = value(dst), d.kind != .list { return .wrongType }
            let from = args[3] == b("left") ? "lpop" : "rpop"
            guard case .bulk(let e?) = write(src, [b(from), src]) else { return .bulk(nil) }
            _ = write(dst, [b(args[4] == b("left") ? "lpush" : "rpush"), dst, e])
            return .bulk(e)
        case "smove":
            guard args.count == 4 else { return .syntax }
            let s = value(src)
            let d = value(dst)
            if let s, s.kind != .set { return .wrongType }
            if let d, d.kind != .set { return .wrongType }
            guard let s, DataModel.decodeItems(s.bytes).contains(args[3]) else { return .integer(0) }
            if src == dst { return .integer(1) }
            _ = write(src, [b("srem"), src, args[3]])
            _ = write(dst, [b("sadd"), dst, args[3]])
            return .integer(1)
        case "rename":
            guard args.count == 4 else { return .syntax }
            let nx = args[3] == b("nx")
            guard let s = value(src) else { return .err("no such key") }
            if src == dst { return nx ? .integer(0) : .ok }
            let placed = write(
                dst,
                [
                    b("copyvalue"), dst, b(String(s.kind.rawValue)), b(String(s.deadlineMs)), s.bytes,
                    b(nx ? "-" : "replace"), b("rename_to"),
                ])
            guard placed == .integer(1) else { return .integer(0) }
            _ = write(src, [b("del"), src, b("rename_from")])
            return nx ? .integer(1) : .ok
        case "copy":
            guard args.count == 4 else { return .syntax }
            guard let s = value(src) else { return .integer(0) }
            if src == dst { return .err("source and destination objects are the same") }
            return write(
                dst,
                [b("copyvalue"), dst, b(String(s.kind.rawValue)), b(String(s.deadlineMs)), s.bytes, args[3]])
        case "lmpop":
            // lmpop left|right count key…: the first non-empty list's elements.
            guard args.count >= 4 else { return .syntax }
            for key in args.dropFirst(3) {
                guard let v = value(key) else { continue }
                guard v.kind == .list else { return .wrongType }
                let popped = write(key, [b(args[1] == b("left") ? "lpop" : "rpop"), key, args[2]])
                guard case .array(let items?) = popped else { return popped }
                return .array([.bulk(key), .array(items)])
            }
            return .array(nil)
        default:
            return .err("unknown command across members '\(String(decoding: first, as: UTF8.self))'")
        }
    }
}
