import NIOCore
import NIOEmbedded
import Testing

@testable import TernRESP

@Suite struct ValueDecoderTests {
    func decode(_ text: String, limits: RESPLimits = .client) throws -> [RESPValue] {
        let (values, leftover) = try RESPValueDecoder.decodeAll(bytes(text), limits: limits)
        #expect(leftover == 0)
        return values
    }

    func error(_ text: String, limits: RESPLimits = .client) -> String? {
        do {
            _ = try RESPValueDecoder.decodeAll(bytes(text), limits: limits)
            return nil
        } catch let error as RESPProtocolError {
            return error.message
        } catch {
            return "unexpected \(error)"
        }
    }

    @Test func resp3Types() throws {
        let got = try decode(
            "(3492890328409238509324850943850943825024385\r\n!21\r\nSYNTAX invalid syntax\r\n"
                + "=15\r\nmkd:Some string\r\n|1\r\n+key-popularity\r\n%1\r\n$1\r\na\r\n,0.19\r\n:2\r\n"
                + ",1.5E3\r\n,-inf\r\n,+inf\r\n#t\r\n_\r\n")
        #expect(
            got == [
                .simpleString("3492890328409238509324850943850943825024385"), .error("SYNTAX invalid syntax"),
                .verbatim("Some string"), .integer(2), .double(1500), .double(-.infinity), .double(.infinity),
                .boolean(true), .null,
            ])
        #expect(
            try decode(",nan\r\n").first.map { if case .double(let d) = $0 { d.isNaN } else { false } }
                == true)
    }

    @Test func nullsAndEmpties() throws {
        #expect(
            try decode("$-1\r\n*-1\r\n_\r\n$0\r\n\r\n*0\r\n%0\r\n~0\r\n>0\r\n") == [
                .bulkString(nil), .array(nil), .null, .bulkString([]), .array([]), .map([]), .set([]),
                .push([]),
            ])
    }

    @Test func everySplitPointOfAPipelinedReplyStream() throws {
        var stream: [UInt8] = []
        var expected: [RESPValue] = []
        for (value, v3, _) in EncoderTests.cases where value.description != ",nan" {
            stream += bytes(v3)
            expected.append(EncoderTests.normalisedV3(value))
        }
        for cut in 0...stream.count {
            var decoder = RESPValueDecoder()
            var buffer = ByteBuffer(bytes: stream[0..<cut])
            var got: [RESPValue] = []
            while let value = try decoder.decode(buffer: &buffer) { got.append(value) }
            buffer.writeBytes(stream[cut...])
            while let value = try decoder.decode(buffer: &buffer) { got.append(value) }
            #expect(got == expected, "cut at \(cut)")
        }
    }

    @Test func byteByByteThroughAnEmbeddedChannel() throws {
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(RESPValueDecoder()))
        let text = "*2\r\n$3\r\nfoo\r\n%1\r\n+a\r\n~1\r\n:1\r\n>2\r\n+x\r\n_\r\n"
        for byte in bytes(text) { try channel.writeInbound(ByteBuffer(bytes: [byte])) }
        #expect(
            try channel.readInbound(as: RESPValue.self)
                == .array([
                    .bulkString(bytes("foo")), .map([.simpleString("a"), .set([.integer(1)])]),
                ]))
        #expect(try channel.readInbound(as: RESPValue.self) == .push([.simpleString("x"), .null]))
        #expect(try channel.finish().isClean)
    }

    @Test(
        arguments: [
            ("?\r\n", "unknown reply type '?'"),
            ("\u{0}", "unknown reply type '\\x00'"),
            ("$-2\r\n", "invalid bulk length -2"),
            ("$99999999999999999999\r\n", "invalid length"),
            ("$1\r\nabc", "expected CRLF after bulk string"),
            ("*-2\r\n", "invalid aggregate length -2"),
            ("~-1\r\n", "invalid aggregate length -1"),
            ("*16777217\r\n", "invalid aggregate length 16777217"),
            (":12a\r\n", "invalid integer"),
            (":\r\n", "invalid integer"),
            (":1\rx", "expected CRLF"),
            ("+OK\nx", "LF without CR"),
            ("_x\r\n", "invalid null"),
            ("#x\r\n", "invalid boolean"),
            ("=3\r\ntxt\r\n", "verbatim string without a format"),
            ("$?\r\n", "streamed aggregates and strings are not supported"),
            (",abc\r\n", "invalid double 'abc'"),
            (",0x10\r\n", "invalid double '0x10'"),
            (",infinity\r\n", "invalid double 'infinity'"),
        ] as [(String, String)])
    func malformed(_ input: String, _ message: String) {
        #expect(error(input) == message, "\(input.debugDescription)")
    }

    @Test func deepNestingIsAnErrorNotAStackOverflow() {
        let bomb = String(repeating: "*1\r\n", count: 100_000) + ":1\r\n"
        #expect(error(bomb) == "replies nested deeper than 64")
        #expect(error(String(repeating: "|1\r\n", count: 100_000)) == "replies nested deeper than 64")
        #expect(error(String(repeating: "*1\r\n", count: 63) + ":1\r\n") == nil)
    }

    @Test func claimedSizesAreNotAllocatedBeforeTheBytesArrive() throws {
        var decoder = RESPValueDecoder()
        let text = "*16777216\r\n:1\r\n$536870912\r\nab"
        var buffer = ByteBuffer(string: text)
        #expect(try decoder.decode(buffer: &buffer) == nil)
        #expect(buffer.readableBytes == text.utf8.count)  // nothing consumed until the whole reply is there
    }

    @Test func limitsApply() {
        let small = RESPLimits(maxBulkBytes: 4, maxArgs: 2, maxInlineBytes: 8)
        #expect(error("$5\r\nhello\r\n", limits: small) == "invalid bulk length 5")
        #expect(error("*3\r\n", limits: small) == "invalid aggregate length 3")
        #expect(error("%2\r\n", limits: small) == nil)  // 2 pairs: counted as 2, incomplete
        #expect(error("+123456789\r\n", limits: small) == "line longer than 8 bytes")
    }

    @Test func scannerReportsKindsAndLengths() throws {
        func frame(_ text: String) throws -> RESPReplyScanner.Frame? {
            var scanner = RESPReplyScanner()
            return try scanner.scan(ByteBuffer(string: text))
        }
        #expect(
            try frame("-ERR x\r\n+OK\r\n") == .init(length: 8, isError: true, isNull: false, isPush: false))
        #expect(try frame("!3\r\nERR\r\n") == .init(length: 9, isError: true, isNull: false, isPush: false))
        #expect(try frame("$-1\r\n") == .init(length: 5, isError: false, isNull: true, isPush: false))
        #expect(try frame("*-1\r\n") == .init(length: 5, isError: false, isNull: true, isPush: false))
        #expect(try frame("_\r\n") == .init(length: 3, isError: false, isNull: true, isPush: false))
        #expect(try frame(">1\r\n-x\r\n") == .init(length: 8, isError: false, isNull: false, isPush: true))
        // An attribute is not the reply: the kind is the value's that follows.
        #expect(
            try frame("|1\r\n+a\r\n+b\r\n-ERR\r\n")
                == .init(length: 18, isError: true, isNull: false, isPush: false))
        #expect(try frame("*2\r\n-ERR\r\n") == nil)
    }

    @Test func scannerResumesAcrossChunks() throws {
        let text = bytes("*3\r\n*2\r\n:1\r\n$3\r\nabc\r\n%1\r\n+k\r\n_\r\n-E\r\n+next\r\n")
        var scanner = RESPReplyScanner()
        var buffer = ByteBuffer()
        var frame: RESPReplyScanner.Frame?
        for byte in text {
            buffer.writeInteger(byte)
            if let found = try scanner.scan(buffer) {
                frame = found
                break
            }
        }
        #expect(frame == .init(length: text.count - 7, isError: false, isNull: false, isPush: false))
        #expect(scanner.offset == 0 && scanner.open == [1])  // reset for the next reply
    }
}
