import Foundation
import NIOCore
import TernConsensus
import TernRESP

// Redis's SORT and SORT_RO (docs/DATA.md, "SORT and SORT_RO"). The sorting itself is pure (`SortQuery`,
// `SortEngine`: Redis 7.0's sort.c step by step, checked against redis-server 7.0.15). How it runs:
//
//   SORT k [LIMIT] [ASC|DESC] [ALPHA] [BY nosort] [GET #]   one linearizable read of k (a data
//                                                         call: it also joins MULTI, as a read)
//   SORT k BY w_* GET o_* … [STORE d]                      read k; read the BY keys; sort; read the
//                                                         GET keys of the answer; write d — each
//                                                         key linearizably, not one snapshot, and
//                                                         the store a separate step (not atomic)

/// One parsed SORT or SORT_RO.
struct SortQuery: Sendable, Equatable {
    var key: [UInt8]
    /// The BY pattern, nil when sorting by the elements themselves (or by nothing: `dontSort`).
    var by: [UInt8]?
    /// BY with a pattern without `*` (`BY nosort`): the elements keep their native order.
    var dontSort = false
    var limitStart = 0
    var limitCount = -1
    /// GET patterns in order (`#` is the element itself).
    var gets: [[UInt8]] = []
    var desc = false
    var alpha = false
    /// STORE's destination (the last one given, as Redis).
    var store: [UInt8]?

    /// Redis's parse (`sortCommandGeneric`): options in any order, the first error wins.
    /// `fullKeyAccess`: the user's key patterns allow every key (Redis refuses BY with a pattern,
    /// and GET, to users without it, since they read keys the ACL check cannot see).
    static func parse(_ args: [[UInt8]], readonly: Bool, fullKeyAccess: Bool = true) -> Result<
        SortQuery, SortFailure
    > {
        var q = SortQuery(key: args[1])
        var j = 2
        while j < args.count {
            let left = args.count - j - 1
            switch CommandProcessor.word(args[j]) {
            case "asc": q.desc = false
            case "desc": q.desc = true
            case "alpha": q.alpha = true
            case "limit" where left >= 2:
                guard let s = KeyValue.strictInteger(args[j + 1]), let c = KeyValue.strictInteger(args[j + 2])
                else { return .failure(SortFailure(CommandProcessor.notInteger)) }
                // Clamped as Redis does before use (its inputs are bounded by the object's size).
                q.limitStart = Int(clamping: s)
                q.limitCount = Int(clamping: c)
                j += 2
            case "store" where !readonly && left >= 1:
                q.store = args[j + 1]
                j += 1
            case "by" where left >= 1:
                q.by = args[j + 1]
                // As Redis: once a BY without `*` was given, a later BY with one does not sort.
                if SortEngine.star(in: args[j + 1]) == nil {
                    q.dontSort = true
                } else {
                    guard fullKeyAccess else {
                        return .failure(
                            SortFailure(
                                CommandProcessor.err(
                                    "BY option of SORT denied due to insufficient ACL permissions.")
                            ))
                    }
                }
                j += 1
            case "get" where left >= 1:
                guard fullKeyAccess else {
                    return .failure(
                        SortFailure(
                            CommandProcessor.err(
                                "GET option of SORT denied due to insufficient ACL permissions.")))
                }
                q.gets.append(args[j + 1])
                j += 1
            default:
                return .failure(SortFailure(CommandProcessor.syntax))
            }
            j += 1
        }
        return .success(q)
    }

    /// Whether running it reads keys other than `key`: a BY pattern it sorts by, or a GET
    /// pattern with `*` (a GET without `*` finds nothing, `GET #` is the element).
    var readsOtherKeys: Bool {
        (!dontSort && by != nil) || gets.contains { !SortEngine.isHash($0) && SortEngine.star(in: $0) != nil }
    }
}

/// A SORT refused with this reply.
struct SortFailure: Error, Sendable, Equatable {
    var reply: RESPValue
    init(_ reply: RESPValue) { self.reply = reply }
}

/// Redis 7.0's sort.c, pure: the steps of one SORT between its reads. `lookup` answers a key's
/// value (nil: absent), from reads made by the caller.
enum SortEngine {
    /// The elements to sort or answer, and the range of them that is the answer.
    struct Vector: Sendable, Equatable {
        var elements: [[UInt8]]
        /// The answer is `elements[start...end]` (empty when `end < start`).
        var start: Int
        var end: Int
        /// Whether they still need sorting (false: native order, or already sorted).
        var sort: Bool
        var alpha: Bool
        var by: [UInt8]?

