/// A merge chosen by `Bitcask.prepareMerge()`: a snapshot of the live records in the inputs.
///
/// Holds only values (no references into the engine), so `Bitcask.runMerge` can run it on another
/// thread while the owner keeps reading and writing.
public struct MergePlan: Sendable {
    struct Item: Sendable {
        var key: [UInt8]
        var file: UInt32
        var fileIndex: Int
        var offset: UInt32
        var length: UInt32
        var timestamp: UInt64
        var damaged: Bool
    }
    let directory: String
    let inputs: [Bitcask.FileID]
    let inputNumbers: [UInt32]
    let outputMajor: UInt32
    let firstMinor: UInt32
    let items: [Item]
    let maxFileSizeBytes: UInt64
    let hook: (@Sendable (MergeStep) throws(StorageError) -> Void)?
    /// Bytes of the input data files.
    public let inputBytes: UInt64
    /// Live records to copy.
    public var liveRecords: Int { items.count }
}

/// The files a merge wrote and where each copied record went; `Bitcask.finishMerge` swaps them in.
public struct MergeResult: Sendable {
    struct Move: Sendable {
        var item: Int
        var output: Int
        var offset: UInt32
        var length: UInt32
        var damaged: Bool
    }
    let plan: MergePlan
    let outputs: [(id: Bitcask.FileID, size: UInt64)]
    let moves: [Move]
    /// Bytes written to the merged data files.
    public var outputBytes: UInt64 { outputs.reduce(0) { $0 + $1.size } }
}

extension Bitcask {
    /// Compacts every immutable file into new ones holding only live records; blocks until done.
    ///
    /// Equivalent to `prepareMerge`, `runMerge`, `finishMerge` in a row. The `Store` runs the
    /// middle step on another thread so reads and writes continue meanwhile.
    public func merge() throws(StorageError) {
        guard let plan = try prepareMerge() else { return }
        let result: MergeResult
        do {
            result = try Self.runMerge(plan, fileSystem: fileSystem)
        } catch {
            mergeRunning = false
            throw error
        }
        try finishMerge(result)
    }

    /// Step 1 (owner): seals the active file and snapshots the live records of every sealed file.
    /// Nil when there is nothing to merge. Until `finishMerge` (or a failed `runMerge` reported
    /// through `abandonMerge`), no second merge starts.
    public func prepareMerge() throws(StorageError) -> MergePlan? {
        guard !isClosed else { throw .closed }
        guard !mergeRunning else { throw .mergeInProgress }
        // The sealed file is one of this merge's inputs: no hint for it (its re-read and checksum
        // of up to `maxFileSizeBytes` was the largest cost of writing a busy key's big values). A
        // merge that fails or a crash before `finishMerge` leaves it without one, which costs a
        // scan of the file at the next start-up, as a missing hint always does.
        try rotate(hint: false)
        let inputs = files.values.sorted { $0.id < $1.id }
        guard !inputs.isEmpty else { return nil }
        try options.mergeFaultHook?(.planned)
        let major = inputs.last!.id.major
        // Minors come from the directory, not `files`: a merge that failed in this process left
        // unregistered outputs whose names must not be reused.
        let onDisk = try fileSystem.list(directory).compactMap { name -> FileID? in
            guard name.hasSuffix(".data") || name.hasSuffix(".hint") else { return nil }
            return FileID(name: String(name.dropLast(5)))
        }
        let minor = ((inputs.map(\.id) + onDisk).filter { $0.major == major }.map(\.minor).max() ?? 0) + 1
        var indexOf: [UInt32: Int] = [:]
        for (i, f) in inputs.enumerated() { indexOf[f.number] = i }
        var items: [MergePlan.Item] = []
        items.reserveCapacity(keydir.count)
        for slot in keydir.slots {
            guard let i = indexOf[slot.file] else { continue }
            let key = keydir.key(of: slot)
            items.append(
                MergePlan.Item(
                    key: key, file: slot.file, fileIndex: i, offset: slot.offset, length: slot.length,
                    timestamp: slot.timestamp, damaged: damaged.contains(key)))
        }
        // Copy in file order so the inputs are read sequentially.
        items.sort { ($0.fileIndex, $0.offset) < ($1.fileIndex, $1.offset) }
        mergeRunning = true
        return MergePlan(
            directory: directory, inputs: inputs.map(\.id), inputNumbers: inputs.map(\.number),
            outputMajor: major, firstMinor: minor, items: items, maxFileSizeBytes: options.maxFileSizeBytes,
            hook: options.mergeFaultHook, inputBytes: inputs.reduce(0) { $0 + $1.size })
    }

    /// Ends a merge whose `runMerge` failed, so another may start. Its partial outputs stay on
    /// disk; they are valid (they only repeat live records) and the next merge consumes them.
    public func abandonMerge() {
        mergeRunning = false
    }

