import TernCore

/// The on-disk record format (see docs/STORAGE.md):
///
/// ```
/// offset size field
///  0     2    magic 0xB17C (little endian)
///  2     1    flags: 1 tombstone, 2 batch member, 4 last of batch, 8 damaged marker
///  3     1    reserved, 0
///  4     4    value CRC-32C
///  8     8    timestamp
/// 16     4    key length
/// 20     4    value length
/// 24     4    header CRC-32C over bytes 0..<24 and the key
/// 28     k    key
/// 28+k   v    value
/// ```
/// The header checksum covers the key, so a damaged value still names its key (the repair layer
/// fetches it from peers), and a damaged header lets recovery resynchronise on the next header.
enum Record {
    static let magic: UInt16 = 0xB17C
    static let headerSize = 28

    struct Flags: OptionSet, Hashable {
        var rawValue: UInt8
        static let tombstone = Flags(rawValue: 1)
        static let batch = Flags(rawValue: 2)
        static let batchEnd = Flags(rawValue: 4)
        /// Written by merge in place of a record whose value failed its checksum, so the key stays
        /// damaged (rather than silently reverting) after the original file is gone.
        static let damaged = Flags(rawValue: 8)
    }

    /// A decoded, header-checked record header.
    struct Header {
        var flags: Flags
        var valueCRC: UInt32
        var timestamp: UInt64
        var keyLength: Int
        var valueLength: Int
        var recordLength: Int { Record.headerSize + keyLength + valueLength }
    }

    /// Appends one encoded record to `out`.
    static func encode(
        key: [UInt8], value: [UInt8], flags: Flags, timestamp: UInt64, into out: inout [UInt8]
    ) {
        let start = out.count
        // No exact reserveCapacity here: per record it would defeat the array's geometric growth
        // and copy the whole batch once per record. Callers reserve for the whole batch.
        putLE(magic, &out)
        out.append(flags.rawValue)
        out.append(0)
        putLE(CRC32C.checksum(value), &out)
        putLE(timestamp, &out)
        putLE(UInt32(key.count), &out)
        putLE(UInt32(value.count), &out)
        let headerCRC = out.withUnsafeBytes { buf in
            CRC32C.update(CRC32C.update(0, UnsafeRawBufferPointer(rebasing: buf[start..<start + 24])), key)
        }
        putLE(headerCRC, &out)
        out.append(contentsOf: key)
        out.append(contentsOf: value)
    }

    /// `encode` of a record whose key is `prefix` then `key`, its value borrowed.
    static func encode(
        prefix: UInt8, key: [UInt8], value: UnsafeRawBufferPointer, flags: Flags, timestamp: UInt64,
        into out: inout [UInt8]
    ) {
        let start = out.count
        putLE(magic, &out)
        out.append(flags.rawValue)
        out.append(0)
        putLE(CRC32C.update(0, value), &out)
        putLE(timestamp, &out)
        putLE(UInt32(1 + key.count), &out)
        putLE(UInt32(value.count), &out)
        let headerCRC = out.withUnsafeBytes { buf in
            var c = CRC32C.update(0, UnsafeRawBufferPointer(rebasing: buf[start..<start + 24]))
            c = withUnsafeBytes(of: prefix) { CRC32C.update(c, $0) }
            return CRC32C.update(c, key)
        }
        putLE(headerCRC, &out)
        out.append(prefix)
        out.append(contentsOf: key)
        out.append(contentsOf: value)
    }

    /// Decodes and checks the header at `offset` of `bytes`; nil if the magic, lengths or header
    /// checksum are wrong or the key does not fit in `bytes`.
    static func decodeHeader(_ bytes: UnsafeRawBufferPointer, at offset: Int) -> Header? {
        guard bytes.count - offset >= headerSize else { return nil }
        guard getLE(bytes, offset, UInt16.self) == magic, bytes[offset + 3] == 0 else { return nil }
        let keyLength = Int(getLE(bytes, offset + 16, UInt32.self))
        let valueLength = Int(getLE(bytes, offset + 20, UInt32.self))
        guard keyLength <= 0xFFFF, bytes.count - offset - headerSize >= keyLength else { return nil }
        let crc = CRC32C.update(
            CRC32C.update(0, UnsafeRawBufferPointer(rebasing: bytes[offset..<offset + 24])),
            UnsafeRawBufferPointer(rebasing: bytes[offset + headerSize..<offset + headerSize + keyLength]))
        guard crc == getLE(bytes, offset + 24, UInt32.self) else { return nil }
        return Header(
            flags: Flags(rawValue: bytes[offset + 2]),
            valueCRC: getLE(bytes, offset + 4, UInt32.self),
            timestamp: getLE(bytes, offset + 8, UInt64.self),
            keyLength: keyLength,
            valueLength: valueLength)
    }
}

@inline(__always)
func putLE<T: FixedWidthInteger>(_ v: T, _ out: inout [UInt8]) {
    var x = v.littleEndian
    withUnsafeBytes(of: &x) { out.append(contentsOf: $0) }
}

@inline(__always)
func getLE<T: FixedWidthInteger>(_ bytes: UnsafeRawBufferPointer, _ offset: Int, _: T.Type) -> T {
    T(littleEndian: bytes.loadUnaligned(fromByteOffset: offset, as: T.self))
}

