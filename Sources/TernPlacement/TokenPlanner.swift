import TernCore

/// Offline token planning: `tern ring plan` and `tern ring plan --add`.
///
/// A fresh campus of N nodes with T tokens each gets M = N·T evenly spaced positions,
/// `floor((3k + c) · 2^64 / 3M)` for k in 0..<M and campus index c (0, 1, 2), dealt round-robin:
/// position k goes to the campus's node k mod N. Every arc between neighbouring positions has the
/// same length (±1), and every node owns exactly T of them, so every node owns 1/N of its campus's
/// ring up to 2^-64-sized rounding. The per-campus offset c/3M keeps the campuses' tokens apart.
/// Adding a node takes an equal fraction (1/(N+1)) of every old node's share; see
/// `adding(_:to:)`.
public enum TokenPlanner {
    /// The ports a planned node listens on: node index i (0-based, in id order) gets client port
    /// `base + i`, peer port `base + 100 + i` and admin port `base + 200 + i`, all on 127.0.0.1.
    /// So at most 100 nodes per plan; the default base 7379 makes the first node's client port the
    /// one `redis-cli -p 7379` expects.
    public struct AddressScheme: Sendable, Hashable {
        /// The first node's client port.
        public var basePort: Int
        /// How far apart the client, peer and admin port ranges are (and so the most nodes).
        public static let stride = 100

        /// A scheme starting at `basePort`.
        public init(basePort: Int = 7379) { self.basePort = basePort }

        /// (peer, client, admin) addresses of the node with 0-based `index`.
        public func addresses(index: Int) -> (peer: String, client: String, admin: String) {
            (
                "127.0.0.1:\(basePort + Self.stride + index)", "127.0.0.1:\(basePort + index)",
                "127.0.0.1:\(basePort + 2 * Self.stride + index)"
            )
        }
    }

    /// Why a plan was refused.
    public struct PlanError: Error, Sendable, Hashable, CustomStringConvertible {
        /// What is wrong, for a human.
        public var message: String
        /// An error explained by `message`.
        public init(_ message: String) { self.message = message }
        /// The message.
        public var description: String { message }
    }

    /// A range of ring positions that changes owner: (`start`, `end`] moves `from` → `to`.
    public struct Move: Sendable, Hashable, CustomStringConvertible {
        /// The range's exclusive lower end (the previous token of the campus).
        public var start: UInt64
        /// The range's inclusive upper end (the new token).
        public var end: UInt64
        /// The node that held the range.
        public var from: NodeID
        /// The node that holds it now.
        public var to: NodeID

        /// The number of ring positions in the range.
        public var length: UInt64 { end &- start }

        /// True when `position` is in (`start`, `end`] (the range may wrap past 2^64-1).
        public func contains(_ position: UInt64) -> Bool { position &- start &- 1 < length }

        /// "(0x…, 0x…] n1 -> n4 (4.167% of the campus ring)".
        public var description: String {
            let thousandths = (Double(length) / 18_446_744_073_709_551_616.0 * 100_000).rounded()
            let percent = "\(Int(thousandths) / 1000).\(String(Int(thousandths) % 1000 + 1000).dropFirst())%"
            return
                "(\(Token.format(start)), \(Token.format(end))] \(from) -> \(to) (\(percent) of the campus ring)"
        }
    }

    /// A new map with `nodesPerCampus[c]` nodes in campus c and `tokensPerNode` tokens each.
    ///
    /// Node ids are 1, 2, … in campus order (A's nodes first); addresses follow `scheme`.
    /// Deterministic: the same arguments always give the same map.
    public static func plan(
        name: String, nodesPerCampus: [Campus: Int], tokensPerNode: Int, scheme: AddressScheme = .init()
    ) throws -> ClusterMap {
        guard tokensPerNode >= 1, tokensPerNode <= 4096 else {
            throw PlanError("tokens per node must be in 1...4096, not \(tokensPerNode)")
        }
        let counts = Campus.allCases.map { nodesPerCampus[$0] ?? 0 }
        for (campus, count) in zip(Campus.allCases, counts) where count < 1 {
            throw PlanError("campus \(campus) needs at least one node (got \(count))")
        }
        let total = counts.reduce(0, +)
        guard total <= AddressScheme.stride else {
            throw PlanError("at most \(AddressScheme.stride) nodes per plan, not \(total)")
        }
        guard scheme.basePort >= 1, scheme.basePort + 2 * AddressScheme.stride + total - 1 <= 65535 else {
            throw PlanError("base port \(scheme.basePort) leaves no room for \(total) nodes' ports")
        }
        var used: Set<UInt64> = []
        var nodes: [NodeEntry] = []
        for (campus, count) in zip(Campus.allCases, counts) {
            let tokens = evenTokens(
                nodes: count, tokensPerNode: tokensPerNode, campus: campus, avoiding: &used)
            for nodeTokens in tokens {
                let index = nodes.count
                let address = scheme.addresses(index: index)
                nodes.append(
                    NodeEntry(
                        id: NodeID(UInt32(index + 1)), campus: campus, peerAddress: address.peer,
                        clientAddress: address.client, adminAddress: address.admin, tokens: nodeTokens))
            }
        }
        return try ClusterMap(name: name, version: 1, nodes: nodes)
    }

