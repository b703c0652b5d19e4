import Foundation
import TernCore

/// One operation of an atomic batch (`Bitcask.write(_:)`).
public enum BatchEntry: Sendable, Equatable {
    /// Sets a key to a value.
    case put([UInt8], [UInt8])
    /// Removes a key (writes a tombstone).
    case delete([UInt8])
}

/// A step of a merge, named so tests can stop a merge there (`BitcaskOptions.mergeFaultHook`).
public enum MergeStep: String, Sendable, CaseIterable {
    /// The inputs are chosen; nothing written yet.
    case planned
    /// Some merged records are written to the output file, not yet synced.
    case outputPartlyWritten
    /// All merged data files are written and synced.
    case outputSynced
    /// The hint files of the outputs are written (renamed into place).
    case hintsWritten
    /// The directory is synced: the outputs are durable next to the inputs.
    case directorySynced
    /// The keydir points at the outputs; the inputs still exist.
    case keydirSwapped
    /// The oldest input is removed, the others not yet.
    case firstInputRemoved
    /// Every input is removed.
    case finished
}

/// A sealed data file whose hint file is still to be written (`Bitcask.takePendingHints`).
public struct HintJob: Sendable {
    let directory: String
    let id: Bitcask.FileID
}

/// Tuning and injected dependencies of a `Bitcask`.
public struct BitcaskOptions: Sendable {
    /// The active data file rotates when the next append would pass this size (≤ 2 GiB, because
    /// keydir offsets are 32-bit).
    public var maxFileSizeBytes: UInt64 = 256 << 20
    /// Largest value accepted by `put`.
    public var maxValueSizeBytes: Int = 64 << 20
    /// Largest key accepted (the format stores 16 bits).
    public var maxKeySizeBytes: Int = 0xFFFF
    /// Where record timestamps come from. The default is a constant so the engine stays
    /// deterministic; the `Store` passes wall-clock milliseconds.
    public var clock: @Sendable () -> UInt64 = { 0 }
    /// `needsMerge` when dead bytes are at least this fraction of all bytes ...
    public var mergeDeadRatio: Double = 0.5
    /// ... and at least this many.
    public var mergeMinDeadBytes: UInt64 = 64 << 20
    /// Appends are buffered up to this many bytes before a `write` system call; `sync` flushes.
    public var writeBufferBytes: Int = 1 << 20
    /// Whether rotation writes the sealed file's hint itself (re-reading the file on the write
    /// path). The `Store` sets false and writes hints on its background queue instead.
    public var writeHintsInline = true
    /// Open a directory that lost fsynced bytes (`StorageError.lostDurableBytes`) instead of
    /// refusing it: recovery goes on as after a crash (torn tails cut, stale hints replaced by a
    /// scan) and `Bitcask.lostDurableBytes` says what was lost. Only for a caller that then
    /// treats every record as untrustworthy (the server's learner-only rebuild).
    public var acceptLostDurableBytes = false
    /// Keys grouped as the caller says, kept up to date, so that `forEachLive(inPartitions:)`
    /// lists a few groups without walking every key (nil: no grouping).
    public var partitioning: KeyPartitioning?
    /// Test-only: called before each merge step; throwing stops the merge there, as a crash would.
    public var mergeFaultHook: (@Sendable (MergeStep) throws(StorageError) -> Void)?

    /// The defaults: 256 MiB files, 64 MiB values, constant clock.
    public init() {}
}

/// Counters for monitoring and for deciding when to merge.
public struct StorageStats: Sendable, Equatable {
    /// Live keys.
    public var keys: Int
    /// Bytes of the records the keydir points at.
    public var liveBytes: UInt64
    /// Bytes of every other record (overwritten, deleted, tombstones, damaged leftovers).
    public var deadBytes: UInt64
    /// Data files on disk.
    public var files: Int
    /// Completed merges since open.
    public var merges: Int
    /// Records found with a bad checksum since open (attributed to a key or not).
    public var damagedRecords: Int
    /// Damaged regions whose key could not be read (a damaged header); repair must find them by
    /// anti-entropy.
    public var unattributedDamage: Int
    /// Bytes cut from torn file tails at open.
    public var truncatedBytes: UInt64
    /// Keydir bytes beyond the key bytes themselves (slots, index, spare capacity).
    public var keydirOverheadBytes: Int
}

