import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import TernRESP

/// A tiny RESP server for the client's tests, built on the package's own command decoder and
/// encoder. Listens on 127.0.0.1, a free port. Commands:
/// PING, ECHO x, SET k v, GET k, HELLO 3, SLOW ms x (replies x after ms), HANG (never replies),
/// CLOSE (closes the connection), GARBAGE (writes bytes that are not RESP),
/// NOTICE x (a push frame `notice x`, then +OK), SUBSCRIBE ch…, PUBLISH ch msg.
final class FakeServer: Sendable {
    let channel: any Channel
    let state: NIOLockedValueBox<SharedState>

    struct SharedState {
        var store: [[UInt8]: [UInt8]] = [:]
        var subscribers: [[UInt8]: [(any Channel, RESPVersion)]] = [:]
        var commandsSeen = 0
    }

    var port: Int { channel.localAddress!.port! }

    init(group: any EventLoopGroup) async throws {
        let state = NIOLockedValueBox(SharedState())
        self.state = state
        channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(RESPCommandDecoder()))
                    try channel.pipeline.syncOperations.addHandler(FakeServerHandler(state: state))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
    }

    func close() async {
        try? await channel.close()
    }
}

final class FakeServerHandler: ChannelInboundHandler {
    typealias InboundIn = RESPCommand
    typealias OutboundOut = ByteBuffer

    let state: NIOLockedValueBox<FakeServer.SharedState>
    var version = RESPVersion.v2
    var subscriptions = 0
    /// Replies wait here while a SLOW reply is outstanding, so replies keep the commands' order.
    var delayed: [RESPValue]?

    init(state: NIOLockedValueBox<FakeServer.SharedState>) {
        self.state = state
    }

    func reply(_ context: ChannelHandlerContext, _ value: RESPValue) {
        if delayed != nil {
            delayed!.append(value)
            return
        }
        var buffer = context.channel.allocator.buffer(capacity: 64)
        RESPEncoder.encode(value, version: version, into: &buffer)
        context.writeAndFlush(wrapOutboundOut(buffer), promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let command = unwrapInboundIn(data)
        state.withLockedValue { $0.commandsSeen += 1 }
        let args = command.args
        let name = String(decoding: args[0], as: UTF8.self).uppercased()
        switch name {
        case "PING": reply(context, .simpleString("PONG"))
        case "ECHO": reply(context, .bulkString(args[1]))
        case "SET":
            state.withLockedValue { $0.store[args[1]] = args[2] }
            reply(context, .ok)
        case "GET": reply(context, .bulkString(state.withLockedValue { $0.store[args[1]] }))
        case "HELLO":
            version = args.count > 1 && args[1] == Array("3".utf8) ? .v3 : .v2
            reply(
                context,
                .map([.bulkString("server"), .bulkString("fake"), .bulkString("proto"), .integer(3)]))
        case "SLOW":
            let ms = Int64(String(decoding: args[1], as: UTF8.self))!
            let value = RESPValue.bulkString(args[2])
            let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            delayed = delayed ?? []
            context.eventLoop.scheduleTask(in: .milliseconds(ms)) {
                let (handler, context) = bound.value
                let queued = handler.delayed ?? []
                handler.delayed = nil
                for reply in [value] + queued { handler.reply(context, reply) }
            }
        case "HANG": break
        case "CLOSE": context.close(promise: nil)
        case "GARBAGE":
            context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: "?garbage\r\n")), promise: nil)
        case "NOTICE":
            reply(context, .push([.bulkString("notice"), .bulkString(args[1])]))
            reply(context, .ok)
        case "SUBSCRIBE":
            for channelName in args.dropFirst() {
                subscriptions += 1
                let channel = context.channel
                let version = version
                state.withLockedValue { $0.subscribers[channelName, default: []].append((channel, version)) }
                reply(
                    context,
                    .push([
                        .bulkString("subscribe"), .bulkString(channelName), .integer(Int64(subscriptions)),
                    ]))
            }
        case "PUBLISH":
            let targets = state.withLockedValue { $0.subscribers[args[1]] ?? [] }
            for (channel, version) in targets {
                var buffer = channel.allocator.buffer(capacity: 64)
                RESPEncoder.encode(
                    .push([.bulkString("message"), .bulkString(args[1]), .bulkString(args[2])]),
                    version: version,
                    into: &buffer)
                channel.writeAndFlush(buffer, promise: nil)
            }
            reply(context, .integer(Int64(targets.count)))
        default:
            reply(context, .error("ERR unknown command '\(name)'"))
        }
    }
}
