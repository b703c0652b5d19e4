import NIOCore
import NIOHTTP1
import NIOPosix

/// `tern bench etcd`: the same load on etcd v3 through its gRPC-JSON gateway
/// (`POST /v3/kv/put`, `POST /v3/kv/range`, keys and values in base64), over HTTP/1.1 keep-alive
/// connections spread round-robin over the endpoints.
///
/// Why HTTP/JSON and not gRPC: Debian packages no etcd load tool (upstream's `tools/benchmark` is
/// not in `etcd-client`), and a gRPC client would add minutes to every cold build. The gateway is
/// served by etcd itself on the client port; it costs etcd some CPU per request to translate JSON,
/// so the figures are a lower bound of what etcd does with a native gRPC client.
public enum EtcdLoad {
    /// An endpoint such as `http://127.0.0.1:2379` or `127.0.0.1:2379`.
    public struct Endpoint: Sendable, Hashable {
        public var host: String
        public var port: Int

        public init(host: String, port: Int) {
            self.host = host
            self.port = port
        }

        public init?(_ text: String) {
            var rest = Substring(text)
            if rest.hasPrefix("http://") { rest = rest.dropFirst(7) }
            if rest.hasSuffix("/") { rest = rest.dropLast() }
            guard let colon = rest.lastIndex(of: ":"), let port = Int(rest[rest.index(after: colon)...]),
                (1...65535).contains(port), colon > rest.startIndex
            else { return nil }
            host = String(rest[..<colon])
            self.port = port
        }
    }

    /// Runs the load against `endpoints` (connection i goes to endpoint i mod n).
    /// - Parameter serializable: serve ranges from the member's local state (etcd's
    ///   `serializable: true`); the default is linearizable ranges.
    public static func run(
        endpoints: [Endpoint], options: LoadOptions, serializable: Bool = false, serverPIDs: [Int32] = []
    ) async throws -> LoadResult {
        if let problem = options.validationError() { throw LoadError(problem) }
        if endpoints.isEmpty { throw LoadError("give at least one endpoint") }
        if options.command == .incr {
            throw LoadError("etcd has no INCR: use --command set --hot-key (a put on one hot key)")
        }
        return try await LoadRunner.run(options: options, serverPIDs: serverPIDs) { loop, stats, index in
            let endpoint = endpoints[index % endpoints.count]
            let done = loop.makePromise(of: Void.self)
            return ClientBootstrap(group: loop)
                .channelOption(.socketOption(.tcp_nodelay), value: 1)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHTTPClientHandlers()
                        let handler = EtcdLoadHandler(
                            stats: stats.value, done: done,
                            requests: EtcdRequests(
                                options: options, connection: index, endpoint: endpoint,
                                serializable: serializable))
                        try channel.pipeline.syncOperations.addHandler(handler)
                    }
                }
                .connect(host: endpoint.host, port: endpoint.port)
                .map { OpenConnection(channel: $0, done: done.futureResult) }
                .flatMapErrorThrowing { error in
                    done.succeed()
                    throw LoadError("cannot connect to \(endpoint.host):\(endpoint.port): \(error)")
                }
        }
    }
}

/// Builds the gateway's JSON requests.
struct EtcdRequests {
    var chooser: KeyChooser
    let headersPut: HTTPHeaders
    let headersRange: HTTPHeaders
    let valueBase64: String
    let serializable: Bool

    init(options: LoadOptions, connection: Int, endpoint: EtcdLoad.Endpoint, serializable: Bool) {
        chooser = KeyChooser(options: options, connection: connection)
        self.serializable = serializable
        valueBase64 = base64([UInt8](repeating: UInt8(ascii: "x"), count: options.valueBytes))
        let base: HTTPHeaders = [
            "Host": "\(endpoint.host):\(endpoint.port)", "Content-Type": "application/json",
        ]
        headersPut = base
        headersRange = base
    }

    /// The next request: its head, body, and whether it is a read (a missing key is a null reply).
    mutating func next(allocator: ByteBufferAllocator) -> (HTTPRequestHead, ByteBuffer, Bool) {
        var key = ByteBuffer(string: "key:")
        key.writeTwelveDigits(chooser.key())
        let keyBase64 = base64(Array(key.readableBytesView))
        let isRead = chooser.operation() == .get
        var body = allocator.buffer(capacity: 64 + valueBase64.utf8.count)
        var head: HTTPRequestHead
        if isRead {
            body.writeString("{\"key\":\"\(keyBase64)\"")
            body.writeString(serializable ? ",\"serializable\":true}" : "}")
            head = HTTPRequestHead(
                version: .http1_1, method: .POST, uri: "/v3/kv/range", headers: headersRange)
        } else {
            body.writeString("{\"key\":\"\(keyBase64)\",\"value\":\"\(valueBase64)\"}")
            head = HTTPRequestHead(version: .http1_1, method: .POST, uri: "/v3/kv/put", headers: headersPut)
        }
        head.headers.add(name: "Content-Length", value: String(body.readableBytes))
        return (head, body, isRead)
    }
}