/// The Bitcask engine core: append-only data files, an in-memory keydir, hint files, merge and
/// crash recovery.
///
/// Synchronous and not thread-safe: one owner at a time (the `Store`'s queue, or the simulator).
/// It does IO only through its `FileSystem` and reads time only from `options.clock`, so the
/// deterministic cluster simulator can run it over `MemoryFileSystem`.
///
/// Files are named `MMMMMMMMMM-NNNNN.data` (+ `.hint`): the pair (major, minor) orders them;
/// records in later files win. New active files take a new major; merge outputs take the largest
/// major of their inputs and a new minor, so they sort after every input and before every file
/// written since (see docs/STORAGE.md for why that makes a crash at any merge step safe).
public final class Bitcask {
    struct FileID: Comparable, Hashable, Sendable {
        var major: UInt32
        var minor: UInt32
        static func < (a: FileID, b: FileID) -> Bool { (a.major, a.minor) < (b.major, b.minor) }
        var name: String { pad(major, 10) + "-" + pad(minor, 5) }
        init(major: UInt32, minor: UInt32) {
            self.major = major
            self.minor = minor
        }
        init?(name: String) {
            let parts = name.split(separator: "-")
            guard parts.count == 2, let a = UInt32(parts[0]), let b = UInt32(parts[1]) else { return nil }
            major = a
            minor = b
        }
    }

    final class DataFile {
        let id: FileID
        let number: UInt32
        let handle: any StorageFile
        var size: UInt64
        init(id: FileID, number: UInt32, handle: any StorageFile, size: UInt64) {
            self.id = id
            self.number = number
            self.handle = handle
            self.size = size
        }
    }

    /// The data directory.
    public let directory: String
    let fileSystem: any FileSystem
    let options: BitcaskOptions
    var keydir = Keydir()
    /// Every data file by its number; numbers are handed out in open order and never reused.
    var files: [UInt32: DataFile] = [:]
    var nextNumber: UInt32 = 0
    var active: DataFile?
    /// Appended bytes not yet handed to the file; they start at `active.size`.
    var writeBuffer: [UInt8] = []
    var damaged: Set<[UInt8]> = []
    var liveBytes: UInt64 = 0
    var totalBytes: UInt64 = 0
    var merges = 0
    var damagedRecordCount = 0
    var unattributedDamage = 0
    var truncatedBytes: UInt64 = 0
    var mergeRunning = false
    var isClosed = false
    var pendingHints: [HintJob] = []
    /// The last durable mark written (`DurableMark`), and its file, opened at the first one.
    var durableMark: DurableMark?
    var markHandle: (any StorageFile)?
    /// What recovery found lost of the fsynced bytes (with `acceptLostDurableBytes`; empty when
    /// nothing was lost). Records after such a loss may be older than what this replica
    /// acknowledged or promised.
    public internal(set) var lostDurableBytes: [String] = []

    /// Opens (or creates) the store in `directory`, recovering from whatever a crash left.
    ///
    /// Files with a valid hint file are indexed from it without reading values; the others are
    /// scanned: a torn tail is truncated, a damaged record in the middle marks its key damaged.
    public init(
        directory: String, fileSystem: any FileSystem, options: BitcaskOptions = .init()
    ) throws(StorageError) {
        precondition(options.maxFileSizeBytes <= 1 << 31, "offsets in the keydir are 32-bit")
        self.directory = directory
        self.fileSystem = fileSystem
        self.options = options
        keydir = Keydir(partitioning: options.partitioning)
        try fileSystem.makeDirectory(directory)
        try recover()
    }

    func path(_ name: String) -> String { directory + "/" + name }

    // MARK: - reads

    /// The value of `key`, or nil if absent.
    ///
    /// Throws `.damaged(key:)` when the latest record fails its checksum: a stale or corrupt value
    /// is never returned.
    public func get(_ key: [UInt8]) throws(StorageError) -> [UInt8]? {
        guard !isClosed else { throw .closed }
        guard let loc = keydir.lookup(key) else { return nil }
        if damaged.contains(key) { throw .damaged(key: key) }
        let bytes = try readRecord(loc)
        guard let value = Self.verify(bytes, key: key) else {
            markDamaged(key)
            throw .damaged(key: key)
        }
        return value
    }

