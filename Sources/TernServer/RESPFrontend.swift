import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL
import TernConsensus
import TernCore
import TernRESP
import TernTransport

/// The Redis-protocol listener: one `RESPConnectionHandler` per client connection, on the plain
/// port, the TLS port (docs/SECURITY.md), or both; the same pipeline behind the TLS handler.
public final class RESPFrontend: Sendable {
    let channels: [any Channel]
    let plainChannel: (any Channel)?
    let tlsChannel: (any Channel)?
    /// Connections now, and those refused at `maxClients`.
    public let clients: ClientGate

    /// The bound plain port (0: no plain port).
    public var port: Int { plainChannel?.localAddress?.port ?? 0 }
    /// The bound TLS port (0: no TLS port).
    public var tlsPort: Int { tlsChannel?.localAddress?.port ?? 0 }

    /// Listens on `host:port` (unless `port` is nil) and, with `tls`, on `host:tls.port` with TLS,
    /// and serves every connection through `node`.
    public static func start(
        host: String, port: Int?, tls: (port: Int, context: ReloadableTLSContext)? = nil, node: Node,
        processor: CommandProcessor, group: any EventLoopGroup, logger: Logger
    ) async throws -> RESPFrontend {
        let limits = RESPLimits(maxBulkBytes: processor.maxValueBytes)
        let gate = ClientGate(
            max: processor.maxClients, outputBytesMax: processor.clientOutputBytesMax,
            memoryBytesMax: processor.clientMemoryBytesMax)
        let registry = FrontendRegistry(table: processor.commandTable, gate: gate)
        // The commands scripts run count in INFO commandstats as Redis counts them.
        for case let scripts as ScriptService in processor.modules {
            scripts.countInnerCalls { args, reply in
                guard let loop = MultiThreadedEventLoopGroup.currentEventLoop else { return }
                let shard = registry.shard(loop)
                if let counter = shard.counter(for: args) {
                    shard.finished(counter, since: .now(), reply: reply, rejected: false)
                }
            }
        }
        func listen(_ port: Int, tls: ReloadableTLSContext?) async throws -> any Channel {
            try await ServerBootstrap(group: group)
                .serverChannelOption(.backlog, value: 256)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
                .childChannelInitializer { channel in
                    guard gate.enter() else {
                        // As Redis: the error, then the connection is closed. Written once the channel
                        // is active: here it is not registered yet, and a write fails (until 2026-12-06
                        // the refused client got neither the error nor the close, and waited).
                        return channel.eventLoop.makeCompletedFuture {
                            if let tls {
                                try channel.pipeline.syncOperations.addHandler(
                                    NIOSSLServerHandler(context: tls.current))
                            }
                            try channel.pipeline.syncOperations.addHandler(RefuseHandler())
                        }
                    }
                    channel.closeFuture.whenComplete { _ in gate.leave() }
                    let id = registry.nextID()
                    return channel.eventLoop.makeCompletedFuture {
                        if let tls {
                            // The context current now: a SIGHUP reload applies to connections opened
                            // after it.
                            try channel.pipeline.syncOperations.addHandler(
                                NIOSSLServerHandler(context: tls.current))
                            try channel.pipeline.syncOperations.addHandler(TLSErrorLogger(logger: logger))
                        }
                        let meter = RESPBufferMeter()
                        try channel.pipeline.syncOperations.addHandler(
                            ByteToMessageHandler(RESPCommandDecoder(limits: limits, meter: meter)))
                        try channel.pipeline.syncOperations.addHandler(
                            RESPConnectionHandler(
                                node: node, processor: processor,
                                session: Session(
                                    authenticated: processor.access.defaultUserOpen, clientID: id),
                                gate: gate, meter: meter, logger: logger,
                                registry: registry, shard: registry.shard(channel.eventLoop)))
                    }
                }
                .bind(host: host, port: port).get()
        }
        var plain: (any Channel)?
        var secure: (any Channel)?
        if let port {
            let c = try await listen(port, tls: nil)
            logger.info("RESP listening", metadata: ["address": "\(host):\(c.localAddress?.port ?? port)"])
            plain = c
        }
        if let tls {
            let c: any Channel
            do {
                c = try await listen(tls.port, tls: tls.context)
            } catch {
                try? await plain?.close()
                throw error
            }
            logger.info(
                "RESP listening with TLS",
                metadata: ["address": "\(host):\(c.localAddress?.port ?? tls.port)"])
            secure = c
        }
        registry.port = plain?.localAddress?.port ?? 0
        return RESPFrontend(plain: plain, tls: secure, clients: gate, registry: registry)
    }

