import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import TernCore
import Testing

@testable import TernTransport

let testSecret: [UInt8] = Array("tern-test-secret-0123456789abcdef".utf8)

/// Logs nothing unless TERN_TEST_LOG is set (then everything at that level, e.g. "debug").
func testLogger(_ label: String) -> Logger {
    var logger = Logger(label: label)
    if let level = ProcessInfo.processInfo.environment["TERN_TEST_LOG"].flatMap(Logger.Level.init(rawValue:))
    {
        logger.logLevel = level
    } else {
        logger = Logger(label: label, factory: { _ in SwiftLogNoOpLogHandler() })
    }
    return logger
}

/// Tests run in parallel and reuse node ids: a node of one test must never authenticate with a
/// node of another that happens to get a port the first one dialled. Each test case gets its own
/// cluster name (`.isolatedCluster`), which every config and raw handshake of the test uses.
enum TestIsolation {
    @TaskLocal static var cluster = "test"
}

struct IsolatedCluster: SuiteTrait, TestTrait, TestScoping {
    var isRecursive: Bool { true }

    func provideScope(
        for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void
    ) async throws {
        guard testCase != nil else { return try await function() }
        try await TestIsolation.$cluster.withValue("test-\(UInt64.random(in: 0...UInt64.max))") {
            try await function()
        }
    }
}

extension Trait where Self == IsolatedCluster {
    static var isolatedCluster: Self { Self() }
}

/// A short-timeout configuration for tests: every node listens on 127.0.0.1, port 0.
func testConfig(
    _ me: UInt32, peers: [UInt32], cluster: String = TestIsolation.cluster, secret: [UInt8] = testSecret
) -> TransportConfig {
    var c = TransportConfig(
        clusterName: cluster, me: NodeID(me), listen: PeerAddress(host: "127.0.0.1", port: 0),
        peers: Dictionary(
            uniqueKeysWithValues: peers.map { (NodeID($0), PeerAddress(host: "127.0.0.1", port: 0)) }),
        secret: secret, reconnectBackoffMin: .milliseconds(5), reconnectBackoffMax: .milliseconds(100),
        sendQueueBytesMax: 1 << 20)
    // Generous timeouts: raw test peers send no pings, and a loaded CI machine or a sanitizer
    // build must not close a connection in the middle of a test. Tests of the timeouts set their own.
    c.heartbeatInterval = .milliseconds(50)
    c.idleTimeout = .seconds(10)
    c.handshakeTimeout = .seconds(10)
    return c
}

/// A transport plus everything it received.
final class TestNode: Sendable {
    let id: NodeID
    let transport: PeerTransport
    let received = NIOLockedValueBox<[(from: NodeID, messages: [ByteBuffer])]>([])

    init(_ config: TransportConfig, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) {
        id = config.me
        let box = received
        transport = PeerTransport(config: config, group: group, logger: testLogger("n\(config.me.rawValue)"))
        {
            from, messages in
            box.withLockedValue { $0.append((from, messages)) }
        }
    }

    /// Received messages from `peer`, decoded as strings, in arrival order.
    func strings(from peer: NodeID) -> [String] {
        received.withLockedValue { batches in
            batches.filter { $0.from == peer }.flatMap { $0.messages.map { String(buffer: $0) } }
        }
    }

    var batchCount: Int { received.withLockedValue { $0.count } }

    /// How many messages arrived from `peer` (cheap: no copies).
    func messageCount(from peer: NodeID) -> Int {
        received.withLockedValue { $0.reduce(0) { $0 + ($1.from == peer ? $1.messages.count : 0) } }
    }

    var address: PeerAddress { PeerAddress(host: "127.0.0.1", port: transport.boundPort) }
}

