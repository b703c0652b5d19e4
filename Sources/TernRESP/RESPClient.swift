import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// Why a ``RESPClient`` request failed (a server's `-ERR` reply is not a failure: it is returned
/// as ``RESPValue/error(_:)``).
public struct RESPClientError: Error, CustomStringConvertible, Hashable, Sendable {
    public var message: String

    public init(_ message: String) {
        self.message = message
    }

    /// The connection closed before the reply arrived.
    public static let connectionClosed = RESPClientError("connection closed before the reply arrived")
    /// No reply within the client's request timeout; the connection was closed, since a late
    /// reply could not be told apart from the next one.
    public static let timedOut = RESPClientError("no reply within the request timeout; connection closed")

    public var description: String { message }
}

/// An asynchronous RESP client over one TCP connection, with pipelining.
///
/// Requests from any number of tasks share the connection; each gets its own replies, in order.
/// ``pipeline(_:)`` writes many commands in one write and returns their replies in order.
///
/// Out-of-band frames go to ``pushes`` instead of to a request: RESP3 push frames (`>`), and,
/// on a RESP2 connection that has sent a subscribe command, arrays starting with `message`,
/// `pmessage` or `smessage` (until a push frame shows the connection is RESP3). A subscribe-family command (`SUBSCRIBE`, `PSUBSCRIBE`, `SSUBSCRIBE`
/// and their `UN…` forms) returns its first confirmation as its reply; confirmations for its other
/// channels arrive on ``pushes``.
///
/// Cancelling a waiting task makes it throw `CancellationError` at once; the reply, when it comes,
/// is read and dropped, so the connection stays in step. With a `requestTimeout`, a request that
/// waits longer fails every pending request with ``RESPClientError/timedOut`` and closes the
/// connection.
public final class RESPClient: Sendable {
    let channel: any Channel
    let pushStream: AsyncStream<RESPValue>
    let droppedPushes: NIOLockedValueBox<Int>

    init(channel: any Channel, pushes: AsyncStream<RESPValue>, droppedPushes: NIOLockedValueBox<Int>) {
        self.channel = channel
        self.pushStream = pushes
        self.droppedPushes = droppedPushes
    }

    /// Connects to a RESP server.
    /// - Parameters:
    ///   - requestTimeout: longest wait for a reply; `nil` waits forever.
    ///   - pushBufferLimit: push frames kept while nobody reads ``pushes``; beyond it the oldest
    ///     are dropped and counted in ``droppedPushCount``.
    ///   - limits: bounds on the replies accepted (a reply beyond them closes the connection).
    public static func connect(
        host: String, port: Int, group: any EventLoopGroup, requestTimeout: TimeAmount? = nil,
        pushBufferLimit: Int = 4096, limits: RESPLimits = .client
    ) async throws -> RESPClient {
        let (stream, continuation) = AsyncStream.makeStream(
            of: RESPValue.self, bufferingPolicy: .bufferingNewest(max(pushBufferLimit, 1)))
        let dropped = NIOLockedValueBox(0)
        let channel = try await ClientBootstrap(group: group)
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        ByteToMessageHandler(RESPValueDecoder(limits: limits)))
                    try channel.pipeline.syncOperations.addHandler(
                        RESPClientHandler(
                            pushes: continuation, dropped: dropped, requestTimeout: requestTimeout))
                }
            }
            .connect(host: host, port: port).get()
        return RESPClient(channel: channel, pushes: stream, droppedPushes: dropped)
    }

    /// Sends one command and returns its reply (an `-ERR` reply is returned, not thrown).
    /// - Throws: ``RESPClientError``, ``RESPProtocolError`` or a connection error if no reply
    ///   can arrive; `CancellationError` if the task is cancelled.
    public func send(_ args: [[UInt8]]) async throws -> RESPValue {
        try await pipeline([args])[0]
    }

    /// Sends one command given as text (UTF-8) and returns its reply.
    public func send(_ args: [String]) async throws -> RESPValue {
        try await send(args.map { Array($0.utf8) })
    }

    /// Sends every command in one write and returns their replies in order.
    public func pipeline(_ commands: [[[UInt8]]]) async throws -> [RESPValue] {
        if commands.isEmpty { return [] }
        precondition(!commands.contains(where: \.isEmpty), "RESPClient: a command needs at least its name")
        let promise = channel.eventLoop.makePromise(of: [RESPValue].self)
        let request = RESPClientRequest(commands: commands, promise: promise)
        return try await withTaskCancellationHandler {
            channel.writeAndFlush(request).whenFailure { promise.fail($0) }
            return try await promise.futureResult.get()
        } onCancel: {
            promise.fail(CancellationError())
        }
    }

    /// Out-of-band frames (RESP3 push, RESP2 pub/sub messages), in arrival order. One consumer at
    /// a time; the stream ends when the connection closes.
    public var pushes: AsyncStream<RESPValue> { pushStream }

    /// Push frames dropped because ``pushes`` was not read fast enough.
    public var droppedPushCount: Int { droppedPushes.withLockedValue { $0 } }

    /// Whether the connection is open.
    public var isActive: Bool { channel.isActive }

    /// Closes the connection; requests still waiting fail with ``RESPClientError/connectionClosed``.
    public func close() async {
        try? await channel.close()
    }
}

