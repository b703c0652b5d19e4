import Atomics
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL
import NIOTLS
import TernCore

/// Node-to-node messaging over TCP: one authenticated connection per pair of nodes, messages
/// merged into one frame and one write per event-loop turn, whole batches handed to the node.
///
/// ```
///  send(m1, to: n2) ─┐   queue for n2 (bounded)        one write:            n2: one read burst
///  send(m2, to: n2) ─┼─► [m1 m2 m3] ── flush at end ──► [hdr|3|m1|m2|m3] ──► onBatch(n1, [m1,m2,m3])
///  send(m3, to: n2) ─┘                 of the turn
/// ```
/// Connections: between two nodes the one with the lower id dials, the other accepts, so a pair
/// has one connection and both directions share it. The dialer re-dials with exponential back-off
/// (jittered) after a failure; an authenticated connection that closes is re-dialled at once.
/// Every connection starts with the mutual HMAC handshake described in `Handshake`.
///
/// Delivery is best-effort: messages queued for a peer wait (bounded by `sendQueueBytesMax`) while
/// it is unreachable, but a message may be lost when a connection closes. Within one connection
/// order is kept, and a batch is delivered whole or not at all.
///
/// Threads: `send`, `setFault`, `updatePeers` and `metrics` may be called from any thread and never
/// block on IO. `onBatch` is called on an event loop of `group` and must not block it; it gets
/// the messages of every frame decoded from one socket read burst, so that the node can persist
/// them with one fsync before answering all of them.
public final class PeerTransport: Sendable {
    let config: TransportConfig
    let group: any EventLoopGroup
    let logger: Logger
    let counters = Counters()
    private let onBatch: @Sendable (_ from: NodeID, _ messages: [ByteBuffer]) -> Void
    let state: NIOLockedValueBox<State>

    enum Phase { case idle, running, stopping, stopped }

    struct State {
        var phase = Phase.idle
        var server: (any Channel)?
        var boundPort = 0
        var peers: [NodeID: PeerState] = [:]
        /// Every open channel, authenticated or not, so `shutdown` can close them all.
        var channels: [ObjectIdentifier: any Channel] = [:]
        /// Channels in `channels` that have not finished a handshake, oldest first, with the
        /// address they came from (bounded: `handshakingMax`, `handshakingPerSourceMax`).
        var handshaking: [(id: ObjectIdentifier, source: String)] = []
        /// Dial attempts whose TCP connect has not finished.
        var connecting: [UInt64: EventLoopFuture<any Channel>] = [:]
        var nextConnectID: UInt64 = 0
        /// When each handshake failure was last logged loudly (bounded: cleared at 64 entries).
        var failuresLogged: [String: NIODeadline] = [:]
    }

    struct PeerState {
        var address: PeerAddress?
        /// The loop this peer's dials run on.
        let loop: any EventLoop
        var queue: [ByteBuffer] = []
        var queuedBytes = 0
        /// When the queue may leave, if a message in it was sent under a delay fault. The fault
        /// is applied when a message is sent, not when it is flushed: a lifted delay must not
        /// release messages sent while it was set, even if the event loop flushes them late.
        var queueDue: NIODeadline?
        var flushScheduled = false
        var connection: ConnectionHandle?
        var everConnected = false
        var outgoingFault = PeerFault.none
        var incomingFault = PeerFault.none
        /// Dialer only: a connect or handshake is under way.
        var dialing = false
        var redial: Scheduled<Void>?
        var backoff: TimeAmount

        var knownAddress: PeerAddress? {
            guard let address, address.port != 0 else { return nil }
            return address
        }
    }

    /// Creates a transport; nothing happens on the network until `start()`.
    /// - Parameters:
    ///   - group: where connections and timers run. The caller owns it and shuts it down after
    ///     `shutdown()`.
    ///   - onBatch: called with every batch received from an authenticated peer, in order.
    public init(
        config: TransportConfig, group: any EventLoopGroup, logger: Logger,
        onBatch: @escaping @Sendable (_ from: NodeID, _ messages: [ByteBuffer]) -> Void
    ) {
        self.config = config
        self.group = group
        var logger = logger
        logger[metadataKey: "node"] = "\(config.me)"
        self.logger = logger
        self.onBatch = onBatch
        var s = State()
        for (id, address) in config.peers where id != config.me {
            s.peers[id] = PeerState(address: address, loop: group.next(), backoff: config.reconnectBackoffMin)
        }
        self.state = NIOLockedValueBox(s)
    }

