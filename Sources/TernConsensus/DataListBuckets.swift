// A big list kept in buckets (docs/DATA.md, "Big lists"): the list's key holds a head (the
// elements near both ends, and an index of sealed buckets); each bucket is an immutable key of
// its own holding up to `bucketElements` elements. A push or a pop at an end rewrites the head
// only, so its bytes do not grow with the list. Pure: the server's shell (`Node`, Lists.swift)
// writes the buckets and proposes the maintenance operations below when an operation answers
// one of the `ListBuckets.Need` markers; the simulator can do the same.
import TernCore

/// The head of a list kept in buckets: `front ++ buckets (index order) ++ back`.
public struct ListBuckets: Sendable, Hashable {
    /// A bucket as the head lists it.
    public struct Entry: Sendable, Hashable {
        /// The head's generation when the bucket was sealed (part of its key).
        public var gen: UInt32
        /// XXH64 of the bucket's element encoding (`DataModel.encodeItems`; part of its key).
        public var hash: UInt64
        /// The elements of the bucket that are in the list.
        public var count: UInt32
        /// Elements of the stored bucket at its start (`lo`) and its end (`hi`) that are no longer
        /// in the list: a partial unseal moved them into the head and left the bucket as it was
        /// (`lunseal … take`), instead of writing the rest as a new bucket.
        public var lo: UInt32
        public var hi: UInt32
        public init(gen: UInt32, hash: UInt64, count: UInt32, lo: UInt32 = 0, hi: UInt32 = 0) {
            self.gen = gen
            self.hash = hash
            self.count = count
            self.lo = lo
            self.hi = hi
        }
        /// The elements the stored bucket holds.
        public var stored: Int { Int(lo) + Int(count) + Int(hi) }
        /// The list's elements among the stored bucket's `items` (nil: not this bucket's count).
        public func visible(_ items: [[UInt8]]) -> ArraySlice<[UInt8]>? {
            guard items.count == stored else { return nil }
            return items[Int(lo)..<(Int(lo) + Int(count))]
        }
        /// An entry's count word carries this bit when `lo` and `hi` follow it (version 2).
        static let trimmedBit: UInt32 = 0x8000_0000
    }

    /// A plain list's encoding starts with its element count: no list has 2^32 - 1 elements (a
    /// value is bounded far below), so this first word marks a head.
    static let marker: UInt32 = 0xFFFF_FFFF
    /// 2: an entry may carry its bucket's trims (`Entry.trimmedBit`); version 1 heads (no trims)
    /// read the same.
    static let version: UInt8 = 2
    static let versions: ClosedRange<UInt8> = 1...2

    /// Chosen at random by the shell that made the list bucketed (`lsegment`): buckets of an
    /// earlier incarnation of the key never match a later head.
    public var nonce: UInt64
    /// Raised by every seal; a bucket is sealed at the generation it names, so an unreferenced
    /// bucket below the head's generation can never be referenced again (`isOrphan`).
    public var gen: UInt32
    /// A bucket's bounds: at most this many elements and (beyond one element) encoded bytes.
    public var bucketElements: Int
    public var bucketBytes: Int
    public var index: [Entry]
    public var front: [[UInt8]]
    public var back: [[UInt8]]

    public init(nonce: UInt64, bucketElements: Int, bucketBytes: Int, items: [[UInt8]]) {
        self.nonce = nonce
        self.gen = 0
        self.bucketElements = max(2, bucketElements)
        self.bucketBytes = max(64, bucketBytes)
        self.index = []
        self.front = items
        self.back = []
    }

    /// Defaults (the shell's): 1024 elements or 64 KiB per bucket.
    public static let defaultBucketElements = 1024
    public static let defaultBucketBytes = 64 << 10

    /// A plain list becomes bucketed when a push meets it at this size (elements or encoded
    /// bytes); below it a list stays one value, exactly as before.
    public static let plainElementsMax = defaultBucketElements + defaultBucketElements / 8
    public static let plainBytesMax = defaultBucketBytes + defaultBucketBytes / 8

    /// The elements in all.
    public var count: Int { front.count + back.count + index.reduce(0) { $0 + Int($1.count) } }

    // MARK: - Codec

    public static func isHead(_ bytes: [UInt8]?) -> Bool {
        guard let b = bytes, b.count >= 5 else { return false }
        return b[0] == 0xFF && b[1] == 0xFF && b[2] == 0xFF && b[3] == 0xFF
    }

    public init?(_ bytes: [UInt8]) {
        guard Self.isHead(bytes) else { return nil }
        var r = ByteReader(bytes)
        _ = r.u32()
        guard let ver = r.u8(), Self.versions.contains(ver), let nonce = r.u64(), let gen = r.u32(),
            let be = r.u32(),
            let bb = r.u32(),
            let n = r.u32()
        else { return nil }
        self.nonce = nonce
        self.gen = gen
        self.bucketElements = Int(be)
        self.bucketBytes = Int(bb)
        var index: [Entry] = []
        index.reserveCapacity(Int(min(n, 1 << 16)))
        for _ in 0..<n {
            guard let g = r.u32(), let h = r.u64(), let c = r.u32() else { return nil }
            var e = Entry(gen: g, hash: h, count: c & ~Entry.trimmedBit)
            if c & Entry.trimmedBit != 0 {
                guard let lo = r.u32(), let hi = r.u32() else { return nil }
                e.lo = lo
                e.hi = hi
            }
            index.append(e)
        }
        self.index = index
        func items() -> [[UInt8]]? {
            guard let k = r.u32() else { return nil }
            var out: [[UInt8]] = []
            out.reserveCapacity(Int(min(k, 1 << 16)))
            for _ in 0..<k {
                guard let b = r.blob() else { return nil }
                out.append(b)
            }
            return out
        }
        guard let f = items(), let k = items(), r.atEnd else { return nil }
        self.front = f
        self.back = k
    }

