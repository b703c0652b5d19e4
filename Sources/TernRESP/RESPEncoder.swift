import NIOCore

/// Writes ``RESPValue``s and commands in RESP2 or RESP3 wire format.
///
/// The encoder never fails: every value has a RESP2 stand-in (see ``RESPValue``), and text that
/// cannot appear in a simple string or error (CR, LF) is replaced by spaces.
public enum RESPEncoder {
    /// Appends `value`, encoded for `version`, to `buffer`.
    public static func encode(_ value: RESPValue, version: RESPVersion, into buffer: inout ByteBuffer) {
        switch value {
        case .simpleString(let text):
            writeLine(UInt8(ascii: "+"), text, into: &buffer)
        case .error(let text):
            writeLine(UInt8(ascii: "-"), text, into: &buffer)
        case .integer(let n):
            buffer.writeInteger(UInt8(ascii: ":"))
            writeDecimal(n, into: &buffer)
            writeCRLF(into: &buffer)
        case .bulkString(let bytes?):
            writeBulk(bytes, into: &buffer)
        case .bulkString(nil):
            writeNull(version: version, into: &buffer, v2: "$-1\r\n")
        case .array(let values?):
            writeAggregate(UInt8(ascii: "*"), values, count: values.count, version: version, into: &buffer)
        case .array(nil):
            writeNull(version: version, into: &buffer, v2: "*-1\r\n")
        case .null:
            writeNull(version: version, into: &buffer, v2: "$-1\r\n")
        case .double(let d):
            let text = format(d)
            switch version {
            case .v3: writeLine(UInt8(ascii: ","), text, into: &buffer)
            case .v2: writeBulk(Array(text.utf8), into: &buffer)
            }
        case .boolean(let b):
            switch version {
            case .v3: buffer.writeStaticString(b ? "#t\r\n" : "#f\r\n")
            case .v2: buffer.writeStaticString(b ? ":1\r\n" : ":0\r\n")
            }
        case .map(let values):
            precondition(
                values.count % 2 == 0, "RESPValue.map needs key, value pairs: \(values.count) elements")
            let type = version == .v3 ? UInt8(ascii: "%") : UInt8(ascii: "*")
            let count = version == .v3 ? values.count / 2 : values.count
            writeAggregate(type, values, count: count, version: version, into: &buffer)
        case .set(let values):
            let type = version == .v3 ? UInt8(ascii: "~") : UInt8(ascii: "*")
            writeAggregate(type, values, count: values.count, version: version, into: &buffer)
        case .push(let values):
            let type = version == .v3 ? UInt8(ascii: ">") : UInt8(ascii: "*")
            writeAggregate(type, values, count: values.count, version: version, into: &buffer)
        case .verbatim(let text):
            switch version {
            case .v3:
                buffer.writeInteger(UInt8(ascii: "="))
                writeDecimal(Int64(text.utf8.count + 4), into: &buffer)
                buffer.writeStaticString("\r\ntxt:")
                buffer.writeString(text)
                writeCRLF(into: &buffer)
            case .v2:
                writeBulk(Array(text.utf8), into: &buffer)
            }
        }
    }

    /// Appends a command (`*n` then one bulk string per argument), the form every client sends.
    public static func encodeCommand(_ args: [[UInt8]], into buffer: inout ByteBuffer) {
        buffer.writeInteger(UInt8(ascii: "*"))
        writeDecimal(Int64(args.count), into: &buffer)
        writeCRLF(into: &buffer)
        for arg in args { writeBulk(arg, into: &buffer) }
    }

    /// Appends a command given as text arguments (UTF-8).
    public static func encodeCommand(_ args: [String], into buffer: inout ByteBuffer) {
        buffer.writeInteger(UInt8(ascii: "*"))
        writeDecimal(Int64(args.count), into: &buffer)
        writeCRLF(into: &buffer)
        for arg in args {
            buffer.writeInteger(UInt8(ascii: "$"))
            writeDecimal(Int64(arg.utf8.count), into: &buffer)
            writeCRLF(into: &buffer)
            buffer.writeString(arg)
            writeCRLF(into: &buffer)
        }
    }

    /// The text of a double as RESP3 writes it: `inf`, `-inf`, `nan`, an integral value without a
    /// fraction (`3`), otherwise Swift's shortest representation that reads back exactly (`1.5`,
    /// `1e+20`).
    public static func format(_ d: Double) -> String {
        if d.isNaN { return "nan" }
        if d.isInfinite { return d < 0 ? "-inf" : "inf" }
        if d == d.rounded(.towardZero) && abs(d) < 1e15 {
            // -0.0 prints as "-0" so that it reads back with its sign.
            return d.sign == .minus && d == 0 ? "-0" : String(Int64(d))
        }
        return d.description
    }

    // MARK: - Pieces

    /// Appends `$len\r\n bytes \r\n`.
    @inlinable
    public static func writeBulk(_ bytes: [UInt8], into buffer: inout ByteBuffer) {
        buffer.writeInteger(UInt8(ascii: "$"))
        writeDecimal(Int64(bytes.count), into: &buffer)
        writeCRLF(into: &buffer)
        buffer.writeBytes(bytes)
        writeCRLF(into: &buffer)
    }

    /// Appends the ASCII decimal digits of `n` (with a leading `-` if negative), allocating nothing.
    @inlinable
    public static func writeDecimal(_ n: Int64, into buffer: inout ByteBuffer) {
        if n >= 0 && n < 10 {
            buffer.writeInteger(UInt8(ascii: "0") &+ UInt8(truncatingIfNeeded: n))
            return
        }
        // |Int64.min| does not fit in Int64: work on the magnitude as UInt64.
        var magnitude = n.magnitude
        var digits = 0
        var probe = magnitude
        repeat {
            digits += 1
            probe /= 10
        } while probe > 0
        let total = digits + (n < 0 ? 1 : 0)
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: total) { raw in
            var index = total - 1
            repeat {
                raw[index] = UInt8(ascii: "0") &+ UInt8(truncatingIfNeeded: magnitude % 10)
                magnitude /= 10
                index -= 1
            } while magnitude > 0
            if n < 0 { raw[0] = UInt8(ascii: "-") }
            return total
        }
    }

    @inlinable
    static func writeCRLF(into buffer: inout ByteBuffer) {
        buffer.writeInteger(UInt16(0x0D0A))  // big-endian: '\r' then '\n'
    }

    static func writeNull(version: RESPVersion, into buffer: inout ByteBuffer, v2: StaticString) {
        switch version {
        case .v3: buffer.writeStaticString("_\r\n")
        case .v2: buffer.writeStaticString(v2)
        }
    }

    /// `type text \r\n`, with CR and LF in `text` replaced by spaces.
    static func writeLine(_ type: UInt8, _ text: String, into buffer: inout ByteBuffer) {
        buffer.writeInteger(type)
        let utf8 = text.utf8
        if utf8.contains(where: { $0 == 0x0D || $0 == 0x0A }) {
            buffer.writeBytes(utf8.map { $0 == 0x0D || $0 == 0x0A ? UInt8(ascii: " ") : $0 })
        } else {
            buffer.writeString(text)
        }
        writeCRLF(into: &buffer)
    }

    static func writeAggregate(
        _ type: UInt8, _ values: [RESPValue], count: Int, version: RESPVersion, into buffer: inout ByteBuffer
    ) {
        buffer.writeInteger(type)
        writeDecimal(Int64(count), into: &buffer)
        writeCRLF(into: &buffer)
        for value in values { encode(value, version: version, into: &buffer) }
    }
}