    /// `get` of many keys at once, each answered as `get` would (the value, nil if absent, or the
    /// error: `.damaged(key:)` for a record that fails its checksum). The records are read in file
    /// order, one read per run of records at most `gapBytesMax` apart (up to `runBytesMax` a run):
    /// a repair scan reads a whole bucket's records with far fewer system calls than one each.
    public func get(
        many keys: [[UInt8]], gapBytesMax: Int = 4096, runBytesMax: Int = 1 << 20
    ) -> [Result<[UInt8]?, StorageError>] {
        guard !isClosed else { return keys.map { _ in .failure(.closed) } }
        var results = [Result<[UInt8]?, StorageError>](repeating: .success(nil), count: keys.count)
        var wanted: [(index: Int, loc: RecordLocation)] = []
        wanted.reserveCapacity(keys.count)
        for (i, key) in keys.enumerated() {
            guard let loc = keydir.lookup(key) else { continue }
            if !damaged.isEmpty && damaged.contains(key) {
                results[i] = .failure(.damaged(key: key))
                continue
            }
            wanted.append((i, loc))
        }
        wanted.sort { ($0.loc.file, $0.loc.offset) < ($1.loc.file, $1.loc.offset) }
        var at = 0
        while at < wanted.count {
            // One run: same file, each record starting within `gapBytesMax` of the previous end.
            let file = wanted[at].loc.file
            let start = UInt64(wanted[at].loc.offset)
            var end = start + UInt64(wanted[at].loc.length)
            var next = at + 1
            while next < wanted.count, wanted[next].loc.file == file {
                let o = UInt64(wanted[next].loc.offset)
                let e = max(end, o + UInt64(wanted[next].loc.length))
                guard o <= end + UInt64(gapBytesMax), e - start <= UInt64(runBytesMax) else { break }
                end = e
                next += 1
            }
            let run = wanted[at..<next]
            at = next
            let bytes: [UInt8]
            do throws(StorageError) {
                bytes = try readRange(file: file, offset: start, count: Int(end - start))
            } catch {
                for w in run { results[w.index] = .failure(error) }
                continue
            }
            bytes.withUnsafeBytes { buf in
                for w in run {
                    let from = Int(UInt64(w.loc.offset) - start)
                    let to = from + Int(w.loc.length)
                    let key = keys[w.index]
                    if to <= buf.count,
                        let value = Self.verify(UnsafeRawBufferPointer(rebasing: buf[from..<to]), key: key)
                    {
                        results[w.index] = .success(value)
                    } else {
                        markDamaged(key)
                        results[w.index] = .failure(.damaged(key: key))
                    }
                }
            }
        }
        return results
    }

    /// `get(many:)` into one buffer, for keys that share a leading byte `prefix` the caller does
    /// not repeat (the repair scanner's key records, `1` + key): `out` gets one span per key, in
    /// order — the value's bytes, `Span.absent`, or `Span.damaged` (a record that fails its
    /// checksum, marked damaged as `get` does; also a read that failed). No array per key or per
    /// record. Where the file layer can map a data file (`StorageFile.mapped`), its records are
    /// read from the mapping, with no system call per record (a bucket's records lie far apart
    /// in files written in client order); otherwise as `get(many:)` reads, run by run.
    public func get(
        many keys: [[UInt8]], prefix: UInt8, into out: inout PackedBytes, gapBytesMax: Int = 4096,
        runBytesMax: Int = 1 << 20
    ) {
        out.spans.removeAll(keepingCapacity: true)
        out.buffer.removeAll(keepingCapacity: true)
        guard !isClosed else {
            out.spans = Array(repeating: .damaged, count: keys.count)
            return
        }
        out.spans = Array(repeating: .absent, count: keys.count)
        var wanted: [(index: Int, loc: RecordLocation)] = []
        wanted.reserveCapacity(keys.count)
        var scratch: [UInt8] = [prefix]
        var packedKeys = PackedBytes()
        packedKeys.spans.reserveCapacity(keys.count)
        for (i, key) in keys.enumerated() {
            packedKeys.append(key)
            scratch.removeSubrange(1...)
            scratch.append(contentsOf: key)
            guard let loc = keydir.lookup(scratch) else { continue }
            if !damaged.isEmpty && damaged.contains(scratch) {
                out.spans[i] = .damaged
                continue
            }
            wanted.append((i, loc))
        }
        readValues(
            &wanted, keys: packedKeys, prefix: prefix, into: &out, gapBytesMax: gapBytesMax,
            runBytesMax: runBytesMax)
    }

    /// Every live record of partition `partition` (`BitcaskOptions.partitioning`) whose key
    /// starts with `prefix`: the keys, without the prefix, into `keys`, and their values into
    /// `values` at the same index (`Span.damaged` for a record that fails its checksum, marked
    /// damaged as `get` does). The repair scanner's answer to a fetch of a bucket: one walk of the
    /// partition's entries, with no key-directory lookup and no array per key; the records are
    /// read as `get(many:prefix:into:)` reads them (mapped, or in runs). False, with nothing
    /// listed, once closed (nothing must then be taken for "no records").
    @discardableResult
    public func records(
        inPartition partition: Int, prefix: UInt8, keys: inout PackedBytes, values: inout PackedBytes
    ) -> Bool {
        keys.spans.removeAll(keepingCapacity: true)
        keys.buffer.removeAll(keepingCapacity: true)
        values.spans.removeAll(keepingCapacity: true)
        values.buffer.removeAll(keepingCapacity: true)
        guard !isClosed else { return false }
        var wanted: [(index: Int, loc: RecordLocation)] = []
        keydir.forEachEntry(inPartition: partition) { key, loc in
            guard key.first == prefix else { return }
            let i = keys.count
            keys.append(UnsafeRawBufferPointer(rebasing: key.dropFirst()))
            if !damaged.isEmpty && damaged.contains(Array(key)) {
                values.spans.append(.damaged)
                return
            }
            values.spans.append(.absent)
            wanted.append((i, loc))
        }
        readValues(
            &wanted, keys: keys, prefix: prefix, into: &values, gapBytesMax: 4096, runBytesMax: 1 << 20)
        return true
    }

