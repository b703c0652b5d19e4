import Dispatch
import Foundation
import TernCore

/// When a write is acknowledged relative to its fsync.
public enum Durability: Sendable, Equatable {
    /// A write returns only after its bytes are fsynced; concurrent writers share one fsync.
    case always
    /// A write returns after the append; an fsync follows within this many milliseconds.
    case interval(milliseconds: Int)
    /// No fsync except at rotation, merge and close (tests and benchmarks only).
    case none
}

/// Where a `Store`'s engine runs: the caller's event loop in the server (run to completion: a
/// batch is appended on the loop that decided it, with no thread hop), a private serial queue
/// otherwise. TernStorage knows no event loops; the server adapts its loop to this.
public protocol StoreExecutor: Sendable {
    /// True when the caller runs on this executor (the engine may then be used inline).
    var inExecutor: Bool { get }
    /// Runs `body` on the executor, later.
    func execute(_ body: @escaping @Sendable () -> Void)
    /// Runs `body` on the executor after `milliseconds`.
    func execute(afterMilliseconds milliseconds: Int, _ body: @escaping @Sendable () -> Void)
}

/// Where a `Store`'s fsyncs run.
public enum FsyncPlacement: Sendable, Equatable {
    /// On one long-lived thread of the store, which hands each result back to the executor once
    /// per group: the executor keeps appending (the next group) and serving reads meanwhile.
    case thread
    /// On the executor itself, as Redis does under `appendfsync always`: no thread hop, but the
    /// executor waits for the disk (the next group forms in the sockets meanwhile).
    case inline
}

/// The thread-safe async front of a `Bitcask` that the server uses.
///
/// Every engine call runs on one executor (`StoreExecutor`): a private serial queue by default,
/// or the server's event loop, where calls made on that loop run inline (the callback is then
/// called before the call returns). Group commit falls out of the executor's order: a write
/// appends and, under `.always`, parks its callback and starts one fsync behind it; writes that
/// arrive meanwhile append before that fsync ends and wait for the next one, which releases all
/// of them. fsyncs run on one long-lived thread (or inline, `FsyncPlacement`). Merge copies on a
/// queue of its own, so reads and writes proceed during it; only its short plan and swap steps
/// take the executor.
///
/// ```
/// writers ──put──▶ [executor: append, append, append, SYNC ──▶ release all three]
///                        │ plan      ▲ swap     │ fsync ▲ once per group
///                        ▼           │          ▼       │
///                  [merge queue: copy, hints]  [fsync thread]
/// ```
public final class Store: Sendable {
    /// Engine state confined to the executor.
    final class Engine: @unchecked Sendable {
        // @unchecked Sendable: every property is touched only on `Store.executor` (the merge queue
        // gets a value-type plan and the file system, which is safe for concurrent use).
        let bitcask: Bitcask
        let fileSystem: any FileSystem
        var waiters: [@Sendable (Result<Void, StorageError>) -> Void] = []
        /// An fsync is running on the fsync thread.
        var syncInFlight = false
        /// Another sync was asked for while one was in flight.
        var syncWanted = false
        /// An `.interval` timer is armed.
        var timerArmed = false
        /// Work that must not overlap an fsync in flight (it may close the handle being synced).
        var whenIdle: [() -> Void] = []
        var merging = false
        var syncs = 0
        /// fsyncs by `LatencyBuckets` bucket and their summed time (`/metrics`' fsync histogram).
        var syncLatency = [Int](repeating: 0, count: LatencyBuckets.count)
        var syncMicros = 0

        /// Counts one fsync that took `micros`.
        func countSync(micros: Int) {
            syncs += 1
            syncLatency[LatencyBuckets.index(micros: micros)] += 1
            syncMicros += micros
        }

        /// Runs `body` now if no fsync is in flight, else right after it completes.
        func afterSync(_ body: @escaping () -> Void) {
            if syncInFlight { whenIdle.append(body) } else { body() }
        }
        init(bitcask: Bitcask, fileSystem: any FileSystem) {
            self.bitcask = bitcask
            self.fileSystem = fileSystem
        }
    }