    public var encoded: [UInt8] {
        var w = ByteWriter()
        w.bytes.reserveCapacity(
            32 + index.count * 16 + front.reduce(0) { $0 + 4 + $1.count }
                + back.reduce(0) { $0 + 4 + $1.count })
        w.u32(Self.marker)
        w.u8(Self.version)
        w.u64(nonce)
        w.u32(gen)
        w.u32(UInt32(bucketElements))
        w.u32(UInt32(bucketBytes))
        w.u32(UInt32(index.count))
        for e in index {
            w.u32(e.gen)
            w.u64(e.hash)
            if e.lo == 0 && e.hi == 0 {
                w.u32(e.count)
            } else {
                w.u32(e.count | Entry.trimmedBit)
                w.u32(e.lo)
                w.u32(e.hi)
            }
        }
        w.u32(UInt32(front.count))
        for b in front { w.blob(b) }
        w.u32(UInt32(back.count))
        for b in back { w.blob(b) }
        return w.bytes
    }

    // MARK: - Bucket keys and values

    static let bucketPrefix: [UInt8] = Array("\0lb:".utf8)
    /// The prefix of every bucket key (the repair scan hands these to the list collector).
    public static var bucketKeyPrefix: [UInt8] { bucketPrefix }

    /// `\0lb:` | XXH64(list key) | nonce | gen | hash (big-endian, fixed size: a list key of any
    /// length has bucket keys of 32 bytes).
    public static func bucketKey(list key: [UInt8], nonce: UInt64, entry e: Entry) -> [UInt8] {
        var out = bucketPrefix
        func be64(_ v: UInt64) {
            for k in (0..<8).reversed() { out.append(UInt8(truncatingIfNeeded: v >> (8 * k))) }
        }
        be64(XXH64.hash(key))
        be64(nonce)
        for k in (0..<4).reversed() { out.append(UInt8(truncatingIfNeeded: e.gen >> (8 * k))) }
        be64(e.hash)
        return out
    }

    /// A bucket key's parts (nil: not a bucket key).
    public static func parseBucketKey(_ k: [UInt8]) -> (
        keyHash: UInt64, nonce: UInt64, gen: UInt32, hash: UInt64
    )? {
        guard k.count == 32, k.starts(with: bucketPrefix) else { return nil }
        func be(_ at: Int, _ n: Int) -> UInt64 { k[at..<(at + n)].reduce(0) { $0 << 8 | UInt64($1) } }
        return (be(4, 8), be(12, 8), UInt32(be(20, 4)), be(24, 8))
    }

    /// A bucket's stored value: `u8 1 | blob list key | element encoding`. The list key lets the
    /// collector find the head.
    public static func bucketValue(list key: [UInt8], encoding: [UInt8]) -> [UInt8] {
        var w = ByteWriter()
        w.bytes.reserveCapacity(9 + key.count + encoding.count)
        w.u8(1)
        w.blob(key)
        w.bytes += encoding
        return w.bytes
    }

    /// A bucket value's list key and elements, if its elements hash to `hash` (nil otherwise:
    /// damaged, or not this bucket).
    public static func parseBucketValue(_ v: [UInt8], hash: UInt64?) -> (list: [UInt8], items: [[UInt8]])? {
        var r = ByteReader(v)
        guard r.u8() == 1, let key = r.blob() else { return nil }
        let encoding = Array(v[r.at...])
        if let hash, XXH64.hash(encoding) != hash { return nil }
        return (key, DataModel.decodeItems(encoding))
    }

    // MARK: - What the shell must do first

    /// An operation that cannot run on the head as it is answers one of these (as an error reply
    /// the shell never shows a client) and changes nothing; the shell does the work and runs the
    /// operation again under a fresh request id.
    public enum Need: Sendable, Hashable {
        /// The end's segment (or a plain list) is full: write buckets, then `lseal`.
        case seal(left: Bool)
        /// A pop needs the elements of the end bucket back in the head (`lunseal`).
        case unseal(left: Bool)
        /// The command works on the whole list: make it one value again (`ljoin`).
        case join
    }
    static let needPrefix = "TERNLIST "

    static func reply(_ n: Need) -> DataReply {
        switch n {
        case .seal(let left): .error(needPrefix + (left ? "seal left" : "seal right"))
        case .unseal(let left): .error(needPrefix + (left ? "unseal left" : "unseal right"))
        case .join: .error(needPrefix + "join")
        }
    }

    /// The need an operation's reply names, if it names one.
    public static func need(_ r: DataReply) -> Need? {
        guard case .error(let s) = r, s.hasPrefix(needPrefix) else { return nil }
        switch s.dropFirst(needPrefix.count) {
        case "seal left": return .seal(left: true)
        case "seal right": return .seal(left: false)
        case "unseal left": return .unseal(left: true)
        case "unseal right": return .unseal(left: false)
        case "join": return .join
        default: return nil
        }
    }

    // MARK: - Sealing

    static func encodedSize(_ items: ArraySlice<[UInt8]>) -> Int { items.reduce(0) { $0 + 4 + $1.count } }

    /// A segment at this size (a quarter of a bucket, in elements or bytes) is full: a push to it
    /// asks for a seal first. Small end segments keep the head, which every push and pop rewrites,
    /// small; buckets still fill up to their bounds through merges (`sealPlan`).
    static func segmentFull(count: Int, bytes: Int, bucketElements be: Int, bucketBytes bb: Int) -> Bool {
        count >= max(2, be / 4) || bytes >= bb / 4
    }
    /// A segment at this size (a bucket and an eighth) refuses pushes until it is sealed: the
    /// bound on a head's size when the shell's own seals (after every few dozen pushes, at the
    /// quarter above) fall behind.
    static func segmentHardFull(count: Int, bytes: Int, bucketElements be: Int, bucketBytes bb: Int) -> Bool {
        count >= be + be / 8 || bytes >= bb + bb / 8
    }
    /// Whether an end segment is low enough that the shell, after pops, brings back part of its
    /// end bucket before they empty it (a sixteenth of a bucket, 64 elements: the node looks every
    /// 8 pops, the upkeep takes a round or two of the key, and a pop that finds the end empty waits
    /// for it).
    public func endLow(left: Bool) -> Bool {
        !index.isEmpty && (left ? front : back).count < Self.lowMark(bucketElements)
    }
    static func lowMark(_ bucketElements: Int) -> Int { max(1, bucketElements / 16) }

