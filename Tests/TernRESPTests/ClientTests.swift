import NIOConcurrencyHelpers
import NIOCore
import NIOEmbedded
import NIOPosix
import Testing

@testable import TernRESP

@Suite(.timeLimit(.minutes(1))) struct ClientTests {
    let group = MultiThreadedEventLoopGroup.singleton

    func withServer(_ body: (FakeServer) async throws -> Void) async throws {
        let server = try await FakeServer(group: group)
        do {
            try await body(server)
        } catch {
            await server.close()
            throw error
        }
        await server.close()
    }

    func connect(_ server: FakeServer, timeout: TimeAmount? = nil) async throws -> RESPClient {
        try await RESPClient.connect(
            host: "127.0.0.1", port: server.port, group: group, requestTimeout: timeout)
    }

    @Test func basicCommands() async throws {
        try await withServer { server in
            let client = try await connect(server)
            #expect(try await client.send(["PING"]) == .simpleString("PONG"))
            let binary: [UInt8] = [0, 0x0D, 0x0A, 0xFF, 0x2A]
            #expect(try await client.send([bytes("SET"), bytes("k"), binary]) == .ok)
            #expect(try await client.send([bytes("GET"), bytes("k")]) == .bulkString(binary))
            #expect(try await client.send(["GET", "missing"]) == .bulkString(nil))
            // A server error is a reply, not a failure.
            #expect(try await client.send(["NOPE"]) == .error("ERR unknown command 'NOPE'"))
            #expect(try await client.send(["PING"]) == .simpleString("PONG"))
            await client.close()
        }
    }

    @Test func concurrentRequestsEachGetTheirOwnReply() async throws {
        try await withServer { server in
            let client = try await connect(server)
            try await withThrowingTaskGroup(of: Void.self) { tasks in
                for i in 0..<200 {
                    tasks.addTask {
                        let reply = try await client.send(["ECHO", "value-\(i)"])
                        #expect(reply == .bulkString("value-\(i)"))
                    }
                }
                try await tasks.waitForAll()
            }
            await client.close()
        }
    }

    @Test func pipelineRepliesInOrder() async throws {
        try await withServer { server in
            let client = try await connect(server)
            let commands = (0..<1000).map { [bytes("ECHO"), bytes("\($0)")] }
            let replies = try await client.pipeline(commands)
            #expect(replies == (0..<1000).map { .bulkString("\($0)") })
            #expect(try await client.pipeline([]) == [])
            await client.close()
        }
    }

    @Test func pipelineLeavesAsOneWrite() throws {
        let channel = EmbeddedChannel()
        let (_, continuation) = AsyncStream.makeStream(of: RESPValue.self)
        try channel.pipeline.syncOperations.addHandler(
            RESPClientHandler(pushes: continuation, dropped: .init(0), requestTimeout: nil))
        let promise = channel.eventLoop.makePromise(of: [RESPValue].self)
        let commands = (0..<100).map { [bytes("SET"), bytes("k\($0)"), bytes("v")] }
        try channel.writeOutbound(RESPClientRequest(commands: commands, promise: promise))
        let written = try #require(try channel.readOutbound(as: ByteBuffer.self))
        #expect(try channel.readOutbound(as: ByteBuffer.self) == nil)
        #expect(
            try decodeCommands(Array(written.readableBytesView)) == commands.map { RESPCommand(args: $0) })
        // Replies complete the promise only once all 100 arrived.
        for _ in 0..<99 { try channel.writeInbound(RESPValue.ok) }
        let done = NIOLockedValueBox(false)
        promise.futureResult.whenSuccess { replies in done.withLockedValue { $0 = replies.count == 100 } }
        #expect(!done.withLockedValue { $0 })
        try channel.writeInbound(RESPValue.ok)
        #expect(done.withLockedValue { $0 })
        _ = try channel.finish()
    }

    @Test func serverClosingFailsWaitingRequests() async throws {
        try await withServer { server in
            let client = try await connect(server)
            await #expect(throws: RESPClientError.connectionClosed) { try await client.send(["CLOSE"]) }
            await #expect(throws: (any Error).self) { try await client.send(["PING"]) }
            #expect(!client.isActive)
        }
    }

    @Test func closingTheClientFailsWaitingRequests() async throws {
        try await withServer { server in
            let client = try await connect(server)
            let hung = Task { try await client.send(["HANG"]) }
            try await Task.sleep(for: .milliseconds(50))
            await client.close()
            await #expect(throws: RESPClientError.connectionClosed) { try await hung.value }
        }
    }

    @Test func requestTimeoutClosesTheConnection() async throws {
        try await withServer { server in
            let client = try await connect(server, timeout: .seconds(1))
            let clock = ContinuousClock()
            let start = clock.now
            await #expect(throws: RESPClientError.timedOut) { try await client.send(["HANG"]) }
            let waited = clock.now - start
            #expect(waited >= .milliseconds(900) && waited < .seconds(10))
            await #expect(throws: (any Error).self) { try await client.send(["PING"]) }
            // A request answered in time is not affected by the timeout.
            let other = try await connect(server, timeout: .seconds(30))
            #expect(try await other.send(["SLOW", "100", "x"]) == .bulkString("x"))
            await other.close()
        }
    }

    @Test func cancelledRequestKeepsTheConnectionInStep() async throws {
        try await withServer { server in
            let client = try await connect(server)
            // The reply comes 3 s late: on a starved machine (CI runs the suites in parallel) the
            // cancel 50 ms later came after a 300 ms reply once (2026-12-08).
            let slow = Task { try await client.send(["SLOW", "3000", "late"]) }
            try await Task.sleep(for: .milliseconds(50))
            slow.cancel()
            await #expect(throws: CancellationError.self) { try await slow.value }
            // The late reply is read and dropped: the next request gets its own reply.
            #expect(try await client.send(["ECHO", "mine"]) == .bulkString("mine"))
            await client.close()
        }
    }

    @Test func garbageFromTheServerIsAProtocolError() async throws {
        try await withServer { server in
            let client = try await connect(server)
            await #expect(throws: RESPProtocolError.self) { try await client.send(["GARBAGE"]) }
        }
    }

    @Test(arguments: [RESPVersion.v2, .v3])
    func pubSub(_ version: RESPVersion) async throws {
        try await withServer { server in
            let subscriber = try await connect(server)
            let publisher = try await connect(server)
            if version == .v3 { _ = try await subscriber.send(["HELLO", "3"]) }
            let first = try await subscriber.send(["SUBSCRIBE", "a", "b"])
            let wrap: ([RESPValue]) -> RESPValue = { version == .v3 ? .push($0) : .array($0) }
            #expect(first == wrap([.bulkString("subscribe"), .bulkString("a"), .integer(1)]))
            var pushes = subscriber.pushes.makeAsyncIterator()
            #expect(await pushes.next() == wrap([.bulkString("subscribe"), .bulkString("b"), .integer(2)]))
            #expect(try await publisher.send(["PUBLISH", "b", "hello"]) == .integer(1))
            #expect(
                await pushes.next() == wrap([.bulkString("message"), .bulkString("b"), .bulkString("hello")]))
            // Requests still get their replies between messages.
            #expect(try await subscriber.send(["PING"]) == .simpleString("PONG"))
            await subscriber.close()
            #expect(await pushes.next() == nil)  // the stream ends with the connection
            await publisher.close()
        }
    }

    @Test func pushFrameBeforeAReplyGoesToPushes() async throws {
        try await withServer { server in
            let client = try await connect(server)
            _ = try await client.send(["HELLO", "3"])
            #expect(try await client.send(["NOTICE", "x"]) == .ok)
            var pushes = client.pushes.makeAsyncIterator()
            #expect(await pushes.next() == .push([.bulkString("notice"), .bulkString("x")]))
            await client.close()
        }
    }

    @Test func unreadPushesAreBoundedAndCounted() async throws {
        try await withServer { server in
            let client = try await RESPClient.connect(
                host: "127.0.0.1", port: server.port, group: group, pushBufferLimit: 2)
            _ = try await client.send(["HELLO", "3"])
            for i in 0..<5 { _ = try await client.send(["NOTICE", "\(i)"]) }
            #expect(client.droppedPushCount == 3)
            var pushes = client.pushes.makeAsyncIterator()
            #expect(await pushes.next() == .push([.bulkString("notice"), .bulkString("3")]))  // newest kept
            await client.close()
        }
    }

    @Test func connectionRefusedThrows() async throws {
        let server = try await FakeServer(group: group)
        let port = server.port
        await server.close()
        await #expect(throws: (any Error).self) {
            _ = try await RESPClient.connect(host: "127.0.0.1", port: port, group: group)
        }
    }
}
