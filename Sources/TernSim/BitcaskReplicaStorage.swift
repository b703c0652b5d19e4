public import TernConsensus
public import TernCore
public import TernRepair
import TernStorage

/// Tuning of the storage engine under the simulator: small files, so that rotation, hint files
/// and merge all happen within a few hundred operations.
public struct SimStorageOptions: Sendable, Hashable {
    /// The active data file rotates past this size (the server's default is 256 MiB).
    public var fileSizeBytesMax: UInt64 = 64 << 10
    /// A merge starts when dead bytes pass this many (and half of all bytes), as `Store` does.
    public var mergeDeadBytesMin: UInt64 = 128 << 10
    /// Per tick and node: a merge starts anyway (merges at seeded moments, not only at thresholds).
    public var mergeChance = 0.002
    /// Ticks between a merge's copy and its swap; writes made meanwhile must win over the copies.
    public var mergeSwapDelayTicksMax: UInt64 = 20
    /// With more than 0, the engine groups key records by the repair scanner's ring buckets of
    /// this many bits (`RepairOptions.bucket(ofRecordKey:)`), as the server's does, and the
    /// scanner's listings read them so (`liveKeys(inBuckets:)`).
    public var listingBucketBits: UInt8 = 0
    public init() {}
}

/// `ReplicaStorage` over the real Bitcask engine (`TernStorage.Bitcask`) on a simulated disk
/// (`MemoryFileSystem`): what the simulator proves is the engine that ships, not a model of it.
///
/// A crash is a power loss of the disk (bytes written since the last fsync are lost, possibly
/// leaving a torn tail; directory changes since the last directory sync may be undone) followed by
/// a fresh `Bitcask` whose recovery runs over what is left. Corruption is a bit flipped in a
/// stored record, found by the engine's checksums at the next read. Merges run in the engine's own
/// three steps (plan, copy, swap) with writes in between, and can be cut short by a crash at any of
/// the engine's `MergeStep`s.
///
/// Single-threaded: the simulator owns it.
public final class BitcaskReplicaStorage: ReplicaStorage {
    /// The simulated disk (one per node).
    public let fileSystem: MemoryFileSystem
    /// The engine's data directory.
    public let directory: String
    let options: BitcaskOptions
    let mergeFault: MergeFaultSwitch
    /// The engine; replaced by a freshly recovered one at every crash.
    public private(set) var engine: Bitcask
    /// A merge whose copy is done and whose swap is due (`finishMerge`).
    var copiedMerge: MergeResult?
    /// Syncs requested by the node (group commits).
    public private(set) var syncs = 0
    /// Merges swapped in, and merges cut short by a crash, since the simulation began.
    public private(set) var mergesFinished = 0
    public private(set) var mergesInterrupted = 0
    /// The last few distinct keys written (newest last): bit rot is most harmful on a hot record,
    /// whose open slot or fresh promise still matters, so the simulator aims there half the time.
    public private(set) var recent: [[UInt8]] = []

    /// Opens an engine in `directory` of `fileSystem`.
    ///
    /// - Parameters:
    ///   - writeBufferBytes: the engine's append buffer. 0 hands every batch to the (simulated)
    ///     page cache at once, so a crash can tear it; larger buffers lose whole unsynced batches.
    public init(
        fileSystem: MemoryFileSystem = MemoryFileSystem(), directory: String = "/data",
        options sim: SimStorageOptions = .init(), writeBufferBytes: Int = 0
    ) throws(StorageError) {
        self.fileSystem = fileSystem
        self.directory = directory
        let fault = MergeFaultSwitch()
        var o = BitcaskOptions()
        o.maxFileSizeBytes = sim.fileSizeBytesMax
        o.mergeMinDeadBytes = sim.mergeDeadBytesMin
        o.writeBufferBytes = writeBufferBytes
        if sim.listingBucketBits > 0 {
            var r = RepairOptions()
            r.bucketBits = sim.listingBucketBits
            o.partitioning = KeyPartitioning(count: r.bucketCount) { [r] in r.bucket(ofRecordKey: $0) }
        }
        o.mergeFaultHook = { step throws(StorageError) in
            if fault.stopAt == step { throw .injectedFault(step.rawValue) }
        }
        options = o
        mergeFault = fault
        engine = try Bitcask(directory: directory, fileSystem: fileSystem, options: o)
    }

    // MARK: - ReplicaStorage

    public func load(_ key: [UInt8]) throws -> LoadResult {
        do {
            if let v = try engine.get(key) { return .state(v) }
            return .absent
        } catch .damaged {
            return .damaged
        }
    }

    /// `load` of many keys at once, through the engine's batched read (`Bitcask.get(many:)`).
    public func load(many keys: [[UInt8]]) -> [LoadResult] {
        engine.get(many: keys).map { r -> LoadResult in
            switch r {
            case .success(let v?): .state(v)
            case .success(nil): .absent
            case .failure: .damaged
            }
        }
    }