    /// Whether the upkeep of head `b` has work, read on its bytes without decoding an element
    /// (the node's check after every few pushes or pops, `Node.noteListOp`): after pushes, an end
    /// segment full (`full`); after pops, end `left` low (`endLow`). Nil: not a head.
    public static func upkeepDue(_ b: [UInt8], push: Bool, left: Bool) -> Bool? {
        guard isHead(b), b.count >= 29, versions.contains(b[4]), let l = ListBytes.layout(b) else {
            return nil
        }
        let (be, bb) = (l.bucketElements, l.bucketBytes)
        if push {
            return segmentFull(
                count: l.nf, bytes: l.backAt - l.frontAt - 4, bucketElements: be, bucketBytes: bb)
                || segmentFull(
                    count: l.nk, bytes: b.count - l.backAt - 4, bucketElements: be, bucketBytes: bb)
        }
        return l.nIndex > 0 && (left ? l.nf : l.nk) < lowMark(be)
    }
    /// A partial unseal of the end bucket, whose elements in the list are `items` (the node's own
    /// upkeep, ahead of the pops): how many of its outer elements move into the head — a sixteenth
    /// of a bucket, in elements and bytes. The bucket stays as it is, its entry trimmed by that
    /// many (`lunseal … take`): nothing is written but the head. Nil: the rest is small enough to
    /// come back whole. Pops that run the end low then carry a head of a hundred or so elements, not
    /// a whole bucket's worth (the whole bucket back, a pop run rewrote up to a bucket of elements
    /// with every pop: `LPOP` ran at 0.55× SET).
    public func unsealTake(left: Bool, items: ArraySlice<[UInt8]>) -> Int? {
        let target = max(1, bucketElements / 16)
        guard items.count > target else { return nil }
        var n = 0
        var bytes = 0
        while n < target {
            let e = left ? items[items.startIndex + n] : items[items.endIndex - 1 - n]
            if n > 0 && bytes + 4 + e.count > bucketBytes / 16 { break }
            bytes += 4 + e.count
            n += 1
        }
        return n
    }

    public func full(_ items: [[UInt8]]) -> Bool {
        Self.segmentFull(
            count: items.count, bytes: Self.encodedSize(items[...]), bucketElements: bucketElements,
            bucketBytes: bucketBytes)
    }
    /// The same for a plain list (the defaults).
    public static func plainFull(_ items: [[UInt8]]) -> Bool {
        items.count >= plainElementsMax || encodedSize(items[...]) >= plainBytesMax
    }

    /// What a seal of one end does.
    public enum SealPlan: Sendable, Hashable {
        /// Nothing: the end is not full.
        case none
        /// New buckets, cut from the end segment's inner elements, innermost first, each in list
        /// order (`lseal`).
        case seal([[[UInt8]]])
        /// The end segment's inner elements joined to the end bucket `old` (whose stored elements
        /// are `oldItems`; those in the list, if it is trimmed, fewer): one new bucket, `items`,
        /// replaces it (`lmerge`).
        case merge(old: Entry, oldItems: [[UInt8]], items: [[UInt8]])
    }

    /// Whether `sealPlan` of this end needs the end bucket's elements (it may merge into it).
    public func sealNeedsEndBucket(left: Bool) -> Bool {
        full(left ? front : back) && !index.isEmpty
    }

    /// The seal of one end: its segment keeps its outer sixteenth of a bucket (elements and bytes);
    /// the inner rest joins the end bucket when both fit in one bucket, else becomes new buckets.
    /// `endItems`: the end bucket's stored elements (nil: no end bucket, or not read).
    /// Deterministic.
    public func sealPlan(left: Bool, endItems: [[UInt8]]?) -> SealPlan {
        let seg = left ? front : back
        guard full(seg) else { return .none }
        // The outer elements that stay: the front's start, the back's end.
        var keep = 0
        var keptBytes = 0
        while keep < seg.count - 1 && keep < bucketElements / 16 {
            let e = left ? seg[keep] : seg[seg.count - 1 - keep]
            if keptBytes + 4 + e.count > bucketBytes / 16 { break }
            keptBytes += 4 + e.count
            keep += 1
        }
        let inner = left ? Array(seg.suffix(seg.count - keep)) : Array(seg.prefix(seg.count - keep))
        if let endItems, let old = left ? index.first : index.last, let visible = old.visible(endItems),
            Int(old.count) + inner.count <= bucketElements,
            Self.encodedSize(visible) + Self.encodedSize(inner[...]) <= bucketBytes
        {
            return .merge(
                old: old, oldItems: endItems, items: left ? inner + Array(visible) : Array(visible) + inner)
        }
        // New buckets from the inner side: the front's end, the back's start.
        var rest = inner
        var chunks: [[[UInt8]]] = []
        while !rest.isEmpty {
            var n = 0
            var bytes = 0
            while n < rest.count && n < bucketElements {
                let e = left ? rest[rest.count - 1 - n] : rest[n]
                if n > 0 && bytes + 4 + e.count > bucketBytes { break }
                bytes += 4 + e.count
                n += 1
            }
            if left {
                chunks.append(Array(rest.suffix(n)))
                rest.removeLast(n)
            } else {
                chunks.append(Array(rest.prefix(n)))
                rest.removeFirst(n)
            }
        }
        return .seal(chunks)
    }

