import TernCore
import Testing

@testable import TernStorage

/// Lost durable bytes are told apart from a torn unsynced tail (issue 11's amnesia hole): a data
/// file that lost bytes after they were fsynced must not open as if nothing happened.
@Suite struct DurableMarkTests {
    /// Writes `n` synced puts (one file) and closes; returns the data file's name and size.
    static func syncedLog(_ fs: MemoryFileSystem, n: Int = 10) throws -> (name: String, size: UInt64) {
        let db = try Bitcask(directory: dir, fileSystem: fs)
        for i in 0..<n {
            try db.put(b("k\(i)"), b("value \(i)"))
            try db.sync()
        }
        db.close()
        let name = try fs.list(dir).first { $0.hasSuffix(".data") }!
        return (name, fs.fileSize(dir + "/" + name)!)
    }

    @Test func fsyncedBytesCutFromTheNewestFileAreRefusedAndKeptOnDisk() throws {
        let fs = MemoryFileSystem()
        let (name, size) = try Self.syncedLog(fs)
        // The harness's cut: the last 250 bytes of the newest data file, after a clean stop.
        let cut = size - min(250, size - 1)
        try fs.open(dir + "/" + name, create: false).truncate(to: cut)
        #expect {
            _ = try Bitcask(directory: dir, fileSystem: fs)
        } throws: { error in
            guard case .lostDurableBytes(let why)? = error as? StorageError else { return false }
            return why.contains(name) && why.contains("\(size) were fsynced")
        }
        // Nothing was "repaired" away: the file keeps what it had, for a person or repair to see.
        #expect(fs.fileSize(dir + "/" + name) == cut)
    }

    @Test func aTornTailThatWasNeverSyncedStillRecovers() throws {
        let fs = MemoryFileSystem()
        let (name, size) = try Self.syncedLog(fs)
        do {
            let db = try Bitcask(directory: dir, fileSystem: fs)
            try db.put(b("unsynced"), Array(repeating: 7, count: 100))  // buffered, then flushed…
            try db.flush()  // …to the file but never fsynced
        }
        var rng = SplitMix64(seed: 5)
        fs.crash(using: &rng, tornWrites: true)
        let db = try Bitcask(directory: dir, fileSystem: fs)
        for i in 0..<10 { #expect(try db.get(b("k\(i)")) == b("value \(i)")) }
        #expect(fs.fileSize(dir + "/" + name)! >= size)
        db.close()
    }

    @Test func aSealedFileShorterThanItsHintIsRefused() throws {
        let fs = MemoryFileSystem()
        let options = smallOptions(fileBytes: 200)
        do {
            let db = try Bitcask(directory: dir, fileSystem: fs, options: options)
            for i in 0..<20 { try db.put(b("key-\(i)"), Array(repeating: UInt8(i), count: 40)) }
            db.close()
        }
        let hinted = try fs.list(dir).filter { $0.hasSuffix(".hint") }.sorted()
        try #require(!hinted.isEmpty)
        let data = dir + "/" + hinted[0].dropLast(5) + ".data"
        let size = fs.fileSize(data)!
        try fs.open(data, create: false).truncate(to: size - 10)
        #expect {
            _ = try Bitcask(directory: dir, fileSystem: fs, options: options)
        } throws: { error in
            guard case .lostDurableBytes(let why)? = error as? StorageError else { return false }
            return why.contains(".hint")
        }
    }

    @Test func theNewestFileMissingIsRefused() throws {
        let fs = MemoryFileSystem()
        let (name, _) = try Self.syncedLog(fs)
        try fs.remove(dir + "/" + name)
        #expect(throws: StorageError.self) { _ = try Bitcask(directory: dir, fileSystem: fs) }
    }

    @Test func aDirectoryWithoutAMarkOpensAsBefore() throws {
        // Data directories written before marks existed, or a mark lost with a power failure.
        let fs = MemoryFileSystem()
        let (name, size) = try Self.syncedLog(fs)
        try fs.remove(dir + "/" + DurableMark.fileName)
        try fs.open(dir + "/" + name, create: false).truncate(to: size - 5)
        let db = try Bitcask(directory: dir, fileSystem: fs)
        #expect(try db.get(b("k0")) == b("value 0"))
        db.close()
    }

    @Test func aMergeThatEmptiesTheStoreLeavesNoStaleMark() throws {
        // Every key deleted, then merged: no file is left, and the next file reuses the first
        // file's name; the old mark must not hold it to the old size.
        let fs = MemoryFileSystem()
        do {
            let db = try Bitcask(directory: dir, fileSystem: fs)
            for i in 0..<5 { try db.put(b("k\(i)"), b("v")) }
            try db.sync()
            for i in 0..<5 { try db.delete(b("k\(i)")) }
            try db.merge()
            try db.put(b("new"), b("x"))
            db.close()
        }
        let db = try Bitcask(directory: dir, fileSystem: fs)
        #expect(try db.get(b("new")) == b("x"))
        db.close()
    }

    @Test func theStoreGroupCommitAdvancesTheMark() async throws {
        let fs = MemoryFileSystem()
        let store = try Store(directory: dir, durability: .always, fileSystem: fs)
        for i in 0..<5 { try await store.put(b("k\(i)"), b("v\(i)")) }
        let name = try fs.list(dir).first { $0.hasSuffix(".data") }!
        let size = fs.fileSize(dir + "/" + name)!
        // Read the mark as the next start-up would, while the store is still open (a kill -9).
        let raw = try fs.open(dir + "/" + DurableMark.fileName, create: false).read(at: 0, count: 64)
        #expect(DurableMark.decode(raw)?.bytes == size)
        await store.close()
    }
}
