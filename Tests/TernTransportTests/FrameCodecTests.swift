import NIOCore
import TernCore
import Testing

@testable import TernTransport

private func encoded(_ frame: Frame) -> ByteBuffer {
    var b = ByteBuffer()
    FrameCodec.encode(frame, into: &b)
    return b
}

private let nonceA = [UInt8](repeating: 0xA1, count: 32)
private let nonceB = [UInt8](repeating: 0xB2, count: 32)

private let sampleFrames: [Frame] = [
    .hello(.init(clusterName: "prod-éu", from: NodeID(1), to: NodeID(0xFFFF_FFFF), nonce: nonceA)),
    .hello(
        .init(clusterName: String(repeating: "x", count: 255), from: NodeID(0), to: NodeID(7), nonce: nonceB)),
    .challenge(.init(from: NodeID(2), to: NodeID(1), nonce: nonceA, mac: nonceB)),
    .response(mac: nonceB),
    .ping,
    .reject(.badMAC),
    .batch([buffer("a")]),
    .batch([buffer(""), buffer("two"), ByteBuffer(bytes: [0, 0xFF, 0x54, 0x4E])]),
    .batch((0..<1000).map { buffer("message \($0)") }),
]

@Test(arguments: sampleFrames)
func frameRoundTripsAndReencodesToTheSameBytes(frame: Frame) throws {
    var bytes = encoded(frame)
    let original = bytes
    let decoded = try FrameCodec.decode(&bytes, bodyBytesMax: 1 << 20)
    #expect(decoded == frame)
    #expect(bytes.readableBytes == 0)
    #expect(encoded(decoded!) == original)
}

@Test func manyFramesInOneBufferDecodeInOrder() throws {
    var bytes = ByteBuffer()
    for f in sampleFrames { FrameCodec.encode(f, into: &bytes) }
    var out: [Frame] = []
    while let f = try FrameCodec.decode(&bytes, bodyBytesMax: 1 << 20) { out.append(f) }
    #expect(out == sampleFrames)
}

@Test func everyPrefixOfAFrameAsksForMoreBytes() throws {
    let whole = encoded(.batch([buffer("hello"), buffer("world")]))
    for cut in 0..<whole.readableBytes {
        var prefix = whole.getSlice(at: 0, length: cut)!
        #expect(try FrameCodec.decode(&prefix, bodyBytesMax: 1024) == nil)
        #expect(prefix.readerIndex == 0, "a partial frame must not be consumed")
        if cut > 0 {
            let error = #expect(throws: FrameError.self) { try FrameCodec.checkEnd(prefix) }
            #expect(error?.code == .truncated)
        }
    }
}

@Test func batchMessagesAreSlicesOfTheReceiveBuffer() throws {
    var bytes = encoded(.batch([buffer("abc"), buffer("defg")]))
    guard case .batch(let messages) = try FrameCodec.decode(&bytes, bodyBytesMax: 1024) else {
        Issue.record("not a batch")
        return
    }
    #expect(messages.map { String(buffer: $0) } == ["abc", "defg"])
}

/// Overwrites bytes of an encoded frame.
private func patched(_ frame: Frame, _ patches: [(Int, [UInt8])]) -> ByteBuffer {
    var b = encoded(frame)
    for (at, bytes) in patches { b.setBytes(bytes, at: at) }
    return b
}

private func header(kind: UInt8, length: UInt32) -> [UInt8] {
    [0x54, 0x4E, 1, kind] + withUnsafeBytes(of: length.bigEndian, Array.init)
}

struct Malformed: CustomTestStringConvertible, Sendable {
    var name: String
    var bytes: ByteBuffer
    var code: FrameError.Code
    var testDescription: String { name }
}

