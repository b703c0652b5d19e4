import TernCore

extension Bitcask {
    /// What a scan of one data file found.
    struct ScanResult {
        /// Records in file order, batches resolved (torn ones dropped), damage flagged.
        var entries: [Hint.Entry] = []
        /// Where the valid log ends; bytes after it are a torn tail to cut.
        var validEnd = 0
        /// Records whose value failed its checksum (key known).
        var damagedRecords = 0
        /// Damaged regions skipped by resynchronising on the next valid header (key unknown).
        var unattributed = 0
    }

    /// Parses a whole data file.
    ///
    /// A header that fails its checksum is either a torn tail (no valid header follows: cut there)
    /// or damage in the middle (a valid header follows: count it, skip to it). A record with a good
    /// header but a bad value keeps its key and is flagged damaged. A batch whose end record is
    /// missing at the tail is dropped whole, and the cut moves back to its start.
    static func scan(_ bytes: [UInt8]) -> ScanResult {
        var result = ScanResult()
        bytes.withUnsafeBytes { buf in
            var pos = 0
            var batch: [Hint.Entry] = []
            var batchStart = 0
            func entry(_ h: Record.Header, at p: Int, damaged: Bool) -> Hint.Entry {
                var flags = h.flags.subtracting([.batch, .batchEnd])
                if damaged { flags.insert(.damaged) }
                return Hint.Entry(
                    key: Array(buf[p + Record.headerSize..<p + Record.headerSize + h.keyLength]),
                    flags: flags, timestamp: h.timestamp, offset: UInt32(p), length: UInt32(h.recordLength))
            }
            func nextHeader(after p: Int) -> Int? {
                var q = p + 1
                while buf.count - q >= Record.headerSize {
                    if buf[q] == 0x7C, buf[q + 1] == 0xB1, let h = Record.decodeHeader(buf, at: q),
                        buf.count - q >= h.recordLength
                    {
                        return q
                    }
                    q += 1
                }
                return nil
            }
            while pos < buf.count {
                guard let h = Record.decodeHeader(buf, at: pos), buf.count - pos >= h.recordLength else {
                    if let next = nextHeader(after: pos) {
                        // Damage in the middle: members of a batch read so far were written whole
                        // (later records exist), so keep them rather than lose acknowledged data.
                        result.unattributed += 1
                        result.entries += batch
                        batch.removeAll()
                        pos = next
                        continue
                    }
                    break
                }
                let valueStart = pos + Record.headerSize + h.keyLength
                let value = UnsafeRawBufferPointer(rebasing: buf[valueStart..<valueStart + h.valueLength])
                let bad = CRC32C.update(0, value) != h.valueCRC
                if bad { result.damagedRecords += 1 }
                let e = entry(h, at: pos, damaged: bad)
                if h.flags.contains(.batch) {
                    if batch.isEmpty { batchStart = pos }
                    batch.append(e)
                    if h.flags.contains(.batchEnd) {
                        result.entries += batch
                        batch.removeAll()
                    }
                } else {
                    if !batch.isEmpty {
                        // A batch is one append, so another record cannot follow an unfinished one
                        // unless the bytes lie; its members are then not trustworthy.
                        result.unattributed += 1
                        batch.removeAll()
                    }
                    result.entries.append(e)
                }
                pos += h.recordLength
                if batch.isEmpty { result.validEnd = pos }
            }
            if !batch.isEmpty { result.validEnd = batchStart }
        }
        return result
    }

