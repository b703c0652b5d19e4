import Histogram
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import TernCore
import TernRESP

/// The knobs of `tern demo queue`.
public struct QueueDemoOptions: Sendable {
    public var host = "127.0.0.1"
    /// Client ports of the nodes (connections spread over them). Redis's port works too (the
    /// demo speaks only Redis's Streams commands), which is how bench-peers measures the peer.
    public var ports = [7379, 7380, 7381]
    /// Streams (tasks spread over them round-robin); each has one consumer group.
    public var streams = 4
    /// Producer connections, and XADDs pipelined on each.
    public var producers = 8
    public var pipeline = 8
    /// Worker connections (each one consumer at a time), entries per XREADGROUP.
    public var workers = 16
    public var batch = 10
    /// How long producers add, in seconds; workers then drain what is left.
    public var seconds = 10.0
    /// Chance that a worker "crashes" after reading a batch: it acknowledges none of it and comes
    /// back as a new consumer; its entries are claimed by others after `claimIdleMs`.
    public var crashRatio = 0.01
    public var claimIdleMs = 1000
    /// Acknowledge a batch with one `XACK key group id…` instead of one XACK per entry. A
    /// connection's commands on one key run one after the other on Tern (in order, as sent), so a
    /// batch of 10 XACKs + XDEL costs 11 Paxos rounds of the stream; Redis runs them in one pass.
    public var ackTogether = false
    /// Extra time to drain the backlog after the producers stop, in seconds.
    public var drainSeconds = 30.0
    /// Stream keys are `<prefix><n>`, fresh per run by default.
    public var prefix = "demoq:"
    public var seed: UInt64 = 1
    public init() {}
}

/// What `tern demo queue` measured and checked.
public struct QueueDemoReport: Sendable {
    public var added = 0
    public var addErrors = 0
    public var addSeconds = 0.0
    public var acked = 0
    public var ackSeconds = 0.0
    public var deliveries = 0
    public var crashes = 0
    public var claimed = 0
    /// Entries processed a second time (their XACK answered 0: another worker acknowledged first).
    public var processedTwice = 0
    /// XACKs that failed or went unanswered (a node down): the entry is claimed again.
    public var ackErrors = 0
    public var p50Ms = 0.0
    public var p99Ms = 0.0
    public var failures: [String] = []
    public var failureCount = 0
    public var ok: Bool { failureCount == 0 && added > 0 }
    public var addsPerSecond: Double { addSeconds > 0 ? Double(added) / addSeconds : 0 }
    public var acksPerSecond: Double { ackSeconds > 0 ? Double(acked) / ackSeconds : 0 }

    public var text: String {
        func f(_ v: Double) -> String { String(Double(Int(v * 100)) / 100) }
        var s = """
            added: \(added) entries (\(addErrors) XADD errors) in \(f(addSeconds)) s = \(f(addsPerSecond)) XADD/s
            processed: \(acked) acknowledged in \(f(ackSeconds)) s = \(f(acksPerSecond)) XREADGROUP+XACK/s
            end-to-end (XADD sent -> XACK answered): p50 \(f(p50Ms)) ms, p99 \(f(p99Ms)) ms
            redeliveries: \(deliveries - acked) (\(crashes) worker crashes, \(claimed) entries claimed by XAUTOCLAIM, \(processedTwice) processed twice, \(ackErrors) XACK errors)

            """
        if failureCount == 0 {
            s +=
                "check: OK - every entry whose XADD answered an id was delivered and acknowledged, none "
                + "delivered after its acknowledgement, nothing left pending\n"
        } else {
            s += "check: FAILED (\(failureCount) problems)\n"
            for x in failures { s += "  \(x)\n" }
        }
        return s
    }
}

public struct QueueDemoError: Error, CustomStringConvertible {
    public let description: String
    init(_ d: String) { description = d }
}