    /// Checks the configuration, listens, and starts dialling the peers with higher ids.
    /// - Throws: `TransportError` with `.invalidConfig` (every problem listed), `.alreadyStarted`,
    ///   or `.bindFailed`.
    public func start() async throws {
        let problems = config.problems()
        guard problems.isEmpty else {
            throw TransportError(.invalidConfig, "invalid configuration: " + problems.joined(separator: "; "))
        }
        try state.withLockedValue { s in
            guard s.phase == .idle else {
                throw TransportError(.alreadyStarted, "start() may be called once, before shutdown()")
            }
            s.phase = .running
        }
        let server: any Channel
        do {
            server = try await ServerBootstrap(group: group)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .serverChannelOption(.backlog, value: 256)
                .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
                .childChannelOption(.socketOption(.so_keepalive), value: 1)
                .childChannelOption(.writeBufferWaterMark, value: Self.waterMark)
                .childChannelInitializer { [self] channel in
                    channel.eventLoop.makeCompletedFuture {
                        if let tls = config.tls {
                            try channel.pipeline.syncOperations.addHandler(
                                NIOSSLServerHandler(context: tls.server.current))
                            try channel.pipeline.syncOperations.addHandler(
                                PeerTLSWatcher(transport: self, peer: nil))
                        }
                        try channel.pipeline.syncOperations.addHandler(
                            PeerChannelHandler(transport: self, role: .listener))
                    }
                }
                .bind(host: config.listen.host, port: config.listen.port).get()
        } catch {
            state.withLockedValue { $0.phase = .stopped }
            throw TransportError(.bindFailed, "cannot listen on \(config.listen): \(error)")
        }
        let toDial = state.withLockedValue { s -> [NodeID]? in
            guard s.phase == .running else { return nil }  // shutdown() ran while we were binding
            s.server = server
            s.boundPort = server.localAddress?.port ?? 0
            return s.peers.keys.filter { dials($0) }
        }
        guard let toDial else {
            try? await server.close()
            return
        }
        logger.info(
            "peer transport listening", metadata: ["address": "\(server.localAddress.map { "\($0)" } ?? "?")"]
        )
        for peer in toDial { dial(peer) }
    }

    /// The port `start()` bound (useful with port 0); 0 before `start()`.
    public var boundPort: Int { state.withLockedValue { $0.boundPort } }

    /// Replaces the peer list: new peers are added (and dialled if this node dials them), changed
    /// addresses are used from the next dial on, missing peers are disconnected and forgotten
    /// (their queued messages are dropped). An entry for this node itself is ignored.
    public func updatePeers(_ peers: [NodeID: PeerAddress]) {
        var toClose: [any Channel] = []
        var toDial: [NodeID] = []
        state.withLockedValue { s in
            for (id, address) in peers where id != config.me {
                if s.peers[id] == nil {
                    s.peers[id] = PeerState(
                        address: address, loop: group.next(), backoff: config.reconnectBackoffMin)
                } else {
                    s.peers[id]!.address = address
                }
                let p = s.peers[id]!
                if s.phase == .running, dials(id), p.connection == nil, !p.dialing, p.knownAddress != nil {
                    s.peers[id]!.redial?.cancel()
                    s.peers[id]!.redial = nil
                    toDial.append(id)
                }
            }
            for id in s.peers.keys where peers[id] == nil || id == config.me {
                let p = s.peers.removeValue(forKey: id)!
                p.redial?.cancel()
                counters.dropped.wrappingIncrement(by: p.queue.count, ordering: .relaxed)
                if let c = p.connection { toClose.append(c.channel) }
            }
        }
        for channel in toClose { channel.close(promise: nil) }
        for id in toDial { dial(id) }
    }

