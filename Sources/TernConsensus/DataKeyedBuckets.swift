// A big set, hash or sorted set kept in buckets (docs/DATA.md, "Big sets, hashes and sorted sets"): the key holds a head
// (the member count, an index of immutable buckets that each hold the members whose XXH64 lies in
// one range, and an overlay of the members changed since their bucket was written); each bucket
// is an immutable key of its own. A change to one member rewrites the head only (a few KB), so its
// bytes do not grow with the collection. The head is still one Paxos key: every command on the
// collection stays linearizable with no cross-key transaction.
//
// A write must know the current state of the members it touches (SADD answers how many were new,
// HINCRBY adds to the old value). The overlay has the members changed lately; for the rest, the
// shell that proposes the write reads their buckets and attaches *facts* ("member m is / is not in
// the bucket whose content hashes to h, with value v"). A bucket never changes (its key names its
// content's hash), so a fact about it stays true; the apply uses a fact only while the head still
// lists that bucket, and otherwise answers a need and changes nothing. Pure: the server's shell
// (KeyedCollections.swift) reads buckets, writes them and proposes the upkeep below.
import TernCore

/// The head of a set, hash or sorted set kept in buckets.
public struct KeyedBuckets: Sendable, Hashable {
    /// The kinds kept in buckets once big.
    public static func isKeyedKind(_ k: ValueKind) -> Bool { k == .set || k == .hash || k == .zset }
    /// Whether a bucket's items are pairs (a hash's field and value; a sorted set's member and
    /// score, `scoreBytes`) or members alone (a set's).
    public static func paired(_ k: ValueKind) -> Bool { k != .set }

    /// A sorted-set member's value in a bucket or the overlay: its score's bits (`u64`).
    public static func scoreBytes(_ s: Double) -> [UInt8] {
        var w = ByteWriter()
        w.u64(s.bitPattern)
        return w.bytes
    }
    public static func score(_ b: [UInt8]) -> Double {
        var r = ByteReader(b)
        return Double(bitPattern: r.u64() ?? 0)
    }

    /// A plain value's members with their values (a set's are empty, a sorted set's its score).
    public static func plainPairs(_ bytes: [UInt8]?, kind: ValueKind) -> [([UInt8], [UInt8])] {
        guard let bytes else { return [] }
        if kind == .zset { return DataModel.decodeZSet(bytes).map { ($0.member, scoreBytes($0.score)) } }
        return pairs(DataModel.decodeItems(bytes), hash: kind == .hash)
    }
    /// The plain value of `pairs` (a sorted set's ordered by score, then member, as its encoding
    /// must be).
    public static func plainBytes(_ pairs: [([UInt8], [UInt8])], kind: ValueKind) -> [UInt8] {
        guard kind == .zset else { return DataModel.encodeItems(items(pairs, hash: kind == .hash)) }
        let scored = pairs.map { (member: $0.0, score: score($0.1)) }
        return DataModel.zsetBytes(scored)
    }

    /// A bucket as the head lists it: the members whose XXH64 lies in `low ..< next.low`.
    public struct Entry: Sendable, Hashable {
        /// The head's generation when the bucket was written (part of its key).
        public var gen: UInt32
        /// XXH64 of the bucket's encoding (`DataModel.encodeItems`; part of its key).
        public var hash: UInt64
        public var count: UInt32
        public var low: UInt64
        public init(gen: UInt32, hash: UInt64, count: UInt32, low: UInt64) {
            self.gen = gen
            self.hash = hash
            self.count = count
            self.low = low
        }
        /// `u32 gen | u64 hash | u32 count | u64 low` (the head's index, a flush's body).
        func write(to w: inout ByteWriter) {
            w.u32(gen)
            w.u64(hash)
            w.u32(count)
            w.u64(low)
        }
        init?(from r: inout ByteReader) {
            guard let g = r.u32(), let h = r.u64(), let c = r.u32(), let low = r.u64() else { return nil }
            self.init(gen: g, hash: h, count: c, low: low)
        }
    }

    /// As a bucketed list's head, the first word (a plain collection's element count) is all
    /// ones; the version byte tells the two heads apart.
    static let marker: UInt32 = 0xFFFF_FFFF
    static let version: UInt8 = 2

    /// Chosen at random by the shell that made the collection bucketed (`ksplit`).
    public var nonce: UInt64
    /// Raised by every flush; a bucket is written at the generation it names, so an unreferenced
    /// bucket below the head's generation can never be referenced again (`isOrphan`).
    public var gen: UInt32
    /// The members (set) or fields (hash) in all.
    public var count: UInt64
    /// A bucket's target size when a flush rewrites it: beyond twice this it is cut in two.
    public var bucketMembers: Int
    public var bucketBytes: Int
    /// Ordered by `low`; the first starts at 0.
    public var index: [Entry]
    /// Members changed since their bucket was written: the value (a set member's is empty), or
    /// nil when removed. Overrides the bucket.
    public var overlay: Overlay