/// Producers add tasks to streams (`XADD`), a pool of workers reads them through a consumer group
/// (`XREADGROUP … BLOCK`), acknowledges and deletes them (`XACK`, `XDEL`), and now and then
/// "crashes" holding a batch, which other workers claim after an idle time (`XAUTOCLAIM`). Checks
/// at-least-once delivery: every entry whose XADD answered an id is acknowledged, no entry is
/// delivered after its acknowledgement answered, and no group has anything pending at the end.
public enum QueueDemo {
    final class Shared: Sendable {
        struct State {
            /// Entry id (per stream) → when its XADD was sent (µs).
            var added: [[String: UInt64]]
            /// Entry id (per stream) → when its XACK answered 1 (µs).
            var acked: [[String: UInt64]]
            var report = QueueDemoReport()
            var latency = ChatDemo.histogram()
            var lastAck: UInt64 = 0
            /// Entries whose XACK failed or went unanswered (it may have taken effect).
            var uncertain: [Set<String>]
        }
        let state: NIOLockedValueBox<State>
        init(streams: Int) {
            state = NIOLockedValueBox(
                State(
                    added: Array(repeating: [:], count: streams),
                    acked: Array(repeating: [:], count: streams),
                    uncertain: Array(repeating: [], count: streams)))
        }
        func fail(_ text: String) {
            state.withLockedValue {
                $0.report.failureCount += 1
                if $0.report.failures.count < 20 { $0.report.failures.append(text) }
            }
        }
        /// Every added entry is acknowledged.
        var drained: Bool {
            state.withLockedValue { s in
                (0..<s.added.count).allSatisfy { n in
                    s.added[n].keys.allSatisfy { s.acked[n][$0] != nil || s.uncertain[n].contains($0) }
                }
            }
        }
    }

    static let group = "workers"

    public static func run(
        _ o: QueueDemoOptions, progress: @escaping @Sendable (String) -> Void = { _ in }
    ) async throws -> QueueDemoReport {
        let loops = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        do {
            let r = try await run(o, loops: loops, progress: progress)
            try? await loops.shutdownGracefully()
            return r
        } catch {
            try? await loops.shutdownGracefully()
            throw error
        }
    }

    static func stream(_ o: QueueDemoOptions, _ n: Int) -> String { "\(o.prefix)\(n)" }
    static func cmd(_ parts: [String]) -> [[UInt8]] { parts.map { Array($0.utf8) } }
    static func text(_ v: RESPValue) -> String? {
        if case .bulkString(let b?) = v { return String(decoding: b, as: UTF8.self) }
        if case .simpleString(let s) = v { return s }
        return nil
    }

    /// The entries of an XREADGROUP / XAUTOCLAIM entry list: (id, fields).
    static func entries(_ v: RESPValue) -> [(id: String, fields: [String: String])] {
        guard case .array(let items?) = v else { return [] }
        return items.compactMap { e in
            guard case .array(let parts?) = e, parts.count == 2, let id = text(parts[0]) else { return nil }
            var fields: [String: String] = [:]
            if case .array(let fv?) = parts[1] {
                for i in stride(from: 0, to: fv.count - 1, by: 2) {
                    if let f = text(fv[i]), let v = text(fv[i + 1]) { fields[f] = v }
                }
            }
            return (id, fields)
        }
    }

