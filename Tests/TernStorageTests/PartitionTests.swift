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

    /// `get(many:prefix:into:)` — one buffer for the batch, the data files mapped where the file
    /// layer maps them (real files), runs of records read where it does not (the memory file
    /// system) — answers every key as `get` of `prefix` + key does: values across files and in the
    /// unflushed write buffer, absent and deleted keys, the same key under another prefix, a key
    /// asked twice, a record flipped on disk after the file was mapped (damaged, and marked so, as
    /// `get` does), and a key already known damaged.
    @Test(arguments: [false, true]) func getManyPackedAnswersAsGet(realFiles: Bool) throws {
        let memory = MemoryFileSystem()
        let path =
            realFiles
            ? NSTemporaryDirectory() + "tern-packed-\(getpid())-\(UInt64.random(in: 0..<1 << 40))" : dir
        defer { if realFiles { try? FileManager.default.removeItem(atPath: path) } }
        let fs: any FileSystem = realFiles ? PosixFileSystem() : memory
        var o = Self.options()
        o.maxFileSizeBytes = 4096
        o.writeBufferBytes = 1 << 20  // the last writes stay in the buffer
        let db = try Bitcask(directory: path, fileSystem: fs, options: o)
        var rng = SplitMix64(seed: 5)
        var keys: [[UInt8]] = []
        for i in 0..<300 {
            let k = b("k\(i)")
            keys.append(k)
            try db.put([1] + k, randomBytes(Int(rng.below(80)), &rng))
            if i % 7 == 0 { try db.delete([1] + k) }
            if i % 60 == 59 { try db.sync() }
        }
        try db.put([2] + b("k3"), b("another prefix"))
        keys += [b("absent"), b("k5"), b("k5"), b("k3"), []]
        func agree(_ note: String) throws {
            var out = PackedBytes(buffer: [9], spans: [.absent])  // what was there is replaced
            db.get(many: keys, prefix: 1, into: &out)
            #expect(out.count == keys.count)
            for (i, k) in keys.enumerated() {
                do {
                    if let v = try db.get([1] + k) {
                        #expect(
                            out[i].map(Array.init) == v, "\(note): key \(String(decoding: k, as: UTF8.self))")
                    } else {
                        #expect(out.spans[i] == .absent, "\(note): key \(String(decoding: k, as: UTF8.self))")
                    }
                } catch {
                    #expect(out.spans[i] == .damaged, "\(note): key \(String(decoding: k, as: UTF8.self))")
                }
            }
        }
        try agree("unflushed")
        try db.sync()
        #expect(db.files.count > 3)
        try agree("synced")
        // Flip a bit of k100's value on disk (its file is mapped by now).
        let loc = try #require(db.keydir.lookup([1] + b("k100")))
        let name = try #require(db.files[loc.file]).id.name + ".data"
        let at = UInt64(loc.offset) + UInt64(loc.length) - 1
        if realFiles {
            let f = try PosixFileSystem().open(path + "/" + name, create: false)
            var byte = try f.read(at: at, count: 1)
            byte[0] ^= 4
            try f.write(byte, at: at)
            f.close()
        } else {
            memory.flipBit(path: dir + "/" + name, offset: at, bit: 2)
        }
        var out = PackedBytes()
        db.get(many: [b("k99"), b("k100"), b("k101")], prefix: 1, into: &out)
        #expect(out.spans[1] == .damaged)
        #expect(try out[0].map(Array.init) == db.get([1] + b("k99")))
        #expect(try out[2].map(Array.init) == db.get([1] + b("k101")))
        #expect(db.damagedKeys == [[1] + b("k100")])
        db.get(many: [b("k100")], prefix: 1, into: &out)
        #expect(out.spans == [.damaged])
        try agree("after the flip")
        // New records after the mapping (the active file grew): read from it too.
        for i in 0..<40 { try db.put([1] + b("n\(i)"), randomBytes(Int(rng.below(80)), &rng)) }
        keys += (0..<40).map { b("n\($0)") }
        try agree("grown")
        try db.sync()
        try agree("grown, synced")
        db.close()
        db.get(many: [b("k1")], prefix: 1, into: &out)
        #expect(out.spans == [.damaged])
    }

    /// `records(inPartition:prefix:keys:values:)` (a fetch's read of a whole bucket) lists exactly
    /// the partition's live keys under the prefix, each once, with what `get` answers for it: its
    /// value, or damaged for a record flipped on disk — over the memory file system (runs read)
    /// and over real files (mapped).
    @Test(arguments: [false, true]) func partitionRecordsAnswerAsGet(realFiles: Bool) throws {
        let memory = MemoryFileSystem()
        let path =
            realFiles
            ? NSTemporaryDirectory() + "tern-bucket-\(getpid())-\(UInt64.random(in: 0..<1 << 40))" : dir
        defer { if realFiles { try? FileManager.default.removeItem(atPath: path) } }
        let fs: any FileSystem = realFiles ? PosixFileSystem() : memory
        var o = Self.options()
        o.maxFileSizeBytes = 4096
        let db = try Bitcask(directory: path, fileSystem: fs, options: o)
        var rng = SplitMix64(seed: 12)
        var live = Set<[UInt8]>()
        for _ in 0..<600 {
            let key = b((rng.below(4) == 0 ? "x" : "k") + "\(rng.below(150))")
            if rng.below(6) == 0 {
                try db.delete(key)
                live.remove(key)
            } else {
                try db.put(key, randomBytes(Int(rng.below(70)), &rng))
                live.insert(key)
            }
        }
        let k = UInt8(ascii: "k")
        func agree(_ note: String) throws {
            var keys = PackedBytes()
            var values = PackedBytes()
            for p in 0..<8 {
                #expect(db.records(inPartition: p, prefix: k, keys: &keys, values: &values))
                #expect(keys.count == values.count)
                let listed = (0..<keys.count).map { [k] + Array(keys[$0]!) }
                #expect(Set(listed).count == listed.count, "\(note): a key listed twice")
                #expect(Set(listed) == Self.expected(live, p..<p + 1)[p] ?? [], "\(note): partition \(p)")
                for (i, key) in listed.enumerated() {
                    do {
                        #expect(try values[i].map(Array.init) == db.get(key), "\(note)")
                    } catch {
                        #expect(values.spans[i] == .damaged, "\(note)")
                    }
                }
            }
            // Another prefix lists nothing of these partitions; a partition out of range neither.
            #expect(db.records(inPartition: 3, prefix: 0, keys: &keys, values: &values) && keys.count == 0)
            #expect(db.records(inPartition: 99, prefix: k, keys: &keys, values: &values) && keys.count == 0)
        }
        try agree("unsynced")
        try db.sync()
        try agree("synced")
        let victim = try #require(
            live.filter { $0.first == k }.sorted { $0.lexicographicallyPrecedes($1) }.first)
        let loc = try #require(db.keydir.lookup(victim))
        let name = try #require(db.files[loc.file]).id.name + ".data"
        let at = UInt64(loc.offset) + UInt64(loc.length) - 1
        if realFiles {
            let f = try PosixFileSystem().open(path + "/" + name, create: false)
            var byte = try f.read(at: at, count: 1)
            byte[0] ^= 1
            try f.write(byte, at: at)
            f.close()
        } else {
            memory.flipBit(path: dir + "/" + name, offset: at, bit: 0)
        }
        try agree("after a flip")
        #expect(db.damagedKeys == [victim])
        db.close()
        var keys = PackedBytes()
        var values = PackedBytes()
        #expect(!db.records(inPartition: 0, prefix: k, keys: &keys, values: &values))
    }

    /// `write(prefix:keys:values:indices:)` (a bulk rebuild's install, from one buffer) writes
    /// exactly the records `write` of the same puts does: the same bytes on disk, the same
    /// contents, and a missing value refused.
    @Test func packedWriteEqualsBatchWrite() throws {
        let fs1 = MemoryFileSystem()
        let fs2 = MemoryFileSystem()
        let db1 = try Bitcask(directory: dir, fileSystem: fs1, options: Self.options())
        let db2 = try Bitcask(directory: dir, fileSystem: fs2, options: Self.options())
        var rng = SplitMix64(seed: 9)
        for round in 0..<8 {
            var keys: [[UInt8]] = []
            var values = PackedBytes()
            for i in 0..<Int(1 + rng.below(40)) {
                keys.append(b("k\(rng.below(60))-\(i)"))
                if rng.below(5) == 0 {
                    values.appendMissing(.absent)
                } else {
                    values.append(randomBytes(Int(rng.below(50)), &rng))
                }
            }
            var indices = keys.indices.filter { values.spans[$0].isPresent }
            if round % 2 == 1 { indices.reverse() }
            try db1.write(indices.map { .put([1] + keys[$0], Array(values[$0]!)) })
            try db2.write(prefix: 1, keys: keys, values: values, indices: indices)
            if let missing = keys.indices.first(where: { !values.spans[$0].isPresent }) {
                #expect(throws: StorageError.self) {
                    try db2.write(prefix: 1, keys: keys, values: values, indices: [missing])
                }
            }
        }
        try db1.sync()
        try db2.sync()
        #expect(try contents(db1) == contents(db2))
        let names = try fs1.list(dir).sorted()
        #expect(try fs2.list(dir).sorted() == names)
        for name in names where name.hasSuffix(".data") {
            let a = try fs1.open(dir + "/" + name, create: false)
            let c = try fs2.open(dir + "/" + name, create: false)
            #expect(try a.read(at: 0, count: Int(a.size)) == c.read(at: 0, count: Int(c.size)), "\(name)")
        }
    }
}