    /// Queues `message` for `peer`. Never blocks. Messages queued for one peer before its
    /// connection's event loop next runs leave together as one frame (or several, if they pass
    /// `maxFrameBytes`) in one socket write.
    ///
    /// The message is dropped (and counted) if the peer is unknown or this node itself, if the
    /// queue is full, if it could never fit a frame, if the transport is shut down, or if an
    /// outgoing `drop` fault is set for the peer.
    public func send(_ message: ByteBuffer, to peer: NodeID) {
        send(CollectionOfOne(message), to: peer)
    }

    /// Queues `messages` for `peer`, in order, as `send(_:to:)` does for each, except that they are
    /// queued at once: they leave in one write, from any thread, unless together they pass
    /// `writeBytesMax` (then in consecutive writes). Use it to answer a whole received batch.
    public func send(_ messages: some Collection<ByteBuffer>, to peer: NodeID) {
        let limit = config.maxFrameBytes - 8
        if messages.allSatisfy({ $0.readableBytes <= limit }) {
            enqueue(messages, to: peer)
            return
        }
        for m in messages where m.readableBytes > limit {
            counters.dropped.wrappingIncrement(ordering: .relaxed)
            logger.error(
                "message of \(m.readableBytes) bytes can never fit a frame (maxFrameBytes \(config.maxFrameBytes)); dropped",
                metadata: ["peer": "\(peer)"])
        }
        enqueue(messages.filter { $0.readableBytes <= limit }, to: peer)
    }

    /// Queues messages that fit a frame, under one lock, and schedules the flush if needed.
    private func enqueue(_ fitting: some Collection<ByteBuffer>, to peer: NodeID) {
        guard !fitting.isEmpty else { return }
        let flushOn = state.withLockedValue { s -> ConnectionHandle? in
            guard s.phase == .idle || s.phase == .running, s.peers[peer] != nil else {
                counters.dropped.wrappingIncrement(by: fitting.count, ordering: .relaxed)
                return nil
            }
            return Self.modify(&s.peers[peer]!) { p -> ConnectionHandle? in
                if p.outgoingFault == .drop {
                    counters.faultDropped.wrappingIncrement(by: fitting.count, ordering: .relaxed)
                    return nil
                }
                var queued = 0
                for m in fitting {
                    guard p.queuedBytes + m.readableBytes <= config.sendQueueBytesMax else { continue }
                    p.queue.append(m)
                    p.queuedBytes += m.readableBytes
                    queued += 1
                }
                if queued < fitting.count {
                    counters.dropped.wrappingIncrement(by: fitting.count - queued, ordering: .relaxed)
                }
                guard queued > 0 else { return nil }
                if case .delay(let amount) = p.outgoingFault {
                    p.queueDue = max(p.queueDue ?? .distantPast, .now() + amount)
                }
                guard let c = p.connection, !p.flushScheduled else { return nil }
                p.flushScheduled = true
                return c
            }
        }
        if let c = flushOn {
            c.channel.eventLoop.execute { self.flush(peer, connection: c.id) }
        }
    }

    /// Sets a fault on traffic with `peer` (see `PeerFault`); `.none` lifts it. Setting an
    /// outgoing `drop` also discards what is queued for the peer.
    public func setFault(_ fault: PeerFault, for peer: NodeID, direction: FaultDirection = .outgoing) {
        let known = state.withLockedValue { s -> Bool in
            guard s.peers[peer] != nil else { return false }
            Self.modify(&s.peers[peer]!) { p in
                if direction != .incoming { p.outgoingFault = fault }
                if direction != .outgoing { p.incomingFault = fault }
                if p.outgoingFault == .drop && !p.queue.isEmpty {
                    counters.faultDropped.wrappingIncrement(by: p.queue.count, ordering: .relaxed)
                    p.queue = []
                    p.queuedBytes = 0
                    p.queueDue = nil
                }
            }
            return true
        }
        if known {
            logger.notice("fault switch: \(fault) for \(direction) traffic with \(peer)")
        } else {
            logger.warning("fault switch: \(peer) is not a peer of this node; nothing changed")
        }
    }

