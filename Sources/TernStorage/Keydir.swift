import Foundation

/// Where the latest record of a key lives.
public struct RecordLocation: Equatable, Sendable {
    /// The engine's number for the data file (not its name; see `Bitcask`).
    public var file: UInt32
    /// Byte offset of the record in the file; files are capped below 4 GiB.
    public var offset: UInt32
    /// Length of the whole record (header, key, value).
    public var length: UInt32
    /// The record's timestamp (from `BitcaskOptions.clock`).
    public var timestamp: UInt64
}

/// The in-memory index key → location, built for a small per-key footprint.
///
/// A `Dictionary<[UInt8], RecordLocation>` costs ~90 bytes per key beyond the key (array object
/// header, malloc slack, and a 32-byte slot at 75% load). Here every key's bytes live once in one
/// arena, each key has a 32-byte `Slot` in a dense array, and an open-addressing table of 8-byte
/// entries (32-bit hash + slot index; linear probing, load ≤ 75%, backward-shift deletion) finds
/// it. Cost per key: 32 + 8/load ≈ 43-53 bytes plus the arrays' growth slack. Not thread-safe.
struct Keydir {
    struct Slot {
        /// Arena offset << 16 | key length.
        var keyRef: UInt64
        var timestamp: UInt64
        var file: UInt32
        var offset: UInt32
        var length: UInt32
        var hash: UInt32
    }

    private(set) var slots: [Slot] = []
    /// The caller's grouping of keys (`KeyPartitioning`), nil when none: each partition's slot
    /// indices, and per slot its partition << 32 | its position there (`noPartition`: in none).
    /// Kept on insert and removal, so a listing of some partitions reads only their keys.
    private let partitionOf: (@Sendable (UnsafeRawBufferPointer) -> Int?)?
    private var members: [[UInt32]] = []
    private var place: [UInt64] = []
    private static let noPartition = UInt64.max
    /// Open-addressing table: hash << 32 | (slot index + 1); 0 = empty. Keeping the hash here
    /// lets a probe reject a non-matching bucket without touching `slots` (a cache miss each).
    private var index: [UInt64] = [UInt64](repeating: 0, count: 16)
    private var arena: [UInt8] = []
    private var arenaGarbage = 0

    var count: Int { slots.count }

    init(partitioning: KeyPartitioning? = nil) {
        partitionOf = partitioning?.partition
        if let partitioning { members = Array(repeating: [], count: partitioning.count) }
    }

    /// The number of partitions (nil: keys are not partitioned).
    var partitionCount: Int? { partitionOf == nil ? nil : members.count }

    /// Calls `body` with the bytes of every key in the partitions of `range` (borrowed: valid
    /// during the call only), partition by partition, in no order within one.
    func forEachKey(inPartitions range: Range<Int>, _ body: (Int, UnsafeRawBufferPointer) throws -> Void)
        rethrows
    {
        try arena.withUnsafeBytes { a in
            for p in range.clamped(to: members.indices) {
                for s in members[p] {
                    let ref = slots[Int(s)].keyRef
                    try body(
                        p,
                        UnsafeRawBufferPointer(
                            rebasing: a[Int(ref >> 16)..<Int(ref >> 16) + Int(ref & 0xFFFF)]))
                }
            }
        }
    }

    /// Calls `body` with the bytes (borrowed) and the location of every key of partition `p`, in
    /// no order.
    func forEachEntry(inPartition p: Int, _ body: (UnsafeRawBufferPointer, RecordLocation) -> Void) {
        guard members.indices.contains(p) else { return }
        arena.withUnsafeBytes { a in
            for s in members[p] {
                let slot = slots[Int(s)]
                let ref = slot.keyRef
                body(
                    UnsafeRawBufferPointer(rebasing: a[Int(ref >> 16)..<Int(ref >> 16) + Int(ref & 0xFFFF)]),
                    location(of: slot))
            }
        }
    }

    /// Files a new slot (the last one) under its key's partition.
    private mutating func placeNew(_ key: UnsafeRawBufferPointer) {
        guard let partitionOf else { return }
        let s = UInt32(slots.count - 1)
        guard let p = partitionOf(key), members.indices.contains(p) else {
            place.append(Self.noPartition)
            return
        }
        place.append(UInt64(p) << 32 | UInt64(members[p].count))
        members[p].append(s)
    }

