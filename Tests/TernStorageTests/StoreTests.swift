import Dispatch
import TernCore
import Testing

@testable import TernStorage

@Suite struct StoreTests {
    /// 64 concurrent writers under `.always`: every write lands, and writers share fsyncs.
    @Test func groupCommitSharesFsyncs() async throws {
        let fs = MemoryFileSystem()
        let store = try Store(directory: dir, durability: .always, fileSystem: fs)
        let writers = 64
        let perWriter = 20
        try await withThrowingTaskGroup(of: Void.self) { group in
            for w in 0..<writers {
                group.addTask {
                    for i in 0..<perWriter { try await store.put(b("w\(w)-\(i)"), b("value \(w) \(i)")) }
                }
            }
            try await group.waitForAll()
        }
        let syncs = try await store.syncCount()
        print("group commit: \(writers * perWriter) writes, \(syncs) fsyncs")
        #expect(syncs < writers * perWriter, "concurrent writers must share fsyncs")
        #expect(syncs > 0)
        for w in 0..<writers {
            #expect(try await store.get(b("w\(w)-\(perWriter - 1)")) == b("value \(w) \(perWriter - 1)"))
        }
        #expect(try await store.stats().keys == writers * perWriter)
        await store.close()
        // Acknowledged under .always means durable: a crash right after loses nothing.
        var rng = SplitMix64(seed: 1)
        fs.crash(using: &rng)
        #expect(try Bitcask(directory: dir, fileSystem: fs).stats.keys == writers * perWriter)
    }

    /// `write(_, sync: false)` under `.always`: readable at once, no fsync of its own; the next
    /// synced write makes it durable too (one fsync covers every append before it).
    @Test func unsyncedWriteRidesTheNextSync() async throws {
        let fs = MemoryFileSystem()
        let store = try Store(directory: dir, durability: .always, fileSystem: fs)
        try await store.put(b("a"), b("1"))
        let synced = try await store.syncCount()
        try await store.write([.put(b("b"), b("2"))], sync: false)
        #expect(try await store.syncCount() == synced)
        #expect(try await store.get(b("b")) == b("2"))
        try await store.put(b("c"), b("3"))
        #expect(try await store.syncCount() == synced + 1)
        var rng = SplitMix64(seed: 7)
        fs.crash(using: &rng)  // without close: only what was fsynced survives
        let reopened = try Bitcask(directory: dir, fileSystem: fs)
        #expect(try reopened.get(b("b")) == b("2"))
        #expect(try reopened.get(b("c")) == b("3"))
    }

    @Test(arguments: [Durability.interval(milliseconds: 5), .none])
    func otherPolicies(durability: Durability) async throws {
        let store = try Store(directory: dir, durability: durability, fileSystem: MemoryFileSystem())
        try await store.put(b("a"), b("1"))
        try await store.write([.put(b("b"), b("2")), .delete(b("a"))])
        #expect(try await store.get(b("a")) == nil)
        #expect(try await store.get(b("b")) == b("2"))
        #expect(try await store.liveKeys() == [b("b")])
        await store.close()
        await #expect(throws: StorageError.closed) { try await store.get(b("b")) }
    }

    /// Merge in the background while writers overwrite and delete: the final state is exact,
    /// and it survives reopening.
    @Test func mergeWithConcurrentWrites() async throws {
        let fs = MemoryFileSystem()
        let store = try Store(
            directory: dir, options: smallOptions(fileBytes: 4096), durability: .none, fileSystem: fs,
            autoMerge: false)
        for i in 0..<400 { try await store.put(b("k\(i)"), b("initial \(i)")) }
        for i in 0..<400 { try await store.put(b("k\(i)"), b("second \(i)")) }
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await store.merge() }
            for w in 0..<4 {
                group.addTask {
                    for i in stride(from: w, to: 400, by: 4) {
                        if i % 10 == 0 {
                            try await store.delete(b("k\(i)"))
                        } else {
                            try await store.put(b("k\(i)"), b("third \(i)"))
                        }
                    }
                }
            }
            try await group.waitForAll()
        }
        func expected(_ i: Int) -> [UInt8]? { i % 10 == 0 ? nil : b("third \(i)") }
        for i in 0..<400 { #expect(try await store.get(b("k\(i)")) == expected(i)) }
        #expect(try await store.stats().merges == 1)
        await store.close()
        let db = try Bitcask(directory: dir, fileSystem: fs)
        for i in 0..<400 { #expect(try db.get(b("k\(i)")) == expected(i)) }
    }

    /// Dead bytes past the thresholds start a merge on their own.
    @Test func autoMergeTriggers() async throws {
        var options = smallOptions(fileBytes: 4096)
        options.mergeMinDeadBytes = 8192
        options.mergeDeadRatio = 0.5
        let store = try Store(
            directory: dir, options: options, durability: .none, fileSystem: MemoryFileSystem())
        for round in 0..<20 {
            for i in 0..<20 {
                try await store.put(b("k\(i)"), b("round \(round) " + String(repeating: "x", count: 40)))
            }
        }
        // The merge finishes asynchronously; wait for it a bounded number of times.
        var merges = 0
        for _ in 0..<200 where merges == 0 {
            merges = try await store.stats().merges
            if merges == 0 { try await Task.sleep(for: .milliseconds(5)) }
        }
        #expect(merges >= 1)
        for i in 0..<20 {
            #expect(try await store.get(b("k\(i)")) == b("round 19 " + String(repeating: "x", count: 40)))
        }
    }
}