    public init(nonce: UInt64, bucketMembers: Int, bucketBytes: Int, index: [Entry], count: UInt64) {
        self.nonce = nonce
        self.gen = 0
        self.count = count
        self.bucketMembers = max(2, bucketMembers)
        self.bucketBytes = max(64, bucketBytes)
        self.index = index
        self.overlay = [:]
    }

    /// Defaults (the shell's): buckets of about 512 members or 32 KiB.
    public static let defaultBucketMembers = 512
    public static let defaultBucketBytes = 32 << 10
    /// A plain set or hash whose encoding reaches this many items (members, or fields and values)
    /// or bytes is made bucketed before a write changes it again.
    public static let plainItemsMax = 1152
    public static let plainBytesMax = 72 << 10
    /// The overlay at which the shell flushes it into buckets by itself, and the one at which
    /// writes wait for a flush (the bound on the head's size).
    public static let overlaySoftMax = 512
    public static let overlaySoftBytes = 16 << 10
    public static let overlayHardMax = 2048
    public static let overlayHardBytes = 64 << 10

    // MARK: - Codec

    public static func isHead(_ bytes: [UInt8]?) -> Bool {
        guard let b = bytes, b.count >= 5 else { return false }
        return b[0] == 0xFF && b[1] == 0xFF && b[2] == 0xFF && b[3] == 0xFF && b[4] == version
    }

    public init?(_ bytes: [UInt8]?) {
        guard let bytes, Self.isHead(bytes) else { return nil }
        var r = ByteReader(bytes)
        _ = r.u32()
        guard r.u8() == Self.version, let nonce = r.u64(), let gen = r.u32(), let count = r.u64(),
            let bm = r.u32(), let bb = r.u32(), let n = r.u32()
        else { return nil }
        self.nonce = nonce
        self.gen = gen
        self.count = count
        self.bucketMembers = Int(bm)
        self.bucketBytes = Int(bb)
        var index: [Entry] = []
        index.reserveCapacity(Int(min(n, 1 << 16)))
        for _ in 0..<n {
            guard let e = Entry(from: &r) else { return nil }
            index.append(e)
        }
        self.index = index
        guard let overlay = Overlay(from: &r), r.atEnd, !index.isEmpty else { return nil }
        self.overlay = overlay
    }

    public var encoded: [UInt8] {
        var w = ByteWriter()
        w.bytes.reserveCapacity(48 + index.count * 24 + overlayBytes)
        w.u32(Self.marker)
        w.u8(Self.version)
        w.u64(nonce)
        w.u32(gen)
        w.u64(count)
        w.u32(UInt32(bucketMembers))
        w.u32(UInt32(bucketBytes))
        w.u32(UInt32(index.count))
        for e in index { e.write(to: &w) }
        overlay.write(to: &w)
        return w.bytes
    }

    /// The overlay's encoded size.
    public var overlayBytes: Int {
        overlay.entries.reduce(0) { $0 + 9 + $1.member.count + ($1.state?.count ?? 0) }
    }
    /// Whether the shell should flush the overlay now (off the client's path).
    public var overlayFull: Bool {
        overlay.count >= Self.overlaySoftMax || overlayBytes >= Self.overlaySoftBytes
    }
    /// Whether writes must wait for a flush.
    var overlayHardFull: Bool {
        overlay.count >= Self.overlayHardMax || overlayBytes >= Self.overlayHardBytes
    }

    // MARK: - Members and buckets

    public static func memberHash(_ m: [UInt8]) -> UInt64 { XXH64.hash(m) }

    /// The index position of the bucket that holds member hash `h`.
    public func position(_ h: UInt64) -> Int { Self.position(in: index, h) }
    /// The position in `index` (ordered by `low`, the first at 0) of the bucket for hash `h`.
    public static func position(in index: [Entry], _ h: UInt64) -> Int {
        index.partitionPoint { $0.low <= h } - 1
    }
    public func position(of member: [UInt8]) -> Int { position(Self.memberHash(member)) }