    private let executor: any StoreExecutor
    /// fsyncs run here (`FsyncPlacement.thread`) so the executor keeps appending and serving reads.
    private let fsyncThread: FsyncThread?
    private let mergeQueue = DispatchQueue(label: "tern.storage.merge")
    private let engine: Engine
    /// The durability policy writes follow.
    public let durability: Durability
    private let autoMerge: Bool
    /// How many partitions the engine groups keys into (`BitcaskOptions.partitioning`; nil: none).
    public let partitionCount: Int?

    /// Opens the store (recovery runs here, synchronously: start-up is not on an event loop).
    ///
    /// - Parameters:
    ///   - options: engine options; pass a wall clock as `options.clock` for real timestamps.
    ///   - durability: see `Durability`; `.always` unless a test or benchmark says otherwise.
    ///   - fileSystem: `PosixFileSystem()` in production, `MemoryFileSystem` in tests.
    ///   - autoMerge: start a background merge when `Bitcask.needsMerge` after a write.
    ///   - wallClock: stamp records with the system clock (milliseconds since 1970), replacing
    ///     `options.clock`; pass false to keep `options.clock` (simulated time).
    ///   - executor: where the engine runs (nil: a private serial queue).
    ///   - fsync: where fsyncs run.
    public init(
        directory: String, options: BitcaskOptions = .init(), durability: Durability = .always,
        fileSystem: any FileSystem = PosixFileSystem(), autoMerge: Bool = true, wallClock: Bool = true,
        executor: (any StoreExecutor)? = nil, fsync: FsyncPlacement = .thread
    ) throws(StorageError) {
        var options = options
        options.writeHintsInline = false
        if wallClock { options.clock = { UInt64(max(0, Date().timeIntervalSince1970 * 1000)) } }
        let bitcask = try Bitcask(directory: directory, fileSystem: fileSystem, options: options)
        engine = Engine(bitcask: bitcask, fileSystem: fileSystem)
        self.durability = durability
        self.autoMerge = autoMerge
        partitionCount = options.partitioning?.count
        self.executor = executor ?? QueueExecutor(queue: DispatchQueue(label: "tern.storage.engine"))
        fsyncThread = fsync == .thread ? FsyncThread() : nil
    }

    deinit { fsyncThread?.stop() }

    /// Runs `body` on the executor: now if the caller is on it, else later.
    private func onEngine(_ body: @escaping @Sendable () -> Void) {
        if executor.inExecutor { body() } else { executor.execute(body) }
    }

    /// Runs `body` on the executor and returns its result to the awaiting task.
    private func run<T: Sendable>(_ body: @escaping @Sendable (Engine) throws(StorageError) -> T)
        async throws(StorageError) -> T
    {
        let result = await withCheckedContinuation {
            (c: CheckedContinuation<Result<T, StorageError>, Never>) in
            run(body) { c.resume(returning: $0) }
        }
        return try result.get()
    }

    /// Runs `body` on the executor and hands its result to `done`, there (before returning, when
    /// called on the executor).
    private func run<T: Sendable>(
        _ body: @escaping @Sendable (Engine) throws(StorageError) -> T,
        done: @escaping @Sendable (Result<T, StorageError>) -> Void
    ) {
        let engine = self.engine
        onEngine {
            do throws(StorageError) {
                done(.success(try body(engine)))
            } catch {
                done(.failure(error))
            }
        }
    }

    /// The value of `key`, nil if absent; throws `.damaged(key:)` for a record that failed its checksum.
    public func get(_ key: [UInt8]) async throws(StorageError) -> [UInt8]? {
        try await run { engine throws(StorageError) in try engine.bitcask.get(key) }
    }

    /// The same without a Swift task: `done` runs on the executor (inline when called there).
    public func get(_ key: [UInt8], done: @escaping @Sendable (Result<[UInt8]?, StorageError>) -> Void) {
        run({ engine throws(StorageError) in try engine.bitcask.get(key) }, done: done)
    }

