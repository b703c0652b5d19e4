// A stream's byte encoding (docs/QUEUE.md, "How a stream is kept") and what spares a busy stream
// most of its cost per write. A stream is one key's value, so every merged write of an instance
// (XADD, XREADGROUP, XACK, XDEL …) used to decode the whole stream — an array per field of every
// entry — and encode it whole again; on `tern demo queue` that was a third of the servers' CPU
// (docs/BENCHMARKS.md, "The task queue beside Redis"). Now:
// - the last streams decoded or encoded are kept beside their bytes (`StreamCodecCache`), so the
//   next write (the next merged op, or the next instance: its value is the same bytes) or read
//   of the same value finds it decoded;
// - an encoding remembers where each entry starts, and encoding the stream after a write copies
//   the entries it kept from the previous encoding as bytes (a trim, an XDEL, an XADD or an XACK
//   changes a few entries or none), writing only new entries and the part after the entries.
// Pure functions of the bytes: the cache only saves work, it never changes a result (a value is
// found only by equal bytes), so every replica and the simulator compute what they did before.
import Foundation
import TernCore

/// A stream's encoding beside its decoded value and where each entry's encoding starts.
struct EncodedStream: Sendable {
    var bytes: [UInt8]
    var value: StreamValue
    /// Entry k is `bytes[starts[k]..<starts[k + 1]]`; the last element is where the entries end.
    var starts: [Int]
}

enum StreamCodec {
    @inline(__always) static func put32(_ b: inout [UInt8], _ v: UInt32) {
        withUnsafeBytes(of: v.littleEndian) { b.append(contentsOf: $0) }
    }
    @inline(__always) static func put64(_ b: inout [UInt8], _ v: UInt64) {
        withUnsafeBytes(of: v.littleEndian) { b.append(contentsOf: $0) }
    }
    @inline(__always) static func putID(_ b: inout [UInt8], _ i: StreamID) {
        put64(&b, i.ms)
        put64(&b, i.seq)
    }
    @inline(__always) static func putBlob(_ b: inout [UInt8], _ x: [UInt8]) {
        put32(&b, UInt32(x.count))
        b.append(contentsOf: x)
    }

    /// `s` encoded (`StreamValue.encoded`'s layout). With `old` (the encoding of an earlier
    /// value of the same stream), each entry of `s` that `old` holds — same id, same fields — is
    /// copied from `old.bytes` (runs of them at once) instead of written field by field.
    static func encode(_ s: StreamValue, reusing old: EncodedStream?) -> EncodedStream {
        var b: [UInt8] = []
        if let old {
            b.reserveCapacity(old.bytes.count + 256)
        } else {
            var size = 64
            for e in s.entries { size += 20 + e.fields.reduce(0) { $0 + 4 + $1.count } }
            b.reserveCapacity(size + 64 * s.groups.count)
        }
        var starts: [Int] = []
        starts.reserveCapacity(s.entries.count + 1)
        put32(&b, UInt32(s.entries.count))
        // The run of `old`'s bytes still to copy.
        var runLo = 0
        var runHi = 0
        var i = 0
        let oldEntries = old?.value.entries ?? []
        for e in s.entries {
            if let old {
                while i < oldEntries.count && oldEntries[i].id < e.id { i += 1 }
                // Fields are compared as arrays: the same array (an entry carried over from the
                // old value) answers at once, without looking at the bytes.
                if i < oldEntries.count && oldEntries[i].id == e.id && oldEntries[i].fields == e.fields {
                    let lo = old.starts[i]
                    if runHi != lo {
                        if runHi > runLo { b.append(contentsOf: old.bytes[runLo..<runHi]) }
                        runLo = lo
                        runHi = lo
                    }
                    starts.append(b.count + (runHi - runLo))
                    runHi = old.starts[i + 1]
                    i += 1
                    continue
                }
            }
            if runHi > runLo, let old { b.append(contentsOf: old.bytes[runLo..<runHi]) }
            runLo = runHi
            starts.append(b.count)
            putID(&b, e.id)
            put32(&b, UInt32(e.fields.count))
            for f in e.fields { putBlob(&b, f) }
        }
        if runHi > runLo, let old { b.append(contentsOf: old.bytes[runLo..<runHi]) }
        starts.append(b.count)
        putID(&b, s.lastID)
        putID(&b, s.maxDeletedID)
        put64(&b, s.entriesAdded)
        put32(&b, UInt32(s.groups.count))
        for g in s.groups {
            putBlob(&b, g.name)
            putID(&b, g.lastID)
            put64(&b, UInt64(bitPattern: g.entriesRead))
            put32(&b, UInt32(g.pending.count))
            for p in g.pending {
                putID(&b, p.id)
                putBlob(&b, p.consumer)
                put64(&b, p.deliveryMs)
                put64(&b, p.deliveries)
            }
            put32(&b, UInt32(g.consumers.count))
            for c in g.consumers {
                putBlob(&b, c.name)
                put64(&b, c.seenMs)
            }
        }
        if !s.idempotent.isEmpty {
            var w = ByteWriter()
            s.encodeIdempotent(&w)
            b.append(contentsOf: w.bytes)
        }
        return EncodedStream(bytes: b, value: s, starts: starts)
    }

