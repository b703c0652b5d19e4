import Foundation
import Testing

@testable import TernStorage

@Suite struct BitcaskTests {
    @Test func roundTripOverwriteDelete() throws {
        let fs = MemoryFileSystem()
        let db = try Bitcask(directory: dir, fileSystem: fs)
        #expect(try db.get(b("a")) == nil)
        try db.put(b("a"), b("1"))
        try db.put(b("b"), [])
        #expect(try db.get(b("a")) == b("1"))
        #expect(try db.get(b("b")) == [])
        try db.put(b("a"), b("2"))
        #expect(try db.get(b("a")) == b("2"))
        try db.delete(b("b"))
        #expect(try db.get(b("b")) == nil)
        try db.delete(b("never"))
        let s = db.stats
        #expect(s.keys == 1)
        #expect(s.liveBytes == UInt64(Record.headerSize + 2))
        #expect(s.deadBytes > 0)
    }

    @Test func limitsAreEnforced() throws {
        var o = BitcaskOptions()
        o.maxValueSizeBytes = 10
        o.maxKeySizeBytes = 4
        let db = try Bitcask(directory: dir, fileSystem: MemoryFileSystem(), options: o)
        #expect(throws: StorageError.valueTooLarge) { try db.put(b("k"), [UInt8](repeating: 1, count: 11)) }
        #expect(throws: StorageError.keyTooLarge) { try db.put(b("kkkkk"), b("v")) }
        // A rejected batch appends nothing.
        #expect(throws: StorageError.keyTooLarge) {
            try db.write([.put(b("x"), b("1")), .delete(b("kkkkk"))])
        }
        #expect(try db.get(b("x")) == nil)
        db.close()
        #expect(throws: StorageError.closed) { try db.get(b("x")) }
    }

    @Test func reopenAndRotation() throws {
        let fs = MemoryFileSystem()
        var expected: [[UInt8]: [UInt8]] = [:]
        do {
            let db = try Bitcask(directory: dir, fileSystem: fs, options: smallOptions())
            for i in 0..<300 {
                let k = b("key\(i % 97)")
                let v = b("value-\(i)-" + String(repeating: "x", count: i % 50))
                try db.put(k, v)
                expected[k] = v
                if i % 7 == 0 {
                    try db.delete(k)
                    expected[k] = nil
                }
            }
            #expect(db.stats.files > 5, "2 KiB files must rotate")
            #expect(try contents(db) == expected)
            db.close()
        }
        let names = try fs.list(dir)
        #expect(
            names.filter { $0.hasSuffix(".hint") }.count >= names.filter { $0.hasSuffix(".data") }.count - 1)
        let db = try Bitcask(directory: dir, fileSystem: fs, options: smallOptions())
        #expect(try contents(db) == expected)
        #expect(db.stats.keys == expected.count)
        #expect(db.stats.truncatedBytes == 0)
    }

    @Test func batchIsVisibleAndSurvivesReopen() throws {
        let fs = MemoryFileSystem()
        let db = try Bitcask(directory: dir, fileSystem: fs)
        try db.put(b("gone"), b("x"))
        try db.write([.put(b("p1"), b("a")), .put(b("p2"), b("b")), .delete(b("gone"))])
        try db.sync()
        db.close()
        let again = try Bitcask(directory: dir, fileSystem: fs)
        #expect(try contents(again) == [b("p1"): b("a"), b("p2"): b("b")])
    }

    /// A corrupt hint file is ignored and its data file scanned instead.
    @Test func corruptHintFallsBackToScan() throws {
        let fs = MemoryFileSystem()
        var expected: [[UInt8]: [UInt8]] = [:]
        let db = try Bitcask(directory: dir, fileSystem: fs, options: smallOptions())
        for i in 0..<100 {
            expected[b("k\(i)")] = b("v\(i)")
            try db.put(b("k\(i)"), b("v\(i)"))
        }
        db.close()
        for name in try fs.list(dir) where name.hasSuffix(".hint") {
            fs.flipBit(path: dir + "/" + name, offset: 30, bit: 3)
        }
        let again = try Bitcask(directory: dir, fileSystem: fs, options: smallOptions())
        #expect(try contents(again) == expected)
        #expect(again.stats.damagedRecords == 0)
    }

    /// Hints are used: a data file whose values are damaged but whose hint is valid opens without
    /// reading values (damage is found only when the value is read).
    @Test func startupReadsHintsNotValues() throws {
        let fs = MemoryFileSystem()
        let db = try Bitcask(directory: dir, fileSystem: fs, options: smallOptions(fileBytes: 1 << 20))
        try db.put(b("k"), [UInt8](repeating: 7, count: 100))
        try db.put(b("other"), b("fine"))
        db.close()
        _ = try Bitcask(directory: dir, fileSystem: fs).stats  // writes the hint for the old active file
        let data = try fs.list(dir).first { $0.hasSuffix(".data") }!
        fs.flipBit(path: dir + "/" + data, offset: UInt64(Record.headerSize + 1 + 50), bit: 0)
        let again = try Bitcask(directory: dir, fileSystem: fs)
        #expect(again.stats.damagedRecords == 0, "a hint-loaded start-up must not read values")
        #expect(try again.scrub() == [b("k")], "scrub reads every value and finds the flip")
        #expect(throws: StorageError.damaged(key: b("k"))) { try again.get(b("k")) }
        #expect(again.damagedKeys == [b("k")])
        #expect(try again.get(b("other")) == b("fine"))
        try again.put(b("k"), b("repaired"))
        #expect(again.damagedKeys.isEmpty)
        #expect(try again.get(b("k")) == b("repaired"))
    }

    @Test func posixFileSystemRoundTrip() throws {
        let path = NSTemporaryDirectory() + "tern-storage-test-\(getpid())-\(UInt64.random(in: 0..<1 << 40))"
        defer { try? FileManager.default.removeItem(atPath: path) }
        var expected: [[UInt8]: [UInt8]] = [:]
        do {
            let db = try Bitcask(directory: path, fileSystem: PosixFileSystem(), options: smallOptions())
            for i in 0..<200 {
                expected[b("k\(i % 50)")] = b("v\(i)")
                try db.put(b("k\(i % 50)"), b("v\(i)"))
            }
            try db.delete(b("k3"))
            expected[b("k3")] = nil
            try db.sync()
            try db.merge()
            #expect(try contents(db) == expected)
            db.close()
        }
        let db = try Bitcask(directory: path, fileSystem: PosixFileSystem(), options: smallOptions())
        #expect(try contents(db) == expected)
        #expect(db.stats.merges == 0)
        #expect(throws: StorageError.self) { try PosixFileSystem().open(path + "/nope", create: false) }
    }
}