    /// Counters since `start()`, plus each peer's connection and queue state.
    public func metrics() -> TransportMetrics {
        var m = counters.snapshot()
        m.peers = state.withLockedValue { s in
            var out: [NodeID: PeerStatus] = [:]
            for (id, p) in s.peers {
                out[id] = PeerStatus(
                    address: p.address, connected: p.connection != nil, dials: dials(id),
                    queuedMessages: p.queue.count, queuedBytes: p.queuedBytes, outgoingFault: p.outgoingFault,
                    incomingFault: p.incomingFault)
            }
            return out
        }
        return m
    }

    /// Stops listening, closes every connection and cancels re-dials; queued messages are dropped.
    /// After it returns no `onBatch` call is made. Idempotent.
    public func shutdown() async {
        let (server, channels, connecting) = state.withLockedValue { s in
            guard s.phase == .running || s.phase == .idle else {
                return ((any Channel)?.none, [any Channel](), [EventLoopFuture<any Channel>]())
            }
            s.phase = .stopping
            for id in s.peers.keys {
                Self.modify(&s.peers[id]!) { p in
                    p.redial?.cancel()
                    p.redial = nil
                    counters.dropped.wrappingIncrement(by: p.queue.count, ordering: .relaxed)
                    p.queue = []
                    p.queuedBytes = 0
                    p.queueDue = nil
                }
            }
            return (s.server, Array(s.channels.values), Array(s.connecting.values))
        }
        if let server { try? await server.close() }
        for c in connecting {
            if let channel = try? await c.get() { channel.close(promise: nil) }
        }
        for c in channels { c.close(promise: nil) }
        let all = state.withLockedValue { Array($0.channels.values) } + channels
        for c in all { try? await c.closeFuture.get() }
        state.withLockedValue { s in
            if s.phase == .stopping { s.phase = .stopped }
        }
        logger.info("peer transport stopped")
    }

    // MARK: internals used by PeerChannelHandler

    /// The lower id dials; the higher accepts.
    private func dials(_ peer: NodeID) -> Bool { config.me < peer }

    /// In-place mutation of a dictionary value (no copy of its queue).
    private static func modify<T, R>(_ value: inout T, _ body: (inout T) -> R) -> R { body(&value) }

    static let waterMark = ChannelOptions.Types.WriteBufferWaterMark(low: 256 << 10, high: 1 << 20)

    /// For a listener: why `id` may not dial us, or nil if it may.
    func checkDialer(_ id: NodeID) -> RejectReason? {
        state.withLockedValue { s in
            guard id != config.me, s.peers[id] != nil else { return .unknownNode }
            return dials(id) ? .wrongDirection : nil
        }
    }

    /// Connections allowed to be in their handshake at once.
    static let handshakingMax = 64
    /// Connections from one address allowed to be in their handshake at once.
    static let handshakingPerSourceMax = 16

    /// A channel became active; false if the transport is stopping (the caller closes it).
    ///
    /// Past the bounds, the OLDEST connection still in its handshake is closed (from the same
    /// address if that address is over its share, else from the address holding most): a client
    /// that floods the peer port with silent connections only ever evicts its own, while an
    /// honest peer's handshake — one round trip — finishes long before it is the oldest. (Refusing
    /// the newest instead let a flood lock every peer out for `handshakeTimeout`.)
    func register(_ channel: any Channel) -> Bool {
        let id = ObjectIdentifier(channel)
        let source = channel.remoteAddress?.ipAddress ?? "?"
        let outcome = state.withLockedValue { s -> (ok: Bool, evict: (any Channel)?) in
            guard s.phase == .running else { return (false, nil) }
            var victim: Int?
            if s.handshaking.count(where: { $0.source == source }) >= Self.handshakingPerSourceMax {
                victim = s.handshaking.firstIndex { $0.source == source }
            } else if s.handshaking.count >= Self.handshakingMax {
                var bySource: [String: Int] = [:]
                for h in s.handshaking { bySource[h.source, default: 0] += 1 }
                let top = bySource.max { $0.value < $1.value }?.key
                victim = s.handshaking.firstIndex { $0.source == top }
            }
            var evicted: (any Channel)?
            if let v = victim {
                let old = s.handshaking.remove(at: v)
                evicted = s.channels.removeValue(forKey: old.id)
            }
            s.channels[id] = channel
            s.handshaking.append((id, source))
            return (true, evicted)
        }
        if let old = outcome.evict {
            counters.handshakesEvicted.wrappingIncrement(ordering: .relaxed)
            logger.log(
                level: firstInTenSeconds("handshake evicted") ? .warning : .debug,
                "closing the oldest connection still in its handshake: too many pending",
                metadata: ["newest-from": "\(source)"])
            old.close(promise: nil)
        }
        return outcome.ok
    }

