import TernCore

/// One `tern` server process as the cluster map describes it.
public struct NodeEntry: Sendable, Hashable {
    /// The node's identity; unique in the map.
    public var id: NodeID
    /// The failure domain the node lives in.
    public var campus: Campus
    /// "host:port" other nodes dial for replication traffic.
    public var peerAddress: String
    /// "host:port" Redis-protocol clients connect to.
    public var clientAddress: String
    /// "host:port" of the admin endpoint (metrics, fault switch).
    public var adminAddress: String
    /// The node's ring positions, sorted ascending. The node owns the arc that ends at each token
    /// (exclusive of the previous token of its campus, inclusive of its own).
    public var tokens: [UInt64]

    /// A node entry; `tokens` is sorted on the way in.
    public init(
        id: NodeID, campus: Campus, peerAddress: String, clientAddress: String, adminAddress: String,
        tokens: [UInt64]
    ) {
        self.id = id
        self.campus = campus
        self.peerAddress = peerAddress
        self.clientAddress = clientAddress
        self.adminAddress = adminAddress
        self.tokens = tokens.sorted()
    }
}

/// The cluster map: which nodes exist, where they listen, and which ring positions each owns.
///
/// Identical on every node, written once by `tern ring plan` and read at start-up. A value is only
/// obtained through `init(name:version:nodes:)` or `ClusterMap(toml:)`, both of which validate, so
/// code holding a `ClusterMap` may rely on its invariants: the three campuses each have at least
/// one node, node ids and addresses are unique, every node has tokens and no token appears twice
/// in the whole map.
public struct ClusterMap: Sendable, Hashable {
    /// The cluster's name, so that a node refuses a map meant for another cluster.
    public private(set) var name: String
    /// Bumped on every change; nodes keep the highest version they have seen.
    public private(set) var version: UInt64
    /// All nodes, sorted by id.
    public private(set) var nodes: [NodeEntry]
    /// How Redis keys map onto Paxos keys (`key_layout`; absent: `per-key`). Fixed when the
    /// cluster is created: a node refuses to serve a data directory written with the other
    /// layout, and nodes of the two layouts refuse each other (docs/DATA.md, "Hash-tag groups").
    public var keyLayout: KeyLayout = .perKey

    /// The three campuses, always A, B and C (DESIGN.md section 2: exactly three).
    public var campuses: [Campus] { Campus.allCases }

    /// A validated map.
    /// - Throws: `ClusterMapError` naming the first broken rule.
    public init(name: String, version: UInt64, nodes: [NodeEntry]) throws(ClusterMapError) {
        self.name = name
        self.version = version
        self.nodes = nodes.sorted { $0.id < $1.id }
        try validate()
    }

    /// The entry for `id`, if the map has such a node.
    public func node(_ id: NodeID) -> NodeEntry? { nodes.first { $0.id == id } }

    /// The nodes of `campus`, sorted by id.
    public func nodes(in campus: Campus) -> [NodeEntry] { nodes.filter { $0.campus == campus } }

    /// A copy with `node` added and the version bumped.
    /// - Throws: `ClusterMapError` when the result would not be a valid map.
    public func adding(_ node: NodeEntry) throws(ClusterMapError) -> ClusterMap {
        var next = try ClusterMap(name: name, version: version + 1, nodes: nodes + [node])
        next.keyLayout = keyLayout
        return next
    }

    /// The name peers compare in their handshake: the map's name, plus the key layout when it is
    /// not the default, so that nodes of one cluster configured with different layouts never
    /// exchange data (each would read the other's values under the wrong keys).
    public var transportName: String {
        keyLayout == .perKey ? name : name + " (" + keyLayout.rawValue + ")"
    }