    /// The tokens of each of `nodes` nodes of `campus`: evenly spaced, dealt round-robin. A
    /// position already in `used` (another campus's token) is nudged up by one; `used` gains the
    /// result.
    static func evenTokens(nodes: Int, tokensPerNode: Int, campus: Campus, avoiding used: inout Set<UInt64>)
        -> [[UInt64]]
    {
        let positions = UInt64(nodes * tokensPerNode)
        let divisor = 3 * positions
        var result = Array(repeating: [UInt64](), count: nodes)
        for k in 0..<positions {
            let numerator = 3 * k + UInt64(campus.rawValue)
            var token = divisor.dividingFullWidth((high: numerator, low: 0)).quotient
            while !used.insert(token).inserted { token &+= 1 }
            result[Int(k % UInt64(nodes))].append(token)
        }
        return result
    }

    /// Each node's share of its campus's ring, in [0, 1]; the shares of one campus sum to 1.
    public static func shares(of map: ClusterMap) -> [NodeID: Double] {
        var shares: [NodeID: Double] = [:]
        for campus in Campus.allCases {
            for arc in arcs(of: map, in: campus) {
                shares[arc.owner, default: 0] += arc.fraction
            }
        }
        return shares
    }

    /// One arc of a campus ring: positions (`start`, `end`], owned by `owner`.
    struct Arc {
        var start: UInt64
        var end: UInt64
        var owner: NodeID
        /// The arc's length; a campus with a single token has one arc, the whole ring, of length
        /// 2^64, which does not fit a UInt64 and is reported as `UInt64.max`.
        var length: UInt64 { start == end ? .max : end &- start }
        var fraction: Double { start == end ? 1 : Double(end &- start) / 18_446_744_073_709_551_616.0 }
    }

    /// The arcs of `campus`, in token order; the first one wraps past the top of the ring.
    static func arcs(of map: ClusterMap, in campus: Campus) -> [Arc] {
        let pairs = map.nodes(in: campus).flatMap { node in node.tokens.map { ($0, node.id) } }
            .sorted { $0.0 < $1.0 }
        return pairs.indices.map { i in
            let previous = pairs[i == 0 ? pairs.count - 1 : i - 1].0
            return Arc(start: previous, end: pairs[i].0, owner: pairs[i].1)
        }
    }

    /// `map` with a new node of `campus`, version bumped, and the ranges that move to it.
    ///
    /// With N old nodes in the campus, every old node gives up 1/(N+1) of its share, so the new
    /// node ends with 1/(N+1) of the ring and, if the campus was balanced, it stays balanced. Each
    /// old node gives from its ⌈a/N⌉ longest arcs (a = its arc count), the same fraction of each,
    /// which keeps the new node's token count near the others'. A new token p placed inside arc
    /// (s, e] moves exactly (s, p] from that arc's owner to the new node: existing tokens never
    /// change and no other campus is touched, so no other key changes owner.
    public static func adding(_ node: NodeEntry, to map: ClusterMap) throws -> (
        map: ClusterMap, moves: [Move]
    ) {
        guard map.node(node.id) == nil else {
            throw PlanError("node \(node.id.rawValue) is already in the map")
        }
        let arcs = arcs(of: map, in: node.campus)
        let oldNodes = Set(arcs.map(\.owner)).sorted()
        let n = oldNodes.count
        var used = Set(map.nodes.flatMap(\.tokens))
        var moves: [Move] = []
        for owner in oldNodes {
            let own = arcs.filter { $0.owner == owner }
            let share = own.reduce(0.0) { $0 + Double($1.length) }
            let count = (own.count + n - 1) / n
            let chosen = own.sorted { ($0.length, $1.end) > ($1.length, $0.end) }.prefix(count)
            let chosenTotal = chosen.reduce(0.0) { $0 + Double($1.length) }
            let target = share / Double(n + 1)
            for arc in chosen.sorted(by: { $0.end < $1.end }) where arc.length >= 2 {
                let wanted = (Double(arc.length) * target / chosenTotal).rounded()
                var take = UInt64(min(max(wanted, 1), Double(arc.length - 1)))
                while take > 1 && used.contains(arc.start &+ take) { take -= 1 }
                let token = arc.start &+ take
                guard used.insert(token).inserted else { continue }
                moves.append(Move(start: arc.start, end: token, from: owner, to: node.id))
            }
        }
        guard !moves.isEmpty else { throw PlanError("campus \(node.campus) has no arc long enough to split") }
        var newNode = node
        newNode.tokens = moves.map(\.end).sorted()
        let newMap = try map.adding(newNode)
        return (newMap, moves.sorted { $0.end < $1.end })
    }
}