    /// A bucket's members (a set) or fields and values (a hash), from its encoding.
    public static func pairs(_ items: [[UInt8]], hash: Bool) -> [([UInt8], [UInt8])] {
        guard hash else { return items.map { ($0, []) } }
        var out: [([UInt8], [UInt8])] = []
        out.reserveCapacity(items.count / 2)
        var k = 0
        while k + 1 < items.count {
            out.append((items[k], items[k + 1]))
            k += 2
        }
        return out
    }
    public static func items(_ pairs: [([UInt8], [UInt8])], hash: Bool) -> [[UInt8]] {
        hash ? pairs.flatMap { [$0.0, $0.1] } : pairs.map(\.0)
    }

    /// The whole collection as a plain value's items: the buckets' members (`buckets[k]`: the
    /// items of index position k) with the overlay applied.
    public func assembled(_ buckets: [[[UInt8]]], hash: Bool) -> [[UInt8]] {
        var out: [[UInt8]] = []
        out.reserveCapacity(Int(min(count, 1 << 20)) * (hash ? 2 : 1))
        for b in buckets {
            for (m, v) in Self.pairs(b, hash: hash) where overlay[m] == nil {
                out.append(m)
                if hash { out.append(v) }
            }
        }
        for e in overlay.entries {
            guard let v = e.state else { continue }
            out.append(e.member)
            if hash { out.append(v) }
        }
        return out
    }

    /// The whole collection as one plain value (`buckets[k]`: the stored items of index position k).
    public func assembledPlain(_ buckets: [[[UInt8]]], kind: ValueKind) -> [UInt8] {
        let paired = Self.paired(kind)
        if kind != .zset { return DataModel.encodeItems(assembled(buckets, hash: paired)) }
        return Self.plainBytes(Self.pairs(assembled(buckets, hash: paired), hash: paired), kind: kind)
    }

    /// Cuts members (with their values) into buckets of about `target` members or `targetBytes`
    /// bytes, in member-hash order; the first bucket starts at `low`. Members with one hash stay
    /// in one bucket.
    public static func cut(
        _ pairs: [([UInt8], [UInt8])], low: UInt64, target: Int, targetBytes: Int
    ) -> [(low: UInt64, pairs: [([UInt8], [UInt8])])] {
        let sorted = pairs.map { (memberHash($0.0), $0) }.sorted {
            $0.0 != $1.0 ? $0.0 < $1.0 : $0.1.0.lexicographicallyPrecedes($1.1.0)
        }
        var out: [(low: UInt64, pairs: [([UInt8], [UInt8])])] = [(low, [])]
        var bytes = 0
        for (k, (h, p)) in sorted.enumerated() {
            let size = 8 + p.0.count + p.1.count
            let cur = out.count - 1
            if !out[cur].pairs.isEmpty, out[cur].pairs.count >= target || bytes + size > targetBytes,
                h != sorted[k - 1].0
            {
                out.append((h, []))
                bytes = 0
            }
            out[out.count - 1].pairs.append(p)
            bytes += size
        }
        return out
    }

    // MARK: - Bucket keys and values

    static let bucketPrefix: [UInt8] = Array("\0kb:".utf8)
    /// The prefix of every bucket key (the repair scan hands these to the collector).
    public static var bucketKeyPrefix: [UInt8] { bucketPrefix }

    /// `\0kb:` | XXH64(key) | nonce | gen | hash | low (big-endian, 40 bytes). The range's start
    /// makes the key unique among a head's buckets: two buckets of one generation may hold the
    /// same content (both empty, say), and deleting one must not delete the other.
    public static func bucketKey(of key: [UInt8], nonce: UInt64, entry e: Entry) -> [UInt8] {
        var out = bucketPrefix
        out.reserveCapacity(40)
        func be64(_ v: UInt64) {
            for k in (0..<8).reversed() { out.append(UInt8(truncatingIfNeeded: v >> (8 * k))) }
        }
        be64(XXH64.hash(key))
        be64(nonce)
        for k in (0..<4).reversed() { out.append(UInt8(truncatingIfNeeded: e.gen >> (8 * k))) }
        be64(e.hash)
        be64(e.low)
        return out
    }

    public static func parseBucketKey(_ k: [UInt8]) -> (
        keyHash: UInt64, nonce: UInt64, gen: UInt32, hash: UInt64, low: UInt64
    )? {
        guard k.count == 40, k.starts(with: bucketPrefix) else { return nil }
        func be(_ at: Int, _ n: Int) -> UInt64 { k[at..<(at + n)].reduce(0) { $0 << 8 | UInt64($1) } }
        return (be(4, 8), be(12, 8), UInt32(be(20, 4)), be(24, 8), be(32, 8))
    }