    /// Connections, per-command counters and the figures INFO shows.
    let registry: FrontendRegistry

    init(plain: (any Channel)?, tls: (any Channel)?, clients: ClientGate, registry: FrontendRegistry) {
        plainChannel = plain
        tlsChannel = tls
        channels = [plain, tls].compactMap { $0 }
        self.clients = clients
        self.registry = registry
    }

    /// Stops accepting connections (open connections finish what they have).
    public func close() async {
        for c in channels { try? await c.close() }
        registry.close()
    }
}

/// Logs why a client's TLS connection failed (a client without the CA, or without a required
/// certificate, ends here), once per connection, then passes the error on (the connection closes).
/// A client that closes without TLS's close_notify (redis-cli does, every time) is not a failure.
final class TLSErrorLogger: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    let logger: Logger
    var reported = false
    init(logger: Logger) { self.logger = logger }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        let unclean = (error as? NIOSSLError) == .uncleanShutdown
        if !reported && !unclean && (error is NIOSSLError || error is BoringSSLError) {
            reported = true
            logger.notice(
                "client TLS failed",
                metadata: [
                    "from": "\(context.channel.remoteAddress.map { "\($0)" } ?? "?")", "error": "\(error)",
                ])
        }
        context.fireErrorCaught(error)
    }
}

/// Answers a connection refused at `maxclients`: Redis's error, then close.
final class RefuseHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    func channelActive(context: ChannelHandlerContext) {
        var b = context.channel.allocator.buffer(capacity: 48)
        b.writeString("-ERR max number of clients reached\r\n")
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(b)).whenComplete { _ in channel.close(promise: nil) }
    }

    /// Whatever the client sent meanwhile is dropped.
    func channelRead(context: ChannelHandlerContext, data: NIOAny) {}
}

/// Counts client connections against `max` (Redis's `maxclients`) and the memory their buffers
/// hold against `memoryBytesMax` (Redis 7's `maxmemory-clients`).
public final class ClientGate: Sendable {
    /// Connections allowed at once (CONFIG SET maxclients changes it; open connections stay).
    public var max: Int { state.withLockedValue { $0.max } }
    /// Per client: reply bytes the client has not taken yet (encoded, waiting for an earlier reply
    /// or in the socket's send buffer). Past it the client is disconnected (Redis's
    /// `client-output-buffer-limit` hard limit).
    public let outputBytesMax: Int
    /// All clients together: query and output buffers. A client whose growth would pass it is
    /// disconnected.
    public let memoryBytesMax: Int

    struct State {
        var max: Int
        var connected = 0
        var refused = 0
        var memory = 0
        var evictedOutput = 0
        var evictedMemory = 0
    }
    private let state: NIOLockedValueBox<State>

    init(max: Int, outputBytesMax: Int = 64 << 20, memoryBytesMax: Int = 1 << 30) {
        state = NIOLockedValueBox(State(max: max))
        self.outputBytesMax = outputBytesMax
        self.memoryBytesMax = memoryBytesMax
    }

    /// Takes a slot; false (and counted as refused) when all `max` are taken.
    func enter() -> Bool {
        state.withLockedValue { s in
            guard s.connected < s.max else {
                s.refused += 1
                return false
            }
            s.connected += 1
            return true
        }
    }
    func leave() { state.withLockedValue { $0.connected -= 1 } }
    func setMax(_ n: Int) { state.withLockedValue { $0.max = n } }

