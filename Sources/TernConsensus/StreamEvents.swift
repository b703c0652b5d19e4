// Redis's keyspace events of the stream commands (t_stream.c), the pure half: named from the
// command, its reply and the stream before and after, as `KeyspaceEvents.events` does for the
// other kinds. The shell files them under class `t` (every name starting with `x`).

extension KeyspaceEvents {
    /// The stream writes (`name key nowMs limit arg…`, as `DataModel.applyStream` takes them).
    static let streamWrites: Set<String> = [
        "xadd", "xtrim", "xdel", "xsetid", "xgroup", "xreadgroup", "xack", "xclaim", "xautoclaim", "xackadd",
    ]

    /// The command's own events, as Redis 7 raises them: `xadd` (then `xtrim` when its MAXLEN/MINID
    /// removed entries), `xtrim` and `xdel` when they removed some, `xsetid`, `xgroup-<sub>` (
    /// `create`, `setid`, `destroy`, `createconsumer` and `delconsumer` only when they did
    /// something), and `xgroup-createconsumer` when XREADGROUP, XCLAIM or XAUTOCLAIM made a
    /// consumer. XACK raises none. Tern's XACKADD raises `xadd` when it added entries. nil when
    /// `name` is not a stream write.
    static func streamEvents(
        _ name: String, _ args: [[UInt8]], reply: DataReply, before: KeyValue, after: KeyValue
    )
        -> [String]?
    {
        guard streamWrites.contains(name) else { return nil }
        func stream(_ v: KeyValue) -> StreamValue? {
            v.kind == .stream ? v.bytes.flatMap { StreamCodec.value($0) } : nil
        }
        let was = stream(before)
        let now = stream(after)
        let entriesBefore = was?.entries.count ?? 0
        let entriesAfter = now?.entries.count ?? 0
        // Consumers per group, before and after: a group whose count grew made one.
        func consumers(_ s: StreamValue?) -> [[UInt8]: Int] {
            var out: [[UInt8]: Int] = [:]
            for g in s?.groups ?? [] { out[g.name] = g.consumers.count }
            return out
        }
        let c0 = consumers(was)
        let c1 = consumers(now)
        let madeConsumer = c1.contains { name, n in c0[name].map { n > $0 } ?? false }
        let droppedConsumer = c0.contains { name, n in c1[name].map { $0 < n } ?? false }
        switch name {
        case "xadd":
            guard case .bulk(_?) = reply else { return [] }
            return entriesAfter < entriesBefore + 1 ? ["xadd", "xtrim"] : ["xadd"]
        case "xtrim", "xdel":
            guard case .integer(let n) = reply, n > 0 else { return [] }
            return [name]
        case "xsetid":
            return reply == .ok ? ["xsetid"] : []
        case "xgroup":
            guard args.count > 4 else { return [] }
            let sub = String(decoding: args[4], as: UTF8.self)
            switch sub {
            case "create", "setid": return reply == .ok ? ["xgroup-" + sub] : []
            case "destroy", "createconsumer": return reply == .integer(1) ? ["xgroup-" + sub] : []
            case "delconsumer": return droppedConsumer ? ["xgroup-delconsumer"] : []
            default: return []
            }
        case "xreadgroup", "xclaim", "xautoclaim":
            return madeConsumer ? ["xgroup-createconsumer"] : []
        case "xackadd":
            return (now?.entriesAdded ?? 0) > (was?.entriesAdded ?? 0) ? ["xadd"] : []
        default:
            return []
        }
    }
}
