import Histogram
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import TernCore
import TernRESP

/// The knobs of `tern demo envelope`.
public struct EnvelopeDemoOptions: Sendable {
    public var host = "127.0.0.1"
    /// Client ports of the nodes (connections spread over them).
    public var ports = [7379, 7380, 7381]
    /// Envelopes, one per group.
    public var groups = 100
    /// Members per group: every member opens its group's envelope once, some twice.
    public var members = 200
    /// Shares per envelope (nil: half the members, so that late members find it empty).
    public var count: Int?
    /// Cents per envelope (nil: 100 per share).
    public var totalCents: Int?
    /// Concurrent connections, and opens pipelined on each.
    public var connections = 64
    public var pipeline = 8
    /// Share of members that open a second time (the answer must be the same amount).
    public var againRatio = 0.1
    /// Times an open that failed (NOQUORUM, UNAVAILABLE) is sent again.
    public var retriesMax = 5
    public var seed: UInt64 = 1
    /// Envelope ids are `<prefix><group>`, fresh per run by default.
    public var prefix = "demo"
    public init() {}
}

/// What `tern demo envelope` measured and checked.
public struct EnvelopeDemoReport: Sendable {
    public var opens = 0
    public var openErrors = 0
    /// Opens sent again after a NOQUORUM or UNAVAILABLE answer.
    public var retries = 0
    public var seconds = 0.0
    public var p50Ms = 0.0
    public var p99Ms = 0.0
    public var sharesPaid = 0
    public var failures: [String] = []
    public var failureCount = 0
    public var ok: Bool { failureCount == 0 && opens > 0 }
    public var opensPerSecond: Double { seconds > 0 ? Double(opens) / seconds : 0 }

    public var text: String {
        func f(_ v: Double) -> String { String(Double(Int(v * 100)) / 100) }
        var s = """
            opens: \(opens) answered (\(openErrors) errors, \(retries) retried after NOQUORUM) in \(f(seconds)) s = \(f(opensPerSecond)) opens/s
            ENVELOPE.OPEN latency: p50 \(f(p50Ms)) ms, p99 \(f(p99Ms)) ms
            shares paid: \(sharesPaid)

            """
        if failureCount == 0 {
            s +=
                "check: OK - every envelope: shares + remaining + refunded = total, every share >= 1 cent, "
                + "at most count shares, no uid paid twice, every answer = the uid's share\n"
        } else {
            s += "check: FAILED (\(failureCount) problems)\n"
            for x in failures { s += "  \(x)\n" }
        }
        return s
    }
}

/// Creates one envelope per group, then opens them concurrently (members of every group
/// interleaved, spread over all nodes, pipelined), then reads every envelope with ENVELOPE.INFO and
/// checks the bank invariant and every answer against it.
public enum EnvelopeDemo {
    final class Shared: Sendable {
        struct State {
            /// Per group: uid → answered amount (nil: answered "empty").
            var answers: [[UInt64: Int64?]]
            var report = EnvelopeDemoReport()
            var latency = ChatDemo.histogram()
        }
        let state: NIOLockedValueBox<State>
        init(groups: Int) { state = NIOLockedValueBox(State(answers: Array(repeating: [:], count: groups))) }
        func fail(_ text: String) {
            state.withLockedValue {
                $0.report.failureCount += 1
                if $0.report.failures.count < 20 { $0.report.failures.append(text) }
            }
        }
    }

    public static func run(
        _ o: EnvelopeDemoOptions, progress: @escaping @Sendable (String) -> Void = { _ in }
    )
        async throws -> EnvelopeDemoReport
    {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        do {
            let r = try await run(o, group: group, progress: progress)
            try? await group.shutdownGracefully()
            return r
        } catch {
            try? await group.shutdownGracefully()
            throw error
        }
    }

    static func id(_ o: EnvelopeDemoOptions, _ g: Int) -> String { "\(o.prefix)\(g)" }
    static func uid(_ o: EnvelopeDemoOptions, _ g: Int, _ m: Int) -> UInt64 { UInt64(g * o.members + m) }

