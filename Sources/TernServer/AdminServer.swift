import Logging
import NIOCore
import NIOHTTP1
import NIOPosix

/// What the admin endpoint shows and switches; the server implements it.
public protocol AdminBackend: Sendable {
    /// True while the node serves (its store works, it is not shutting down).
    func healthy() async -> Bool
    /// The JSON body of GET /status.
    func statusJSON() async -> String
    /// The Prometheus text body of GET /metrics.
    func metricsText() async -> String
    /// POST /fault: nil when fault injection is disabled by the config; else a result line, or
    /// a thrown message for bad arguments.
    func setFault(peer: String?, mode: String?, milliseconds: String?) async -> AdminFaultResult
    /// POST /repair: starts a full-pace repair pass; false when the scanner is off.
    func repairNow() async -> Bool
    /// GET /cluster: every node's /status, gathered by this node (the dashboard's one request);
    /// `authorization` is the asking request's header, passed on to the peers.
    func clusterJSON(authorization: String?) async -> String
}

/// The outcome of POST /fault.
public enum AdminFaultResult: Sendable, Hashable {
    case applied(String)
    case badRequest(String)
    case disabled
}

/// The admin HTTP endpoint (NIOHTTP1): `GET /` (the dashboard, docs/OPERATIONS.md),
/// `GET /cluster` (every node's status, gathered here), `GET /health`, `GET /status`, `GET /metrics`,
/// `POST /fault?peer=ID&mode=drop|delay|none[&ms=N]`, `POST /repair` (a full-pace repair pass,
/// docs/REPAIR.md). One request per connection turn; bodies are
/// ignored; anything else is 404/405.
public final class AdminServer: Sendable {
    let channel: any Channel

    /// The bound port (useful when started on port 0).
    public var port: Int { channel.localAddress?.port ?? 0 }

    /// Listens on `host:port`.
    public static func start(
        host: String, port: Int, backend: any AdminBackend, group: any EventLoopGroup, logger: Logger
    ) async throws -> AdminServer {
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 64)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(AdminHandler(backend: backend))
                }
            }
            .bind(host: host, port: port).get()
        logger.info("admin listening", metadata: ["address": "\(host):\(channel.localAddress?.port ?? port)"])
        return AdminServer(channel: channel)
    }

    init(channel: any Channel) { self.channel = channel }

    /// Stops listening.
    public func close() async {
        try? await channel.close()
    }
}

final class AdminHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    let backend: any AdminBackend
    var head: HTTPRequestHead?

    init(backend: any AdminBackend) { self.backend = backend }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let h): head = h
        case .body: break
        case .end:
            guard let h = head else { return }
            head = nil
            let backend = self.backend
            let loopBound = NIOLoopBound((context, self), eventLoop: context.eventLoop)
            let promise = context.eventLoop.makePromise(of: (HTTPResponseStatus, String, String).self)
            promise.completeWithTask { await Self.route(h, backend) }
            promise.futureResult.whenSuccess { status, type, body in
                let (context, handler) = loopBound.value
                handler.respond(context: context, head: h, status: status, contentType: type, body: body)
            }
        }
    }

    static func route(_ h: HTTPRequestHead, _ backend: any AdminBackend) async -> (
        HTTPResponseStatus, String, String
    ) {
        let parts = h.uri.split(separator: "?", maxSplits: 1)
        let path = parts.first.map(String.init) ?? "/"
        var query: [String: String] = [:]
        if parts.count == 2 {
            for pair in parts[1].split(separator: "&") {
                let kv = pair.split(separator: "=", maxSplits: 1)
                query[String(kv[0])] = kv.count == 2 ? String(kv[1]) : ""
            }
        }
        let json = "application/json"
        let text = "text/plain; charset=utf-8"
        switch (h.method, path) {
        case (.GET, "/"), (.GET, "/index.html"):
            return (.ok, "text/html; charset=utf-8", Dashboard.html)
        case (.GET, "/cluster"):
            return (.ok, json, await backend.clusterJSON(authorization: h.headers["Authorization"].first))
        case (.GET, "/health"):
            return await backend.healthy()
                ? (.ok, text, "ok\n") : (.serviceUnavailable, text, "unavailable\n")
        case (.GET, "/status"):
            return (.ok, json, await backend.statusJSON())
        case (.GET, "/metrics"):
            return (.ok, "text/plain; version=0.0.4", await backend.metricsText())
        case (.POST, "/fault"):
            switch await backend.setFault(peer: query["peer"], mode: query["mode"], milliseconds: query["ms"])
            {
            case .applied(let s): return (.ok, text, s + "\n")
            case .badRequest(let s): return (.badRequest, text, s + "\n")
            case .disabled: return (.forbidden, text, "fault injection is disabled (test_faults = false)\n")
            }
        case (.POST, "/repair"):
            return await backend.repairNow()
                ? (.ok, text, "repair pass started at full pace\n")
                : (.conflict, text, "the repair scanner is off (repair = false)\n")
        case (_, "/health"), (_, "/status"), (_, "/metrics"), (_, "/fault"), (_, "/repair"), (_, "/"),
            (_, "/cluster"):
            return (.methodNotAllowed, text, "method not allowed\n")
        default:
            return (.notFound, text, "not found\n")
        }
    }

    func respond(
        context: ChannelHandlerContext, head: HTTPRequestHead, status: HTTPResponseStatus,
        contentType: String,
        body: String
    ) {
        var buffer = context.channel.allocator.buffer(capacity: body.utf8.count)
        buffer.writeString(body)
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: contentType)
        headers.add(name: "Content-Length", value: "\(buffer.readableBytes)")
        let keepAlive = head.isKeepAlive
        if !keepAlive { headers.add(name: "Connection", value: "close") }
        context.write(
            wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: status, headers: headers))),
            promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
        let done = context.writeAndFlush(wrapOutboundOut(.end(nil)))
        if !keepAlive {
            let channel = context.channel
            done.whenComplete { _ in channel.close(promise: nil) }
        }
    }
}