/// One keep-alive connection: a batch of `pipeline` HTTP requests, then the next batch when all
/// responses are in. A response is an error if its status is not 200; a range that finds no key
/// (no `"kvs"` in the body) is a null reply.
final class EtcdLoadHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundOut = HTTPClientRequestPart

    let stats: LoopStats
    let done: EventLoopPromise<Void>
    var requests: EtcdRequests
    let pipeline: Int
    var reads = CircularBuffer<Bool>()
    var status = 0
    var body = ByteBuffer()
    var outstanding = 0
    var batchStart: UInt64 = 0
    var window: LoadWindow?
    var finished = false

    init(stats: LoopStats, done: EventLoopPromise<Void>, requests: EtcdRequests) {
        self.stats = stats
        self.done = done
        self.requests = requests
        self.pipeline = requests.chooser.options.pipeline
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard let start = event as? LoadStart else {
            context.fireUserInboundEventTriggered(event)
            return
        }
        window = start.window
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        context.eventLoop.scheduleTask(deadline: NIODeadline.uptimeNanoseconds(start.window.drainEndNanos)) {
            let (handler, context) = bound.value
            guard !handler.finished else { return }
            handler.stats.result.timeouts += handler.outstanding
            handler.stats.lost(0, reason: "no response within the drain time", window: nil, now: 0)
            handler.finish(context)
        }
        sendBatch(context)
    }

    func sendBatch(_ context: ChannelHandlerContext) {
        guard let window else { return }
        let now = NIODeadline.now().uptimeNanoseconds
        if now >= window.measureEndNanos {
            finish(context)
            return
        }
        for _ in 0..<pipeline {
            let (head, body, isRead) = requests.next(allocator: context.channel.allocator)
            reads.append(isRead)
            context.write(wrapOutboundOut(.head(head)), promise: nil)
            context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
            context.write(wrapOutboundOut(.end(nil)), promise: nil)
        }
        context.flush()
        outstanding = pipeline
        batchStart = now
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            status = Int(head.status.code)
            body.clear()
        case .body(var part):
            // Bodies are small (a header and at most one key); keep the first 4 KiB to inspect.
            if body.readableBytes < 4096 { body.writeBuffer(&part) }
        case .end:
            guard let window, outstanding > 0 else { return }
            let now = NIODeadline.now().uptimeNanoseconds
            let isRead = reads.popFirst() ?? false
            let isError = status != 200
            let isNull = !isError && isRead && !body.readableBytesView.containsSubsequence(Self.kvsField)
            var text = ""
            if isError && stats.result.firstError == nil {
                text =
                    "HTTP \(status): "
                    + String(
                        buffer: body.getSlice(at: body.readerIndex, length: min(body.readableBytes, 200))!)
            }
            stats.reply(
                window: window, batchStart: batchStart, now: now, isError: isError, isNull: isNull,
                errorText: text)
            outstanding -= 1
            if outstanding == 0 { sendBatch(context) }
        }
    }

    static let kvsField = Array("\"kvs\"".utf8)

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard !finished else { return }
        stats.lost(
            outstanding, reason: "connection error: \(error)", window: window,
            now: NIODeadline.now().uptimeNanoseconds)
        finish(context)
    }

    func channelInactive(context: ChannelHandlerContext) {
        if !finished {
            stats.lost(
                outstanding, reason: "server closed the connection", window: window,
                now: NIODeadline.now().uptimeNanoseconds)
            finished = true
            done.succeed()
        }
        context.fireChannelInactive()
    }

    func finish(_ context: ChannelHandlerContext) {
        guard !finished else { return }
        finished = true
        context.close(promise: nil)
        done.succeed()
    }
}

extension ByteBufferView {
    func containsSubsequence(_ needle: [UInt8]) -> Bool {
        guard !needle.isEmpty, count >= needle.count else { return needle.isEmpty }
        var i = startIndex
        let last = endIndex - needle.count
        while i <= last {
            if self[i] == needle[0] && self[i..<(i + needle.count)].elementsEqual(needle) { return true }
            i += 1
        }
        return false
    }
}

/// Standard base64 with padding.
func base64(_ bytes: [UInt8]) -> String {
    let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)
    var out: [UInt8] = []
    out.reserveCapacity((bytes.count + 2) / 3 * 4)
    var i = 0
    while i + 3 <= bytes.count {
        let n = UInt32(bytes[i]) << 16 | UInt32(bytes[i + 1]) << 8 | UInt32(bytes[i + 2])
        out += [
            alphabet[Int(n >> 18)], alphabet[Int(n >> 12 & 63)], alphabet[Int(n >> 6 & 63)],
            alphabet[Int(n & 63)],
        ]
        i += 3
    }
    let rest = bytes.count - i
    if rest == 1 {
        let n = UInt32(bytes[i]) << 16
        out += [alphabet[Int(n >> 18)], alphabet[Int(n >> 12 & 63)], UInt8(ascii: "="), UInt8(ascii: "=")]
    } else if rest == 2 {
        let n = UInt32(bytes[i]) << 16 | UInt32(bytes[i + 1]) << 8
        out += [
            alphabet[Int(n >> 18)], alphabet[Int(n >> 12 & 63)], alphabet[Int(n >> 6 & 63)],
            UInt8(ascii: "="),
        ]
    }
    return String(decoding: out, as: UTF8.self)
}