@Suite struct StoreHintTests {
    /// The Store writes hint files of sealed files on its background queue; after `close` every
    /// sealed file has one, and a start-up from them sees every key.
    @Test func backgroundHintsCoverSealedFiles() async throws {
        let fs = MemoryFileSystem()
        let store = try Store(
            directory: dir, options: smallOptions(fileBytes: 1024), durability: .none, fileSystem: fs,
            autoMerge: false)
        for i in 0..<200 { try await store.put(b("k\(i)"), b("value \(i)")) }
        await store.close()
        let names = try fs.list(dir)
        let data = Set(names.filter { $0.hasSuffix(".data") }.map { $0.dropLast(5) })
        let hints = Set(names.filter { $0.hasSuffix(".hint") }.map { $0.dropLast(5) })
        #expect(data.count > 5)
        #expect(hints.isSubset(of: data))
        #expect(data.subtracting(hints).count == 1, "only the last active file lacks a hint")
        let db = try Bitcask(directory: dir, fileSystem: fs)
        #expect(db.stats.keys == 200)
        #expect(try db.get(b("k7")) == b("value 7"))
    }
}

/// A serial queue that knows when it is the current one: the stand-in for the server's event loop.
final class TestExecutor: StoreExecutor {
    let queue = DispatchQueue(label: "test.executor")
    let key = DispatchSpecificKey<Bool>()
    init() { queue.setSpecific(key: key, value: true) }
    var inExecutor: Bool { DispatchQueue.getSpecific(key: key) == true }
    func execute(_ body: @escaping @Sendable () -> Void) { queue.async(execute: body) }
    func execute(afterMilliseconds milliseconds: Int, _ body: @escaping @Sendable () -> Void) {
        queue.asyncAfter(deadline: .now() + .milliseconds(milliseconds), execute: body)
    }
    /// Runs `body` on the executor and returns what it returns.
    func run<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
        await withCheckedContinuation { c in queue.async { c.resume(returning: body()) } }
    }
}

/// What a batch's callback saw: whether it ran on the executor, and before `write` returned.
final class CallbackLog: @unchecked Sendable {
    // @unchecked Sendable: touched only on the test executor.
    var onExecutor: [Bool] = []
    var results: [Bool] = []
}

@Suite struct StoreExecutorTests {
    /// Called on its executor, the store runs inline: an unsynced batch (and a read) completes
    /// before the call returns, with no hop; a synced one waits for the fsync thread, whose answer
    /// comes back on the executor, once for every batch appended meanwhile (group commit).
    @Test func onTheExecutorAppendsInlineAndFsyncsOnItsThread() async throws {
        let fs = MemoryFileSystem()
        let ex = TestExecutor()
        let store = try Store(directory: "/ex", durability: .always, fileSystem: fs, executor: ex)
        let log = CallbackLog()
        let inline: Bool = await ex.run {
            let seen = CallbackLog()
            store.write([.put(b("u"), b("1"))], sync: false) { r in
                seen.results.append((try? r.get()) != nil)
            }
            store.get(b("u")) { seen.results.append((try? $0.get()) == b("1")) }
            return seen.results == [true, true]
        }
        #expect(inline, "an unsynced batch and a read complete inline on the executor")
        let syncsBefore = try await store.syncCount()
        let returnedBeforeDone: Bool = await ex.run {
            for i in 0..<50 {
                store.write([.put(b("k\(i)"), b("v\(i)"))], sync: true) { r in
                    log.onExecutor.append(ex.inExecutor)
                    log.results.append((try? r.get()) != nil)
                }
            }
            return log.results.isEmpty
        }
        #expect(returnedBeforeDone, "a synced batch waits for the fsync thread")
        for _ in 0..<200 where await ex.run({ log.results.count }) < 50 {
            try await Task.sleep(nanoseconds: 5_000_000)
        }
        let (onExecutor, ok) = await ex.run { (log.onExecutor, log.results) }
        #expect(ok.count == 50 && ok.allSatisfy { $0 })
        #expect(onExecutor.allSatisfy { $0 }, "completions come back on the executor")
        let syncs = try await store.syncCount() - syncsBefore
        #expect(syncs >= 1 && syncs <= 2, "50 batches appended in one turn share the fsyncs (got \(syncs))")
        var rng = SplitMix64(seed: 3)
        fs.crash(using: &rng)  // acknowledged means fsynced: nothing acknowledged is lost
        let reopened = try Bitcask(directory: "/ex", fileSystem: fs)
        for i in 0..<50 { #expect(try reopened.get(b("k\(i)")) == b("v\(i)")) }
    }

    /// `FsyncPlacement.inline`: the executor fsyncs itself, so even a synced batch is durable when
    /// the call returns (one fsync per batch, as Redis's `appendfsync always`).
    @Test func inlineFsyncCompletesBeforeReturning() async throws {
        let fs = MemoryFileSystem()
        let ex = TestExecutor()
        let store = try Store(
            directory: "/in", durability: .always, fileSystem: fs, executor: ex, fsync: .inline)
        let before = try await store.syncCount()
        let allInline: Bool = await ex.run {
            let seen = CallbackLog()
            for i in 0..<10 {
                store.write([.put(b("k\(i)"), b("v\(i)"))], sync: true) {
                    seen.results.append((try? $0.get()) != nil)
                }
                guard seen.results.count == i + 1 else { return false }
            }
            return seen.results.allSatisfy { $0 }
        }
        #expect(allInline)
        #expect(try await store.syncCount() - before == 10)
        var rng = SplitMix64(seed: 4)
        fs.crash(using: &rng)
        let reopened = try Bitcask(directory: "/in", fileSystem: fs)
        for i in 0..<10 { #expect(try reopened.get(b("k\(i)")) == b("v\(i)")) }
        await store.close()
    }
}