    /// `lmerge`: replaces the end bucket `oldHash` (whose stored elements `oldItems` the op
    /// carries) with the bucket `newHash` of `newCount` elements: the segment's inner
    /// `newCount - old count` elements joined to the old bucket's elements in the list. Applies
    /// only at generation `gen`, if the end bucket is still that one and every hash matches;
    /// raises the generation.
    mutating func merge(
        left: Bool, gen g: UInt32, oldHash: UInt64, oldItems: [[UInt8]], newCount: Int, newHash: UInt64
    ) -> Bool {
        guard g == gen, let old = left ? index.first : index.last, old.hash == oldHash,
            let visible = old.visible(oldItems), newCount > visible.count
        else { return false }
        let k = newCount - visible.count
        let seg = left ? front : back
        guard k <= seg.count else { return false }
        let inner = left ? Array(seg.suffix(k)) : Array(seg.prefix(k))
        let items: [[UInt8]] = left ? inner + Array(visible) : Array(visible) + inner
        guard XXH64.hash(DataModel.encodeItems(items)) == newHash else { return false }
        let e = Entry(gen: gen, hash: newHash, count: UInt32(newCount))
        if left {
            front.removeLast(k)
            index[0] = e
        } else {
            back.removeFirst(k)
            index[index.count - 1] = e
        }
        gen &+= 1
        return true
    }

    /// `lseal`: moves the inner chunks of one end (counts and hashes as the sealer computed them
    /// from the head at generation `gen`) into the index. Applies only if the head is still at
    /// that generation and holds those elements there; raises the generation.
    mutating func seal(left: Bool, gen g: UInt32, chunks: [(count: Int, hash: UInt64)]) -> Bool {
        guard g == gen, !chunks.isEmpty else { return false }
        var rest = left ? front : back
        var entries: [Entry] = []
        for (i, c) in chunks.enumerated() {
            guard c.count >= 1, c.count <= rest.count else { return false }
            let items = left ? Array(rest.suffix(c.count)) : Array(rest.prefix(c.count))
            guard XXH64.hash(DataModel.encodeItems(items)) == c.hash else { return false }
            if left { rest.removeLast(c.count) } else { rest.removeFirst(c.count) }
            // Chunk i at generation `gen + i`: chunks with the same elements (a run of one
            // repeated element) must not share a key, or deleting one deletes the others.
            entries.append(Entry(gen: gen &+ UInt32(i), hash: c.hash, count: UInt32(c.count)))
        }
        if left {
            front = rest
            index.insert(contentsOf: entries.reversed(), at: 0)
        } else {
            back = rest
            index += entries
        }
        gen &+= UInt32(chunks.count)
        return true
    }

    /// A bucket key that no head reaches and none ever will: the head is gone, is not this
    /// incarnation's (another nonce, or a plain value), or is past the bucket's generation and
    /// does not list it. A bucket at or above the head's generation may be a seal in flight:
    /// kept.
    public static func isOrphan(bucketKey: [UInt8], head: StoredValue?) -> Bool {
        guard let p = parseBucketKey(bucketKey) else { return false }
        guard let head, head.kind == .list, let h = ListBuckets(head.bytes), h.nonce == p.nonce else {
            return true
        }
        if p.gen >= h.gen { return false }
        return !h.index.contains { $0.gen == p.gen && $0.hash == p.hash }
    }
}

extension DataModel {
    // MARK: - Lists in buckets (applied by the proposer, like every data command)

    /// Commands a bucketed head serves as it is; every other command that reaches one (LSET,
    /// LREM, a transaction, a script's copy …) first has it made one value again (`join`).
    static let headCommands: Set<String> = [
        "lpush", "rpush", "lpushx", "rpushx", "lpop", "rpop", "lsegment", "lseal", "lmerge", "lunseal",
        "ljoin", "del",
        "set", "pexpireat", "persist", "expirecheck",
    ]