    /// A handshake succeeded. Makes `handle` the peer's connection (closing an older one) and
    /// flushes what was queued. False if the connection must be closed instead.
    func connectionEstablished(_ handle: ConnectionHandle, peer: NodeID, dialled: Bool) -> Bool {
        enum Outcome { case refuse, accept(old: ConnectionHandle?, reconnect: Bool, flush: Bool) }
        let outcome = state.withLockedValue { s -> Outcome in
            s.handshaking.removeAll { $0.id == handle.id }
            guard s.phase == .running, s.peers[peer] != nil else { return .refuse }
            return Self.modify(&s.peers[peer]!) { p -> Outcome in
                let old = p.connection
                p.connection = handle
                if dialled {
                    p.dialing = false
                    p.backoff = config.reconnectBackoffMin
                }
                let reconnect = p.everConnected
                p.everConnected = true
                let flush = !p.queue.isEmpty
                if flush { p.flushScheduled = true }
                return .accept(old: old, reconnect: reconnect, flush: flush)
            }
        }
        guard case .accept(let old, let reconnect, let flush) = outcome else { return false }
        counters.connectionsEstablished.wrappingIncrement(ordering: .relaxed)
        if reconnect { counters.reconnects.wrappingIncrement(ordering: .relaxed) }
        logger.info(
            "peer connected", metadata: ["peer": "\(peer)", "role": "\(dialled ? "dialled" : "accepted")"])
        if let old {
            logger.info("replacing an older connection", metadata: ["peer": "\(peer)"])
            old.channel.close(promise: nil)
        }
        if flush { handle.channel.eventLoop.execute { self.flush(peer, connection: handle.id) } }
        return true
    }

    /// A channel closed (authenticated or not). Clears it, and for a dialled peer arranges the
    /// next dial: at once after a connection that had worked, with back-off after a failure.
    func connectionClosed(_ channel: any Channel, peer: NodeID?) {
        let id = ObjectIdentifier(channel)
        state.withLockedValue { s in
            s.channels[id] = nil
            s.handshaking.removeAll { $0.id == id }
            if let peer, s.peers[peer]?.connection?.id == id {
                s.peers[peer]!.connection = nil
                logger.info("peer disconnected", metadata: ["peer": "\(peer)"])
            }
        }
    }

    /// Messages for `peer` are waiting and its connection may take them (writability came back).
    func scheduleFlush(_ peer: NodeID) {
        let c = state.withLockedValue { s -> ConnectionHandle? in
            guard s.peers[peer] != nil else { return nil }
            return Self.modify(&s.peers[peer]!) { p -> ConnectionHandle? in
                guard let c = p.connection, !p.flushScheduled, !p.queue.isEmpty else { return nil }
                p.flushScheduled = true
                return c
            }
        }
        if let c { c.channel.eventLoop.execute { self.flush(peer, connection: c.id) } }
    }