    static func run(
        _ o: QueueDemoOptions, loops: MultiThreadedEventLoopGroup,
        progress: @escaping @Sendable (String) -> Void
    ) async throws -> QueueDemoReport {
        /// A connection to node `k`, or the next one that answers (a node may be down: the
        /// process tests kill one while the demo runs); nil once `until` passes.
        @Sendable func reconnect(_ k: Int, until: UInt64) async -> RESPClient? {
            var i = k
            while ChatDemo.micros() < until {
                if let c = try? await RESPClient.connect(
                    host: o.host, port: o.ports[i % o.ports.count], group: loops, requestTimeout: .seconds(10)
                ) {
                    return c
                }
                i += 1
                try? await Task.sleep(nanoseconds: 100_000_000)
            }
            return nil
        }
        func connect(_ k: Int) async throws -> RESPClient {
            guard let c = await reconnect(k, until: ChatDemo.micros() + 10_000_000) else {
                throw QueueDemoError("no node answered on \(o.ports)")
            }
            return c
        }
        let admin = try await connect(0)
        for n in 0..<o.streams {
            let r = try await admin.send(["XGROUP", "CREATE", stream(o, n), group, "$", "MKSTREAM"])
            guard r == .simpleString("OK") else {
                throw QueueDemoError("XGROUP CREATE \(stream(o, n)): \(r)")
            }
        }
        progress("\(o.streams) streams with group '\(group)'; \(o.producers) producers, \(o.workers) workers")
        let shared = Shared(streams: o.streams)
        let start = ChatDemo.micros()
        let addUntil = start + UInt64(o.seconds * 1e6)
        let drainUntil = addUntil + UInt64(o.drainSeconds * 1e6)
        let producing = NIOLockedValueBox(o.producers)
        await withTaskGroup(of: Void.self) { tg in
            for p in 0..<o.producers {
                tg.addTask {
                    defer { producing.withLockedValue { $0 -= 1 } }
                    guard var c = await reconnect(p, until: addUntil) else {
                        shared.fail("producer \(p) could not connect")
                        return
                    }
                    var seq = 0
                    var failures = 0
                    while ChatDemo.micros() < addUntil {
                        let t0 = ChatDemo.micros()
                        var targets: [Int] = []
                        var cmds: [[[UInt8]]] = []
                        for _ in 0..<o.pipeline {
                            let n = (p + seq) % o.streams
                            targets.append(n)
                            cmds.append(
                                cmd([
                                    "XADD", stream(o, n), "*", "t", String(t0), "p", String(p), "n",
                                    String(seq),
                                ]))
                            seq += 1
                        }
                        guard let replies = try? await c.pipeline(cmds) else {
                            // The node went away: these XADDs may or may not have been added (not
                            // counted as added; the check holds only for answered ids). Next node.
                            shared.state.withLockedValue { $0.report.addErrors += cmds.count }
                            await c.close()
                            failures += 1
                            guard let next = await reconnect(p + failures, until: addUntil) else { return }
                            c = next
                            continue
                        }
                        shared.state.withLockedValue { s in
                            for (n, r) in zip(targets, replies) {
                                if let id = text(r) {
                                    s.added[n][id] = t0
                                    s.report.added += 1
                                } else {
                                    s.report.addErrors += 1
                                }
                            }
                        }
                    }
                    await c.close()
                }
            }
            for w in 0..<o.workers {
                tg.addTask {
                    await worker(
                        w, o, shared, reconnect: reconnect, producing: producing, drainUntil: drainUntil)
                }
            }
        }
        let end = ChatDemo.micros()
        // What is left pending in each group (entries delivered and never acknowledged).
        for n in 0..<o.streams {
            let r = try await admin.send(["XPENDING", stream(o, n), group])
            if case .array(let parts?) = r, let first = parts.first, first != .integer(0) {
                shared.fail("\(stream(o, n)): XPENDING says \(first) entries still pending")
            }
        }
        await admin.close()
        return shared.state.withLockedValue { s in
            var missing = 0
            for n in 0..<o.streams {
                // An entry whose acknowledgement went unanswered counts when nothing is left
                // pending (checked above): it was acknowledged unseen, or claimed and acknowledged.
                for id in s.added[n].keys where s.acked[n][id] == nil && !s.uncertain[n].contains(id) {
                    missing += 1
                    if missing <= 5 {
                        s.report.failures.append("\(stream(o, n)) \(id): added, never acknowledged")
                    }
                }
            }
            s.report.failureCount += missing
            var r = s.report
            r.addSeconds = min(Double(end - start), o.seconds * 1e6) / 1e6
            r.ackSeconds = Double(max(s.lastAck, start + 1) - start) / 1e6
            r.p50Ms = Double(s.latency.valueAtPercentile(50)) / 1e3
            r.p99Ms = Double(s.latency.valueAtPercentile(99)) / 1e3
            return r
        }
    }

