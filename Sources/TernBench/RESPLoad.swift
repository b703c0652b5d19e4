import NIOCore
import NIOPosix
import TernRESP

/// `tern bench resp`: load on any RESP server (Tern, Redis, …) over raw NIO connections.
///
/// Requests are written straight into a `ByteBuffer` from precomputed pieces, and replies are only
/// framed (``RESPReplyScanner``), never built into values, so the generator spends as little CPU as
/// it can per request.
public enum RESPLoad {
    /// Runs the load against `host:port` and returns what it measured.
    /// - Parameters:
    ///   - serverPIDs: processes whose CPU time to report for the window (optional).
    ///   - alsoPorts: more ports of the same system (other nodes of a cluster): connection `i`
    ///     goes to `([port] + alsoPorts)[i % count]`; the prefill uses `port`.
    public static func run(
        host: String, port: Int, options: LoadOptions, serverPIDs: [Int32] = [], alsoPorts: [Int] = []
    )
        async throws
        -> LoadResult
    {
        let ports = [port] + alsoPorts
        if let problem = options.validationError() { throw LoadError(problem) }
        let prefill: @Sendable (MultiThreadedEventLoopGroup) async throws -> Void = { group in
            try await RESPLoad.prefill(host: host, port: port, options: options, group: group)
        }
        return try await LoadRunner.run(options: options, serverPIDs: serverPIDs, prefill: prefill) {
            loop, stats, index in
            let done = loop.makePromise(of: Void.self)
            let port = ports[index % ports.count]
            return ClientBootstrap(group: loop)
                .channelOption(.tcpOption(.tcp_nodelay), value: 1)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        let handler = RESPLoadHandler(
                            stats: stats.value, done: done,
                            requests: RESPRequests(options: options, connection: index))
                        try channel.pipeline.syncOperations.addHandler(handler)
                    }
                }
                .connect(host: host, port: port)
                .map { OpenConnection(channel: $0, done: done.futureResult) }
                .flatMapErrorThrowing { error in
                    done.succeed()
                    throw LoadError("cannot connect to \(host):\(port): \(error)")
                }
        }
    }
}

extension RESPLoad {
    /// Writes every key once: 8 connections, pipelines of 1000 SETs, through ``RESPClient``.
    static func prefill(host: String, port: Int, options: LoadOptions, group: any EventLoopGroup) async throws
    {
        let value = [UInt8](repeating: UInt8(ascii: "x"), count: options.valueBytes)
        let clients = min(8, options.connections)
        let batch = 1000
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            for c in 0..<clients {
                tasks.addTask {
                    let client: RESPClient
                    do {
                        client = try await RESPClient.connect(
                            host: host, port: port, group: group, requestTimeout: .seconds(60))
                    } catch {
                        throw LoadError("cannot connect to \(host):\(port): \(error)")
                    }
                    do {
                        for start in stride(from: c * batch, to: options.keys, by: clients * batch) {
                            let commands = (start..<min(start + batch, options.keys)).map {
                                [Array("SET".utf8), benchKey($0), value]
                            }
                            for reply in try await client.pipeline(commands) {
                                if case .error(let text) = reply {
                                    throw LoadError("prefill: SET answered -\(text)")
                                }
                            }
                        }
                    } catch {
                        await client.close()
                        throw error
                    }
                    await client.close()
                }
            }
            try await tasks.waitForAll()
        }
    }
}

/// A load run could not start or continue.
public struct LoadError: Error, CustomStringConvertible, Hashable, Sendable {
    public var description: String

    public init(_ description: String) {
        self.description = description
    }
}

/// Writes the workload's commands from precomputed pieces.
struct RESPRequests {
    var chooser: KeyChooser
    /// `*3 $3 SET $16 ` … then the key … then `\r\n$<len>\r\n<value>\r\n`.
    let setPrefix = ByteBuffer(string: "*3\r\n$3\r\nSET\r\n$16\r\nkey:")
    let setSuffix: ByteBuffer
    let getPrefix = ByteBuffer(string: "*2\r\n$3\r\nGET\r\n$16\r\nkey:")
    let incrPrefix = ByteBuffer(string: "*2\r\n$4\r\nINCR\r\n$20\r\ncounter:")
    let crlf = ByteBuffer(string: "\r\n")
    let seqNextPrefix = ByteBuffer(string: "*2\r\n$8\r\nSEQ.NEXT\r\n$")