    /// A bucket key that no head reaches and none ever will (the rule of `ListBuckets.isOrphan`).
    public static func isOrphan(bucketKey: [UInt8], head: StoredValue?) -> Bool {
        guard let p = parseBucketKey(bucketKey) else { return false }
        guard let head, isKeyedKind(head.kind), let h = KeyedBuckets(head.bytes),
            h.nonce == p.nonce
        else { return true }
        if p.gen >= h.gen { return false }
        return !h.index.contains { $0.gen == p.gen && $0.hash == p.hash && $0.low == p.low }
    }

    // MARK: - Facts

    /// What the proposer read about a member in a bucket: present (with its value) or not.
    public struct Fact: Sendable, Hashable {
        public var bucket: UInt64
        public var value: [UInt8]?
        public init(bucket: UInt64, value: [UInt8]?) {
            self.bucket = bucket
            self.value = value
        }
    }

    public static func encodeFacts(_ facts: [[UInt8]: Fact]) -> [UInt8] {
        var w = ByteWriter()
        w.u32(UInt32(facts.count))
        for m in facts.keys.sorted(by: { $0.lexicographicallyPrecedes($1) }) {
            let f = facts[m]!
            w.blob(m)
            w.u64(f.bucket)
            w.optionalBlob(f.value)
        }
        return w.bytes
    }
    public static func decodeFacts(_ b: [UInt8]) -> [[UInt8]: Fact]? {
        var r = ByteReader(b)
        guard let n = r.u32() else { return nil }
        var out: [[UInt8]: Fact] = [:]
        for _ in 0..<n {
            guard let m = r.blob(), let h = r.u64(), let v = r.optionalBlob() else { return nil }
            out[m] = Fact(bucket: h, value: v)
        }
        return r.atEnd ? out : nil
    }

    /// A member's state: `.some(value)` present, `.some(nil)` absent, nil when the head cannot
    /// tell without a fact (or the fact is about a bucket the head no longer lists).
    func state(_ m: [UInt8], _ facts: [[UInt8]: Fact], mutant: KeyedMutant? = nil) -> [UInt8]?? {
        if let o = overlay[m], mutant != .factsOverOverlay { return .some(o) }
        guard let f = facts[m], index[position(of: m)].hash == f.bucket || mutant == .staleFacts else {
            return nil
        }
        return .some(f.value)
    }

    // MARK: - What the shell must do first

    /// An operation that cannot run on the head as it is answers one of these (an error reply the
    /// shell never shows a client) and changes nothing; the shell does the work and runs the
    /// operation again under a fresh request id.
    public enum Need: Sendable, Hashable {
        /// Facts about these members' buckets (read the head again, then their buckets).
        case facts
        /// A plain collection is full: make it bucketed (`ksplit`).
        case split
        /// The overlay is full: fold it into buckets (`kflush`).
        case flush
        /// The command works on the whole collection: make it one value again (`kjoin`).
        case join
    }
    static let needPrefix = "TERNKEYED "

    static func reply(_ n: Need) -> DataReply {
        switch n {
        case .facts: .error(needPrefix + "facts")
        case .split: .error(needPrefix + "split")
        case .flush: .error(needPrefix + "flush")
        case .join: .error(needPrefix + "join")
        }
    }

    public static func need(_ r: DataReply) -> Need? {
        guard case .error(let s) = r, s.hasPrefix(needPrefix) else { return nil }
        switch s.dropFirst(needPrefix.count) {
        case "facts": return .facts
        case "split": return .split
        case "flush": return .flush
        case "join": return .join
        default: return nil
        }
    }

    // MARK: - Commands

    /// The writes that run on a head (with facts); the names of their kind.
    public static let setWrites: Set<String> = ["sadd", "srem", "spop"]
    public static let hashWrites: Set<String> = ["hset", "hsetnx", "hdel", "hincrby", "hincrbyfloat"]
    public static let zsetWrites: Set<String> = ["zadd", "zrem", "zincrby"]
    public static let allWrites = setWrites.union(hashWrites).union(zsetWrites)
    /// The writes that run on a head of kind `k` (with facts).
    public static func writes(of k: ValueKind) -> Set<String> {
        switch k {
        case .set: setWrites
        case .hash: hashWrites
        case .zset: zsetWrites
        default: []
        }
    }
    /// Writes that replace, remove or re-time the whole value: they run on a head as on any value.
    static let wholeWrites: Set<String> = [
        "del", "set", "pexpireat", "persist", "expirecheck", "getdel", "getex", "copyvalue", "restore",
    ]