    /// `apply` for a key that may hold a bucketed list (top-level keys only: a hash-tag group's
    /// members stay plain). Nil: not this code's business, apply as usual.
    static func applyListBuckets(_ name: String, _ args: [[UInt8]], _ v: inout KeyValue) -> DataReply? {
        let isHead = v.kind == .list && ListBuckets.isHead(v.bytes)
        switch name {
        case "lsegment":
            // lsegment k nonce bucketElements bucketBytes
            guard args.count == 5, let nonce = UInt64(String(decoding: args[2], as: UTF8.self)),
                let be = int(args[3]), let bb = int(args[4])
            else { return .syntax }
            guard v.kind == .list, let b = v.bytes, !isHead else { return .integer(0) }
            let h = ListBuckets(
                nonce: nonce, bucketElements: Int(be), bucketBytes: Int(bb), items: decodeItems(b))
            v.bytes = h.encoded
            return .integer(1)
        case "lseal":
            // lseal k nonce gen left|right (count hash)…
            guard isHead, var h = ListBuckets(v.bytes!), args.count >= 7, (args.count - 5) % 2 == 0,
                UInt64(String(decoding: args[2], as: UTF8.self)) == h.nonce,
                let g = UInt32(String(decoding: args[3], as: UTF8.self))
            else { return .integer(0) }
            var chunks: [(count: Int, hash: UInt64)] = []
            var i = 5
            while i + 1 < args.count {
                guard let c = Int(String(decoding: args[i], as: UTF8.self)),
                    let hh = UInt64(String(decoding: args[i + 1], as: UTF8.self))
                else { return .syntax }
                chunks.append((c, hh))
                i += 2
            }
            guard h.seal(left: args[4] == Array("left".utf8), gen: g, chunks: chunks) else {
                return .integer(0)
            }
            v.bytes = h.encoded
            return .integer(1)
        case "lmerge":
            // lmerge k nonce gen left|right newCount newHash oldHash oldEncoding
            guard isHead, var h = ListBuckets(v.bytes!), args.count == 9,
                UInt64(String(decoding: args[2], as: UTF8.self)) == h.nonce,
                let g = UInt32(String(decoding: args[3], as: UTF8.self)),
                let newCount = Int(String(decoding: args[5], as: UTF8.self)),
                let newHash = UInt64(String(decoding: args[6], as: UTF8.self)),
                let oldHash = UInt64(String(decoding: args[7], as: UTF8.self)), XXH64.hash(args[8]) == oldHash
            else { return .integer(0) }
            guard
                h.merge(
                    left: args[4] == Array("left".utf8), gen: g, oldHash: oldHash,
                    oldItems: decodeItems(args[8]),
                    newCount: newCount, newHash: newHash)
            else { return .integer(0) }
            v.bytes = h.encoded
            return .integer(1)
        case "lunseal":
            // lunseal k nonce left|right hash encoding [take]: the end bucket's elements in the list
            // (its stored `encoding`, trimmed as its entry says) back into the head, the bucket out
            // of the index; with `take`, only its outer `take` elements, the entry trimmed by them
            // (`ListBuckets.unsealTake`: the bucket itself stays as it is).
            guard isHead, var h = ListBuckets(v.bytes!), args.count == 6 || args.count == 7,
                UInt64(String(decoding: args[2], as: UTF8.self)) == h.nonce,
                let hash = UInt64(String(decoding: args[4], as: UTF8.self)), XXH64.hash(args[5]) == hash
            else { return .integer(0) }
            let left = args[3] == Array("left".utf8)
            // The elements in the list read straight from the encoding (a bucket of up to 1 024
            // elements, brought back a sixteenth at a time: decoding it whole each time cost more
            // than the pops between).
            let enc = args[5]
            guard var end = left ? h.index.first : h.index.last, end.hash == hash, enc.count >= 4,
                ListBytes.u32(enc, 0) == end.stored, let first = ListBytes.skip(enc, 4, Int(end.lo)),
                ListBytes.skip(enc, first, Int(end.count) + Int(end.hi)) == enc.count
            else { return .integer(0) }
            let visible = ListBytes.read(enc, first, Int(end.count))
            if args.count == 7 {
                guard let take = Int(String(decoding: args[6], as: UTF8.self)), take >= 1,
                    take < visible.count
                else { return .integer(0) }
                end.count -= UInt32(take)
                if left {
                    h.front += visible.prefix(take)
                    end.lo += UInt32(take)
                    h.index[0] = end
                } else {
                    h.back = Array(visible.suffix(take)) + h.back
                    end.hi += UInt32(take)
                    h.index[h.index.count - 1] = end
                }
            } else if left {
                h.index.removeFirst()
                h.front += visible
            } else {
                h.index.removeLast()
                h.back = Array(visible) + h.back
            }
            settleHead(h, &v)
            return .integer(1)
        case "ljoin":
            // ljoin k nonce encoding…: every bucket, in index order; the list becomes one value.
            guard isHead, let h = ListBuckets(v.bytes!), args.count == 3 + h.index.count,
                UInt64(String(decoding: args[2], as: UTF8.self)) == h.nonce
            else { return .integer(0) }
            var all = h.front
            for (k, e) in h.index.enumerated() {
                let enc = args[3 + k]
                guard XXH64.hash(enc) == e.hash, let items = e.visible(decodeItems(enc)) else {
                    return .integer(0)
                }
                all += items
            }
            all += h.back
            v.bytes = encodeItems(all)
            return .integer(1)
        default:
            break
        }
        guard isHead else { return nil }
        if let r = applyHeadEnds(name, args, &v) { return r }
        guard headCommands.contains(name), var h = ListBuckets(v.bytes!) else {
            return ListBuckets.reply(.join)
        }
        switch name {
        case "lpush", "rpush", "lpushx", "rpushx":
            let left = name.hasPrefix("l")
            let seg = left ? h.front : h.back
            if ListBuckets.segmentHardFull(
                count: seg.count, bytes: ListBuckets.encodedSize(seg[...]), bucketElements: h.bucketElements,
                bucketBytes: h.bucketBytes)
            {
                return ListBuckets.reply(.seal(left: left))
            }
            if left {
                h.front.insert(contentsOf: args.dropFirst(2).reversed(), at: 0)
            } else {
                h.back += args.dropFirst(2)
            }
            v.bytes = h.encoded
            return .integer(Int64(h.count))
        case "lpop", "rpop":
            let left = name == "lpop"
            let want = args.count > 2 ? Int(int(args[2]) ?? 0) : 1
            let n = min(max(0, want), h.count)
            let side = left ? h.front.count : h.back.count
            if n > side && !h.index.isEmpty {
                return ListBuckets.reply(n > h.bucketElements ? .join : .unseal(left: left))
            }
            var taken: [[UInt8]] = []
            taken.reserveCapacity(n)
            for _ in 0..<n {
                if left {
                    taken.append(h.front.isEmpty ? h.back.removeFirst() : h.front.removeFirst())
                } else {
                    taken.append(h.back.isEmpty ? h.front.removeLast() : h.back.removeLast())
                }
            }
            settleHead(h, &v)
            if args.count > 2 { return .array(taken.map { .bulk($0) }) }
            return .bulk(taken.first)
        default:
            // del, set, the deadline commands: the head is an ordinary value to them.
            return nil
        }
    }

    /// Stores a changed head: removes an emptied list (Redis deletes the key), and makes a small
    /// list without buckets one value again.
    static func settleHead(_ h: ListBuckets, _ v: inout KeyValue) {
        if h.count == 0 {
            clear(&v)
        } else if h.index.isEmpty && h.count <= h.bucketElements / 4 {
            v.bytes = encodeItems(h.front + h.back)
        } else {
            v.bytes = h.encoded
        }
    }

    /// A push to a plain list that is already full answers `seal` (the shell makes it bucketed,
    /// then pushes again). Only for top-level keys (`apply`'s `lists`).
    static func plainListNeed(_ name: String, _ v: KeyValue) -> DataReply? {
        guard ["lpush", "rpush", "lpushx", "rpushx"].contains(name), v.kind == .list, let b = v.bytes,
            !ListBuckets.isHead(b), plainListFull(b)
        else { return nil }
        return ListBuckets.reply(.seal(left: name.hasPrefix("l")))
    }

    /// Whether a plain list's encoding `b` is full (`ListBuckets.plainElementsMax`,
    /// `plainBytesMax`), read cheaply: the element count is the encoding's first word.
    public static func plainListFull(_ b: [UInt8]) -> Bool {
        let n = b.count >= 4 ? Int(b[0]) | Int(b[1]) << 8 | Int(b[2]) << 16 | Int(b[3]) << 24 : 0
        return n >= ListBuckets.plainElementsMax || b.count >= ListBuckets.plainBytesMax
    }

