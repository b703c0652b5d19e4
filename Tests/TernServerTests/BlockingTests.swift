import NIOConcurrencyHelpers
import NIOCore
import TernRESP
import Testing

@testable import TernServer

/// Blocking commands (`CommandPlan.blocking`, Blocking.swift) through real connections on a
/// three-node loopback cluster: a push on another node wakes the blocked pop, the timeout answers,
/// the connection's later commands wait for the blocked one, CLIENT UNBLOCK and closing clean up.
@Suite(.timeLimit(.minutes(2))) struct BlockingTests {
    @Test("BLPOP woken by RPUSH on another node; timeout; later commands wait; CLIENT UNBLOCK")
    func blockingPops() async throws {
        let k = try await KeyspaceCluster.start()
        defer { Task { await k.stop() } }
        let a = try await k.client(0)
        let b = try await k.client(1)

        // Nothing to take: the timeout answers a null array, after the time asked.
        let clock = ContinuousClock()
        var t = clock.now
        #expect(try await a.send(["BLPOP", "q", "0.3"]) == .array(nil))
        #expect(clock.now - t >= .milliseconds(290))
        #expect(try await a.send(["BLPOP", "q", "-1"]) == .error("ERR timeout is negative"))
        #expect(
            try await a.send(["BLPOP", "q", "x"]) == .error("ERR timeout is not a float or out of range"))

        // Already there: answered at once, from the first non-empty key in the order given.
        _ = try await b.send(["RPUSH", "q2", "x", "y"])
        #expect(try await a.send(["BLPOP", "q", "q2", "5"]) == .array([bulk("q2"), bulk("x")]))
        #expect(try await a.send(["BRPOP", "q", "q2", "5"]) == .array([bulk("q2"), bulk("y")]))
        _ = try await b.send(["SET", "s", "v"])
        #expect(try await a.send(["BLPOP", "s", "1"]) == .error(DataCommandsWrongType.text))

        // Blocked, then a push on another node: the pop answers well before its timeout, and the
        // LLEN pipelined behind it on the same connection runs after it (it sees the pop's effect).
        t = clock.now
        async let popped = a.pipeline([bytes(["BLPOP", "q", "10"]), bytes(["LLEN", "q"])])
        try await Task.sleep(for: .milliseconds(300))
        _ = try await b.send(["RPUSH", "q", "hello", "world"])
        let replies = try await popped
        // Run before the pop, LLEN would have answered 0.
        #expect(replies == [.array([bulk("q"), bulk("hello")]), .integer(1)])
        #expect(clock.now - t < .seconds(5))

        // CLIENT UNBLOCK from another connection: TIMEOUT answers the timeout reply, ERROR an error.
        guard case .integer(let id) = try await a.send(["CLIENT", "ID"]) else {
            Issue.record("CLIENT ID")
            return
        }
        let c = try await k.client(0)
        async let unblocked = a.send(["BLPOP", "none", "0"])
        try await Task.sleep(for: .milliseconds(300))
        #expect(try await c.send(["CLIENT", "UNBLOCK", "\(id)"]) == .integer(1))
        #expect(try await unblocked == .array(nil))
        async let errored = a.send(["BRPOP", "none", "0"])
        try await Task.sleep(for: .milliseconds(300))
        #expect(try await c.send(["CLIENT", "UNBLOCK", "\(id)", "ERROR"]) == .integer(1))
        #expect(try await errored == .error("UNBLOCKED client unblocked via CLIENT UNBLOCK"))
        #expect(try await c.send(["CLIENT", "UNBLOCK", "\(id)"]) == .integer(0))

        // A closed connection leaves no waiter behind.
        let d = try await k.client(2)
        async let gone = d.send(["BLPOP", "none", "0"])
        try await Task.sleep(for: .milliseconds(300))
        #expect(k.cluster.nodes.values.map(\.blockedKeys.count).reduce(0, +) == 1)
        await d.close()
        _ = try? await gone
        try await Task.sleep(for: .milliseconds(200))
        #expect(k.cluster.nodes.values.map(\.blockedKeys.count).reduce(0, +) == 0)
        for x in [a, b, c] { await x.close() }
    }
}

enum DataCommandsWrongType {
    static let text = "WRONGTYPE Operation against a key holding the wrong kind of value"
}

@Suite struct BlockedKeysTests {
    @Test("A waiter is woken once by a write of any of its keys, and forgotten; removed ones never")
    func wake() {
        let r = BlockedKeys()
        let woken = NIOLockedValueBox<[String]>([])
        _ = r.add([b("a"), b("b")]) { woken.withLockedValue { $0.append("1") } }
        let second = r.add([b("b")]) { woken.withLockedValue { $0.append("2") } }
        _ = r.add([b("c")]) { woken.withLockedValue { $0.append("3") } }
        #expect(r.count == 3)
        r.remove(second)
        r.wake([b("x"), b("b")])
        r.wake([b("a")])
        #expect(woken.withLockedValue { $0 } == ["1"])
        #expect(r.count == 1)
        r.wake([b("c"), b("c")])
        #expect(woken.withLockedValue { $0 } == ["1", "3"])
        #expect(r.count == 0)
    }
}

@Suite struct MonitorLineTests {
    @Test("MONITOR lines quote and escape as Redis's sdscatrepr; secrets redacted")
    func line() {
        let l = FrontendRegistry.monitorLine(
            [b("set"), b("a b"), [0x22, 0x5C, 10, 13, 9, 0, 0xff, 0x41]], address: "127.0.0.1:5",
            redact: false)
        let parts = l.split(separator: " ", maxSplits: 1)
        #expect(parts[0].split(separator: ".").map(\.count).last == 6)
        #expect(parts[1] == #"[0 127.0.0.1:5] "set" "a b" "\"\\\n\r\t\x00\xffA""#)
        let secret = FrontendRegistry.monitorLine([b("auth"), b("u"), b("pw")], address: "x", redact: true)
        #expect(secret.hasSuffix(#"[0 x] "auth" "(redacted)" "(redacted)""#))
    }
}