    /// Takes slot `i` out of its partition, then moves the last slot's entry to `i` (as `remove`
    /// moves the slot itself).
    private mutating func unplace(_ i: Int) {
        guard partitionOf != nil else { return }
        let e = place[i]
        if e != Self.noPartition {
            let p = Int(e >> 32)
            let pos = Int(UInt32(truncatingIfNeeded: e))
            let lastMember = members[p].removeLast()
            if Int(lastMember) != i {
                members[p][pos] = lastMember
                place[Int(lastMember)] = UInt64(p) << 32 | UInt64(pos)
            }
        }
        let last = place.count - 1
        if i != last {
            let moved = place[last]
            if moved != Self.noPartition {
                members[Int(moved >> 32)][Int(UInt32(truncatingIfNeeded: moved))] = UInt32(i)
            }
            place[i] = moved
        }
        place.removeLast()
    }

    /// Bytes this structure holds, including spare capacity (what the process pays for it).
    var memoryBytes: Int {
        slots.capacity * MemoryLayout<Slot>.stride + index.count * 8 + arena.capacity + place.capacity * 8
            + members.reduce(0) { $0 + $1.capacity * 4 }
    }
    /// The part of `memoryBytes` that is not key bytes: the overhead we publish.
    var overheadBytes: Int { memoryBytes - (arena.count - arenaGarbage) }

    static func hash(_ key: UnsafeRawBufferPointer) -> UInt64 {
        var h: UInt64 = 0x243F_6A88_85A3_08D3 ^ UInt64(key.count)
        var i = 0
        while key.count - i >= 8 {
            h = (h ^ key.loadUnaligned(fromByteOffset: i, as: UInt64.self)) &* 0x9E37_79B9_7F4A_7C15
            h ^= h >> 29
            i += 8
        }
        var tail: UInt64 = 0
        var shift: UInt64 = 0
        while i < key.count {
            tail |= UInt64(key[i]) << shift
            shift += 8
            i += 1
        }
        h = (h ^ tail) &* 0xBF58_476D_1CE4_E5B9
        h ^= h >> 31
        h = h &* 0x94D0_49BB_1331_11EB
        return h ^ (h >> 32)
    }

    private func keyEquals(_ slot: Slot, _ key: UnsafeRawBufferPointer) -> Bool {
        let length = Int(slot.keyRef & 0xFFFF)
        guard length == key.count else { return false }
        let start = Int(slot.keyRef >> 16)
        return arena.withUnsafeBytes { a in
            length == 0 || memcmp(a.baseAddress! + start, key.baseAddress!, length) == 0
        }
    }

    /// The bucket holding `key`, or the empty bucket where it would go.
    private func find(_ key: UnsafeRawBufferPointer, hash: UInt32) -> (bucket: Int, found: Bool) {
        let mask = index.count - 1
        var b = Int(hash) & mask
        while true {
            let e = index[b]
            if e == 0 { return (b, false) }
            if UInt32(truncatingIfNeeded: e >> 32) == hash && keyEquals(slots[Self.slotIndex(e)], key) {
                return (b, true)
            }
            b = (b + 1) & mask
        }
    }

    func key(of slot: Slot) -> [UInt8] {
        let start = Int(slot.keyRef >> 16)
        return Array(arena[start..<start + Int(slot.keyRef & 0xFFFF)])
    }

    func location(of slot: Slot) -> RecordLocation {
        RecordLocation(file: slot.file, offset: slot.offset, length: slot.length, timestamp: slot.timestamp)
    }

    func lookup(_ key: [UInt8]) -> RecordLocation? {
        key.withUnsafeBytes { k in
            let (b, found) = find(k, hash: UInt32(truncatingIfNeeded: Self.hash(k)))
            return found ? location(of: slots[Self.slotIndex(index[b])]) : nil
        }
    }

    /// Sets the location of `key`; returns the previous one.
    @discardableResult
    mutating func upsert(_ key: [UInt8], _ loc: RecordLocation) -> RecordLocation? {
        key.withUnsafeBytes { upsert(raw: $0, loc) }
    }

    /// Removes `key`; returns its location if it was present.
    @discardableResult
    mutating func remove(_ key: [UInt8]) -> RecordLocation? {
        key.withUnsafeBytes { remove(raw: $0) }
    }

    /// `upsert` on borrowed bytes: start-up applies hint entries without an array per key.
    @discardableResult
    mutating func upsert(raw key: UnsafeRawBufferPointer, _ loc: RecordLocation) -> RecordLocation? {
        precondition(key.count <= 0xFFFF, "keys are at most 65535 bytes")
        return { (k: UnsafeRawBufferPointer) in
            let hash = UInt32(truncatingIfNeeded: Self.hash(k))
            let (b, found) = find(k, hash: hash)
            if found {
                let i = Self.slotIndex(index[b])
                let old = location(of: slots[i])
                slots[i].file = loc.file
                slots[i].offset = loc.offset
                slots[i].length = loc.length
                slots[i].timestamp = loc.timestamp
                return old
            }
            let keyRef = UInt64(arena.count) << 16 | UInt64(key.count)
            arena.append(contentsOf: k)
            slots.append(
                Slot(
                    keyRef: keyRef, timestamp: loc.timestamp, file: loc.file, offset: loc.offset,
                    length: loc.length, hash: hash))
            index[b] = UInt64(hash) << 32 | UInt64(slots.count)
            placeNew(k)
            if slots.count * 4 > index.count * 3 { grow() }
            return nil
        }(key)
    }

