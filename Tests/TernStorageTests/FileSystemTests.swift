import Foundation
import TernCore
import Testing

@testable import TernStorage

/// The simulated disk must model crashes the way the engine's safety argument assumes.
@Suite struct MemoryFileSystemTests {
    @Test func crashKeepsSyncedBytesAndAPrefixOfTheRest() throws {
        var sawTorn = false
        var sawNone = false
        for seed in 0..<50 as Range<UInt64> {
            let fs = MemoryFileSystem()
            try fs.makeDirectory(dir)
            let f = try fs.open(dir + "/f", create: true)
            try fs.syncDirectory(dir)
            try f.write(b("synced"), at: 0)
            try f.sync()
            try f.write(b("-unsynced"), at: 6)
            var rng = SplitMix64(seed: seed)
            fs.crash(using: &rng)
            let g = try fs.open(dir + "/f", create: false)
            let bytes = try g.read(at: 0, count: 100)
            #expect(b("synced-unsynced").starts(with: bytes) && bytes.count >= 6, "seed \(seed)")
            if bytes.count > 6 && bytes.count < 15 { sawTorn = true }
            if bytes.count == 6 { sawNone = true }
            #expect(throws: StorageError.self) { try f.write(b("x"), at: 0) }  // stale handle
        }
        #expect(sawTorn && sawNone, "the random source must reach both outcomes")
    }

    @Test func crashUndoesUnsyncedDirectoryChangesInOrder() throws {
        var outcomes = Set<[String]>()
        for seed in 0..<60 as Range<UInt64> {
            let fs = MemoryFileSystem()
            try fs.makeDirectory(dir)
            let a = try fs.open(dir + "/a", create: true)
            try a.sync()
            try fs.syncDirectory(dir)
            _ = try fs.open(dir + "/b", create: true)
            try fs.rename(dir + "/a", dir + "/c")
            try fs.remove(dir + "/b")
            var rng = SplitMix64(seed: seed)
            fs.crash(using: &rng)
            let names = try fs.list(dir).sorted()
            // Only prefixes of (create b, rename a→c, remove b) may survive.
            #expect([["a"], ["a", "b"], ["b", "c"], ["c"]].contains(names), "seed \(seed): \(names)")
            outcomes.insert(names)
        }
        #expect(outcomes.count == 4)
    }

    @Test func flipBitChangesOneBit() throws {
        let fs = MemoryFileSystem()
        let f = try fs.open("/x", create: true)
        try f.write([0, 0], at: 0)
        fs.flipBit(path: "/x", offset: 1, bit: 3)
        #expect(try f.read(at: 0, count: 2) == [0, 8])
    }
}

@Suite struct PosixFileSystemTests {
    @Test func directoryOperations() throws {
        let fs = PosixFileSystem()
        let path = NSTemporaryDirectory() + "tern-posix-\(getpid())-\(UInt64.random(in: 0..<1 << 40))/sub"
        defer { try? FileManager.default.removeItem(atPath: String(path.dropLast(4))) }
        try fs.makeDirectory(path)
        #expect(fs.exists(path))
        let f = try fs.open(path + "/a", create: true)
        try f.write(b("hello"), at: 3)
        #expect(f.size == 8)
        #expect(try f.read(at: 3, count: 10) == b("hello"))
        try f.truncate(to: 4)
        try f.sync()
        #expect(try f.read(at: 0, count: 10) == [0, 0, 0, b("h")[0]])
        f.close()
        #expect(throws: StorageError.closed) { try f.read(at: 0, count: 1) }
        try fs.rename(path + "/a", path + "/b")
        try fs.syncDirectory(path)
        #expect(try fs.list(path) == ["b"])
        try fs.remove(path + "/b")
        #expect(!fs.exists(path + "/b"))
        #expect(throws: StorageError.self) { try fs.remove(path + "/b") }
    }
}