    init(options: LoadOptions, connection: Int) {
        chooser = KeyChooser(options: options, connection: connection)
        var suffix = ByteBuffer(string: "\r\n$\(options.valueBytes)\r\n")
        suffix.writeRepeatingByte(UInt8(ascii: "x"), count: options.valueBytes)
        suffix.writeString("\r\n")
        setSuffix = suffix
    }

    var bytesPerRequest: Int { setPrefix.readableBytes + 12 + setSuffix.readableBytes + 32 }

    mutating func write(into buffer: inout ByteBuffer) {
        if chooser.options.command == .seqnext {
            let uid = chooser.options.hotKey ? 0 : chooser.rng.next(below: chooser.options.uids)
            let digits = String(uid)
            buffer.writeImmutableBuffer(seqNextPrefix)
            buffer.writeString("\(digits.utf8.count)\r\n\(digits)\r\n")
            return
        }
        let key = chooser.key()
        switch chooser.operation() {
        case .set, .mixed:
            buffer.writeImmutableBuffer(setPrefix)
            buffer.writeTwelveDigits(key)
            buffer.writeImmutableBuffer(setSuffix)
        case .get:
            buffer.writeImmutableBuffer(getPrefix)
            buffer.writeTwelveDigits(key)
            buffer.writeImmutableBuffer(crlf)
        case .incr, .seqnext:
            buffer.writeImmutableBuffer(incrPrefix)
            buffer.writeTwelveDigits(key)
            buffer.writeImmutableBuffer(crlf)
        }
    }
}

/// One connection: writes a batch of `pipeline` requests, frames the replies, counts them, and
/// writes the next batch when the whole batch is answered.
final class RESPLoadHandler: LoadConnectionHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    let connection: LoadConnection
    var requests: RESPRequests
    var scanner = RESPReplyScanner()
    var received: ByteBuffer?

    init(stats: LoopStats, done: EventLoopPromise<Void>, requests: RESPRequests) {
        self.connection = LoadConnection(
            stats: stats, done: done, pipeline: requests.chooser.options.pipeline)
        self.requests = requests
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        handleStart(context: context, event: event)
    }

    func writeBatch(_ count: Int, context: ChannelHandlerContext) {
        var buffer = context.channel.allocator.buffer(capacity: count * requests.bytesPerRequest)
        for _ in 0..<count { requests.write(into: &buffer) }
        context.writeAndFlush(wrapOutboundOut(buffer), promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = unwrapInboundIn(data)
        if received == nil {
            received = incoming
        } else {
            received!.writeBuffer(&incoming)
        }
        guard connection.window != nil else { return }
        let now = NIODeadline.now().uptimeNanoseconds
        do {
            while connection.outstanding > 0, let frame = try scanner.scan(received!) {
                var text = ""
                if frame.isError && connection.stats.result.firstError == nil {
                    let reader = received!.readerIndex
                    text = String(buffer: received!.getSlice(at: reader, length: min(frame.length, 200))!)
                        .trimmingSuffixCRLF()
                }
                replied(now: now, isError: frame.isError, isNull: frame.isNull, errorText: text)
                received!.moveReaderIndex(forwardBy: frame.length)
            }
        } catch {
            connectionFailed(context: context, reason: "protocol error in a reply: \(error)")
            return
        }
        if received!.readableBytes == 0 {
            received = nil
        } else if received!.readerIndex > 65536 {
            received!.discardReadBytes()
        }
        if connection.outstanding == 0 { sendBatch(context) }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        connectionFailed(context: context, reason: "connection error: \(error)")
    }

    func channelInactive(context: ChannelHandlerContext) {
        connectionClosed(context: context)
    }
}

extension String {
    func trimmingSuffixCRLF() -> String {
        var text = self
        while text.hasSuffix("\n") || text.hasSuffix("\r") || text.hasSuffix("\r\n") { text.removeLast() }
        return text
    }
}
