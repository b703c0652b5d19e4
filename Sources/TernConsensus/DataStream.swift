// Redis Streams in the data model (docs/QUEUE.md): a stream is one key's value, held whole like
// the other collections, with its entries, its consumer groups and their pending entries (PEL).
// Pure: the time a command needs (`*` ids, delivery times, idle) is the clock of the node that
// received the command, carried in the normalised arguments; the proposer applies it.
import TernCore

/// A stream entry id: milliseconds and a sequence number, ordered as Redis orders them.
public struct StreamID: Comparable, Hashable, Sendable, CustomStringConvertible {
    public var ms: UInt64
    public var seq: UInt64
    public init(_ ms: UInt64, _ seq: UInt64) {
        self.ms = ms
        self.seq = seq
    }
    public static let zero = StreamID(0, 0)
    public static let max = StreamID(.max, .max)
    public static func < (a: StreamID, b: StreamID) -> Bool { a.ms != b.ms ? a.ms < b.ms : a.seq < b.seq }
    public var description: String { "\(ms)-\(seq)" }
    var bytes: [UInt8] { Array(description.utf8) }
    /// The id just after this one (nil at the largest).
    public var next: StreamID? {
        if seq < .max { return StreamID(ms, seq + 1) }
        return ms < .max ? StreamID(ms + 1, 0) : nil
    }
    /// The id just before this one (nil at 0-0).
    public var previous: StreamID? {
        if seq > 0 { return StreamID(ms, seq - 1) }
        return ms > 0 ? StreamID(ms - 1, .max) : nil
    }

    /// Redis's `streamGenericParseIDOrReply`: `ms-seq`, or `ms` with `missingSeq`; `-` and `+`
    /// the ends unless `strict`.
    public static func parse(_ b: [UInt8], missingSeq: UInt64 = 0, strict: Bool = false) -> StreamID? {
        if b.count == 1 && !strict {
            if b[0] == UInt8(ascii: "-") { return .zero }
            if b[0] == UInt8(ascii: "+") { return .max }
        }
        guard b.count <= 127 else { return nil }
        if let dash = b.firstIndex(of: UInt8(ascii: "-")) {
            guard let ms = unsigned(Array(b[..<dash])), let seq = unsigned(Array(b[(dash + 1)...])) else {
                return nil
            }
            return StreamID(ms, seq)
        }
        return unsigned(b).map { StreamID($0, missingSeq) }
    }

    /// Redis's `string2ull`: digits only, within 64 bits.
    static func unsigned(_ b: [UInt8]) -> UInt64? {
        guard !b.isEmpty, b.count <= 20, b.allSatisfy({ $0 >= 48 && $0 <= 57 }) else { return nil }
        return UInt64(String(decoding: b, as: UTF8.self))
    }
}

/// One stream: entries in id order, the id counters, and the consumer groups.
public struct StreamValue: Sendable, Hashable {
    public struct Entry: Sendable, Hashable {
        public var id: StreamID
        /// field, value, field, value …
        public var fields: [[UInt8]]
    }
    /// A pending entry: delivered to `consumer`, not acknowledged yet.
    public struct Pending: Sendable, Hashable {
        public var id: StreamID
        public var consumer: [UInt8]
        public var deliveryMs: UInt64
        public var deliveries: UInt64
    }
    public struct Consumer: Sendable, Hashable {
        public var name: [UInt8]
        public var seenMs: UInt64
    }
    public struct Group: Sendable, Hashable {
        public var name: [UInt8]
        public var lastID: StreamID
        /// Redis's `entries_read`; -1 when unknown.
        public var entriesRead: Int64
        /// The group's PEL, in id order.
        public var pending: [Pending] = []
        /// In name order (Redis's rax order).
        public var consumers: [Consumer] = []

        func pendingIndex(_ id: StreamID) -> (found: Bool, at: Int) {
            let lo = pending.partitionPoint { $0.id < id }
            return (lo < pending.count && pending[lo].id == id, lo)
        }
        func consumerIndex(_ name: [UInt8]) -> (found: Bool, at: Int) {
            let lo = consumers.partitionPoint { $0.name.lexicographicallyPrecedes(name) }
            return (lo < consumers.count && consumers[lo].name == name, lo)
        }
        /// The consumer `name` (created if absent), its seen time set to `nowMs`.
        mutating func touch(_ name: [UInt8], nowMs: UInt64) {
            let (found, at) = consumerIndex(name)
            if found {
                consumers[at].seenMs = nowMs
            } else {
                consumers.insert(Consumer(name: name, seenMs: nowMs), at: at)
            }
        }
        func pendingCount(of consumer: [UInt8]) -> Int {
            pending.reduce(0) { $0 + ($1.consumer == consumer ? 1 : 0) }
        }
    }

    public var entries: [Entry] = []
    public var lastID = StreamID.zero
    public var maxDeletedID = StreamID.zero
    public var entriesAdded: UInt64 = 0
    /// In name order.
    public var groups: [Group] = []
    /// XADD IDMP's memory, oldest first (StreamIdempotency.swift).
    public var idempotent: [IdempotentAdd] = []

    public init() {}

    public var firstID: StreamID { entries.first?.id ?? .zero }

    /// Index of the first entry with id >= `id`.
    func lowerBound(_ id: StreamID) -> Int { entries.partitionPoint { $0.id < id } }
    func entry(_ id: StreamID) -> Entry? {
        let i = lowerBound(id)
        return i < entries.count && entries[i].id == id ? entries[i] : nil
    }
    func groupIndex(_ name: [UInt8]) -> (found: Bool, at: Int) {
        let lo = groups.partitionPoint { $0.name.lexicographicallyPrecedes(name) }
        return (lo < groups.count && groups[lo].name == name, lo)
    }
    func group(_ name: [UInt8]) -> Group? {
        let (found, at) = groupIndex(name)
        return found ? groups[at] : nil
    }

    /// Entries with ids in `from...to`, at most `count` (nil: all); reversed from `to` when `rev`.
    func range(_ from: StreamID, _ to: StreamID, count: Int?, rev: Bool = false) -> ArraySlice<Entry> {
        guard from <= to, count != 0 else { return [] }
        let lo = lowerBound(from)
        var hi = lowerBound(to)
        if hi < entries.count && entries[hi].id == to { hi += 1 }
        guard lo < hi else { return [] }
        if rev {
            let n = count.map { Swift.min($0, hi - lo) } ?? (hi - lo)
            return ArraySlice(entries[(hi - n)..<hi].reversed())
        }
        let n = count.map { Swift.min($0, hi - lo) } ?? (hi - lo)
        return entries[lo..<(lo + n)]
    }

    // MARK: Codec