    /// Decodes a stream's bytes, noting where each entry starts; nil when they are not a stream's.
    static func decode(_ bytes: [UInt8]) -> EncodedStream? {
        var r = ByteReader(bytes)
        var s = StreamValue()
        func id() -> StreamID? {
            guard let ms = r.u64(), let seq = r.u64() else { return nil }
            return StreamID(ms, seq)
        }
        guard let n = r.u32() else { return nil }
        let reserve = Int(Swift.min(n, 1 << 16))
        s.entries.reserveCapacity(reserve)
        var starts: [Int] = []
        starts.reserveCapacity(reserve + 1)
        for _ in 0..<n {
            starts.append(r.at)
            guard let i = id(), let k = r.u32(), Int(k) <= r.remaining / 4 else { return nil }
            var fields: [[UInt8]] = []
            fields.reserveCapacity(Int(k))
            for _ in 0..<k {
                guard let f = r.blob() else { return nil }
                fields.append(f)
            }
            s.entries.append(StreamValue.Entry(id: i, fields: fields))
        }
        starts.append(r.at)
        guard let last = id(), let del = id(), let added = r.u64(), let gn = r.u32() else { return nil }
        s.lastID = last
        s.maxDeletedID = del
        s.entriesAdded = added
        for _ in 0..<gn {
            guard let name = r.blob(), let gl = id(), let er = r.u64(), let pn = r.u32() else { return nil }
            var g = StreamValue.Group(name: name, lastID: gl, entriesRead: Int64(bitPattern: er))
            for _ in 0..<pn {
                guard let i = id(), let c = r.blob(), let t = r.u64(), let d = r.u64() else { return nil }
                g.pending.append(StreamValue.Pending(id: i, consumer: c, deliveryMs: t, deliveries: d))
            }
            guard let cn = r.u32() else { return nil }
            for _ in 0..<cn {
                guard let name = r.blob(), let seen = r.u64() else { return nil }
                g.consumers.append(StreamValue.Consumer(name: name, seenMs: seen))
            }
            s.groups.append(g)
        }
        guard s.decodeIdempotent(&r) else { return nil }
        return EncodedStream(bytes: bytes, value: s, starts: starts)
    }

    /// The stream `bytes` encode, with its entries' places: from the cache, else decoded (and
    /// kept); nil when the bytes are not a stream's.
    static func indexed(_ bytes: [UInt8]) -> EncodedStream? {
        if let e = StreamCodecCache.shared.lookup(bytes) { return e }
        guard let e = decode(bytes) else { return nil }
        StreamCodecCache.shared.store(e)
        return e
    }

    /// The stream `bytes` encode (`indexed`'s value).
    static func value(_ bytes: [UInt8]) -> StreamValue? { indexed(bytes)?.value }
}

/// The streams most recently decoded or encoded, found by their bytes (the same array at once,
/// else compared with memcmp). Bounded: 16 streams, 32 MiB of encodings (a stream of more than
/// 8 MiB is not kept). Shared by the nodes of a process (the simulator runs several): a value is
/// a function of its bytes, so whoever put it there, it is the right one.
final class StreamCodecCache: @unchecked Sendable {
    static let shared = StreamCodecCache()
    static let capacity = 16
    static let budgetBytes = 32 << 20
    static let largestBytes = 8 << 20

    private let lock = NSLock()
    /// Oldest first.
    private var items: [EncodedStream] = []
    private var bytes = 0

    static func same(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        return a.withUnsafeBufferPointer { x in
            b.withUnsafeBufferPointer { y in
                x.baseAddress == y.baseAddress || x.count == 0
                    || memcmp(x.baseAddress!, y.baseAddress!, x.count) == 0
            }
        }
    }

    func lookup(_ b: [UInt8]) -> EncodedStream? {
        lock.lock()
        defer { lock.unlock() }
        guard let k = items.lastIndex(where: { Self.same($0.bytes, b) }) else { return nil }
        return items[k]
    }

    func store(_ e: EncodedStream) {
        guard e.bytes.count <= Self.largestBytes else { return }
        lock.lock()
        defer { lock.unlock() }
        if let k = items.lastIndex(where: { Self.same($0.bytes, e.bytes) }) {
            bytes -= items[k].bytes.count
            items.remove(at: k)
        }
        items.append(e)
        bytes += e.bytes.count
        while items.count > Self.capacity || bytes > Self.budgetBytes {
            bytes -= items[0].bytes.count
            items.removeFirst()
        }
    }
}
