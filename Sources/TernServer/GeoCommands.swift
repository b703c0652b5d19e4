import Foundation
import NIOCore
import TernConsensus
import TernRESP

/// Redis's geohash arithmetic (`geohash.c`, `geohash_helper.c`), bit for bit: a position is a
/// sorted-set score, the 52-bit interleave of its latitude and longitude cells (26 bits each,
/// latitude on the even bits) over Redis's ranges (±180 longitude, ±85.05112878 latitude).
enum GeoHash {
    static let lonMin = -180.0
    static let lonMax = 180.0
    static let latMin = -85.05112878
    static let latMax = 85.05112878
    static let step: UInt64 = 26
    static let earthRadiusMeters = 6372797.560856

    static func interleave(_ xlo: UInt32, _ ylo: UInt32) -> UInt64 {
        let b: [UInt64] = [
            0x5555_5555_5555_5555, 0x3333_3333_3333_3333, 0x0F0F_0F0F_0F0F_0F0F, 0x00FF_00FF_00FF_00FF,
            0x0000_FFFF_0000_FFFF,
        ]
        let s: [UInt64] = [1, 2, 4, 8, 16]
        var x = UInt64(xlo)
        var y = UInt64(ylo)
        for k in (0..<5).reversed() {
            x = (x | (x << s[k])) & b[k]
            y = (y | (y << s[k])) & b[k]
        }
        return x | (y << 1)
    }

    static func deinterleave(_ v: UInt64) -> UInt64 {
        let b: [UInt64] = [
            0x5555_5555_5555_5555, 0x3333_3333_3333_3333, 0x0F0F_0F0F_0F0F_0F0F, 0x00FF_00FF_00FF_00FF,
            0x0000_FFFF_0000_FFFF, 0x0000_0000_FFFF_FFFF,
        ]
        let s: [UInt64] = [0, 1, 2, 4, 8, 16]
        var x = v
        var y = v >> 1
        for k in 0..<6 {
            x = (x | (x >> s[k])) & b[k]
            y = (y | (y >> s[k])) & b[k]
        }
        return x | (y << 32)
    }

    /// `geohashEncode` at 26 steps over the given ranges (Redis's for scores; -90…90 for GEOHASH).
    static func encode(lon: Double, lat: Double, latMin: Double = latMin, latMax: Double = latMax) -> UInt64 {
        let latOffset = (lat - latMin) / (latMax - latMin) * Double(1 << step)
        let lonOffset = (lon - lonMin) / (lonMax - lonMin) * Double(1 << step)
        return interleave(UInt32(latOffset), UInt32(lonOffset))
    }

    /// The centre of a score's cell (`geohashDecodeToLongLatWGS84`).
    static func decode(_ score: Double) -> (lon: Double, lat: Double) {
        let sep = deinterleave(UInt64(score))
        let ilat = Double(UInt32(truncatingIfNeeded: sep))
        let ilon = Double(UInt32(truncatingIfNeeded: sep >> 32))
        let cells = Double(1 << step)
        let latLo = latMin + (ilat / cells) * (latMax - latMin)
        let latHi = latMin + ((ilat + 1) / cells) * (latMax - latMin)
        let lonLo = lonMin + (ilon / cells) * (lonMax - lonMin)
        let lonHi = lonMin + ((ilon + 1) / cells) * (lonMax - lonMin)
        return (
            min(max((lonLo + lonHi) / 2, lonMin), lonMax), min(max((latLo + latHi) / 2, latMin), latMax)
        )
    }

    static func radians(_ d: Double) -> Double { d * (Double.pi / 180.0) }

    static func latDistance(_ lat1: Double, _ lat2: Double) -> Double {
        earthRadiusMeters * abs(radians(lat2) - radians(lat1))
    }

    /// Haversine distance in meters (`geohashGetDistance`).
    static func distance(_ lon1: Double, _ lat1: Double, _ lon2: Double, _ lat2: Double) -> Double {
        let v = sin((radians(lon2) - radians(lon1)) / 2)
        if v == 0 { return latDistance(lat1, lat2) }
        let u = sin((radians(lat2) - radians(lat1)) / 2)
        let a = u * u + cos(radians(lat1)) * cos(radians(lat2)) * v * v
        return 2.0 * earthRadiusMeters * asin(sqrt(a))
    }

