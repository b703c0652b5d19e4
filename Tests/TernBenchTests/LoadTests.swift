import Histogram
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import Testing

@testable import TernBench
@testable import TernRESP

/// Counts what a fake server saw.
struct Seen {
    var commands: [String: Int] = [:]
    var keys: Set<String> = []
    var badRequests: [String] = []
}

/// How a fake server answers.
enum FakeMode: Sendable {
    /// Success; reads find a value.
    case normal
    /// Success; reads find nothing.
    case missing
    /// Every request fails.
    case failing
    /// Never answers.
    case silent
    /// Closes the connection at the first request.
    case closing
}

/// A RESP server for the load generator's tests: SET → +OK (if the value has 100 bytes),
/// GET → a value (or null when `missing`), INCR → an integer; `-ERR boom` for all when `failing`.
final class FakeRESPHandler: ChannelInboundHandler {
    typealias InboundIn = RESPCommand
    typealias OutboundOut = ByteBuffer
    let seen: NIOLockedValueBox<Seen>
    let mode: FakeMode

    init(seen: NIOLockedValueBox<Seen>, mode: FakeMode) {
        self.seen = seen
        self.mode = mode
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let args = unwrapInboundIn(data).args.map { String(decoding: $0, as: UTF8.self) }
        seen.withLockedValue {
            $0.commands[args[0], default: 0] += 1
            if args.count > 1 { $0.keys.insert(args[1]) }
        }
        if mode == .silent { return }
        if mode == .closing {
            context.close(promise: nil)
            return
        }
        let reply: RESPValue
        if mode == .failing {
            reply = .error("ERR boom")
        } else {
            switch args[0] {
            case "SET": reply = args.count == 3 && args[2].count == 100 ? .ok : .error("ERR bad SET")
            case "GET": reply = mode == .missing ? .bulkString(nil) : .bulkString("v")
            case "INCR", "SEQ.NEXT": reply = .integer(1)
            default: reply = .error("ERR unknown")
            }
        }
        var buffer = context.channel.allocator.buffer(capacity: 16)
        RESPEncoder.encode(reply, version: .v2, into: &buffer)
        context.writeAndFlush(wrapOutboundOut(buffer), promise: nil)
    }
}

func withRESPServer(mode: FakeMode = .normal, _ body: (Int, NIOLockedValueBox<Seen>) async throws -> Void)
    async throws
{
    let seen = NIOLockedValueBox(Seen())
    let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
        .childChannelInitializer { channel in
            channel.eventLoop.makeCompletedFuture {
                try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(RESPCommandDecoder()))
                try channel.pipeline.syncOperations.addHandler(FakeRESPHandler(seen: seen, mode: mode))
            }
        }
        .bind(host: "127.0.0.1", port: 0).get()
    do {
        try await body(server.localAddress!.port!, seen)
    } catch {
        try? await server.close()
        throw error
    }
    try await server.close()
}

/// A run counts only what happens inside a 0.3 s window; on a starved machine (2 shared cores, other
/// suites running) a run can count nothing at all. Re-run, at most 5 times, until something was
/// counted: the checks are about how replies are counted, not about speed.
func counted(_ run: () async throws -> LoadResult) async throws -> LoadResult {
    var result = try await run()
    var attempts = 1
    while result.operations == 0 && attempts < 5 {
        result = try await run()
        attempts += 1
    }
    return result
}

func shortRun(_ command: LoadCommand, pipeline: Int = 1, hotKey: Bool = false) -> LoadOptions {
    var options = LoadOptions()
    options.connections = 4
    options.pipeline = pipeline
    options.keys = 1000
    options.command = command
    options.hotKey = hotKey
    options.durationSeconds = 0.3
    options.warmupSeconds = 0.1
    return options
}