private let malformed: [Malformed] = [
    Malformed(name: "bad magic", bytes: patched(.ping, [(0, [0x47, 0x45])]), code: .badMagic),
    Malformed(name: "HTTP request", bytes: buffer("GET / HTTP/1.1\r\n\r\n"), code: .badMagic),
    Malformed(name: "version 2", bytes: patched(.ping, [(2, [2])]), code: .unsupportedVersion),
    Malformed(name: "version 0", bytes: patched(.ping, [(2, [0])]), code: .unsupportedVersion),
    Malformed(name: "kind 0", bytes: ByteBuffer(bytes: header(kind: 0, length: 0)), code: .unknownKind),
    Malformed(name: "kind 99", bytes: ByteBuffer(bytes: header(kind: 99, length: 0)), code: .unknownKind),
    Malformed(
        name: "oversized, header only", bytes: ByteBuffer(bytes: header(kind: 4, length: 4097)),
        code: .oversized),
    Malformed(
        name: "oversized, 4 GiB", bytes: ByteBuffer(bytes: header(kind: 4, length: .max)), code: .oversized),
    Malformed(
        name: "ping with a body", bytes: ByteBuffer(bytes: header(kind: 5, length: 1) + [0]),
        code: .malformedBody),
    Malformed(
        name: "short response", bytes: ByteBuffer(bytes: header(kind: 3, length: 31)), code: .malformedBody),
    Malformed(
        name: "short challenge", bytes: ByteBuffer(bytes: header(kind: 2, length: 8)), code: .malformedBody),
    Malformed(
        name: "reject with unknown reason", bytes: ByteBuffer(bytes: header(kind: 6, length: 1) + [77]),
        code: .malformedBody),
    Malformed(
        name: "empty batch", bytes: ByteBuffer(bytes: header(kind: 4, length: 8) + [0, 0, 0, 0, 0, 0, 0, 0]),
        code: .malformedBody),
    Malformed(
        name: "tiny batch", bytes: ByteBuffer(bytes: header(kind: 4, length: 4) + [0, 0, 0, 1]),
        code: .malformedBody),
    Malformed(
        name: "batch count beyond the body",
        bytes: ByteBuffer(
            bytes: header(kind: 4, length: 12) + [0xFF, 0xFF, 0xFF, 0xFF] + [0, 0, 0, 0, 0, 0, 0, 0]),
        code: .malformedBody),
    Malformed(
        name: "message overruns the body",
        bytes: ByteBuffer(bytes: header(kind: 4, length: 10) + [0, 0, 0, 1, 0, 0, 0, 9, 0x41, 0x42]),
        code: .malformedBody),
    Malformed(
        name: "second message missing",
        bytes: ByteBuffer(bytes: header(kind: 4, length: 9) + [0, 0, 0, 2, 0, 0, 0, 1, 0x41]),
        code: .malformedBody),
    Malformed(
        name: "batch with trailing bytes",
        bytes: ByteBuffer(bytes: header(kind: 4, length: 11) + [0, 0, 0, 1, 0, 0, 0, 1, 0x41, 0x42, 0x43]),
        code: .malformedBody),
    Malformed(
        name: "hello name longer than the body",
        bytes: patched(
            .hello(.init(clusterName: "ab", from: NodeID(1), to: NodeID(2), nonce: nonceA)), [(8, [200])]),
        code: .malformedBody),
    Malformed(
        name: "hello name not UTF-8",
        bytes: patched(
            .hello(.init(clusterName: "ab", from: NodeID(1), to: NodeID(2), nonce: nonceA)), [(9, [0xFF])]),
        code: .malformedBody),
    Malformed(
        name: "hello too short", bytes: ByteBuffer(bytes: header(kind: 1, length: 3) + [0, 0, 0]),
        code: .malformedBody),
    Malformed(
        name: "hello too long", bytes: ByteBuffer(bytes: header(kind: 1, length: 400)), code: .malformedBody),
]

@Test(arguments: malformed)
func malformedFrameIsRejectedWithItsCode(_ m: Malformed) {
    var bytes = m.bytes
    do {
        let frame = try FrameCodec.decode(&bytes, bodyBytesMax: 4096)
        Issue.record("decoded \(String(describing: frame)) instead of rejecting")
    } catch {
        #expect(error.code == m.code, "\(error)")
        #expect(!error.description.isEmpty)
    }
}

@Test func truncatedStreamIsReportedWithWhatArrived() {
    let whole = encoded(.batch([buffer("0123456789")]))
    let cut = whole.getSlice(at: 0, length: 12)!
    let error = #expect(throws: FrameError.self) { try FrameCodec.checkEnd(cut) }
    #expect(error?.code == .truncated)
    #expect(error?.detail.contains("12 of 26 bytes") == true, "\(String(describing: error))")
    #expect(throws: Never.self) { try FrameCodec.checkEnd(ByteBuffer()) }
}

/// Random bytes and random corruptions of valid frames: the decoder answers a frame, nil or a
/// FrameError, never crashes, and whatever it accepts re-encodes to the same bytes.
@Test func randomInputsNeverCrashTheDecoder() {
    var rng = SplitMix64(seed: 42)
    let valid = sampleFrames.map(encoded)
    // A few thousand here (debug builds are slow); scripts/fuzz-frame runs the coverage-guided fuzzer.
    for i in 0..<3000 {
        var bytes: ByteBuffer
        if i % 2 == 0 {
            let n = Int(rng.next() % 64)
            bytes = ByteBuffer(bytes: (0..<n).map { _ in UInt8(truncatingIfNeeded: rng.next()) })
        } else {
            bytes = valid[Int(rng.next() % UInt64(valid.count))]
            for _ in 0..<(1 + rng.next() % 3) where bytes.readableBytes > 0 {
                let at = Int(rng.next() % UInt64(bytes.readableBytes))
                bytes.setInteger(UInt8(truncatingIfNeeded: rng.next()), at: at)
            }
        }
        let before = bytes
        if let frame = try? FrameCodec.decode(&bytes, bodyBytesMax: 1 << 16) {
            let consumed = before.getSlice(
                at: before.readerIndex, length: before.readableBytes - bytes.readableBytes)!
            if encoded(frame) != consumed { Issue.record("input \(i): \(frame) is not canonical") }
        }
    }
}
