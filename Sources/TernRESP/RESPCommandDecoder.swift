import NIOCore

/// The bytes one connection's decoder holds (query buffer), for whoever bounds client memory.
/// Written by the decoder on the connection's event loop and read there: not thread-safe.
public final class RESPBufferMeter: @unchecked Sendable {
    public var bytes = 0
    public init() {}
}

/// One command as a client sent it: the command name and its arguments, as bytes.
public struct RESPCommand: Sendable, Hashable {
    /// `args[0]` is the command name (any case); the rest are its arguments.
    public var args: [[UInt8]]
    /// A bulk string of this command was longer than ``RESPLimits/maxBulkBytes`` (or the command's
    /// kept bytes passed ``RESPLimits/maxCommandBytes``) but within ``RESPLimits/maxDiscardBytes``:
    /// its bytes were read and thrown away, and it stands in `args` as an empty array. The server
    /// answers `-ERR value too large` and keeps the connection, which is still in sync.
    public var oversized: Bool

    public init(args: [[UInt8]], oversized: Bool = false) {
        self.args = args
        self.oversized = oversized
    }

    /// Convenience for tests and tools: a command from text arguments.
    public init(_ args: String...) {
        self.init(args: args.map { Array($0.utf8) })
    }
}

/// Server side: turns the bytes a client sends into ``RESPCommand``s.
///
/// Reads both request forms Redis accepts: multibulk (`*2\r\n$3\r\nGET\r\n$1\r\nk\r\n`, what every
/// client library sends) and inline (`GET k\r\n`, what redis-cli's pipe mode and telnet send,
/// with Redis's quoting rules). It is incremental — bytes may arrive split at any point — and
/// pipelined commands come out one per call in order.
///
/// Bounded by ``RESPLimits``: it never reserves memory for a count or length it has not yet
/// received, keeps at most ``RESPLimits/maxBulkBytes`` of any one argument, and skips oversized
/// arguments as their bytes arrive (see ``RESPCommand/oversized``). Malformed input throws
/// ``RESPProtocolError``; the decoder is then unusable, as is the connection.
///
/// Use it in a pipeline as `ByteToMessageHandler(RESPCommandDecoder(limits: limits))`.
public struct RESPCommandDecoder: NIOSingleStepByteToMessageDecoder {
    public typealias InboundOut = RESPCommand

    /// The bounds this decoder enforces.
    public let limits: RESPLimits

    /// What the decoder expects next inside a multibulk command.
    enum ArgumentState: Hashable {
        /// `$<len>\r\n`.
        case header
        /// `len` bytes of data followed by CRLF, all kept.
        case data(Int)
        /// This many bytes of an oversized bulk still to throw away, then CRLF.
        case discard(Int)
        /// The CRLF after a discarded bulk.
        case crlf
    }

    // The command under construction lives in stored properties rather than in an enum payload
    // so that appending to `args` never copies the array.
    var inMultibulk = false
    var remaining = 0
    var args: [[UInt8]] = []
    var keptBytes = 0
    var oversized = false
    var argumentState = ArgumentState.header

    /// Longest `*<count>` or `$<len>` line, type byte and CRLF excluded (a 64-bit number fits in 20).
    static let maxHeaderDigits = 32

    /// Where the bytes this connection holds are reported, if anyone counts them.
    let meter: RESPBufferMeter?

    public init(limits: RESPLimits = RESPLimits(), meter: RESPBufferMeter? = nil) {
        self.limits = limits
        self.meter = meter
    }

    public mutating func decode(buffer: inout ByteBuffer) throws -> RESPCommand? {
        let command = try decodeStep(&buffer)
        // What the connection holds for commands not yet delivered: the kept arguments of the one
        // under construction and the unread buffer's storage (its capacity: what memory it takes).
        meter?.bytes = keptBytes + (buffer.readableBytes == 0 ? 0 : buffer.capacity)
        return command
    }