// Serialized: each test measures throughput over 0.3 s; running them all at once on 2 shared cores
// starves some of them.
@Suite(.serialized, .timeLimit(.minutes(1))) struct RESPLoadTests {
    @Test func setCountsEveryReplyAndUsesRedisBenchmarkKeys() async throws {
        try await withRESPServer { port, seen in
            let result = try await counted {
                try await RESPLoad.run(
                    host: "127.0.0.1", port: port, options: shortRun(.set, pipeline: 8))
            }
            let server = seen.withLockedValue { $0 }
            #expect(result.operations > 0)
            #expect(result.errors == 0 && result.nullReplies == 0 && result.timeouts == 0)
            // Only requests sent after the warm-up and answered before the end are counted.
            #expect(result.operations <= server.commands["SET"]!)
            #expect(result.latency.totalCount == UInt64(result.operations))
            #expect(result.latencyMilliseconds(50) > 0)
            // Keys are spread over the key space: with n SETs over 1000 keys, far more than n/2 distinct
            // ones (at most 100 asked: a starved CI machine may get few requests into 0.3 s).
            let sets = server.commands["SET"]!
            #expect(
                server.keys.count > min(100, sets / 2), "\(server.keys.count) distinct keys in \(sets) SETs")
            #expect(server.keys.allSatisfy { $0.hasPrefix("key:") && $0.count == 16 })
            #expect(server.keys.allSatisfy { Int($0.dropFirst(4))! < 1000 })
            #expect(result.clientUserSeconds + result.clientSystemSeconds > 0)
        }
    }

    @Test func getCountsNullReplies() async throws {
        try await withRESPServer(mode: .missing) { port, _ in
            let result = try await counted {
                try await RESPLoad.run(host: "127.0.0.1", port: port, options: shortRun(.get))
            }
            #expect(result.operations > 0 && result.errors == 0)
            #expect(result.nullReplies == result.operations)
        }
        try await withRESPServer(mode: .normal) { port, _ in
            let result = try await counted {
                try await RESPLoad.run(host: "127.0.0.1", port: port, options: shortRun(.get))
            }
            #expect(result.operations > 0 && result.errors == 0 && result.nullReplies == 0)
        }
    }

    @Test func mixedFollowsTheReadRatio() async throws {
        try await withRESPServer { port, seen in
            var options = shortRun(.mixed, pipeline: 4)
            options.readRatio = 0.9
            // Enough requests for the share to be meaningful, however slow the machine (the
            // server counts the warm-up too).
            var runs = 0
            repeat {
                let result = try await RESPLoad.run(host: "127.0.0.1", port: port, options: options)
                #expect(result.errors == 0)
                runs += 1
            } while seen.withLockedValue { ($0.commands["GET"] ?? 0) + ($0.commands["SET"] ?? 0) } < 300
                && runs < 20
            let commands = seen.withLockedValue { $0.commands }
            let gets = Double(commands["GET"] ?? 0)
            let sets = Double(commands["SET"] ?? 0)
            #expect(gets + sets >= 300)
            // 0.9 ± more than 4 standard deviations at 300 requests.
            #expect(gets / (gets + sets) > 0.82 && gets / (gets + sets) < 0.98)
        }
    }

    @Test func hotKeyIncrUsesOneCounter() async throws {
        try await withRESPServer { port, seen in
            let result = try await counted {
                try await RESPLoad.run(
                    host: "127.0.0.1", port: port, options: shortRun(.incr, hotKey: true))
            }
            #expect(result.operations > 0 && result.errors == 0)
            #expect(seen.withLockedValue { $0.keys } == ["counter:000000000000"])
        }
    }

    @Test func seqNextSendsRandomUIDsBelowTheBound() async throws {
        try await withRESPServer { port, seen in
            var options = shortRun(.seqnext)
            options.uids = 50
            let result = try await counted {
                try await RESPLoad.run(host: "127.0.0.1", port: port, options: options)
            }
            #expect(result.operations > 0 && result.errors == 0)
            let uids = seen.withLockedValue { $0.keys }
            #expect(seen.withLockedValue { $0.commands["SEQ.NEXT"] ?? 0 } > 0)
            #expect(uids.count > 10 && uids.allSatisfy { UInt64($0).map { $0 < 50 } == true }, "\(uids)")
        }
    }

    @Test func alsoPortsSpreadConnectionsOverSeveralServers() async throws {
        try await withRESPServer { port1, seen1 in
            try await withRESPServer { port2, seen2 in
                let result = try await counted {
                    try await RESPLoad.run(
                        host: "127.0.0.1", port: port1, options: shortRun(.incr), alsoPorts: [port2])
                }
                #expect(result.operations > 0 && result.errors == 0)
                #expect(seen1.withLockedValue { $0.commands["INCR"] ?? 0 } > 0)
                #expect(seen2.withLockedValue { $0.commands["INCR"] ?? 0 } > 0)
            }
        }
    }

    @Test func errorRepliesAreCountedWithTheFirstMessage() async throws {
        try await withRESPServer(mode: .failing) { port, _ in
            let result = try await counted {
                try await RESPLoad.run(host: "127.0.0.1", port: port, options: shortRun(.set))
            }
            #expect(result.operations > 0 && result.errors == result.operations)
            #expect(result.firstError == "-ERR boom")
        }
    }

    @Test func unansweredRequestsBecomeTimeoutsAfterTheDrainTime() async throws {
        try await withRESPServer(mode: .silent) { port, _ in
            var options = shortRun(.set, pipeline: 3)
            options.drainSeconds = 0.2
            let clock = ContinuousClock()
            let start = clock.now
            let result = try await RESPLoad.run(host: "127.0.0.1", port: port, options: options)
            #expect(clock.now - start < .seconds(10))
            #expect(result.operations == 0 && result.timeouts == 4 * 3)
            #expect(result.firstError == "no reply within the drain time")
        }
    }

    @Test func aClosedConnectionCountsItsRequestsAsErrors() async throws {
        try await withRESPServer(mode: .closing) { port, _ in
            var options = shortRun(.set, pipeline: 2)
            options.warmupSeconds = 0
            let result = try await RESPLoad.run(host: "127.0.0.1", port: port, options: options)
            #expect(result.operations == 0 && result.errors == 4 * 2)
            #expect(result.firstError == "server closed the connection")
        }
    }

    @Test func prefillWritesEveryKeyFirst() async throws {
        try await withRESPServer { port, seen in
            var options = shortRun(.get)
            options.prefill = true
            options.keys = 2500
            let result = try await RESPLoad.run(host: "127.0.0.1", port: port, options: options)
            let server = seen.withLockedValue { $0 }
            #expect(server.commands["SET"] == 2500)
            #expect(
                server.keys.isSuperset(of: (0..<2500).map { String(decoding: benchKey($0), as: UTF8.self) }))
            #expect(result.prefillSeconds != nil && result.operations > 0)
        }
    }

    @Test func refusedConnectionIsAClearError() async throws {
        var port = 0
        try await withRESPServer { p, _ in port = p }
        await #expect(throws: LoadError.self) {
            _ = try await RESPLoad.run(host: "127.0.0.1", port: port, options: shortRun(.set))
        }
    }

    @Test func badOptionsAreRejected() async throws {
        var options = shortRun(.set)
        options.pipeline = 0
        await #expect(throws: LoadError("--pipeline must be at least 1")) {
            _ = try await RESPLoad.run(host: "127.0.0.1", port: 1, options: options)
        }
    }

    @Test func requestsAreWellFormedCommands() throws {
        var options = shortRun(.mixed)
        options.valueBytes = 5
        var requests = RESPRequests(options: options, connection: 3)
        var buffer = ByteBuffer()
        for _ in 0..<50 { requests.write(into: &buffer) }
        var decoder = RESPCommandDecoder()
        var count = 0
        while let command = try decoder.decode(buffer: &buffer) {
            let name = String(decoding: command.args[0], as: UTF8.self)
            #expect(
                name == "GET"
                    ? command.args.count == 2
                    : command.args == [command.args[0], command.args[1], Array("xxxxx".utf8)])
            count += 1
        }
        #expect(count == 50 && buffer.readableBytes == 0)
    }
}