    /// `load(many:)` of the keys `prefix` + each key into one buffer, as the server's repair reads
    /// them (`Bitcask.get(many:prefix:into:)`; the memory file system does not map, so runs of
    /// records are read).
    public func load(many keys: [[UInt8]], prefix: UInt8) -> PackedBytes {
        var out = PackedBytes()
        engine.get(many: keys, prefix: prefix, into: &out)
        return out
    }

    /// The key records of one bucket, read whole as the server answers a fetch
    /// (`Bitcask.records(inPartition:prefix:keys:values:)`); nil without partitions or once closed.
    public func records(inBucket bucket: Int, prefix: UInt8) -> (keys: PackedBytes, values: PackedBytes)? {
        guard engine.partitionCount != nil else { return nil }
        var keys = PackedBytes()
        var values = PackedBytes()
        guard engine.records(inPartition: bucket, prefix: prefix, keys: &keys, values: &values) else {
            return nil
        }
        return (keys, values)
    }

    /// `write` of `values[i]` under `prefix` + `keys[i]` for each `i` in `indices`, as the server
    /// installs a bulk rebuild's records (`Bitcask.write(prefix:keys:values:indices:)`).
    public func write(prefix: UInt8, keys: [[UInt8]], values: PackedBytes, indices: [Int]) throws {
        try engine.write(prefix: prefix, keys: keys, values: values, indices: indices)
        for i in indices {
            let key = [prefix] + keys[i]
            recent.removeAll { $0 == key }
            recent.append(key)
        }
        if recent.count > 8 { recent.removeFirst(recent.count - 8) }
    }

    /// The keys (record prefix removed) of the key records in `buckets`, per bucket, from the
    /// engine's partitions (`SimStorageOptions.listingBucketBits`); nil without them.
    public func liveKeys(inBuckets buckets: Range<Int>) -> [[[UInt8]]]? {
        guard engine.partitionCount != nil else { return nil }
        var lists = [[[UInt8]]](repeating: [], count: buckets.count)
        engine.forEachLive(inPartitions: buckets) { p, key in
            lists[p - buckets.lowerBound].append(Array(key.dropFirst()))
        }
        return lists
    }

    public func write(_ batch: [(key: [UInt8], value: [UInt8])]) throws {
        try engine.write(batch.map { .put($0.key, $0.value) })
        for e in batch {
            recent.removeAll { $0 == e.key }
            recent.append(e.key)
        }
        if recent.count > 8 { recent.removeFirst(recent.count - 8) }
    }

    public func sync() throws {
        try engine.sync()
        syncs += 1
    }

    // MARK: - Faults

    /// Power loss and restart of the engine: unsynced bytes are lost (with `tornWrites`, a random
    /// prefix of them survives), then a new engine recovers from the disk. A copied merge that was
    /// not swapped in yet is abandoned (its outputs stay on disk; recovery copes).
    public func crash(rng: inout SplitMix64, tornWrites: Bool) throws(StorageError) {
        fileSystem.crash(using: &rng, tornWrites: tornWrites)
        // After the crash every old handle fails, so this close cannot make lost bytes durable.
        engine.close()
        copiedMerge = nil
        recent = []
        engine = try Bitcask(directory: directory, fileSystem: fileSystem, options: options)
    }

    /// Flips one bit in the value of the latest stored record of `key` (media corruption), then
    /// reopens the engine so that its recovery runs over the damaged file. Called right after
    /// `crash` (the node is down), so there is nothing unsynced that closing could make durable.
    ///
    /// Returns `.corrupted` when the engine now reports the key damaged; `.notFound` when the key
    /// has no record with a value to damage; `.undetected` when the engine still serves the key
    /// after its latest record was damaged (an engine bug the simulator reports).
    public func corrupt(_ key: [UInt8], rng: inout SplitMix64) throws(StorageError) -> CorruptionOutcome {
        guard let target = try latestRecord(of: key), target.valueLength > 0 else { return .notFound }
        engine.close()
        let offset = target.valueOffset + rng.below(UInt64(target.valueLength))
        fileSystem.flipBit(path: target.path, offset: offset, bit: Int(rng.below(8)))
        engine = try Bitcask(directory: directory, fileSystem: fileSystem, options: options)
        return load(key: key) == .damaged ? .corrupted : .undetected
    }

    /// Removes `key`'s record durably (a tombstone, synced): the rebuild marker leaving, or a record
    /// lost to the disk (the simulator's "dropped record" fault, whose engine-level cause — a
    /// damaged header the scan cannot attribute to a key — makes the node restart learner-only).
    public func remove(_ key: [UInt8]) throws(StorageError) {
        try engine.write([.delete(key)])
        try engine.sync()
        recent.removeAll { $0 == key }
    }

    /// The engine's append buffer (a wiped disk's new engine gets the same).
    var writeBufferBytes: Int { options.writeBufferBytes }

    /// What `corrupt` achieved.
    public enum CorruptionOutcome: Sendable, Hashable {
        case corrupted
        case notFound
        case undetected
    }