    // MARK: - Reads of a bucketed head

    /// What a read of a bucketed list needs: its answer now, the buckets (index positions) that
    /// hold the elements it returns, or the whole list.
    public enum ListReadPlan: Sendable, Hashable {
        case answer(DataReply)
        case buckets([Int])
        case whole
    }

    /// The plan for read `args` on head `h` (LLEN, LINDEX, LRANGE from the head; the rest whole).
    public static func listReadPlan(_ args: [[UInt8]], _ h: some ListHeadReading) -> ListReadPlan {
        guard let first = args.first else { return .whole }
        switch String(decoding: first, as: UTF8.self) {
        case "llen":
            return .answer(.integer(Int64(h.count)))
        case "lindex":
            guard args.count == 3, var i = int(args[2]) else { return .answer(.notInteger) }
            if i < 0 { i += Int64(h.count) }
            guard i >= 0, i < h.count else { return .answer(.bulk(nil)) }
            let needed = h.buckets(Int(i)...Int(i))
            if needed.isEmpty { return .answer(.bulk(h.elements(Int(i)...Int(i), [:])[0])) }
            return .buckets(needed)
        case "lrange":
            guard args.count == 4, let s = int(args[2]), let e = int(args[3]) else {
                return .answer(.notInteger)
            }
            guard let r = rankRange(s, e, count: h.count) else { return .answer(.array([])) }
            let needed = h.buckets(r)
            if needed.isEmpty { return .answer(.array(h.elements(r, [:]).map { .bulk($0) })) }
            return .buckets(needed)
        default:
            return .whole
        }
    }

    /// The answer of read `args` (LINDEX, LRANGE) given the buckets its plan named.
    public static func listAnswer(_ args: [[UInt8]], _ h: some ListHeadReading, _ fetched: [Int: [[UInt8]]])
        -> DataReply
    {
        switch listReadPlan(args, h) {
        case .answer(let r): return r
        case .whole: return .err("internal: a bucketed list read without its buckets")
        case .buckets:
            let name = String(decoding: args[0], as: UTF8.self)
            if name == "lindex" {
                var i = int(args[2]) ?? 0
                if i < 0 { i += Int64(h.count) }
                return .bulk(h.elements(Int(i)...Int(i), fetched).first)
            }
            let r = rankRange(int(args[2]) ?? 0, int(args[3]) ?? 0, count: h.count)!
            return .array(h.elements(r, fetched).map { .bulk($0) })
        }
    }
}

/// What a read needs of a head: its length, its index, and the elements at some positions.
public protocol ListHeadReading {
    var count: Int { get }
    /// The incarnation's nonce (part of its buckets' keys).
    var headNonce: UInt64 { get }
    /// Elements before the first bucket.
    var frontCount: Int { get }
    var index: [ListBuckets.Entry] { get }
    /// The index positions of the buckets that hold positions `r` of the list.
    func buckets(_ r: ClosedRange<Int>) -> [Int]
    /// The elements at positions `r`, from the head and the buckets in `fetched`.
    func elements(_ r: ClosedRange<Int>, _ fetched: [Int: [[UInt8]]]) -> [[UInt8]]
}

extension ListHeadReading {
    public func buckets(_ r: ClosedRange<Int>) -> [Int] {
        var out: [Int] = []
        var at = frontCount
        for (k, e) in index.enumerated() {
            let span = at..<(at + Int(e.count))
            if span.overlaps(r) { out.append(k) }
            at += Int(e.count)
            if at > r.upperBound { break }
        }
        return out
    }
}

/// A bucketed head read without decoding its end segments: reads pick the elements they return
/// straight from the bytes (an LRANGE of 100 on a head whose segments hold ~1 000 elements each).
public struct ListHeadView: ListHeadReading, Sendable {
    public let nonce: UInt64
    public let index: [ListBuckets.Entry]
    let bytes: [UInt8]
    let frontAt: Int
    let nf: Int
    let backAt: Int
    let nk: Int
    public let count: Int
    public var frontCount: Int { nf }
    public var headNonce: UInt64 { nonce }

    public init?(_ b: [UInt8]) {
        guard ListBuckets.isHead(b), b.count >= 29, ListBuckets.versions.contains(b[4]),
            let l = ListBytes.layout(b), ListBytes.skip(b, l.backAt + 4, l.nk) == b.count
        else { return nil }
        nonce = ListBytes.u64(b, 5)
        var index: [ListBuckets.Entry] = []
        index.reserveCapacity(l.nIndex)
        var at = 29
        while at < l.frontAt, let (e, next) = ListBytes.entry(b, at) {
            index.append(e)
            at = next
        }
        self.index = index
        frontAt = l.frontAt
        nf = l.nf
        backAt = l.backAt
        nk = l.nk
        bytes = b
        count = l.total
    }

    public func elements(_ r: ClosedRange<Int>, _ fetched: [Int: [[UInt8]]]) -> [[UInt8]] {
        var out: [[UInt8]] = []
        out.reserveCapacity(r.count)
        func segment(_ at: Int, _ n: Int, from start: Int) {
            let lo = max(r.lowerBound, start)
            let hi = min(r.upperBound, start + n - 1)
            guard lo <= hi, let first = ListBytes.skip(bytes, at + 4, lo - start) else { return }
            out += ListBytes.read(bytes, first, hi - lo + 1)
        }
        segment(frontAt, nf, from: 0)
        var at = nf
        for (k, e) in index.enumerated() {
            if at + Int(e.count) > r.lowerBound && at <= r.upperBound,
                let items = fetched[k].flatMap(e.visible)
            {
                let lo = max(r.lowerBound, at)
                let hi = min(r.upperBound, at + items.count - 1)
                let base = items.startIndex - at
                if lo <= hi { out += items[(base + lo)...(base + hi)] }
            }
            at += Int(e.count)
        }
        segment(backAt, nk, from: at)
        return out
    }
}

extension ListBuckets: ListHeadReading {
    public var frontCount: Int { front.count }
    public var headNonce: UInt64 { nonce }