    /// The members write `args` (a set, hash or sorted-set write) names; SPOP names none (its
    /// candidates are the facts it carries and the overlay).
    public static func members(_ args: [[UInt8]]) -> [[UInt8]] {
        guard let first = args.first, args.count >= 3 else { return [] }
        switch String(decoding: first, as: UTF8.self) {
        case "sadd", "srem", "hdel", "zrem": return Array(args[2...])
        case "hset": return stride(from: 2, to: args.count, by: 2).map { args[$0] }
        case "hsetnx", "hincrby", "hincrbyfloat": return [args[2]]
        case "zincrby": return args.count >= 4 ? [args[3]] : []
        case "zadd":
            // zadd k [nx|xx|gt|lt|ch|incr]… score member … (options lower-cased by the server)
            var i = 2
            while i < args.count, zaddFlags.contains(args[i]) { i += 1 }
            return stride(from: i + 1, to: args.count, by: 2).map { args[$0] }
        default: return []
        }
    }
    static let zaddFlags: Set<[UInt8]> = Set(["nx", "xx", "gt", "lt", "ch", "incr"].map { Array($0.utf8) })

    /// The reads a head answers from itself and the buckets of the members they name.
    public static let memberReads: Set<String> = [
        "sismember", "smismember", "hget", "hmget", "hexists", "hstrlen", "zscore", "zmscore",
    ]
    public static let countReads: Set<String> = ["scard", "hlen", "zcard"]
    /// The kind each of those reads is for (another kind answers WRONGTYPE).
    static let readKinds: [String: ValueKind] = [
        "sismember": .set, "smismember": .set, "scard": .set, "hget": .hash, "hmget": .hash,
        "hexists": .hash, "hstrlen": .hash, "hlen": .hash, "zscore": .zset, "zmscore": .zset, "zcard": .zset,
    ]

    /// What a read of a head needs: its answer now, the members whose buckets it reads, or the
    /// whole collection.
    public enum ReadPlan: Sendable, Hashable {
        case answer(DataReply)
        case members([[UInt8]])
        case whole
    }

    public func readPlan(_ args: [[UInt8]], kind: ValueKind) -> ReadPlan {
        guard let first = args.first else { return .whole }
        let name = String(decoding: first, as: UTF8.self)
        if let want = Self.readKinds[name], want != kind { return .answer(DataReply.wrongType) }
        if Self.countReads.contains(name) { return .answer(.integer(Int64(count))) }
        if Self.memberReads.contains(name), args.count >= 3 {
            let many = name == "smismember" || name == "hmget" || name == "zmscore"
            return .members(many ? Array(args[2...]) : [args[2]])
        }
        return .whole
    }

    /// Read `args`'s answer from the members' states (every member it names is in the overlay or
    /// in `buckets`, the items of the index positions read).
    public func answer(
        _ args: [[UInt8]], kind: ValueKind, deadlineMs: UInt64, buckets: [Int: [[UInt8]]], nowMs: UInt64
    ) -> DataReply {
        let paired = Self.paired(kind)
        var mini: [([UInt8], [UInt8])] = []
        var seen: Set<[UInt8]> = []
        for m in args.dropFirst(2) where seen.insert(m).inserted {
            if let o = overlay[m] {
                if let v = o { mini.append((m, v)) }
                continue
            }
            let k = position(of: m)
            if let b = buckets[k], let p = Self.pairs(b, hash: paired).first(where: { $0.0 == m }) {
                mini.append(p)
            }
        }
        let v = StoredValue(kind: kind, deadlineMs: deadlineMs, bytes: Self.plainBytes(mini, kind: kind))
        return DataModel.read(args, v, nowMs: nowMs, seed: 0)
    }
}

/// A head's overlay: members with their value (nil: removed), kept in member order, so lookups
/// are binary searches and the encoding needs no sort (a head is decoded and encoded by every
/// write: a dictionary's hashing and the sort were a sixth of a big set's write, measured).
public struct Overlay: Sendable, Hashable, ExpressibleByDictionaryLiteral {
    public struct Entry: Sendable, Hashable {
        public var member: [UInt8]
        public var state: [UInt8]?
    }
    public var entries: [Entry] = []

    public init() {}
    public init(dictionaryLiteral elements: ([UInt8], [UInt8]?)...) {
        for (m, v) in elements { self[m] = .some(v) }
    }