/// A batch of commands and the promise for their replies.
struct RESPClientRequest: Sendable {
    var commands: [[[UInt8]]]
    var promise: EventLoopPromise<[RESPValue]>
}

/// Matches replies to requests in order and routes out-of-band frames to the push stream.
/// Lives on its channel's event loop only.
final class RESPClientHandler: ChannelDuplexHandler {
    typealias InboundIn = RESPValue
    typealias OutboundIn = RESPClientRequest
    typealias OutboundOut = ByteBuffer

    struct Pending {
        var id: UInt64
        /// Per command: the confirmation kind a subscribe-family command waits for, else nil.
        var confirmations: [String?]
        var replies: [RESPValue]
        var promise: EventLoopPromise<[RESPValue]>
    }

    let pushes: AsyncStream<RESPValue>.Continuation
    let dropped: NIOLockedValueBox<Int>
    let requestTimeout: TimeAmount?
    var pending = CircularBuffer<Pending>()
    var nextID: UInt64 = 0
    var closed = false
    /// A RESP2 connection that sent a subscribe command receives messages as plain arrays.
    var subscribed = false
    /// A push frame arrived, so the connection speaks RESP3 and its messages are push frames:
    /// arrays are replies again.
    var seenPush = false

    static let confirmationKinds: [String: String] = [
        "subscribe": "subscribe", "psubscribe": "psubscribe", "ssubscribe": "ssubscribe",
        "unsubscribe": "unsubscribe", "punsubscribe": "punsubscribe", "sunsubscribe": "sunsubscribe",
    ]
    static let messageKinds: Set<String> = ["message", "pmessage", "smessage"]

    init(
        pushes: AsyncStream<RESPValue>.Continuation, dropped: NIOLockedValueBox<Int>,
        requestTimeout: TimeAmount?
    ) {
        self.pushes = pushes
        self.dropped = dropped
        self.requestTimeout = requestTimeout
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let request = unwrapOutboundIn(data)
        guard !closed else {
            request.promise.fail(RESPClientError.connectionClosed)
            promise?.fail(RESPClientError.connectionClosed)
            return
        }
        var buffer = context.channel.allocator.buffer(capacity: 64 * request.commands.count)
        var confirmations: [String?] = []
        confirmations.reserveCapacity(request.commands.count)
        for command in request.commands {
            RESPEncoder.encodeCommand(command, into: &buffer)
            let name = String(decoding: command[0], as: UTF8.self).lowercased()
            let kind = Self.confirmationKinds[name]
            if kind != nil { subscribed = true }
            confirmations.append(kind)
        }
        let id = nextID
        nextID += 1
        pending.append(Pending(id: id, confirmations: confirmations, replies: [], promise: request.promise))
        if let timeout = requestTimeout {
            context.eventLoop.assumeIsolated().scheduleTask(in: timeout) { [self] in
                if let head = pending.first, head.id <= id {
                    failAll(RESPClientError.timedOut)
                    context.close(promise: nil)
                }
            }
        }
        context.write(wrapOutboundOut(buffer), promise: promise)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let value = unwrapInboundIn(data)
        if let kind = outOfBandKind(value) {
            // A subscribe confirmation answers the subscribe command waiting for it, if any.
            if let head = pending.first, head.confirmations[head.replies.count] == kind {
                deliver(value)
            } else {
                push(value)
            }
            return
        }
        if pending.isEmpty {
            push(value)  // nothing asked for it: treat as out of band rather than lose it
            return
        }
        deliver(value)
    }

    /// The kind (`message`, `subscribe`, …) of an out-of-band frame, or nil for a reply.
    func outOfBandKind(_ value: RESPValue) -> String? {
        switch value {
        case .push(let elements):
            seenPush = true
            return elements.first?.string?.lowercased() ?? ""
        case .array(let elements?) where subscribed && !seenPush:
            guard let kind = elements.first?.string?.lowercased(),
                Self.messageKinds.contains(kind) || Self.confirmationKinds[kind] != nil
            else { return nil }
            return kind
        default:
            return nil
        }
    }

    func deliver(_ value: RESPValue) {
        pending[pending.startIndex].replies.append(value)
        let head = pending[pending.startIndex]
        if head.replies.count == head.confirmations.count {
            pending.removeFirst()
            head.promise.succeed(head.replies)
        }
    }

    func push(_ value: RESPValue) {
        if case .dropped = pushes.yield(value) {
            dropped.withLockedValue { $0 += 1 }
        }
    }

    func failAll(_ error: any Error) {
        closed = true
        while let head = pending.popFirst() { head.promise.fail(error) }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        failAll(error)
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        failAll(RESPClientError.connectionClosed)
        pushes.finish()
        context.fireChannelInactive()
    }
}