    /// One worker: read a batch (or claim idle entries), maybe crash, acknowledge and delete.
    static func worker(
        _ w: Int, _ o: QueueDemoOptions, _ shared: Shared,
        reconnect: @Sendable (Int, UInt64) async -> RESPClient?,
        producing: NIOLockedValueBox<Int>, drainUntil: UInt64
    ) async {
        guard var c = await reconnect(w, drainUntil) else {
            shared.fail("worker \(w) could not connect")
            return
        }
        var failures = 0
        var life = 0
        // A lost connection loses the batch it was reading or acknowledging: those entries stay
        // pending and are claimed later (by this worker as a new consumer, or another).
        func replace() async -> Bool {
            await c.close()
            failures += 1
            life += 1
            guard let next = await reconnect(w + failures, drainUntil) else { return false }
            c = next
            return true
        }
        var rng = SplitMix64(seed: o.seed &+ UInt64(w) &* 0x9E37_79B9)
        var round = 0
        let n = w % o.streams
        let key = stream(o, n)
        while ChatDemo.micros() < drainUntil {
            // Done when everything added is acknowledged (or its XACK went unanswered) and the
            // group has nothing pending (an unanswered XACK that did not take effect is claimed).
            if producing.withLockedValue({ $0 }) == 0 && shared.drained,
                case .array(let parts?)? = try? await c.send(["XPENDING", key, group]),
                parts.first == .integer(0)
            {
                break
            }
            round += 1
            let consumer = "w\(w).\(life)"
            let asked = ChatDemo.micros()
            var got: [(id: String, fields: [String: String])] = []
            var claimedNow = false
            if round % 8 == 0 {
                // Entries a crashed worker left: claimed once idle long enough.
                guard
                    let r = try? await c.send(
                        cmd([
                            "XAUTOCLAIM", key, group, consumer, String(o.claimIdleMs), "0-0", "COUNT",
                            String(o.batch),
                        ]))
                else { break }
                if case .array(let parts?) = r, parts.count >= 2 { got = entries(parts[1]) }
                claimedNow = true
            } else {
                guard
                    let r = try? await c.send(
                        cmd([
                            "XREADGROUP", "GROUP", group, consumer, "COUNT", String(o.batch), "BLOCK", "200",
                            "STREAMS", key, ">",
                        ]))
                else {
                    if await replace() { continue } else { break }
                }
                if case .array(let streams?) = r, let first = streams.first, case .array(let kv?) = first,
                    kv.count == 2
                {
                    got = entries(kv[1])
                }
            }
            if got.isEmpty { continue }
            shared.state.withLockedValue { s in
                s.report.deliveries += got.count
                if claimedNow { s.report.claimed += got.count }
                for e in got {
                    if let ackedAt = s.acked[n][e.id], ackedAt < asked {
                        s.report.failureCount += 1
                        if s.report.failures.count < 20 {
                            s.report.failures.append(
                                "\(key) \(e.id): delivered again after its XACK answered")
                        }
                    }
                }
            }
            if rng.chance(o.crashRatio) {
                // Crash holding the batch: nothing acknowledged, back as a new consumer.
                shared.state.withLockedValue { $0.report.crashes += 1 }
                life += 1
                continue
            }
            var cmds =
                o.ackTogether
                ? [cmd(["XACK", key, group] + got.map(\.id))] : got.map { cmd(["XACK", key, group, $0.id]) }
            cmds.append(cmd(["XDEL", key] + got.map(\.id)))
            guard let replies = try? await c.pipeline(cmds) else {
                shared.state.withLockedValue { s in for e in got { s.uncertain[n].insert(e.id) } }
                if await replace() { continue } else { break }
            }
            let now = ChatDemo.micros()
            // One XACK of the batch: its count says all were acknowledged by it, or (fewer) that
            // some were acknowledged before (claimed and completed by another worker), not which.
            var perEntry = Array(replies.prefix(got.count))
            if o.ackTogether, let r = replies.first {
                perEntry =
                    r == .integer(Int64(got.count))
                    ? Array(repeating: .integer(1), count: got.count)
                    : Array(repeating: r == .integer(0) ? .integer(0) : .error("partial"), count: got.count)
            }
            shared.state.withLockedValue { s in
                for (e, r) in zip(got, perEntry) {
                    if r == .integer(1) {
                        s.acked[n][e.id] = now
                        s.report.acked += 1
                        s.lastAck = max(s.lastAck, now)
                        if let t = e.fields["t"].flatMap(UInt64.init), now > t { s.latency.record(now - t) }
                    } else if r == .integer(0) {
                        s.report.processedTwice += 1
                    } else {
                        // NOQUORUM, a timeout: the entry stays pending and is claimed again, or the
                        // acknowledgement took effect unseen (checked at the end).
                        s.uncertain[n].insert(e.id)
                        s.report.ackErrors += 1
                    }
                }
            }
        }
        await c.close()
    }
}