        /// The answer's elements.
        var answer: [[UInt8]] { end >= start ? Array(elements[start...end]) : [] }
    }

    static let asterisk = UInt8(ascii: "*")

    /// The index of the pattern's `*`, read as Redis reads it (a C string: up to its first zero
    /// byte); nil when there is none.
    static func star(in pattern: [UInt8]) -> Int? {
        for (i, c) in pattern.enumerated() {
            if c == 0 { return nil }
            if c == asterisk { return i }
        }
        return nil
    }

    /// `GET #`: the element itself.
    static func isHash(_ pattern: [UInt8]) -> Bool {
        pattern.first == UInt8(ascii: "#") && (pattern.count == 1 || pattern[1] == 0)
    }

    /// The key (and hash field, for `key->field`) a pattern names for `element`: Redis's
    /// `lookupKeyByPattern`. Nil when the pattern has no `*` (it names nothing), or when the key is
    /// one no command may read (a service's `\0` key) or could hold (longer than a key may be).
    static func substitute(_ pattern: [UInt8], _ element: [UInt8]) -> (key: [UInt8], field: [UInt8]?)? {
        guard let p = star(in: pattern) else { return nil }
        let cLength = pattern.firstIndex(of: 0) ?? pattern.count
        var fieldLength = 0
        // "->" after the `*`, followed by at least one byte of the C string: a hash field.
        var f = p + 1
        while f + 1 < cLength {
            if pattern[f] == UInt8(ascii: "-") && pattern[f + 1] == UInt8(ascii: ">") { break }
            f += 1
        }
        if f + 1 < cLength, f + 2 < cLength { fieldLength = pattern.count - f - 2 }
        let postfix = pattern.count - (p + 1) - (fieldLength > 0 ? fieldLength + 2 : 0)
        let key = Array(pattern[..<p]) + element + Array(pattern[(p + 1)..<(p + 1 + postfix)])
        guard key.first != 0, key.count <= ReplicaNode.keyBytesMax else { return nil }
        return (key, fieldLength > 0 ? Array(pattern[(f + 2)...]) : nil)
    }

    /// The value a pattern names for `element`: a string key's bytes, a hash's field; nil when
    /// absent or of another kind.
    static func value(
        _ pattern: [UInt8], _ element: [UInt8], _ lookup: ([UInt8]) -> StoredValue?
    ) -> [UInt8]? {
        if isHash(pattern) { return element }
        guard let (key, field) = substitute(pattern, element), let v = lookup(key) else { return nil }
        guard let field else { return v.kind == .string ? v.bytes : nil }
        guard v.kind == .hash else { return nil }
        let items = DataModel.decodeItems(v.bytes)
        var k = 0
        while k + 1 < items.count {
            if items[k] == field { return items[k + 1] }
            k += 2
        }
        return nil
    }

    /// Step 1, from the sorted key's value: its elements (in native order, or the native-order
    /// range LIMIT asks for), and the answer's range. WRONGTYPE for a key that is not a list, set
    /// or sorted set.
    static func vector(_ q: SortQuery, _ v: StoredValue?) -> Result<Vector, SortFailure> {
        var all: [[UInt8]] = []
        var kind = ValueKind.list
        if let v {
            kind = v.kind
            switch v.kind {
            case .list, .set: all = DataModel.decodeItems(v.bytes)
            case .zset: all = DataModel.decodeZSet(v.bytes).map(\.member)
            default: return .failure(SortFailure(CommandProcessor.wrongType))
            }
        }
        var dontSort = q.dontSort
        var alpha = q.alpha
        var by = q.by
        // A set in no order, stored: sorted by ALPHA so that the stored list is deterministic.
        if dontSort && kind == .set && q.store != nil {
            dontSort = false
            alpha = true
            by = nil
        }
        let n = all.count
        var start = min(max(q.limitStart, 0), n)
        let count = min(max(q.limitCount, -1), n)
        var end = count < 0 ? n - 1 : start + count - 1
        if start >= n {
            start = n - 1
            end = n - 2
        }
        if end >= n { end = n - 1 }
        if dontSort && (kind == .list || kind == .zset) {
            // Native order (a sorted set's by score), DESC from the other end, LIMIT's range only.
            let length = max(0, end - start + 1)
            var picked: [[UInt8]] = []
            picked.reserveCapacity(length)
            for i in 0..<length {
                picked.append(q.desc ? all[n - 1 - start - i] : all[start + i])
            }
            return .success(
                Vector(elements: picked, start: 0, end: length - 1, sort: false, alpha: alpha, by: by))
        }
        return .success(Vector(elements: all, start: start, end: end, sort: !dontSort, alpha: alpha, by: by))
    }

