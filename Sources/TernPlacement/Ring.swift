import TernCore

/// A key's three replicas, one per campus. A fixed-size value so that lookups do not allocate.
public struct Replicas: Sendable, Hashable, CustomStringConvertible {
    /// The replica in campus A.
    public var a: NodeID
    /// The replica in campus B.
    public var b: NodeID
    /// The replica in campus C.
    public var c: NodeID

    /// Replicas from one node per campus.
    public init(a: NodeID, b: NodeID, c: NodeID) {
        self.a = a
        self.b = b
        self.c = c
    }

    /// The replica in `campus`.
    public subscript(campus: Campus) -> NodeID {
        switch campus {
        case .a: a
        case .b: b
        case .c: c
        }
    }

    /// "A=n1 B=n4 C=n7".
    public var description: String { "A=\(a) B=\(b) C=\(c)" }
}

/// The placement function: key → the node holding it in each campus.
///
/// Built once from a `ClusterMap`: building only copies each campus's tokens into one sorted array
/// (with a parallel array of owners), so start-up computes nothing. A lookup hashes the key with
/// XXH64 (seed 0) and, per campus, binary-searches for the first token ≥ the hash, wrapping to the
/// campus's smallest token past the top of the ring:
///
/// ```
///        token t1 (n1)      token t2 (n2)              hash h in (t1, t2]  → n2
///  0 ────────●────────────────●──────────── 2^64-1     hash h > t_last     → owner of t_first
/// ```
///
/// Cost: one XXH64 of the key plus three binary searches over that campus's tokens
/// (log2(tokens) comparisons each); no allocation.
public struct Ring: Sendable {
    /// One campus's ring: sorted tokens and, at the same index, the node owning each.
    @usableFromInline
    struct CampusRing: Sendable {
        @usableFromInline let tokens: [UInt64]
        @usableFromInline let owners: [NodeID]

        init(_ nodes: [NodeEntry]) {
            let pairs = nodes.flatMap { node in node.tokens.map { ($0, node.id) } }.sorted { $0.0 < $1.0 }
            precondition(!pairs.isEmpty, "a validated ClusterMap has a node in every campus")
            tokens = pairs.map(\.0)
            owners = pairs.map(\.1)
        }

        /// The owner of the first token ≥ `hash`, wrapping to the first token.
        @inlinable
        func owner(ofHash hash: UInt64) -> NodeID {
            tokens.withUnsafeBufferPointer { tokens in
                // Branchless lower bound: random hashes mispredict half the steps of a branchy
                // search (measured: ≈ 3x slower). The comparison's 0/1 is multiplied in, because
                // the optimizer turns `cond ? a : b` back into a jump.
                var base = 0
                var count = tokens.count
                while count > 1 {
                    let half = count >> 1
                    base &+= half &* Int(unsafeBitCast(tokens[base &+ half] < hash, to: UInt8.self))
                    count &-= half
                }
                let low = base &+ Int(unsafeBitCast(tokens[base] < hash, to: UInt8.self))
                let index = low == tokens.count ? 0 : low
                return owners.withUnsafeBufferPointer { $0[index] }
            }
        }
    }

    /// The map this ring was built from.
    public let map: ClusterMap
    @usableFromInline let ringA: CampusRing
    @usableFromInline let ringB: CampusRing
    @usableFromInline let ringC: CampusRing

    /// The ring of `map`.
    public init(map: ClusterMap) {
        self.map = map
        ringA = CampusRing(map.nodes(in: .a))
        ringB = CampusRing(map.nodes(in: .b))
        ringC = CampusRing(map.nodes(in: .c))
    }

    /// The ring position of `key`: XXH64 of its bytes, seed 0.
    @inlinable
    public static func position(of key: [UInt8]) -> UInt64 { XXH64.hash(key) }

    /// The key's replica in each campus.
    @inlinable
    public func replicas(for key: [UInt8]) -> Replicas { replicas(forPosition: XXH64.hash(key)) }

    /// The key's replica in each campus; `key` is taken as raw bytes (no copy).
    @inlinable
    public func replicas(for key: UnsafeRawBufferPointer) -> Replicas {
        replicas(forPosition: XXH64.hash(key))
    }

    /// The replicas of the key whose ring position (XXH64) is `position`.
    @inlinable
    public func replicas(forPosition position: UInt64) -> Replicas {
        Replicas(
            a: ringA.owner(ofHash: position), b: ringB.owner(ofHash: position),
            c: ringC.owner(ofHash: position))
    }

    /// The key's replica in `campus`.
    @inlinable
    public func replica(for key: [UInt8], in campus: Campus) -> NodeID {
        replica(forPosition: XXH64.hash(key), in: campus)
    }

    /// The replica in `campus` of the key whose ring position is `position`.
    @inlinable
    public func replica(forPosition position: UInt64, in campus: Campus) -> NodeID {
        switch campus {
        case .a: ringA.owner(ofHash: position)
        case .b: ringB.owner(ofHash: position)
        case .c: ringC.owner(ofHash: position)
        }
    }
}