    /// Adds `delta` bytes to the clients' memory. False when it grows past `memoryBytesMax`: the
    /// caller is then counted as evicted and must close (and give its bytes back).
    func account(_ delta: Int) -> Bool {
        state.withLockedValue { s in
            s.memory += delta
            guard delta > 0, s.memory > memoryBytesMax else { return true }
            s.evictedMemory += 1
            return false
        }
    }
    func evictedForOutput() { state.withLockedValue { $0.evictedOutput += 1 } }

    /// Connections open now, refused since start, buffer bytes now, and clients disconnected for
    /// their output buffer or for the total.
    public var counts: (connected: Int, refused: Int, memory: Int, evictedOutput: Int, evictedMemory: Int) {
        let s = state.withLockedValue { $0 }
        return (s.connected, s.refused, s.memory, s.evictedOutput, s.evictedMemory)
    }
}

/// One client connection: decodes commands, runs them (concurrently, keys on any replica) and
/// writes the replies **in command order**, whatever order they complete in (pipelining).
///
/// Back-pressure: at most `unansweredMax` commands wait for replies, and at most
/// `outputPauseBytes` of replies wait for the client to take them; beyond either the connection
/// stops reading until replies drain. Memory: past the gate's `outputBytesMax` of waiting replies
/// (commands read before the pause still answer), or when the clients' total passes
/// `memoryBytesMax`, the connection is closed and counted.
final class RESPConnectionHandler: ChannelInboundHandler {
    typealias InboundIn = RESPCommand
    typealias OutboundOut = ByteBuffer

    static let unansweredMax = 4096
    static let outputPauseBytes = 4 << 20
    /// Buffer changes smaller than this are not reported to the gate (no lock per command).
    static let reportStepBytes = 16 << 10

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
    let gate: ClientGate
    /// The decoder's query-buffer bytes.
    let meter: RESPBufferMeter
    /// Bytes of encoded replies in `ready`.
    var readyBytes = 0
    /// Bytes this connection has accounted in the gate.
    var reportedBytes = 0
    /// Closed for its memory: nothing more is read or written.
    var evicted = false
    /// Per key, the last request of this connection still running: the next one on that key waits
    /// for it (a connection's commands on one key take effect in the order they were sent, as in
    /// Redis; commands on different keys run concurrently).
    var keyTail: [[UInt8]: (id: UInt64, done: EventLoopFuture<NodeReply>)] = [:]
    /// The last `.barrier` command still running (its id and completion): key requests read after
    /// it wait for it.
    var barrierTail: (id: UInt64, done: EventLoopFuture<Void>)?
    /// Per Paxos key, the stream writes waiting for this connection's request before them on that
    /// key (or, with none, for the end of the bytes read now), still open to more: then they go as
    /// one `multi` write (one Paxos instance, applied in order, each answered with its own reply)
    /// instead of one instance each. A worker's pipelined `XACK`s and `XDEL` took a round of the
    /// stream apiece.
    var openRuns: [[UInt8]: StreamRun] = [:]
    /// What a run of the commands read now waits for (`burstEnd`).
    var burst: EventLoopPromise<Void>?
    var requestIDs: UInt64 = 0
    /// Where sync notices reach this connection (made by the first `.connection` plan).
    var pushOutlet: ConnectionOutlet?
    /// The front end's registry and this loop's shard of it (counters, connections).
    let registry: FrontendRegistry
    let shard: FrontendShard
    /// CLIENT LIST's figures: accepted, last command (time and name), addresses.
    let created = NIODeadline.now()
    var lastCommandAt = NIODeadline.now()
    var lastCommand = "NULL"
    var channel: (any Channel)?
    /// This handler's context while it is in the pipeline (CLIENT UNBLOCK from another connection).
    var context: ChannelHandlerContext?
    var addresses = (remote: "", local: "")
    /// Commands whose replies CLIENT REPLY OFF/SKIP drops (their slot still passes in order).
    var silenced: Set<UInt64> = []
    /// The blocking command waiting now (BLPOP, XREAD BLOCK; Blocking.swift), and the commands
    /// read after it, which wait for it.
    var blocked: BlockedCommand?
    /// This connection ran MONITOR (its own commands are not shown back to it).
    var monitoring = false
    var held: [RESPCommand] = []