    /// Sets `key`; returns when durable according to `durability`.
    public func put(_ key: [UInt8], _ value: [UInt8]) async throws(StorageError) {
        try await write([.put(key, value)])
    }

    /// Deletes `key`; returns when durable according to `durability`.
    public func delete(_ key: [UInt8]) async throws(StorageError) {
        try await write([.delete(key)])
    }

    /// Appends a batch atomically (all or nothing after a crash); returns when durable according
    /// to `durability` — or, with `sync: false`, as soon as it is appended: the caller says the
    /// batch may be lost in a crash (the consensus core's `PreparedFlush.mustSync == false`: a
    /// record peers can teach again). A later synced write, a rotation or `close` makes it durable.
    public func write(_ batch: [BatchEntry], sync: Bool = true) async throws(StorageError) {
        let result = await withCheckedContinuation {
            (c: CheckedContinuation<Result<Void, StorageError>, Never>) in
            write(batch, sync: sync) { c.resume(returning: $0) }
        }
        try result.get()
    }

    /// The same without a Swift task: `done` runs once, on the executor, when the batch is durable
    /// as `write(_:sync:)` would return — before this returns when called on the executor and
    /// nothing waits for an fsync. For the node, which runs on the executor: no task, continuation
    /// or thread hop per batch, one hand-back from the fsync thread per group.
    public func write(
        _ batch: [BatchEntry], sync: Bool, done: @escaping @Sendable (Result<Void, StorageError>) -> Void
    ) {
        let engine = self.engine
        let durability = sync ? self.durability : .none
        onEngine {
            do throws(StorageError) {
                try engine.bitcask.write(batch)
            } catch {
                done(.failure(error))
                return
            }
            switch durability {
            case .always:
                engine.waiters.append(done)
                self.startSync()
            case .interval(let ms):
                done(.success(()))
                self.armTimer(milliseconds: ms)
            case .none:
                done(.success(()))
            }
            self.writePendingHints()
            self.maybeStartMerge()
        }
    }

    /// On the executor: under `.interval`, one sync at most `milliseconds` after a write.
    private func armTimer(milliseconds: Int) {
        guard !engine.timerArmed else { return }
        engine.timerArmed = true
        let engine = self.engine
        executor.execute(afterMilliseconds: milliseconds) {
            engine.timerArmed = false
            self.startSync()
        }
    }

    /// On the executor: flush, then fsync (on the fsync thread, or inline) and release the writers
    /// that were waiting at the flush. While a threaded fsync runs, new writes append and wait for
    /// the next one: the group that forms during an fsync is committed by the following fsync.
    private func startSync() {
        let engine = self.engine
        guard !engine.syncInFlight else {
            engine.syncWanted = true
            return
        }
        let waiters = engine.waiters
        engine.waiters.removeAll()
        let prepared: (file: any StorageFile, mark: DurableMark)?
        do throws(StorageError) {
            prepared = try engine.bitcask.prepareGroupSync()
        } catch {
            for w in waiters { w(.failure(error)) }
            return
        }
        guard let (handle, mark) = prepared else {
            for w in waiters { w(.success(())) }
            return
        }
        guard let fsyncThread else {
            let result: Result<Void, StorageError>
            let began = DispatchTime.now().uptimeNanoseconds
            do throws(StorageError) {
                try handle.sync()
                engine.bitcask.noteDurable(mark)
                result = .success(())
            } catch {
                result = .failure(error)
            }
            engine.countSync(micros: Int((DispatchTime.now().uptimeNanoseconds - began) / 1000))
            for w in waiters { w(result) }
            return
        }
        engine.syncInFlight = true
        let file = SyncHandle(file: handle)
        let executor = self.executor
        fsyncThread.submit {
            let result: Result<Void, StorageError>
            let began = DispatchTime.now().uptimeNanoseconds
            do throws(StorageError) {
                try file.file.sync()
                result = .success(())
            } catch {
                result = .failure(error)
            }
            let micros = Int((DispatchTime.now().uptimeNanoseconds - began) / 1000)
            executor.execute {
                engine.syncInFlight = false
                engine.countSync(micros: micros)
                if case .success = result { engine.bitcask.noteDurable(mark) }
                for w in waiters { w(result) }
                let idle = engine.whenIdle
                engine.whenIdle.removeAll()
                for body in idle { body() }
                if engine.syncWanted || !engine.waiters.isEmpty {
                    engine.syncWanted = false
                    self.startSync()
                }
            }
        }
    }

