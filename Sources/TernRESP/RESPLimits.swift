/// Bounds the decoders enforce, so that no input can make them allocate or buffer more than this.
///
/// Two limits apply to bulk strings: a bulk longer than ``maxBulkBytes`` (the largest value the
/// server accepts) but no longer than ``maxDiscardBytes`` is read and thrown away as it arrives,
/// and its command is delivered with ``RESPCommand/oversized`` set, so the server can answer an
/// error and keep the connection. A bulk longer than ``maxDiscardBytes`` is a protocol error.
public struct RESPLimits: Sendable, Hashable {
    /// Largest bulk string kept (a value limit; configurable). Default 1 MiB.
    public var maxBulkBytes: Int
    /// Largest bulk string the command decoder skips instead of closing the connection. Default 512 MiB
    /// (Redis's own `proto-max-bulk-len`).
    public var maxDiscardBytes: Int
    /// Most arguments in one command, and most elements in one reply aggregate. Default 1 Mi.
    public var maxArgs: Int
    /// Longest inline command line (`GET key\r\n` typed into telnet). Default 64 KiB.
    public var maxInlineBytes: Int
    /// Most argument bytes kept for one command; further arguments are discarded like oversized
    /// bulks and the command is marked oversized. Default 64 MiB.
    public var maxCommandBytes: Int
    /// Deepest nesting of aggregates in a reply (value decoder only). Default 64.
    public var maxDepth: Int

    public init(
        maxBulkBytes: Int = 1 << 20, maxDiscardBytes: Int = 512 << 20, maxArgs: Int = 1 << 20,
        maxInlineBytes: Int = 64 << 10, maxCommandBytes: Int = 64 << 20, maxDepth: Int = 64
    ) {
        precondition(
            maxBulkBytes >= 0 && maxDiscardBytes >= maxBulkBytes,
            "RESPLimits: 0 <= maxBulkBytes <= maxDiscardBytes")
        precondition(
            maxArgs >= 1 && maxInlineBytes >= 1 && maxCommandBytes >= 0 && maxDepth >= 1,
            "RESPLimits: positive bounds")
        self.maxBulkBytes = maxBulkBytes
        self.maxDiscardBytes = maxDiscardBytes
        self.maxArgs = maxArgs
        self.maxInlineBytes = maxInlineBytes
        self.maxCommandBytes = maxCommandBytes
        self.maxDepth = maxDepth
    }

    /// Limits for a client reading replies: it keeps every bulk up to ``maxDiscardBytes``
    /// (512 MiB), since a reply it cannot read would leave it nothing to do but disconnect.
    public static let client = RESPLimits(maxBulkBytes: 512 << 20, maxArgs: 1 << 24)
}

/// Malformed input: the connection cannot be trusted to be in sync any more.
///
/// The server answers `-ERR Protocol error: <description>` and closes the connection; a client
/// fails every pending request and closes.
public struct RESPProtocolError: Error, CustomStringConvertible, Hashable, Sendable {
    /// What was wrong, in Redis's words where Redis has some (e.g. "invalid bulk length").
    public var message: String
    /// Offset of the offending byte from the start of the frame being decoded, when known.
    public var offset: Int?

    public init(_ message: String, offset: Int? = nil) {
        self.message = message
        self.offset = offset
    }

    public var description: String { message }
}
