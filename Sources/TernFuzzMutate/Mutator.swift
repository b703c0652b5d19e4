import TernCore

#if canImport(Glibc)
    import Glibc
#endif

/// A plain mutational fuzzer for the fuzz targets' normal (non-libFuzzer) builds, so that CI can
/// fuzz for a bounded time without the sanitized build (which takes minutes to compile).
///
/// Not coverage-guided: each input is a seed-corpus entry (or a splice of two) with 1–8 random
/// edits — bit flips, random bytes, inserted tokens the format cares about, deleted, copied or
/// repeated ranges, numbers where lengths live. Deterministic: the same corpus and seed give the
/// same inputs in the same order.
/// `scripts/fuzz-resp` / `scripts/fuzz-frame` remain the deep, coverage-guided runs.
public struct Mutator {
    var random: SplitMix64
    let corpus: [[UInt8]]
    let tokens: [[UInt8]]
    /// Largest input made (the libFuzzer scripts use -max_len=4096 too).
    public var maxLength = 4096

    public init(corpus: [[UInt8]], tokens: [[UInt8]], seed: UInt64) {
        self.corpus = corpus.isEmpty ? [[0]] : corpus
        self.tokens = tokens.isEmpty ? [[0]] : tokens
        self.random = SplitMix64(seed: seed)
    }

    /// The next input.
    public mutating func next() -> [UInt8] {
        var input = pick()
        if random.chance(0.1) { input += pick() }  // splice
        for _ in 0...random.below(8) { edit(&input) }
        if input.count > maxLength { input.removeLast(input.count - maxLength) }
        return input
    }

    mutating func pick() -> [UInt8] { corpus[Int(random.below(UInt64(corpus.count)))] }

    mutating func index(_ input: [UInt8], inclusive: Bool = false) -> Int {
        Int(random.below(UInt64(input.count + (inclusive ? 1 : 0))))
    }

    mutating func edit(_ input: inout [UInt8]) {
        switch random.below(8) {
        case 0 where !input.isEmpty:
            input[index(input)] ^= UInt8(1) << random.below(8)
        case 1 where !input.isEmpty:
            input[index(input)] = UInt8(truncatingIfNeeded: random.next())
        case 2:
            let token = tokens[Int(random.below(UInt64(tokens.count)))]
            let copies = random.chance(0.25) ? 2 + Int(random.below(12)) : 1
            input.insert(
                contentsOf: Array(repeating: token, count: copies).joined(), at: index(input, inclusive: true)
            )
        case 3 where !input.isEmpty:
            let start = index(input)
            let end = min(input.count, start + 1 + Int(random.below(16)))
            input.removeSubrange(start..<end)
        case 4 where !input.isEmpty:
            let start = index(input)
            let end = min(input.count, start + 1 + Int(random.below(32)))
            input.insert(contentsOf: input[start..<end], at: index(input, inclusive: true))
        case 5:
            let n = 1 + Int(random.below(8))
            let bytes = (0..<n).map { _ in UInt8(truncatingIfNeeded: random.next()) }
            input.insert(contentsOf: bytes, at: index(input, inclusive: true))
        case 6 where !input.isEmpty:
            // A range repeated up to 16 times: how counts and lengths get something to count.
            let start = index(input)
            let end = min(input.count, start + 1 + Int(random.below(24)))
            let copies = Array(repeating: input[start..<end], count: 1 + Int(random.below(16))).joined()
            input.insert(contentsOf: copies, at: end)
        default:
            // A 32-bit big-endian or decimal number where lengths and counts live.
            let value = [0, 1, 0x7fff_ffff, 0xffff_ffff, 1 << 16, random.below(1 << 32)][Int(random.below(6))]
            let bytes: [UInt8] =
                random.chance(0.5)
                ? (0..<4).map { UInt8(truncatingIfNeeded: value >> (24 - 8 * UInt64($0))) }
                : Array(String(value).utf8)
            input.insert(contentsOf: bytes, at: index(input, inclusive: true))
        }
    }
}