    /// The keys BY reads for `v` (before `order`).
    static func byKeys(_ v: Vector) -> [[UInt8]] {
        guard v.sort, let by = v.by else { return [] }
        return v.elements.compactMap { substitute(by, $0)?.key }
    }

    /// Step 2: sorts `v` as Redis does (numeric: by the values as doubles, ties by the elements'
    /// bytes; ALPHA: by bytes, missing BY values first). A value that is not a double: Redis's
    /// error, `v` left unsorted.
    static func order(
        _ v: inout Vector, desc: Bool, _ lookup: ([UInt8]) -> StoredValue?
    ) -> SortFailure? {
        guard v.sort else { return nil }
        let by = v.by
        var keyed: [(element: [UInt8], score: Double, compare: [UInt8]?)] = []
        keyed.reserveCapacity(v.elements.count)
        for e in v.elements {
            var item = (element: e, score: 0.0, compare: [UInt8]?.none)
            let byValue = by.map { value($0, e, lookup) } ?? .some(e)
            if let byValue {
                if v.alpha {
                    if by != nil { item.compare = byValue }
                } else {
                    guard let d = score(byValue) else {
                        return SortFailure(
                            CommandProcessor.err("One or more scores can't be converted into double"))
                    }
                    item.score = d
                }
            }
            keyed.append(item)
        }
        let (alpha, byPattern) = (v.alpha, by != nil)
        typealias Keyed = (element: [UInt8], score: Double, compare: [UInt8]?)
        func compare(_ a: Keyed, _ b: Keyed) -> Int {
            if !alpha {
                if a.score > b.score { return 1 }
                if a.score < b.score { return -1 }
                return bytes(a.element, b.element)
            }
            guard byPattern else { return bytes(a.element, b.element) }
            switch (a.compare, b.compare) {
            case (nil, nil): return 0
            case (nil, _): return -1
            case (_, nil): return 1
            case (let x?, let y?): return bytes(x, y)
            }
        }
        keyed.sort { desc ? compare($0, $1) > 0 : compare($0, $1) < 0 }
        v.elements = keyed.map(\.element)
        v.sort = false
        return nil
    }

    /// The keys the GET patterns read for the answer's elements.
    static func getKeys(_ gets: [[UInt8]], _ answer: [[UInt8]]) -> [[UInt8]] {
        gets.flatMap { g in isHash(g) ? [] : answer.compactMap { substitute(g, $0)?.key } }
    }

    /// Step 3: the answer — the elements, or for each element each GET pattern's value (nil: not
    /// found).
    static func output(_ gets: [[UInt8]], _ answer: [[UInt8]], _ lookup: ([UInt8]) -> StoredValue?)
        -> [[UInt8]?]
    {
        guard !gets.isEmpty else { return answer }
        return answer.flatMap { e in gets.map { value($0, e, lookup) } }
    }

    /// All steps on values at hand (the one-key form, and tests).
    static func run(_ q: SortQuery, _ v: StoredValue?, _ lookup: ([UInt8]) -> StoredValue?) -> Result<
        [[UInt8]?], SortFailure
    > {
        switch vector(q, v) {
        case .failure(let f): return .failure(f)
        case .success(var vec):
            if let f = order(&vec, desc: q.desc, lookup) { return .failure(f) }
            return .success(output(q.gets, vec.answer, lookup))
        }
    }

    /// Redis's comparison of two strings' bytes (`compareStringObjects`): -1, 0 or 1.
    static func bytes(_ a: [UInt8], _ b: [UInt8]) -> Int {
        if a == b { return 0 }
        return a.lexicographicallyPrecedes(b) ? -1 : 1
    }