    /// Rebuilds the keydir from the directory: hint files where valid, scans elsewhere.
    func recover() throws(StorageError) {
        var dataIDs: [FileID] = []
        var hints: Set<FileID> = []
        var changed = false
        var hasMark = false
        for name in try fileSystem.list(directory) {
            if name == DurableMark.fileName {
                hasMark = true
            } else if name.hasSuffix(".tmp") {
                // A hint file or merge output whose rename never happened.
                try fileSystem.remove(path(name))
                changed = true
            } else if name.hasSuffix(".data") {
                guard let id = FileID(name: String(name.dropLast(5))) else { throw .corruptDirectory(name) }
                dataIDs.append(id)
            } else if name.hasSuffix(".hint") {
                guard let id = FileID(name: String(name.dropLast(5))) else { throw .corruptDirectory(name) }
                hints.insert(id)
            }
        }
        dataIDs.sort()
        let mark = hasMark ? readDurableMark() : nil
        durableMark = mark
        func lost(_ id: FileID, has: UInt64, needs: UInt64, source: String) -> StorageError {
            .lostDurableBytes(
                "data file \(id.name).data holds \(has) valid bytes, but \(needs) were fsynced (\(source))")
        }
        // A hint whose data file is gone (written in the background after a merge removed its
        // file) is useless; drop it so it cannot be mistaken for a later file's.
        for id in hints.subtracting(dataIDs) {
            try fileSystem.remove(path(id.name + ".hint"))
            hints.remove(id)
            changed = true
        }
        // Size the keydir once from the hint trailers, instead of rehashing while loading.
        var claimed = 0
        for id in dataIDs where hints.contains(id) {
            if let hint = try? fileSystem.open(path(id.name + ".hint"), create: false) {
                let size = hint.size
                if size >= UInt64(Hint.trailerSize) {
                    // The trailer is not checked yet: bound it by what the file can hold (an entry
                    // is at least 19 bytes), so a corrupt count cannot reserve absurd memory.
                    let count = Hint.claimedCount(
                        try hint.read(at: size - UInt64(Hint.trailerSize), count: Hint.trailerSize))
                    claimed += min(count, Int(size) / 19)
                }
                hint.close()
            }
        }
        keydir.reserve(keys: claimed, keyBytes: 0)
        for id in dataIDs {
            let handle = try fileSystem.open(path(id.name + ".data"), create: false)
            var size = handle.size
            let number = nextNumber
            if hints.contains(id) {
                let hintFile = try fileSystem.open(path(id.name + ".hint"), create: false)
                let bytes = try hintFile.read(at: 0, count: Int(hintFile.size))
                hintFile.close()
                let applied = bytes.withUnsafeBytes { buf -> Bool in
                    guard Hint.check(buf, dataSize: size) != nil else { return false }
                    Hint.forEach(buf) { flags, key, timestamp, offset, length in
                        apply(
                            rawKey: key,
                            loc: RecordLocation(
                                file: number, offset: offset, length: length, timestamp: timestamp),
                            tombstone: flags.contains(.tombstone), damagedRecord: flags.contains(.damaged))
                    }
                    return true
                }
                if applied {
                    if let m = mark, m.file == id, size < m.bytes {
                        try accept(lost(id, has: size, needs: m.bytes, source: DurableMark.fileName))
                    }
                    register(DataFile(id: id, number: number, handle: handle, size: size))
                    continue
                }
                // A hint is written only after its data file was synced whole: a data file now
                // shorter than its hint says lost fsynced bytes (a longer one is not possible
                // either, but is left to the scan, which also replaces the hint).
                if let recorded = bytes.withUnsafeBytes({ Hint.recordedDataSize($0) }), size < recorded {
                    try accept(lost(id, has: size, needs: recorded, source: id.name + ".hint"))
                }
            }
            let bytes = try handle.read(at: 0, count: Int(size))
            let scan = Self.scan(bytes)
            unattributedDamage += scan.unattributed
            // Checked before the torn tail is cut, so that the evidence stays on disk.
            if let m = mark, m.file == id, UInt64(scan.validEnd) < m.bytes {
                try accept(lost(id, has: UInt64(scan.validEnd), needs: m.bytes, source: DurableMark.fileName))
            }
            if scan.validEnd < bytes.count {
                try handle.truncate(to: UInt64(scan.validEnd))
                try handle.sync()
                truncatedBytes += UInt64(bytes.count - scan.validEnd)
                size = UInt64(scan.validEnd)
            }
            if size == 0 {
                handle.close()
                try fileSystem.remove(path(id.name + ".data"))
                if hints.contains(id) { try fileSystem.remove(path(id.name + ".hint")) }
                changed = true
                continue
            }
            try writeHint(for: id, entries: scan.entries, dataSize: size)
            changed = true
            for e in scan.entries {
                apply(
                    key: e.key,
                    loc: RecordLocation(
                        file: number, offset: e.offset, length: e.length, timestamp: e.timestamp),
                    tombstone: e.flags.contains(.tombstone), damagedRecord: e.flags.contains(.damaged))
            }
            register(DataFile(id: id, number: number, handle: handle, size: size))
        }
        // The marked file may be gone only if it was sealed and merged away (merge outputs and
        // later files have greater ids); if nothing at or after it exists, the newest data is gone.
        if let m = mark, m.bytes > 0, !dataIDs.contains(where: { $0 >= m.file }) {
            try accept(
                .lostDurableBytes(
                    "data file \(m.file.name).data is missing, but \(m.bytes) bytes of it were fsynced "
                        + "(\(DurableMark.fileName)), and no later data file exists"))
        }
        if changed { try fileSystem.syncDirectory(directory) }
    }

    /// Throws `error` (a loss of fsynced bytes) unless the options accept such a loss, in which
    /// case it is recorded in `lostDurableBytes` and recovery goes on.
    func accept(_ error: StorageError) throws(StorageError) {
        guard options.acceptLostDurableBytes, case .lostDurableBytes(let why) = error else { throw error }
        lostDurableBytes.append(why)
    }

    /// The durable mark left by the last run, or nil if it cannot be read or is not whole (a
    /// mark torn by a power loss: no check, as before marks existed).
    func readDurableMark() -> DurableMark? {
        guard let h = try? fileSystem.open(path(DurableMark.fileName), create: false) else { return nil }
        defer { h.close() }
        return DurableMark.decode((try? h.read(at: 0, count: DurableMark.size)) ?? [])
    }

    private func register(_ file: DataFile) {
        precondition(file.number == nextNumber, "files are numbered in load order")
        nextNumber += 1
        files[file.number] = file
        totalBytes += file.size
    }
}