    /// Reads the records of `wanted` (entry `index`: the record of `prefix` + key `index` of
    /// `keys`, at `loc`), sorted here into file order, checks each and files its value, or the
    /// damage, at span `index` of `out` (whose spans are already there).
    private func readValues(
        _ wanted: inout [(index: Int, loc: RecordLocation)], keys: PackedBytes, prefix: UInt8,
        into out: inout PackedBytes, gapBytesMax: Int, runBytesMax: Int
    ) {
        out.buffer.reserveCapacity(out.buffer.count + wanted.reduce(0) { $0 + Int($1.loc.length) })
        wanted.sort { ($0.loc.file, $0.loc.offset) < ($1.loc.file, $1.loc.offset) }
        var at = 0
        while at < wanted.count {
            let number = wanted[at].loc.file
            var next = at + 1
            while next < wanted.count && wanted[next].loc.file == number { next += 1 }
            let group = wanted[at..<next]
            at = next
            guard let file = files[number] else { preconditionFailure("keydir points at an unknown file") }
            let end = group.reduce(0) { max($0, UInt64($1.loc.offset) + UInt64($1.loc.length)) }
            if file === active, end > file.size {
                do throws(StorageError) { try flush() } catch {
                    for w in group { out.spans[w.index] = .damaged }
                    continue
                }
            }
            let reserve = max(Int(options.maxFileSizeBytes), Int(file.size))
            if end <= file.size, let map = file.handle.mapped(count: Int(end), reserve: reserve) {
                // The mapped file: no system call per record.
                for w in group {
                    let from = Int(w.loc.offset)
                    take(
                        w.index, keys, prefix,
                        UnsafeRawBufferPointer(rebasing: map[from..<from + Int(w.loc.length)]),
                        &out)
                }
                continue
            }
            // No mapping: runs of nearby records, one read each (as `get(many:)`).
            var r = group.startIndex
            while r < group.endIndex {
                let start = UInt64(group[r].loc.offset)
                var runEnd = start + UInt64(group[r].loc.length)
                var n = r + 1
                while n < group.endIndex {
                    let o = UInt64(group[n].loc.offset)
                    let e = max(runEnd, o + UInt64(group[n].loc.length))
                    guard o <= runEnd + UInt64(gapBytesMax), e - start <= UInt64(runBytesMax) else { break }
                    runEnd = e
                    n += 1
                }
                let run = group[r..<n]
                r = n
                let bytes: [UInt8]
                do throws(StorageError) {
                    bytes = try readRange(file: number, offset: start, count: Int(runEnd - start))
                } catch {
                    for w in run { out.spans[w.index] = .damaged }
                    continue
                }
                bytes.withUnsafeBytes { buf in
                    for w in run {
                        let from = Int(UInt64(w.loc.offset) - start)
                        let to = from + Int(w.loc.length)
                        // A short read leaves the record incomplete: damaged, as `get(many:)` says.
                        let record =
                            to <= buf.count
                            ? UnsafeRawBufferPointer(rebasing: buf[from..<to]) : .init(start: nil, count: 0)
                        take(w.index, keys, prefix, record, &out)
                    }
                }
            }
        }
    }

    /// Checks one record read for `readValues` and files its value (or the damage).
    private func take(
        _ index: Int, _ keys: PackedBytes, _ prefix: UInt8, _ record: UnsafeRawBufferPointer,
        _ out: inout PackedBytes
    ) {
        let value = keys.withBytes(index) { key in Self.verifiedValue(record, prefix: prefix, key: key!) }
        if let value {
            out.spans[index] = PackedBytes.Span(start: out.buffer.count, length: value.count)
            out.buffer.append(contentsOf: value)
        } else {
            markDamaged([prefix] + Array(keys[index]!))
            out.spans[index] = .damaged
        }
    }

