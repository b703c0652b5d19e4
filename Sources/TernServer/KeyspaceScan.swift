import TernConsensus
import TernCore
import TernRepair

/// Cluster-wide key enumeration, the pure part (docs/SERVER.md, "Keyspace"): the SCAN cursor,
/// the listing one node gives of its own keys, the merge of several nodes' listings, and the
/// peer messages that carry them. No clock, socket or store here; `KeyspaceService` is the shell.
///
/// The ring is cut into the repair scanner's buckets (`RepairOptions.bucket(ofPosition:)`, the
/// top 12 bits of a key's XXH64 position). A cursor is the next bucket to list; a listing covers
/// whole buckets `[from, next)`, so a key is in exactly one step of a full SCAN whatever the
/// COUNT, and a cursor names a place on the ring, not a node: any node can resume it (failover).
public enum KeyspaceScan {
    /// The buckets (the repair scanner's: one rule for the bucket of a key).
    public static let buckets = RepairOptions()

    /// The number of buckets; a listing that reaches it has covered the ring.
    public static var bucketCount: Int { buckets.bucketCount }

    /// The bucket of a client key.
    public static func bucket(of key: [UInt8]) -> Int { buckets.bucket(ofPosition: XXH64.hash(key)) }

    /// Bytes of key names one listing carries before it stops at a bucket boundary (a listing
    /// always carries at least one whole bucket), well under a peer frame (4 MiB).
    public static let listingBytesMax = 1 << 20

    // MARK: - Cursor

    /// SCAN's cursor: 0 starts (and ends) a scan; otherwise the bucket to list next. Redis's error
    /// for a cursor that is not an unsigned integer; a cursor past the last bucket lists nothing
    /// and ends the scan (as a Redis cursor past its table does).
    public static func parseCursor(_ bytes: [UInt8]) -> Int?? {
        // Redis reads the cursor with strtoul, which takes "-N" as 2^64 - N: past the end.
        let digits: ([UInt8]) -> Bool = { d in !d.isEmpty && d.allSatisfy { $0 >= 48 && $0 <= 57 } }
        if bytes.first == UInt8(ascii: "-") && digits(Array(bytes.dropFirst())) && bytes.count <= 21 {
            return nil
        }
        guard !bytes.isEmpty, bytes.count <= 20, bytes.allSatisfy({ $0 >= 48 && $0 <= 57 }),
            let v = UInt64(String(decoding: bytes, as: UTF8.self))
        else { return .some(nil) }
        return v >= UInt64(bucketCount) ? nil : .some(Int(v))
    }

    /// The cursor text of the next bucket to list (0 once the ring is covered).
    public static func cursorText(next: Int) -> String { next >= bucketCount ? "0" : String(next) }

    // MARK: - Listings

    /// What one node answers: its keys of buckets `[from, next)`, reserved keys left out, cut at a
    /// bucket boundary once at least `want` keys or `listingBytesMax` bytes were taken.
    ///
    /// - Parameter keys: every client key the node holds a record of (any order).
    public static func listing(_ keys: [[UInt8]], from: Int, want: Int) -> (next: Int, keys: [[UInt8]]) {
        // One pass to count keys and bytes per bucket, the cut from the counts, then only the keys
        // below the cut are kept and sorted (not every key past `from`: a small COUNT on a big
        // node would sort most of its keys at every step).
        var buckets: [(bucket: Int, key: [UInt8])] = []
        buckets.reserveCapacity(keys.count)
        var counts = [Int](repeating: 0, count: bucketCount)
        var bytes = [Int](repeating: 0, count: bucketCount)
        // Reserved keys are the services', but for hash-tag groups (their members are listed).
        for k in keys where k.first != 0 || KeyLayout.isGroupKey(k) {
            let b = bucket(of: k)
            guard b >= from else { continue }
            buckets.append((b, k))
            counts[b] += 1
            bytes[b] += k.count
        }
        var next = bucketCount
        var taken = 0
        var takenBytes = 0
        var b = max(from, 0)
        while b < bucketCount {
            if counts[b] > 0 {
                if taken >= max(want, 1) || takenBytes >= listingBytesMax {
                    next = b
                    break
                }
                taken += counts[b]
                takenBytes += bytes[b]
            }
            b += 1
        }
        var out = buckets.filter { $0.bucket < next }
        out.sort { $0.bucket != $1.bucket ? $0.bucket < $1.bucket : $0.key.lexicographicallyPrecedes($1.key) }
        return (next, out.map(\.key))
    }

