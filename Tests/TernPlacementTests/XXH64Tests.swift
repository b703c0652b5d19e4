import TernCore
import TernPlacement
import Testing

/// Vectors cross-checked against the reference implementation (python `xxhash` 3.x, seed 0).
private let vectors: [(String, UInt64)] = [
    ("", 0xEF46_DB37_51D8_E999),
    ("a", 0xD24E_C4F1_A98C_6E5B),
    ("abc", 0x44BC_2CF5_AD77_0999),
    ("abcd", 0xDE03_27B0_D25D_92CC),
    ("hello world", 0x45AB_6734_B21E_6968),
    ("0123456789abcdef0123456789abcdef", 0x642A_9495_8E71_E6C5),
    (String(repeating: "x", count: 33), 0xB3FA_465F_5542_08A6),
]

@Test(arguments: vectors)
func xxh64Vectors(input: String, expected: UInt64) {
    #expect(XXH64.hash(input) == expected)
    #expect(XXH64.hash(Array(input.utf8)) == expected)
}

@Test func xxh64LongInputAllTailLengths() {
    // bytes 0..<100 covers the 32-byte stripes plus an 8-, a 4- and 1-byte tail.
    #expect(XXH64.hash(Array(0..<100)) == 0x6AC1_E580_3216_6597)
}
