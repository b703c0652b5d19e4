import TernCore
import Testing

@testable import TernStorage

/// Crash safety: cut files, flip bits, crash the simulated disk.
@Suite struct CrashTests {
    typealias Model = [[UInt8]: [UInt8]]

    static func apply(_ batch: [BatchEntry], to model: inout Model) {
        for e in batch {
            switch e {
            case .put(let k, let v): model[k] = v
            case .delete(let k): model[k] = nil
            }
        }
    }

    static func encodedSize(_ batch: [BatchEntry]) -> Int {
        batch.reduce(0) { n, e in
            switch e {
            case .put(let k, let v): n + Record.headerSize + k.count + v.count
            case .delete(let k): n + Record.headerSize + k.count
            }
        }
    }

    /// Writes a log whose last operations include batches; returns the operations, their end
    /// offsets in the (single) data file, and the file system.
    static func writeLog(seed: UInt64) throws -> ([[BatchEntry]], [Int], MemoryFileSystem, String) {
        var rng = SplitMix64(seed: seed)
        var ops: [[BatchEntry]] = []
        for i in 0..<30 {
            let k = b("key\(Int.random(in: 0..<8, using: &rng))")
            if i == 26 || i == 29 {
                ops.append([
                    .put(b("batch\(i)a"), b("A")), .delete(k), .put(b("batch\(i)b"), randomBytes(9, &rng)),
                ])
            } else if Int.random(in: 0..<5, using: &rng) == 0 {
                ops.append([.delete(k)])
            } else {
                ops.append([.put(k, randomBytes(Int.random(in: 0..<40, using: &rng), &rng))])
            }
        }
        let fs = MemoryFileSystem()
        let db = try Bitcask(directory: dir, fileSystem: fs)
        var ends: [Int] = []
        var end = 0
        for op in ops {
            try db.write(op)
            end += encodedSize(op)
            ends.append(end)
        }
        db.close()
        let name = try fs.list(dir).first { $0.hasSuffix(".data") }!
        #expect(fs.fileSize(dir + "/" + name) == UInt64(end))
        return (ops, ends, fs, name)
    }

