/// The vocabulary of histories: what clients asked a key-value store and what they observed.
///
/// The simulator (TernSim) and the real-cluster tests record their histories in these types;
/// `checkLinearizable` (and `tern check` over a JSON-lines file) decides whether some sequential
/// order of the operations, consistent with their real-time order, explains every observed result.

/// What a client asked of one key. Values are strings (histories are test artefacts; tests use
/// printable values). A key that does not exist reads as `nil`.
public enum OperationInput: Sendable, Hashable {
    /// Read the key's value.
    case get
    /// Set the key's value.
    case put(String)
    /// Remove the key.
    case delete
    /// Set the key to `new` only if its value is `expected` (`nil` = the key must not exist).
    case cas(expected: String?, new: String)
    /// Add `delta` to the key's value read as a decimal integer (absent = 0); returns the sum.
    case incr(Int64)
}

/// What the client observed.
public enum OperationOutput: Sendable, Hashable {
    /// A `get`'s result (`nil` = the key did not exist).
    case value(String?)
    /// A `put` or `delete` was acknowledged.
    case ok
    /// A `cas` answered: `true` if it swapped.
    case swapped(Bool)
    /// An `incr` answered with the new value.
    case number(Int64)
    /// The operation certainly did not take effect (e.g. it was refused before any replica
    /// accepted it). The checker ignores it.
    case failed
    /// The client does not know whether the operation took effect (timeout, lost connection,
    /// "no quorum" after an accept may have reached a replica). It may have happened at any time
    /// after its call, or never.
    case unknown
}

/// One operation of a history.
public struct HistoryOperation: Sendable, Hashable {
    /// Which client issued it (a client has at most one operation in flight).
    public var client: Int
    /// The key it touched; histories are checked key by key (P-compositionality).
    public var key: String
    /// What the client asked.
    public var input: OperationInput
    /// What the client observed.
    public var output: OperationOutput
    /// When the client invoked it, in any monotonic unit shared by the whole history.
    public var call: UInt64
    /// When the client received the answer; `nil` when the outcome is `unknown` (treated as
    /// "after every other event").
    public var ret: UInt64?

    /// Creates an operation; see the properties for each field's meaning.
    public init(
        client: Int, key: String, input: OperationInput, output: OperationOutput, call: UInt64,
        ret: UInt64?
    ) {
        self.client = client
        self.key = key
        self.input = input
        self.output = output
        self.call = call
        self.ret = ret
    }
}
