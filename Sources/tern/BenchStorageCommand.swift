import ArgumentParser
import Foundation
import TernStorage

/// `tern bench`: performance measurements, not tests (they depend on the machine).
struct BenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Measure Tern's components on this machine.",
        subcommands: [
            BenchStorageCommand.self, BenchTransportCommand.self, BenchRESPCommand.self,
            BenchEtcdCommand.self,
        ]
    )
}

/// `tern bench storage`: the storage engine's figures for docs/BENCHMARKS.md.
struct BenchStorageCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "storage",
        abstract: "Disk fsyncs/s; puts/s and gets/s (100-byte values, 1/8/64 writers, each durability "
            + "policy); start-up time and RAM with and without hint files; merge throughput."
    )

    @Option(help: "Scratch directory (emptied first).")
    var dir = "/tmp/tern-bench-storage"

    @Option(help: "Keys for the start-up and merge measurements.")
    var keys = 1_000_000

    @Option(help: "Seconds per throughput measurement.")
    var seconds = 3.0

    @Option(help: "Which parts to run: comma-separated of disk,put,batch,startup,merge.")
    var parts = "disk,put,batch,startup,merge"

    @Option(help: .hidden)
    var openOnly: String?

    func run() async throws {
        if let path = openOnly {
            try openAndReport(path)
            return
        }
        let selected = Set(parts.split(separator: ",").map(String.init))
        try? FileManager.default.removeItem(atPath: dir)
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        print(
            "machine: \(ProcessInfo.processInfo.activeProcessorCount) cores, "
                + "\(ProcessInfo.processInfo.physicalMemory >> 30) GiB RAM, dir \(dir)")
        if selected.contains("disk") { try measureFsyncs() }
        if selected.contains("put") { try await measureThroughput() }
        if selected.contains("batch") { try await measureBatches() }
        if selected.contains("startup") || selected.contains("merge") {
            try measureStartupAndMerge(
                startup: selected.contains("startup"), merge: selected.contains("merge"))
        }
        try? FileManager.default.removeItem(atPath: dir)
    }

    /// fdatasync of a 4 KiB overwrite in a loop: the most fsyncs/s the disk grants one writer.
    func measureFsyncs() throws {
        let fs = PosixFileSystem()
        let file = try fs.open(dir + "/fsync-test", create: true)
        let block = [UInt8](repeating: 0xAB, count: 4096)
        let clock = ContinuousClock()
        let start = clock.now
        var n = 0
        while clock.now - start < .seconds(2) {
            try file.write(block, at: UInt64(n % 256) * 4096)
            try file.sync()
            n += 1
        }
        let s = (clock.now - start).seconds
        print(String(format: "disk: %.0f fsyncs/s (4 KiB write + fdatasync, one writer)", Double(n) / s))
        file.close()
        // Appends are what the engine does; some disks sync them at a different rate.
        let log = try fs.open(dir + "/fsync-append-test", create: true)
        let record = [UInt8](repeating: 0xCD, count: 144)
        let appendStart = clock.now
        var m = 0
        while clock.now - appendStart < .seconds(2) {
            try log.write(record, at: UInt64(m) * 144)
            try log.sync()
            m += 1
        }
        let t = (clock.now - appendStart).seconds
        print(String(format: "disk: %.0f fsyncs/s (144-byte append + fdatasync, one writer)", Double(m) / t))
        log.close()
    }

    func measureThroughput() async throws {
        let policies: [(String, Durability)] = [
            ("always", .always), ("interval(10ms)", .interval(milliseconds: 10)), ("none", .none),
        ]
        print("policy          writers   puts/s     MB/s   fsyncs   gets/s")
        for (name, policy) in policies {
            for writers in [1, 8, 64] {
                let path = dir + "/tp-\(name)-\(writers)"
                var options = BitcaskOptions()
                options.clock = { UInt64(Date().timeIntervalSince1970 * 1000) }
                let store = try Store(directory: path, options: options, durability: policy, autoMerge: false)
                let value = [UInt8](repeating: 0x5A, count: 100)
                let duration = seconds
                let clock = ContinuousClock()
                let start = clock.now
                let counts = try await withThrowingTaskGroup(of: (Int, Int).self) { group in
                    for w in 0..<writers {
                        group.addTask {
                            var i = 0
                            while (clock.now - start).seconds < duration {
                                try await store.put(benchKey(w, i), value)
                                i += 1
                            }
                            return (w, i)
                        }
                    }
                    // Completion order is not writer order: index by writer.
                    var all = [Int](repeating: 0, count: writers)
                    for try await (w, c) in group { all[w] = c }
                    return all
                }
                let elapsed = (clock.now - start).seconds
                let puts = counts.reduce(0, +)
                let syncs = try await store.syncCount()
                let recordBytes = 28 + 16 + 100
                // Reads: the same number of concurrent readers over the keys just written.
                let readStart = clock.now
                let gets = try await withThrowingTaskGroup(of: Int.self) { group in
                    for (w, written) in counts.enumerated() where written > 0 {
                        group.addTask {
                            var rng = SystemRandomNumberGenerator()
                            var n = 0
                            while (clock.now - readStart).seconds < duration / 2 {
                                let v = try await store.get(
                                    benchKey(w, Int.random(in: 0..<written, using: &rng)))
                                precondition(v?.count == 100, "benchmark read a wrong value")
                                n += 1
                            }
                            return n
                        }
                    }
                    return try await group.reduce(0, +)
                }
                let readElapsed = (clock.now - readStart).seconds
                await store.close()
                print(
                    String(
                        format: "%-15@ %7d %8.0f %8.1f %8d %8.0f", name as NSString, writers,
                        Double(puts) / elapsed, Double(puts * recordBytes) / elapsed / 1e6, syncs,
                        Double(gets) / readElapsed))
                try? FileManager.default.removeItem(atPath: path)
            }
        }
    }

    /// `always` with 64 writers that each append batches of 100 puts: what the disk allows
    /// when a writer has many keys to write at once (one append, one shared fsync per batch).
    func measureBatches() async throws {
        let path = dir + "/tp-batch"
        let store = try Store(directory: path, durability: .always, autoMerge: false)
        let value = [UInt8](repeating: 0x5A, count: 100)
        let duration = seconds
        let clock = ContinuousClock()
        let start = clock.now
        let puts = try await withThrowingTaskGroup(of: Int.self) { group in
            for w in 0..<64 {
                group.addTask {
                    var i = 0
                    while (clock.now - start).seconds < duration {
                        try await store.write((0..<100).map { .put(benchKey(w, i + $0), value) })
                        i += 100
                    }
                    return i
                }
            }
            return try await group.reduce(0, +)
        }
        let elapsed = (clock.now - start).seconds
        let syncs = try await store.syncCount()
        await store.close()
        print(
            String(
                format: "always, 64 writers, batches of 100: %.0f puts/s, %.1f MB/s, %d fsyncs",
                Double(puts) / elapsed, Double(puts * 144) / elapsed / 1e6, syncs))
        try? FileManager.default.removeItem(atPath: path)
    }

    func measureStartupAndMerge(startup: Bool, merge: Bool) throws {
        let path = dir + "/startup"
        let clock = ContinuousClock()
        let value = [UInt8](repeating: 0x33, count: 100)
        var start = clock.now
        do {
            let db = try Bitcask(directory: path, fileSystem: PosixFileSystem())
            for i in 0..<keys { try db.put(benchKey(0, i), value) }
            try db.sync()
            db.close()
        }
        print(
            String(
                format: "load: %d keys written in %.2f s (%.0f puts/s, single thread, no fsync per put)",
                keys, (clock.now - start).seconds, Double(keys) / (clock.now - start).seconds))
        if startup {
            // Each open runs in a fresh process so its RSS is not blurred by this one's heap.
            for name in try FileManager.default.contentsOfDirectory(atPath: path)
            where name.hasSuffix(".hint") {
                try FileManager.default.removeItem(atPath: path + "/" + name)
            }
            print("start-up without hint files (scan of every data file):")
            try runChild(["bench", "storage", "--open-only", path])
            print("start-up with hint files:")
            try runChild(["bench", "storage", "--open-only", path])
        }
        if merge {
            let db = try Bitcask(directory: path, fileSystem: PosixFileSystem())
            for i in stride(from: 0, to: keys, by: 2) { try db.put(benchKey(0, i), value) }
            try db.sync()
            let before = db.stats
            start = clock.now
            try db.merge()
            let s = (clock.now - start).seconds
            let after = db.stats
            print(
                String(
                    format:
                        "merge: %.1f MB in (%.1f MB dead) -> %.1f MB out in %.2f s: %.1f MB/s in, %.0f records/s",
                    Double(before.liveBytes + before.deadBytes) / 1e6, Double(before.deadBytes) / 1e6,
                    Double(after.liveBytes + after.deadBytes) / 1e6, s,
                    Double(before.liveBytes + before.deadBytes) / 1e6 / s, Double(after.keys) / s))
            db.close()
        }
        try? FileManager.default.removeItem(atPath: path)
    }

    func runChild(_ arguments: [String]) throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: CommandLine.arguments[0])
        p.arguments = arguments
        try p.run()
        p.waitUntilExit()
    }

    func openAndReport(_ path: String) throws {
        let before = residentBytes()
        let clock = ContinuousClock()
        let start = clock.now
        let db = try Bitcask(directory: path, fileSystem: PosixFileSystem())
        let s = (clock.now - start).seconds
        let after = residentBytes()
        let stats = db.stats
        print(
            String(
                format:
                    "  %d keys open in %.2f s; RSS +%.1f MB = %.1f bytes/key (16-byte keys); "
                    + "keydir overhead %.1f bytes/key beyond the key",
                stats.keys, s, Double(after - before) / 1e6,
                Double(after - before) / Double(max(stats.keys, 1)),
                Double(stats.keydirOverheadBytes) / Double(max(stats.keys, 1))))
        db.close()
    }
}

/// 16-byte keys: writer number and counter, fixed width.
func benchKey(_ writer: Int, _ i: Int) -> [UInt8] {
    precondition(writer < 100 && i < 1_000_000_000_000, "benchmark keys are fixed width")
    let w = String(writer)
    let s = String(i)
    let text =
        "w" + String(repeating: "0", count: 2 - w.count) + w + "-"
        + String(repeating: "0", count: 12 - s.count) + s
    return Array(text.utf8)
}

/// Resident set size of this process, from /proc/self/statm.
func residentBytes() -> Int {
    guard let text = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return 0 }
    let fields = text.split(separator: " ")
    return fields.count > 1 ? (Int(fields[1]) ?? 0) * Int(sysconf(Int32(_SC_PAGESIZE))) : 0
}

extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}