    /// Reopens a copy of the log cut at `cut` bytes and checks it holds exactly the operations
    /// that ended before the cut: nothing complete lost, nothing torn served, torn batches whole.
    static func checkCut(_ cut: Int, ops: [[BatchEntry]], ends: [Int], fs: MemoryFileSystem, name: String)
        throws
    {
        let copy = try copyFiles(fs, dir)
        try copy.open(dir + "/" + name, create: false).truncate(to: UInt64(cut))
        // The cut models a tail that was never fsynced: without the durable mark, which says the
        // closed log was synced whole (the same cut of synced bytes: DurableMarkTests).
        try copy.remove(dir + "/" + DurableMark.fileName)
        var expected: Model = [:]
        var complete = 0
        for (op, end) in zip(ops, ends) where end <= cut {
            apply(op, to: &expected)
            complete = end
        }
        let db = try Bitcask(directory: dir, fileSystem: copy)
        #expect(try contents(db) == expected, "cut at \(cut)")
        #expect(db.stats.truncatedBytes == UInt64(cut - complete), "cut at \(cut)")
        #expect(db.stats.damagedRecords == 0 && db.stats.unattributedDamage == 0)
        // The store keeps working after recovery and the recovered state is stable.
        try db.put(b("after"), b("crash"))
        db.close()
        expected[b("after")] = b("crash")
        #expect(
            try contents(Bitcask(directory: dir, fileSystem: copy)) == expected, "cut at \(cut), reopened")
    }

    @Test func cutAtEveryOffsetOfTheLastRecords() throws {
        let (ops, ends, fs, name) = try Self.writeLog(seed: 1)
        let start = ends[ends.count - 7]
        for cut in start...ends.last! {
            try Self.checkCut(cut, ops: ops, ends: ends, fs: fs, name: name)
        }
    }

    @Test(arguments: [2, 3] as [UInt64])
    func cutAtRandomOffsets(seed: UInt64) throws {
        let (ops, ends, fs, name) = try Self.writeLog(seed: seed)
        var rng = SplitMix64(seed: seed &* 31)
        for _ in 0..<40 {
            try Self.checkCut(
                Int.random(in: 0...ends.last!, using: &rng), ops: ops, ends: ends, fs: fs, name: name)
        }
    }

    /// Bit flips inside middle records: never a crash, never a wrong value; a flipped value is
    /// reported as damage of its key; the other keys are intact.
    @Test(arguments: [false, true])
    func bitFlipsInTheMiddle(withHints: Bool) throws {
        let fs = MemoryFileSystem()
        let n = 30
        var records: [(key: [UInt8], value: [UInt8], start: Int, valueStart: Int, end: Int)] = []
        var rng = SplitMix64(seed: withHints ? 11 : 12)
        do {
            let db = try Bitcask(directory: dir, fileSystem: fs)
            var offset = 0
            for i in 0..<n {
                let key = b("key-\(i)")
                let value = randomBytes(40, &rng)
                try db.put(key, value)
                let size = Record.headerSize + key.count + value.count
                records.append((key, value, offset, offset + Record.headerSize + key.count, offset + size))
                offset += size
            }
            db.close()
        }
        if withHints { try Bitcask(directory: dir, fileSystem: fs).close() }  // writes the hint
        let name = try fs.list(dir).first { $0.hasSuffix(".data") }!
        for _ in 0..<60 {
            let victim = Int.random(in: 5..<n - 5, using: &rng)
            let r = records[victim]
            let offset = Int.random(in: r.start..<r.end, using: &rng)
            let copy = try copyFiles(fs, dir)
            copy.flipBit(
                path: dir + "/" + name, offset: UInt64(offset), bit: Int.random(in: 0..<8, using: &rng))
            let db = try Bitcask(directory: dir, fileSystem: copy)
            for (i, rec) in records.enumerated() {
                if i == victim {
                    do {
                        let got = try db.get(rec.key)
                        // Only a damaged header found by a scan loses the key (it cannot be named).
                        #expect(got == nil && !withHints && offset < r.valueStart, "flip at \(offset)")
                        #expect(db.stats.unattributedDamage == 1)
                    } catch {
                        #expect(error == .damaged(key: rec.key))
                        #expect(db.damagedKeys == [rec.key])
                        #expect(db.stats.damagedRecords == 1)
                    }
                } else {
                    #expect(try db.get(rec.key) == rec.value, "flip at \(offset) hurt key \(i)")
                }
            }
            if offset >= r.valueStart && !withHints {
                #expect(db.damagedKeys == [r.key], "a scan must name a damaged value's key")
            }
            // Repair by writing the value again clears the damage.
            try db.put(r.key, r.value)
            #expect(try db.get(r.key) == r.value)
            #expect(db.damagedKeys.isEmpty)
        }
    }

    /// Damage survives a merge (it is carried as a marker record) instead of reverting the key.
    @Test func damageSurvivesMerge() throws {
        let fs = MemoryFileSystem()
        let db = try Bitcask(directory: dir, fileSystem: fs)
        try db.put(b("k"), b("old value"))
        try db.put(b("ok"), b("fine"))
        try db.put(b("k"), b("new value"))
        db.close()
        let name = try fs.list(dir).first { $0.hasSuffix(".data") }!
        let lastStart = 2 * Record.headerSize + 10 + 6
        fs.flipBit(path: dir + "/" + name, offset: UInt64(lastStart + Record.headerSize + 3), bit: 5)
        let again = try Bitcask(directory: dir, fileSystem: fs)
        #expect(again.damagedKeys == [b("k")])
        try again.merge()
        #expect(throws: StorageError.damaged(key: b("k"))) { try again.get(b("k")) }
        again.close()
        let third = try Bitcask(directory: dir, fileSystem: fs)
        #expect(throws: StorageError.damaged(key: b("k"))) { try third.get(b("k")) }
        #expect(try third.get(b("ok")) == b("fine"))
        third.markRepaired(b("k"))
        #expect(try third.get(b("k")) == nil)
    }

    /// Crashes of the simulated disk after synced and unsynced writes, with torn appends and
    /// undone directory changes: every synced write survives, unsynced ones survive as a prefix.
    @Test func simulatedCrashesKeepSyncedWrites() throws {
        for seed in 0..<40 as Range<UInt64> {
            var rng = SplitMix64(seed: seed)
            let fs = MemoryFileSystem()
            var synced: Model = [:]
            var db = try Bitcask(directory: dir, fileSystem: fs, options: smallOptions(fileBytes: 600))
            for i in 0..<40 {
                let k = b("k\(Int.random(in: 0..<10, using: &rng))")
                try db.put(k, b("v\(i)"))
                synced[k] = b("v\(i)")
            }
            try db.sync()
            var states = [synced]
            for i in 0..<10 {
                let op: [BatchEntry] =
                    i % 3 == 0
                    ? [.put(b("x\(i)"), b("1")), .delete(b("k\(i)")), .put(b("y\(i)"), b("2"))]
                    : [.put(b("k\(i)"), b("unsynced\(i)"))]
                try db.write(op)
                var next = states.last!
                Self.apply(op, to: &next)
                states.append(next)
            }
            fs.crash(using: &rng)
            db = try Bitcask(directory: dir, fileSystem: fs, options: smallOptions(fileBytes: 600))
            let got = try contents(db)
            #expect(states.contains(got), "seed \(seed): not a prefix of the writes")
        }
    }
}