    /// `u32 n | (u64 ms, u64 seq, u32 k, blob…)… | last | maxDeleted | u64 added | u32 groups |
    /// (blob name, last, u64 entriesRead, u32 p, (id, blob consumer, u64 time, u64 count)…,
    /// u32 c, (blob name, u64 seen)…)… [| u8 1 | XADD IDMP's memory]`.
    public var encoded: [UInt8] { StreamCodec.encode(self, reusing: nil).bytes }

    /// Decodes `encoded`; nil when the bytes are not a stream's.
    public init?(_ bytes: [UInt8]) {
        guard let d = StreamCodec.decode(bytes) else { return nil }
        self = d.value
    }

    // MARK: Redis's counters (entries_read, lag)

    /// Redis's `streamRangeHasTombstones(s, start, NULL)`.
    func hasTombstones(from start: StreamID) -> Bool {
        guard !entries.isEmpty, maxDeletedID != .zero, firstID <= maxDeletedID else { return false }
        return start <= maxDeletedID
    }

    /// Redis's `streamEstimateDistanceFromFirstEverEntry`; -1 when unknown.
    func estimateEntriesRead(_ id: StreamID) -> Int64 {
        if entriesAdded == 0 { return 0 }
        if entries.isEmpty && id <= lastID { return Int64(entriesAdded) }
        if id == lastID { return Int64(entriesAdded) }
        if id > lastID { return -1 }
        if maxDeletedID == .zero || maxDeletedID < firstID {
            if id < firstID { return Int64(entriesAdded) - Int64(entries.count) }
            if id == firstID { return Int64(entriesAdded) - Int64(entries.count) + 1 }
        }
        return -1
    }

    /// A group's lag (nil: Redis's null, unknown).
    func lag(_ g: Group) -> Int64? {
        if entriesAdded == 0 { return 0 }
        if g.entriesRead != -1 && !hasTombstones(from: g.lastID) {
            return Int64(entriesAdded) - g.entriesRead
        }
        let read = estimateEntriesRead(g.lastID)
        return read == -1 ? nil : Int64(entriesAdded) - read
    }
}

/// A parse's result: the value, or the error reply (`DataReply` is not an `Error`).
public enum StreamParsed<T> {
    case success(T)
    case failure(DataReply)
}

/// How XADD and XTRIM trim: `MAXLEN`/`MINID`, `=` or `~`, `LIMIT`.
public struct StreamTrim: Sendable, Hashable {
    public var maxLen: Int64?
    public var minID: StreamID?
    public var approximate = false
    /// At most this many entries removed (0: no limit).
    public var limit: Int64 = 0
    /// Redis's `stream-node-max-entries` when the command was planned: `~` removes whole nodes of
    /// this many entries (0: Redis closes nodes by bytes only; Tern then counts nodes of 100).
    public var nodeEntries = DataModel.streamNodeEntries
}

extension DataModel {
    static let badStreamID = DataReply.err("Invalid stream ID specified as stream command argument")
    static func streamWord(_ b: [UInt8]) -> String { String(decoding: b, as: UTF8.self).lowercased() }

    /// Redis's `streamParseAddOrTrimArgsOrReply`: the trim options from `args[from...]` and, for
    /// XADD, NOMKSTREAM and Redis 8.6's IDMP/IDMPAUTO; returns where the id is (XADD) or the end.
    public static func parseStreamTrim(
        _ args: [[UInt8]], from: Int, xadd: Bool, nodeEntries: Int = streamNodeEntries
    )
        -> StreamParsed<(trim: StreamTrim?, noMkStream: Bool, idAt: Int, idmp: StreamIdempotencyOption?)>
    {
        var trim = StreamTrim()
        trim.nodeEntries = nodeEntries
        var strategy = false
        var limitGiven = false
        var noMk = false
        var idmp: StreamIdempotencyOption?
        var i = from
        while i < args.count {
            let more = args.count - i - 1
            let o = streamWord(args[i])
            if xadd && o == "nomkstream" {
                noMk = true
            } else if xadd && ((o == "idmp" && more >= 2) || (o == "idmpauto" && more >= 1)) {
                // Redis 8.6's texts (tests/unit/type/stream.tcl, "XADD IDMP with invalid syntax").
                if idmp != nil { return .failure(.err("IDMP/IDMPAUTO specified multiple times")) }
                let producer = args[i + 1]
                if producer.isEmpty {
                    return .failure(.err("\(o.uppercased()) requires a non-empty producer ID"))
                }
                if o == "idmp" {
                    guard !args[i + 2].isEmpty else {
                        return .failure(.err("IDMP requires a non-empty idempotent ID"))
                    }
                    idmp = .given(producer: producer, iid: args[i + 2])
                    i += 2
                } else {
                    idmp = .auto(producer: producer)
                    i += 1
                }
            } else if (o == "maxlen" || o == "minid") && more >= 1 {
                if strategy {
                    return .failure(
                        .err("syntax error, MAXLEN and MINID options at the same time are not compatible"))
                }
                var next = args[i + 1]
                if more >= 2 && (next == [UInt8(ascii: "~")] || next == [UInt8(ascii: "=")]) {
                    trim.approximate = next == [UInt8(ascii: "~")]
                    i += 1
                    next = args[i + 1]
                }
                if o == "maxlen" {
                    guard let n = int(next) else { return .failure(.notInteger) }
                    guard n >= 0 else { return .failure(.err("The MAXLEN argument must be >= 0.")) }
                    trim.maxLen = n
                } else {
                    guard let id = StreamID.parse(next) else { return .failure(badStreamID) }
                    trim.minID = id
                }
                strategy = true
                i += 1
            } else if o == "limit" && more >= 1 {
                guard let n = int(args[i + 1]) else { return .failure(.notInteger) }
                guard n >= 0 else { return .failure(.err("The LIMIT argument must be >= 0.")) }
                trim.limit = n
                limitGiven = true
                i += 1
            } else if xadd {
                // The id, checked here as Redis does (before LIMIT's errors and the arity).
                let a = args[i]
                let msStar = a.count >= 2 && a.suffix(2) == [UInt8(ascii: "-"), UInt8(ascii: "*")]
                if a != [UInt8(ascii: "*")]
                    && (msStar
                        ? StreamID.unsigned(Array(a.dropLast(2))) == nil
                        : StreamID.parse(a, strict: true) == nil)
                {
                    return .failure(badStreamID)
                }
                if idmp != nil && a != [UInt8(ascii: "*")] {
                    return .failure(.err("IDMP/IDMPAUTO can be used only with auto-generated IDs"))
                }
                break
            } else {
                return .failure(.syntax)
            }
            i += 1
        }
        if limitGiven {
            if !strategy {
                return .failure(
                    .err("syntax error, LIMIT cannot be used without specifying a trimming strategy"))
            }
            if !trim.approximate {
                return .failure(.err("syntax error, LIMIT cannot be used without the special ~ option"))
            }
        } else if trim.approximate {
            // Redis's default for `~`: 100 × stream-node-max-entries (10 000 when that is 0).
            let (product, overflow) = Int64(nodeEntries).multipliedReportingOverflow(by: 100)
            trim.limit = nodeEntries <= 0 ? 10_000 : (overflow ? 0 : product)
        }
        if !xadd && !strategy { return .failure(.syntax) }
        return .success((strategy ? trim : nil, noMk, i, idmp))
    }