    /// `verify` for a record whose key is `prefix` then `key`: the value's bytes (borrowed), or nil.
    static func verifiedValue(
        _ buf: UnsafeRawBufferPointer, prefix: UInt8, key: UnsafeRawBufferPointer
    ) -> UnsafeRawBufferPointer? {
        guard let h = Record.decodeHeader(buf, at: 0), h.recordLength == buf.count,
            !h.flags.contains(.damaged), !h.flags.contains(.tombstone),
            h.keyLength == key.count + 1, buf[Record.headerSize] == prefix,
            key.isEmpty || memcmp(buf.baseAddress! + Record.headerSize + 1, key.baseAddress!, key.count) == 0
        else { return nil }
        let value = UnsafeRawBufferPointer(rebasing: buf[(Record.headerSize + h.keyLength)...])
        guard CRC32C.update(0, value) == h.valueCRC else { return nil }
        return value
    }

    /// Bytes `offset..<offset + count` of data file `number` (flushing first if they are still in
    /// the write buffer).
    func readRange(file number: UInt32, offset: UInt64, count: Int) throws(StorageError) -> [UInt8] {
        guard let file = files[number] else { preconditionFailure("keydir points at an unknown file") }
        if file === active, offset + UInt64(count) > file.size { try flush() }
        return try file.handle.read(at: offset, count: count)
    }

    func readRecord(_ loc: RecordLocation) throws(StorageError) -> [UInt8] {
        guard let file = files[loc.file] else { preconditionFailure("keydir points at an unknown file") }
        if file === active, UInt64(loc.offset) + UInt64(loc.length) > file.size { try flush() }
        return try file.handle.read(at: UInt64(loc.offset), count: Int(loc.length))
    }

    /// The value of a whole record if its header, key and value all check out.
    static func verify(_ record: [UInt8], key: [UInt8]) -> [UInt8]? {
        record.withUnsafeBytes { verify($0, key: key) }
    }

    /// `verify` on borrowed bytes (a record inside a larger read).
    static func verify(_ buf: UnsafeRawBufferPointer, key: [UInt8]) -> [UInt8]? {
        guard let h = Record.decodeHeader(buf, at: 0), h.recordLength == buf.count,
            !h.flags.contains(.damaged), !h.flags.contains(.tombstone),
            buf[Record.headerSize..<Record.headerSize + h.keyLength].elementsEqual(key)
        else { return nil }
        let value = UnsafeRawBufferPointer(rebasing: buf[(Record.headerSize + h.keyLength)...])
        guard CRC32C.update(0, value) == h.valueCRC else { return nil }
        return Array(value)
    }

    func markDamaged(_ key: [UInt8]) {
        if damaged.insert(key).inserted { damagedRecordCount += 1 }
    }

    /// Keys whose latest record failed its checksum; the repair layer re-fetches them from peers.
    public var damagedKeys: Set<[UInt8]> { damaged }

    /// Reads and checks the latest record of every live key, marking the ones that fail their
    /// checksum as damaged; returns all damaged keys.
    ///
    /// A start-up from hint files reads no values, so damage in those files is otherwise found
    /// only when a key is read or merged; the repair layer runs this periodically. Reads every
    /// live record: O(live bytes).
    @discardableResult
    public func scrub() throws(StorageError) -> Set<[UInt8]> {
        guard !isClosed else { throw .closed }
        try flush()
        for slot in keydir.slots {
            let key = keydir.key(of: slot)
            if damaged.contains(key) { continue }
            if Self.verify(try readRecord(keydir.location(of: slot)), key: key) == nil { markDamaged(key) }
        }
        return damaged
    }

    /// Declares a damaged key handled without writing it: the key is dropped from the keydir
    /// (it reads as absent). Normally repair instead writes the peers' value with `put`/`delete`,
    /// which clears the damage by itself.
    public func markRepaired(_ key: [UInt8]) {
        guard damaged.remove(key) != nil else { return }
        if let old = keydir.remove(key) { liveBytes -= UInt64(old.length) }
    }

    /// Calls `body` with every live key (damaged ones included: they exist, their value is lost),
    /// in no particular order. Anti-entropy builds its digests from this. `body` must not modify
    /// this `Bitcask` (collect the keys first).
    public func forEachLive(_ body: ([UInt8]) throws -> Void) rethrows {
        for slot in keydir.slots { try body(keydir.key(of: slot)) }
    }

    /// The number of partitions of `BitcaskOptions.partitioning` (nil: none).
    public var partitionCount: Int? { keydir.partitionCount }

    /// Calls `body` with each live key of the partitions in `range` (its partition and its bytes,
    /// borrowed: valid during the call only), partition by partition: reads only those keys.
    public func forEachLive(
        inPartitions range: Range<Int>, _ body: (Int, UnsafeRawBufferPointer) throws -> Void
    ) rethrows {
        try keydir.forEachKey(inPartitions: range, body)
    }