    /// The elements at positions `r`, from the head and the buckets in `fetched` (stored elements,
    /// by index position; it must hold every bucket `buckets(r)` names).
    public func elements(_ r: ClosedRange<Int>, _ fetched: [Int: [[UInt8]]]) -> [[UInt8]] {
        var out: [[UInt8]] = []
        out.reserveCapacity(r.count)
        func take(_ items: ArraySlice<[UInt8]>, from start: Int) {
            let lo = max(r.lowerBound, start)
            let hi = min(r.upperBound, start + items.count - 1)
            guard lo <= hi else { return }
            let base = items.startIndex - start
            out += items[(base + lo)...(base + hi)]
        }
        take(front[...], from: 0)
        var at = front.count
        for (k, e) in index.enumerated() {
            if at + Int(e.count) > r.lowerBound && at <= r.upperBound,
                let items = fetched[k].flatMap(e.visible)
            {
                take(items, from: at)
            }
            at += Int(e.count)
        }
        take(back[...], from: at)
        return out
    }

    /// The whole list, given every bucket's stored elements (index order).
    public func assembled(_ buckets: [[[UInt8]]]) -> [[UInt8]] {
        var all = front
        for (e, b) in zip(index, buckets) { all += e.visible(b) ?? [] }
        return all + back
    }
}

// MARK: - Pushes and pops on the encoded bytes

/// Pushes and pops at the ends of a list without decoding it: a plain list (`u32 n | blob…`) or a
/// bucketed head's end segment is edited in place on its bytes (one copy of the value, no array
/// per element). The decoded paths (`applyList`, `applyListBuckets`) give the same bytes; these are
/// what a hot list's merged pushes and pops run (a head's segments hold up to ~1 150 elements, and
/// decoding them for every op cost most of a push's CPU).
enum ListBytes {
    static func u32(_ b: [UInt8], _ at: Int) -> Int {
        Int(b[at]) | Int(b[at + 1]) << 8 | Int(b[at + 2]) << 16 | Int(b[at + 3]) << 24
    }
    static func u64(_ b: [UInt8], _ at: Int) -> UInt64 {
        UInt64(truncatingIfNeeded: u32(b, at)) | UInt64(truncatingIfNeeded: u32(b, at + 4)) << 32
    }
    /// The index entry at offset `at` of a head's bytes (16 bytes; 24 when the count word carries
    /// `Entry.trimmedBit`, `lo` and `hi` following) and the offset just past it. Nil: the bytes
    /// end first.
    static func entry(_ b: [UInt8], _ at: Int) -> (entry: ListBuckets.Entry, next: Int)? {
        guard at + 16 <= b.count else { return nil }
        let c = UInt32(u32(b, at + 12))
        var e = ListBuckets.Entry(
            gen: UInt32(u32(b, at)), hash: u64(b, at + 4), count: c & ~ListBuckets.Entry.trimmedBit)
        let next = at + entrySize(countWord: c)
        guard next <= b.count else { return nil }
        if next > at + 16 {
            e.lo = UInt32(u32(b, at + 16))
            e.hi = UInt32(u32(b, at + 20))
        }
        return (e, next)
    }

    /// The bytes of an index entry whose count word is `c`.
    static func entrySize(countWord c: UInt32) -> Int { c & ListBuckets.Entry.trimmedBit != 0 ? 24 : 16 }

    /// Where a head's parts lie in its bytes: its bucket bounds, the index (count word at 25,
    /// entries from 29 to `frontAt`), the front segment (count word at `frontAt`), the back one
    /// (count word at `backAt`, blobs to the end).
    struct Layout {
        var bucketElements: Int
        var bucketBytes: Int
        var nIndex: Int
        var frontAt: Int
        var nf: Int
        var backAt: Int
        var nk: Int
        /// The elements the index's buckets hold in the list.
        var inBuckets: Int
        var total: Int { nf + nk + inBuckets }
    }

    /// The layout of head `b` (its marker and version checked by the caller). Nil: the bytes end
    /// before a part does.
    static func layout(_ b: [UInt8]) -> Layout? {
        guard b.count >= 29 else { return nil }
        let n = u32(b, 25)
        var at = 29
        var inBuckets = 0
        // On every push and pop: the count words only, no entry built.
        for _ in 0..<n {
            guard at + 16 <= b.count else { return nil }
            let c = UInt32(u32(b, at + 12))
            inBuckets += Int(c & ~ListBuckets.Entry.trimmedBit)
            at += entrySize(countWord: c)
        }
        guard at + 4 <= b.count else { return nil }
        let nf = u32(b, at)
        guard let backAt = skip(b, at + 4, nf), backAt + 4 <= b.count else { return nil }
        return Layout(
            bucketElements: u32(b, 17), bucketBytes: u32(b, 21), nIndex: n, frontAt: at, nf: nf,
            backAt: backAt,
            nk: u32(b, backAt), inBuckets: inBuckets)
    }
    static func putU32(_ b: inout [UInt8], _ v: Int) {
        for k in 0..<4 { b.append(UInt8(truncatingIfNeeded: v >> (8 * k))) }
    }
    static func setU32(_ b: inout [UInt8], _ at: Int, _ v: Int) {
        for k in 0..<4 { b[at + k] = UInt8(truncatingIfNeeded: v >> (8 * k)) }
    }
    static func blobs(_ b: inout [UInt8], _ items: some Sequence<[UInt8]>) {
        for i in items {
            putU32(&b, i.count)
            b += i
        }
    }
    /// The offset just past `n` blobs starting at `at` (nil: the bytes end first).
    static func skip(_ b: [UInt8], _ at: Int, _ n: Int) -> Int? {
        var p = at
        for _ in 0..<n {
            guard p + 4 <= b.count else { return nil }
            p += 4 + u32(b, p)
        }
        return p <= b.count ? p : nil
    }
    /// The `n` blobs starting at `at`.
    static func read(_ b: [UInt8], _ at: Int, _ n: Int) -> [[UInt8]] {
        var out: [[UInt8]] = []
        out.reserveCapacity(n)
        var p = at
        for _ in 0..<n {
            let len = u32(b, p)
            out.append(Array(b[(p + 4)..<(p + 4 + len)]))
            p += 4 + len
        }
        return out
    }