/// Runs `check` on mutated inputs until `seconds` pass; returns how many ran. Before each input
/// runs, it is kept where a crash handler can write it to `crashFile` (a trap in `check` kills
/// the process: the file then holds the input that did it, ready for the target's replay mode).
public func fuzzForSeconds(
    _ seconds: Double, corpus: [[UInt8]], tokens: [[UInt8]], seed: UInt64, crashFile: String,
    check: (UnsafeRawBufferPointer) -> Void
) -> Int {
    CrashKeeper.install(path: crashFile)
    var mutator = Mutator(corpus: corpus, tokens: tokens, seed: seed)
    var start = timespec()
    clock_gettime(CLOCK_MONOTONIC, &start)
    var count = 0
    while true {
        if count % 256 == 0 {
            var now = timespec()
            clock_gettime(CLOCK_MONOTONIC, &now)
            if Double(now.tv_sec - start.tv_sec) + Double(now.tv_nsec - start.tv_nsec) / 1e9 >= seconds {
                break
            }
        }
        let input = mutator.next()
        CrashKeeper.keep(input)
        input.withUnsafeBytes { check($0) }
        count += 1
    }
    return count
}

/// Keeps the input being checked in memory that a signal handler may read, and writes it to a
/// file when the process traps (SIGILL, SIGTRAP, SIGSEGV, SIGBUS, SIGABRT), then lets it die.
enum CrashKeeper {
    static let capacity = 1 << 16
    nonisolated(unsafe) static let bytes = UnsafeMutablePointer<UInt8>.allocate(capacity: capacity)
    nonisolated(unsafe) static var count = 0
    nonisolated(unsafe) static var path: UnsafeMutablePointer<CChar>?

    static func install(path file: String) {
        path = strdup(file)
        for sig in [SIGILL, SIGTRAP, SIGSEGV, SIGBUS, SIGABRT] {
            signal(sig) { sig in
                if let path = CrashKeeper.path {
                    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
                    if fd >= 0 {
                        _ = write(fd, CrashKeeper.bytes, CrashKeeper.count)
                        close(fd)
                    }
                }
                signal(sig, SIG_DFL)
                raise(sig)
            }
        }
    }

    static func keep(_ input: [UInt8]) {
        let n = min(input.count, capacity)
        input.withUnsafeBufferPointer { bytes.update(from: $0.baseAddress!, count: n) }
        count = n
    }
}

/// The inputs named on a replay command line: each file's bytes, and every file of each directory
/// (by name). `missing` is the first path that does not exist (the caller says so and stops).
public func readInputs(_ paths: [String]) -> (inputs: [[UInt8]], missing: String?) {
    var inputs: [[UInt8]] = []
    for path in paths {
        var info = stat()
        guard stat(path, &info) == 0 else { return (inputs, path) }
        inputs += info.st_mode & S_IFMT == S_IFDIR ? readCorpus(path) : readFile(path).map { [$0] } ?? []
    }
    return (inputs, nil)
}

/// Every regular file's bytes in `directory` (sorted by name); empty if it cannot be read.
public func readCorpus(_ directory: String) -> [[UInt8]] {
    guard let dir = opendir(directory) else { return [] }
    var names: [String] = []
    while let entry = readdir(dir) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) {
            String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self)
        }
        if name != "." && name != ".." { names.append(directory + "/" + name) }
    }
    closedir(dir)
    return names.sorted().compactMap(readFile)
}

/// A file's bytes, or nil if it cannot be opened.
public func readFile(_ path: String) -> [UInt8]? {
    guard let file = fopen(path, "rb") else { return nil }
    defer { fclose(file) }
    var data: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = fread(&chunk, 1, chunk.count, file)
        if n <= 0 { break }
        data += chunk[0..<n]
    }
    return data
}