/// etcd's JSON gateway, faked: put and txn → 200; range → 200 with `kvs` (without when
/// `missing`); everything → 400 with an error body when `failing`.
final class FakeEtcdHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart
    let seen: NIOLockedValueBox<Seen>
    let mode: FakeMode
    var uri = ""
    var body = ByteBuffer()

    init(seen: NIOLockedValueBox<Seen>, mode: FakeMode) {
        self.seen = seen
        self.mode = mode
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            uri = head.uri
            body.clear()
        case .body(var part):
            body.writeBuffer(&part)
        case .end:
            let text = String(buffer: body)
            if uri == "/v3/kv/txn" {
                // {"success":[{"requestPut":{"key":"<base64>","value":…}}, …]}
                let parts = text.split(separator: "\"requestPut\":{\"key\":\"").dropFirst()
                seen.withLockedValue { state in
                    for part in parts { state.keys.insert(String(part.prefix { $0 != "\"" })) }
                }
            }
            // {"key":"<base64>"...}
            let key = text.split(separator: "\"").dropFirst(3).first.map(String.init) ?? ""
            seen.withLockedValue {
                $0.commands[uri, default: 0] += 1
                $0.keys.insert(key)
                if uri == "/v3/kv/put" && !text.contains("\"value\":\"eHh4\"") { $0.badRequests.append(text) }
            }
            var status = HTTPResponseStatus.ok
            var reply = "{\"header\":{\"revision\":\"1\"}}"
            if mode == .failing {
                status = .badRequest
                reply = "{\"error\":\"boom\",\"code\":3}"
            } else if uri == "/v3/kv/range" && mode == .normal {
                reply = "{\"header\":{},\"kvs\":[{\"key\":\"\(key)\"}],\"count\":\"1\"}"
            }
            let headers: HTTPHeaders = [
                "Content-Length": "\(reply.utf8.count)", "Content-Type": "application/json",
            ]
            context.write(
                wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))),
                promise: nil)
            context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: reply)))), promise: nil)
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        }
    }
}