    /// Redis's default `stream-node-max-entries`: `~` trims whole nodes of this many entries.
    public static let streamNodeEntries = 100

    /// A stream write's bounds argument: `limit` (the backlog bound, stream_max_entries) or
    /// `limit:nodeEntries` when CONFIG SET stream-node-max-entries changed the node size from 100.
    public static func streamBounds(_ b: [UInt8]) -> (limit: Int64, nodeEntries: Int)? {
        guard let colon = b.firstIndex(of: UInt8(ascii: ":")) else {
            return int(b).map { ($0, streamNodeEntries) }
        }
        guard let limit = int(Array(b[..<colon])), let node = int(Array(b[(colon + 1)...])), node >= 0 else {
            return nil
        }
        return (limit, Int(clamping: node))
    }

    /// Removes entries by `trim`; answers how many were removed. `=` trims exactly (LIMIT is
    /// refused with it). `~` removes only whole nodes as Redis does, nodes of
    /// `stream-node-max-entries` (100 by default) in insertion order (Redis's nodes also close at 4 KiB and keep deleted entries'
    /// places, so on big or holed streams its count may differ; both keep at least the
    /// threshold), and at most LIMIT entries.
    static func trimStream(_ s: inout StreamValue, _ trim: StreamTrim) -> Int {
        var n = 0
        if let m = trim.maxLen, s.entries.count > Int(clamping: m) {
            n = s.entries.count - Int(clamping: m)
        } else if let id = trim.minID {
            n = s.lowerBound(id)
        }
        if trim.limit > 0 { n = min(n, Int(clamping: trim.limit)) }
        if trim.approximate {
            // Redis's nodes are filled in insertion order: the first entry's node ends where its
            // place (entries added before it) reaches a multiple of the node size; only whole
            // nodes go. (XDEL's holes are not counted here: Redis keeps their places.)
            let node = trim.nodeEntries > 0 ? trim.nodeEntries : streamNodeEntries
            let first = max(0, Int(clamping: s.entriesAdded) - s.entries.count)
            let toBoundary = node - first % node
            n = n < toBoundary ? 0 : toBoundary + (n - toBoundary) / node * node
        }
        if n > 0 { s.entries.removeFirst(n) }
        return n
    }

    /// The id an XADD gives: `*` (from `nowMs`, never below the last), `ms-*`, or explicit.
    static func streamNextID(_ s: StreamValue, _ spec: [UInt8], nowMs: UInt64) -> StreamParsed<StreamID> {
        let equalOrSmaller = DataReply.err(
            "The ID specified in XADD is equal or smaller than the target stream top item")
        if s.lastID == .max {
            return .failure(.err("The stream has exhausted the last possible ID, unable to add more items"))
        }
        if spec == [UInt8(ascii: "*")] {
            if nowMs > s.lastID.ms { return .success(StreamID(nowMs, 0)) }
            return .success(s.lastID.next!)
        }
        if spec.count >= 2 && spec.suffix(2) == [UInt8(ascii: "-"), UInt8(ascii: "*")] {
            guard let ms = StreamID.unsigned(Array(spec.dropLast(2))) else { return .failure(badStreamID) }
            if ms == s.lastID.ms {
                guard s.lastID.seq < .max else { return .failure(equalOrSmaller) }
                return .success(StreamID(ms, s.lastID.seq + 1))
            }
            guard ms > s.lastID.ms else { return .failure(equalOrSmaller) }
            return .success(StreamID(ms, 0))
        }
        guard let id = StreamID.parse(spec, strict: true) else { return .failure(badStreamID) }
        if id == .zero { return .failure(.err("The ID specified in XADD must be greater than 0-0")) }
        guard id > s.lastID else { return .failure(equalOrSmaller) }
        return .success(id)
    }

    /// Appends one entry; the caller checked the id.
    static func streamAppend(_ s: inout StreamValue, _ id: StreamID, _ fields: [[UInt8]]) {
        s.entries.append(.init(id: id, fields: fields))
        s.lastID = id
        s.entriesAdded += 1
    }

    static func entryReply(_ e: StreamValue.Entry) -> DataReply {
        .array([.bulk(e.id.bytes), .array(e.fields.map { .bulk($0) })])
    }
    static func noGroup(_ key: [UInt8], _ group: [UInt8]) -> DataReply {
        .error("NOGROUP No such key '\(text(key))' or consumer group '\(text(group))'")
    }
    static func noGroupForKey(_ key: [UInt8], _ group: [UInt8]) -> DataReply {
        .error("NOGROUP No such consumer group '\(text(group))' for key name '\(text(key))'")
    }
    static func text(_ b: [UInt8]) -> String { String(decoding: b, as: UTF8.self) }
    static func backlogFull(_ key: [UInt8], limit: Int64) -> DataReply {
        .error(
            "OVERLOADED stream '\(text(key))' is at its backlog limit of \(limit) entries "
                + "(stream_max_entries): back off and retry later, or trim with MAXLEN/MINID")
    }

    // MARK: - Writes

    /// The stream writes, normalised by the server as `name key nowMs limit arg…` (`limit`: the
    /// backlog bound, stream_max_entries, and the node size after a colon when not 100; the rest
    /// as the client sent them, after the key).
    /// nil when `name` is not a stream write.
    static func applyStream(_ name: String, _ args: [[UInt8]], _ v: inout KeyValue) -> DataReply? {
        var decoded: StreamValue?
        return applyStream(name, args, &v, decoded: &decoded, encode: true)
    }