/// Starts `nodes` and tells each where the others listen.
func startAndConnect(_ nodes: [TestNode]) async throws {
    for n in nodes { try await n.transport.start() }
    for n in nodes {
        // Keep the configured peers that are not started here (raw test peers use their ids).
        var peers = n.transport.config.peers
        for other in nodes where other.id != n.id { peers[other.id] = other.address }
        n.transport.updatePeers(peers)
    }
    try await waitUntil("all connected") {
        nodes.allSatisfy { n in
            nodes.allSatisfy { o in o.id == n.id || n.transport.metrics().peers[o.id]?.connected == true }
        }
    }
}

struct TimedOut: Error, CustomStringConvertible {
    var what: String
    var description: String { "timed out waiting for: \(what)" }
}

/// Polls `condition` every few milliseconds until it holds, or throws after `seconds`.
func waitUntil(_ what: String, seconds: Double = 5, _ condition: () -> Bool) async throws {
    let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
    while !condition() {
        guard ContinuousClock.now < deadline else { throw TimedOut(what: what) }
        try await Task.sleep(for: .milliseconds(5))
    }
}

func buffer(_ s: String) -> ByteBuffer { ByteBuffer(string: s) }

/// A hand-driven TCP client that speaks raw bytes to a transport: for handshake attacks and
/// malformed frames.
final class RawPeer: Sendable {
    let channel: any Channel
    let inbound: NIOLockedValueBox<ByteBuffer>
    let closed: NIOLockedValueBox<Bool>

    private final class Collector: ChannelInboundHandler, Sendable {
        typealias InboundIn = ByteBuffer
        let inbound: NIOLockedValueBox<ByteBuffer>
        let closed: NIOLockedValueBox<Bool>
        init(_ inbound: NIOLockedValueBox<ByteBuffer>, _ closed: NIOLockedValueBox<Bool>) {
            self.inbound = inbound
            self.closed = closed
        }
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            var bytes = unwrapInboundIn(data)
            inbound.withLockedValue { _ = $0.writeBuffer(&bytes) }
        }
        func channelInactive(context: ChannelHandlerContext) {
            closed.withLockedValue { $0 = true }
        }
    }

    init(port: Int) async throws {
        let inbound = NIOLockedValueBox(ByteBuffer())
        let closed = NIOLockedValueBox(false)
        self.inbound = inbound
        self.closed = closed
        channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(Collector(inbound, closed))
                }
            }
            .connect(host: "127.0.0.1", port: port).get()
    }

    func send(_ bytes: ByteBuffer) async throws {
        try await channel.writeAndFlush(bytes)
    }

    func send(_ frame: Frame) async throws {
        var b = ByteBuffer()
        FrameCodec.encode(frame, into: &b)
        try await send(b)
    }

    /// The next frame the transport sent us, waiting for it.
    func nextFrame(seconds: Double = 5) async throws -> Frame {
        var frame: Frame?
        try await waitUntil("a frame from the transport", seconds: seconds) {
            frame = inbound.withLockedValue { b in try? FrameCodec.decode(&b, bodyBytesMax: 1 << 20) }
            return frame != nil
        }
        return frame!
    }

    /// Waits until the transport closed the connection.
    func waitClosed(seconds: Double = 5) async throws {
        try await waitUntil("the transport to close the connection", seconds: seconds) {
            closed.withLockedValue { $0 }
        }
    }

    var isClosed: Bool { closed.withLockedValue { $0 } }

    func close() async {
        try? await channel.close()
    }

    /// Runs the dialer's side of the handshake honestly (as node `me` towards `to`).
    /// Returns the frames it sent, for replay tests.
    @discardableResult
    func authenticate(
        as me: NodeID, to: NodeID, cluster: String = TestIsolation.cluster, secret: [UInt8] = testSecret
    ) async throws -> [Frame] {
        var hs = Handshake(clusterName: cluster, me: me, secret: secret, role: .dialer(peer: to))
        let hello = hs.start(nonce: Handshake.freshNonce())
        try await send(hello)
        let challenge = try await nextFrame()
        guard case .establish(_, let response?) = hs.receive(challenge, nonce: []) else {
            Issue.record("handshake did not establish: \(challenge)")
            return [hello]
        }
        try await send(response)
        return [hello, response]
    }
}