    init(
        node: Node, processor: CommandProcessor, session: Session, gate: ClientGate, meter: RESPBufferMeter,
        logger: Logger, registry: FrontendRegistry, shard: FrontendShard
    ) {
        self.node = node
        self.processor = processor
        self.session = session
        self.gate = gate
        self.meter = meter
        self.logger = logger
        self.registry = registry
        self.shard = shard
    }

    func handlerAdded(context: ChannelHandlerContext) {
        channel = context.channel
        self.context = context
        func text(_ a: SocketAddress?) -> String {
            guard let a, let ip = a.ipAddress, let port = a.port else { return "" }
            if case .v6 = a { return "[\(ip)]:\(port)" }
            return "\(ip):\(port)"
        }
        addresses = (text(context.channel.remoteAddress), text(context.channel.localAddress))
        session.address = addresses.remote
        shard.connections[session.clientID] = self
        shard.totalConnections += 1
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        shard.connections[session.clientID] = nil
        channel = nil
        self.context = nil
    }

    /// CLIENT LIST's line for this connection (on its loop).
    func facts() -> ClientFacts {
        var f = ClientFacts(id: session.clientID, addr: addresses.remote, laddr: addresses.local)
        let now = NIODeadline.now()
        f.name = session.name ?? ""
        f.age = (now - created).nanoseconds / 1_000_000_000
        f.idle = (now - lastCommandAt).nanoseconds / 1_000_000_000
        f.subscribed = !session.channels.isEmpty
        f.noEvict = session.noEvict
        f.sub = session.channels.count
        f.qbuf = meter.bytes
        f.obl = readyBytes
        f.oll = ready.count
        f.omem = readyBytes + ((try? channel?.syncOptions?.getOption(.bufferedWritableBytes)) ?? 0)
        f.cmd = lastCommand
        f.resp = session.version == .v3 ? 3 : 2
        f.libName = session.libName
        f.libVersion = session.libVersion
        f.user = session.user
        return f
    }

    /// INFO's keyspace_hits and keyspace_misses: each key read that found a value, or none.
    func countReads(_ reqs: [(key: [UInt8], request: KeyRequest)], _ replies: [NodeReply]) {
        for (r, reply) in zip(reqs, replies) {
            switch (r.request, reply) {
            case (.read, .value(let v)), (.readData, .value(let v)):
                if v == nil { shard.keyspaceMisses += 1 } else { shard.keyspaceHits += 1 }
            case (.readData, .done): shard.keyspaceHits += 1
            default: continue
            }
        }
    }

    /// CLIENT KILL: close now, or after the reply to command `seq` (the connection that asked).
    func kill(after seq: UInt64?) {
        guard let seq else {
            channel?.close(promise: nil)
            return
        }
        if closeAfter == nil || closeAfter! > seq { closeAfter = seq }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let command = unwrapInboundIn(data)
        guard closeAfter == nil, !evicted else { return }
        // A blocked command holds the connection's later commands until it answers (as Redis).
        if blocked != nil {
            held.append(command)
            if held.count >= Self.unansweredMax && !readingPaused { pauseReading(context: context) }
            return
        }
        handle(command, context: context)
    }