    /// `applyStream` on a stream already decoded: `decoded` is the stream `v` holds (nil: decode
    /// `v.bytes`). With `encode` false a change is left in `decoded` and `v.bytes` is not rewritten
    /// (a new stream's bytes are a placeholder): a transaction encodes once after a run of stream
    /// writes (`applyTransaction`). Re-encoding at every write made Redis's 10 000 XADDs in one
    /// MULTI quadratic: the proposer's loop was busy for minutes and the write lost its quorum.
    static func applyStream(
        _ name: String, _ args: [[UInt8]], _ v: inout KeyValue, decoded: inout StreamValue?, encode: Bool
    ) -> DataReply? {
        guard
            [
                "xadd", "xtrim", "xdel", "xsetid", "xgroup", "xreadgroup", "xack", "xclaim", "xautoclaim",
                "xackadd",
            ]
            .contains(name)
        else { return nil }
        guard args.count >= 4, let now = int(args[2]), let (limit, nodeEntries) = streamBounds(args[3]) else {
            return .syntax
        }
        if v.bytes != nil && v.kind != .stream { return .wrongType }
        let key = args[1]
        let rest = Array(args[4...])
        let nowMs = UInt64(max(0, now))
        // The stream as it is encoded now (from the cache when the previous write or instance
        // left it there: StreamCodec.swift), to start from and to copy unchanged entries from.
        let base = decoded == nil ? v.bytes.flatMap { StreamCodec.indexed($0) } : nil
        var s = decoded ?? base?.value ?? StreamValue()
        let exists = v.bytes != nil
        var reply: DataReply
        var changed = true
        switch name {
        case "xadd":
            // xadd [nomkstream] [trim] id field value …
            switch parseStreamTrim(rest, from: 0, xadd: true, nodeEntries: nodeEntries) {
            case .failure(let e): return e
            case .success(let (trim, noMk, at, idmp)):
                let fields = Array(rest[(at + 1)...])
                guard at < rest.count, fields.count >= 2, fields.count % 2 == 0 else {
                    return .err("wrong number of arguments for 'xadd' command")
                }
                if !exists && noMk { return .bulk(nil) }
                // IDMP: a pair the stream remembers answers its first id; nothing changes.
                let idmpKey = idmp?.key(fields: fields)
                if let idmpKey {
                    s.pruneIdempotent(nowMs: nowMs)
                    if let first = s.idempotentID(idmpKey) { return .bulk(first.bytes) }
                }
                switch streamNextID(s, rest[at], nowMs: nowMs) {
                case .failure(let e): return e
                case .success(let id):
                    streamAppend(&s, id, fields)
                    if let idmpKey { s.rememberIdempotent(idmpKey, id: id, nowMs: nowMs) }
                    if let trim { _ = trimStream(&s, trim) }
                    // At the backlog bound, `~` trims as far as its threshold exactly: a producer
                    // that trims is never refused because whole nodes could not go.
                    if limit > 0 && s.entries.count > Int(clamping: limit), var exact = trim,
                        exact.approximate
                    {
                        exact.approximate = false
                        _ = trimStream(&s, exact)
                    }
                    if limit > 0 && s.entries.count > Int(clamping: limit) {
                        return backlogFull(key, limit: limit)
                    }
                    reply = .bulk(id.bytes)
                }
            }
        case "xtrim":
            guard exists else {
                if case .failure(let e) = parseStreamTrim(rest, from: 0, xadd: false) { return e }
                return .integer(0)
            }
            switch parseStreamTrim(rest, from: 0, xadd: false, nodeEntries: nodeEntries) {
            case .failure(let e): return e
            case .success(let (trim, _, _, _)): reply = .integer(Int64(trimStream(&s, trim!)))
            }
        case "xdel":
            var ids: [StreamID] = []
            for b in rest {
                guard let id = StreamID.parse(b, strict: true) else { return badStreamID }
                ids.append(id)
            }
            guard exists else { return .integer(0) }
            var n: Int64 = 0
            for id in ids {
                let i = s.lowerBound(id)
                guard i < s.entries.count, s.entries[i].id == id else { continue }
                s.entries.remove(at: i)
                n += 1
                if id > s.maxDeletedID { s.maxDeletedID = id }
            }
            reply = .integer(n)
            changed = n > 0
        case "xsetid":
            reply = streamSetID(rest, &s, exists: exists)
        case "xgroup":
            reply = streamGroup(key, rest, &s, exists: exists, nowMs: nowMs)
        case "xreadgroup":
            // xreadgroup group consumer count noack id
            guard rest.count == 5 else { return .syntax }
            guard exists, s.group(rest[0]) != nil else {
                return .error(
                    "NOGROUP No such key '\(text(key))' or consumer group '\(text(rest[0]))' in XREADGROUP with GROUP option"
                )
            }
            reply = streamReadGroup(
                &s, group: rest[0], consumer: rest[1], count: Int(int(rest[2]) ?? 0), noAck: rest[3] == [49],
                idSpec: rest[4], nowMs: nowMs)
            // `>` with nothing new changes nothing (no consumer is created): the value is kept
            // as it is, not encoded again (a blocked worker's empty takes are frequent).
            if rest[4] == [UInt8(ascii: ">")], case .array(nil) = reply { changed = false }
        case "xack":
            var ids: [StreamID] = []
            for b in rest.dropFirst() {
                guard let id = StreamID.parse(b, strict: true) else { return badStreamID }
                ids.append(id)
            }
            guard exists, !rest.isEmpty else { return .integer(0) }
            let (found, g) = s.groupIndex(rest[0])
            guard found else { return .integer(0) }
            var n: Int64 = 0
            for id in ids {
                let (hit, at) = s.groups[g].pendingIndex(id)
                if hit {
                    s.groups[g].pending.remove(at: at)
                    n += 1
                }
            }
            reply = .integer(n)
            changed = n > 0
        case "xackadd":
            reply = streamAckAdd(key, rest, &s, exists: exists, nowMs: nowMs, limit: limit)
        case "xclaim":
            guard exists, s.group(rest.first ?? []) != nil else { return noGroup(key, rest.first ?? []) }
            reply = streamClaim(rest, &s, nowMs: nowMs)
        case "xautoclaim":
            reply = streamAutoClaim(key, rest, &s, exists: exists, nowMs: nowMs)
        default:
            return .syntax
        }
        if case .error = reply { return reply }
        if changed && (exists || name == "xadd" || name == "xgroup" || name == "xackadd") {
            v.kind = .stream
            if !exists { v.deadlineMs = 0 }
            if encode {
                let e = StreamCodec.encode(s, reusing: base)
                v.bytes = e.bytes
                StreamCodecCache.shared.store(e)
            } else {
                decoded = s
                if v.bytes == nil { v.bytes = [] }
            }
        }
        return reply
    }

