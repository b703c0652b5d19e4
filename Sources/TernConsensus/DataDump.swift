// RESTORE's write (docs/DATA.md, "DUMP and RESTORE"): the server checks the payload (its format
// and checksum live in TernServer's DumpRestore.swift) and sends the value it carries; the
// proposer applies it here, against the key's value, so BUSYKEY is decided in the instance.

extension DataModel {
    /// `restore k deadline horizon kind bytes replace|-`: `kind` is "-" when the payload failed
    /// its check (the error comes after BUSYKEY, as in Redis); a deadline at or below `horizon`
    /// restores nothing (and, with REPLACE, deletes the key), as Redis answers OK for a TTL
    /// already past.
    static func applyRestore(_ args: [[UInt8]], _ v: inout KeyValue) -> DataReply {
        guard args.count == 7, let deadline = int(args[2]), let horizon = int(args[3]) else { return .syntax }
        let replace = args[6] == Array("replace".utf8)
        if v.bytes != nil && !replace { return .error("BUSYKEY Target key name already exists.") }
        guard let k = int(args[4]).flatMap({ ValueKind(rawValue: UInt8(clamping: $0)) }) else {
            return .err("DUMP payload version or checksum are wrong")
        }
        if deadline != 0 && deadline <= horizon {
            clear(&v)
            return .ok
        }
        v.kind = k
        v.deadlineMs = UInt64(max(0, deadline))
        v.bytes = args[5]
        return .ok
    }
}