    /// `remove` on borrowed bytes.
    @discardableResult
    mutating func remove(raw key: UnsafeRawBufferPointer) -> RecordLocation? {
        { (k: UnsafeRawBufferPointer) -> RecordLocation? in
            let (b, found) = find(k, hash: UInt32(truncatingIfNeeded: Self.hash(k)))
            guard found else { return nil }
            let i = Self.slotIndex(index[b])
            let old = location(of: slots[i])
            arenaGarbage += Int(slots[i].keyRef & 0xFFFF)
            deleteBucket(b)
            unplace(i)
            // Keep `slots` dense: move the last slot into the hole and repoint its bucket.
            let last = slots.count - 1
            if i != last {
                let moved = slots[last]
                let mask = index.count - 1
                var mb = Int(moved.hash) & mask
                while Self.slotIndex(index[mb]) != last { mb = (mb + 1) & mask }
                index[mb] = UInt64(moved.hash) << 32 | UInt64(i + 1)
                slots[i] = moved
            }
            slots.removeLast()
            if arenaGarbage > 1 << 16 && arenaGarbage * 2 > arena.count { compactArena() }
            return old
        }(key)
    }

    /// Backward-shift deletion keeps probe chains unbroken without tombstones.
    private mutating func deleteBucket(_ bucket: Int) {
        let mask = index.count - 1
        var hole = bucket
        var j = bucket
        while true {
            j = (j + 1) & mask
            let s = index[j]
            if s == 0 { break }
            let ideal = Int(UInt32(truncatingIfNeeded: s >> 32)) & mask
            // The entry at j may move into the hole only if its ideal bucket is not in (hole, j].
            let stays = hole <= j ? (hole < ideal && ideal <= j) : (hole < ideal || ideal <= j)
            if stays { continue }
            index[hole] = s
            hole = j
        }
        index[hole] = 0
    }

    private mutating func grow() {
        var bigger = [UInt64](repeating: 0, count: index.count * 2)
        let mask = bigger.count - 1
        for e in index where e != 0 {
            var b = Int(UInt32(truncatingIfNeeded: e >> 32)) & mask
            while bigger[b] != 0 { b = (b + 1) & mask }
            bigger[b] = e
        }
        index = bigger
    }

    @inline(__always)
    private static func slotIndex(_ entry: UInt64) -> Int { Int(UInt32(truncatingIfNeeded: entry)) - 1 }

    private mutating func compactArena() {
        var fresh: [UInt8] = []
        fresh.reserveCapacity(arena.count - arenaGarbage)
        for i in slots.indices {
            let start = Int(slots[i].keyRef >> 16)
            let length = Int(slots[i].keyRef & 0xFFFF)
            slots[i].keyRef = UInt64(fresh.count) << 16 | UInt64(length)
            fresh.append(contentsOf: arena[start..<start + length])
        }
        arena = fresh
        arenaGarbage = 0
    }

    /// Reserves room for `n` keys of about `keyBytes` bytes each (start-up knows the counts).
    mutating func reserve(keys n: Int, keyBytes: Int) {
        slots.reserveCapacity(n)
        if partitionOf != nil { place.reserveCapacity(n) }
        arena.reserveCapacity(keyBytes)
        while n * 4 > index.count * 3 { grow() }
    }
}

/// A grouping of the keys that the engine keeps up to date (`BitcaskOptions.partitioning`), so
/// that the keys of a few groups are listed without walking the whole key directory: the repair
/// scanner lists a node's keys per ring bucket. Each key's partition is computed once, when the
/// key enters the key directory; it costs 12 bytes per key (a slot's place and its entry).
public struct KeyPartitioning: Sendable {
    /// Partitions are numbered 0..<count.
    public var count: Int
    /// A key's partition; nil (or a number outside 0..<count): in none, never listed this way.
    public var partition: @Sendable (UnsafeRawBufferPointer) -> Int?
    public init(count: Int, partition: @escaping @Sendable (UnsafeRawBufferPointer) -> Int?) {
        self.count = count
        self.partition = partition
    }
}
