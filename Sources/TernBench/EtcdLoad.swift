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
        if options.command == .seqnext {
            throw LoadError("etcd has no sequence service: --command seqnext is for Tern over RESP")
        }
        if options.command == .incr {
            throw LoadError("etcd has no INCR: use --command set --hot-key (a put on one hot key)")
        }
        let prefill: @Sendable (MultiThreadedEventLoopGroup) async throws -> Void = { group in
            try await EtcdLoad.prefill(endpoints: endpoints, options: options, group: group)
        }
        return try await LoadRunner.run(options: options, serverPIDs: serverPIDs, prefill: prefill) {
            loop, stats, index in
            let endpoint = endpoints[index % endpoints.count]
            let done = loop.makePromise(of: Void.self)
            return ClientBootstrap(group: loop)
                .channelOption(.tcpOption(.tcp_nodelay), value: 1)
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

extension EtcdLoad {
    /// Writes every key once with transactions of 128 puts (etcd's default `--max-txn-ops`),
    /// 4 connections per endpoint.
    static func prefill(endpoints: [Endpoint], options: LoadOptions, group: any EventLoopGroup) async throws {
        let valueBase64 = base64([UInt8](repeating: UInt8(ascii: "x"), count: options.valueBytes))
        let connections = endpoints.count * 4
        let batch = 128
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            for c in 0..<connections {
                tasks.addTask {
                    let endpoint = endpoints[c % endpoints.count]
                    let client = try await EtcdHTTPClient.connect(endpoint, group: group)
                    do {
                        for start in stride(from: c * batch, to: options.keys, by: connections * batch) {
                            let puts = (start..<min(start + batch, options.keys)).map {
                                "{\"requestPut\":{\"key\":\"\(base64(benchKey($0)))\",\"value\":\"\(valueBase64)\"}}"
                            }
                            let body = "{\"success\":[" + puts.joined(separator: ",") + "]}"
                            let (status, text) = try await client.post("/v3/kv/txn", body: body)
                            guard status == 200 else {
                                throw LoadError("prefill: txn answered HTTP \(status): \(text.prefix(200))")
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

/// One HTTP/1.1 keep-alive connection to etcd's gateway, one request at a time (for the prefill).
final class EtcdHTTPClient: Sendable {
    let channel: any Channel
    let endpoint: EtcdLoad.Endpoint

    init(channel: any Channel, endpoint: EtcdLoad.Endpoint) {
        self.channel = channel
        self.endpoint = endpoint
    }

    static func connect(_ endpoint: EtcdLoad.Endpoint, group: any EventLoopGroup) async throws
        -> EtcdHTTPClient
    {
        do {
            let channel = try await ClientBootstrap(group: group)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHTTPClientHandlers()
                        try channel.pipeline.syncOperations.addHandler(EtcdResponseCollector())
                    }
                }
                .connect(host: endpoint.host, port: endpoint.port).get()
            return EtcdHTTPClient(channel: channel, endpoint: endpoint)
        } catch {
            throw LoadError("cannot connect to \(endpoint.host):\(endpoint.port): \(error)")
        }
    }

    /// POSTs a JSON body and returns the status and the body of the response.
    func post(_ uri: String, body: String) async throws -> (Int, String) {
        let promise = channel.eventLoop.makePromise(of: (Int, String).self)
        var head = HTTPRequestHead(version: .http1_1, method: .POST, uri: uri)
        head.headers.add(name: "Host", value: "\(endpoint.host):\(endpoint.port)")
        head.headers.add(name: "Content-Type", value: "application/json")
        head.headers.add(name: "Content-Length", value: String(body.utf8.count))
        channel.write(
            EtcdResponseCollector.Request(head: head, body: ByteBuffer(string: body), promise: promise)
        )
        .whenFailure { promise.fail($0) }
        channel.flush()
        return try await promise.futureResult.get()
    }

    func close() async {
        try? await channel.close()
    }
}

/// Writes one request and completes its promise with the response's status and body.
final class EtcdResponseCollector: ChannelDuplexHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundIn = Request
    typealias OutboundOut = HTTPClientRequestPart

    struct Request: Sendable {
        var head: HTTPRequestHead
        var body: ByteBuffer
        var promise: EventLoopPromise<(Int, String)>
    }

    var waiting = CircularBuffer<EventLoopPromise<(Int, String)>>()
    var status = 0
    var body = ByteBuffer()

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let request = unwrapOutboundIn(data)
        waiting.append(request.promise)
        context.write(wrapOutboundOut(.head(request.head)), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(request.body))), promise: nil)
        context.write(wrapOutboundOut(.end(nil)), promise: promise)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            status = Int(head.status.code)
            body.clear()
        case .body(var part):
            body.writeBuffer(&part)
        case .end:
            waiting.popFirst()?.succeed((status, String(buffer: body)))
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        while let promise = waiting.popFirst() { promise.fail(error) }
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        while let promise = waiting.popFirst() { promise.fail(LoadError("etcd closed the connection")) }
        context.fireChannelInactive()
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
final class EtcdLoadHandler: LoadConnectionHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundOut = HTTPClientRequestPart

    let connection: LoadConnection
    var requests: EtcdRequests
    var reads = CircularBuffer<Bool>()
    var status = 0
    var body = ByteBuffer()

    init(stats: LoopStats, done: EventLoopPromise<Void>, requests: EtcdRequests) {
        self.connection = LoadConnection(
            stats: stats, done: done, pipeline: requests.chooser.options.pipeline)
        self.requests = requests
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        handleStart(context: context, event: event)
    }

    func writeBatch(_ count: Int, context: ChannelHandlerContext) {
        for _ in 0..<count {
            let (head, body, isRead) = requests.next(allocator: context.channel.allocator)
            reads.append(isRead)
            context.write(wrapOutboundOut(.head(head)), promise: nil)
            context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
            context.write(wrapOutboundOut(.end(nil)), promise: nil)
        }
        context.flush()
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
            guard connection.window != nil, connection.outstanding > 0 else { return }
            let isRead = reads.popFirst() ?? false
            let isError = status != 200
            let isNull = !isError && isRead && !body.readableBytesView.containsSubsequence(Self.kvsField)
            var text = ""
            if isError && connection.stats.result.firstError == nil {
                let shown = body.getSlice(at: body.readerIndex, length: min(body.readableBytes, 200))!
                text = "HTTP \(status): " + String(buffer: shown)
            }
            replied(
                now: NIODeadline.now().uptimeNanoseconds, isError: isError, isNull: isNull, errorText: text)
            if connection.outstanding == 0 { sendBatch(context) }
        }
    }

    static let kvsField = Array("\"kvs\"".utf8)

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        connectionFailed(context: context, reason: "connection error: \(error)")
    }

    func channelInactive(context: ChannelHandlerContext) {
        connectionClosed(context: context)
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