    static func run(
        _ o: EnvelopeDemoOptions, group: MultiThreadedEventLoopGroup,
        progress: @escaping @Sendable (String) -> Void
    ) async throws -> EnvelopeDemoReport {
        var clients: [RESPClient] = []
        for k in 0..<max(o.connections, 1) {
            clients.append(
                try await RESPClient.connect(
                    host: o.host, port: o.ports[k % o.ports.count], group: group, requestTimeout: .seconds(30)
                ))
        }
        let count = o.count ?? max(1, o.members / 2)
        let total = o.totalCents ?? 100 * count
        // Create (pipelined on the first connection of each node).
        var creates: [[[UInt8]]] = []
        for g in 0..<o.groups {
            creates.append(
                ["ENVELOPE.CREATE", id(o, g), String(total), String(count)].map { Array($0.utf8) })
        }
        for (k, r) in try await clients[0].pipeline(creates).enumerated() where r != .simpleString("OK") {
            throw EnvelopeDemoError("ENVELOPE.CREATE \(id(o, k)): \(r)")
        }
        progress(
            "\(o.groups) envelopes of \(total) cents in \(count) shares created; \(o.members) members each")
        // The opens: every (group, member), some twice, shuffled so every envelope is hot at once.
        var rng = SplitMix64(seed: o.seed)
        var opens: [(g: Int, m: Int)] = []
        for g in 0..<o.groups {
            for m in 0..<o.members {
                opens.append((g, m))
                if rng.chance(o.againRatio) { opens.append((g, m)) }
            }
        }
        for i in stride(from: opens.count - 1, to: 0, by: -1) {
            opens.swapAt(i, Int(rng.below(UInt64(i + 1))))
        }
        let shared = Shared(groups: o.groups)
        let work = opens
        let next = NIOLockedValueBox(0)
        let start = ChatDemo.micros()
        await withTaskGroup(of: Void.self) { tg in
            for c in clients {
                tg.addTask {
                    while true {
                        let batch: ArraySlice<(g: Int, m: Int)> = next.withLockedValue { n in
                            let b = work[n..<min(n + o.pipeline, work.count)]
                            n = min(n + o.pipeline, work.count)
                            return b
                        }
                        if batch.isEmpty { return }
                        // An open is safe to send again after ANY failure (the uid de-duplicates it):
                        // NOQUORUM answers (contention between the three campuses' proposers on a
                        // hot envelope) are retried, up to `retriesMax` times.
                        var todo = Array(batch)
                        var round = 0
                        while !todo.isEmpty {
                            let t0 = ChatDemo.micros()
                            let cmds = todo.map { x in
                                ["ENVELOPE.OPEN", id(o, x.g), String(uid(o, x.g, x.m))].map { Array($0.utf8) }
                            }
                            guard let replies = try? await c.pipeline(cmds) else {
                                shared.fail("a connection failed")
                                return
                            }
                            let dt = ChatDemo.micros() - t0
                            var again: [(g: Int, m: Int)] = []
                            for (x, r) in zip(todo, replies) {
                                if case .error(let e) = r, round < o.retriesMax,
                                    e.hasPrefix("NOQUORUM") || e.hasPrefix("UNAVAILABLE")
                                {
                                    again.append(x)
                                    continue
                                }
                                record(shared, o, x.g, uid(o, x.g, x.m), r, micros: dt)
                            }
                            if !again.isEmpty {
                                shared.state.withLockedValue { $0.report.retries += again.count }
                            }
                            todo = again
                            round += 1
                        }
                    }
                }
            }
        }
        let seconds = Double(ChatDemo.micros() - start) / 1e6
        progress("opens done; checking every envelope with ENVELOPE.INFO")
        var paid = 0
        for g in 0..<o.groups {
            let info = try await clients[g % clients.count].send(["ENVELOPE.INFO", id(o, g)])
            paid += check(shared, g, info, count: count, total: total)
        }
        for c in clients { await c.close() }
        return shared.state.withLockedValue { s in
            var r = s.report
            r.seconds = seconds
            r.sharesPaid = paid
            r.p50Ms = Double(s.latency.valueAtPercentile(50)) / 1e3
            r.p99Ms = Double(s.latency.valueAtPercentile(99)) / 1e3
            return r
        }
    }

    static func record(
        _ shared: Shared, _ o: EnvelopeDemoOptions, _ g: Int, _ uid: UInt64, _ r: RESPValue, micros: UInt64
    ) {
        let answer: Int64?
        switch r {
        case .integer(let a): answer = a
        case .error(let e) where e.hasPrefix("ERR envelope is empty"): answer = nil
        default:
            shared.state.withLockedValue { $0.report.openErrors += 1 }
            shared.fail("ENVELOPE.OPEN \(id(o, g)) \(uid): \(r)")
            return
        }
        var clash: String?
        shared.state.withLockedValue { s in
            s.report.opens += 1
            s.latency.record(max(micros, 1))
            if let before = s.answers[g][uid], before != answer, before != nil {
                clash =
                    "uid \(uid) of \(id(o, g)) answered \(String(describing: before)), then \(String(describing: answer))"
            }
            if s.answers[g][uid] == nil || answer != nil { s.answers[g][uid] = answer }
        }
        if let clash { shared.fail(clash) }
    }

    /// Checks one envelope's INFO against the invariants and the answers; the shares paid.
    static func check(_ shared: Shared, _ g: Int, _ info: RESPValue, count: Int, total: Int) -> Int {
        guard case .array(let f?) = info, f.count == 16 else {
            shared.fail("ENVELOPE.INFO \(g): \(info)")
            return 0
        }
        func int(_ k: Int) -> Int64 {
            if case .integer(let v) = f[k] { return v }
            return -1
        }
        let (t, remaining, c, refunded) = (int(1), int(3), int(5), int(11))
        guard case .array(let list?) = f[15] else {
            shared.fail("ENVELOPE.INFO \(g): no shares")
            return 0
        }
        var shares: [UInt64: Int64] = [:]
        var sum: Int64 = 0
        for e in list {
            guard case .array(let p?) = e, p.count == 2, case .integer(let u) = p[0],
                case .integer(let a) = p[1]
            else { continue }
            if shares[UInt64(bitPattern: u)] != nil { shared.fail("envelope \(g): uid \(u) paid twice") }
            if a < 1 { shared.fail("envelope \(g): uid \(u) got \(a) cents") }
            shares[UInt64(bitPattern: u)] = a
            sum += a
        }
        if t != Int64(total) || c != Int64(count) { shared.fail("envelope \(g): total \(t), count \(c)") }
        if sum + remaining + refunded != t {
            shared.fail(
                "envelope \(g): shares \(sum) + remaining \(remaining) + refunded \(refunded) != total \(t)")
        }
        if shares.count > count { shared.fail("envelope \(g): \(shares.count) shares > count \(count)") }
        let answers = shared.state.withLockedValue { $0.answers[g] }
        for (u, a) in answers {
            if shares[u] != a {
                shared.fail(
                    "envelope \(g): uid \(u) answered \(String(describing: a)), INFO says \(String(describing: shares[u]))"
                )
            }
        }
        if shares.count < min(count, answers.count) {
            shared.fail("envelope \(g): \(shares.count) shares, though \(answers.count) members opened")
        }
        return shares.count
    }
}

/// The demo could not run (a node refused the set-up).
public struct EnvelopeDemoError: Error, CustomStringConvertible {
    public var description: String
    init(_ d: String) { description = d }
}
