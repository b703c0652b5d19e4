// What `/metrics` shows of a stream (docs/QUEUE.md, "Metrics"), read straight from the stream's
// encoding: no entry, field or consumer name is copied, so a scrape of a full stream costs a walk
// over its length fields, not a decode.
import TernCore

extension StreamValue {
    /// A stream's length and, per consumer group, what waits for it.
    public struct Summary: Sendable, Hashable {
        public struct Group: Sendable, Hashable {
            public var name: [UInt8]
            /// Entries after the group's last-delivered id: in the stream, not yet delivered to
            /// any consumer of the group (its exact lag; deleted entries are not counted).
            public var backlog: Int
            /// Entries delivered to its consumers and not acknowledged (the PEL, XPENDING's count).
            public var pending: Int
            public var consumers: Int
            public init(name: [UInt8], backlog: Int, pending: Int, consumers: Int) {
                self.name = name
                self.backlog = backlog
                self.pending = pending
                self.consumers = consumers
            }
        }
        /// Entries in the stream (XLEN).
        public var length: Int
        /// In name order.
        public var groups: [Group]
        public init(length: Int, groups: [Group]) {
            self.length = length
            self.groups = groups
        }
    }

    /// The summary of an encoded stream (`encoded`'s layout); nil when the bytes are not a
    /// stream's.
    public static func summary(_ bytes: [UInt8]) -> Summary? {
        var r = ByteReader(bytes)
        func id() -> StreamID? {
            guard let ms = r.u64(), let seq = r.u64() else { return nil }
            return StreamID(ms, seq)
        }
        guard let n = r.u32(), Int(n) <= bytes.count / 20 else { return nil }
        // Each entry takes at least 20 bytes (id and field count), so `n` is bounded by the size.
        var ids: [StreamID] = []
        ids.reserveCapacity(Int(n))
        for _ in 0..<n {
            guard let i = id(), let k = r.u32() else { return nil }
            for _ in 0..<k {
                guard r.skipBlob() else { return nil }
            }
            ids.append(i)
        }
        guard id() != nil, id() != nil, r.u64() != nil, let gn = r.u32() else { return nil }
        var groups: [Summary.Group] = []
        for _ in 0..<gn {
            guard let name = r.blob(), let last = id(), r.u64() != nil, let pn = r.u32() else { return nil }
            for _ in 0..<pn {
                guard id() != nil, r.skipBlob(), r.u64() != nil, r.u64() != nil else { return nil }
            }
            guard let cn = r.u32() else { return nil }
            for _ in 0..<cn {
                guard r.skipBlob(), r.u64() != nil else { return nil }
            }
            let after = ids.partitionPoint { $0 <= last }
            groups.append(
                .init(name: name, backlog: ids.count - after, pending: Int(pn), consumers: Int(cn)))
        }
        return Summary(length: ids.count, groups: groups)
    }
}
