import Logging
import NIOCore
import NIOPosix
import TernConsensus
import TernCore
import TernPlacement
import TernRESP
import TernServer
import TernStorage
import Testing

/// Hash-tag groups through real nodes (in-process cluster): members of one group are one Paxos key.
@Suite(.timeLimit(.minutes(1))) struct GroupClusterTests {
    static func data(_ args: String...) -> KeyRequest { .write(.data(args.map(b))) }

    @Test(
        "Members of a group are written and read through any node as keys of their own; one Paxos key holds them"
    )
    func membersThroughNodes() async throws {
        let c = try await LoopbackCluster.start(perCampus: 1, layout: .hashTagGroups)
        let ids = c.map.nodes.map(\.id)
        let n = c.nodes[ids[0]]!
        #expect(await n.execute(key: b("a{t}"), Self.data("set", "a{t}", "1")) == .done(.data(.ok)))
        #expect(
            await n.execute(key: b("l{t}"), Self.data("rpush", "l{t}", "x", "y")) == .done(.data(.integer(2)))
        )
        for id in ids {
            #expect(await c.nodes[id]!.execute(key: b("a{t}"), .read) == .value(b("1")))
            #expect(await c.nodes[id]!.execute(key: b("zz{t}"), .read) == .value(nil))
        }
        // Both live in the group key's one value.
        let raw = await n.execute(key: KeyLayout.groupPrefix + b("t"), .read)
        guard case .value(let bytes) = raw else {
            Issue.record("group key read \(raw)")
            return
        }
        #expect(GroupValue(bytes).members.map(\.key) == [b("a{t}"), b("l{t}")])
        // An untagged key is its own.
        #expect(await n.execute(key: b("plain"), .write(.put(b("p")))) == .done(.ok))
        #expect(await n.execute(key: b("plain"), .read) == .value(b("p")))
        await c.stop()
    }

    @Test("A member past its deadline reads absent through the protocol; its neighbours stay")
    func memberExpiry() async throws {
        var options = LoopbackCluster.options
        options.clockSkewBoundMs = 2_000
        let c = try await LoopbackCluster.start(perCampus: 1, options: options, layout: .hashTagGroups)
        let n = c.nodes[NodeID(1)]!
        let now = UInt64(CommandProcessor.unixMicros() / 1000)
        #expect(
            await n.execute(key: b("near{t}"), Self.data("set", "near{t}", "v", "pxat", String(now + 1_000)))
                == .done(.data(.ok)))
        #expect(await n.execute(key: b("far{t}"), Self.data("set", "far{t}", "w")) == .done(.data(.ok)))
        #expect(await n.execute(key: b("near{t}"), .read) == .value(nil))
        #expect(await n.execute(key: b("far{t}"), .read) == .value(b("w")))
        // The removal went through the group's instance: no node's next write finds it.
        for other in c.nodes.values {
            #expect(
                await other.execute(key: b("near{t}"), Self.data("expirecheck", "near{t}"))
                    == .done(.data(.integer(0))))
        }
        await c.stop()
    }

    @Test("A data directory written with one key layout is refused under the other")
    func layoutGuard() async throws {
        let fs = MemoryFileSystem()
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        var map = try TokenPlanner.plan(
            name: "guard", nodesPerCampus: [.a: 1, .b: 1, .c: 1], tokensPerNode: 4)
        let logger = Logger(label: "test")
        func start(_ layout: KeyLayout) async throws -> Node {
            map.keyLayout = layout
            let loop = group.next()
            let store = try Store(directory: "/n1", fileSystem: fs, executor: LoopExecutor(loop: loop))
            var options = LoopbackCluster.options
            options.repair = nil
            do {
                return try await Node.start(
                    id: NodeID(1), map: map, store: store, link: nil, eventLoop: loop, options: options,
                    logger: logger)
            } catch {
                await store.close()
                throw error
            }
        }
        let first = try await start(.perKey)
        await first.shutdown(grace: .milliseconds(10))
        await #expect(throws: (any Error).self) { _ = try await start(.hashTagGroups) }
        let again = try await start(.perKey)
        await again.shutdown(grace: .milliseconds(10))
        try? await group.shutdownGracefully()
    }

    /// Three nodes with the key layout `hash-tag-groups`, their processors knowing it.
    static func connected() async throws -> KeyspaceCluster {
        try await KeyspaceCluster.start(layout: .hashTagGroups) { _, node in
            var processor = CommandProcessor(password: nil, maxValueBytes: 1 << 20)
            processor.keyLayout = .hashTagGroups
            var options = KeyspaceOptions()
            options.flushAllowed = true
            processor.modules.append(KeyspaceService(node: node, options: options))
            return processor
        }
    }

    @Test(
        "Through connections: MULTI on one tag runs, mixing tags is CROSSSLOT; members are keys to TYPE, SCAN, KEYS, DBSIZE"
    )
    func connections() async throws {
        let k = try await Self.connected()
        defer { Task { await k.stop() } }
        let a = try await k.client(0)
        let b = try await k.client(1)
        #expect(try await a.send(["MULTI"]) == .simpleString("OK"))
        #expect(try await a.send(["RPUSH", "blist{t}", "x", "y"]) == .simpleString("QUEUED"))
        #expect(try await a.send(["SET", "target{t}", "v"]) == .simpleString("QUEUED"))
        #expect(
            try await a.send(["LMOVE", "blist{t}", "other{t}", "LEFT", "RIGHT"]) == .simpleString("QUEUED"))
        #expect(try await a.send(["EXEC"]) == .array([.integer(2), .simpleString("OK"), bulk("x")]))
        #expect(try await b.send(["LRANGE", "other{t}", "0", "-1"]) == .array([bulk("x")]))
        #expect(try await b.send(["TYPE", "blist{t}"]) == .simpleString("list"))
        #expect(try await b.send(["GET", "target{t}"]) == bulk("v"))
        _ = try await a.send(["SET", "plain", "p"])
        _ = try await a.send(["MULTI"])
        _ = try await a.send(["SET", "a{t}", "1"])
        let mixed = try await a.send(["SET", "b{u}", "1"])
        guard case .error(let e) = mixed else {
            Issue.record("mixed tags queued")
            return
        }
        #expect(e.hasPrefix("CROSSSLOT"))
        #expect(
            try await a.send(["EXEC"])
                == .error("EXECABORT Transaction discarded because of previous errors."))
        #expect(
            try await b.send(["EXISTS", "a{t}"]) == .integer(0), "nothing of the aborted transaction ran")
        // The keyspace sees members, never the group key.
        #expect(try await b.send(["DBSIZE"]) == .integer(4))
        let listed = try await b.send(["KEYS", "*{t}"])
        guard case .array(let keys?) = listed else {
            Issue.record("KEYS")
            return
        }
        #expect(Set(keys) == [bulk("blist{t}"), bulk("target{t}"), bulk("other{t}")])
        // Several keys of one tag in one command: one instance.
        #expect(try await a.send(["MSET", "m1{t}", "1", "m2{t}", "2"]) == .simpleString("OK"))
        #expect(
            try await b.send(["MGET", "m1{t}", "m2{t}", "blist{t}"])
                == .array([bulk("1"), bulk("2"), .bulkString(nil)]))
        #expect(try await b.send(["DEL", "m1{t}", "m2{t}", "nope{t}"]) == .integer(2))
        #expect(try await b.send(["RENAME", "target{t}", "renamed{t}"]) == .simpleString("OK"))
        #expect(try await b.send(["GET", "renamed{t}"]) == bulk("v"))
    }

    @Test("A pop blocked on a member is woken by a push to it through another node")
    func blockingWake() async throws {
        let k = try await Self.connected()
        defer { Task { await k.stop() } }
        let a = try await k.client(0)
        let b = try await k.client(1)
        let clock = ContinuousClock()
        let t = clock.now
        async let popped = a.send(["BLPOP", "q{t}", "10"])
        try await Task.sleep(for: .milliseconds(300))
        _ = try await b.send(["RPUSH", "q{t}", "hello"])
        #expect(try await popped == .array([bulk("q{t}"), bulk("hello")]))
        #expect(clock.now - t < .seconds(5))
        // BLMOVE between members: parked, then moved in one instance when the source is pushed.
        async let moved = a.send(["BLMOVE", "src{t}", "dst{t}", "LEFT", "RIGHT", "10"])
        try await Task.sleep(for: .milliseconds(300))
        _ = try await b.send(["RPUSH", "src{t}", "z"])
        #expect(try await moved == bulk("z"))
        #expect(try await b.send(["LRANGE", "dst{t}", "0", "-1"]) == .array([bulk("z")]))
        #expect(try await b.send(["EXISTS", "src{t}"]) == .integer(0))
        #expect(
            try await a.send(["BLMPOP", "0.2", "2", "e1{t}", "e2{t}", "LEFT"]) == .array(nil), "the timeout")
        // In a group too: the destination's kind is an error once the move is served.
        _ = try await b.send(["SET", "target{t}", "nolist"])
        async let wrong = a.send(["BRPOPLPUSH", "blist{t}", "target{t}", "10"])
        try await Task.sleep(for: .milliseconds(300))
        _ = try await b.send(["RPUSH", "blist{t}", "foo"])
        #expect(
            try await wrong == .error("WRONGTYPE Operation against a key holding the wrong kind of value"))
        #expect(try await b.send(["LRANGE", "blist{t}", "0", "-1"]) == .array([bulk("foo")]))
    }

    @Test(
        "A blocked pop is not answered WRONGTYPE when its key becomes a string meanwhile (Redis keeps it blocked)"
    )
    func blockedThroughWrongType() async throws {
        let k = try await KeyspaceCluster.start()
        defer { Task { await k.stop() } }
        let a = try await k.client(0)
        let b = try await k.client(1)
        async let popped = a.send(["BLMPOP", "10", "1", "list", "LEFT", "COUNT", "1"])
        try await Task.sleep(for: .milliseconds(300))
        _ = try await b.send(["MULTI"])
        _ = try await b.send(["LPUSH", "list", "a"])
        _ = try await b.send(["DEL", "list"])
        _ = try await b.send(["SET", "list", "foo"])
        _ = try await b.send(["EXEC"])
        try await Task.sleep(for: .milliseconds(300))
        _ = try await b.send(["DEL", "list"])
        _ = try await b.send(["LPUSH", "list", "b"])
        #expect(try await popped == .array([bulk("list"), .array([bulk("b")])]))
        // A destination of another kind is still an error when the blocked move is served (Redis's
        // "BRPOPLPUSH with wrong destination type").
        _ = try await b.send(["SET", "target", "nolist"])
        async let moved = a.send(["BRPOPLPUSH", "blist", "target", "10"])
        try await Task.sleep(for: .milliseconds(300))
        _ = try await b.send(["RPUSH", "blist", "foo"])
        #expect(
            try await moved == .error("WRONGTYPE Operation against a key holding the wrong kind of value"))
        #expect(try await b.send(["LRANGE", "blist", "0", "-1"]) == .array([bulk("foo")]))
    }
}
