import Logging
import NIOCore
import NIOPosix
import TernConsensus
import TernCore
import TernPlacement
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
}