    private func load(key: [UInt8]) -> LoadResult {
        (try? load(key)) ?? .damaged
    }

    /// The latest record of `key` on disk, found by walking the data files in the engine's order
    /// (file name order; records later in a file win) with the record layout of docs/STORAGE.md:
    /// a 28-byte header whose bytes 16..<20 and 20..<24 are the key and value lengths.
    func latestRecord(of key: [UInt8]) throws(StorageError) -> (
        path: String, valueOffset: UInt64, valueLength: Int
    )? {
        let names = try fileSystem.list(directory).filter { $0.hasSuffix(".data") }.sorted()
        for name in names.reversed() {
            let path = directory + "/" + name
            let file = try fileSystem.open(path, create: false)
            defer { file.close() }
            let bytes = try file.read(at: 0, count: Int(file.size))
            var found: (UInt64, Int)?
            var pos = 0
            while bytes.count - pos >= 28, bytes[pos] == 0x7C, bytes[pos + 1] == 0xB1 {
                let keyLength = Int(le32(bytes, pos + 16))
                let valueLength = Int(le32(bytes, pos + 20))
                let end = pos + 28 + keyLength + valueLength
                guard end <= bytes.count else { break }
                let tombstone = bytes[pos + 2] & 1 != 0
                if keyLength == key.count, bytes[(pos + 28)..<(pos + 28 + keyLength)].elementsEqual(key) {
                    found = tombstone ? nil : (UInt64(pos + 28 + keyLength), valueLength)
                }
                pos = end
            }
            if let (offset, length) = found { return (path, offset, length) }
        }
        return nil
    }

    private func le32(_ b: [UInt8], _ at: Int) -> UInt32 {
        UInt32(b[at]) | UInt32(b[at + 1]) << 8 | UInt32(b[at + 2]) << 16 | UInt32(b[at + 3]) << 24
    }

    // MARK: - Merge

    /// Whether the engine's dead-byte thresholds ask for a merge.
    public var needsMerge: Bool { copiedMerge == nil && engine.needsMerge }

    /// Whether a merge has been copied and waits for `finishMerge`.
    public var mergeCopied: Bool { copiedMerge != nil }

    /// Plans a merge and copies its live records (the part `Store` runs on its merge queue); the
    /// swap waits for `finishMerge`, so writes in between race with it as in the server. With
    /// `stopAt`, the merge stops at that step as if power failed there (the caller then crashes).
    /// Returns false when there was nothing to merge or the merge was stopped.
    @discardableResult
    public func startMerge(stopAt: MergeStep? = nil) throws(StorageError) -> Bool {
        guard copiedMerge == nil else { return false }
        mergeFault.stopAt = stopAt
        defer { mergeFault.stopAt = nil }
        let plan: MergePlan?
        do {
            plan = try engine.prepareMerge()
        } catch .injectedFault {
            // `.planned` fires inside prepareMerge; the engine must let a later merge start.
            engine.abandonMerge()
            mergesInterrupted += 1
            return false
        }
        guard let plan else { return false }
        do {
            copiedMerge = try Bitcask.runMerge(plan, fileSystem: fileSystem)
        } catch .injectedFault {
            engine.abandonMerge()
            mergesInterrupted += 1
            return false
        }
        if let stopAt, [.keydirSwapped, .firstInputRemoved, .finished].contains(stopAt) {
            return try finishMerge(stopAt: stopAt)
        }
        return true
    }

    /// Swaps a copied merge in (keydir, then removal of the inputs), optionally stopping at a step.
    @discardableResult
    public func finishMerge(stopAt: MergeStep? = nil) throws(StorageError) -> Bool {
        guard let result = copiedMerge else { return false }
        copiedMerge = nil
        mergeFault.stopAt = stopAt
        defer { mergeFault.stopAt = nil }
        do {
            try engine.finishMerge(result)
        } catch .injectedFault {
            mergesInterrupted += 1
            return false
        }
        mergesFinished += 1
        return true
    }

    /// Every live key record, sorted (deterministic).
    public var liveKeys: [[UInt8]] {
        var keys: [[UInt8]] = []
        engine.forEachLive { keys.append($0) }
        return keys.sorted { $0.lexicographicallyPrecedes($1) }
    }

    /// The engine's counters.
    public var stats: StorageStats { engine.stats }
}

/// Where the merge fault hook should stop the next merge.
///
/// `@unchecked Sendable`: `BitcaskOptions.mergeFaultHook` must be `@Sendable`, but this switch is
/// only read and written on the simulator's single thread (the engine calls the hook
/// synchronously from `prepareMerge`/`runMerge`/`finishMerge`, which the simulator calls).
final class MergeFaultSwitch: @unchecked Sendable {
    var stopAt: MergeStep?
}

extension MergeStep {
    /// The steps of a merge's swap (`Bitcask.finishMerge`), after its copy.
    static let swapSteps: [MergeStep] = [.keydirSwapped, .firstInputRemoved, .finished]
}