    /// Current counters.
    public var stats: StorageStats {
        StorageStats(
            keys: keydir.count, liveBytes: liveBytes, deadBytes: totalBytes - liveBytes,
            files: files.count, merges: merges, damagedRecords: damagedRecordCount,
            unattributedDamage: unattributedDamage, truncatedBytes: truncatedBytes,
            keydirOverheadBytes: keydir.overheadBytes)
    }

    /// Whether dead bytes passed both merge thresholds of the options.
    public var needsMerge: Bool {
        let dead = totalBytes - liveBytes
        return dead >= options.mergeMinDeadBytes
            && Double(dead) >= options.mergeDeadRatio * Double(max(totalBytes, 1))
    }

    // MARK: - writes

    /// Appends a record setting `key` to `value`; durable only after `sync()`.
    public func put(_ key: [UInt8], _ value: [UInt8]) throws(StorageError) {
        try write([.put(key, value)])
    }

    /// Appends a tombstone for `key`; durable only after `sync()`.
    public func delete(_ key: [UInt8]) throws(StorageError) {
        try write([.delete(key)])
    }

    /// Appends several puts and deletes as one write. After a crash either all of them are
    /// visible or none: members carry a batch flag and the last an end flag, and recovery drops
    /// a batch whose end is missing.
    public func write(_ batch: [BatchEntry]) throws(StorageError) {
        guard !isClosed else { throw .closed }
        guard !batch.isEmpty else { return }
        let timestamp = options.clock()
        var bytes: [UInt8] = []
        var placed: [(key: [UInt8], tombstone: Bool, offset: Int, length: Int)] = []
        placed.reserveCapacity(batch.count)
        bytes.reserveCapacity(
            batch.reduce(0) { n, e in
                switch e {
                case .put(let k, let v): n + Record.headerSize + k.count + v.count
                case .delete(let k): n + Record.headerSize + k.count
                }
            })
        for (i, entry) in batch.enumerated() {
            var flags: Record.Flags = batch.count > 1 ? .batch : []
            if batch.count > 1 && i == batch.count - 1 { flags.insert(.batchEnd) }
            let key: [UInt8]
            let value: [UInt8]
            switch entry {
            case .put(let k, let v):
                key = k
                value = v
            case .delete(let k):
                key = k
                value = []
                flags.insert(.tombstone)
            }
            guard key.count <= options.maxKeySizeBytes, key.count <= 0xFFFF else { throw .keyTooLarge }
            guard value.count <= options.maxValueSizeBytes else { throw .valueTooLarge }
            let start = bytes.count
            Record.encode(key: key, value: value, flags: flags, timestamp: timestamp, into: &bytes)
            placed.append((key, flags.contains(.tombstone), start, bytes.count - start))
        }
        let file = try activeFile(forAppending: bytes.count)
        let base = file.size + UInt64(writeBuffer.count)
        writeBuffer += bytes
        totalBytes += UInt64(bytes.count)
        for p in placed {
            let loc = RecordLocation(
                file: file.number, offset: UInt32(base + UInt64(p.offset)), length: UInt32(p.length),
                timestamp: timestamp)
            apply(key: p.key, loc: loc, tombstone: p.tombstone, damagedRecord: false)
        }
        if writeBuffer.count >= options.writeBufferBytes { try flush() }
    }