    mutating func decodeStep(_ buffer: inout ByteBuffer) throws -> RESPCommand? {
        while true {
            if !inMultibulk {
                guard let first = buffer.getInteger(at: buffer.readerIndex, as: UInt8.self) else {
                    return nil
                }
                if first == UInt8(ascii: "*") {
                    guard
                        let count = try Self.readHeader(
                            &buffer, error: "invalid multibulk length", tooBig: "too big mbulk count string")
                    else { return nil }
                    guard count <= limits.maxArgs else { throw RESPProtocolError("invalid multibulk length") }
                    if count <= 0 { continue }  // `*0` and `*-1` are ignored, as Redis does
                    inMultibulk = true
                    remaining = count
                    args = []
                    args.reserveCapacity(min(count, 64))
                    keptBytes = 0
                    oversized = false
                    argumentState = .header
                } else {
                    guard let command = try readInline(&buffer) else { return nil }
                    if command.args.isEmpty { continue }  // a blank line
                    return command
                }
            }
            switch argumentState {
            case .header:
                guard let first = buffer.getInteger(at: buffer.readerIndex, as: UInt8.self) else {
                    return nil
                }
                guard first == UInt8(ascii: "$") else {
                    throw RESPProtocolError("expected '$', got '\(Self.printable(first))'")
                }
                guard
                    let length = try Self.readHeader(
                        &buffer, error: "invalid bulk length", tooBig: "too big bulk count string")
                else { return nil }
                guard length >= 0 && length <= limits.maxDiscardBytes else {
                    throw RESPProtocolError("invalid bulk length")
                }
                if length > limits.maxBulkBytes || keptBytes + length > limits.maxCommandBytes {
                    oversized = true
                    args.append([])
                    argumentState = .discard(length)
                } else {
                    argumentState = .data(length)
                }
            case .data(let length):
                guard buffer.readableBytes >= length + 2 else { return nil }
                let crlfAt = buffer.readerIndex + length
                guard buffer.getInteger(at: crlfAt, as: UInt16.self) == 0x0D0A else {
                    throw RESPProtocolError("expected CRLF after bulk string of \(length) bytes")
                }
                args.append(buffer.readBytes(length: length)!)
                buffer.moveReaderIndex(forwardBy: 2)
                keptBytes += length
                if let command = finishArgument() { return command }
            case .discard(let left):
                let n = min(left, buffer.readableBytes)
                buffer.moveReaderIndex(forwardBy: n)
                if n < left {
                    argumentState = .discard(left - n)
                    return nil
                }
                argumentState = .crlf
            case .crlf:
                guard let crlf = buffer.getInteger(at: buffer.readerIndex, as: UInt16.self) else {
                    return nil
                }
                guard crlf == 0x0D0A else { throw RESPProtocolError("expected CRLF after bulk string") }
                buffer.moveReaderIndex(forwardBy: 2)
                if let command = finishArgument() { return command }
            }
        }
    }

    public mutating func decodeLast(buffer: inout ByteBuffer, seenEOF: Bool) throws -> RESPCommand? {
        if let command = try decode(buffer: &buffer) { return command }
        // A command cut short by the end of the stream is dropped: it was never complete.
        buffer.moveReaderIndex(to: buffer.writerIndex)
        inMultibulk = false
        args = []
        keptBytes = 0
        meter?.bytes = 0
        return nil
    }

    /// One argument done: the next one's header, or the whole command.
    mutating func finishArgument() -> RESPCommand? {
        remaining -= 1
        argumentState = .header
        guard remaining == 0 else { return nil }
        inMultibulk = false
        let command = RESPCommand(args: args, oversized: oversized)
        args = []
        keptBytes = 0
        return command
    }

    /// Reads `<type><integer>\r\n` at the reader index; `nil` (nothing consumed) if the CRLF has
    /// not arrived yet.
    static func readHeader(_ buffer: inout ByteBuffer, error: String, tooBig: String) throws -> Int? {
        let view = buffer.readableBytesView
        let searchEnd = view.index(view.startIndex, offsetBy: min(view.count, maxHeaderDigits + 2))
        guard let cr = view[view.startIndex..<searchEnd].firstIndex(of: UInt8(ascii: "\r")) else {
            if view.count > maxHeaderDigits + 1 { throw RESPProtocolError(tooBig) }
            return nil
        }
        let lf = view.index(after: cr)
        guard lf < view.endIndex else { return nil }
        guard view[lf] == UInt8(ascii: "\n") else { throw RESPProtocolError(error) }
        guard let value = parseInteger(view[view.index(after: view.startIndex)..<cr]) else {
            throw RESPProtocolError(error)
        }
        buffer.moveReaderIndex(to: buffer.readerIndex + (lf - view.startIndex) + 1)
        return Int(value)
    }

    /// A decimal integer: optional `-`, then 1–19 digits, nothing else; nil on any other text or on
    /// overflow.
    static func parseInteger<C: Collection>(_ bytes: C) -> Int64? where C.Element == UInt8 {
        var iterator = bytes.makeIterator()
        guard var byte = iterator.next() else { return nil }
        let negative = byte == UInt8(ascii: "-")
        if negative {
            guard let next = iterator.next() else { return nil }
            byte = next
        }
        var value: Int64 = 0
        var digits = 0
        while true {
            guard byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") else { return nil }
            let digit = Int64(byte &- UInt8(ascii: "0"))
            let (times10, overflow1) = value.multipliedReportingOverflow(by: 10)
            let (sum, overflow2) =
                negative
                ? times10.subtractingReportingOverflow(digit) : times10.addingReportingOverflow(digit)
            guard !overflow1 && !overflow2 else { return nil }
            value = sum
            digits += 1
            guard let next = iterator.next() else { break }
            byte = next
        }
        return digits > 0 ? value : nil
    }