    /// On the executor: hands hint files of newly sealed files to the merge queue, so the
    /// re-read of a sealed file (up to `maxFileSizeBytes`) never stalls writes or reads.
    private func writePendingHints() {
        let jobs = engine.bitcask.takePendingHints()
        guard !jobs.isEmpty else { return }
        let engine = self.engine
        mergeQueue.async {
            // A failure only costs a scan of that file at the next start-up.
            for job in jobs { try? Bitcask.writeHint(job, fileSystem: engine.fileSystem) }
        }
    }

    /// On the executor: starts a background merge if the thresholds say so.
    private func maybeStartMerge() {
        guard autoMerge, !engine.merging, engine.bitcask.needsMerge else { return }
        engine.merging = true
        engine.afterSync { self.startMerge { _ in } }
    }

    /// On the executor: plan here, copy on the merge queue, swap back here.
    private func startMerge(_ done: @escaping @Sendable (Result<Void, StorageError>) -> Void) {
        let engine = self.engine
        let plan: MergePlan?
        do throws(StorageError) {
            plan = try engine.bitcask.prepareMerge()
        } catch {
            engine.merging = false
            done(.failure(error))
            return
        }
        guard let plan else {
            engine.merging = false
            done(.success(()))
            return
        }
        let executor = self.executor
        mergeQueue.async {
            let copied: Result<MergeResult, StorageError>
            do throws(StorageError) {
                copied = .success(try Bitcask.runMerge(plan, fileSystem: engine.fileSystem))
            } catch {
                copied = .failure(error)
            }
            executor.execute {
                engine.afterSync { self.finishMerge(copied, done) }
            }
        }
    }

    /// On the executor, with no fsync in flight: swap in a merge's outputs.
    private func finishMerge(
        _ copied: Result<MergeResult, StorageError>,
        _ done: @escaping @Sendable (Result<Void, StorageError>) -> Void
    ) {
        let engine = self.engine
        engine.merging = false
        switch copied {
        case .success(let result):
            do throws(StorageError) {
                try engine.bitcask.finishMerge(result)
                done(.success(()))
            } catch {
                done(.failure(error))
            }
        case .failure(let error):
            engine.bitcask.abandonMerge()
            done(.failure(error))
        }
    }

    /// Merges now, in the background; returns when the merged files are swapped in.
    public func merge() async throws(StorageError) {
        let result = await withCheckedContinuation {
            (c: CheckedContinuation<Result<Void, StorageError>, Never>) in
            onEngine {
                guard !self.engine.merging else {
                    c.resume(returning: .failure(.mergeInProgress))
                    return
                }
                self.engine.merging = true
                self.engine.afterSync { self.startMerge { c.resume(returning: $0) } }
            }
        }
        try result.get()
    }

    /// Current counters.
    public func stats() async throws(StorageError) -> StorageStats {
        try await run { engine in engine.bitcask.stats }
    }

    /// How many fsyncs the group committer has issued (shows the batching in benchmarks).
    public func syncCount() async throws(StorageError) -> Int {
        try await run { engine in engine.syncs }
    }

    /// The fsyncs so far: how many, by `LatencyBuckets` bucket, and their summed time.
    public struct SyncStats: Sendable, Hashable {
        public var count = 0
        public var latency = [Int](repeating: 0, count: LatencyBuckets.count)
        public var micros = 0
        public init() {}
    }

    /// The fsync count and latency histogram (`/metrics`).
    public func syncStats() async throws(StorageError) -> SyncStats {
        try await run { engine in
            var s = SyncStats()
            s.count = engine.syncs
            s.latency = engine.syncLatency
            s.micros = engine.syncMicros
            return s
        }
    }

