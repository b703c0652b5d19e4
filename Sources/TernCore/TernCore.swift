/// Shared vocabulary of Tern's modules: node and campus identities.
///
/// TernCore depends on nothing (no Foundation, no NIO): every other module may import it.

/// One of the three failure domains (availability zones) of a Tern cluster.
public enum Campus: UInt8, Sendable, Hashable, CaseIterable, CustomStringConvertible {
    case a = 0
    case b = 1
    case c = 2

    public var description: String {
        switch self {
        case .a: "A"
        case .b: "B"
        case .c: "C"
        }
    }
}

/// Identity of one `tern` server process; unique in a cluster map and never reused.
public struct NodeID: RawRepresentable, Sendable, Hashable, Comparable, CustomStringConvertible {
    public var rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    public init(_ rawValue: UInt32) { self.rawValue = rawValue }
    public static func < (lhs: NodeID, rhs: NodeID) -> Bool { lhs.rawValue < rhs.rawValue }
    public var description: String { "n\(rawValue)" }
}
