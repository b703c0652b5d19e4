import Atomics
import Logging
import NIOCore
import TernCore

/// One peer connection: handshake, frame decoding, batch delivery, heartbeats, fault delays.
///
/// Lives on its channel's event loop and is the only handler in the pipeline. The transport
/// reaches it through a `NIOLoopBound` (`ConnectionHandle`) to write batches.
package final class PeerChannelHandler: ChannelInboundHandler {
    package typealias InboundIn = ByteBuffer
    package typealias OutboundOut = ByteBuffer

    private let transport: PeerTransport
    private var handshake: Handshake
    private var logger: Logger
    private var context: ChannelHandlerContext?
    /// Bytes received but not yet decoded into a whole frame.
    private var cumulation: ByteBuffer?
    /// Messages decoded during the current read burst, delivered at `channelReadComplete`.
    private var pending: [ByteBuffer] = []
    /// Batches held back by an incoming delay fault, oldest first.
    private var incomingDelayed = CircularBuffer<(due: NIODeadline, messages: [ByteBuffer])>()
    private var incomingTimer: Scheduled<Void>?
    /// Encoded writes held back by an outgoing delay fault, oldest first.
    private var outgoingDelayed = CircularBuffer<DelayedWrite>()
    private var outgoingTimer: Scheduled<Void>?
    private var heartbeat: Scheduled<Void>?
    private var openedAt = NIODeadline.now()
    private var lastRead = NIODeadline.now()
    private var lastWrite = NIODeadline.now()
    private var started = false
    private var closing = false

    private struct DelayedWrite {
        var due: NIODeadline
        var bytes: ByteBuffer
        var messages: Int
        var frames: Int
    }

    /// A handler for a connection this node accepted (the fuzz target drives one directly).
    package convenience init(acceptedBy transport: PeerTransport) {
        self.init(transport: transport, role: .listener)
    }

    /// A handler for a connection this node dialled to `peer`.
    package convenience init(dialledBy transport: PeerTransport, to peer: NodeID) {
        self.init(transport: transport, role: .dialer(peer: peer))
    }

    init(transport: PeerTransport, role: Handshake.Role) {
        self.transport = transport
        let config = transport.config
        self.handshake = Handshake(
            clusterName: config.clusterName, me: config.me, secret: config.secret, role: role,
            checkDialer: { [transport] id in transport.checkDialer(id) })
        self.logger = transport.logger
        if case .dialer(let peer) = role { logger[metadataKey: "peer"] = "\(peer)" }
    }

    private var established: Bool { handshake.peer != nil }
    private var bodyBytesMax: Int {
        established ? transport.config.maxFrameBytes : FrameCodec.handshakeBodyBytesMax
    }

    // MARK: lifecycle

    package func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        if context.channel.isActive { start(context) }
    }

    package func channelActive(context: ChannelHandlerContext) {
        start(context)
        context.fireChannelActive()
    }

    private func start(_ context: ChannelHandlerContext) {
        guard !started else { return }
        started = true
        openedAt = .now()
        lastRead = openedAt
        lastWrite = openedAt
        if let remote = context.remoteAddress { logger[metadataKey: "remote"] = "\(remote)" }
        guard transport.register(context.channel) else {
            context.close(promise: nil)
            return
        }
        if case .dialer = handshake.role {
            write(context, .hello(handshakeHello()))
        }
        armHeartbeat(context)
    }

    private func handshakeHello() -> Frame.Hello {
        guard case .hello(let h) = handshake.start(nonce: Handshake.freshNonce()) else {
            preconditionFailure("a dialer's first frame is a hello")
        }
        return h
    }

    package func channelInactive(context: ChannelHandlerContext) {
        closing = true
        deliverPending()  // whole frames read before the close (or before a bad frame) are good
        heartbeat?.cancel()
        incomingTimer?.cancel()
        outgoingTimer?.cancel()
        if let cumulation, established {
            do throws(FrameError) {
                try FrameCodec.checkEnd(cumulation)
            } catch {
                transport.counters.framingErrors.wrappingIncrement(ordering: .relaxed)
                logger.warning(
                    "connection closed mid-frame; partial frame discarded", metadata: ["error": "\(error)"])
            }
        }
        cumulation = nil
        let lost = outgoingDelayed.reduce(0) { $0 + $1.messages }
        if lost > 0 { transport.counters.lostInFlight.wrappingIncrement(by: lost, ordering: .relaxed) }
        outgoingDelayed.removeAll()
        incomingDelayed.removeAll()
        pending.removeAll()
        transport.connectionClosed(context.channel, peer: handshake.peer)
        context.fireChannelInactive()
    }

    package func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    package func errorCaught(context: ChannelHandlerContext, error: any Error) {
        logger.debug("peer connection error; closing", metadata: ["error": "\(error)"])
        close(context)
    }

    package func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable, let peer = handshake.peer {
            transport.scheduleFlush(peer)
        }
        context.fireChannelWritabilityChanged()
    }

    private func close(_ context: ChannelHandlerContext) {
        guard !closing else { return }
        closing = true
        context.close(promise: nil)
    }

    // MARK: reading

    package func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !closing else { return }
        let bytes = unwrapInboundIn(data)
        lastRead = .now()
        transport.counters.bytesReceived.wrappingIncrement(by: bytes.readableBytes, ordering: .relaxed)
        if cumulation == nil {
            cumulation = bytes
        } else {
            var bytes = bytes
            cumulation!.writeBuffer(&bytes)
        }
        while !closing, cumulation != nil {
            let frame: Frame?
            do throws(FrameError) {
                frame = try FrameCodec.decode(&cumulation!, bodyBytesMax: bodyBytesMax)
            } catch {
                transport.counters.framingErrors.wrappingIncrement(ordering: .relaxed)
                if !established { transport.counters.authFailures.wrappingIncrement(ordering: .relaxed) }
                logger.warning("closing peer connection", metadata: ["error": "\(error)"])
                deliverPending()  // whole frames that arrived before the bad one are good
                cumulation = nil  // the rest is garbage, already counted once
                close(context)
                return
            }
            guard let frame else { break }
            handle(frame, context)
        }
        // A close above may already have run channelInactive, which drops the cumulation.
        if cumulation?.readableBytes == 0 {
            cumulation = nil
        } else if let index = cumulation?.readerIndex, index > 1 << 16 {
            cumulation!.discardReadBytes()
        }
    }

    package func channelReadComplete(context: ChannelHandlerContext) {
        deliverPending()
        context.fireChannelReadComplete()
    }

    private func deliverPending() {
        guard !pending.isEmpty, let peer = handshake.peer else { return }
        let batch = pending
        pending = []
        transport.deliver(batch, from: peer)
    }

    private func handle(_ frame: Frame, _ context: ChannelHandlerContext) {
        guard let peer = handshake.peer else {
            let action = handshake.receive(frame, nonce: Handshake.freshNonce())
            perform(action, context)
            return
        }
        switch frame {
        case .batch(let messages):
            transport.counters.framesReceived.wrappingIncrement(ordering: .relaxed)
            transport.counters.messagesReceived.wrappingIncrement(by: messages.count, ordering: .relaxed)
            receive(messages, from: peer, context)
        case .ping:
            break
        case .hello, .challenge, .response, .reject:
            transport.counters.framingErrors.wrappingIncrement(ordering: .relaxed)
            logger.warning("closing peer connection: \(frame.kind) frame after the handshake")
            close(context)
        }
    }

    private func receive(_ messages: [ByteBuffer], from peer: NodeID, _ context: ChannelHandlerContext) {
        switch transport.fault(for: peer).incoming {
        case .drop:
            transport.counters.faultDropped.wrappingIncrement(by: messages.count, ordering: .relaxed)
        case .delay(let amount):
            incomingDelayed.append((.now() + amount, messages))
            armIncomingTimer(context)
        case .none:
            if incomingDelayed.isEmpty {
                pending += messages
            } else {
                // Keep order behind batches still held back by a delay that was just lifted.
                incomingDelayed.append((.now(), messages))
                armIncomingTimer(context)
            }
        }
    }

    private func armIncomingTimer(_ context: ChannelHandlerContext) {
        guard incomingTimer == nil, let due = incomingDelayed.first?.due else { return }
        incomingTimer = context.eventLoop.assumeIsolated().scheduleTask(deadline: due) { [self] in
            incomingTimer = nil
            guard !closing, let peer = handshake.peer else { return }
            let now = NIODeadline.now()
            var batch: [ByteBuffer] = []
            while let head = incomingDelayed.first, head.due <= now {
                batch += incomingDelayed.removeFirst().messages
            }
            if !batch.isEmpty { transport.deliver(batch, from: peer) }
            armIncomingTimer(context)
        }
    }

    private func perform(_ action: Handshake.Action, _ context: ChannelHandlerContext) {
        switch action {
        case .send(let frame):
            write(context, frame)
        case .establish(let peer, let frame):
            if let frame { write(context, frame) }
            logger[metadataKey: "peer"] = "\(peer)"
            let handle = ConnectionHandle(
                channel: context.channel, handler: NIOLoopBound(self, eventLoop: context.eventLoop))
            if !transport.connectionEstablished(handle, peer: peer, dialled: isDialer) {
                close(context)
            }
        case .fail(let failure, let frame):
            transport.counters.authFailures.wrappingIncrement(ordering: .relaxed)
            transport.logHandshakeFailure(failure, logger: logger)
            if let frame { write(context, frame) }
            close(context)
        }
    }

    private var isDialer: Bool {
        if case .dialer = handshake.role { return true }
        return false
    }

    // MARK: writing

    /// Writes handshake and ping frames (not counted in the message metrics).
    private func write(_ context: ChannelHandlerContext, _ frame: Frame) {
        var buffer = context.channel.allocator.buffer(capacity: 128)
        FrameCodec.encode(frame, into: &buffer)
        lastWrite = .now()
        context.writeAndFlush(wrapOutboundOut(buffer), promise: nil)
    }

    /// Encodes `messages` as batch frames (split at `maxFrameBytes`) and writes them with one flush,
    /// now or, under a delay fault, at `notBefore` (and never before writes held back earlier).
    /// Called by the transport on this channel's event loop.
    func send(_ messages: [ByteBuffer], notBefore: NIODeadline?) {
        guard let context, established, !closing else {
            transport.counters.lostInFlight.wrappingIncrement(by: messages.count, ordering: .relaxed)
            return
        }
        let limit = transport.config.maxFrameBytes
        var total = 0
        for m in messages { total += 4 + m.readableBytes }
        var buffer = context.channel.allocator.buffer(
            capacity: total + FrameCodec.batchOverheadBytes(messages: 0))
        var frames = 0
        var start = 0
        var body = 4
        for (i, m) in messages.enumerated() {
            let size = 4 + m.readableBytes
            if i > start && body + size > limit {
                FrameCodec.writeBatch(messages[start..<i], into: &buffer)
                frames += 1
                start = i
                body = 4
            }
            body += size
        }
        FrameCodec.writeBatch(messages[start...], into: &buffer)
        frames += 1
        let now = NIODeadline.now()
        let write = DelayedWrite(
            due: max(now, notBefore ?? now), bytes: buffer, messages: messages.count, frames: frames)
        if write.due > now || !outgoingDelayed.isEmpty {
            outgoingDelayed.append(write)  // in order, behind anything still held back
            armOutgoingTimer(context)
        } else {
            writeOut(write, context)
        }
    }

    private func writeOut(_ write: DelayedWrite, _ context: ChannelHandlerContext) {
        lastWrite = .now()
        transport.counters.recordWrite(
            messages: write.messages, frames: write.frames, bytes: write.bytes.readableBytes)
        let promise = context.eventLoop.makePromise(of: Void.self)
        let counters = transport.counters
        let messages = write.messages
        promise.futureResult.whenFailure { _ in
            counters.lostInFlight.wrappingIncrement(by: messages, ordering: .relaxed)
        }
        context.writeAndFlush(wrapOutboundOut(write.bytes), promise: promise)
    }

    private func armOutgoingTimer(_ context: ChannelHandlerContext) {
        guard outgoingTimer == nil, let due = outgoingDelayed.first?.due else { return }
        outgoingTimer = context.eventLoop.assumeIsolated().scheduleTask(deadline: due) { [self] in
            outgoingTimer = nil
            guard !closing else { return }
            let now = NIODeadline.now()
            while let head = outgoingDelayed.first, head.due <= now {
                writeOut(outgoingDelayed.removeFirst(), context)
            }
            armOutgoingTimer(context)
        }
    }

    // MARK: timers

    /// Every heartbeat interval: end an unfinished handshake that is too old, close a connection
    /// that has been silent for the idle timeout, and ping if we have written nothing for a while.
    private func armHeartbeat(_ context: ChannelHandlerContext) {
        let config = transport.config
        heartbeat = context.eventLoop.assumeIsolated().scheduleTask(in: config.heartbeatInterval) { [self] in
            guard !closing else { return }
            let now = NIODeadline.now()
            if !established {
                if now - openedAt >= config.handshakeTimeout {
                    perform(.fail(.timeout, send: nil), context)
                    return
                }
            } else if now - lastRead >= config.idleTimeout {
                transport.counters.idleTimeouts.wrappingIncrement(ordering: .relaxed)
                logger.warning(
                    "closing peer connection: nothing received for \(Double((now - lastRead).nanoseconds) / 1e6) ms"
                )
                close(context)
                return
            } else if now - lastWrite >= config.heartbeatInterval {
                write(context, .ping)
            }
            armHeartbeat(context)
        }
    }
}

/// The transport's way to reach an authenticated connection from any thread.
struct ConnectionHandle: Sendable {
    let channel: any Channel
    let handler: NIOLoopBound<PeerChannelHandler>
    var id: ObjectIdentifier { ObjectIdentifier(channel) }
}