    /// Every live key (a snapshot), for anti-entropy.
    public func liveKeys() async throws(StorageError) -> [[UInt8]] {
        try await run { engine in
            var keys: [[UInt8]] = []
            engine.bitcask.forEachLive { keys.append($0) }
            return keys
        }
    }

    /// The live keys for which `filter` holds (a snapshot), handed to `done` on the executor
    /// (inline when called there): one walk of the keydir, no Swift task (the repair scanner's
    /// listings).
    public func liveKeys(
        where filter: @escaping @Sendable ([UInt8]) -> Bool, done: @escaping @Sendable ([[UInt8]]) -> Void
    ) {
        run(
            { engine in
                var keys: [[UInt8]] = []
                engine.bitcask.forEachLive { if filter($0) { keys.append($0) } }
                return keys
            }, done: { done((try? $0.get()) ?? []) })
    }

    /// The live keys of the partitions in `range` (`BitcaskOptions.partitioning`), each without
    /// its first `prefixBytes` bytes, grouped by partition (`range.count` lists), handed to `done`
    /// on the executor (inline when called there): reads only those keys. Without partitioning,
    /// `done` gets nil.
    public func liveKeys(
        inPartitions range: Range<Int>, droppingPrefix prefixBytes: Int = 0,
        done: @escaping @Sendable ([[[UInt8]]]?) -> Void
    ) {
        run(
            { engine -> [[[UInt8]]]? in
                guard engine.bitcask.partitionCount != nil else { return nil }
                var lists = [[[UInt8]]](repeating: [], count: range.count)
                engine.bitcask.forEachLive(inPartitions: range) { p, key in
                    lists[p - range.lowerBound].append(Array(key.dropFirst(min(prefixBytes, key.count))))
                }
                return lists
            }, done: { done((try? $0.get()) ?? nil) })
    }

    /// The values of `keys`, read in one executor turn, each nil if absent or the read's error
    /// (`.damaged` for a record that failed its checksum); `done` runs on the executor.
    public func get(
        many keys: [[UInt8]], done: @escaping @Sendable ([Result<[UInt8]?, StorageError>]) -> Void
    ) {
        run(
            { engine in
                engine.bitcask.get(many: keys)
            }, done: { done((try? $0.get()) ?? []) })
    }

    /// `get(many:)` of the keys `prefix` + each key, into one buffer (`Bitcask.get(many:prefix:into:)`:
    /// no array per record, and no system call per record where the data files can be mapped);
    /// `done` runs on the executor. After a failure every key reads `Span.damaged`.
    public func get(many keys: [[UInt8]], prefix: UInt8, done: @escaping @Sendable (PackedBytes) -> Void) {
        run(
            { engine in
                var out = PackedBytes()
                engine.bitcask.get(many: keys, prefix: prefix, into: &out)
                return out
            },
            done: {
                done((try? $0.get()) ?? PackedBytes(spans: Array(repeating: .damaged, count: keys.count)))
            })
    }

    /// The live records of partition `partition` whose keys start with `prefix`
    /// (`Bitcask.records(inPartition:prefix:keys:values:)`): `done` gets the keys (without the
    /// prefix) and their values at the same index, on the executor; nil once the store is closed
    /// (never an empty list for one that could not be read).
    public func records(
        inPartition partition: Int, prefix: UInt8,
        done: @escaping @Sendable ((keys: PackedBytes, values: PackedBytes)?) -> Void
    ) {
        run(
            { engine -> (keys: PackedBytes, values: PackedBytes)? in
                var keys = PackedBytes()
                var values = PackedBytes()
                guard
                    engine.bitcask.records(
                        inPartition: partition, prefix: prefix, keys: &keys, values: &values)
                else { return nil }
                return (keys, values)
            },
            done: { r in done((try? r.get()) ?? nil) })
    }