    /// XSETID key last-id [ENTRIESADDED n] [MAXDELETEDID id].
    static func streamSetID(_ rest: [[UInt8]], _ s: inout StreamValue, exists: Bool) -> DataReply {
        guard let id = rest.first.flatMap({ StreamID.parse($0, strict: true) }) else { return badStreamID }
        var added: Int64 = -1
        var maxDel = StreamID.zero
        var i = 1
        while i < rest.count {
            let o = streamWord(rest[i])
            guard i + 1 < rest.count else { return .syntax }
            if o == "entriesadded" {
                guard let n = int(rest[i + 1]) else { return .notInteger }
                guard n >= 0 else { return .err("entries_added must be positive") }
                added = n
            } else if o == "maxdeletedid" {
                guard let d = StreamID.parse(rest[i + 1], strict: true) else { return badStreamID }
                guard id >= d else {
                    return .err(
                        "The ID specified in XSETID is smaller than the provided max_deleted_entry_id")
                }
                maxDel = d
            } else {
                return .syntax
            }
            i += 2
        }
        guard exists else { return .err("no such key") }
        // Redis's order: the top item first, then the length.
        if let last = s.entries.last, id < last.id {
            return .err("The ID specified in XSETID is smaller than the target stream top item")
        }
        if added != -1 && Int64(s.entries.count) > added {
            return .err("The entries_added specified in XSETID is smaller than the target stream length")
        }
        s.lastID = id
        if added != -1 { s.entriesAdded = UInt64(added) }
        if maxDel != .zero { s.maxDeletedID = maxDel }
        return .ok
    }

    /// XGROUP CREATE/SETID/DESTROY/CREATECONSUMER/DELCONSUMER (`rest`: sub, group, …).
    static func streamGroup(
        _ key: [UInt8], _ rest: [[UInt8]], _ s: inout StreamValue, exists: Bool, nowMs: UInt64
    )
        -> DataReply
    {
        guard rest.count >= 2 else { return .syntax }
        let sub = streamWord(rest[0])
        let name = rest[1]
        var mkStream = false
        var entriesRead: Int64 = -1
        func syntaxError() -> DataReply {
            .err("unknown subcommand or wrong number of arguments for '\(text(rest[0]))'. Try XGROUP HELP.")
        }
        if sub == "create" || sub == "setid" {
            var i = 3
            while i < rest.count {
                let o = streamWord(rest[i])
                if o == "mkstream" && sub == "create" {
                    mkStream = true
                    i += 1
                } else if o == "entriesread" && i + 1 < rest.count {
                    guard let n = int(rest[i + 1]) else { return .notInteger }
                    guard n >= 0 || n == -1 else {
                        return .err("value for ENTRIESREAD must be positive or -1")
                    }
                    entriesRead = n
                    i += 2
                } else {
                    return syntaxError()
                }
            }
        }
        if !exists && !mkStream {
            return .err(
                "The XGROUP subcommand requires the key to exist. Note that for CREATE you may want to use the "
                    + "MKSTREAM option to create an empty stream automatically.")
        }
        let (found, g) = s.groupIndex(name)
        if !found && ["setid", "createconsumer", "delconsumer"].contains(sub) {
            return noGroupForKey(key, name)
        }
        switch sub {
        case "create":
            guard rest.count >= 3 else { return syntaxError() }
            let id: StreamID
            if rest[2] == [UInt8(ascii: "$")] {
                id = s.lastID
            } else {
                guard let p = StreamID.parse(rest[2]) else { return badStreamID }
                id = p
            }
            if found { return .error("BUSYGROUP Consumer Group name already exists") }
            s.groups.insert(.init(name: name, lastID: id, entriesRead: entriesRead), at: g)
            return .ok
        case "setid":
            guard rest.count >= 3 else { return syntaxError() }
            let id: StreamID
            if rest[2] == [UInt8(ascii: "$")] {
                id = s.lastID
            } else {
                guard let p = StreamID.parse(rest[2]) else { return badStreamID }
                id = p
            }
            s.groups[g].lastID = id
            s.groups[g].entriesRead = entriesRead
            return .ok
        case "destroy":
            guard found else { return .integer(0) }
            s.groups.remove(at: g)
            return .integer(1)
        case "createconsumer":
            guard rest.count == 3 else { return syntaxError() }
            if s.groups[g].consumerIndex(rest[2]).found { return .integer(0) }
            s.groups[g].touch(rest[2], nowMs: nowMs)
            return .integer(1)
        case "delconsumer":
            guard rest.count == 3 else { return syntaxError() }
            let (cf, c) = s.groups[g].consumerIndex(rest[2])
            guard cf else { return .integer(0) }
            let before = s.groups[g].pending.count
            s.groups[g].pending.removeAll { $0.consumer == rest[2] }
            s.groups[g].consumers.remove(at: c)
            return .integer(Int64(before - s.groups[g].pending.count))
        default:
            return syntaxError()
        }
    }

    /// XREADGROUP on one stream: `>` delivers new entries (into the PEL unless `noAck`); another
    /// id reads the consumer's own pending entries after it (history).
    static func streamReadGroup(
        _ s: inout StreamValue, group: [UInt8], consumer: [UInt8], count: Int, noAck: Bool, idSpec: [UInt8],
        nowMs: UInt64
    ) -> DataReply {
        let (_, g) = s.groupIndex(group)
        if idSpec == [UInt8(ascii: ">")] {
            guard let from = s.groups[g].lastID.next else { return .array(nil) }
            let batch = s.range(from, .max, count: count > 0 ? count : nil)
            guard !batch.isEmpty else { return .array(nil) }
            s.groups[g].touch(consumer, nowMs: nowMs)
            for e in batch {
                if s.groups[g].entriesRead != -1 && !s.hasTombstones(from: e.id) {
                    s.groups[g].entriesRead += 1
                } else if s.entriesAdded > 0 {
                    s.groups[g].entriesRead = s.estimateEntriesRead(e.id)
                }
                s.groups[g].lastID = e.id
                if noAck { continue }
                let p = StreamValue.Pending(id: e.id, consumer: consumer, deliveryMs: nowMs, deliveries: 1)
                let (hit, at) = s.groups[g].pendingIndex(e.id)
                if hit { s.groups[g].pending[at] = p } else { s.groups[g].pending.insert(p, at: at) }
            }
            return .array(batch.map(entryReply))
        }
        guard let id = StreamID.parse(idSpec, strict: true) else { return badStreamID }
        s.groups[g].touch(consumer, nowMs: nowMs)
        var out: [DataReply] = []
        guard let from = id.next else { return .array([]) }
        var k = s.groups[g].pendingIndex(from).at
        while k < s.groups[g].pending.count && (count <= 0 || out.count < count) {
            let p = s.groups[g].pending[k]
            k += 1
            guard p.consumer == consumer else { continue }
            if let e = s.entry(p.id) {
                s.groups[g].pending[k - 1].deliveryMs = nowMs
                s.groups[g].pending[k - 1].deliveries += 1
                out.append(entryReply(e))
            } else {
                out.append(.array([.bulk(p.id.bytes), .array(nil)]))
            }
        }
        return .array(out)
    }