    /// The standard 11-character geohash of a score (GEOHASH): re-encoded over -90…90.
    static func text(_ score: Double) -> String {
        let alphabet = Array("0123456789bcdefghjkmnpqrstuvwxyz")
        let p = decode(score)
        let bits = encode(lon: p.lon, lat: p.lat, latMin: -90, latMax: 90)
        var out: [Character] = []
        for i in 0..<11 {
            // 52 bits make 10 characters; Redis pads the 11th with 0.
            let index: Int = i == 10 ? 0 : Int((bits >> UInt64(52 - (i + 1) * 5)) & 0x1f)
            out.append(alphabet[index])
        }
        return String(out)
    }

    /// Redis's `LD_STR_HUMAN` (`%.17Lf`, trailing zeros cut): GEOPOS and WITHCOORD in RESP2.
    static func human(_ d: Double) -> String {
        var s = String(format: "%.17f", d)
        if s.contains(".") {
            while s.hasSuffix("0") { s.removeLast() }
            if s.hasSuffix(".") { s.removeLast() }
        }
        return s == "-0" ? "0" : s
    }
}

/// Redis's GEO commands on sorted sets (docs/DATA.md, "GEO"): `GEOADD` is a `ZADD` of geohash
/// scores; the reads decode the sorted set a linearizable read returns; the `STORE` forms write
/// their destination as `ZUNIONSTORE` does (not atomic with the read).
extension KeyspaceService {
    static let geoSpecs: [CommandSpec] = {
        func spec(_ n: String, _ arity: Int, write: Bool, keys: (Int, Int, Int) = (1, 1, 1)) -> CommandSpec {
            CommandSpec(
                n, arity: arity, flags: write ? CommandSpec.writeFlags(n) : ["readonly"], keys: keys,
                categories: ["@geo", write ? "@write" : "@read", "@slow"], keySpec: [write ? "RW" : "RO"],
                summary: "Redis's \(n.uppercased()) (docs/DATA.md, GEO).", group: "geo")
        }
        return [
            spec("geoadd", -5, write: true), spec("geopos", -2, write: false),
            spec("geodist", -4, write: false),
            spec("geohash", -2, write: false), spec("geosearch", -7, write: false),
            spec("geosearchstore", -8, write: true, keys: (1, 2, 1)), spec("georadius", -6, write: true),
            spec("georadius_ro", -6, write: false), spec("georadiusbymember", -5, write: true),
            spec("georadiusbymember_ro", -5, write: false),
        ]
    }()

    /// A search's parsed arguments.
    struct GeoQuery: Sendable {
        var member: [UInt8]?
        var lon = 0.0
        var lat = 0.0
        /// Radius (meters), or the box's width and height (meters).
        var radius: Double?
        var width = 0.0
        var height = 0.0
        var conversion = 1.0
        var withDist = false
        var withHash = false
        var withCoord = false
        var any = false
        /// 0: none, 1: ASC, 2: DESC.
        var sort = 0
        var count: Int64 = 0
        var store: [UInt8]?
        var storeDist = false
    }

    static func geoErr(_ s: String) -> RESPValue { CommandProcessor.err(s) }

    static func parseDouble(_ b: [UInt8], _ why: String? = nil) throws(GeoFailure) -> Double {
        guard let d = DataModel.parseDouble(b) else {
            throw GeoFailure(reply: geoErr(why ?? "value is not a valid float"))
        }
        return d
    }

    struct GeoFailure: Error { var reply: RESPValue }

    static func lonLat(_ x: [UInt8], _ y: [UInt8]) throws(GeoFailure) -> (Double, Double) {
        let lon = try parseDouble(x)
        let lat = try parseDouble(y)
        guard lon >= GeoHash.lonMin, lon <= GeoHash.lonMax, lat >= GeoHash.latMin, lat <= GeoHash.latMax
        else {
            throw GeoFailure(
                reply: geoErr(String(format: "invalid longitude,latitude pair %f,%f", lon, lat)))
        }
        return (lon, lat)
    }

    static func unit(_ u: [UInt8]) throws(GeoFailure) -> Double {
        switch String(decoding: u, as: UTF8.self).lowercased() {
        case "m": return 1
        case "km": return 1000
        case "ft": return 0.3048
        case "mi": return 1609.34
        default: throw GeoFailure(reply: geoErr("unsupported unit provided. please use M, KM, FT, MI"))
        }
    }

    static func distanceArg(_ d: [UInt8], _ u: [UInt8], _ q: inout GeoQuery) throws(GeoFailure) {
        let r = try parseDouble(d, "need numeric radius")
        guard r >= 0 else { throw GeoFailure(reply: geoErr("radius cannot be negative")) }
        q.conversion = try unit(u)
        q.radius = r * q.conversion
    }

