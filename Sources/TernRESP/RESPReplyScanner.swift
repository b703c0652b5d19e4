import NIOCore

/// Finds where the next complete RESP2/RESP3 reply ends, without building it.
///
/// The scanner checks the framing of every element (type bytes, lengths, CRLFs, integer
/// syntax, nesting depth, limits) and reports the reply's length and whether it is an error or a
/// null. ``RESPValueDecoder`` uses it to know a reply is complete before materialising it; the
/// load generator uses it alone, to count replies without allocating.
///
/// It resumes where it stopped: after it returned `nil` (incomplete), call it again with the same
/// buffer once more bytes were appended; its cost over a whole reply is linear in the reply's size
/// however the bytes were split. After it returns a ``Frame``, the caller moves the buffer's reader
/// index past `length` before scanning again. Call ``reset()`` before scanning a different buffer.
public struct RESPReplyScanner: Sendable {
    /// A complete reply at the start of the readable bytes.
    public struct Frame: Sendable, Hashable {
        /// Bytes the reply takes, from the buffer's reader index.
        public var length: Int
        /// The reply is an error (`-` or `!`).
        public var isError: Bool
        /// The reply is a null (`_`, `$-1` or `*-1`).
        public var isNull: Bool
        /// The reply is a RESP3 push frame (`>`).
        public var isPush: Bool
    }

    public let limits: RESPLimits
    /// Offset (from the reader index) of the first element not yet scanned.
    var offset = 0
    /// Elements still expected at each open nesting level; the bottom entry is the reply itself.
    var open: [Int] = [1]
    var topType: UInt8 = 0
    var topIsNull = false

    public init(limits: RESPLimits = .client) {
        self.limits = limits
    }

    /// Forgets any partial progress.
    public mutating func reset() {
        offset = 0
        open = [1]
        topType = 0
        topIsNull = false
    }

    /// The next reply's frame, or `nil` if its bytes have not all arrived.
    /// - Throws: ``RESPProtocolError`` if the bytes are not a well-formed reply within the limits.
    public mutating func scan(_ buffer: ByteBuffer) throws -> Frame? {
        try buffer.withUnsafeReadableBytes { bytes in try scan(bytes) }
    }

