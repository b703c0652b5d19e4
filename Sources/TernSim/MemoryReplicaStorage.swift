public import TernConsensus

/// An in-memory `ReplicaStorage` with the crash semantics of a real disk.
///
/// Writes sit in an unsynced list until `sync()`; `crash` throws them away except, optionally, a
/// prefix of whole batches (the OS had flushed them — a torn tail is truncated by recovery, so it is
/// the same as a lost batch); `corrupt` makes a durable record fail its checksum on the next load.
public final class MemoryReplicaStorage: ReplicaStorage {
    var durable: [[UInt8]: [UInt8]] = [:]
    var unsynced: [[(key: [UInt8], value: [UInt8])]] = []
    var corrupted: Set<[UInt8]> = []
    /// Syncs performed (for group-commit statistics).
    public private(set) var syncs = 0

    public init() {}

    public func load(_ key: [UInt8]) throws -> LoadResult {
        for batch in unsynced.reversed() {
            if let e = batch.last(where: { $0.key == key }) { return .state(e.value) }
        }
        if corrupted.contains(key) { return .damaged }
        if let v = durable[key] { return .state(v) }
        return .absent
    }

    public func write(_ batch: [(key: [UInt8], value: [UInt8])]) throws {
        unsynced.append(batch)
        for e in batch {
            recent.removeAll { $0 == e.key }
            recent.append(e.key)
        }
        if recent.count > 8 { recent.removeFirst(recent.count - 8) }
    }

    /// The last few distinct keys written (newest last): bit rot is most harmful on a hot record,
    /// whose open slot or fresh promise still matters, so the simulator aims there half the time.
    public private(set) var recent: [[UInt8]] = []

    public func sync() throws {
        for batch in unsynced { apply(batch) }
        unsynced = []
        syncs += 1
    }

    private func apply(_ batch: [(key: [UInt8], value: [UInt8])]) {
        for e in batch {
            durable[e.key] = e.value
            corrupted.remove(e.key)
        }
    }

    /// Loses unsynced writes; with `keepPrefix`, the first `keepPrefix` unsynced batches survive.
    public func crash(keepPrefix: Int) {
        for batch in unsynced.prefix(keepPrefix) { apply(batch) }
        unsynced = []
    }

    /// Unsynced batches at this moment.
    public var unsyncedBatches: Int { unsynced.count }

    /// Durable record keys, sorted (deterministic).
    public var durableKeys: [[UInt8]] { durable.keys.sorted { $0.lexicographicallyPrecedes($1) } }

    /// Makes `key`'s durable record fail its checksum on the next load (bit rot).
    public func corrupt(_ key: [UInt8]) {
        if durable[key] != nil { corrupted.insert(key) }
    }

    /// The durable record of `key` (ignoring unsynced writes), for the observer.
    public func durableRecord(_ key: [UInt8]) -> LoadResult {
        if corrupted.contains(key) { return .damaged }
        return durable[key].map { .state($0) } ?? .absent
    }
}