    /// GEORADIUS*, GEOSEARCH* arguments, checked in Redis's order (a missing FROMMEMBER member is
    /// found after the read).
    static func parseSearch(_ name: String, _ args: [[UInt8]]) throws(GeoFailure) -> GeoQuery {
        var q = GeoQuery()
        let search = name.hasPrefix("geosearch")
        let storeForm = name == "geosearchstore"
        let noStore = name.hasSuffix("_ro")
        var base: Int
        if name.hasPrefix("georadiusbymember") {
            base = 5
            q.member = args[2]
            try distanceArg(args[3], args[4], &q)
        } else if name.hasPrefix("georadius") {
            base = 6
            (q.lon, q.lat) = try lonLat(args[2], args[3])
            try distanceArg(args[4], args[5], &q)
        } else {
            base = storeForm ? 3 : 2
            if storeForm { q.store = args[1] }
        }
        var fromMember = false
        var fromLoc = false
        var byRadius = false
        var byBox = false
        var i = base
        let n = args.count
        while i < n {
            let w = String(decoding: args[i], as: UTF8.self).lowercased()
            let left = n - i - 1
            switch w {
            case "withdist": q.withDist = true
            case "withhash": q.withHash = true
            case "withcoord": q.withCoord = true
            case "any": q.any = true
            case "asc": q.sort = 1
            case "desc": q.sort = 2
            case "count" where left >= 1:
                guard let c = KeyValue.strictInteger(args[i + 1]) else {
                    throw GeoFailure(reply: CommandProcessor.notInteger)
                }
                guard c > 0 else { throw GeoFailure(reply: geoErr("COUNT must be > 0")) }
                q.count = c
                i += 1
            case "store" where left >= 1 && !noStore && !search,
                "storedist" where left >= 1 && !noStore && !search:
                q.store = args[i + 1]
                q.storeDist = w == "storedist"
                i += 1
            case "storedist" where storeForm:
                q.storeDist = true
            case "frommember" where left >= 1 && search && !fromLoc:
                q.member = args[i + 1]
                fromMember = true
                i += 1
            case "fromlonlat" where left >= 2 && search && !fromMember:
                (q.lon, q.lat) = try lonLat(args[i + 1], args[i + 2])
                fromLoc = true
                i += 2
            case "byradius" where left >= 2 && search && !byBox:
                try distanceArg(args[i + 1], args[i + 2], &q)
                byRadius = true
                i += 2
            case "bybox" where left >= 3 && search && !byRadius:
                let wd = try parseDouble(args[i + 1], "need numeric width")
                let ht = try parseDouble(args[i + 2], "need numeric height")
                guard wd >= 0, ht >= 0 else {
                    throw GeoFailure(reply: geoErr("height or width cannot be negative"))
                }
                q.conversion = try unit(args[i + 3])
                q.width = wd * q.conversion
                q.height = ht * q.conversion
                q.radius = nil
                byBox = true
                i += 3
            default:
                throw GeoFailure(reply: CommandProcessor.syntax)
            }
            i += 1
        }
        if q.store != nil && (q.withDist || q.withHash || q.withCoord) {
            throw GeoFailure(
                reply: geoErr(
                    "\(storeForm ? "GEOSEARCHSTORE" : "STORE option in GEORADIUS") is not compatible with "
                        + "WITHDIST, WITHHASH and WITHCOORD options"))
        }
        let shown = String(decoding: args[0], as: UTF8.self)
        if search && !(fromMember || fromLoc) {
            throw GeoFailure(
                reply: geoErr("exactly one of FROMMEMBER or FROMLONLAT can be specified for \(shown)"))
        }
        if search && !(byRadius || byBox) {
            throw GeoFailure(reply: geoErr("exactly one of BYRADIUS and BYBOX can be specified for \(shown)"))
        }
        if q.any && q.count == 0 {
            throw GeoFailure(reply: geoErr("the ANY argument requires COUNT argument"))
        }
        if q.count != 0 && q.sort == 0 && !q.any { q.sort = 1 }
        return q
    }

    /// One match of a search.
    struct GeoPoint {
        var member: [UInt8]
        var score: Double
        var lon: Double
        var lat: Double
        var dist: Double
    }