    /// Pushes `items` at the start (in the order given: LPUSH's reversed arguments) or the end of
    /// the segment whose count word is at `at` and whose blobs end at `end`, in place: on a value
    /// no one else holds, the bytes after the segment's edge move and nothing is allocated (a
    /// copy per op, of a head of a few KiB, was most of a pop's extra CPU over a SET's).
    static func push(_ b: inout [UInt8], segment at: Int, end: Int, _ items: [[UInt8]], atStart: Bool) {
        var added: [UInt8] = []
        added.reserveCapacity(items.reduce(0) { $0 + 4 + $1.count })
        blobs(&added, items)
        setU32(&b, at, u32(b, at) + items.count)
        b.insert(contentsOf: added, at: atStart ? at + 4 : end)
    }

    /// Pops `n` elements from the start or the end of the segment (count word at `at`, blobs up
    /// to `end`), in place: the popped elements in pop order (LPOP: first first; RPOP: last
    /// first). Nil (and nothing changed): the segment holds fewer.
    static func pop(_ b: inout [UInt8], segment at: Int, end: Int, _ n: Int, fromStart: Bool) -> [[UInt8]]? {
        let count = u32(b, at)
        guard n <= count, let mid = skip(b, at + 4, fromStart ? n : count - n) else { return nil }
        let taken = fromStart ? read(b, at + 4, n) : read(b, mid, n).reversed()
        setU32(&b, at, count - n)
        b.removeSubrange(fromStart ? (at + 4)..<mid : mid..<end)
        return taken
    }
}

extension DataModel {
    /// LPUSH/RPUSH(X)/LPOP/RPOP on a plain list (or a push creating one), on its bytes. Nil: not
    /// one of these (the decoded `applyList` answers).
    static func applyPlainListEnds(_ name: String, _ args: [[UInt8]], _ v: inout KeyValue) -> DataReply? {
        guard v.bytes == nil || v.kind == .list, !ListBuckets.isHead(v.bytes) else { return nil }
        switch name {
        case "lpush", "rpush", "lpushx", "rpushx":
            guard var b = v.bytes else {
                if name.hasSuffix("x") { return .integer(0) }
                let items =
                    name.hasPrefix("l") ? Array(args.dropFirst(2).reversed()) : Array(args.dropFirst(2))
                store(&v, .list, encodeItems(items), empty: false)
                return .integer(Int64(items.count))
            }
            guard b.count >= 4 else { return nil }
            let left = name.hasPrefix("l")
            let items = left ? Array(args.dropFirst(2).reversed()) : Array(args.dropFirst(2))
            v.bytes = nil  // b alone holds the bytes: changed in place
            ListBytes.push(&b, segment: 0, end: b.count, items, atStart: left)
            v.bytes = b
            return .integer(Int64(ListBytes.u32(b, 0)))
        case "lpop", "rpop":
            guard var b = v.bytes else { return args.count > 2 ? .array(nil) : .bulk(nil) }
            guard b.count >= 4 else { return nil }
            let count = ListBytes.u32(b, 0)
            let n = args.count > 2 ? min(Int(int(args[2]) ?? 0), count) : min(1, count)
            guard n >= 0 else { return nil }
            v.bytes = nil  // b alone holds the bytes: changed in place
            guard let taken = ListBytes.pop(&b, segment: 0, end: b.count, n, fromStart: name == "lpop") else {
                v.bytes = b
                return nil
            }
            if n == count { clear(&v) } else { v.bytes = b }
            if args.count > 2 { return .array(taken.map { .bulk($0) }) }
            return .bulk(taken.first)
        default:
            return nil
        }
    }

    /// Pushes and pops on a bucketed head's end segments, on its bytes: nil where the decoded path
    /// must decide (a full segment, a pop reaching past its segment, a head about to become plain
    /// or empty).
    static func applyHeadEnds(_ name: String, _ args: [[UInt8]], _ v: inout KeyValue) -> DataReply? {
        guard var b = v.bytes, let l = ListBytes.layout(b) else { return nil }
        let (be, bb, nIndex, frontAt, nf, backAt, nk, total) = (
            l.bucketElements, l.bucketBytes, l.nIndex, l.frontAt, l.nf, l.backAt, l.nk, l.total
        )
        func full(_ count: Int, _ bytes: Int) -> Bool {
            ListBuckets.segmentHardFull(count: count, bytes: bytes, bucketElements: be, bucketBytes: bb)
        }
        switch name {
        case "lpush", "rpush", "lpushx", "rpushx":
            let left = name.hasPrefix("l")
            let full =
                left ? full(nf, backAt - frontAt - 4) : full(nk, b.count - backAt - 4)
            if full { return ListBuckets.reply(.seal(left: left)) }
            let items = left ? Array(args.dropFirst(2).reversed()) : Array(args.dropFirst(2))
            v.bytes = nil  // b alone holds the bytes: changed in place
            if left {
                ListBytes.push(&b, segment: frontAt, end: backAt, items, atStart: true)
            } else {
                ListBytes.push(&b, segment: backAt, end: b.count, items, atStart: false)
            }
            v.bytes = b
            return .integer(Int64(total + items.count))
        case "lpop", "rpop":
            let left = name == "lpop"
            let want = args.count > 2 ? Int(int(args[2]) ?? 0) : 1
            let n = min(max(0, want), total)
            guard n <= (left ? nf : nk), total - n > 0, !(nIndex == 0 && total - n <= be / 4) else {
                return nil
            }
            v.bytes = nil  // b alone holds the bytes: changed in place
            let popped =
                left
                ? ListBytes.pop(&b, segment: frontAt, end: backAt, n, fromStart: true)
                : ListBytes.pop(&b, segment: backAt, end: b.count, n, fromStart: false)
            v.bytes = b
            guard let taken = popped else { return nil }
            if args.count > 2 { return .array(taken.map { .bulk($0) }) }
            return .bulk(taken.first)
        default:
            return nil
        }
    }
}