    /// XCLAIM key group consumer min-idle id… [IDLE ms] [TIME ms] [RETRYCOUNT n] [FORCE] [JUSTID]
    /// [LASTID id] (`rest` from the group on; the group exists).
    static func streamClaim(_ rest: [[UInt8]], _ s: inout StreamValue, nowMs: UInt64) -> DataReply {
        guard rest.count >= 4 else { return .syntax }
        guard var minIdle = int(rest[2]) else { return .err("Invalid min-idle-time argument for XCLAIM") }
        if minIdle < 0 { minIdle = 0 }
        var j = 3
        var ids: [StreamID] = []
        while j < rest.count, let id = StreamID.parse(rest[j], strict: true) {
            ids.append(id)
            j += 1
        }
        var force = false
        var justID = false
        var delivery: Int64 = -1
        var retry: Int64 = -1
        var lastID = StreamID.zero
        let now = Int64(clamping: nowMs)
        while j < rest.count {
            let more = rest.count - 1 - j
            let o = streamWord(rest[j])
            if o == "force" {
                force = true
            } else if o == "justid" {
                justID = true
            } else if o == "idle" && more > 0 {
                j += 1
                guard let n = int(rest[j]) else { return .err("Invalid IDLE option argument for XCLAIM") }
                delivery = now &- n
            } else if o == "time" && more > 0 {
                j += 1
                guard let n = int(rest[j]) else { return .err("Invalid TIME option argument for XCLAIM") }
                delivery = n
            } else if o == "retrycount" && more > 0 {
                j += 1
                guard let n = int(rest[j]) else {
                    return .err("Invalid RETRYCOUNT option argument for XCLAIM")
                }
                retry = n
            } else if o == "lastid" && more > 0 {
                j += 1
                guard let id = StreamID.parse(rest[j], strict: true) else { return badStreamID }
                lastID = id
            } else {
                return .err("Unrecognized XCLAIM option '\(text(rest[j]))'")
            }
            j += 1
        }
        let (_, g) = s.groupIndex(rest[0])
        if lastID > s.groups[g].lastID { s.groups[g].lastID = lastID }
        if delivery < 0 || delivery > now { delivery = now }
        let consumer = rest[1]
        var touched = false
        var out: [DataReply] = []
        for id in ids {
            var (hit, at) = s.groups[g].pendingIndex(id)
            guard let e = s.entry(id) else {
                if hit { s.groups[g].pending.remove(at: at) }
                continue
            }
            var created = false
            if force && !hit {
                s.groups[g].pending.insert(.init(id: id, consumer: [], deliveryMs: 0, deliveries: 0), at: at)
                (hit, created) = (true, true)
            }
            guard hit else { continue }
            if !created && minIdle > 0 && now &- Int64(clamping: s.groups[g].pending[at].deliveryMs) < minIdle
            {
                continue
            }
            if !touched {
                s.groups[g].touch(consumer, nowMs: nowMs)
                touched = true
            }
            s.groups[g].pending[at].consumer = consumer
            s.groups[g].pending[at].deliveryMs = UInt64(delivery)
            if retry >= 0 {
                s.groups[g].pending[at].deliveries = UInt64(retry)
            } else if !justID {
                s.groups[g].pending[at].deliveries += 1
            }
            out.append(justID ? .bulk(id.bytes) : entryReply(e))
        }
        return .array(out)
    }

    /// XAUTOCLAIM key group consumer min-idle start [COUNT n] [JUSTID] → [cursor, claimed, deleted].
    static func streamAutoClaim(
        _ key: [UInt8], _ rest: [[UInt8]], _ s: inout StreamValue, exists: Bool, nowMs: UInt64
    ) -> DataReply {
        guard rest.count >= 4 else { return .syntax }
        guard var minIdle = int(rest[2]) else { return .err("Invalid min-idle-time argument for XAUTOCLAIM") }
        if minIdle < 0 { minIdle = 0 }
        guard let (startID, exclusive) = parseIntervalID(rest[3], missingSeq: 0) else { return badStreamID }
        var start = startID
        if exclusive {
            guard let n = start.next else { return .err("invalid start ID for the interval") }
            start = n
        }
        var count = 100
        var justID = false
        var j = 4
        while j < rest.count {
            let more = rest.count - 1 - j
            let o = streamWord(rest[j])
            if o == "count" && more > 0 {
                guard let n = int(rest[j + 1]), n >= 1, n <= Int64.max / 160 else {
                    return .err("COUNT must be > 0")
                }
                count = Int(n)
                j += 1
            } else if o == "justid" {
                justID = true
            } else {
                return .syntax
            }
            j += 1
        }
        guard exists, s.group(rest[0]) != nil else { return noGroup(key, rest[0]) }
        let (_, g) = s.groupIndex(rest[0])
        let now = Int64(clamping: nowMs)
        let consumer = rest[1]
        var attempts = count * 10
        var claimed: [DataReply] = []
        var deleted: [DataReply] = []
        var touched = false
        var k = s.groups[g].pendingIndex(start).at
        while attempts > 0 && count > 0 && k < s.groups[g].pending.count {
            attempts -= 1
            let p = s.groups[g].pending[k]
            guard let e = s.entry(p.id) else {
                s.groups[g].pending.remove(at: k)
                deleted.append(.bulk(p.id.bytes))
                count -= 1
                continue
            }
            k += 1
            if minIdle > 0 && now &- Int64(clamping: p.deliveryMs) < minIdle { continue }
            if !touched {
                s.groups[g].touch(consumer, nowMs: nowMs)
                touched = true
            }
            s.groups[g].pending[k - 1].consumer = consumer
            s.groups[g].pending[k - 1].deliveryMs = nowMs
            if !justID { s.groups[g].pending[k - 1].deliveries += 1 }
            claimed.append(justID ? .bulk(p.id.bytes) : entryReply(e))
            count -= 1
        }
        let cursor = k < s.groups[g].pending.count ? s.groups[g].pending[k].id : .zero
        return .array([.bulk(cursor.bytes), .array(claimed), .array(deleted)])
    }