    /// The members of `items` inside `q`'s shape, sorted as asked (unsorted: geohash order), cut at
    /// COUNT; nil when the FROMMEMBER / BYMEMBER member is missing.
    static func search(_ items: [(member: [UInt8], score: Double)], _ query: GeoQuery) -> [GeoPoint]? {
        var q = query
        if let m = q.member {
            guard let s = items.first(where: { $0.member == m })?.score else { return nil }
            (q.lon, q.lat) = GeoHash.decode(s)
        }
        var out: [GeoPoint] = []
        for it in items {
            let p = GeoHash.decode(it.score)
            let d: Double
            if let r = q.radius {
                d = GeoHash.distance(q.lon, q.lat, p.lon, p.lat)
                if d > r { continue }
            } else {
                if GeoHash.latDistance(p.lat, q.lat) > q.height / 2 { continue }
                if GeoHash.distance(p.lon, p.lat, q.lon, p.lat) > q.width / 2 { continue }
                d = GeoHash.distance(q.lon, q.lat, p.lon, p.lat)
            }
            out.append(
                GeoPoint(member: it.member, score: it.score, lon: p.lon, lat: p.lat, dist: d / q.conversion))
            if q.any && Int64(out.count) >= q.count { break }
        }
        if q.sort == 1 { out.sort { $0.dist < $1.dist } }
        if q.sort == 2 { out.sort { $0.dist > $1.dist } }
        if q.count > 0 && Int64(out.count) > q.count { out = Array(out.prefix(Int(q.count))) }
        return out
    }

    static func coord(_ d: Double, _ v3: Bool) -> RESPValue {
        v3 ? .double(d) : .bulkString(Array(GeoHash.human(d).utf8))
    }

    /// The sorted set a `dumpvalue` read answered (kind, deadline, bytes; nil array: absent): its
    /// items, nil when the key is absent, or the reply to give instead (WRONGTYPE, a failure).
    static func zsetOf(_ r: DataReply) -> Result<[(member: [UInt8], score: Double)]?, GeoFailure> {
        switch r {
        case .array(nil): return .success(nil)
        case .array(let parts?) where parts.count == 3:
            guard case .integer(let kind) = parts[0], case .bulk(let bytes?) = parts[2] else { break }
            guard kind == Int64(ValueKind.zset.rawValue) else {
                return .failure(GeoFailure(reply: CommandProcessor.wrongType))
            }
            return .success(DataModel.decodeZSet(bytes))
        case .error(let text): return .failure(GeoFailure(reply: .error(text)))
        default: break
        }
        return .failure(GeoFailure(reply: geoErr("unexpected value")))
    }

