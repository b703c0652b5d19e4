import NIOCore
import Testing

@testable import TernRESP

@Suite struct EncoderTests {
    /// (value, RESP3 bytes, RESP2 bytes): every case, byte for byte.
    static let cases: [(RESPValue, String, String)] = [
        (.simpleString("OK"), "+OK\r\n", "+OK\r\n"),
        (.simpleString(""), "+\r\n", "+\r\n"),
        (.simpleString("a\r\nb\nc"), "+a  b c\r\n", "+a  b c\r\n"),  // CR/LF cannot desync the stream
        (.error("ERR wrong\ntype"), "-ERR wrong type\r\n", "-ERR wrong type\r\n"),
        (.integer(0), ":0\r\n", ":0\r\n"),
        (.integer(7), ":7\r\n", ":7\r\n"),
        (.integer(-42), ":-42\r\n", ":-42\r\n"),
        (.integer(1_234_567_890), ":1234567890\r\n", ":1234567890\r\n"),
        (.integer(.max), ":9223372036854775807\r\n", ":9223372036854775807\r\n"),
        (.integer(.min), ":-9223372036854775808\r\n", ":-9223372036854775808\r\n"),
        (.bulkString(bytes("hello")), "$5\r\nhello\r\n", "$5\r\nhello\r\n"),
        (.bulkString([]), "$0\r\n\r\n", "$0\r\n\r\n"),
        (.bulkString(bytes("a\r\nb")), "$4\r\na\r\nb\r\n", "$4\r\na\r\nb\r\n"),
        (.bulkString(nil), "_\r\n", "$-1\r\n"),
        (.array([]), "*0\r\n", "*0\r\n"),
        (.array(nil), "_\r\n", "*-1\r\n"),
        (
            .array([.integer(1), .bulkString(bytes("x")), .null, .array([.simpleString("in")])]),
            "*4\r\n:1\r\n$1\r\nx\r\n_\r\n*1\r\n+in\r\n",
            "*4\r\n:1\r\n$1\r\nx\r\n$-1\r\n*1\r\n+in\r\n"
        ),
        (.null, "_\r\n", "$-1\r\n"),
        (.double(1.5), ",1.5\r\n", "$3\r\n1.5\r\n"),
        (.double(3), ",3\r\n", "$1\r\n3\r\n"),
        (.double(-0.25), ",-0.25\r\n", "$5\r\n-0.25\r\n"),
        (.double(-0.0), ",-0\r\n", "$2\r\n-0\r\n"),
        (.double(1e20), ",1e+20\r\n", "$5\r\n1e+20\r\n"),
        (.double(0.1), ",0.1\r\n", "$3\r\n0.1\r\n"),
        (.double(.infinity), ",inf\r\n", "$3\r\ninf\r\n"),
        (.double(-.infinity), ",-inf\r\n", "$4\r\n-inf\r\n"),
        (.double(.nan), ",nan\r\n", "$3\r\nnan\r\n"),
        (.boolean(true), "#t\r\n", ":1\r\n"),
        (.boolean(false), "#f\r\n", ":0\r\n"),
        (
            .map([.simpleString("server"), .bulkString(bytes("tern")), .simpleString("proto"), .integer(3)]),
            "%2\r\n+server\r\n$4\r\ntern\r\n+proto\r\n:3\r\n",
            "*4\r\n+server\r\n$4\r\ntern\r\n+proto\r\n:3\r\n"
        ),
        (.map([]), "%0\r\n", "*0\r\n"),
        (.set([.integer(1), .integer(2)]), "~2\r\n:1\r\n:2\r\n", "*2\r\n:1\r\n:2\r\n"),
        (
            .push([.bulkString(bytes("message")), .bulkString(bytes("ch")), .bulkString(bytes("hi"))]),
            ">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nhi\r\n",
            "*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nhi\r\n"
        ),
        (.verbatim("Some text"), "=13\r\ntxt:Some text\r\n", "$9\r\nSome text\r\n"),
        (.verbatim(""), "=4\r\ntxt:\r\n", "$0\r\n\r\n"),
        (
            .map([.simpleString("m"), .map([.integer(1), .boolean(true)])]),
            "%1\r\n+m\r\n%1\r\n:1\r\n#t\r\n",
            "*2\r\n+m\r\n*2\r\n:1\r\n:1\r\n"
        ),
    ]

    @Test func everyCaseByteExactInRESP3() {
        for (value, v3, _) in Self.cases {
            #expect(encoded(value, .v3) == v3, "\(value)")
        }
    }

    @Test func everyCaseByteExactInRESP2() {
        for (value, _, v2) in Self.cases {
            #expect(encoded(value, .v2) == v2, "\(value)")
        }
    }

    @Test func commands() {
        var buffer = ByteBuffer()
        RESPEncoder.encodeCommand([bytes("SET"), bytes("k"), []], into: &buffer)
        RESPEncoder.encodeCommand(["GET", "ключ"], into: &buffer)
        #expect(
            String(buffer: buffer)
                == "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n*2\r\n$3\r\nGET\r\n$8\r\nключ\r\n")
    }

    @Test(arguments: [0, 1, 9, 10, 99, 100, 12345, -1, -9, -10, Int64.max, Int64.min, Int64.min + 1])
    func decimal(_ n: Int64) {
        var buffer = ByteBuffer()
        RESPEncoder.writeDecimal(n, into: &buffer)
        #expect(String(buffer: buffer) == String(n))
    }

    @Test func everyEncodedCaseDecodesBack() throws {
        for (value, v3, v2) in Self.cases {
            let (got3, left3) = try RESPValueDecoder.decodeAll(bytes(v3))
            let (got2, left2) = try RESPValueDecoder.decodeAll(bytes(v2))
            #expect(left3 == 0 && left2 == 0)
            // Text with CR/LF was rewritten; NaN is not equal to itself: compare those through text.
            #expect(got3.map(\.description) == [Self.normalisedV3(value).description], "\(value)")
            #expect(got2.map(\.description) == [Self.asRESP2(value).description], "\(value)")
        }
    }

    /// What RESP3 gives back: the same value, but text with CR/LF rewritten, and nil bulk/array as null.
    static func normalisedV3(_ value: RESPValue) -> RESPValue {
        switch value {
        case .simpleString(let s): .simpleString(withoutLineBreaks(s))
        case .error(let s): .error(withoutLineBreaks(s))
        case .bulkString(nil), .array(nil): .null
        case .array(let a?): .array(a.map(normalisedV3))
        case .map(let a): .map(a.map(normalisedV3))
        case .set(let a): .set(a.map(normalisedV3))
        case .push(let a): .push(a.map(normalisedV3))
        default: value
        }
    }

    /// CR and LF replaced by spaces, per scalar ("\r\n" is one Character in Swift).
    static func withoutLineBreaks(_ s: String) -> String {
        var scalars = String.UnicodeScalarView()
        for scalar in s.unicodeScalars { scalars.append(scalar == "\r" || scalar == "\n" ? " " : scalar) }
        return String(scalars)
    }

    /// The RESP2 stand-in of each value, as a RESP2 client reads it.
    static func asRESP2(_ value: RESPValue) -> RESPValue {
        switch value {
        case .simpleString, .error: normalisedV3(value)
        case .null: .bulkString(nil)
        case .double(let d): .bulkString(bytes(RESPEncoder.format(d)))
        case .boolean(let b): .integer(b ? 1 : 0)
        case .array(let a?): .array(a.map(asRESP2))
        case .map(let a), .set(let a), .push(let a): .array(a.map(asRESP2))
        case .verbatim(let s): .bulkString(bytes(s))
        default: value
        }
    }
}