@Suite(.serialized, .timeLimit(.minutes(1))) struct EtcdLoadTests {
    func withEtcd(mode: FakeMode = .normal, _ body: (Int, NIOLockedValueBox<Seen>) async throws -> Void)
        async throws
    {
        let seen = NIOLockedValueBox(Seen())
        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(FakeEtcdHandler(seen: seen, mode: mode))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        try await body(server.localAddress!.port!, seen)
        try await server.close()
    }

    @Test func putsCarryBase64KeysAndValues() async throws {
        try await withEtcd { port, seen in
            var options = shortRun(.set, pipeline: 2)
            options.valueBytes = 3
            let result = try await counted {
                try await EtcdLoad.run(
                    endpoints: [.init(host: "127.0.0.1", port: port)], options: options)
            }
            let server = seen.withLockedValue { $0 }
            #expect(result.operations > 0 && result.errors == 0)
            #expect(server.badRequests.isEmpty)
            #expect(server.commands["/v3/kv/put"]! >= result.operations)
            // "key:" is "a2V5O" in base64, and 16-byte keys take 24 characters.
            #expect(server.keys.allSatisfy { $0.hasPrefix("a2V5O") && $0.count == 24 })
        }
    }

    @Test(arguments: [FakeMode.normal, .missing, .failing])
    func rangesCountMissesAndErrors(_ mode: FakeMode) async throws {
        try await withEtcd(mode: mode) { port, seen in
            let result = try await counted {
                try await EtcdLoad.run(
                    endpoints: [.init(host: "127.0.0.1", port: port)], options: shortRun(.get))
            }
            #expect(result.operations > 0)
            #expect(seen.withLockedValue { $0.commands["/v3/kv/range"]! } >= result.operations)
            switch mode {
            case .normal: #expect(result.errors == 0 && result.nullReplies == 0)
            case .missing: #expect(result.errors == 0 && result.nullReplies == result.operations)
            case .failing:
                #expect(result.errors == result.operations && result.nullReplies == 0)
                #expect(result.firstError?.hasPrefix("HTTP 400: {\"error\":\"boom\"") == true)
            case .silent, .closing: Issue.record("not a mode of this test")
            }
        }
    }

    @Test func prefillWritesEveryKeyInTransactions() async throws {
        try await withEtcd { port, seen in
            var options = shortRun(.get)
            options.prefill = true
            options.keys = 1000
            let result = try await EtcdLoad.run(
                endpoints: [.init(host: "127.0.0.1", port: port)], options: options)
            let server = seen.withLockedValue { $0 }
            #expect(server.commands["/v3/kv/txn"] == 8)  // 1000 keys, 128 per transaction
            #expect(server.keys.isSuperset(of: (0..<1000).map { base64(benchKey($0)) }))
            #expect(result.prefillSeconds != nil)
        }
    }

    @Test func incrIsRefusedWithAHint() async throws {
        await #expect(
            throws: LoadError("etcd has no INCR: use --command set --hot-key (a put on one hot key)")
        ) {
            _ = try await EtcdLoad.run(
                endpoints: [.init(host: "127.0.0.1", port: 1)], options: shortRun(.incr))
        }
    }

    @Test func endpoints() {
        #expect(EtcdLoad.Endpoint("http://127.0.0.1:2379") == .init(host: "127.0.0.1", port: 2379))
        #expect(EtcdLoad.Endpoint("localhost:22379/") == .init(host: "localhost", port: 22379))
        #expect(EtcdLoad.Endpoint("127.0.0.1") == nil)
        #expect(EtcdLoad.Endpoint("http://:2379") == nil)
        #expect(EtcdLoad.Endpoint("h:99999") == nil)
    }
}