    /// Runs on the connection's event loop: takes the head of the peer's queue, up to
    /// `writeBytesMax` (at least one message), and writes it. If more is queued, another flush
    /// follows as a separate event-loop task while the socket stays writable, so that heartbeats,
    /// timers and other connections' reads run between bulk writes and a ping never sits behind
    /// more than about one write in the channel's buffer.
    private func flush(_ peer: NodeID, connection: ObjectIdentifier) {
        enum Step {
            case nothing
            case write(ConnectionHandle, [ByteBuffer], NIODeadline?, more: Bool)
            case moveTo(ConnectionHandle)
        }
        let step = state.withLockedValue { s -> Step in
            guard s.peers[peer] != nil else { return .nothing }
            return Self.modify(&s.peers[peer]!) { p -> Step in
                p.flushScheduled = false
                guard let c = p.connection, !p.queue.isEmpty else { return .nothing }
                guard c.id == connection else {
                    // The connection was replaced since this flush was scheduled: flush on the new one.
                    p.flushScheduled = true
                    return .moveTo(c)
                }
                // Back-pressure: leave messages in the bounded queue until the socket drains.
                guard c.channel.isWritable else { return .nothing }
                var count = 0
                var bytes = 0
                while count < p.queue.count
                    && (count == 0 || bytes + p.queue[count].readableBytes <= config.writeBytesMax)
                {
                    bytes += p.queue[count].readableBytes
                    count += 1
                }
                let messages: [ByteBuffer]
                if count == p.queue.count {
                    messages = p.queue
                    p.queue = []
                } else {
                    messages = Array(p.queue[..<count])
                    p.queue.removeFirst(count)
                }
                p.queuedBytes -= bytes
                let due = p.queueDue
                let more = !p.queue.isEmpty
                if more {
                    p.flushScheduled = true
                } else {
                    p.queueDue = nil
                }
                return .write(c, messages, due, more: more)
            }
        }
        switch step {
        case .nothing:
            break
        case .write(let c, let messages, let due, let more):
            c.handler.value.send(messages, notBefore: due)
            if more { c.channel.eventLoop.execute { self.flush(peer, connection: c.id) } }
        case .moveTo(let c):
            c.channel.eventLoop.execute { self.flush(peer, connection: c.id) }
        }
    }

    /// Hands a batch to the node.
    func deliver(_ messages: [ByteBuffer], from peer: NodeID) {
        counters.batchesDelivered.wrappingIncrement(ordering: .relaxed)
        onBatch(peer, messages)
    }

    /// The faults set for traffic with `peer`.
    func fault(for peer: NodeID) -> (outgoing: PeerFault, incoming: PeerFault) {
        state.withLockedValue { s in
            guard let p = s.peers[peer] else { return (.none, .none) }
            return (p.outgoingFault, p.incomingFault)
        }
    }

    /// Logs a handshake failure at error level, but the same failure again within 10 s only at
    /// debug level: a misconfigured peer re-dials every second and must not flood the log.
    func logHandshakeFailure(_ failure: HandshakeFailure, logger: Logger) {
        logger.log(
            level: firstInTenSeconds(failure.description) ? .error : .debug,
            "peer handshake failed: \(failure)")
    }

    /// Counts and logs a TLS failure on a peer connection (a certificate from another CA, none, an
    /// expired one, or not TLS at all); loud once per 10 s per kind, like handshake failures.
    func tlsFailed(_ error: any Error, peer: NodeID?, remote: String) {
        counters.tlsFailures.wrappingIncrement(ordering: .relaxed)
        let what = "\(error)"
        logger.log(
            level: firstInTenSeconds("tls " + what) ? .error : .debug,
            "peer TLS failed: connection refused",
            metadata: ["peer": "\(peer.map { "\($0)" } ?? "?")", "remote": "\(remote)", "error": "\(what)"])
    }

    /// True the first time `event` happens in 10 s (then it is logged loudly; repeats at debug).
    private func firstInTenSeconds(_ event: String) -> Bool {
        let now = NIODeadline.now()
        return state.withLockedValue { s -> Bool in
            if let last = s.failuresLogged[event], now - last < .seconds(10) { return false }
            if s.failuresLogged.count >= 64 { s.failuresLogged.removeAll() }
            s.failuresLogged[event] = now
            return true
        }
    }

    // MARK: dialling

