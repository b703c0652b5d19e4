import TernRESP

/// Keys that start with a zero byte belong to the services built on the store (the sequence
/// allocator's section keys `\0seq:<n>`, docs/SEQ.md; the ACL users `\0acl`, docs/ACL.md); the Redis commands refuse them, so no
/// client can read or overwrite a service's state.
extension CommandProcessor {
    /// The key arguments of Redis command `name`.
    static func keyArguments(_ name: String, _ args: [[UInt8]]) -> [[UInt8]] {
        switch name {
        case "get", "strlen", "set", "getset", "incr", "decr", "incrby", "decrby", "append":
            return args.count >= 2 ? [args[1]] : []
        case "rename", "renamenx", "copy":
            return Array(args.dropFirst().prefix(2))
        case "exists", "mget", "del", "unlink", "touch":
            return Array(args.dropFirst())
        case "sort", "sort_ro":
            return SortEngine.keyPositions(name, args)?.map { args[$0] } ?? []
        case "mset":
            return stride(from: 1, to: args.count, by: 2).map { args[$0] }
        default:
            return []
        }
    }

    /// The error for a command that names a reserved key, if it does.
    static func reservedKeyRefusal(_ name: String, _ args: [[UInt8]]) -> RESPValue? {
        guard keyArguments(name, args).contains(where: { $0.first == 0 }) else { return nil }
        return err("keys starting with a zero byte are reserved for Tern's services")
    }
}