    /// The union of several nodes' listings from the same bucket: it covers `[from, min(next))`,
    /// where every node listed all it holds, so keys a node listed beyond that are dropped (the
    /// next step lists them again from every node). Keys come once each, in bucket order.
    public static func merge(_ listings: [(next: Int, keys: [[UInt8]])]) -> (next: Int, keys: [[UInt8]]) {
        let next = listings.map(\.next).min() ?? bucketCount
        var seen = Set<[UInt8]>()
        var out: [(Int, [UInt8])] = []
        for l in listings {
            for k in l.keys where seen.insert(k).inserted {
                let b = bucket(of: k)
                if b < next { out.append((b, k)) }
            }
        }
        out.sort { $0.0 != $1.0 ? $0.0 < $1.0 : $0.1.lexicographicallyPrecedes($1.1) }
        return (next, out.map(\.1))
    }

    /// Which answers complete a listing: every node of two campuses, each of them voting (not
    /// rebuilding). Any two campuses hold a replica of every key that accepted every chosen write
    /// of it (a write is chosen by a majority of its three replicas, one per campus), so their
    /// union misses no acknowledged key. Nil while no two campuses are complete.
    public static func complete(
        nodes: [(id: NodeID, campus: Campus)], answered: [NodeID: (next: Int, keys: [[UInt8]])]
    ) -> [(next: Int, keys: [[UInt8]])]? {
        var full: [Campus] = []
        for c in Campus.allCases {
            let ids = nodes.filter { $0.campus == c }.map(\.id)
            if !ids.isEmpty && ids.allSatisfy({ answered[$0] != nil }) { full.append(c) }
        }
        guard full.count >= 2 else { return nil }
        return nodes.filter { full.prefix(2).contains($0.campus) }.compactMap { answered[$0.id] }
    }
}

/// The keyspace listing's peer messages (service kind 4), in the project's byte codec.
///
/// ```
///  asking node N                         every node P of the cluster (N itself without a message)
///  ── list(id, from, want) ──────────►   P's keys of buckets [from, next) (KeyspaceScan.listing)
///  ◄──────── keys(id, voting, next, [key]) ─  voting = P is not rebuilding (a rebuilding node's
///                                              store may lack keys: its answer does not count)
/// ```
public enum KeyspaceMessage: Sendable, Hashable {
    case list(id: UInt64, from: UInt32, want: UInt32)
    case keys(id: UInt64, voting: Bool, next: UInt32, keys: [[UInt8]])

    static let listKind: UInt8 = 1
    static let keysKind: UInt8 = 2

    public func encode() -> [UInt8] {
        var w = ByteWriter()
        switch self {
        case .list(let id, let from, let want):
            w.u8(Self.listKind)
            w.u64(id)
            w.u32(from)
            w.u32(want)
        case .keys(let id, let voting, let next, let keys):
            w.u8(Self.keysKind)
            w.u64(id)
            w.u8(voting ? 1 : 0)
            w.u32(next)
            w.u32(UInt32(keys.count))
            for k in keys { w.blob(k) }
        }
        return w.bytes
    }

    /// Nil when malformed (counted and dropped by the caller).
    public static func decode(_ bytes: [UInt8]) -> KeyspaceMessage? {
        var r = ByteReader(bytes)
        guard let kind = r.u8() else { return nil }
        let m: KeyspaceMessage
        switch kind {
        case listKind:
            guard let id = r.u64(), let from = r.u32(), let want = r.u32() else { return nil }
            m = .list(id: id, from: from, want: want)
        case keysKind:
            guard let id = r.u64(), let voting = r.u8(), voting <= 1, let next = r.u32(),
                Int(next) <= KeyspaceScan.bucketCount, let n = r.u32(), Int(n) <= bytes.count
            else { return nil }
            var keys: [[UInt8]] = []
            keys.reserveCapacity(Int(n))
            for _ in 0..<n {
                guard let k = r.blob(), k.count <= ReplicaNode.keyBytesMax else { return nil }
                keys.append(k)
            }
            m = .keys(id: id, voting: voting == 1, next: next, keys: keys)
        default:
            return nil
        }
        return r.atEnd ? m : nil
    }
}
