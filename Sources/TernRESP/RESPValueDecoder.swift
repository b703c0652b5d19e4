import NIOCore

/// Client side: turns a server's bytes into ``RESPValue``s, RESP2 and RESP3 alike (push frames
/// included).
///
/// Each reply is first framed by a ``RESPReplyScanner`` (linear in its size however the bytes are
/// split, no allocation until it is complete), then built. Mapping of RESP3 types the enum has no
/// case for: a big number `(` becomes a `simpleString` of its digits; a blob error `!` an `error`;
/// a verbatim string `=` drops its three-letter format; attributes `|` are read and dropped (the
/// value they describe is returned). Streamed strings and aggregates (`$?`, `*?`) are rejected:
/// no server sends them.
public struct RESPValueDecoder: NIOSingleStepByteToMessageDecoder {
    public typealias InboundOut = RESPValue

    var scanner: RESPReplyScanner

    public init(limits: RESPLimits = .client) {
        self.scanner = RESPReplyScanner(limits: limits)
    }

    public mutating func decode(buffer: inout ByteBuffer) throws -> RESPValue? {
        guard let frame = try scanner.scan(buffer) else { return nil }
        let value = try buffer.withUnsafeReadableBytes { bytes in
            var builder = Builder(bytes: UnsafeRawBufferPointer(rebasing: bytes[0..<frame.length]))
            let value = try builder.value()
            guard builder.offset == frame.length else { throw RESPProtocolError("reply length mismatch") }
            return value
        }
        buffer.moveReaderIndex(forwardBy: frame.length)
        return value
    }

    public mutating func decodeLast(buffer: inout ByteBuffer, seenEOF: Bool) throws -> RESPValue? {
        if let value = try decode(buffer: &buffer) { return value }
        // A reply cut short by the end of the stream is dropped; the client fails what it waited for.
        buffer.moveReaderIndex(to: buffer.writerIndex)
        scanner.reset()
        return nil
    }

    /// Decodes every complete reply in `bytes` (a test and tool convenience).
    public static func decodeAll(_ bytes: [UInt8], limits: RESPLimits = .client) throws -> (
        values: [RESPValue], leftover: Int
    ) {
        var decoder = RESPValueDecoder(limits: limits)
        var buffer = ByteBuffer(bytes: bytes)
        var values: [RESPValue] = []
        while let value = try decoder.decode(buffer: &buffer) { values.append(value) }
        return (values, buffer.readableBytes)
    }

    /// Builds values from bytes the scanner already framed (so lengths and nesting are within
    /// limits); it still checks everything it relies on and throws rather than trap.
    struct Builder {
        let bytes: UnsafeRawBufferPointer
        var offset = 0

        init(bytes: UnsafeRawBufferPointer) {
            self.bytes = bytes
        }

        mutating func line() throws -> ArraySlice<UInt8> {
            var i = offset + 1
            while i + 1 < bytes.count && !(bytes[i] == 0x0D && bytes[i + 1] == 0x0A) { i += 1 }
            guard i + 1 < bytes.count else { throw RESPProtocolError("truncated line") }
            let text = ArraySlice(bytes[(offset + 1)..<i])
            offset = i + 2
            return text
        }

        mutating func integer() throws -> Int {
            let text = try line()
            guard let value = RESPCommandDecoder.parseInteger(text) else {
                throw RESPProtocolError("invalid integer")
            }
            return Int(value)
        }

        mutating func blob(_ length: Int) throws -> [UInt8] {
            guard length >= 0, offset + length + 2 <= bytes.count else {
                throw RESPProtocolError("truncated bulk")
            }
            let blob = Array(bytes[offset..<(offset + length)])
            offset += length + 2
            return blob
        }

        mutating func elements(_ count: Int) throws -> [RESPValue] {
            guard count >= 0 else { throw RESPProtocolError("invalid aggregate length") }
            var values: [RESPValue] = []
            // The scanner proved every element is present, so reserving `count` is safe here.
            values.reserveCapacity(count)
            for _ in 0..<count { values.append(try value()) }
            return values
        }

        mutating func value() throws -> RESPValue {
            guard offset < bytes.count else { throw RESPProtocolError("truncated reply") }
            let type = bytes[offset]
            switch type {
            case UInt8(ascii: "+"): return .simpleString(String(decoding: try line(), as: UTF8.self))
            case UInt8(ascii: "-"): return .error(String(decoding: try line(), as: UTF8.self))
            case UInt8(ascii: ":"): return .integer(Int64(try integer()))
            case UInt8(ascii: "("): return .simpleString(String(decoding: try line(), as: UTF8.self))
            case UInt8(ascii: ","):
                let text = String(decoding: try line(), as: UTF8.self)
                guard let d = Self.parseDouble(text) else {
                    throw RESPProtocolError("invalid double '\(text)'")
                }
                return .double(d)
            case UInt8(ascii: "_"):
                offset += 3
                return .null
            case UInt8(ascii: "#"):
                let text = try line()
                return .boolean(text.first == UInt8(ascii: "t"))
            case UInt8(ascii: "$"):
                let length = try integer()
                if length == -1 { return .bulkString(nil) }
                return .bulkString(try blob(length))
            case UInt8(ascii: "!"):
                return .error(String(decoding: try blob(try integer()), as: UTF8.self))
            case UInt8(ascii: "="):
                let text = try blob(try integer())
                guard text.count >= 4 else { throw RESPProtocolError("verbatim string without a format") }
                return .verbatim(String(decoding: text[4...], as: UTF8.self))
            case UInt8(ascii: "*"):
                let count = try integer()
                if count == -1 { return .array(nil) }
                return .array(try elements(count))
            case UInt8(ascii: "~"): return .set(try elements(try integer()))
            case UInt8(ascii: ">"): return .push(try elements(try integer()))
            case UInt8(ascii: "%"): return .map(try elements(try integer() * 2))
            case UInt8(ascii: "|"):
                _ = try elements(try integer() * 2)
                return try value()
            default:
                throw RESPProtocolError("unknown reply type '\(RESPCommandDecoder.printable(type))'")
            }
        }

        /// RESP3 doubles: `inf`, `-inf`, `nan` and decimal text (Swift's parser, which also takes
        /// exponents).
        static func parseDouble(_ text: String) -> Double? {
            switch text.lowercased() {
            case "inf", "+inf": return .infinity
            case "-inf": return -.infinity
            case "nan", "-nan": return .nan
            default:
                // Swift's parser also accepts hexadecimal and "infinity"; RESP does not.
                guard !text.isEmpty,
                    text.utf8.allSatisfy({ b in
                        (b >= UInt8(ascii: "0") && b <= UInt8(ascii: "9")) || b == UInt8(ascii: "-")
                            || b == UInt8(ascii: "+") || b == UInt8(ascii: ".") || b == UInt8(ascii: "e")
                            || b == UInt8(ascii: "E")
                    })
                else { return nil }
                return Double(text)
            }
        }
    }
}