@Suite struct BenchSupportTests {
    @Test(arguments: [
        ("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foobar", "Zm9vYmFy"),
        ("key:000000000007", "a2V5OjAwMDAwMDAwMDAwNw=="),
    ])
    func base64Vectors(_ input: String, _ expected: String) {
        #expect(base64(Array(input.utf8)) == expected)
    }

    @Test func fixedPointFormat() {
        #expect(format(1234.5678, 2) == "1234.57")
        #expect(format(0.0005, 3) == "0.001")
        #expect(format(-2.5, 0) == "-3")
        #expect(format(7, 1) == "7.0")
    }

    @Test func twelveDigitKeys() {
        var buffer = ByteBuffer()
        buffer.writeTwelveDigits(42)
        buffer.writeTwelveDigits(999_999_999_999)
        #expect(String(buffer: buffer) == "000000000042999999999999")
    }

    @Test func keysAreUniformAndBounded() {
        var options = LoadOptions()
        options.keys = 10
        var chooser = KeyChooser(options: options, connection: 0)
        var counts = [Int](repeating: 0, count: 10)
        for _ in 0..<10_000 { counts[Int(chooser.key())] += 1 }
        #expect(counts.allSatisfy { $0 > 800 && $0 < 1200 })
    }

    @Test func json() {
        var result = LoadResult()
        result.operations = 10
        result.seconds = 2
        result.firstError = "say \"no\""
        let text = result.json(target: "t", options: LoadOptions())
        #expect(text.hasPrefix("{\"target\": \"t\", \"command\": \"set\""))
        #expect(text.contains("\"ops_per_sec\": 5.0"))
        #expect(text.contains("\"first_error\": \"say \\\"no\\\"\""))
    }
}
