import Foundation
import TernCore
import Testing

@testable import TernStorage

/// The engine's key partitions (`BitcaskOptions.partitioning`, what the repair scanner's listings
/// read) and its batched read (`Bitcask.get(many:)`, what a scan or a fetch reads).
@Suite struct PartitionTests {
    /// Keys starting with "k" go to the partition of their last byte mod 8; others to none.
    static let partitioning = KeyPartitioning(count: 8) { key in
        key.first == UInt8(ascii: "k") ? Int(key[key.count - 1] % 8) : nil
    }

    static func options() -> BitcaskOptions {
        var o = smallOptions()
        o.partitioning = partitioning
        return o
    }

    /// The partitions' keys, listed partition by partition.
    static func listing(_ db: Bitcask, _ range: Range<Int> = 0..<8) -> [Int: Set<[UInt8]>] {
        var out: [Int: Set<[UInt8]>] = [:]
        db.forEachLive(inPartitions: range) { p, key in
            #expect(out[p, default: []].insert(Array(key)).inserted, "a key listed twice")
        }
        return out
    }

    /// What the listing must be: every live key of a partition, from a model of the contents.
    static func expected(_ live: Set<[UInt8]>, _ range: Range<Int> = 0..<8) -> [Int: Set<[UInt8]>] {
        var out: [Int: Set<[UInt8]>] = [:]
        for k in live {
            let p = k.withUnsafeBytes { partitioning.partition($0) }
            if let p, range.contains(p) { out[p, default: []].insert(k) }
        }
        return out
    }

    /// Random puts, deletes, batches, merges and reopenings (recovery from hints and scans): the
    /// partitions always list exactly the live keys, each once, also for a sub-range.
    @Test func partitionsFollowPutsDeletesMergesAndRecovery() throws {
        let fs = MemoryFileSystem()
        var rng = SplitMix64(seed: 7)
        var live = Set<[UInt8]>()
        var db = try Bitcask(directory: dir, fileSystem: fs, options: Self.options())
        for round in 0..<6 {
            for _ in 0..<400 {
                let name = (rng.below(2) == 0 ? "k" : "x") + "\(rng.below(120))"
                let key = b(name)
                switch rng.below(5) {
                case 0:
                    try db.delete(key)
                    live.remove(key)
                case 1:
                    let other = b("k\(rng.below(120))")
                    try db.write([.put(key, b("v")), .delete(other)])
                    live.insert(key)
                    live.remove(other)
                default:
                    try db.put(key, randomBytes(Int(rng.below(40)), &rng))
                    live.insert(key)
                }
            }
            #expect(Self.listing(db) == Self.expected(live), "round \(round)")
            #expect(Self.listing(db, 2..<5) == Self.expected(live, 2..<5))
            if round % 2 == 0 { try db.merge() }
            try db.sync()
            db.close()
            db = try Bitcask(directory: dir, fileSystem: fs, options: Self.options())
            #expect(Self.listing(db) == Self.expected(live), "after reopening, round \(round)")
        }
        #expect(db.partitionCount == 8)
        // Removing every key empties every partition.
        for k in live { try db.delete(k) }
        #expect(Self.listing(db).isEmpty)
    }

    /// Without partitioning, nothing is listed that way.
    @Test func noPartitioningListsNothing() throws {
        let db = try Bitcask(directory: dir, fileSystem: MemoryFileSystem(), options: smallOptions())
        try db.put(b("k1"), b("v"))
        #expect(db.partitionCount == nil)
        #expect(Self.listing(db).isEmpty)
    }

    /// `get(many:)` answers every key as `get` does: values across files and the unflushed write
    /// buffer, absent keys, deleted keys, and a damaged record (marked damaged, as `get` does).
    @Test func getManyAnswersAsGet() throws {
        let fs = MemoryFileSystem()
        var o = Self.options()
        o.writeBufferBytes = 1 << 20  // the last writes stay in the buffer
        let db = try Bitcask(directory: dir, fileSystem: fs, options: o)
        var rng = SplitMix64(seed: 3)
        var keys: [[UInt8]] = []
        for i in 0..<200 {
            let k = b("k\(i)")
            keys.append(k)
            try db.put(k, randomBytes(Int(rng.below(60)), &rng))
            if i % 9 == 0 { try db.delete(k) }
            if i % 50 == 49 { try db.sync() }
        }
        keys += [b("absent"), b("k5"), b("k5")]  // absent, and a key asked twice
        func agree(_ gap: Int) throws {
            let many = db.get(many: keys, gapBytesMax: gap)
            for (k, r) in zip(keys, many) {
                #expect(try r.get() == db.get(k), "key \(String(decoding: k, as: UTF8.self))")
            }
        }
        try agree(0)
        try agree(4096)
        try agree(1 << 20)
        // One adjacent run covers records next to each other: flip a byte of one value.
        try db.sync()
        let loc = try #require(db.keydir.lookup(b("k100")))
        let name = try #require(db.files[loc.file]).id.name + ".data"
        fs.flipBit(path: dir + "/" + name, offset: UInt64(loc.offset) + UInt64(loc.length) - 1, bit: 2)
        let many = db.get(many: [b("k99"), b("k100"), b("k101")])
        #expect(throws: StorageError.damaged(key: b("k100"))) { try many[1].get() }
        #expect(try many[0].get() == db.get(b("k99")))
        #expect(try many[2].get() == db.get(b("k101")))
        #expect(db.damagedKeys == [b("k100")])
        #expect(throws: StorageError.damaged(key: b("k100"))) { try db.get(many: [b("k100")])[0].get() }
    }
}
