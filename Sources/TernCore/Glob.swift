/// Redis's glob (`stringmatchlen`) on bytes: `*` any run, `?` any one byte, `[abc]`, `[^a-z]`
/// sets and ranges, `\` escapes the next byte. Linear in pattern × subject (a table, not
/// backtracking), so no pattern is slow.
public enum Glob {
    enum Unit: Sendable {
        case any
        case one
        case literal(UInt8)
        case set(singles: [UInt8], ranges: [(UInt8, UInt8)], negated: Bool)

        func matches(_ c: UInt8) -> Bool {
            switch self {
            case .any, .one: return true
            case .literal(let l): return l == c
            case .set(let singles, let ranges, let negated):
                let hit = singles.contains(c) || ranges.contains { $0.0 <= c && c <= $0.1 }
                return hit != negated
            }
        }
    }

    static func units(_ p: [UInt8]) -> [Unit] {
        var units: [Unit] = []
        var i = 0
        while i < p.count {
            switch p[i] {
            case UInt8(ascii: "*"): units.append(.any)
            case UInt8(ascii: "?"): units.append(.one)
            case UInt8(ascii: "\\") where i + 1 < p.count:
                i += 1
                units.append(.literal(p[i]))
            case UInt8(ascii: "["):
                i += 1
                var negated = false
                if i < p.count && p[i] == UInt8(ascii: "^") {
                    negated = true
                    i += 1
                }
                var singles: [UInt8] = []
                var ranges: [(UInt8, UInt8)] = []
                // Up to the closing bracket, or the pattern's end (as Redis).
                while i < p.count && p[i] != UInt8(ascii: "]") {
                    if p[i] == UInt8(ascii: "\\") && i + 1 < p.count {
                        i += 1
                        singles.append(p[i])
                    } else if i + 2 < p.count && p[i + 1] == UInt8(ascii: "-")
                        && p[i + 2] != UInt8(ascii: "]")
                    {
                        ranges.append((min(p[i], p[i + 2]), max(p[i], p[i + 2])))
                        i += 2
                    } else {
                        singles.append(p[i])
                    }
                    i += 1
                }
                units.append(.set(singles: singles, ranges: ranges, negated: negated))
            default: units.append(.literal(p[i]))
            }
            i += 1
        }
        return units
    }

    /// A pattern read once, matched many times (KEYS, SCAN MATCH over many keys).
    public struct Pattern: Sendable {
        let units: [Unit]
        public init(_ pattern: [UInt8]) { units = Glob.units(pattern) }
        /// Whether the pattern matches all of `s` (case-sensitive).
        public func matches(_ s: [UInt8]) -> Bool { Glob.matches(units, s) }
    }

    /// Whether `pattern` matches all of `s` (case-sensitive, as KEYS and SCAN MATCH).
    public static func matches(_ pattern: [UInt8], _ s: [UInt8]) -> Bool { matches(units(pattern), s) }

    static func matches(_ units: [Unit], _ s: [UInt8]) -> Bool {
        // ok[j]: the units so far match s[..<j].
        var ok = [Bool](repeating: false, count: s.count + 1)
        ok[0] = true
        for u in units {
            var next = [Bool](repeating: false, count: s.count + 1)
            if case .any = u {
                var reached = false
                for j in 0...s.count {
                    reached = reached || ok[j]
                    next[j] = reached
                }
            } else {
                for j in 0..<s.count where ok[j] && u.matches(s[j]) { next[j + 1] = true }
            }
            ok = next
        }
        return ok[s.count]
    }
}
