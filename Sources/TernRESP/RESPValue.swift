/// Which dialect of the Redis protocol a connection speaks.
///
/// A connection starts in RESP2; `HELLO 3` switches it to RESP3. The encoder maps every RESP3-only
/// type to its RESP2 stand-in under `.v2` (see ``RESPValue``), so a server can build one reply
/// and encode it for either dialect.
public enum RESPVersion: Sendable, Hashable {
    case v2
    case v3
}

/// One RESP value: a command's reply, or a frame a client receives.
///
/// How each case is written under each version (``RESPEncoder``):
///
/// | case | RESP3 | RESP2 |
/// | --- | --- | --- |
/// | `simpleString` | `+text` | `+text` |
/// | `error` | `-text` | `-text` |
/// | `integer` | `:n` | `:n` |
/// | `bulkString(bytes)` / `bulkString(nil)` | `$len` bytes / `_` | `$len` bytes / `$-1` |
/// | `array(values)` / `array(nil)` | `*n` … / `_` | `*n` … / `*-1` |
/// | `null` | `_` | `$-1` |
/// | `double` | `,1.5` (`inf`, `-inf`, `nan`) | bulk string of the same text |
/// | `boolean` | `#t` / `#f` | `:1` / `:0` |
/// | `map(k, v, k, v …)` | `%pairs` … | `*2·pairs` … |
/// | `set` | `~n` … | `*n` … |
/// | `push` | `>n` … | `*n` … |
/// | `verbatim(text)` | `=len` `txt:text` | bulk string of the text |
///
/// Simple strings and errors cannot carry CR or LF on the wire; the encoder replaces each by a
/// space so a careless message can never desynchronise the stream.
public indirect enum RESPValue: Sendable, Hashable {
    /// `+OK`: a short status text without CR or LF.
    case simpleString(String)
    /// `-ERR …`: an error reply. A server's error is a value, not a failure of the connection.
    case error(String)
    /// `:42`: a signed 64-bit integer.
    case integer(Int64)
    /// `$3\r\nabc`: binary-safe bytes; `nil` is RESP2's null bulk string `$-1`.
    case bulkString([UInt8]?)
    /// `*2 …`: an ordered list; `nil` is RESP2's null array `*-1`.
    case array([RESPValue]?)
    /// RESP3 null `_`; written as `$-1` under RESP2.
    case null
    /// RESP3 double `,`; a bulk string under RESP2.
    case double(Double)
    /// RESP3 boolean `#`; the integer 1 or 0 under RESP2.
    case boolean(Bool)
    /// RESP3 map, flattened as key, value, key, value…; an array under RESP2.
    /// An odd number of elements is a programming error (the encoder stops the process).
    case map([RESPValue])
    /// RESP3 set `~`; an array under RESP2.
    case set([RESPValue])
    /// RESP3 out-of-band push `>` (pub/sub messages, notices); an array under RESP2.
    case push([RESPValue])
    /// RESP3 verbatim string `=` (format `txt`); a bulk string under RESP2.
    case verbatim(String)
}

extension RESPValue {
    /// A bulk string holding the UTF-8 bytes of `text`.
    public static func bulkString(_ text: String) -> RESPValue {
        .bulkString(Array(text.utf8))
    }

    /// `+OK`, the usual success reply.
    public static let ok = RESPValue.simpleString("OK")

    /// The text of a string-like reply (simple, bulk or verbatim string, or error), decoded as
    /// UTF-8 with invalid bytes replaced; `nil` for other cases and for null bulk strings.
    public var string: String? {
        switch self {
        case .simpleString(let text), .error(let text), .verbatim(let text): text
        case .bulkString(let bytes?): String(decoding: bytes, as: UTF8.self)
        default: nil
        }
    }

    /// The bytes of a bulk string, or the UTF-8 bytes of a simple or verbatim string.
    public var bytes: [UInt8]? {
        switch self {
        case .bulkString(let bytes): bytes
        case .simpleString(let text), .verbatim(let text): Array(text.utf8)
        default: nil
        }
    }

    /// Whether this is any kind of null: `null`, `bulkString(nil)` or `array(nil)`.
    public var isNull: Bool {
        switch self {
        case .null, .bulkString(nil), .array(nil): true
        default: false
        }
    }
}

extension RESPValue: CustomStringConvertible {
    /// A readable rendering for logs and test failures (not a wire format).
    public var description: String {
        switch self {
        case .simpleString(let text): return "+\(text)"
        case .error(let text): return "-\(text)"
        case .integer(let n): return ":\(n)"
        case .bulkString(nil), .array(nil), .null: return "(nil)"
        case .bulkString(let bytes?):
            if let text = String(validating: bytes, as: UTF8.self) { return "\"\(text)\"" }
            return "<\(bytes.count) bytes>"
        case .array(let values?): return "[" + values.map(\.description).joined(separator: ", ") + "]"
        case .double(let d): return ",\(RESPEncoder.format(d))"
        case .boolean(let b): return b ? "#t" : "#f"
        case .map(let values): return "%{" + values.map(\.description).joined(separator: ", ") + "}"
        case .set(let values): return "~{" + values.map(\.description).joined(separator: ", ") + "}"
        case .push(let values): return ">[" + values.map(\.description).joined(separator: ", ") + "]"
        case .verbatim(let text): return "=\(text)"
        }
    }
}
