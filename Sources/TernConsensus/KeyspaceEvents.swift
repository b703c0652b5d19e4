// Redis's keyspace notifications, the pure half (docs/PUBSUB.md, "Keyspace notifications"): which
// events a data command raised, named as Redis names them (`set`, `hset`, `lpush`, `del`,
// `expired`, …), computed by the proposer from the command, its reply and the key's value before
// and after. The server's shell filters them by `notify-keyspace-events` and publishes them.
import TernCore

/// One keyspace event of a chosen instance: `event` happened to `key`.
public struct KeyEvent: Sendable, Hashable {
    public var key: [UInt8]
    public var event: String
    public init(key: [UInt8], event: String) {
        self.key = key
        self.event = event
    }
}

/// Redis's event names per data command.
public enum KeyspaceEvents {
    /// The event a value removed because its deadline passed raises (class `x`).
    public static let expired = "expired"

    /// The events of write `args` (a normalised data command, as `DataModel.apply` takes it) that
    /// answered `reply` and took the key from `before` to `after`, in Redis's order: `new` first
    /// when the key was created, then the command's own, then `del` when a collection was
    /// emptied. `seed` is the one `apply` was given (a transaction replays its commands).
    public static func events(
        _ args: [[UInt8]], reply: DataReply, before: KeyValue, after: KeyValue, seed: UInt64
    ) -> [String] {
        guard let first = args.first else { return [] }
        if case .error = reply { return [] }
        let name = String(decoding: first, as: UTF8.self)
        if name == "multi" { return transaction(args, reply: reply, before: before, seed: seed) }
        // A set or hash write on a bucketed head, with the facts its proposer read
        // (DataKeyedBuckets.swift): the write's own events.
        if name == "kf", args.count >= 3 {
            return events(Array(args[2...]), reply: reply, before: before, after: after, seed: seed)
        }
        let existed = before.bytes != nil
        let exists = after.bytes != nil
        let changed =
            before.bytes != after.bytes || before.kind != after.kind || before.deadlineMs != after.deadlineMs
        var own: [String] = []
        switch name {
        case "set":
            var nx = false
            var xx = false
            var expiry = false
            for a in args.dropFirst(3) {
                switch String(decoding: a, as: UTF8.self) {
                case "nx": nx = true
                case "xx": xx = true
                case "pxat": expiry = true
                default: break
                }
            }
            let applied = nx ? !existed : (xx ? existed : true)
            if applied {
                own.append("set")
                if expiry { own.append("expire") }
            }
        case "getdel":
            if existed && !exists { own.append("del") }
        case "getex":
            if existed && before.deadlineMs != after.deadlineMs {
                own.append(after.deadlineMs == 0 ? "persist" : "expire")
            }
        case "incrby", "incrbyfloat", "append":
            own.append(name)
        case "setrange":
            if changed { own.append(name) }
        case "pexpireat":
            if reply == .integer(1) { own.append(exists ? "expire" : "del") }
        case "persist":
            if reply == .integer(1) { own.append("persist") }
        case "del":
            // `del k rename_from`: RENAME's removal of its source.
            if existed { own.append(args.count > 2 ? String(decoding: args[2], as: UTF8.self) : "del") }
        case "copyvalue":
            // `copyvalue k kind deadline bytes replace|- [event]`: COPY, RENAME, RESTORE, the STOREs.
            if reply == .integer(1) {
                own.append(args.count > 6 ? String(decoding: args[6], as: UTF8.self) : "copy_to")
            }
        case "restore":
            if exists { own.append("restore") } else if existed { own.append("del") }
        case "hset", "hincrby", "hincrbyfloat":
            own.append(name)
        case "hsetnx":
            if reply == .integer(1) { own.append("hset") }
        case "zadd":
            let incr = args.contains(Array("incr".utf8))
            if changed || (incr && reply != .bulk(nil)) { own.append(incr ? "zincr" : "zadd") }
        case "zincrby":
            own.append("zincr")
        case "zremrangebyscore", "zremrangebyrank", "zremrangebylex":
            if changed { own.append("zremby" + name.dropFirst("zremrangeby".count)) }
        case "lpush", "rpush", "lpushx", "rpushx":
            if changed { own.append(String(name.prefix(5))) }
        case "lset", "ltrim":
            own.append(name)
        case "lmove":
            if reply != .bulk(nil) {
                let from = String(decoding: args[3], as: UTF8.self)
                let to = String(decoding: args[4], as: UTF8.self)
                own += [from == "left" ? "lpop" : "rpop", to == "left" ? "lpush" : "rpush"]
            }
        case "lsegment", "lseal", "lmerge", "lunseal", "ljoin", "ksplit", "kflush", "kjoin":
            // A big list's upkeep (DataListBuckets.swift): its elements do not change.
            return []
        case _ where streamWrites.contains(name):
            own = streamEvents(name, args, reply: reply, before: before, after: after) ?? []
        default:
            // sadd srem spop zrem zpopmin zpopmax lpop rpop lrem linsert hdel: when they changed
            // something.
            if changed { own.append(name) }
        }
        var out: [String] = []
        if !existed && exists { out.append("new") }
        out += own
        // A collection emptied by the command: Redis deletes the key and says so.
        if existed && !exists && !own.isEmpty && !["del", "getdel", "pexpireat", "restore"].contains(name) {
            out.append("del")
        }
        return out
    }

    /// A one-key transaction's events: its writes replayed in order as `applyTransaction` applies
    /// them (same seeds), each command's events in turn.
    static func transaction(_ args: [[UInt8]], reply: DataReply, before: KeyValue, seed: UInt64) -> [String] {
        guard case .array(let replies?) = reply, args.count >= 4 else { return [] }
        var v = before
        var out: [String] = []
        var i = 4
        var k: UInt64 = 0
        var r = 0
        while i + 1 < args.count, r < replies.count {
            let write = args[i] == [UInt8(ascii: "w")]
            guard let n = KeyValue.strictInteger(args[i + 1]), n >= 1, i + 2 + Int(n) <= args.count else {
                break
            }
            let sub = Array(args[(i + 2)..<(i + 2 + Int(n))])
            i += 2 + Int(n)
            k += 1
            if write {
                let was = v
                let answer = DataModel.apply(sub, to: &v, seed: seed &+ k)
                out += events(sub, reply: answer, before: was, after: v, seed: seed &+ k)
            }
            r += 1
        }
        return out
    }
}
