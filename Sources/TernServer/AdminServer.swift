import Foundation
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

/// Who may use the admin port (docs/SECURITY.md, "The admin port"): with a token configured,
/// every request but `GET /health`, `GET /metrics` and `GET /` (the dashboard page, which then
/// sends the token itself) must carry `Authorization: Bearer <token>`. Without a token every
/// request is allowed: `tern server` starts that way only on a loopback admin address (or with
/// `protected_mode = false`), which `ServerConfig.exposureProblems` enforces.
public struct AdminAccess: Sendable, Hashable {
    /// The bearer token; nil: no token configured (loopback only).
    public var token: String?

    public init(token: String?) { self.token = token }

    /// Paths any client may GET without the token.
    public static let openPaths: Set<String> = ["/health", "/metrics", "/"]

    public enum Decision: Sendable, Hashable {
        case allowed
        /// 401, with the reason for the body.
        case refused(String)
    }

    /// Whether a request for `path` with this `Authorization` header value may be served.
    public func check(method: HTTPMethod, path: String, authorization: String?) -> Decision {
        guard let token else { return .allowed }
        if method == .GET && Self.openPaths.contains(path) { return .allowed }
        guard let authorization else {
            return .refused(
                "this admin endpoint needs \"Authorization: Bearer <token>\" (the admin_token or "
                    + "admin_token_file of the node's server.toml); only GET /health, GET /metrics and "
                    + "GET / are open")
        }
        let scheme = "bearer "
        guard authorization.count > scheme.count, authorization.lowercased().hasPrefix(scheme) else {
            return .refused("the Authorization header must be \"Bearer <token>\"")
        }
        let given = authorization.dropFirst(scheme.count).trimmingCharacters(in: .whitespaces)
        return Self.equalInConstantTime(Array(given.utf8), Array(token.utf8))
            ? .allowed : .refused("wrong admin token")
    }

    /// Compares without stopping at the first difference, so the time taken does not tell a
    /// guesser how many leading bytes were right.
    static func equalInConstantTime(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        var diff = UInt8(a.count == b.count ? 0 : 1)
        for i in 0..<max(a.count, b.count) {
            diff |= (i < a.count ? a[i] : 0) ^ (i < b.count ? b[i] : 0)
        }
        return diff == 0
    }
}

/// The admin HTTP endpoint (NIOHTTP1): `GET /` (the dashboard, docs/OPERATIONS.md), `GET /cluster`
/// (every node's status, gathered here), `GET /health`, `GET /status`, `GET /metrics`,
/// `POST /fault?peer=ID&mode=drop|delay|none[&ms=N]` (only with `test_faults = true`; otherwise
/// the path does not exist), `POST /repair` (a full-pace repair pass, docs/REPAIR.md). Everything
/// but `/health`, `/metrics` and `/` needs the bearer token when one is configured (`AdminAccess`).
/// One request per connection turn; bodies are ignored; anything else is 404/405.
public final class AdminServer: Sendable {
    let channel: any Channel

    /// The bound port (useful when started on port 0).
    public var port: Int { channel.localAddress?.port ?? 0 }

    /// Listens on `host:port`.
    public static func start(
        host: String, port: Int, backend: any AdminBackend, access: AdminAccess = AdminAccess(token: nil),
        group: any EventLoopGroup, logger: Logger
    ) async throws -> AdminServer {
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 64)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(
                        AdminHandler(backend: backend, access: access, logger: logger))
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
    let access: AdminAccess
    let logger: Logger
    var head: HTTPRequestHead?

    init(backend: any AdminBackend, access: AdminAccess, logger: Logger) {
        self.backend = backend
        self.access = access
        self.logger = logger
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let h): head = h
        case .body: break
        case .end:
            guard let h = head else { return }
            head = nil
            let path = String(h.uri.split(separator: "?", maxSplits: 1).first ?? "/")
            let decision = access.check(
                method: h.method, path: path, authorization: h.headers.first(name: "Authorization"))
            if case .refused(let why) = decision {
                logger.notice(
                    "admin request refused",
                    metadata: [
                        "method": "\(h.method)", "path": "\(path)",
                        "from": "\(context.channel.remoteAddress.map { "\($0)" } ?? "?")", "why": "\(why)",
                    ])
                respond(
                    context: context, head: h, status: .unauthorized,
                    contentType: "text/plain; charset=utf-8",
                    body: why + "\n", extraHeaders: [("WWW-Authenticate", "Bearer realm=\"tern-admin\"")])
                return
            }
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
            case .disabled:
                // The fault switch does not exist outside tests: the same answer as any unknown path.
                return (.notFound, text, "not found (POST /fault exists only with test_faults = true)\n")
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
        body: String, extraHeaders: [(String, String)] = []
    ) {
        var buffer = context.channel.allocator.buffer(capacity: body.utf8.count)
        buffer.writeString(body)
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: contentType)
        headers.add(name: "Content-Length", value: "\(buffer.readableBytes)")
        for (name, value) in extraHeaders { headers.add(name: name, value: value) }
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