    /// Step 2 (any thread): writes the live records into new data files `(major, minor...)`, syncs
    /// them, writes their hint files, syncs the directory. Touches no engine state.
    public static func runMerge(_ plan: MergePlan, fileSystem: any FileSystem) throws(StorageError)
        -> MergeResult
    {
        let dir = plan.directory
        var handles: [any StorageFile] = []
        defer { for h in handles { h.close() } }
        for id in plan.inputs {
            handles.append(try fileSystem.open(dir + "/" + id.name + ".data", create: false))
        }
        var outputs: [(id: FileID, size: UInt64)] = []
        var hintEntries: [[Hint.Entry]] = []
        var outputHandles: [any StorageFile] = []
        defer { for h in outputHandles { h.close() } }
        var buffer: [UInt8] = []
        var moves: [MergeResult.Move] = []
        moves.reserveCapacity(plan.items.count)
        var hookedPartial = false

        func flush() throws(StorageError) {
            guard !buffer.isEmpty else { return }
            let o = outputs.count - 1
            try outputHandles[o].write(buffer, at: outputs[o].size)
            outputs[o].size += UInt64(buffer.count)
            buffer.removeAll(keepingCapacity: true)
        }
        for (n, item) in plan.items.enumerated() {
            let record = try handles[item.fileIndex].read(at: UInt64(item.offset), count: Int(item.length))
            let value = item.damaged ? nil : Bitcask.verify(record, key: item.key)
            let flags: Record.Flags = value == nil ? .damaged : []
            var encoded: [UInt8] = []
            Record.encode(
                key: item.key, value: value ?? [], flags: flags, timestamp: item.timestamp, into: &encoded)
            let current = outputs.isEmpty ? nil : outputs[outputs.count - 1].size + UInt64(buffer.count)
            if current == nil || (current! > 0 && current! + UInt64(encoded.count) > plan.maxFileSizeBytes) {
                try flush()
                let id = FileID(major: plan.outputMajor, minor: plan.firstMinor + UInt32(outputs.count))
                outputHandles.append(try fileSystem.open(dir + "/" + id.name + ".data", create: true))
                try outputHandles[outputHandles.count - 1].truncate(to: 0)
                outputs.append((id, 0))
                hintEntries.append([])
            }
            let o = outputs.count - 1
            let offset = UInt32(outputs[o].size + UInt64(buffer.count))
            buffer += encoded
            hintEntries[o].append(
                Hint.Entry(
                    key: item.key, flags: flags, timestamp: item.timestamp, offset: offset,
                    length: UInt32(encoded.count)))
            moves.append(
                MergeResult.Move(
                    item: n, output: o, offset: offset, length: UInt32(encoded.count), damaged: value == nil))
            if !hookedPartial {
                try flush()
                hookedPartial = true
                try plan.hook?(.outputPartlyWritten)
            }
            if buffer.count >= 1 << 20 { try flush() }
        }
        try flush()
        for h in outputHandles { try h.sync() }
        try plan.hook?(.outputSynced)
        for (o, out) in outputs.enumerated() {
            try Bitcask.writeHint(
                fileSystem: fileSystem, directory: dir, id: out.id, entries: hintEntries[o],
                dataSize: out.size)
        }
        try plan.hook?(.hintsWritten)
        try fileSystem.syncDirectory(dir)
        try plan.hook?(.directorySynced)
        return MergeResult(plan: plan, outputs: outputs, moves: moves)
    }

    /// Step 3 (owner): points the keydir at the merged copies (unless a key changed since the
    /// plan) and removes the inputs oldest first, syncing the directory after each removal.
    ///
    /// Oldest first matters: at every moment the inputs still present are the newest ones, so a
    /// tombstone can never be gone while an older input still holds the value it deleted.
    public func finishMerge(_ result: MergeResult) throws(StorageError) {
        defer { mergeRunning = false }
        guard !isClosed else { throw .closed }
        var outputNumbers: [UInt32] = []
        for out in result.outputs {
            let handle = try fileSystem.open(path(out.id.name + ".data"), create: false)
            let file = DataFile(id: out.id, number: nextNumber, handle: handle, size: out.size)
            nextNumber += 1
            files[file.number] = file
            totalBytes += out.size
            outputNumbers.append(file.number)
        }
        for move in result.moves {
            let item = result.plan.items[move.item]
            guard let now = keydir.lookup(item.key), now.file == item.file, now.offset == item.offset else {
                continue  // written or deleted since the plan: the newer record wins
            }
            let loc = RecordLocation(
                file: outputNumbers[move.output], offset: move.offset, length: move.length,
                timestamp: item.timestamp)
            apply(key: item.key, loc: loc, tombstone: false, damagedRecord: move.damaged)
        }
        try options.mergeFaultHook?(.keydirSwapped)
        for (i, number) in result.plan.inputNumbers.enumerated() {
            guard let file = files[number] else { continue }
            try removeFile(file)
            try fileSystem.syncDirectory(directory)
            if i == 0 { try options.mergeFaultHook?(.firstInputRemoved) }
        }
        merges += 1
        try options.mergeFaultHook?(.finished)
    }
}