    /// The position of `m`, or where it would go.
    func find(_ m: [UInt8]) -> (Int, Bool) {
        var lo = 0
        var hi = entries.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if entries[mid].member.lexicographicallyPrecedes(m) { lo = mid + 1 } else { hi = mid }
        }
        return (lo, lo < entries.count && entries[lo].member == m)
    }

    /// `.some(value)` or `.some(nil)` (removed) when `m` is in the overlay; nil when it is not.
    /// Setting nil takes `m` out of the overlay.
    public subscript(_ m: [UInt8]) -> [UInt8]?? {
        get {
            let (i, found) = find(m)
            return found ? .some(entries[i].state) : nil
        }
        set {
            let (i, found) = find(m)
            switch (newValue, found) {
            case (.some(let s), true): entries[i].state = s
            case (.some(let s), false): entries.insert(Entry(member: m, state: s), at: i)
            case (nil, true): entries.remove(at: i)
            case (nil, false): break
            }
        }
    }
    public var keys: [[UInt8]] { entries.map(\.member) }

    /// `u32 m | (blob member, optional blob value)*m`, in member order (which the overlay keeps,
    /// so every replica encodes the same bytes).
    func write(to w: inout ByteWriter) {
        w.u32(UInt32(entries.count))
        for e in entries {
            w.blob(e.member)
            w.optionalBlob(e.state)
        }
    }
    /// Refuses entries out of member order: no encoder of ours writes them.
    init?(from r: inout ByteReader) {
        guard let m = r.u32() else { return nil }
        entries.reserveCapacity(Int(min(m, 1 << 16)))
        for _ in 0..<m {
            guard let member = r.blob(), let state = r.optionalBlob() else { return nil }
            if let last = entries.last, !last.member.lexicographicallyPrecedes(member) { return nil }
            entries.append(Entry(member: member, state: state))
        }
    }
    public var count: Int { entries.count }
    public var isEmpty: Bool { entries.isEmpty }
}

/// Deliberately broken rules, for the tests that must catch them (KeyedBucketsTests).
enum KeyedMutant: Sendable, Hashable {
    /// A fact is used although the head no longer lists the bucket it is about.
    case staleFacts
    /// A fact wins over the overlay (which holds the newer state).
    case factsOverOverlay
    /// A flush drops every folded overlay entry, also those changed since it read the head.
    case flushDropsAll
}

extension DataModel {
    // MARK: - Sets and hashes in buckets (applied by the proposer, like every data command)

    /// Whether a plain set or hash is full (`KeyedBuckets.plainItemsMax`, `plainBytesMax`).
    public static func plainKeyedFull(_ b: [UInt8]) -> Bool {
        let n = b.count >= 4 ? Int(b[0]) | Int(b[1]) << 8 | Int(b[2]) << 16 | Int(b[3]) << 24 : 0
        return n >= KeyedBuckets.plainItemsMax || b.count >= KeyedBuckets.plainBytesMax
    }

    /// `apply` for a top-level key that may hold a bucketed set or hash. Nil: not this code's
    /// business, apply as usual.
    static func applyKeyedBuckets(
        _ name: String, _ args: [[UInt8]], _ v: inout KeyValue, seed: UInt64, mutant: KeyedMutant? = nil
    ) -> DataReply? {
        let keyedKind = KeyedBuckets.isKeyedKind(v.kind)
        let isHead = keyedKind && KeyedBuckets.isHead(v.bytes)
        let isWrite = KeyedBuckets.allWrites.contains(name)
        switch name {
        case "kf":
            // kf facts write…: a set or hash write with the facts its proposer read.
            guard args.count >= 4, let facts = KeyedBuckets.decodeFacts(args[1]) else { return .syntax }
            let inner = Array(args[2...])
            let innerName = String(decoding: inner[0], as: UTF8.self)
            // Facts only matter to the writes that run on a head; any other command runs as sent.
            guard isHead, KeyedBuckets.allWrites.contains(innerName), var h = KeyedBuckets(v.bytes) else {
                return apply(inner, to: &v, seed: seed, lists: true)
            }
            return applyOnHead(innerName, inner, &v, &h, facts: facts, seed: seed, mutant: mutant)
        case "ksplit":
            return applySplit(args, &v)
        case "kflush":
            return applyFlush(args, &v, mutant: mutant)
        case "kjoin":
            return applyJoin(args, &v)
        default:
            break
        }
        if isHead {
            if isWrite {
                var h = KeyedBuckets(v.bytes)!
                return applyOnHead(name, args, &v, &h, facts: [:], seed: seed)
            }
            if KeyedBuckets.wholeWrites.contains(name) { return nil }
            return KeyedBuckets.reply(.join)
        }
        if isWrite, keyedKind, let b = v.bytes, plainKeyedFull(b) {
            // A write of the right kind makes it bucketed first; another kind's answers as usual
            // (WRONGTYPE).
            if KeyedBuckets.writes(of: v.kind).contains(name) { return KeyedBuckets.reply(.split) }
        }
        return nil
    }

