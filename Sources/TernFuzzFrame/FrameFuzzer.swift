import Logging
import NIOCore
import NIOEmbedded
import NIOPosix
import TernCore
import TernTransport

/// What one fuzz input does, in the libFuzzer build and in the plain (replay) build alike.
///
/// Input layout: byte 0 chooses the mode (bit 0: 0 = listener, 1 = dialer; bits 1...7: the chunk
/// size the bytes are fed in); the rest is what a remote peer sends.
/// 1. The pure decoder reads frames from the bytes until it needs more or rejects them; every frame
///    it accepts must re-encode to exactly the bytes it consumed (the encoding is canonical).
/// 2. The same bytes are fed, chunk by chunk, to a real connection handler in an `EmbeddedChannel`,
///    as an unauthenticated peer would send them. It must reject or wait, never crash, and never
///    deliver a batch (nobody without the secret gets past the handshake).
enum FrameFuzzer {
    /// A started transport (listening on 127.0.0.1, a free port) that the handlers report to.
    static let transport: PeerTransport = {
        let config = TransportConfig(
            clusterName: "fuzz", me: NodeID(2), listen: PeerAddress(host: "127.0.0.1", port: 0),
            peers: [
                NodeID(1): PeerAddress(host: "127.0.0.1", port: 0),
                NodeID(3): PeerAddress(host: "127.0.0.1", port: 0),
            ],
            secret: Array("fuzzing-secret-fuzzing-secret-xx".utf8))
        let t = PeerTransport(
            config: config, group: MultiThreadedEventLoopGroup.singleton,
            logger: Logger(label: "fuzz", factory: { _ in SwiftLogNoOpLogHandler() }),
            onBatch: { from, _ in fatalError("a batch from \(from) got past the handshake") })
        try! MultiThreadedEventLoopGroup.singleton.next().makeFutureWithTask { try await t.start() }.wait()
        return t
    }()

    static func run(_ input: UnsafeRawBufferPointer) {
        guard let mode = input.first else { return }
        let payload = ByteBuffer(bytes: input.dropFirst())
        decodeAll(payload)
        feedHandler(payload, dialer: mode & 1 == 1, chunk: Int(mode >> 1) + 1)
    }

    private static func decodeAll(_ bytes: ByteBuffer) {
        var buffer = bytes
        while true {
            let before = buffer
            guard let frame = try? FrameCodec.decode(&buffer, bodyBytesMax: 1 << 16) else { return }
            let consumed = before.getSlice(
                at: before.readerIndex, length: before.readableBytes - buffer.readableBytes)!
            var again = ByteBuffer()
            FrameCodec.encode(frame, into: &again)
            precondition(again == consumed, "frame \(frame) does not re-encode to the bytes it came from")
        }
    }

    private static func feedHandler(_ bytes: ByteBuffer, dialer: Bool, chunk: Int) {
        let handler =
            dialer
            ? PeerChannelHandler(dialledBy: transport, to: NodeID(3))
            : PeerChannelHandler(acceptedBy: transport)
        let channel = EmbeddedChannel(handler: handler)
        do {
            try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 9)).wait()
        } catch {
            fatalError("embedded connect failed: \(error)")
        }
        var rest = bytes
        while rest.readableBytes > 0, channel.isActive {
            let piece = rest.readSlice(length: min(chunk, rest.readableBytes))!
            do {
                try channel.writeInbound(piece)
            } catch {
                break  // the handler closed the channel: the expected answer to bad input
            }
        }
        if channel.isActive { try? channel.close().wait() }
        _ = try? channel.finish(acceptAlreadyClosed: true)
    }
}
