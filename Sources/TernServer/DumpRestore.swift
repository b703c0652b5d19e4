import TernConsensus
import TernCore
import TernRESP
import TernStorage

/// DUMP and RESTORE (docs/DATA.md, "DUMP and RESTORE"). The payload is Tern's own, not Redis's
/// RDB serialisation: `"TD" | u8 version | u8 kind | blob bytes | u32 CRC32C` (the project's
/// checksum, over everything before it). A payload from Redis is refused as Redis refuses a bad
/// one ("DUMP payload version or checksum are wrong"), and Redis refuses Tern's.
extension CommandProcessor {
    static let dumpVersion: UInt8 = 1
    static let badPayload = err("DUMP payload version or checksum are wrong")

    /// The payload of a value of `kind` holding `bytes`.
    static func dumpPayload(_ kind: ValueKind, _ bytes: [UInt8]) -> [UInt8] {
        var w = ByteWriter()
        w.u8(UInt8(ascii: "T"))
        w.u8(UInt8(ascii: "D"))
        w.u8(dumpVersion)
        w.u8(kind.rawValue)
        w.blob(bytes)
        w.u32(CRC32C.checksum(w.bytes))
        return w.bytes
    }

    /// The kind and bytes a payload carries; nil when its format, version or checksum is wrong.
    static func undump(_ payload: [UInt8]) -> (kind: ValueKind, bytes: [UInt8])? {
        guard payload.count >= 12 else { return nil }
        var tail = ByteReader(Array(payload.suffix(4)))
        guard let crc = tail.u32(), CRC32C.checksum(payload.dropLast(4)) == crc else { return nil }
        var r = ByteReader(Array(payload.dropLast(4)))
        guard r.u8() == UInt8(ascii: "T"), r.u8() == UInt8(ascii: "D"), r.u8() == dumpVersion,
            let k = r.u8().flatMap(ValueKind.init(rawValue:)), let bytes = r.blob(), r.atEnd
        else { return nil }
        return (k, bytes)
    }

    /// DUMP key | RESTORE key ttl payload [REPLACE] [ABSTTL] [IDLETIME s] [FREQ f]; nil for
    /// another name. IDLETIME and FREQ are checked as Redis checks them and then ignored (Tern
    /// tracks neither).
    func dumpPlanned(_ name: String, _ args: [[UInt8]], nowMs: UInt64) -> DataPlanned? {
        switch name {
        case "dump":
            return .call(
                DataCall(key: args[1], args: [Self.b("dumpvalue"), args[1]], write: false) { r in
                    guard case .array(let parts?) = r, parts.count == 3, case .integer(let k) = parts[0],
                        case .bulk(let bytes?) = parts[2], let kind = ValueKind(rawValue: UInt8(clamping: k))
                    else { return .bulkString(nil) }
                    return .bulkString(Self.dumpPayload(kind, bytes))
                })
        case "restore":
            var replace = false
            var absolute = false
            var idle = false
            var freq = false
            var i = 4
            while i < args.count {
                switch Self.word(args[i]) {
                case "replace": replace = true
                case "absttl": absolute = true
                case "idletime" where i + 1 < args.count && !freq:
                    guard let n = KeyValue.strictInteger(args[i + 1]) else { return .reply(Self.notInteger) }
                    guard n >= 0 else { return .reply(Self.err("Invalid IDLETIME value, must be >= 0")) }
                    idle = true
                    i += 1
                case "freq" where i + 1 < args.count && !idle:
                    guard let n = KeyValue.strictInteger(args[i + 1]) else { return .reply(Self.notInteger) }
                    guard n >= 0 && n <= 255 else {
                        return .reply(Self.err("Invalid FREQ value, must be >= 0 and <= 255"))
                    }
                    freq = true
                    i += 1
                default: return .reply(Self.syntax)
                }
                i += 1
            }
            guard let ttl = KeyValue.strictInteger(args[2]) else { return .reply(Self.notInteger) }
            guard ttl >= 0 else { return .reply(Self.err("Invalid TTL value, must be >= 0")) }
            var deadline: Int64 = 0
            if ttl > 0 {
                let (sum, o) = ttl.addingReportingOverflow(absolute ? 0 : Int64(nowMs))
                // A deadline past Int64 is no deadline a clock reaches: keep the largest.
                deadline = o ? .max : sum
            }
            let value = Self.undump(args[3])
            let out: [[UInt8]] = [
                Self.b("restore"), args[1], Self.b(String(deadline)), Self.b(String(nowMs)),
                value.map { Self.b(String($0.kind.rawValue)) } ?? Self.b("-"), value?.bytes ?? [],
                Self.b(replace ? "replace" : "-"),
            ]
            let v3 = false
            return .call(DataCall(key: args[1], args: out, write: true) { Self.resp($0, v3) })
        default:
            return nil
        }
    }
}
