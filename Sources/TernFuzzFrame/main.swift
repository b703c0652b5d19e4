import Foundation
import TernFuzzMutate

// Fuzz entry point for the peer-frame decoder and the handshake handler (see FrameFuzzer).
//
//   scripts/fuzz-frame 300        build with -sanitize=fuzzer and fuzz for 300 s
//   swift run TernFuzzFrame FILE|DIR...   replay inputs (a crash found by the fuzzer, the corpus)
//
// The libFuzzer build is compiled with -DTERN_LIBFUZZER; a plain build only replays files, so the
// target builds and runs with the rest of the package.

#if TERN_LIBFUZZER
    @_cdecl("LLVMFuzzerTestOneInput")
    public func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
        FrameFuzzer.run(UnsafeRawBufferPointer(start: data, count: size))
        return 0
    }

    @_silgen_name("LLVMFuzzerRunDriver")
    func LLVMFuzzerRunDriver(
        _ argc: UnsafeMutablePointer<CInt>,
        _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
        _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt
    ) -> CInt

    _ = FrameFuzzer.transport
    var argc = CommandLine.argc
    var argv = CommandLine.unsafeArgv
    exit(LLVMFuzzerRunDriver(&argc, &argv, fuzzOneInput))
#else
    let arguments = Array(CommandLine.arguments.dropFirst())
    if arguments.first == "--mutate", arguments.count >= 4, let seconds = Double(arguments[1]),
        let seed = UInt64(arguments[2])
    {
        // Bounded plain fuzzing (CI): mutations of the corpus for `seconds`.
        _ = FrameFuzzer.transport
        let corpus = arguments[3...].flatMap { readCorpus($0) }
        // Frame kinds 0...5 and lengths are what the decoder reads first.
        let tokens: [[UInt8]] =
            (0...6).map { [$0] } + [[0, 0, 0, 0], [0xff, 0xff, 0xff, 0xff], [0, 1, 0, 0]]
        let n = fuzzForSeconds(
            seconds, corpus: corpus, tokens: tokens, seed: seed, crashFile: ".build/fuzz-crash-frame",
            check: FrameFuzzer.run)
        print("ok: \(n) mutated inputs (seed \(seed), \(corpus.count) corpus files): no crash")
        exit(0)
    }
    if arguments.isEmpty || arguments.contains("--help") {
        print(
            "usage: TernFuzzFrame FILE|DIR...   (replays fuzz inputs; scripts/fuzz-frame fuzzes)\n"
                + "       TernFuzzFrame --mutate SECONDS SEED DIR...  (plain mutational fuzzing; a crash"
                + " leaves its input in .build/fuzz-crash-frame)")
        exit(arguments.isEmpty ? 2 : 0)
    }
    let (inputs, missing) = readInputs(arguments)
    if let missing {
        FileHandle.standardError.write(Data("no such file: \(missing)\n".utf8))
        exit(2)
    }
    for input in inputs { input.withUnsafeBytes { FrameFuzzer.run($0) } }
    print("replayed \(inputs.count) inputs: no crash")
#endif