    /// As ``scan(_:)-(ByteBuffer)``, over raw bytes starting at the reply.
    public mutating func scan(_ bytes: UnsafeRawBufferPointer) throws -> Frame? {
        while let remaining = open.last {
            if remaining == 0 {
                open.removeLast()
                continue
            }
            guard offset < bytes.count else { return nil }
            let type = bytes[offset]
            let atTop = open.count == 1
            switch type {
            case UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: "("), UInt8(ascii: ","):
                guard let end = try lineEnd(bytes, from: offset + 1, max: limits.maxInlineBytes) else {
                    return nil
                }
                offset = end
                elementDone(type, atTop: atTop, isNull: false)
            case UInt8(ascii: ":"):
                guard let end = try lineEnd(bytes, from: offset + 1, max: RESPCommandDecoder.maxHeaderDigits)
                else {
                    return nil
                }
                guard RESPCommandDecoder.parseInteger(bytes[(offset + 1)..<(end - 2)]) != nil else {
                    throw RESPProtocolError("invalid integer", offset: offset)
                }
                offset = end
                elementDone(type, atTop: atTop, isNull: false)
            case UInt8(ascii: "_"):
                guard offset + 3 <= bytes.count else { return nil }
                guard bytes[offset + 1] == 0x0D && bytes[offset + 2] == 0x0A else {
                    throw RESPProtocolError("invalid null", offset: offset)
                }
                offset += 3
                elementDone(type, atTop: atTop, isNull: true)
            case UInt8(ascii: "#"):
                guard offset + 4 <= bytes.count else { return nil }
                let value = bytes[offset + 1]
                guard value == UInt8(ascii: "t") || value == UInt8(ascii: "f"), bytes[offset + 2] == 0x0D,
                    bytes[offset + 3] == 0x0A
                else { throw RESPProtocolError("invalid boolean", offset: offset) }
                offset += 4
                elementDone(type, atTop: atTop, isNull: false)
            case UInt8(ascii: "$"), UInt8(ascii: "!"), UInt8(ascii: "="):
                guard let (length, headerEnd) = try header(bytes) else { return nil }
                if length == -1 && type == UInt8(ascii: "$") {
                    offset = headerEnd
                    elementDone(type, atTop: atTop, isNull: true)
                    continue
                }
                guard length >= 0 && length <= limits.maxBulkBytes else {
                    throw RESPProtocolError("invalid bulk length \(length)", offset: offset)
                }
                if type == UInt8(ascii: "=") && length < 4 {
                    throw RESPProtocolError("verbatim string without a format", offset: offset)
                }
                guard headerEnd + length + 2 <= bytes.count else { return nil }
                guard bytes[headerEnd + length] == 0x0D && bytes[headerEnd + length + 1] == 0x0A else {
                    throw RESPProtocolError("expected CRLF after bulk string", offset: headerEnd + length)
                }
                offset = headerEnd + length + 2
                elementDone(type, atTop: atTop, isNull: false)
            case UInt8(ascii: "*"), UInt8(ascii: "~"), UInt8(ascii: ">"), UInt8(ascii: "%"),
                UInt8(ascii: "|"):
                guard let (count, headerEnd) = try header(bytes) else { return nil }
                if count == -1 && type == UInt8(ascii: "*") {
                    offset = headerEnd
                    elementDone(type, atTop: atTop, isNull: true)
                    continue
                }
                guard count >= 0 && count <= limits.maxArgs else {
                    throw RESPProtocolError("invalid aggregate length \(count)", offset: offset)
                }
                guard open.count < limits.maxDepth else {
                    throw RESPProtocolError("replies nested deeper than \(limits.maxDepth)", offset: offset)
                }
                offset = headerEnd
                let elements = type == UInt8(ascii: "%") || type == UInt8(ascii: "|") ? count * 2 : count
                if type != UInt8(ascii: "|") {
                    // An attribute does not count as an element: the value it describes follows it.
                    elementDone(type, atTop: atTop, isNull: false)
                }
                open.append(elements)
            default:
                throw RESPProtocolError(
                    "unknown reply type '\(RESPCommandDecoder.printable(type))'", offset: offset)
            }
        }
        let frame = Frame(
            length: offset, isError: topType == UInt8(ascii: "-") || topType == UInt8(ascii: "!"),
            isNull: topIsNull, isPush: topType == UInt8(ascii: ">"))
        reset()
        return frame
    }

    mutating func elementDone(_ type: UInt8, atTop: Bool, isNull: Bool) {
        open[open.count - 1] -= 1
        if atTop {
            topType = type
            topIsNull = isNull
        }
    }

    /// Offset just past the CRLF ending the line that starts at `from`; nil if not arrived yet.
    func lineEnd(_ bytes: UnsafeRawBufferPointer, from: Int, max: Int) throws -> Int? {
        var i = from
        let limit = Swift.min(bytes.count, from + max + 1)
        while i < limit {
            if bytes[i] == 0x0D {
                guard i + 1 < bytes.count else { return nil }
                guard bytes[i + 1] == 0x0A else { throw RESPProtocolError("expected CRLF", offset: i) }
                return i + 2
            }
            if bytes[i] == 0x0A { throw RESPProtocolError("LF without CR", offset: i) }
            i += 1
        }
        if bytes.count > from + max { throw RESPProtocolError("line longer than \(max) bytes", offset: from) }
        return nil
    }

    /// The integer of a `<type><integer>\r\n` header at `offset`, and the offset after it.
    func header(_ bytes: UnsafeRawBufferPointer) throws -> (Int, Int)? {
        guard let end = try lineEnd(bytes, from: offset + 1, max: RESPCommandDecoder.maxHeaderDigits) else {
            return nil
        }
        guard let value = RESPCommandDecoder.parseInteger(bytes[(offset + 1)..<(end - 2)]) else {
            if end - offset == 4 && bytes[offset + 1] == UInt8(ascii: "?") {
                throw RESPProtocolError("streamed aggregates and strings are not supported", offset: offset)
            }
            throw RESPProtocolError("invalid length", offset: offset)
        }
        return (Int(value), end)
    }
}
