import NIOCore
import NIOEmbedded
import Testing

@testable import TernRESP

@Suite struct CommandDecoderTests {
    /// A pipelined stream mixing every request form the decoder accepts.
    static let stream: [UInt8] = {
        var s = bytes("*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n")
        s += bytes("*2\r\n$3\r\nGET\r\n$0\r\n\r\n")  // empty bulk
        s += bytes("*0\r\n*-1\r\n")  // ignored, as Redis does
        s += bytes("PING\r\n")  // inline
        s += bytes("\r\n")  // blank inline line: ignored
        s += bytes("set k \"a b\\r\\n\\x41\" 'it\\'s'\n")  // inline with quotes, LF only
        // Binary, with CRLF and RESP type bytes inside.
        s += bytes("*2\r\n$4\r\nECHO\r\n$6\r\n") + [0x0D, 0x0A, 0x00, 0xFF, 0x2A, 0x24] + bytes("\r\n")
        s += bytes("*1\r\n$4\r\nQUIT\r\n")
        return s
    }()

    static let expected: [RESPCommand] = [
        RESPCommand("SET", "key", "value"),
        RESPCommand(args: [bytes("GET"), []]),
        RESPCommand("PING"),
        RESPCommand(args: [bytes("set"), bytes("k"), bytes("a b\r\nA"), bytes("it's")]),
        RESPCommand(args: [bytes("ECHO"), [0x0D, 0x0A, 0x00, 0xFF, 0x2A, 0x24]]),
        RESPCommand("QUIT"),
    ]

    @Test func wholeStream() throws {
        #expect(try decodeCommands(Self.stream) == Self.expected)
    }

    @Test func everySplitPointGivesTheSameCommands() throws {
        for cut in 0...Self.stream.count {
            #expect(try decodeCommands(Self.stream, cuts: [cut]) == Self.expected, "cut at \(cut)")
        }
    }

    @Test func everyPairOfSplitPointsGivesTheSameCommands() throws {
        let n = Self.stream.count
        for a in 0...n {
            for b in a...n {
                let got = try decodeCommands(Self.stream, cuts: [a, b])
                if got != Self.expected {
                    Issue.record("cuts \(a), \(b): \(got)")
                    return
                }
            }
        }
    }

    @Test func oneByteAtATime() throws {
        #expect(try decodeCommands(Self.stream, cuts: Array(0...Self.stream.count)) == Self.expected)
    }

