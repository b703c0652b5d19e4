import Foundation
import TernCore
import Testing

@testable import TernStorage

@Suite struct MergeTests {
    typealias Model = [[UInt8]: [UInt8]]

    /// Many overwrites and deletes across small files; returns the synced model.
    static func fill(_ db: Bitcask, seed: UInt64, ops: Int = 400) throws -> Model {
        var rng = SplitMix64(seed: seed)
        var model: Model = [:]
        for i in 0..<ops {
            let k = b("key\(Int.random(in: 0..<60, using: &rng))")
            if Int.random(in: 0..<4, using: &rng) == 0 {
                try db.delete(k)
                model[k] = nil
            } else {
                let v = b("v\(i)") + randomBytes(Int.random(in: 0..<30, using: &rng), &rng)
                try db.put(k, v)
                model[k] = v
            }
        }
        try db.sync()
        return model
    }

    @Test func mergeDropsDeadBytesAndKeepsLiveKeys() throws {
        let fs = MemoryFileSystem()
        let db = try Bitcask(directory: dir, fileSystem: fs, options: smallOptions())
        let model = try Self.fill(db, seed: 5)
        let before = db.stats
        #expect(before.deadBytes > before.liveBytes)
        try db.merge()
        let after = db.stats
        #expect(after.merges == 1)
        #expect(after.deadBytes == 0, "a merge of everything leaves no dead bytes")
        #expect(after.liveBytes == before.liveBytes)
        #expect(after.files < before.files)
        #expect(try contents(db) == model)
        db.close()
        let again = try Bitcask(directory: dir, fileSystem: fs, options: smallOptions())
        #expect(try contents(again) == model)
        #expect(again.stats.deadBytes == 0)
    }

    /// The active file a merge seals is one of its inputs: no hint is written for it (the re-read
    /// and checksum of a whole data file, thrown away by the merge), inline or queued; a file
    /// sealed because it is full still gets its hint.
    @Test(arguments: [true, false])
    func mergeWritesNoHintForTheFileItSeals(inline: Bool) throws {
        let fs = MemoryFileSystem()
        var options = smallOptions(fileBytes: 1 << 20)
        options.writeHintsInline = inline
        let db = try Bitcask(directory: dir, fileSystem: fs, options: options)
        let model = try Self.fill(db, seed: 7)
        func hints() throws -> Int { try fs.list(dir).filter { $0.hasSuffix(".hint") }.count }
        #expect(try hints() == 0 && db.takePendingHints().isEmpty, "one active file, never sealed")
        let plan = try #require(try db.prepareMerge())
        #expect(plan.inputs.count == 1)
        #expect(try hints() == 0, "no hint written for the merge's input")
        #expect(db.takePendingHints().isEmpty, "no hint queued for the merge's input")
        try db.finishMerge(try Bitcask.runMerge(plan, fileSystem: fs))
        #expect(try contents(db) == model)
        // A file sealed because it is full still gets its hint.
        let full = try Bitcask(
            directory: dir + "-full", fileSystem: fs,
            options: {
                var o = smallOptions()
                o.writeHintsInline = inline
                return o
            }())
        _ = try Self.fill(full, seed: 8)
        let queued = full.takePendingHints().count
        let written = try fs.list(dir + "-full").filter { $0.hasSuffix(".hint") }.count
        #expect(inline ? written > 0 : queued > 0)
    }

    /// Writes and deletes between plan and swap win over the merged copies, and deleted keys
    /// stay deleted after reopen.
    @Test func writesDuringMergeWin() throws {
        let fs = MemoryFileSystem()
        let db = try Bitcask(directory: dir, fileSystem: fs, options: smallOptions())
        var model = try Self.fill(db, seed: 6)
        let plan = try #require(try db.prepareMerge())
        #expect(throws: StorageError.mergeInProgress) { try db.prepareMerge() }
        let live = Array(model.keys.sorted { $0.lexicographicallyPrecedes($1) })
        try db.put(live[0], b("during"))
        model[live[0]] = b("during")
        try db.delete(live[1])
        model[live[1]] = nil
        let result = try Bitcask.runMerge(plan, fileSystem: fs)
        try db.put(live[2], b("during2"))
        model[live[2]] = b("during2")
        try db.finishMerge(result)
        #expect(try contents(db) == model)
        db.close()
        #expect(try contents(Bitcask(directory: dir, fileSystem: fs, options: smallOptions())) == model)
    }

    /// A merge stopped at any step, followed by a crash of the disk, reopens with every synced
    /// key intact and no deleted key back; a later merge completes.
    @Test(arguments: MergeStep.allCases)
    func mergeInterruptedAtEachStep(step: MergeStep) throws {
        for seed in 0..<3 as Range<UInt64> {
            let fs = MemoryFileSystem()
            var options = smallOptions()
            let once = FaultOnce()
            options.mergeFaultHook = { s throws(StorageError) in
                if s == step, once.fire() { throw .injectedFault(s.rawValue) }
            }
            let db = try Bitcask(directory: dir, fileSystem: fs, options: options)
            var model = try Self.fill(db, seed: seed)
            #expect(throws: StorageError.injectedFault(step.rawValue)) { try db.merge() }
            // The engine stays usable after the failed merge.
            db.abandonMerge()
            try db.put(b("post"), b("fault"))
            try db.delete(b("key1"))
            try db.sync()
            model[b("post")] = b("fault")
            model[b("key1")] = nil
            #expect(try contents(db) == model, "step \(step) seed \(seed), before crash")
            if seed == 0 {
                // A second merge in the same process must not reuse the failed one's file names.
                let plan = try #require(try db.prepareMerge())
                try db.finishMerge(try Bitcask.runMerge(plan, fileSystem: fs))
                #expect(try contents(db) == model, "step \(step): second merge in process")
                try db.sync()
            }
            var rng = SplitMix64(seed: seed &+ 100)
            fs.crash(using: &rng)
            let reopened = try Bitcask(directory: dir, fileSystem: fs, options: smallOptions())
            #expect(try contents(reopened) == model, "step \(step) seed \(seed), after crash")
            try reopened.merge()
            #expect(try contents(reopened) == model, "step \(step) seed \(seed), after second merge")
            reopened.close()
            #expect(try contents(Bitcask(directory: dir, fileSystem: fs)) == model)
        }
    }
}

/// Lets a fault hook fire once, so the same engine can then merge successfully.
final class FaultOnce: @unchecked Sendable {
    // @unchecked Sendable: `fired` is only touched under `lock`.
    private let lock = NSLock()
    private var fired = false

    /// True the first time only.
    func fire() -> Bool {
        lock.lock()
        defer { lock.unlock() }
        if fired { return false }
        fired = true
        return true
    }
}