    private func dial(_ peer: NodeID) {
        let attempt = state.withLockedValue { s -> (PeerAddress, any EventLoop, UInt64)? in
            guard s.phase == .running, s.peers[peer] != nil else { return nil }
            return Self.modify(&s.peers[peer]!) { p -> (PeerAddress, any EventLoop, UInt64)? in
                p.redial = nil
                guard p.connection == nil, !p.dialing, let address = p.knownAddress else { return nil }
                p.dialing = true
                s.nextConnectID += 1
                return (address, p.loop, s.nextConnectID)
            }
        }
        guard let (address, loop, connectID) = attempt else { return }
        let future = ClientBootstrap(group: loop)
            .connectTimeout(config.connectTimeout)
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
            .channelOption(.socketOption(.so_keepalive), value: 1)
            .channelOption(.writeBufferWaterMark, value: Self.waterMark)
            .channelInitializer { [self] channel in
                channel.eventLoop.makeCompletedFuture {
                    if let tls = config.tls {
                        try channel.pipeline.syncOperations.addHandler(
                            NIOSSLClientHandler(context: tls.client.current, serverHostname: nil))
                        try channel.pipeline.syncOperations.addHandler(
                            PeerTLSWatcher(transport: self, peer: peer))
                    }
                    try channel.pipeline.syncOperations.addHandler(
                        PeerChannelHandler(transport: self, role: .dialer(peer: peer)))
                }
            }
            .connect(host: address.host, port: address.port)
        state.withLockedValue { s in
            s.connecting[connectID] = future
        }
        future.whenComplete { result in
            self.state.withLockedValue { _ = $0.connecting.removeValue(forKey: connectID) }
            switch result {
            case .success(let channel):
                channel.closeFuture.whenComplete { _ in
                    self.dialEnded(peer, channel: ObjectIdentifier(channel))
                }
            case .failure(let error):
                self.counters.connectFailures.wrappingIncrement(ordering: .relaxed)
                self.logger.debug(
                    "dial failed",
                    metadata: ["peer": "\(peer)", "address": "\(address)", "error": "\(error)"])
                self.dialEnded(peer, channel: nil)
            }
        }
    }

    /// A dial attempt or a dialled connection ended: schedule the next dial.
    private func dialEnded(_ peer: NodeID, channel: ObjectIdentifier?) {
        state.withLockedValue { s in
            guard s.phase == .running, s.peers[peer] != nil else { return }
            Self.modify(&s.peers[peer]!) { p in
                let wasEstablished = channel != nil && p.everConnected && !p.dialing
                p.dialing = false
                if let channel, p.connection?.id == channel { p.connection = nil }
                guard p.connection == nil, p.redial == nil else { return }
                // After a connection that had worked, re-dial almost at once (backoff was reset
                // when it was established); after a failure, wait longer each time.
                let delay = Self.jittered(p.backoff)
                if !wasEstablished { p.backoff = min(p.backoff * 2, config.reconnectBackoffMax) }
                p.redial = p.loop.scheduleTask(in: delay) { self.dial(peer) }
            }
        }
    }

    /// A delay in [backoff/2, backoff], so that nodes restarted together do not dial in lockstep.
    private static func jittered(_ backoff: TimeAmount) -> TimeAmount {
        let n = max(2, backoff.nanoseconds)
        return .nanoseconds(Int64.random(in: n / 2...n))
    }
}

/// Sits behind the TLS handler of a peer connection: TLS errors (another CA's certificate, no
/// certificate, a peer that does not speak TLS) are counted and logged, then passed on (the
/// connection closes). A connection that ends without close_notify after its TLS handshake (a peer
/// killed or restarted) is not a TLS failure.
final class PeerTLSWatcher: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    let transport: PeerTransport
    let peer: NodeID?
    var reported = false
    var handshakeDone = false

    init(transport: PeerTransport, peer: NodeID?) {
        self.transport = transport
        self.peer = peer
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let e = event as? TLSUserEvent, case .handshakeCompleted = e { handshakeDone = true }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        let afterHandshakeClose = handshakeDone && (error as? NIOSSLError) == .uncleanShutdown
        if !reported && !afterHandshakeClose && (error is NIOSSLError || error is BoringSSLError) {
            reported = true
            transport.tlsFailed(
                error, peer: peer, remote: context.channel.remoteAddress.map { "\($0)" } ?? "?")
        }
        context.fireErrorCaught(error)
    }
}