    /// XACKADD key group id [FIELDS n field value …]… (Tern): acknowledges `id` and, only if this
    /// call removed it from the group's PEL, appends the follow-up entries — one instance, so a
    /// retried or duplicated completion never adds them twice, and a completion that took effect
    /// always added them. Answers [acknowledged 0|1, [new ids…]].
    static func streamAckAdd(
        _ key: [UInt8], _ rest: [[UInt8]], _ s: inout StreamValue, exists: Bool, nowMs: UInt64, limit: Int64
    ) -> DataReply {
        switch parseAckAdd(rest) {
        case .failure(let e): return e
        case .success(let (group, id, batches)):
            guard exists, s.group(group) != nil else { return noGroup(key, group) }
            let (_, g) = s.groupIndex(group)
            let (hit, at) = s.groups[g].pendingIndex(id)
            guard hit else { return .array([.integer(0), .array([])]) }
            s.groups[g].pending.remove(at: at)
            var ids: [DataReply] = []
            for fields in batches {
                guard case .success(let nid) = streamNextID(s, [UInt8(ascii: "*")], nowMs: nowMs) else {
                    return .err("The stream has exhausted the last possible ID, unable to add more items")
                }
                streamAppend(&s, nid, fields)
                ids.append(.bulk(nid.bytes))
            }
            if limit > 0 && !batches.isEmpty && s.entries.count > Int(clamping: limit) {
                return backlogFull(key, limit: limit)
            }
            return .array([.integer(1), .array(ids)])
        }
    }

    /// XACKADD's arguments after the key: group, id, then `FIELDS n field value …` groups.
    public static func parseAckAdd(_ rest: [[UInt8]]) -> StreamParsed<([UInt8], StreamID, [[[UInt8]]])> {
        guard rest.count >= 2 else {
            return .failure(.err("wrong number of arguments for 'xackadd' command"))
        }
        guard let id = StreamID.parse(rest[1], strict: true) else { return .failure(badStreamID) }
        var batches: [[[UInt8]]] = []
        var i = 2
        while i < rest.count {
            guard streamWord(rest[i]) == "fields", i + 1 < rest.count else { return .failure(.syntax) }
            guard let n = int(rest[i + 1]), n >= 1, n <= Int64(rest.count - i - 2) / 2 else {
                return .failure(
                    .err("FIELDS takes a number of field-value pairs (at least 1) that follow it"))
            }
            batches.append(Array(rest[(i + 2)..<(i + 2 + 2 * Int(n))]))
            i += 2 + 2 * Int(n)
        }
        return .success((rest[0], id, batches))
    }

    /// An interval bound: `(` exclusive, `-`/`+` the ends (not exclusive).
    static func parseIntervalID(_ b: [UInt8], missingSeq: UInt64) -> (StreamID, Bool)? {
        if b.first == UInt8(ascii: "(") && b.count > 1 {
            return StreamID.parse(Array(b.dropFirst()), missingSeq: missingSeq, strict: true).map {
                ($0, true)
            }
        }
        return StreamID.parse(b, missingSeq: missingSeq).map { ($0, false) }
    }
}

extension DataModel {
    // MARK: - Reads

    /// The stream reads (`nowMs`: the serving node's clock, for idle times), nil when `name` is
    /// not one: `xlen k`, `xrange k start end [count n]`, `xrevrange k end start [count n]`,
    /// `xread k id count` (one stream of an XREAD, normalised), `xpending k group […]`,
    /// `xinfo k stream|groups|consumers …`.
    static func readStream(_ name: String, _ args: [[UInt8]], _ v: StoredValue?, nowMs: UInt64) -> DataReply?
    {
        guard ["xlen", "xrange", "xrevrange", "xread", "xpending", "xinfo", "xready"].contains(name) else {
            return nil
        }
        if let v, v.kind != .stream { return .wrongType }
        let s = v.flatMap { StreamCodec.value($0.bytes) }
        let key = args[1]
        let now = Int64(clamping: nowMs)
        switch name {
        case "xlen":
            return .integer(Int64(s?.entries.count ?? 0))
        case "xrange", "xrevrange":
            guard args.count >= 4 else { return .syntax }
            let rev = name == "xrevrange"
            guard let (a, ax) = parseIntervalID(args[rev ? 3 : 2], missingSeq: 0),
                let (b, bx) = parseIntervalID(args[rev ? 2 : 3], missingSeq: .max)
            else { return badStreamID }
            var start = a
            var end = b
            if ax {
                guard let n = a.next else { return .err("invalid start ID for the interval") }
                start = n
            }
            if bx {
                guard let p = b.previous else { return .err("invalid end ID for the interval") }
                end = p
            }
            var count: Int?
            var j = 4
            while j < args.count {
                guard streamWord(args[j]) == "count", j + 1 < args.count else { return .syntax }
                guard let n = int(args[j + 1]) else { return .notInteger }
                count = Int(max(0, n))
                j += 2
            }
            guard let s else { return .array([]) }
            if count == 0 { return .array(nil) }
            return .array(s.range(start, end, count: count, rev: rev).map(entryReply))
        case "xread":
            // xread k id count: the entries after id ("$": none), nil when none.
            guard args.count == 4, let s else { return .array(nil) }
            let count = Int(int(args[3]) ?? 0)
            guard args[2] != [UInt8(ascii: "$")], let id = StreamID.parse(args[2], strict: true),
                let from = id.next
            else { return .array(nil) }
            let batch = s.range(from, .max, count: count > 0 ? count : nil)
            return batch.isEmpty ? .array(nil) : .array(batch.map(entryReply))
        case "xpending":
            return streamPending(key, args, s, now: now)
        case "xready":
            // xready k group (XREADGROUP BLOCK's look): 1 when the group has entries after its
            // last delivered id, 0 when not, NOGROUP when there is no such group.
            guard args.count == 3, let s, let g = s.group(args[2]) else {
                return .error(
                    "NOGROUP No such key '\(text(key))' or consumer group '\(text(args.count > 2 ? args[2] : []))' "
                        + "in XREADGROUP with GROUP option")
            }
            return .integer((s.entries.last.map { $0.id > g.lastID } ?? false) ? 1 : 0)
        default:
            return streamInfo(key, args, s, now: now)
        }
    }

    /// The last id of the stream in `v` (nil: absent or not a stream): XREAD's `$`.
    public static func streamLastID(_ v: StoredValue?) -> StreamID? {
        guard let v, v.kind == .stream else { return nil }
        return StreamCodec.value(v.bytes)?.lastID
    }