    /// `write` of puts only, `values[i]` under `prefix` + `keys[i]` for each `i` in `indices`, in
    /// that order, as one batch: the records are encoded straight from the shared buffer, with no
    /// array per record (a bulk rebuild's install, docs/REPAIR.md). A missing value is an error.
    public func write(prefix: UInt8, keys: [[UInt8]], values: PackedBytes, indices: [Int])
        throws(StorageError)
    {
        guard !isClosed else { throw .closed }
        guard !indices.isEmpty else { return }
        let timestamp = options.clock()
        var size = 0
        for i in indices {
            let span = values.spans[i]
            guard span.isPresent else { throw .io("a batch's value is missing") }
            guard keys[i].count + 1 <= options.maxKeySizeBytes, keys[i].count + 1 <= 0xFFFF else {
                throw .keyTooLarge
            }
            guard span.length <= options.maxValueSizeBytes else { throw .valueTooLarge }
            size += Record.headerSize + 1 + keys[i].count + span.length
        }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(size)
        var placed: [(offset: Int, length: Int, keyLength: Int)] = []
        placed.reserveCapacity(indices.count)
        values.buffer.withUnsafeBytes { buffer in
            for (n, i) in indices.enumerated() {
                var flags: Record.Flags = indices.count > 1 ? .batch : []
                if indices.count > 1 && n == indices.count - 1 { flags.insert(.batchEnd) }
                let start = bytes.count
                Record.encode(
                    prefix: prefix, key: keys[i],
                    value: UnsafeRawBufferPointer(rebasing: buffer[values.spans[i].range]), flags: flags,
                    timestamp: timestamp, into: &bytes)
                placed.append((start, bytes.count - start, 1 + keys[i].count))
            }
        }
        let file = try activeFile(forAppending: bytes.count)
        let base = file.size + UInt64(writeBuffer.count)
        writeBuffer += bytes
        totalBytes += UInt64(bytes.count)
        bytes.withUnsafeBytes { buf in
            for p in placed {
                let loc = RecordLocation(
                    file: file.number, offset: UInt32(base + UInt64(p.offset)), length: UInt32(p.length),
                    timestamp: timestamp)
                let key = p.offset + Record.headerSize
                apply(
                    rawKey: UnsafeRawBufferPointer(rebasing: buf[key..<key + p.keyLength]), loc: loc,
                    tombstone: false, damagedRecord: false)
            }
        }
        if writeBuffer.count >= options.writeBufferBytes { try flush() }
    }

    /// Updates keydir and byte counters for one record, in log order.
    func apply(key: [UInt8], loc: RecordLocation, tombstone: Bool, damagedRecord: Bool) {
        key.withUnsafeBytes {
            apply(rawKey: $0, loc: loc, tombstone: tombstone, damagedRecord: damagedRecord)
        }
    }

    /// `apply` on borrowed key bytes: start-up applies millions of hint entries without
    /// allocating an array per key (damage is rare, so only then is one made).
    func apply(rawKey key: UnsafeRawBufferPointer, loc: RecordLocation, tombstone: Bool, damagedRecord: Bool)
    {
        if tombstone {
            if let old = keydir.remove(raw: key) { liveBytes -= UInt64(old.length) }
            if !damaged.isEmpty { damaged.remove(Array(key)) }
        } else {
            if let old = keydir.upsert(raw: key, loc) { liveBytes -= UInt64(old.length) }
            liveBytes += UInt64(loc.length)
            if damagedRecord {
                markDamaged(Array(key))
            } else if !damaged.isEmpty {
                damaged.remove(Array(key))
            }
        }
    }

    /// The active file, rotated first if `count` more bytes would overflow it.
    func activeFile(forAppending count: Int) throws(StorageError) -> DataFile {
        if let file = active {
            let size = file.size + UInt64(writeBuffer.count)
            if size == 0 || size + UInt64(count) <= options.maxFileSizeBytes { return file }
            try rotate()
        }
        let major = (files.values.map(\.id.major).max() ?? 0) + 1
        let file = try createFile(FileID(major: major, minor: 0))
        // Sync the new name now: `sync()` fsyncs only the file, and a synced record in a file
        // whose directory entry is lost would be lost with it.
        try fileSystem.syncDirectory(directory)
        active = file
        return file
    }

    func createFile(_ id: FileID) throws(StorageError) -> DataFile {
        let handle = try fileSystem.open(path(id.name + ".data"), create: true)
        let file = DataFile(id: id, number: nextNumber, handle: handle, size: 0)
        nextNumber += 1
        files[file.number] = file
        return file
    }

    /// Hands buffered appends to the file (no fsync).
    func flush() throws(StorageError) {
        guard let file = active, !writeBuffer.isEmpty else { return }
        try file.handle.write(writeBuffer, at: file.size)
        file.size += UInt64(writeBuffer.count)
        writeBuffer.removeAll(keepingCapacity: true)
    }

    /// Makes every write before it durable (flush + fsync of the active file).
    public func sync() throws(StorageError) {
        guard !isClosed else { throw .closed }
        try flush()
        guard let file = active else { return }
        try file.handle.sync()
        noteDurable(DurableMark(file: file.id, bytes: file.size))
    }

    /// Records that `mark` is fsynced (after the fsync returned): the mark only moves forward.
    /// A failure to write it is not an error (it only weakens the check at the next start-up).
    func noteDurable(_ mark: DurableMark) {
        if let m = durableMark, (m.file, m.bytes) >= (mark.file, mark.bytes) || mark.bytes == 0 { return }
        try? writeMark(mark)
    }

    /// Overwrites `durable.mark` with `mark` (opening it at the first write), without an fsync.
    func writeMark(_ mark: DurableMark) throws(StorageError) {
        if markHandle == nil { markHandle = try fileSystem.open(path(DurableMark.fileName), create: true) }
        try markHandle!.write(mark.encode(), at: 0)
        durableMark = mark
    }