    /// A GEO command on one key as a data call: `GEOADD` is the `ZADD` it stands for, a read is a
    /// `dumpvalue` read of the sorted set, decoded here. So they run alone or join a transaction
    /// like any data command (Redis's introspection-2 queues a `GEOADD` in `MULTI`). nil: not a
    /// GEO command, or a `STORE` form (two keys, not atomic: `geoPlan`, a barrier).
    static func geoCall(_ name: String, _ args: [[UInt8]], v3: Bool) -> CommandProcessor.DataPlanned? {
        guard name.hasPrefix("geo"), let spec = geoSpecs.first(where: { $0.name == name }) else { return nil }
        guard spec.accepts(args.count) else { return .reply(CommandProcessor.arity(name)) }
        let key = args[1]
        func read(_ answer: @escaping @Sendable ([(member: [UInt8], score: Double)]?) -> RESPValue)
            -> CommandProcessor.DataPlanned
        {
            .call(
                CommandProcessor.DataCall(key: key, args: [Array("dumpvalue".utf8), key], write: false) { r in
                    switch zsetOf(r) {
                    case .failure(let f): return f.reply
                    case .success(let items): return answer(items)
                    }
                })
        }
        switch name {
        case "geoadd":
            var i = 2
            var flags: [[UInt8]] = []
            var nx = false
            var xx = false
            while i < args.count {
                let w = String(decoding: args[i], as: UTF8.self).lowercased()
                guard ["nx", "xx", "ch"].contains(w) else { break }
                if w == "nx" { nx = true }
                if w == "xx" { xx = true }
                flags.append(Array(w.utf8))
                i += 1
            }
            guard (args.count - i) % 3 == 0, !(nx && xx), args.count > i else {
                return .reply(CommandProcessor.syntax)
            }
            var out: [[UInt8]] = [Array("zadd".utf8), key] + flags
            while i < args.count {
                do throws(GeoFailure) {
                    let (lon, lat) = try lonLat(args[i], args[i + 1])
                    out += [Array(String(GeoHash.encode(lon: lon, lat: lat)).utf8), args[i + 2]]
                } catch {
                    return .reply(error.reply)
                }
                i += 3
            }
            return .call(
                CommandProcessor.DataCall(key: key, args: out, write: true) { CommandProcessor.resp($0, v3) })
        case "geopos", "geohash":
            let members = Array(args.dropFirst(2))
            return read { items in
                var scores: [[UInt8]: Double] = [:]
                for it in items ?? [] { scores[it.member] = it.score }
                return .array(
                    members.map { m in
                        guard let s = scores[m] else {
                            return name == "geopos" ? .array(nil) : .bulkString(nil)
                        }
                        if name == "geohash" { return .bulkString(Array(GeoHash.text(s).utf8)) }
                        let p = GeoHash.decode(s)
                        return .array([coord(p.lon, v3), coord(p.lat, v3)])
                    })
            }
        case "geodist":
            var conversion = 1.0
            if args.count == 5 {
                do throws(GeoFailure) { conversion = try unit(args[4]) } catch {
                    return .reply(error.reply)
                }
            } else if args.count > 5 {
                return .reply(CommandProcessor.syntax)
            }
            let (a, b, unit) = (args[2], args[3], conversion)
            return read { items in
                guard let sa = items?.first(where: { $0.member == a })?.score,
                    let sb = items?.first(where: { $0.member == b })?.score
                else { return .bulkString(nil) }
                let pa = GeoHash.decode(sa)
                let pb = GeoHash.decode(sb)
                let d = GeoHash.distance(pa.lon, pa.lat, pb.lon, pb.lat) / unit
                return .bulkString(Array(String(format: "%.4f", d).utf8))
            }
        default:
            let q: GeoQuery
            do throws(GeoFailure) { q = try parseSearch(name, args) } catch {
                return .reply(error.reply)
            }
            guard q.store == nil else { return nil }
            return read { items in
                guard let items else { return .array([]) }
                guard let found = search(items, q) else {
                    return geoErr("could not decode requested zset member")
                }
                return .array(
                    found.map { p in
                        var parts: [RESPValue] = [.bulkString(p.member)]
                        if q.withDist {
                            parts.append(.bulkString(Array(String(format: "%.4f", p.dist).utf8)))
                        }
                        if q.withHash { parts.append(.integer(Int64(p.score))) }
                        if q.withCoord {
                            parts.append(.array([coord(p.lon, v3), coord(p.lat, v3)]))
                        }
                        return parts.count == 1 ? parts[0] : .array(parts)
                    })
            }
        }
    }

    /// The `STORE` forms of the searches (GEORADIUS … STORE, GEOSEARCHSTORE): read the source,
    /// write the destination, as `ZUNIONSTORE` (not atomic with the read). The one-key forms are
    /// data calls (`geoCall`, planned before the modules), so they never come here.
    func geoPlan(_ name: String, _ args: [[UInt8]], _ session: Session) -> CommandPlan? {
        guard name.hasPrefix("geo"), let spec = Self.geoSpecs.first(where: { $0.name == name }) else {
            return nil
        }
        guard spec.accepts(args.count) else { return .reply(CommandProcessor.arity(name)) }
        switch name {
        case "geoadd", "geopos", "geohash", "geodist":
            return nil
        default:
            let q: GeoQuery
            do throws(GeoFailure) { q = try Self.parseSearch(name, args) } catch {
                return .reply(error.reply)
            }
            let source = name == "geosearchstore" ? args[2] : args[1]
            guard let dest = q.store else { return nil }
            let event = name == "geosearchstore" ? "geosearchstore" : "georadiusstore"
            return barrier {
                self.readAll([source]).flatMap { values -> EventLoopFuture<RESPValue> in
                    let loop = self.node.eventLoop
                    var found: [GeoPoint] = []
                    if let v = values[0] {
                        guard v.kind == .zset else {
                            return loop.makeSucceededFuture(CommandProcessor.wrongType)
                        }
                        guard let f = Self.search(DataModel.decodeZSet(v.bytes), q) else {
                            return loop.makeSucceededFuture(
                                Self.geoErr("could not decode requested zset member"))
                        }
                        found = f
                    }
                    let items = found.map { (member: $0.member, score: q.storeDist ? $0.dist : $0.score) }
                    return self.store(
                        dest, .zset, items.isEmpty ? nil : DataModel.zsetBytes(items), event: event
                    )
                    .map { .integer(Int64(items.count)) }
                }
            }
        }
    }
}
