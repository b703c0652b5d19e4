// Fuzz entry point for TernRESP's decoders.
//
// Built by scripts/fuzz-resp with `-sanitize=fuzzer,address -DFUZZING`, it hands control to
// libFuzzer. Built normally (as `swift build` does), it replays files instead:
// `TernFuzzRESP FILE|DIR…` runs every input through the same checks, so a crash file that
// libFuzzer wrote can be replayed in the debugger or a debug build.
//
// Checks, for every input (first byte chooses how the rest is split into chunks):
// 1. The command decoder gives the same commands and the same error whether the bytes arrive
//    whole or in chunks, and every command obeys the limits.
// 2. The same for the reply decoder.
// 3. Every decoded reply re-encodes in RESP3 to bytes that decode to a reply encoding to the very
//    same bytes (the encoder and decoder agree), and encodes in RESP2 to exactly one reply.
// Any trap (precondition, overflow, out-of-bounds access caught by ASan) is a finding.

import NIOCore
import TernFuzzMutate
import TernRESP

#if canImport(Glibc)
    import Glibc
#endif

/// Small limits, so that short inputs reach every limit check.
let limits = RESPLimits(
    maxBulkBytes: 16, maxDiscardBytes: 64, maxArgs: 8, maxInlineBytes: 32, maxCommandBytes: 40, maxDepth: 8)

/// What a decoder made of a stream: the messages, then the error that stopped it (if any).
struct Outcome<Message: Equatable>: Equatable {
    var messages: [Message] = []
    var error: String?
}

func chunked<D: NIOSingleStepByteToMessageDecoder>(
    _ decoder: D, _ bytes: ArraySlice<UInt8>, chunk: Int
) -> Outcome<D.InboundOut> where D.InboundOut: Equatable {
    var decoder = decoder
    var outcome = Outcome<D.InboundOut>()
    var buffer = ByteBuffer()
    var start = bytes.startIndex
    do {
        while start < bytes.endIndex {
            let end = min(start + chunk, bytes.endIndex)
            buffer.writeBytes(bytes[start..<end])
            start = end
            while let message = try decoder.decode(buffer: &buffer) { outcome.messages.append(message) }
            buffer.discardReadBytes()
        }
        while let message = try decoder.decodeLast(buffer: &buffer, seenEOF: true) {
            outcome.messages.append(message)
        }
    } catch let error as RESPProtocolError {
        outcome.error = error.message
    } catch {
        fatalError("decoder threw a foreign error: \(error)")
    }
    return outcome
}

func encode(_ value: RESPValue, _ version: RESPVersion) -> [UInt8] {
    var buffer = ByteBuffer()
    RESPEncoder.encode(value, version: version, into: &buffer)
    return Array(buffer.readableBytesView)
}

func check(_ input: UnsafeRawBufferPointer) {
    guard let first = input.first else { return }
    let bytes = Array(input)[1...]
    let chunk = Int(first % 13) + 1

    let commands = chunked(RESPCommandDecoder(limits: limits), bytes, chunk: bytes.count + 1)
    let commandsChunked = chunked(RESPCommandDecoder(limits: limits), bytes, chunk: chunk)
    precondition(
        commands == commandsChunked, "command decoder depends on the split: \(commands) vs \(commandsChunked)"
    )
    for command in commands.messages {
        precondition(!command.args.isEmpty && command.args.count <= limits.maxArgs, "argument count")
        precondition(command.args.allSatisfy { $0.count <= limits.maxBulkBytes }, "argument above the limit")
        precondition(
            command.args.reduce(0) { $0 + $1.count } <= limits.maxCommandBytes, "command above the limit")
    }

    let replies = chunked(RESPValueDecoder(limits: limits), bytes, chunk: bytes.count + 1)
    let repliesChunked = chunked(RESPValueDecoder(limits: limits), bytes, chunk: chunk)
    // NaN is not equal to itself: compare through the encoding, which spells it `nan`.
    precondition(
        replies.messages.map { encode($0, .v3) } == repliesChunked.messages.map { encode($0, .v3) }
            && replies.error == repliesChunked.error,
        "reply decoder depends on the split")

    let roomy = RESPLimits.client
    for value in replies.messages {
        let once = encode(value, .v3)
        guard case let (again, 0) = try! RESPValueDecoder.decodeAll(once, limits: roomy), again.count == 1
        else {
            preconditionFailure("RESP3 re-encoding of \(value) does not decode to one value")
        }
        precondition(encode(again[0], .v3) == once, "RESP3 encoding is not stable for \(value)")
        guard case let (v2, 0) = try! RESPValueDecoder.decodeAll(encode(value, .v2), limits: roomy),
            v2.count == 1
        else {
            preconditionFailure("RESP2 encoding of \(value) does not decode to one value")
        }
    }
}

#if FUZZING
    @_cdecl("LLVMFuzzerTestOneInput")
    public func fuzzTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
        check(UnsafeRawBufferPointer(start: data, count: size))
        return 0
    }

    @_silgen_name("LLVMFuzzerRunDriver")
    func LLVMFuzzerRunDriver(
        _ argc: UnsafeMutablePointer<Int32>,
        _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
        _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> Int32
    ) -> Int32

    var argc = CommandLine.argc
    var argv = CommandLine.unsafeArgv
    exit(LLVMFuzzerRunDriver(&argc, &argv, fuzzTestOneInput))
#else
    let arguments = Array(CommandLine.arguments.dropFirst())
    if arguments.first == "--mutate", arguments.count >= 4, let seconds = Double(arguments[1]),
        let seed = UInt64(arguments[2])
    {
        // Bounded plain fuzzing (CI): mutations of the corpus for `seconds`.
        let corpus = arguments[3...].flatMap { readCorpus($0) }
        let tokens = [
            "\r\n", "*", "$", "+", "-", ":", "%", "~", "|", "(", ",", "#", "_", ">", "=", "!", "-1", "\"",
            "$1\r\na\r\n", "$3\r\nSET\r\n", "*1\r\n", "*9\r\n", "*0\r\n", "$-1\r\n", "$17\r\n", "$16\r\n",
            ":1\r\n",
        ]
        .map { Array($0.utf8) }
        let crashFile = ".build/fuzz-crash-resp"
        let n = fuzzForSeconds(
            seconds, corpus: corpus, tokens: tokens, seed: seed, crashFile: crashFile, check: check)
        print("ok: \(n) mutated inputs (seed \(seed), \(corpus.count) corpus files) passed every check")
        exit(0)
    }
    if arguments.isEmpty {
        print(
            "usage: TernFuzzRESP FILE|DIR...  (replays inputs; scripts/fuzz-resp builds the fuzzer)\n"
                + "       TernFuzzRESP --mutate SECONDS SEED DIR...  (plain mutational fuzzing; a crash leaves"
                + " its input in .build/fuzz-crash-resp)")
        exit(2)
    }
    // Replays files (or every file of directories) through the checks.
    let (inputs, missing) = readInputs(arguments)
    if let missing {
        print("cannot read \(missing)")
        exit(2)
    }
    for input in inputs { input.withUnsafeBytes { check($0) } }
    print("ok: \(inputs.count) inputs passed every check")
#endif