    private func validate() throws(ClusterMapError) {
        if name.isEmpty { throw ClusterMapError(.emptyName, "the cluster name is empty") }
        var ids: Set<NodeID> = []
        var addresses: [String: NodeID] = [:]
        var tokenOwners: [UInt64: NodeID] = [:]
        for node in nodes {
            if !ids.insert(node.id).inserted {
                throw ClusterMapError(.duplicateNodeID, "node id \(node.id.rawValue) appears more than once")
            }
            for (what, address) in [
                ("peer", node.peerAddress), ("client", node.clientAddress), ("admin", node.adminAddress),
            ] {
                if let problem = HostPort.problem(address) {
                    throw ClusterMapError(
                        .badAddress, "node \(node.id.rawValue): \(what) address \"\(address)\" \(problem)")
                }
                if let other = addresses.updateValue(node.id, forKey: address) {
                    throw ClusterMapError(
                        .duplicateAddress,
                        "address \"\(address)\" is used twice (node \(other.rawValue) and node \(node.id.rawValue))"
                    )
                }
            }
            if node.tokens.isEmpty {
                throw ClusterMapError(.missingTokens, "node \(node.id.rawValue) has no tokens")
            }
            for token in node.tokens {
                if let other = tokenOwners.updateValue(node.id, forKey: token) {
                    throw ClusterMapError(
                        .duplicateToken,
                        "token \(Token.format(token)) appears twice (node \(other.rawValue) and node \(node.id.rawValue))"
                    )
                }
            }
        }
        for campus in Campus.allCases where !nodes.contains(where: { $0.campus == campus }) {
            throw ClusterMapError(.emptyCampus, "campus \(campus) has no node; each of A, B and C needs one")
        }
    }
}

/// Why a cluster map was refused. A struct (not an enum) so that cases can be added without
/// breaking callers; `kind` is for code, `message` names the offending node, field or value.
public struct ClusterMapError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The rule that was broken.
    public enum Kind: Sendable, Hashable {
        /// The file is not valid TOML.
        case syntax
        /// A required field is absent.
        case missingField
        /// A field has the wrong TOML type or an out-of-range value.
        case badValue
        /// A key the format does not define (likely a typo).
        case unknownField
        /// `campuses` is not exactly A, B, C, or a node names another campus.
        case badCampus
        /// One of the three campuses has no node.
        case emptyCampus
        /// The cluster name is empty.
        case emptyName
        /// Two nodes share an id.
        case duplicateNodeID
        /// An address is not "host:port" with a port in 1...65535.
        case badAddress
        /// Two addresses (of any kind, any node) are equal.
        case duplicateAddress
        /// A node has no tokens.
        case missingTokens
        /// A token is not a 64-bit hexadecimal number.
        case badToken
        /// The same token appears twice in the map.
        case duplicateToken
        /// The file could not be read or written.
        case io
    }

    /// The rule that was broken.
    public var kind: Kind
    /// A sentence for a human, naming what is wrong.
    public var message: String

    /// An error of `kind` explained by `message`.
    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    /// The message, prefixed so that it reads well in a command-line error.
    public var description: String { "invalid cluster map: \(message)" }
}

/// "host:port" address validation.
enum HostPort {
    /// Nil when `address` is a usable "host:port"; otherwise why it is not.
    static func problem(_ address: String) -> String? {
        guard let colon = address.lastIndex(of: ":") else { return "is not host:port" }
        let host = address[..<colon]
        let port = address[address.index(after: colon)...]
        if host.isEmpty { return "has no host" }
        if host.contains(where: { $0 == " " || $0 == "\t" }) { return "has a space in its host" }
        if host.contains(":") && !(host.hasPrefix("[") && host.hasSuffix("]")) {
            return "has an IPv6 host without brackets"
        }
        guard !port.isEmpty, port.allSatisfy({ $0.isASCII && $0.isNumber }), let value = Int(port),
            (1...65535).contains(value)
        else { return "has no port in 1...65535" }
        return nil
    }
}

/// Textual form of tokens in the map file.
public enum Token {
    /// `token` as "0x" and 16 hexadecimal digits: TOML integers are signed 64-bit, so tokens, which
    /// use the full unsigned range, are written as strings.
    public static func format(_ token: UInt64) -> String {
        let digits = String(token, radix: 16, uppercase: false)
        return "0x" + String(repeating: "0", count: 16 - digits.count) + digits
    }

    /// The token written as "0x" followed by 1 to 16 hexadecimal digits, or nil.
    public static func parse(_ text: String) -> UInt64? {
        guard text.hasPrefix("0x"), text.count > 2, text.count <= 18,
            text.dropFirst(2).allSatisfy(\.isHexDigit)
        else { return nil }
        return UInt64(text.dropFirst(2), radix: 16)
    }
}