    /// A value as SORT reads a number: C's `strtod` over the whole string (up to a zero byte),
    /// refusing trailing bytes, a value out of range and NaN — Redis's rule, so `" 1"`, `"0x10"`,
    /// `"inf"` and `""` (0) are numbers.
    static func score(_ b: [UInt8]) -> Double? {
        let c = Array(b.prefix { $0 != 0 }) + [0]
        return c.withUnsafeBufferPointer { p -> Double? in
            guard let base = p.baseAddress else { return nil }
            let text = UnsafeRawPointer(base).assumingMemoryBound(to: CChar.self)
            var end: UnsafeMutablePointer<CChar>?
            errno = 0
            let d = strtod(text, &end)
            guard let end, end.pointee == 0, errno != ERANGE, !d.isNaN else { return nil }
            return d
        }
    }

    /// The RESP answer of the elements (or GET values).
    static func reply(_ out: [[UInt8]?]) -> RESPValue { .array(out.map { .bulkString($0) }) }

    /// `COMMAND GETKEYS`' and the ACL's keys of a SORT: the key and the last STORE's destination
    /// (Redis's `sortGetKeys`); nil for other commands.
    static func keyPositions(_ name: String, _ args: [[UInt8]]) -> [Int]? {
        guard name == "sort" || name == "sort_ro", args.count >= 2 else { return nil }
        guard name == "sort" else { return [1] }
        var store: Int?
        var i = 2
        while i < args.count {
            switch CommandProcessor.word(args[i]) {
            case "limit": i += 2
            case "get", "by": i += 1
            case "store" where i + 1 < args.count: store = i + 1
            default: break
            }
            i += 1
        }
        return [1] + (store.map { [$0] } ?? [])
    }
}

extension CommandProcessor {
    /// SORT/SORT_RO as a data call when it reads only its key (no BY or GET pattern, no STORE):
    /// one linearizable read, answered here; it joins a transaction as a read of its key. Errors
    /// are answered at once. Nil: not SORT, or the form that reads other keys or stores, which
    /// `KeyspaceService.sortPlan` runs (refused inside MULTI).
    func sortPlanned(_ name: String, _ args: [[UInt8]], _ session: Session) -> DataPlanned? {
        guard name == "sort" || name == "sort_ro" else { return nil }
        guard args.count >= 2 else { return .reply(Self.arity(name)) }
        let full = access.table.users[session.user]?.permits(key: Array("*".utf8)) ?? true
        let q: SortQuery
        switch SortQuery.parse(args, readonly: name == "sort_ro", fullKeyAccess: full) {
        case .failure(let f): return .reply(f.reply)
        case .success(let parsed): q = parsed
        }
        guard !q.readsOtherKeys && q.store == nil else {
            guard session.transaction == nil else {
                return .reply(
                    Self.err(
                        "SORT with STORE, or with a BY or GET pattern, cannot run inside a Tern transaction: "
                            + "it reads or writes keys other than its own (docs/DATA.md, SORT)"))
            }
            return nil
        }
        return .call(
            DataCall(key: q.key, args: [Self.b("dumpvalue"), q.key], write: false) { r in
                let v: StoredValue?
                switch r {
                case .array(nil): v = nil
                case .array(let parts?) where parts.count == 3:
                    guard case .integer(let kind) = parts[0], case .integer(let deadline) = parts[1],
                        case .bulk(let bytes?) = parts[2],
                        let k = ValueKind(rawValue: UInt8(truncatingIfNeeded: kind))
                    else { return Self.err("unexpected value") }
                    v = StoredValue(kind: k, deadlineMs: UInt64(max(0, deadline)), bytes: bytes)
                case .error(let text): return .error(text)
                default: return Self.err("unexpected value")
                }
                switch SortEngine.run(q, v, { _ in nil }) {
                case .failure(let f): return f.reply
                case .success(let out): return SortEngine.reply(out)
                }
            })
    }
}