    /// Runs set or hash write `args` on head `h`: on a small plain value made of the members it
    /// touches (so every reply and error is the plain command's), then writes the members that
    /// changed into the overlay.
    static func applyOnHead(
        _ name: String, _ args: [[UInt8]], _ v: inout KeyValue, _ h: inout KeyedBuckets,
        facts: [[UInt8]: KeyedBuckets.Fact], seed: UInt64, mutant: KeyedMutant? = nil
    ) -> DataReply {
        guard KeyedBuckets.writes(of: v.kind).contains(name) else { return .wrongType }
        if h.overlayHardFull { return KeyedBuckets.reply(.flush) }
        var touched: [[UInt8]]
        if name == "spop" {
            let want = args.count > 2 ? Int(int(args[2]) ?? 0) : 1
            if want <= 0 { return .set([]) }
            // Popping everything answers every member: the whole set, as one value.
            if UInt64(want) >= h.count { return KeyedBuckets.reply(.join) }
            touched =
                h.overlay.entries.filter { $0.state != nil }.map(\.member)
                + facts.keys.filter { h.overlay[$0] == nil }
            touched.sort { $0.lexicographicallyPrecedes($1) }
        } else {
            touched = KeyedBuckets.members(args)
        }
        var before: [[UInt8]: [UInt8]?] = [:]
        var present: [([UInt8], [UInt8])] = []
        for m in touched where before[m] == nil {
            guard let s = h.state(m, facts, mutant: mutant) else { return KeyedBuckets.reply(.facts) }
            before[m] = .some(s)
            if let value = s { present.append((m, value)) }
        }
        if name == "spop" {
            let want = args.count > 2 ? Int(int(args[2]) ?? 0) : 1
            if present.count < want { return KeyedBuckets.reply(.facts) }
        }
        var mini = KeyValue(
            bytes: KeyedBuckets.plainBytes(present, kind: v.kind), kind: v.kind, deadlineMs: v.deadlineMs)
        let reply = apply(args, to: &mini, seed: seed)
        if case .error = reply { return reply }
        var after: [[UInt8]: [UInt8]] = [:]
        for (m, value) in KeyedBuckets.plainPairs(mini.bytes, kind: v.kind) { after[m] = value }
        var delta: Int64 = 0
        for (m, old) in before {
            let new = after[m]
            guard new != old else { continue }
            h.overlay[m] = .some(new)
            delta += (new != nil ? 1 : 0) - (old != nil ? 1 : 0)
        }
        let total = Int64(h.count) + delta
        if total <= 0 {
            clear(&v)
        } else {
            h.count = UInt64(total)
            v.bytes = h.encoded
        }
        return reply
    }

    /// `ksplit k nonce valueHash bucketMembers bucketBytes (count hash low)…`: the plain value
    /// (unchanged since the shell read it: its hash) becomes a head over the buckets the shell
    /// wrote. 1: done, 0: the value changed (nothing done).
    static func applySplit(_ args: [[UInt8]], _ v: inout KeyValue) -> DataReply {
        guard args.count >= 9, (args.count - 6) % 3 == 0,
            let nonce = UInt64(String(decoding: args[2], as: UTF8.self)),
            let valueHash = UInt64(String(decoding: args[3], as: UTF8.self)),
            let bm = int(args[4]), let bb = int(args[5])
        else { return .syntax }
        guard KeyedBuckets.isKeyedKind(v.kind), let b = v.bytes, !KeyedBuckets.isHead(b),
            XXH64.hash(b) == valueHash
        else { return .integer(0) }
        var index: [KeyedBuckets.Entry] = []
        var i = 6
        var total: UInt64 = 0
        while i + 2 < args.count {
            guard let c = UInt32(String(decoding: args[i], as: UTF8.self)),
                let hh = UInt64(String(decoding: args[i + 1], as: UTF8.self)),
                let low = UInt64(String(decoding: args[i + 2], as: UTF8.self))
            else { return .syntax }
            guard index.isEmpty ? low == 0 : low > index[index.count - 1].low else { return .syntax }
            index.append(KeyedBuckets.Entry(gen: 0, hash: hh, count: c, low: low))
            total += UInt64(c)
            i += 3
        }
        let n = b.count >= 4 ? UInt64(b[0]) | UInt64(b[1]) << 8 | UInt64(b[2]) << 16 | UInt64(b[3]) << 24 : 0
        let members = v.kind == .hash ? n / 2 : n
        guard total == members else { return .integer(0) }
        var h = KeyedBuckets(
            nonce: nonce, bucketMembers: Int(bm), bucketBytes: Int(bb), index: index, count: total)
        // Its buckets were written at generation 0; a flush writes at the head's generation, so
        // a flushed bucket never has the key of the one it replaces.
        h.gen = 1
        v.bytes = h.encoded
        return .integer(1)
    }

