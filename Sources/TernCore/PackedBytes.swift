/// Many byte strings in one buffer: one allocation for a whole batch instead of one array per
/// string. The repair scanner's batched reads (`Bitcask.get(many:prefix:into:)`) and its record
/// lists carry a bucket's records this way (docs/REPAIR.md, "What a copied key costs").
public struct PackedBytes: Sendable, Equatable {
    /// Where one string lies in `buffer`: `start` and `length`, or a negative `length` for a
    /// string that is not there (`absent`, `damaged`: the caller's meaning).
    public struct Span: Sendable, Hashable {
        public var start: Int
        public var length: Int
        public init(start: Int, length: Int) {
            self.start = start
            self.length = length
        }
        /// No string: absent.
        public static let absent = Span(start: 0, length: -1)
        /// No string: damaged.
        public static let damaged = Span(start: 0, length: -2)
        public var isPresent: Bool { length >= 0 }
        public var range: Range<Int> { start..<start + max(length, 0) }
    }

    /// The strings' bytes, one after another (in no particular order).
    public var buffer: [UInt8]
    /// One span per string, in the caller's order.
    public var spans: [Span]

    public init(buffer: [UInt8] = [], spans: [Span] = []) {
        self.buffer = buffer
        self.spans = spans
    }

    /// The number of strings.
    public var count: Int { spans.count }

    /// Appends a string (copied into the buffer).
    public mutating func append(_ bytes: UnsafeRawBufferPointer) {
        spans.append(Span(start: buffer.count, length: bytes.count))
        buffer.append(contentsOf: bytes)
    }

    /// Appends a string.
    public mutating func append(_ bytes: [UInt8]) {
        spans.append(Span(start: buffer.count, length: bytes.count))
        buffer.append(contentsOf: bytes)
    }

    /// Appends a missing string (`Span.absent` or `Span.damaged`).
    public mutating func appendMissing(_ span: Span) {
        precondition(!span.isPresent)
        spans.append(span)
    }

    /// String `i` as a slice of the buffer, nil when it is missing.
    public subscript(i: Int) -> ArraySlice<UInt8>? {
        let s = spans[i]
        return s.isPresent ? buffer[s.range] : nil
    }

    /// Calls `body` with the bytes of string `i` (borrowed), or with nil when it is missing.
    public func withBytes<R>(_ i: Int, _ body: (UnsafeRawBufferPointer?) throws -> R) rethrows -> R {
        let s = spans[i]
        guard s.isPresent else { return try body(nil) }
        return try buffer.withUnsafeBytes { try body(UnsafeRawBufferPointer(rebasing: $0[s.range])) }
    }
}