    /// Writes `values[i]` under `prefix` + `keys[i]` for each `i` in `indices` as one batch
    /// (`Bitcask.write(prefix:keys:values:indices:)`: no array per record); `done` as for
    /// `write(_:sync:done:)`, unsynced.
    public func write(
        prefix: UInt8, keys: [[UInt8]], values: PackedBytes, indices: [Int],
        done: @escaping @Sendable (Result<Void, StorageError>) -> Void
    ) {
        let engine = self.engine
        onEngine {
            do throws(StorageError) {
                try engine.bitcask.write(prefix: prefix, keys: keys, values: values, indices: indices)
            } catch {
                done(.failure(error))
                return
            }
            done(.success(()))
            self.writePendingHints()
            self.maybeStartMerge()
        }
    }

    /// What recovery found lost of the fsynced bytes (`BitcaskOptions.acceptLostDurableBytes`).
    public func lostDurableBytes() async throws(StorageError) -> [String] {
        try await run { engine in engine.bitcask.lostDurableBytes }
    }

    /// Keys whose latest record failed its checksum.
    public func damagedKeys() async throws(StorageError) -> Set<[UInt8]> {
        try await run { engine in engine.bitcask.damagedKeys }
    }

    /// Checks every live record's checksum (see `Bitcask.scrub`); returns the damaged keys.
    public func scrub() async throws(StorageError) -> Set<[UInt8]> {
        try await run { engine throws(StorageError) in try engine.bitcask.scrub() }
    }

    /// Drops a damaged key without writing it (see `Bitcask.markRepaired`).
    public func markRepaired(_ key: [UInt8]) async throws(StorageError) {
        try await run { engine in engine.bitcask.markRepaired(key) }
    }

    /// Syncs and closes; later calls throw `.closed`.
    public func close() async {
        let engine = self.engine
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            onEngine {
                engine.afterSync {
                    engine.bitcask.close()
                    self.fsyncThread?.stop()
                    // Resume after the merge queue's pending work (hint files) is done.
                    self.mergeQueue.async { c.resume() }
                }
            }
        }
    }
}

/// A file handle passed to the fsync thread for one fsync.
private final class SyncHandle: @unchecked Sendable {
    // @unchecked Sendable: the fsync thread only calls `sync()` on it, which is safe concurrently
    // with the engine's appends and reads on the same file (fsync/pwrite/pread on one descriptor;
    // MemoryFile locks), and the engine defers anything that could close it until the fsync ends.
    let file: any StorageFile
    init(file: any StorageFile) { self.file = file }
}

/// The default executor: a private serial queue (never "current": calls always hop to it).
struct QueueExecutor: StoreExecutor {
    let queue: DispatchQueue
    var inExecutor: Bool { false }
    func execute(_ body: @escaping @Sendable () -> Void) { queue.async(execute: body) }
    func execute(afterMilliseconds milliseconds: Int, _ body: @escaping @Sendable () -> Void) {
        queue.asyncAfter(deadline: .now() + .milliseconds(milliseconds), execute: body)
    }
}

/// One long-lived thread that runs a store's fsyncs, one after another, in submission order.
final class FsyncThread: @unchecked Sendable {
    // @unchecked Sendable: `jobs` and `stopped` are touched only under `condition`.
    private let condition = NSCondition()
    private var jobs: [@Sendable () -> Void] = []
    private var stopped = false

    init() {
        let thread = Thread { [self] in run() }
        thread.name = "tern.storage.fsync"
        thread.start()
    }

    func submit(_ job: @escaping @Sendable () -> Void) {
        condition.lock()
        jobs.append(job)
        condition.signal()
        condition.unlock()
    }

    /// Ends the thread after the jobs already submitted.
    func stop() {
        condition.lock()
        stopped = true
        condition.signal()
        condition.unlock()
    }

    private func run() {
        while true {
            condition.lock()
            while jobs.isEmpty && !stopped { condition.wait() }
            if jobs.isEmpty {
                condition.unlock()
                return
            }
            let batch = jobs
            jobs.removeAll()
            condition.unlock()
            for job in batch { job() }
        }
    }
}