    /// Plans and runs one command.
    func handle(_ command: RESPCommand, context: ChannelHandlerContext) {
        guard closeAfter == nil, !evicted else { return }
        let seq = nextSeq
        nextSeq += 1
        let start = NIODeadline.now()
        lastCommandAt = start
        let counter = shard.counter(for: command.args)
        if let counter { lastCommand = counter.name }
        if shard.monitoring { showToMonitors(command.args) }
        // CLIENT REPLY: this command's reply is dropped after SKIP, while OFF, and for OFF and SKIP
        // themselves (their flags are set by the time the plan is made).
        let skipped = session.skipNextReply
        session.skipNextReply = false
        let plan = processor.plan(command, session: &session)
        // Subscription confirmations are pub/sub frames, not replies: CLIENT REPLY OFF leaves them
        // (as Redis; its pubsub suite waited for them forever).
        var isSubscription = false
        if case .connection = plan { isSubscription = true }
        if !isSubscription && (skipped || session.repliesOff || session.skipNextReply) {
            silenced.insert(seq)
        }
        let version = session.version
        let shard = self.shard
        // A blocking SYNC counts in blocked_clients while it waits.
        var isBlockingPlan = false
        if case .blocking = plan { isBlockingPlan = true }
        let blocking =
            !isBlockingPlan && counter?.blocking == true
            && command.args.contains(where: { String(decoding: $0, as: UTF8.self).uppercased() == "BLOCK" })
        if blocking { shard.blocked += 1 }
        // INFO commandstats: a finished call's time and outcome, on this loop.
        let count: (RESPValue) -> Void = { value in
            if blocking { shard.blocked -= 1 }
            guard let counter else { return }
            shard.finished(counter, since: start, reply: value, rejected: CommandProcessor.isRejection(value))
        }
        let shardBound = NIOLoopBound(count, eventLoop: context.eventLoop)
        switch plan {
        case .reply(let v):
            count(v)
            fill(seq, v, version, context: context)
        case .replyAndClose(let v):
            count(v)
            closeAfter = seq
            fill(seq, v, version, context: context)
        case .requests(let reqs, let build) where reqs.count == 1:
            // One key (most commands): no combined future.
            let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            execute(reqs[0].key, reqs[0].request, context: context).whenComplete { r in
                let reply: NodeReply
                switch r {
                case .success(let v): reply = v
                case .failure: reply = .unavailable("node stopped")
                }
                let (handler, context) = loopBound.value
                handler.countReads(reqs, [reply])
                let value = build([reply])
                shardBound.value(value)
                handler.fill(seq, value, version, context: context)
            }
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
                handler.countReads(reqs, replies)
                let value = build(replies)
                shardBound.value(value)
                handler.fill(seq, value, version, context: context)
            }
        // Sync push hook: frames that answer one command, and the outlet for later pushes.
        case .connection(let body):
            let values = body(outlet(context: context))
            var buffer = context.channel.allocator.buffer(capacity: 64)
            for v in values {
                if case .error(let text) = v { shard.error(text) }
                RESPEncoder.encode(v, version: session.version, into: &buffer)
            }
            count(values.first ?? .null)
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
                shardBound.value(value)
                handler.fill(seq, value, version, context: context)
            }
        case .barrier(let make):
            runBarrier(seq, make, version, shardBound, context: context)
        case .blocking(let call):
            startBlocking(seq, call, version, shardBound, context: context)
        case .run(let task):
            let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            let promise = context.eventLoop.makePromise(of: RESPValue.self)
            promise.completeWithTask { await task() }
            promise.futureResult.whenSuccess { value in
                let (handler, context) = loopBound.value
                shardBound.value(value)
                handler.fill(seq, value, version, context: context)
            }
        case .frontend(let body):
            let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            let view = ConnectionView(
                handler: NIOLoopBound(self, eventLoop: context.eventLoop), registry: registry, seq: seq,
                eventLoop: context.eventLoop)
            body(view).hop(to: context.eventLoop).whenComplete { result in
                let (handler, context) = loopBound.value
                let value: RESPValue
                switch result {
                case .success(let v): value = v
                case .failure(let e): value = .error("ERR \(e)")
                }
                shardBound.value(value)
                handler.fill(seq, value, version, context: context)
            }
        }
        // Reading a command changes only the count of unanswered ones (replies are measured where
        // they are released).
        if !readingPaused && nextSeq - headSeq >= Self.unansweredMax { pauseReading(context: context) }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        endBurst()
        checkMemory(context: context, output: outputBytes(context: context))
        context.fireChannelReadComplete()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        outputChanged(context: context)
        context.fireChannelWritabilityChanged()
    }

    /// Replies were released or drained: check the memory bounds and the reading pause, with one
    /// measurement of the output for both.
    func outputChanged(context: ChannelHandlerContext) {
        let output = outputBytes(context: context)
        checkMemory(context: context, output: output)
        if !evicted { adjustReading(context: context, output: output) }
    }

    /// Reply bytes the client has not taken: waiting for earlier replies, or in the channel's
    /// outbound buffer (written, not yet accepted by the socket).
    func outputBytes(context: ChannelHandlerContext) -> Int {
        let buffered = (try? context.channel.syncOptions?.getOption(.bufferedWritableBytes)) ?? 0
        return readyBytes + buffered
    }

    /// Stops reading while too many commands or `output` reply bytes wait; starts again when both
    /// drained to half.
    func adjustReading(context: ChannelHandlerContext, output: Int) {
        let unanswered = nextSeq - headSeq
        if !readingPaused {
            if unanswered >= Self.unansweredMax || output >= Self.outputPauseBytes {
                pauseReading(context: context)
            }
        } else if unanswered < Self.unansweredMax / 2 && output < Self.outputPauseBytes / 2
            && held.count < Self.unansweredMax / 2
        {
            readingPaused = false
            context.channel.setOption(.autoRead, value: true).whenFailure { _ in }
            context.read()
        }
    }

    func pauseReading(context: ChannelHandlerContext) {
        readingPaused = true
        context.channel.setOption(.autoRead, value: false).whenFailure { _ in }
    }

    /// Closes this connection if its `output` reply bytes pass the output limit or the clients'
    /// memory passes its bound; otherwise reports its buffers to the gate when they changed enough.
    func checkMemory(context: ChannelHandlerContext, output: Int) {
        guard !evicted else { return }
        if output > gate.outputBytesMax {
            gate.evictedForOutput()
            evict(
                context: context,
                "\(output) reply bytes waiting pass client_output_buffer_limit (\(gate.outputBytesMax))")
            return
        }
        let now = output + meter.bytes
        guard abs(now - reportedBytes) >= Self.reportStepBytes || (now == 0 && reportedBytes != 0) else {
            return
        }
        let fits = gate.account(now - reportedBytes)
        reportedBytes = now
        // CLIENT NO-EVICT on: the total's bound does not close this one (the output limit still does).
        if !fits && !session.noEvict {
            evict(context: context, "clients' buffers pass maxmemory_clients (\(gate.memoryBytesMax) bytes)")
        }
    }

    func evict(context: ChannelHandlerContext, _ why: String) {
        evicted = true
        logger.notice(
            "client connection closed: \(why)",
            metadata: ["client": "\(context.remoteAddress.map { "\($0)" } ?? "?")"])
        context.close(promise: nil)  // channelInactive drops the waiting replies and gives the bytes back
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
        // Ordered per Paxos key: the members of a hash-tag group run in order, as one key's requests.
        let tail = node.layout.paxosKey(key)
        if case .write(.data(let args)) = request, DataModel.isStreamWrite(args), barrierTail == nil,
            tail == key
        {
            if let run = openRuns[tail], run.takes(args) { return run.add(args, on: loop) }
            // A run opens behind the request before it on the key, or else behind the end of the
            // bytes read now, and closes when that one answers (or those are all handled).
            let previous: EventLoopFuture<Void> =
                keyTail[tail].map { $0.done.map { _ in () } } ?? burstEnd(loop)
            let run = StreamRun()
            openRuns[tail] = run
            let reply = run.add(args, on: loop)
            let done = loop.makePromise(of: NodeReply.self)
            let loopBound = NIOLoopBound(self, eventLoop: loop)
            previous.whenComplete { _ in
                let handler = loopBound.value
                if handler.openRuns[tail] === run { handler.openRuns[tail] = nil }
                run.send(key, node: node, on: loop).whenComplete { done.completeWith($0) }
            }
            holdTail(tail, id, done.futureResult)
            return reply
        }
        // Anything else on the key goes after an open run, which takes no more.
        openRuns[tail] = nil
        let previous: EventLoopFuture<Void>? =
            switch (keyTail[tail], barrierTail) {
            case (nil, nil): nil
            case (let k?, nil): k.done.map { _ in () }
            case (nil, let b?): b.done
            case (let k?, let b?): k.done.and(b.done).map { _ in () }
            }
        if let previous {
            let promise = loop.makePromise(of: NodeReply.self)
            previous.whenComplete { _ in
                promise.completeWith(node.execute(key: key, request).hop(to: loop))
            }
            future = promise.futureResult
        } else {
            future = node.execute(key: key, request).hop(to: loop)
        }
        holdTail(tail, id, future)
        return future
    }

    /// Makes request `id` (done when `future` completes) the last of this connection's on Paxos
    /// key `tail`, until it completes or a later one takes its place.
    func holdTail(_ tail: [UInt8], _ id: UInt64, _ future: EventLoopFuture<NodeReply>) {
        keyTail[tail] = (id, future)
        let loopBound = NIOLoopBound(self, eventLoop: future.eventLoop)
        future.whenComplete { _ in
            let handler = loopBound.value
            if handler.keyTail[tail]?.id == id { handler.keyTail[tail] = nil }
        }
    }

    /// Completed once the commands read with the current bytes have all been handled: at
    /// `channelReadComplete`, or by a task on this loop, which runs after the loop's reads of this
    /// turn (for commands handled outside a read: those held behind a blocking command).
    func burstEnd(_ loop: any EventLoop) -> EventLoopFuture<Void> {
        if let b = burst { return b.futureResult }
        let p = loop.makePromise(of: Void.self)
        burst = p
        let loopBound = NIOLoopBound(self, eventLoop: loop)
        loop.execute { loopBound.value.endBurst() }
        return p.futureResult
    }

    func endBurst() {
        let b = burst
        burst = nil
        b?.succeed(())
    }

    /// A `.barrier` plan: runs once the connection's earlier key requests (and barrier) are done;
    /// key requests read meanwhile wait for it (`execute`).
    func runBarrier(
        _ seq: UInt64, _ make: @escaping @Sendable () -> EventLoopFuture<RESPValue>, _ version: RESPVersion,
        _ shardBound: NIOLoopBound<(RESPValue) -> Void>, context: ChannelHandlerContext
    ) {
        let loop = context.eventLoop
        var before: [EventLoopFuture<Void>] = keyTail.values.map { $0.done.map { _ in () } }
        if let b = barrierTail { before.append(b.done) }
        openRuns.removeAll()
        requestIDs += 1
        let id = requestIDs
        let result = EventLoopFuture.whenAllComplete(before, on: loop).flatMap { _ in make().hop(to: loop) }
        let done = result.map { _ in () }.recover { _ in () }
        barrierTail = (id, done)
        let loopBound = NIOLoopBound((self, context), eventLoop: loop)
        result.whenComplete { r in
            let (handler, context) = loopBound.value
            if handler.barrierTail?.id == id { handler.barrierTail = nil }
            let value: RESPValue
            switch r {
            case .success(let v): value = v
            case .failure(let e): value = .error("ERR \(e)")
            }
            shardBound.value(value)
            handler.fill(seq, value, version, context: context)
        }
    }

    func fill(_ seq: UInt64, _ value: RESPValue, _ version: RESPVersion, context: ChannelHandlerContext) {
        if case .error(let text) = value { shard.error(text) }
        var buffer = context.channel.allocator.buffer(capacity: 64)
        RESPEncoder.encode(value, version: version, into: &buffer)
        release(seq, buffer, context: context)
    }

    /// MONITOR: this command as Redis shows it (AUTH, HELLO … AUTH and ACL SETUSER redacted; a
    /// MONITOR connection's own commands are not shown).
    func showToMonitors(_ args: [[UInt8]]) {
        guard !monitoring, let first = args.first else { return }
        let name = String(decoding: first, as: UTF8.self).lowercased()
        let sub = args.count > 1 ? String(decoding: args[1], as: UTF8.self).lowercased() : ""
        let redact =
            name == "auth" || (name == "hello" && args.count > 2) || (name == "acl" && sub == "setuser")
            || (name == "config" && sub == "set" && args.count > 2
                && String(decoding: args[2], as: UTF8.self).lowercased() == "requirepass")
        registry.monitor(
            FrontendRegistry.monitorLine(args, address: addresses.remote, redact: redact), except: pushOutlet)
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
        cancelBlocking()
        held = []
        evicted = true  // late replies are dropped, not kept
        ready = [:]
        readyBytes = 0
        _ = gate.account(-reportedBytes)
        reportedBytes = 0
        context.fireChannelInactive()
    }

    /// Writes the encoded reply `seq` once every earlier one is out.
    func release(_ seq: UInt64, _ buffer: ByteBuffer, context: ChannelHandlerContext) {
        guard !evicted else { return }
        let kept = silenced.isEmpty || silenced.remove(seq) == nil ? buffer : ByteBuffer()
        ready[seq] = kept
        readyBytes += kept.readableBytes
        var wrote = false
        while let b = ready.removeValue(forKey: headSeq) {
            readyBytes -= b.readableBytes
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
        outputChanged(context: context)
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

/// Stream writes of one connection on one key, sent as one `multi` write (`DataModel.streamRun`)
/// once the connection's request before them on the key has answered (or, with none, once the
/// bytes read with them are all handled: `burstEnd`): one Paxos instance, the
/// writes applied in the order sent, each answered with its own reply. Atomic together, which
/// each pipelined command alone already was; a run whose outcome is unknown answers every one of
/// its writes with that outcome. One write alone is sent as itself. Used on its channel's loop only.
final class StreamRun {
    /// A run takes at most this many writes and argument bytes (a write beyond them opens the
    /// next run, behind this one): the `multi` travels to the key's proposer in one peer frame.
    static let writesMax = 256
    static let bytesMax = 256 << 10
    var writes: [[[UInt8]]] = []
    var bytes = 0
    var replies: [EventLoopPromise<NodeReply>] = []

    static func size(_ args: [[UInt8]]) -> Int { args.reduce(8) { $0 + 8 + $1.count } }

    /// Whether `args` may join this run.
    func takes(_ args: [[UInt8]]) -> Bool {
        writes.count < Self.writesMax && bytes + Self.size(args) <= Self.bytesMax
    }

    func add(_ args: [[UInt8]], on loop: any EventLoop) -> EventLoopFuture<NodeReply> {
        let p = loop.makePromise(of: NodeReply.self)
        bytes += Self.size(args)
        writes.append(args)
        replies.append(p)
        return p.futureResult
    }

    /// Sends the run; completes each write's reply, and the returned future when all are.
    func send(_ key: [UInt8], node: Node, on loop: any EventLoop) -> EventLoopFuture<NodeReply> {
        let writes = self.writes
        let replies = self.replies
        if writes.count == 1 {
            let f = node.execute(key: key, .write(.data(writes[0]))).hop(to: loop)
            f.whenComplete { replies[0].completeWith($0) }
            return f
        }
        let f = node.execute(key: key, .write(.data(DataModel.streamRun(writes)))).hop(to: loop)
        f.whenComplete { r in
            switch r {
            case .success(.done(.data(let d))):
                guard let each = DataModel.streamRunReplies(d, count: writes.count) else {
                    for p in replies { p.succeed(.done(.data(d))) }
                    return
                }
                for (p, one) in zip(replies, each) { p.succeed(.done(.data(one))) }
            case .success(let whole):
                for p in replies { p.succeed(whole) }
            case .failure(let e):
                for p in replies { p.fail(e) }
            }
        }
        return f
    }
}
