import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import TernRESP

/// The Redis-protocol listener: one `RESPConnectionHandler` per client connection.
public final class RESPFrontend: Sendable {
    let channel: any Channel
    /// Connections now, and those refused at `maxClients`.
    public let clients: ClientGate

    /// The bound port.
    public var port: Int { channel.localAddress?.port ?? 0 }

    /// Listens on `host:port` and serves every connection through `node`.
    public static func start(
        host: String, port: Int, node: Node, processor: CommandProcessor, group: any EventLoopGroup,
        logger: Logger
    ) async throws -> RESPFrontend {
        let limits = RESPLimits(maxBulkBytes: processor.maxValueBytes)
        let authenticated = processor.password == nil
        let gate = ClientGate(max: processor.maxClients)
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                guard gate.enter() else {
                    // As Redis: the error, then the connection is closed.
                    var b = channel.allocator.buffer(capacity: 48)
                    b.writeString("-ERR max number of clients reached\r\n")
                    return channel.writeAndFlush(b).flatMap { channel.close() }
                }
                channel.closeFuture.whenComplete { _ in gate.leave() }
                return channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        ByteToMessageHandler(RESPCommandDecoder(limits: limits)))
                    try channel.pipeline.syncOperations.addHandler(
                        RESPConnectionHandler(
                            node: node, processor: processor, session: Session(authenticated: authenticated),
                            logger: logger))
                }
            }
            .bind(host: host, port: port).get()
        logger.info("RESP listening", metadata: ["address": "\(host):\(channel.localAddress?.port ?? port)"])
        return RESPFrontend(channel: channel, clients: gate)
    }

    init(channel: any Channel, clients: ClientGate) {
        self.channel = channel
        self.clients = clients
    }

    /// Stops accepting connections (open connections finish what they have).
    public func close() async {
        try? await channel.close()
    }
}

/// Counts client connections against `max` (Redis's `maxclients`).
public final class ClientGate: Sendable {
    public let max: Int
    private let state = NIOLockedValueBox((connected: 0, refused: 0))
    init(max: Int) { self.max = max }
    /// Takes a slot; false (and counted as refused) when all `max` are taken.
    func enter() -> Bool {
        state.withLockedValue { s in
            guard s.connected < max else {
                s.refused += 1
                return false
            }
            s.connected += 1
            return true
        }
    }
    func leave() { state.withLockedValue { $0.connected -= 1 } }
    /// Connections open now, and connections refused since start.
    public var counts: (connected: Int, refused: Int) { state.withLockedValue { $0 } }
}

/// One client connection: decodes commands, runs them (concurrently, keys on any replica) and
/// writes the replies **in command order**, whatever order they complete in (pipelining).
///
/// Back-pressure: at most `unansweredMax` commands wait for replies; beyond that the connection
/// stops reading until replies drain.
final class RESPConnectionHandler: ChannelInboundHandler {
    typealias InboundIn = RESPCommand
    typealias OutboundOut = ByteBuffer

    static let unansweredMax = 4096

    let node: Node
    let processor: CommandProcessor
    var session: Session
    let logger: Logger
    /// Sequence number of the next command, and of the first reply not yet written.
    var nextSeq: UInt64 = 0
    var headSeq: UInt64 = 0
    /// Encoded replies that are ready but wait for earlier ones.
    var ready: [UInt64: ByteBuffer] = [:]
    /// Close after writing the reply with this sequence number.
    var closeAfter: UInt64?
    var readingPaused = false
    /// Per key, the last request of this connection still running: the next one on that key waits
    /// for it (a connection's commands on one key take effect in the order they were sent, as in
    /// Redis; commands on different keys run concurrently).
    var keyTail: [[UInt8]: (id: UInt64, done: EventLoopFuture<NodeReply>)] = [:]
    var requestIDs: UInt64 = 0
    /// Where sync notices reach this connection (made by the first `.connection` plan).
    var pushOutlet: ConnectionOutlet?