    static func printable(_ byte: UInt8) -> String {
        if byte >= 0x20 && byte < 0x7F { return String(UnicodeScalar(byte)) }
        let hex = String(byte, radix: 16)
        return "\\x" + (hex.count == 1 ? "0" + hex : hex)
    }

    // MARK: - Inline commands

    /// Reads one inline line (up to LF) and splits it with Redis's quoting rules.
    mutating func readInline(_ buffer: inout ByteBuffer) throws -> RESPCommand? {
        let view = buffer.readableBytesView
        let searchEnd = view.index(view.startIndex, offsetBy: min(view.count, limits.maxInlineBytes + 1))
        guard let lf = view[view.startIndex..<searchEnd].firstIndex(of: UInt8(ascii: "\n")) else {
            if view.count > limits.maxInlineBytes { throw RESPProtocolError("too big inline request") }
            return nil
        }
        var line = view[view.startIndex..<lf]
        if line.last == UInt8(ascii: "\r") { line = line.dropLast() }
        // C strings end at NUL: Redis's splitter stops there, and so does this one.
        if let nul = line.firstIndex(of: 0) { line = line[line.startIndex..<nul] }
        var split = try Self.splitInline(Array(line))
        buffer.moveReaderIndex(to: buffer.readerIndex + (lf - view.startIndex) + 1)
        guard split.count <= limits.maxArgs else { throw RESPProtocolError("invalid multibulk length") }
        var tooLarge = false
        var kept = 0
        for i in split.indices {
            if split[i].count > limits.maxBulkBytes || kept + split[i].count > limits.maxCommandBytes {
                split[i] = []
                tooLarge = true
            } else {
                kept += split[i].count
            }
        }
        return RESPCommand(args: split, oversized: tooLarge)
    }

    /// Redis's `sdssplitargs`: arguments separated by blanks; `"…"` with `\n \r \t \b \a \\ \" \xHH`
    /// escapes; `'…'` with only `\'`; a closing quote must be followed by a blank or the end.
    static func splitInline(_ line: [UInt8]) throws -> [[UInt8]] {
        func isBlank(_ b: UInt8) -> Bool {
            b == 0x20 || b == 0x09 || b == 0x0A || b == 0x0B || b == 0x0C || b == 0x0D
        }
        func hexValue(_ b: UInt8) -> UInt8? {
            switch b {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): b - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): b - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): b - UInt8(ascii: "A") + 10
            default: nil
            }
        }
        let unbalanced = RESPProtocolError("unbalanced quotes in request")
        var result: [[UInt8]] = []
        var i = 0
        let n = line.count
        while true {
            while i < n && isBlank(line[i]) { i += 1 }
            if i == n { return result }
            var current: [UInt8] = []
            var inDouble = false
            var inSingle = false
            var done = false
            while !done {
                if inDouble {
                    guard i < n else { throw unbalanced }
                    let c = line[i]
                    if c == UInt8(ascii: "\\") && i + 3 < n && line[i + 1] == UInt8(ascii: "x"),
                        let high = hexValue(line[i + 2]), let low = hexValue(line[i + 3])
                    {
                        current.append(high << 4 | low)
                        i += 3
                    } else if c == UInt8(ascii: "\\") && i + 1 < n {
                        i += 1
                        switch line[i] {
                        case UInt8(ascii: "n"): current.append(0x0A)
                        case UInt8(ascii: "r"): current.append(0x0D)
                        case UInt8(ascii: "t"): current.append(0x09)
                        case UInt8(ascii: "b"): current.append(0x08)
                        case UInt8(ascii: "a"): current.append(0x07)
                        default: current.append(line[i])
                        }
                    } else if c == UInt8(ascii: "\"") {
                        if i + 1 < n && !isBlank(line[i + 1]) { throw unbalanced }
                        done = true
                    } else {
                        current.append(c)
                    }
                } else if inSingle {
                    guard i < n else { throw unbalanced }
                    let c = line[i]
                    if c == UInt8(ascii: "\\") && i + 1 < n && line[i + 1] == UInt8(ascii: "'") {
                        i += 1
                        current.append(UInt8(ascii: "'"))
                    } else if c == UInt8(ascii: "'") {
                        if i + 1 < n && !isBlank(line[i + 1]) { throw unbalanced }
                        done = true
                    } else {
                        current.append(c)
                    }
                } else {
                    if i == n { break }
                    switch line[i] {
                    case 0x20, 0x0A, 0x0D, 0x09: done = true
                    case UInt8(ascii: "\""): inDouble = true
                    case UInt8(ascii: "'"): inSingle = true
                    default: current.append(line[i])
                    }
                }
                if i < n { i += 1 }
            }
            result.append(current)
        }
    }
}
