import TernConsensus
import TernCore
import TernRESP

/// Redis's bit commands on one key (SETBIT GETBIT BITCOUNT BITPOS) and LCS (a read of two keys,
/// each linearizable, not one snapshot): checked here with Redis's error texts, answered by
/// `DataModel` (DataBits.swift). BITOP, which writes a destination, is in CrossKeyWrites.swift.
extension CommandProcessor {
    /// The largest bit offset Redis takes (its values' bound, 512 MB).
    static let bitOffsetMax: Int64 = (1 << 32) - 1
    /// LCS's table is one cell per pair of bytes: refused beyond this many (64 MB of table).
    static let lcsCellsMax = 16 << 20

    static let bitOffsetError = err("bit offset is not an integer or out of range")

    /// The plan of a bit command or LCS, nil when `name` is not one.
    func bitPlanned(_ name: String, _ args: [[UInt8]], _ v3: Bool) -> DataPlanned? {
        let key = args[1]
        var a = args
        a[0] = Self.b(name)
        func read(_ a: [[UInt8]]) -> DataPlanned {
            .call(DataCall(key: key, args: a, write: false) { Self.resp($0, v3) })
        }
        switch name {
        case "setbit":
            // A SETBIT past Tern's value bound is refused as Redis refuses one past its own.
            guard let offset = KeyValue.strictInteger(args[2]), offset >= 0, offset <= Self.bitOffsetMax,
                offset >> 3 < Int64(maxValueBytes)
            else { return .reply(Self.bitOffsetError) }
            guard args[3] == Self.b("0") || args[3] == Self.b("1") else {
                return .reply(Self.err("bit is not an integer or out of range"))
            }
            return .call(DataCall(key: key, args: a, write: true) { Self.resp($0, v3) })
        case "getbit":
            guard let offset = KeyValue.strictInteger(args[2]), offset >= 0, offset <= Self.bitOffsetMax
            else {
                return .reply(Self.bitOffsetError)
            }
            return read(a)
        case "bitcount":
            // bitcount k [start end [byte|bit]]
            guard args.count == 2 || args.count == 4 || args.count == 5 else { return .reply(Self.syntax) }
            if args.count >= 4 {
                guard KeyValue.strictInteger(args[2]) != nil, KeyValue.strictInteger(args[3]) != nil else {
                    return .reply(Self.notInteger)
                }
                if args.count == 5 {
                    let unit = Self.word(args[4])
                    guard unit == "byte" || unit == "bit" else { return .reply(Self.syntax) }
                    a[4] = Self.b(unit)
                }
            }
            return read(a)
        case "bitpos":
            // bitpos k 0|1 [start [end [byte|bit]]]
            guard args[2] == Self.b("0") || args[2] == Self.b("1") else {
                return .reply(Self.err("The bit argument must be 1 or 0."))
            }
            guard args.count <= 6 else { return .reply(Self.syntax) }
            for i in 3..<min(args.count, 5) where KeyValue.strictInteger(args[i]) == nil {
                return .reply(Self.notInteger)
            }
            if args.count == 6 {
                let unit = Self.word(args[5])
                guard unit == "byte" || unit == "bit" else { return .reply(Self.syntax) }
                a[5] = Self.b(unit)
            }
            return read(a)
        case "lcs":
            return lcsPlanned(args, v3)
        default:
            return nil
        }
    }

    /// LCS k1 k2 [LEN] [IDX] [MINMATCHLEN n] [WITHMATCHLEN].
    func lcsPlanned(_ args: [[UInt8]], _ v3: Bool) -> DataPlanned {
        var len = false
        var idx = false
        var withLen = false
        var minLen: Int64 = 0
        var i = 3
        while i < args.count {
            switch Self.word(args[i]) {
            case "len": len = true
            case "idx": idx = true
            case "withmatchlen": withLen = true
            case "minmatchlen" where i + 1 < args.count:
                guard let n = KeyValue.strictInteger(args[i + 1]) else { return .reply(Self.notInteger) }
                minLen = max(0, n)
                i += 1
            default: return .reply(Self.syntax)
            }
            i += 1
        }
        if len && idx {
            return .reply(Self.err("If you want both the length and indexes, please just use IDX."))
        }
        let (wantLen, wantIdx, withMatchLen, minMatch) = (len, idx, withLen, minLen)
        return .requests([(args[1], .read), (args[2], .read)]) { replies in
            var values: [[UInt8]] = []
            for r in replies {
                guard let v = Self.stored(r) else { return Self.failure(r, write: false) }
                if let v, v.kind != .string {
                    return Self.err("The specified keys must contain string values")
                }
                values.append(v?.bytes ?? [])
            }
            guard (values[0].count + 1) * (values[1].count + 1) <= Self.lcsCellsMax else {
                return Self.err(
                    "LCS of values this large is refused by Tern: its table would take more than "
                        + "\(Self.lcsCellsMax * 4 >> 20) MB (docs/DATA.md)")
            }
            let (seq, matches) = DataModel.lcs(values[0], values[1])
            if wantLen { return .integer(Int64(seq.count)) }
            guard wantIdx else { return .bulkString(seq) }
            var out: [RESPValue] = []
            for m in matches where minMatch == 0 || m.a.count >= minMatch {
                var entry: [RESPValue] = [
                    .array([.integer(Int64(m.a.lowerBound)), .integer(Int64(m.a.upperBound))]),
                    .array([.integer(Int64(m.b.lowerBound)), .integer(Int64(m.b.upperBound))]),
                ]
                if withMatchLen { entry.append(.integer(Int64(m.a.count))) }
                out.append(.array(entry))
            }
            let parts: [RESPValue] = [
                .bulkString("matches"), .array(out), .bulkString("len"), .integer(Int64(seq.count)),
            ]
            return v3 ? .map(parts) : .array(parts)
        }
    }
}