    init(node: Node, processor: CommandProcessor, session: Session, logger: Logger) {
        self.node = node
        self.processor = processor
        self.session = session
        self.logger = logger
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let command = unwrapInboundIn(data)
        guard closeAfter == nil else { return }
        let seq = nextSeq
        nextSeq += 1
        let plan = processor.plan(command, session: &session)
        let version = session.version
        switch plan {
        case .reply(let v):
            fill(seq, v, version, context: context)
        case .replyAndClose(let v):
            closeAfter = seq
            fill(seq, v, version, context: context)
        case .requests(let reqs, let build):
            let futures = reqs.map { execute($0.key, $0.request, context: context) }
            let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            EventLoopFuture.whenAllComplete(futures, on: context.eventLoop).whenSuccess { results in
                let replies = results.map { r -> NodeReply in
                    switch r {
                    case .success(let v): v
                    case .failure: .unavailable("node stopped")
                    }
                }
                let (handler, context) = loopBound.value
                handler.fill(seq, build(replies), version, context: context)
            }
        // Sync push hook: frames that answer one command, and the outlet for later pushes.
        case .connection(let body):
            let values = body(outlet(context: context))
            var buffer = context.channel.allocator.buffer(capacity: 64)
            for v in values { RESPEncoder.encode(v, version: session.version, into: &buffer) }
            release(seq, buffer, context: context)
        case .future(let make):
            // seq: a service's future (SEQ.*), answered on this channel's loop.
            let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            make().hop(to: context.eventLoop).whenComplete { result in
                let (handler, context) = loopBound.value
                let value: RESPValue
                switch result {
                case .success(let v): value = v
                case .failure(let e): value = .error("ERR \(e)")
                }
                handler.fill(seq, value, version, context: context)
            }
        case .run(let task):
            let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            let promise = context.eventLoop.makePromise(of: RESPValue.self)
            promise.completeWithTask { await task() }
            promise.futureResult.whenSuccess { value in
                let (handler, context) = loopBound.value
                handler.fill(seq, value, version, context: context)
            }
        }
        if nextSeq - headSeq >= Self.unansweredMax && !readingPaused {
            readingPaused = true
            context.channel.setOption(.autoRead, value: false).whenFailure { _ in }
        }
    }

    /// Runs `request` on `key` after this connection's previous request on `key` (if any).
    func execute(_ key: [UInt8], _ request: KeyRequest, context: ChannelHandlerContext) -> EventLoopFuture<
        NodeReply
    > {
        requestIDs += 1
        let id = requestIDs
        let loop = context.eventLoop
        let node = self.node
        let future: EventLoopFuture<NodeReply>
        if let previous = keyTail[key] {
            let promise = loop.makePromise(of: NodeReply.self)
            previous.done.whenComplete { _ in
                promise.completeWith(node.execute(key: key, request).hop(to: loop))
            }
            future = promise.futureResult
        } else {
            future = node.execute(key: key, request).hop(to: loop)
        }
        keyTail[key] = (id, future)
        let loopBound = NIOLoopBound(self, eventLoop: loop)
        future.whenComplete { _ in
            let handler = loopBound.value
            if handler.keyTail[key]?.id == id { handler.keyTail[key] = nil }
        }
        return future
    }

    func fill(_ seq: UInt64, _ value: RESPValue, _ version: RESPVersion, context: ChannelHandlerContext) {
        var buffer = context.channel.allocator.buffer(capacity: 64)
        RESPEncoder.encode(value, version: version, into: &buffer)
        release(seq, buffer, context: context)
    }

    /// This connection's outlet for pushes (made on first use); a push takes the next reply slot.
    func outlet(context: ChannelHandlerContext) -> ConnectionOutlet {
        if let pushOutlet { return pushOutlet }
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        let loop = context.eventLoop
        let made = ConnectionOutlet { value in
            loop.execute {
                let (handler, context) = loopBound.value
                guard handler.closeAfter == nil, context.channel.isActive else { return }
                let seq = handler.nextSeq
                handler.nextSeq += 1
                handler.fill(seq, value, handler.session.version, context: context)
            }
        }
        pushOutlet = made
        return made
    }

    func channelInactive(context: ChannelHandlerContext) {
        pushOutlet?.close()
        context.fireChannelInactive()
    }

    /// Writes the encoded reply `seq` once every earlier one is out.
    func release(_ seq: UInt64, _ buffer: ByteBuffer, context: ChannelHandlerContext) {
        ready[seq] = buffer
        var wrote = false
        while let b = ready.removeValue(forKey: headSeq) {
            context.write(wrapOutboundOut(b), promise: nil)
            wrote = true
            if closeAfter == headSeq {
                headSeq += 1
                let channel = context.channel
                context.writeAndFlush(NIOAny(ByteBuffer())).whenComplete { _ in channel.close(promise: nil) }
                return
            }
            headSeq += 1
        }
        if wrote { context.flush() }
        if readingPaused && nextSeq - headSeq < Self.unansweredMax / 2 {
            readingPaused = false
            context.channel.setOption(.autoRead, value: true).whenFailure { _ in }
            context.read()
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard closeAfter == nil else { return }
        if let e = error as? RESPProtocolError {
            // Garbage: answer after the replies already owed, then close this connection only.
            let seq = nextSeq
            nextSeq += 1
            closeAfter = seq
            fill(seq, .error("ERR Protocol error: \(e.message)"), session.version, context: context)
        } else {
            context.close(promise: nil)
        }
    }
}