    /// The body of a flush: which buckets it replaces, by which, and the overlay entries folded.
    public struct KeyedFlush: Sendable, Hashable {
        public struct Group: Sendable, Hashable {
            public var old: KeyedBuckets.Entry
            public var new: [KeyedBuckets.Entry]
            public init(old: KeyedBuckets.Entry, new: [KeyedBuckets.Entry]) {
                self.old = old
                self.new = new
            }
        }
        public var groups: [Group]
        /// The overlay entries folded, as the flush read them.
        public var folded: Overlay
        public init(groups: [Group], folded: Overlay) {
            self.groups = groups
            self.folded = folded
        }

        public var encoded: [UInt8] {
            var w = ByteWriter()
            w.u32(UInt32(groups.count))
            for g in groups {
                g.old.write(to: &w)
                w.u32(UInt32(g.new.count))
                for e in g.new { e.write(to: &w) }
            }
            folded.write(to: &w)
            return w.bytes
        }

        public init?(_ b: [UInt8]) {
            var r = ByteReader(b)
            guard let n = r.u32() else { return nil }
            var groups: [Group] = []
            for _ in 0..<n {
                guard let old = KeyedBuckets.Entry(from: &r), let k = r.u32() else { return nil }
                var new: [KeyedBuckets.Entry] = []
                for _ in 0..<k {
                    guard let e = KeyedBuckets.Entry(from: &r) else { return nil }
                    new.append(e)
                }
                groups.append(Group(old: old, new: new))
            }
            guard let folded = Overlay(from: &r), r.atEnd else { return nil }
            self.groups = groups
            self.folded = folded
        }
    }

    /// `kflush k nonce gen body`: replaces each named bucket by the buckets the shell wrote (its
    /// members with the folded overlay entries applied), at the generation the shell read, and
    /// drops the folded entries the overlay still holds as folded (a member changed since keeps
    /// its entry, which overrides the new bucket as it overrode the old). 1: done, 0: the head
    /// moved on (another flush, a delete): nothing done.
    static func applyFlush(_ args: [[UInt8]], _ v: inout KeyValue, mutant: KeyedMutant? = nil) -> DataReply {
        guard args.count == 5, let nonce = UInt64(String(decoding: args[2], as: UTF8.self)),
            let gen = UInt32(String(decoding: args[3], as: UTF8.self)), let body = KeyedFlush(args[4])
        else { return .syntax }
        guard KeyedBuckets.isKeyedKind(v.kind), var h = KeyedBuckets(v.bytes), h.nonce == nonce, h.gen == gen
        else { return .integer(0) }
        var index = h.index
        for g in body.groups {
            guard let k = index.firstIndex(of: g.old), let first = g.new.first, first.low == g.old.low,
                zip(g.new, g.new.dropFirst()).allSatisfy({ $0.low < $1.low }),
                k + 1 == index.count || g.new.last!.low < index[k + 1].low,
                g.new.reduce(0, { $0 + UInt64($1.count) }) <= UInt64(g.old.count) + UInt64(body.folded.count)
            else { return .integer(0) }
            index.replaceSubrange(k...k, with: g.new)
        }
        h.index = index
        for e in body.folded.entries where h.overlay[e.member] == .some(e.state) || mutant == .flushDropsAll {
            h.overlay[e.member] = nil
        }
        h.gen &+= 1
        v.bytes = h.encoded
        return .integer(1)
    }

    /// `kjoin k nonce encoding…` (one per index position, in order): the collection becomes one
    /// plain value again. 1: done, 0: the head moved on.
    static func applyJoin(_ args: [[UInt8]], _ v: inout KeyValue) -> DataReply {
        guard args.count >= 3, let nonce = UInt64(String(decoding: args[2], as: UTF8.self)) else {
            return .syntax
        }
        guard KeyedBuckets.isKeyedKind(v.kind), let h = KeyedBuckets(v.bytes), h.nonce == nonce,
            args.count - 3 == h.index.count
        else { return .integer(0) }
        var buckets: [[[UInt8]]] = []
        for (k, e) in h.index.enumerated() {
            guard XXH64.hash(args[3 + k]) == e.hash else { return .integer(0) }
            buckets.append(decodeItems(args[3 + k]))
        }
        v.bytes = h.assembledPlain(buckets, kind: v.kind)
        return .integer(1)
    }
}