extension KeyspaceService {
    /// Redis 7.0's entries: the sorted key, and the keys BY/GET and STORE name (COMMAND INFO's
    /// `unknown` specs, with Redis's notes).
    static let sortSpecs: [CommandSpec] = {
        func unknown(_ notes: String, _ flags: [String]) -> RESPValue {
            .map([
                .bulkString("notes"), .bulkString(notes), .bulkString("flags"),
                .set(flags.map { .simpleString($0) }), .bulkString("begin_search"),
                .map([.bulkString("type"), .bulkString("unknown"), .bulkString("spec"), .map([])]),
                .bulkString("find_keys"),
                .map([.bulkString("type"), .bulkString("unknown"), .bulkString("spec"), .map([])]),
            ])
        }
        let byGet = unknown(
            "For the optional BY/GET keyword. It is marked 'unknown' because the key names derive from the "
                + "content of the key we sort", ["RO", "access"])
        let store = unknown(
            "For the optional STORE keyword. It is marked 'unknown' because the keyword can appear anywhere "
                + "in the argument array", ["OW", "update"])
        var sort = CommandSpec(
            "sort", arity: -2, flags: ["write", "denyoom", "movablekeys"], keys: (1, 1, 1),
            categories: ["@write", "@set", "@sortedset", "@list", "@slow", "@dangerous"],
            keySpec: ["RO", "access"],
            summary:
                "Sort the elements in a list, set or sorted set, optionally storing the result "
                + "(BY/GET/STORE not atomic across keys in Tern, docs/DATA.md).",
            group: "generic")
        sort.extraKeySpecs = [byGet, store]
        var ro = CommandSpec(
            "sort_ro", arity: -2, flags: ["readonly", "movablekeys"], keys: (1, 1, 1),
            categories: ["@read", "@set", "@sortedset", "@list", "@slow", "@dangerous"],
            keySpec: ["RO", "access"],
            summary:
                "Returns the sorted elements of a list, a set, or a sorted set (BY/GET not one snapshot "
                + "in Tern, docs/DATA.md).",
            since: "7.0.0", group: "generic")
        ro.extraKeySpecs = [byGet]
        return [sort, ro]
    }()

    /// SORT/SORT_RO that read other keys (BY/GET patterns) or store: rounds of linearizable
    /// reads — the key; the BY keys; the GET keys of the answer — then the destination written as
    /// a list (deleted when the answer is empty), raising `sortstore`. Not atomic: the reads are
    /// not one snapshot, and a write between the reads and the store is not reflected.
    func sortPlan(_ name: String, _ args: [[UInt8]], _ session: Session) -> CommandPlan? {
        guard name == "sort" || name == "sort_ro" else { return nil }
        guard args.count >= 2 else { return .reply(CommandProcessor.arity(name)) }
        let q: SortQuery
        switch SortQuery.parse(args, readonly: name == "sort_ro") {
        case .failure(let f): return .reply(f.reply)
        case .success(let parsed): q = parsed
        }
        return barrier { self.sort(q) }
    }

    func sort(_ q: SortQuery) -> EventLoopFuture<RESPValue> {
        let loop = node.eventLoop
        return read(q.key).flatMap { value -> EventLoopFuture<RESPValue> in
            var vec: SortEngine.Vector
            switch SortEngine.vector(q, value) {
            case .failure(let f): return loop.makeSucceededFuture(f.reply)
            case .success(let v): vec = v
            }
            return self.readKeys(SortEngine.byKeys(vec)).flatMap { byValues -> EventLoopFuture<RESPValue> in
                if let f = SortEngine.order(&vec, desc: q.desc, { byValues[$0] ?? nil }) {
                    return loop.makeSucceededFuture(f.reply)
                }
                let answer = vec.answer
                return self.readKeys(SortEngine.getKeys(q.gets, answer)).flatMap { getValues in
                    let out = SortEngine.output(q.gets, answer, { getValues[$0] ?? nil })
                    guard let dest = q.store else { return loop.makeSucceededFuture(SortEngine.reply(out)) }
                    // A GET that found nothing stores an empty string (Redis).
                    let items = out.map { $0 ?? [] }
                    return self.store(
                        dest, .list, items.isEmpty ? nil : DataModel.encodeItems(items), event: "sortstore"
                    ).map { .integer(Int64(items.count)) }
                }
            }
        }
    }

    /// Reads `keys` (each once, linearizably, at most `sortReadBatch` at a time): their values.
    func readKeys(_ keys: [[UInt8]]) -> EventLoopFuture<[[UInt8]: StoredValue?]> {
        var seen = Set<[UInt8]>()
        let unique = keys.filter { seen.insert($0).inserted }
        @Sendable func from(_ at: Int, _ acc: [[UInt8]: StoredValue?]) -> EventLoopFuture<
            [[UInt8]: StoredValue?]
        > {
            guard at < unique.count else { return node.eventLoop.makeSucceededFuture(acc) }
            let batch = Array(unique[at..<min(unique.count, at + Self.sortReadBatch)])
            return readAll(batch).flatMap { values in
                var next = acc
                for (k, v) in zip(batch, values) { next[k] = .some(v) }
                return from(at + batch.count, next)
            }
        }
        return from(0, [:])
    }

    /// The most reads a SORT has in flight at once.
    static let sortReadBatch = 1024
}