    /// XPENDING key group [[IDLE min] start end count [consumer]].
    static func streamPending(_ key: [UInt8], _ args: [[UInt8]], _ s: StreamValue?, now: Int64) -> DataReply {
        let n = args.count
        guard n == 3 || (n >= 6 && n <= 9) else { return .syntax }
        var minIdle: Int64 = 0
        var from = StreamID.zero
        var to = StreamID.max
        var count = -1
        var consumer: [UInt8]?
        if n >= 6 {
            var at = 3
            if streamWord(args[3]) == "idle" {
                guard let m = int(args[4]) else { return .notInteger }
                guard n >= 8 else { return .syntax }
                minIdle = m
                at += 2
            }
            guard let c = int(args[at + 2]) else { return .notInteger }
            count = Int(max(0, c))
            guard let (a, ax) = parseIntervalID(args[at], missingSeq: 0) else { return badStreamID }
            from = a
            if ax {
                guard let x = a.next else { return .err("invalid start ID for the interval") }
                from = x
            }
            guard let (b, bx) = parseIntervalID(args[at + 1], missingSeq: .max) else { return badStreamID }
            to = b
            if bx {
                guard let x = b.previous else { return .err("invalid end ID for the interval") }
                to = x
            }
            if at + 3 < n { consumer = args[at + 3] }
        }
        guard let s, let g = s.group(args[2]) else { return noGroup(key, args[2]) }
        if count == -1 {
            guard let first = g.pending.first, let last = g.pending.last else {
                return .array([.integer(0), .bulk(nil), .bulk(nil), .array(nil)])
            }
            var perConsumer: [DataReply] = []
            for c in g.consumers {
                let k = g.pendingCount(of: c.name)
                if k > 0 { perConsumer.append(.array([.bulk(c.name), .bulk(Array(String(k).utf8))])) }
            }
            return .array([
                .integer(Int64(g.pending.count)), .bulk(first.id.bytes), .bulk(last.id.bytes),
                .array(perConsumer),
            ])
        }
        var out: [DataReply] = []
        var k = g.pendingIndex(from).at
        while k < g.pending.count && out.count < count && g.pending[k].id <= to {
            let p = g.pending[k]
            k += 1
            if let consumer, p.consumer != consumer { continue }
            let idle = max(0, now &- Int64(clamping: p.deliveryMs))
            if minIdle > 0 && idle < minIdle { continue }
            out.append(
                .array([
                    .bulk(p.id.bytes), .bulk(p.consumer), .integer(idle),
                    .integer(Int64(clamping: p.deliveries)),
                ]))
        }
        return .array(out)
    }

    /// XINFO STREAM key [FULL [COUNT n]], XINFO GROUPS key, XINFO CONSUMERS key group
    /// (normalised as `xinfo key sub …`).
    static func streamInfo(_ key: [UInt8], _ args: [[UInt8]], _ s: StreamValue?, now: Int64) -> DataReply {
        guard args.count >= 3 else { return .syntax }
        let sub = streamWord(args[2])
        var full = false
        var count = 10
        if sub == "stream" {
            var j = 3
            if j < args.count {
                guard streamWord(args[j]) == "full" else {
                    return .err(
                        "unknown subcommand or wrong number of arguments for 'stream'. Try XINFO HELP.")
                }
                full = true
                j += 1
                if j < args.count {
                    guard streamWord(args[j]) == "count", j + 1 < args.count, j + 2 == args.count else {
                        return .syntax
                    }
                    guard let n = int(args[j + 1]) else { return .notInteger }
                    count = n <= 0 ? 0 : Int(n)
                }
            }
        }
        guard let s else { return .err("no such key") }
        func limited<T>(_ a: [T]) -> ArraySlice<T> { count == 0 ? a[...] : a.prefix(count) }
        func lag(_ g: StreamValue.Group) -> DataReply { s.lag(g).map { .integer($0) } ?? .bulk(nil) }
        func entriesRead(_ g: StreamValue.Group) -> DataReply {
            g.entriesRead == -1 ? .bulk(nil) : .integer(g.entriesRead)
        }
        switch sub {
        case "stream":
            let nodes = (s.entries.count + 99) / 100
            var out: [DataReply] = [
                .bulk("length"), .integer(Int64(s.entries.count)),
                .bulk("radix-tree-keys"), .integer(Int64(nodes)),
                .bulk("radix-tree-nodes"), .integer(Int64(nodes + 1)),
                .bulk("last-generated-id"), .bulk(s.lastID.bytes),
                .bulk("max-deleted-entry-id"), .bulk(s.maxDeletedID.bytes),
                .bulk("entries-added"), .integer(Int64(clamping: s.entriesAdded)),
                .bulk("recorded-first-entry-id"), .bulk(s.firstID.bytes),
            ]
            if !full {
                out += [
                    .bulk("groups"), .integer(Int64(s.groups.count)),
                    .bulk("first-entry"), s.entries.first.map(entryReply) ?? .bulk(nil),
                    .bulk("last-entry"), s.entries.last.map(entryReply) ?? .bulk(nil),
                ]
                return .map(out)
            }
            out += [.bulk("entries"), .array(limited(s.entries).map(entryReply))]
            let groups: [DataReply] = s.groups.map { g in
                let consumers: [DataReply] = g.consumers.map { c in
                    let mine = g.pending.filter { $0.consumer == c.name }
                    return .map([
                        .bulk("name"), .bulk(c.name),
                        .bulk("seen-time"), .integer(Int64(clamping: c.seenMs)),
                        .bulk("pel-count"), .integer(Int64(mine.count)),
                        .bulk("pending"),
                        .array(
                            limited(mine).map {
                                .array([
                                    .bulk($0.id.bytes), .integer(Int64(clamping: $0.deliveryMs)),
                                    .integer(Int64(clamping: $0.deliveries)),
                                ])
                            }),
                    ])
                }
                return .map([
                    .bulk("name"), .bulk(g.name),
                    .bulk("last-delivered-id"), .bulk(g.lastID.bytes),
                    .bulk("entries-read"), entriesRead(g),
                    .bulk("lag"), lag(g),
                    .bulk("pel-count"), .integer(Int64(g.pending.count)),
                    .bulk("pending"),
                    .array(
                        limited(g.pending).map {
                            .array([
                                .bulk($0.id.bytes), .bulk($0.consumer),
                                .integer(Int64(clamping: $0.deliveryMs)),
                                .integer(Int64(clamping: $0.deliveries)),
                            ])
                        }),
                    .bulk("consumers"), .array(consumers),
                ])
            }
            out += [.bulk("groups"), .array(groups)]
            return .map(out)
        case "groups":
            return .array(
                s.groups.map { g in
                    .map([
                        .bulk("name"), .bulk(g.name),
                        .bulk("consumers"), .integer(Int64(g.consumers.count)),
                        .bulk("pending"), .integer(Int64(g.pending.count)),
                        .bulk("last-delivered-id"), .bulk(g.lastID.bytes),
                        .bulk("entries-read"), entriesRead(g),
                        .bulk("lag"), lag(g),
                    ])
                })
        case "consumers":
            guard args.count == 4 else { return .syntax }
            guard let g = s.group(args[3]) else { return noGroupForKey(key, args[3]) }
            return .array(
                g.consumers.map { c in
                    .map([
                        .bulk("name"), .bulk(c.name),
                        .bulk("pending"), .integer(Int64(g.pendingCount(of: c.name))),
                        .bulk("idle"), .integer(max(0, now &- Int64(clamping: c.seenMs))),
                    ])
                })
        default:
            return .syntax
        }
    }
}
