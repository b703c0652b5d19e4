import Logging
import NIOCore
import NIOEmbedded
import NIOPosix
import TernCore
import TernTransport

/// What one fuzz input does, in the libFuzzer build and in the plain (replay) build alike.
///
/// Input layout: byte 0 chooses the mode (bits 0...1: 0 = unauthenticated peer to a listener,
/// 1 = listener answering our dial, 2 and 3 = authenticated peer to a listener; bits 2...7: the
/// chunk size the bytes are fed in); the rest is what the remote side sends.
/// 1. The pure decoder reads frames from the bytes until it needs more or rejects them; every frame
///    it accepts must re-encode to exactly the bytes it consumed (the encoding is canonical).
/// 2. The same bytes are fed, chunk by chunk, to a real connection handler in an `EmbeddedChannel`.
///    Unauthenticated, it must reject or wait, never crash, and never deliver a batch (nobody
///    without the secret gets past the handshake). Authenticated (the harness does an honest
///    handshake first), it must deliver exactly the messages of the whole valid frames that precede
///    the first invalid one, in order.
enum FrameFuzzer {
    static let secret = Array("fuzzing-secret-fuzzing-secret-xx".utf8)
    static let maxFrameBytes = 1 << 16
    /// Messages delivered to `onBatch` (the harness is single-threaded: EmbeddedChannel runs inline).
    nonisolated(unsafe) static var delivered: [ByteBuffer] = []

    /// A started transport (listening on 127.0.0.1, a free port) that the handlers report to.
    static let transport: PeerTransport = {
        let config = TransportConfig(
            clusterName: "fuzz", me: NodeID(2), listen: PeerAddress(host: "127.0.0.1", port: 0),
            peers: [
                NodeID(1): PeerAddress(host: "127.0.0.1", port: 0),
                NodeID(3): PeerAddress(host: "127.0.0.1", port: 0),
            ],
            secret: secret, maxFrameBytes: maxFrameBytes)
        let t = PeerTransport(
            config: config, group: MultiThreadedEventLoopGroup.singleton,
            logger: Logger(label: "fuzz", factory: { _ in SwiftLogNoOpLogHandler() }),
            onBatch: { _, messages in delivered += messages })
        try! MultiThreadedEventLoopGroup.singleton.next().makeFutureWithTask { try await t.start() }.wait()
        return t
    }()

    static func run(_ input: UnsafeRawBufferPointer) {
        guard let mode = input.first else { return }
        let payload = ByteBuffer(bytes: input.dropFirst())
        let chunk = Int(mode >> 2) + 1
        delivered = []
        switch mode & 3 {
        case 0, 1:
            _ = decodeAll(
                payload, bodyBytesMax: FrameCodec.handshakeBodyBytesMax, stopAtHandshakeFrame: false)
            feedHandler(payload, dialer: mode & 3 == 1, authenticated: false, chunk: chunk)
            precondition(delivered.isEmpty, "a batch got past the handshake")
        default:
            let expected = decodeAll(payload, bodyBytesMax: maxFrameBytes, stopAtHandshakeFrame: true)
            feedHandler(payload, dialer: false, authenticated: true, chunk: chunk)
            precondition(
                delivered == expected, "delivered \(delivered.count) messages, expected \(expected.count)")
        }
    }

    /// Decodes frames until the bytes end or one is rejected (or, if `stopAtHandshakeFrame`, until a
    /// handshake frame, which an authenticated connection refuses); returns the batches' messages.
    private static func decodeAll(_ bytes: ByteBuffer, bodyBytesMax: Int, stopAtHandshakeFrame: Bool)
        -> [ByteBuffer]
    {
        var buffer = bytes
        var messages: [ByteBuffer] = []
        while true {
            let before = buffer
            guard let frame = try? FrameCodec.decode(&buffer, bodyBytesMax: bodyBytesMax) else {
                return messages
            }
            switch frame {
            case .batch(let m): messages += m
            case .ping: break
            case .hello, .challenge, .response, .reject: if stopAtHandshakeFrame { return messages }
            }
            let consumed = before.getSlice(
                at: before.readerIndex, length: before.readableBytes - buffer.readableBytes)!
            var again = ByteBuffer()
            FrameCodec.encode(frame, into: &again)
            precondition(again == consumed, "frame \(frame) does not re-encode to the bytes it came from")
        }
    }

    private static func feedHandler(_ bytes: ByteBuffer, dialer: Bool, authenticated: Bool, chunk: Int) {
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
        if authenticated { handshake(channel) }
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

    /// An honest dialer n1 authenticates to the listener handler (n2).
    private static func handshake(_ channel: EmbeddedChannel) {
        let nonce = [UInt8](repeating: 0x42, count: FrameCodec.nonceBytes)
        var hello = ByteBuffer()
        FrameCodec.encode(
            .hello(.init(clusterName: "fuzz", from: NodeID(1), to: NodeID(2), nonce: nonce)), into: &hello)
        try! channel.writeInbound(hello)
        var out = try! channel.readOutbound(as: ByteBuffer.self)!
        guard case .challenge(let c) = try! FrameCodec.decode(&out, bodyBytesMax: 1024)! else {
            fatalError("the listener did not answer the hello with a challenge")
        }
        let proof = dialerProof(
            secret: secret, cluster: "fuzz", dialer: NodeID(1), listener: NodeID(2), dialerNonce: nonce,
            listenerNonce: c.nonce)
        var response = ByteBuffer()
        FrameCodec.encode(.response(mac: proof), into: &response)
        try! channel.writeInbound(response)
        precondition(transport.metrics().peers[NodeID(1)]?.connected == true, "honest handshake failed")
    }
}