    /// For a pipelined group commit (the `Store`): hands buffered appends to the file and returns
    /// the handle whose fsync makes every write so far durable, or nil if nothing was written.
    /// The caller may fsync it on another thread while this engine keeps appending and reading,
    /// as long as it does not `close`, `prepareMerge` or `finishMerge` until that fsync returns
    /// (those may close the handle).
    func prepareGroupSync() throws(StorageError) -> (file: any StorageFile, mark: DurableMark)? {
        guard !isClosed else { throw .closed }
        try flush()
        guard let file = active else { return nil }
        return (file.handle, DurableMark(file: file.id, bytes: file.size))
    }

    /// Seals the active file: sync it, write its hint file (unless `hint` is false: a merge about
    /// to consume the file would delete the hint with it); the next write opens a new one.
    func rotate(hint: Bool = true) throws(StorageError) {
        guard let file = active else { return }
        try sync()
        try? markHandle?.sync()  // the sealed file's whole size, durable before its hint exists
        active = nil
        if file.size == 0 {
            try removeFile(file)
            return
        }
        guard hint else { return }
        if !options.writeHintsInline {
            pendingHints.append(HintJob(directory: directory, id: file.id))
            return
        }
        try Self.writeHint(HintJob(directory: directory, id: file.id), fileSystem: fileSystem)
    }

    /// Sealed files whose hint files are still to be written (only with
    /// `options.writeHintsInline == false`); the caller runs `Bitcask.writeHint(_:fileSystem:)`
    /// for each, on any thread.
    public func takePendingHints() -> [HintJob] {
        defer { pendingHints.removeAll() }
        return pendingHints
    }

    /// Builds the hint file of a sealed data file by scanning it, then syncs the directory.
    /// Touches no engine state. A file removed meanwhile (by a merge) is skipped; a missing hint
    /// only costs a scan at the next start-up.
    public static func writeHint(_ job: HintJob, fileSystem: any FileSystem) throws(StorageError) {
        let dataPath = job.directory + "/" + job.id.name + ".data"
        guard fileSystem.exists(dataPath) else { return }
        let file = try fileSystem.open(dataPath, create: false)
        defer { file.close() }
        let size = file.size
        let scan = Self.scan(try file.read(at: 0, count: Int(size)))
        try writeHint(
            fileSystem: fileSystem, directory: job.directory, id: job.id, entries: scan.entries,
            dataSize: size)
        try fileSystem.syncDirectory(job.directory)
    }

    func removeFile(_ file: DataFile) throws(StorageError) {
        if let m = durableMark, m.file == file.id, m.bytes > 0 {
            // The marked file goes (merged away, or empty): its name may be used again by a new
            // file, which must not be held to the old size. Durable before the file is removed.
            try writeMark(DurableMark(file: file.id, bytes: 0))
            try markHandle!.sync()
        }
        file.handle.close()
        files.removeValue(forKey: file.number)
        totalBytes -= file.size
        try fileSystem.remove(path(file.id.name + ".data"))
        if fileSystem.exists(path(file.id.name + ".hint")) {
            try fileSystem.remove(path(file.id.name + ".hint"))
        }
    }

    /// Writes `<id>.hint` through a temporary file and a rename, so a hint file is whole or absent.
    /// The caller syncs the directory.
    func writeHint(for id: FileID, entries: [Hint.Entry], dataSize: UInt64) throws(StorageError) {
        try Self.writeHint(
            fileSystem: fileSystem, directory: directory, id: id, entries: entries, dataSize: dataSize)
    }

    static func writeHint(
        fileSystem: any FileSystem, directory: String, id: FileID, entries: [Hint.Entry], dataSize: UInt64
    ) throws(StorageError) {
        let tmp = directory + "/" + id.name + ".hint.tmp"
        let file = try fileSystem.open(tmp, create: true)
        defer { file.close() }
        try file.truncate(to: 0)
        try file.write(Hint.encode(entries, dataSize: dataSize), at: 0)
        try file.sync()
        try fileSystem.rename(tmp, directory + "/" + id.name + ".hint")
    }

    /// Syncs and releases every file. Later calls throw `.closed`. A failing final sync is not
    /// reported (the caller that needs durability calls `sync()` first and sees its error).
    public func close() {
        guard !isClosed else { return }
        try? sync()
        try? markHandle?.sync()
        markHandle?.close()
        for file in files.values { file.handle.close() }
        isClosed = true
    }

    deinit { close() }
}

func pad(_ n: UInt32, _ width: Int) -> String {
    let s = String(n)
    return String(repeating: "0", count: max(0, width - s.count)) + s
}
