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

/// A deterministic pseudo-random generator (SplitMix64), injected wherever the core needs chance.
///
/// The core never touches system randomness: the simulator seeds one of these per node so that a
/// seed replays byte for byte. The benchmarks, the demo and the tests use the same generator.
public struct SplitMix64: RandomNumberGenerator, Sendable, Hashable {
    public var state: UInt64
    public init(seed: UInt64) { self.state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    /// A value in `0..<bound` (bound > 0).
    public mutating func below(_ bound: UInt64) -> UInt64 {
        precondition(bound > 0, "below(0)")
        return next() % bound
    }
    /// True with probability `p`.
    public mutating func chance(_ p: Double) -> Bool {
        if p <= 0 { return false }
        return Double(next() >> 11) / Double(1 << 53) < p
    }
}