    @Test func inThePipelineOfAnEmbeddedChannel() throws {
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(RESPCommandDecoder()))
        var offset = 0
        for size in [1, 7, 3, 50, 2, 1000] {
            let end = min(offset + size, Self.stream.count)
            try channel.writeInbound(ByteBuffer(bytes: Self.stream[offset..<end]))
            offset = end
        }
        var got: [RESPCommand] = []
        while let command = try channel.readInbound(as: RESPCommand.self) { got.append(command) }
        #expect(got == Self.expected)
        #expect(try channel.finish().isClean)
    }

    // MARK: inline

    @Test(
        arguments: [
            ("PING\r\n", [["PING"]]),
            ("get  key\r\n", [["get", "key"]]),
            ("\t ECHO\t\"\"  \r\n", [["ECHO", ""]]),
            ("SET k \"\\\"q\\\" \\\\ \\n\\t\\b\\a\\z\"\r\n", [["SET", "k", "\"q\" \\ \n\t\u{8}\u{7}z"]]),
            ("SET k 'a\\'b\\n'\r\n", [["SET", "k", "a'b\\n"]]),
            // A quote inside a word opens a quoted part.
            ("SET k a\"b c\" d\r\n", [["SET", "k", "ab c", "d"]]),
            ("\"\\xZZ\" '\\x41'\r\n", [["xZZ", "\\x41"]]),
            ("A\r\n\r\n\nB\n", [["A"], ["B"]]),
            ("GET k\0junk\r\nPING\r\n", [["GET", "k"], ["PING"]]),  // NUL ends a C string
        ] as [(String, [[String]])])
    func inline(_ input: String, _ expected: [[String]]) throws {
        let got = try decodeCommands(input).map { $0.args.map { String(decoding: $0, as: UTF8.self) } }
        #expect(got == expected)
    }

    @Test(arguments: ["SET k \"abc\r\n", "SET k \"abc\"d\r\n", "SET k 'abc\r\n", "SET k 'a'b\r\n"])
    func unbalancedQuotes(_ input: String) {
        #expect(commandError(input) == "unbalanced quotes in request")
    }

    @Test func inlineLineTooLong() throws {
        let limits = RESPLimits(maxInlineBytes: 16)
        #expect(
            try decodeCommands("GET 0123456789\r\n", limits: limits) == [RESPCommand("GET", "0123456789")])
        #expect(commandError("GET 0123456789abcdef\r\n", limits: limits) == "too big inline request")
        // Without its newline yet: an error as soon as it cannot fit, not after buffering more.
        #expect(throws: RESPProtocolError.self) {
            var decoder = RESPCommandDecoder(limits: limits)
            var buffer = ByteBuffer(string: "GET 0123456789abcdef")
            _ = try decoder.decode(buffer: &buffer)
        }
    }

    @Test func inlineArgumentAboveTheValueLimitIsOversized() throws {
        let got = try decodeCommands("SET k 0123456789\r\nPING\r\n", limits: RESPLimits(maxBulkBytes: 4))
        #expect(
            got == [RESPCommand(args: [bytes("SET"), bytes("k"), []], oversized: true), RESPCommand("PING")])
    }

    // MARK: malformed multibulk

    @Test(
        arguments: [
            ("*1\r\n$-1\r\n", "invalid bulk length"),  // a null bulk is not an argument
            ("*1\r\n$-2\r\n", "invalid bulk length"),
            ("*1\r\n$99999999999999999999\r\n", "invalid bulk length"),  // overflows Int64
            ("*1\r\n$9223372036854775807\r\n", "invalid bulk length"),
            ("*1\r\n$\r\n", "invalid bulk length"),
            ("*1\r\n$1x\r\n", "invalid bulk length"),
            ("*1\r\n$+1\r\n", "invalid bulk length"),
            ("*1\r\n$ 1\r\n", "invalid bulk length"),
            ("*1\r\n$--1\r\n", "invalid bulk length"),
            ("*1\r\n$1\rX", "invalid bulk length"),  // CR not followed by LF
            ("*99999999999999999999\r\n", "invalid multibulk length"),
            ("*x\r\n", "invalid multibulk length"),
            ("*\r\n", "invalid multibulk length"),
            ("*1048577\r\n", "invalid multibulk length"),  // above maxArgs
            ("*2\r\n$3\r\nGET\r\n+OK\r\n", "expected '$', got '+'"),
            ("*1\r\n:1\r\n", "expected '$', got ':'"),
            ("*1\r\n\u{1}", "expected '$', got '\\x01'"),
            ("*1\r\n$3\r\nGETxx", "expected CRLF after bulk string of 3 bytes"),
            ("*1\r\n$3\r\nGET\n\r", "expected CRLF after bulk string of 3 bytes"),
            ("*1\r\n$0\r\nab", "expected CRLF after bulk string of 0 bytes"),
            ("*111111111111111111111111111111111111\r\n", "too big mbulk count string"),
            ("*1\r\n$111111111111111111111111111111111111\r\n", "too big bulk count string"),
        ] as [(String, String)])
    func malformed(_ input: String, _ message: String) {
        #expect(commandError(input) == message, "\(input.debugDescription)")
    }

    @Test func malformedAfterValidCommandsStillDeliversThem() throws {
        var decoder = RESPCommandDecoder()
        var buffer = ByteBuffer(string: "*1\r\n$4\r\nPING\r\n*1\r\n$x\r\n")
        #expect(try decoder.decode(buffer: &buffer) == RESPCommand("PING"))
        #expect(throws: RESPProtocolError("invalid bulk length")) { try decoder.decode(buffer: &buffer) }
    }

    @Test func absurdCountsAllocateNothingUpFront() throws {
        var decoder = RESPCommandDecoder()
        var buffer = ByteBuffer(string: "*1048576\r\n$1\r\na\r\n$1000000\r\n")
        #expect(try decoder.decode(buffer: &buffer) == nil)
        #expect(decoder.args.capacity < 1000, "reserved \(decoder.args.capacity) slots for a claimed count")
        #expect(decoder.args.count == 1)
        // The claimed 1 MB bulk is not reserved either: nothing but the header was consumed.
        #expect(buffer.readableBytes == 0)
        #expect(decoder.argumentState == .data(1_000_000))
    }

    // MARK: oversized bulk strings

    static let limits8 = RESPLimits(maxBulkBytes: 8, maxDiscardBytes: 100)
    static let oversizedStream: [UInt8] =
        bytes("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$20\r\n") + Array(repeating: UInt8(ascii: "v"), count: 20)
        + bytes("\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n")

    @Test func oversizedBulkIsDiscardedAndTheStreamStaysInSync() throws {
        let expected = [
            RESPCommand(args: [bytes("SET"), bytes("k"), []], oversized: true), RESPCommand("GET", "k"),
        ]
        for cut in 0...Self.oversizedStream.count {
            #expect(try decodeCommands(Self.oversizedStream, cuts: [cut], limits: Self.limits8) == expected)
        }
        #expect(
            try decodeCommands(
                Self.oversizedStream, cuts: Array(0...Self.oversizedStream.count), limits: Self.limits8)
                == expected)
    }

    @Test func oversizedBytesAreNotBuffered() throws {
        // 64 KiB limit, one 10 MB value sent in 4 KiB chunks: the buffer never holds more than a chunk.
        let limits = RESPLimits(maxBulkBytes: 64 << 10)
        var stream = bytes("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$10000000\r\n")
        stream += [UInt8](repeating: 0x61, count: 10_000_000) + bytes("\r\n*1\r\n$4\r\nPING\r\n")
        var maxBuffered = 0
        let got = try decodeCommands(
            stream, cuts: Array(stride(from: 0, to: stream.count, by: 4096)), limits: limits,
            maxBuffered: &maxBuffered)
        #expect(
            got == [RESPCommand(args: [bytes("SET"), bytes("k"), []], oversized: true), RESPCommand("PING")])
        #expect(maxBuffered <= 4096)
    }

    @Test func bulkAboveTheDiscardLimitIsAProtocolError() {
        #expect(commandError("*1\r\n$101\r\n", limits: Self.limits8) == "invalid bulk length")
        #expect(commandError("*1\r\n$100\r\n", limits: Self.limits8) == nil)  // waits for the bytes
    }

    @Test func oversizedBulkMustStillEndWithCRLF() {
        let text = "*1\r\n$10\r\n0123456789XX"
        #expect(commandError(text, limits: Self.limits8) == "expected CRLF after bulk string")
    }

    @Test func commandByteLimitMarksTheRestOversized() throws {
        let limits = RESPLimits(maxBulkBytes: 8, maxCommandBytes: 10)
        let got = try decodeCommands(
            "*4\r\n$4\r\nMSET\r\n$1\r\nk\r\n$5\r\nvvvvv\r\n$5\r\nwwwww\r\n", limits: limits)
        #expect(got == [RESPCommand(args: [bytes("MSET"), bytes("k"), bytes("vvvvv"), []], oversized: true)])
    }

    @Test func valueOfExactlyTheLimitIsKept() throws {
        let got = try decodeCommands("*2\r\n$3\r\nSET\r\n$8\r\n01234567\r\n", limits: Self.limits8)
        #expect(got == [RESPCommand("SET", "01234567")])
    }

    @Test func commandCutByTheEndOfTheStreamIsDropped() throws {
        #expect(try decodeCommands("*1\r\n$4\r\nPING\r\n*2\r\n$3\r\nGET\r\n") == [RESPCommand("PING")])
        #expect(try decodeCommands("PING\r\nGET k") == [RESPCommand("PING")])
    }
}
