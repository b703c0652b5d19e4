import TernCore
import Testing

@testable import TernStorage

@Suite struct CRC32CTests {
    /// Published vectors: RFC 3720 (iSCSI) appendix B.4 and the common "check" value.
    @Test func publishedVectors() {
        #expect(CRC32C.checksum(Array("123456789".utf8)) == 0xE306_9283)
        #expect(CRC32C.checksum([UInt8](repeating: 0, count: 32)) == 0x8A91_36AA)
        #expect(CRC32C.checksum([UInt8](repeating: 0xFF, count: 32)) == 0x62A8_AB43)
        #expect(CRC32C.checksum(Array(0..<32)) == 0x46DD_794E)
        #expect(CRC32C.checksum(Array((0..<32).reversed())) == 0x113F_DB5C)
        #expect(CRC32C.checksum([]) == 0)
    }

    /// Slice-by-8 must equal the bitwise definition at every length and alignment.
    @Test func matchesBitwiseDefinition() {
        func bitwise(_ bytes: [UInt8]) -> UInt32 {
            var c: UInt32 = 0xFFFF_FFFF
            for x in bytes {
                c ^= UInt32(x)
                for _ in 0..<8 { c = (c & 1) != 0 ? (c >> 1) ^ 0x82F6_3B78 : c >> 1 }
            }
            return ~c
        }
        var rng = SplitMix64(seed: 7)
        for n in 0..<70 {
            let bytes = randomBytes(n, &rng)
            #expect(CRC32C.checksum(bytes) == bitwise(bytes), "length \(n)")
            #expect(CRC32C.checksum(bytes.dropFirst()) == bitwise(Array(bytes.dropFirst())))
        }
    }

    @Test func updateIsIncremental() {
        let a = b("hello, "), c = b("world")
        #expect(CRC32C.update(CRC32C.checksum(a), c) == CRC32C.checksum(a + c))
    }
}