/// Hint file format: `"TERNHNT1"`, then per record of the data file, in file order,
/// `flags u8 | key length u16 | timestamp u64 | offset u32 | length u32 | key`, then a trailer
/// `entry count u64 | data file size u64 | CRC-32C of everything before it u32`. A hint file is
/// trusted only if its checksum holds and the data file still has the recorded size.
enum Hint {
    static let magic: [UInt8] = Array("TERNHNT1".utf8)
    static let trailerSize = 20

    struct Entry {
        var key: [UInt8]
        var flags: Record.Flags
        var timestamp: UInt64
        var offset: UInt32
        var length: UInt32
    }

    static func encode(_ entries: [Entry], dataSize: UInt64) -> [UInt8] {
        var out = magic
        for e in entries {
            out.append(e.flags.rawValue)
            putLE(UInt16(e.key.count), &out)
            putLE(e.timestamp, &out)
            putLE(e.offset, &out)
            putLE(e.length, &out)
            out += e.key
        }
        putLE(UInt64(entries.count), &out)
        putLE(dataSize, &out)
        putLE(CRC32C.checksum(out), &out)
        return out
    }

    /// The data file size a hint file records, if its checksum holds (whatever the data file's
    /// size is now): a hint is written only after its data file was synced, so a data file
    /// shorter than this lost durable bytes.
    static func recordedDataSize(_ buf: UnsafeRawBufferPointer) -> UInt64? {
        guard buf.count >= magic.count + trailerSize, buf.starts(with: magic) else { return nil }
        let end = buf.count - trailerSize
        let crc = CRC32C.update(0, UnsafeRawBufferPointer(rebasing: buf[0..<end + 16]))
        guard crc == getLE(buf, end + 16, UInt32.self) else { return nil }
        return getLE(buf, end + 8, UInt64.self)
    }

    /// The entry count if `bytes` is a whole, valid hint file for a data file of `dataSize` bytes:
    /// checksum, data size, and entry boundaries that add up to the recorded count.
    static func check(_ buf: UnsafeRawBufferPointer, dataSize: UInt64) -> Int? {
        guard recordedDataSize(buf) == dataSize else { return nil }
        let end = buf.count - trailerSize
        var p = magic.count
        var n = 0
        while p < end {
            guard end - p >= 19 else { return nil }
            let keyLength = Int(getLE(buf, p + 1, UInt16.self))
            guard end - p - 19 >= keyLength else { return nil }
            p += 19 + keyLength
            n += 1
        }
        return n == Int(getLE(buf, end, UInt64.self)) ? n : nil
    }

    /// The entry count a hint file's trailer claims (unchecked; used only to size the keydir).
    static func claimedCount(_ trailer: [UInt8]) -> Int {
        guard trailer.count == trailerSize else { return 0 }
        return trailer.withUnsafeBytes { Int(min(getLE($0, 0, UInt64.self), 1 << 40)) }
    }

    /// Calls `body` for each entry of a hint file that passed `check`, with borrowed key bytes.
    static func forEach(
        _ buf: UnsafeRawBufferPointer,
        _ body: (
            _ flags: Record.Flags, _ key: UnsafeRawBufferPointer, _ timestamp: UInt64, _ offset: UInt32,
            _ length: UInt32
        ) -> Void
    ) {
        let end = buf.count - trailerSize
        var p = magic.count
        while p < end {
            let keyLength = Int(getLE(buf, p + 1, UInt16.self))
            body(
                Record.Flags(rawValue: buf[p]),
                UnsafeRawBufferPointer(rebasing: buf[p + 19..<p + 19 + keyLength]),
                getLE(buf, p + 3, UInt64.self), getLE(buf, p + 11, UInt32.self),
                getLE(buf, p + 15, UInt32.self))
            p += 19 + keyLength
        }
    }
}

/// The durable mark (`durable.mark`): how many bytes of which data file are known to be fsynced.
/// `"TERNDMK1" | file major u32 | file minor u32 | synced size u64 | CRC-32C of the rest u32`.
/// Written after each fsync, without one of its own (so it never claims more than is durable;
/// after a power loss it may claim less, which only weakens the check), and kept in its own file
/// so that a truncated data file cannot take it along. Recovery compares it with what it finds.
struct DurableMark: Equatable {
    static let fileName = "durable.mark"
    static let magic: [UInt8] = Array("TERNDMK1".utf8)
    static let size = 28
    var file: Bitcask.FileID
    var bytes: UInt64

    func encode() -> [UInt8] {
        var out = Self.magic
        putLE(file.major, &out)
        putLE(file.minor, &out)
        putLE(bytes, &out)
        putLE(CRC32C.checksum(out), &out)
        return out
    }

    /// The mark in `raw`, or nil if it is not a whole, valid one.
    static func decode(_ raw: [UInt8]) -> DurableMark? {
        guard raw.count == size, raw.starts(with: magic) else { return nil }
        return raw.withUnsafeBytes { buf -> DurableMark? in
            guard
                CRC32C.update(0, UnsafeRawBufferPointer(rebasing: buf[0..<24])) == getLE(buf, 24, UInt32.self)
            else { return nil }
            return DurableMark(
                file: Bitcask.FileID(major: getLE(buf, 8, UInt32.self), minor: getLE(buf, 12, UInt32.self)),
                bytes: getLE(buf, 16, UInt64.self))
        }
    }
}
