import Histogram
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import TernCore
import TernRESP

/// The knobs of `tern demo chat`.
public struct ChatDemoOptions: Sendable {
    public var host = "127.0.0.1"
    /// Client ports of the nodes (phones and senders spread over them).
    public var ports = [7379, 7380, 7381]
    public var users = 1_000
    /// Phones per user: each syncs the user's inbox on its own and must get every message once.
    public var devices = 3
    /// Length of the sending phase.
    public var seconds = 60.0
    /// Concurrent senders (each one connection, one request at a time).
    public var senders = 16
    /// Share of sends that are group messages (MSG.FANOUT to `groupSize` users).
    public var groupRatio = 0.1
    public var groupSize = 5
    /// A phone stays online up to this long, then drops its connection...
    public var onlineSecondsMax = 6.0
    /// ...and stays offline up to this long.
    public var offlineSecondsMax = 3.0
    /// Share of SYNC replies a phone "loses" (drops without advancing its key), as when the radio
    /// dies after the request left.
    public var lostReplyRatio = 0.05
    public var seed: UInt64 = 1
    /// First uid (the demo's users are `uidBase ..< uidBase + users`); fresh per run by default so
    /// runs against the same cluster do not see each other's messages.
    public var uidBase: UInt64 = 1
    public init() {}
}

/// What `tern demo chat` measured and checked.
public struct ChatDemoReport: Sendable {
    public var sendCalls = 0
    /// Inbox messages acknowledged (a fan-out counts once per recipient).
    public var messages = 0
    public var sendErrors = 0
    public var sendSeconds = 0.0
    public var deliveries = 0
    public var syncs = 0
    public var pushes = 0
    public var reconnects = 0
    public var lostReplies = 0
    public var syncP50Ms = 0.0
    public var syncP99Ms = 0.0
    public var pushToSyncP50Ms = 0.0
    public var pushToSyncP99Ms = 0.0
    public var sendToDeviceP50Ms = 0.0
    public var sendToDeviceP99Ms = 0.0
    public var failures: [String] = []
    public var failureCount = 0
    public var ok: Bool { failureCount == 0 && messages > 0 }

    public var messagesPerSecond: Double { sendSeconds > 0 ? Double(messages) / sendSeconds : 0 }

    public var text: String {
        func f(_ v: Double) -> String { String(Double(Int(v * 100)) / 100) }
        var s = """
            messages: \(messages) acknowledged (\(sendCalls) MSG.SEND/MSG.FANOUT calls, \(sendErrors) errors) in \(f(sendSeconds)) s = \(f(messagesPerSecond)) messages/s
            deliveries: \(deliveries) (every device of every user), \(syncs) SYNCs, \(pushes) push notices, \(reconnects) connections, \(lostReplies) SYNC replies dropped on purpose
            SYNC latency: p50 \(f(syncP50Ms)) ms, p99 \(f(syncP99Ms)) ms
            push-to-sync (notice received -> messages in hand): p50 \(f(pushToSyncP50Ms)) ms, p99 \(f(pushToSyncP99Ms)) ms
            send-to-device (online devices): p50 \(f(sendToDeviceP50Ms)) ms, p99 \(f(sendToDeviceP99Ms)) ms

            """
        if failureCount == 0 {
            s += "check: OK - every device received every message of its user exactly once, in order\n"
        } else {
            s += "check: FAILED (\(failureCount) problems)\n"
            for x in failures { s += "  \(x)\n" }
        }
        return s
    }
}

/// `tern demo chat`: simulated phones against a running cluster (see docs/SYNC.md).
///
/// Senders send 1:1 and group messages; every user has `devices` phones that go online (connect to
/// a random node, RESP3, SYNC.SUBSCRIBE, catch up), sync on each push notice, drop replies now
/// and then, and go offline again. At the end every phone catches up and the demo checks that it
/// got exactly the acknowledged messages of its user (plus, at most once each, messages whose send
/// failed ambiguously), in sequence order.
public enum ChatDemo {
    final class Shared: Sendable {
        struct State {
            /// Per user index: seq → message id, for acknowledged messages.
            var acked: [[UInt64: String]]
            /// Messages whose send failed: they may or may not be in the inbox.
            var uncertain: Set<String> = []
            var report = ChatDemoReport()
            var sync = ChatDemo.histogram()
            var pushToSync = ChatDemo.histogram()
            var sendToDevice = ChatDemo.histogram()
        }
        let state: NIOLockedValueBox<State>
        let stopping = NIOLockedValueBox(false)
        init(users: Int) { state = NIOLockedValueBox(State(acked: Array(repeating: [:], count: users))) }
        func fail(_ text: String) {
            state.withLockedValue {
                $0.report.failureCount += 1
                if $0.report.failures.count < 20 { $0.report.failures.append(text) }
            }
        }
        var stopped: Bool { stopping.withLockedValue { $0 } }
    }

    static func histogram() -> Histogram<UInt64> {
        Histogram(
            lowestDiscernibleValue: 1, highestTrackableValue: 60_000_000,
            numberOfSignificantValueDigits: .three)
    }

    static func micros() -> UInt64 { NIODeadline.now().uptimeNanoseconds / 1_000 }

    /// Runs the demo; throws only if no node can be reached.
    public static func run(_ o: ChatDemoOptions, progress: @escaping @Sendable (String) -> Void = { _ in })
        async throws
        -> ChatDemoReport
    {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        do {
            let report = try await run(o, group: group, progress: progress)
            try? await group.shutdownGracefully()
            return report
        } catch {
            try? await group.shutdownGracefully()
            throw error
        }
    }

    static func run(
        _ o: ChatDemoOptions, group: MultiThreadedEventLoopGroup,
        progress: @escaping @Sendable (String) -> Void
    ) async throws -> ChatDemoReport {
        // Reachability first: a clear error rather than thousands of failed phones.
        for p in o.ports {
            let c = try await RESPClient.connect(
                host: o.host, port: p, group: group, requestTimeout: .seconds(5))
            _ = try await c.send(["PING"])
            await c.close()
        }
        let shared = Shared(users: o.users)
        let phones = Task {
            await withTaskGroup(of: Void.self) { g in
                for u in 0..<o.users {
                    for d in 0..<o.devices {
                        g.addTask { await phone(user: u, device: d, o, shared, group) }
                    }
                }
            }
        }
        progress("\(o.users * o.devices) phones started; sending for \(o.seconds) s")
        let start = micros()
        await withTaskGroup(of: Void.self) { g in
            for s in 0..<o.senders {
                g.addTask { await sender(s, o, shared, group, until: start + UInt64(o.seconds * 1e6)) }
            }
        }
        let sendSeconds = Double(micros() - start) / 1e6
        shared.stopping.withLockedValue { $0 = true }
        progress("sending done; phones catching up")
        await phones.value
        var report = shared.state.withLockedValue { s in
            var r = s.report
            r.sendSeconds = sendSeconds
            r.syncP50Ms = Double(s.sync.valueAtPercentile(50)) / 1e3
            r.syncP99Ms = Double(s.sync.valueAtPercentile(99)) / 1e3
            r.pushToSyncP50Ms = Double(s.pushToSync.valueAtPercentile(50)) / 1e3
            r.pushToSyncP99Ms = Double(s.pushToSync.valueAtPercentile(99)) / 1e3
            r.sendToDeviceP50Ms = Double(s.sendToDevice.valueAtPercentile(50)) / 1e3
            r.sendToDeviceP99Ms = Double(s.sendToDevice.valueAtPercentile(99)) / 1e3
            return r
        }
        if report.messages == 0 { report.failures.append("no message was acknowledged") }
        return report
    }

    static func uid(_ o: ChatDemoOptions, _ user: Int) -> String { String(o.uidBase + UInt64(user)) }

    /// One sender: random users, 1:1 or group messages, one at a time, until `until`.
    static func sender(
        _ index: Int, _ o: ChatDemoOptions, _ shared: Shared, _ group: any EventLoopGroup, until: UInt64
    )
        async
    {
        var rng = SplitMix64(seed: o.seed &* 31 &+ UInt64(index) &+ 0x5EED)
        guard
            let c = try? await RESPClient.connect(
                host: o.host, port: o.ports[index % o.ports.count], group: group, requestTimeout: .seconds(10)
            )
        else { return shared.fail("sender \(index): cannot connect") }
        var n = 0
        while micros() < until {
            n += 1
            let id = "m\(index)-\(n)"
            let payload = "\(id)|\(micros())"
            let fanout = rng.chance(o.groupRatio) && o.users >= o.groupSize
            var users: [Int] = []
            if fanout {
                while users.count < o.groupSize {
                    let u = Int(rng.below(UInt64(o.users)))
                    if !users.contains(u) { users.append(u) }
                }
            } else {
                users = [Int(rng.below(UInt64(o.users)))]
            }
            let args =
                fanout
                ? ["MSG.FANOUT", payload] + users.map { uid(o, $0) }
                : ["MSG.SEND", uid(o, users[0]), payload]
            let reply: RESPValue
            do {
                reply = try await c.send(args)
            } catch {
                shared.state.withLockedValue {
                    $0.report.sendErrors += 1
                    $0.uncertain.insert(id)
                }
                break
            }
            let results: [RESPValue]
            if fanout, case .array(let r?) = reply { results = r } else { results = [reply] }
            shared.state.withLockedValue { s in
                s.report.sendCalls += 1
                for (u, r) in zip(users, results) {
                    if case .integer(let seq) = r {
                        s.acked[u][UInt64(seq)] = id
                        s.report.messages += 1
                    } else {
                        s.report.sendErrors += 1
                        s.uncertain.insert(id)
                    }
                }
            }
        }
        await c.close()
    }

    /// One phone of one user: online/offline cycles until the end, then a final catch-up and check.
    static func phone(
        user: Int, device: Int, _ o: ChatDemoOptions, _ shared: Shared, _ group: any EventLoopGroup
    ) async {
        var rng = SplitMix64(seed: o.seed &* 1_000_003 &+ UInt64(user * 16 + device))
        var state = PhoneState(uid: uid(o, user), name: "user \(user) device \(device)")
        while !shared.stopped {
            let port = o.ports[Int(rng.below(UInt64(o.ports.count)))]
            if let c = try? await RESPClient.connect(
                host: o.host, port: port, group: group, requestTimeout: .seconds(10))
            {
                shared.state.withLockedValue { $0.report.reconnects += 1 }
                let onlineFor = rng.uniform(0.2, o.onlineSecondsMax)
                let phoneSeed = rng.next()
                state = await online(c, state, seconds: onlineFor, seed: phoneSeed, o, shared)
                await c.close()
            }
            let offline = rng.uniform(0.1, o.offlineSecondsMax)
            let until = micros() + UInt64(offline * 1e6)
            while micros() < until && !shared.stopped { try? await Task.sleep(nanoseconds: 50_000_000) }
        }
        // Final catch-up: no more losses, until an empty SYNC.
        for attempt in 0..<5 {
            let port = o.ports[(user + device + attempt) % o.ports.count]
            guard
                let c = try? await RESPClient.connect(
                    host: o.host, port: port, group: group, requestTimeout: .seconds(20))
            else { continue }
            var rng2 = SplitMix64(seed: 0)
            let ok = await syncUntilEmpty(
                c, &state, &rng2, lossRatio: 0, count: 1_000, pushAt: nil, o, shared)
            await c.close()
            if ok { break }
        }
        check(user: user, state, shared)
    }

    struct PhoneState: Sendable {
        var uid: String
        var name: String
        var key: UInt64 = 0
        var got: [(seq: UInt64, id: String)] = []
        var subscribedAt: UInt64 = .max
    }

    /// Online: RESP3, subscribe, catch up, then a SYNC per push notice, until `seconds` pass.
    static func online(
        _ c: RESPClient, _ initial: PhoneState, seconds: Double, seed: UInt64, _ o: ChatDemoOptions,
        _ shared: Shared
    ) async -> PhoneState {
        let box = NIOLockedValueBox(initial)
        await withTaskGroup(of: Void.self) { g in
            g.addTask {
                let until = micros() + UInt64(seconds * 1e6)
                while micros() < until && !shared.stopped { try? await Task.sleep(nanoseconds: 50_000_000) }
            }
            g.addTask {
                var rng = SplitMix64(seed: seed)
                var state = box.withLockedValue { $0 }
                defer { box.withLockedValue { $0 = state } }
                guard (try? await c.send(["HELLO", "3"])) != nil,
                    case .integer = (try? await c.send(["SYNC.SUBSCRIBE", state.uid])) ?? .null
                else { return }
                state.subscribedAt = micros()
                guard
                    await syncUntilEmpty(
                        c, &state, &rng, lossRatio: o.lostReplyRatio, count: 100, pushAt: nil, o, shared)
                else { return }
                for await _ in c.pushes {
                    shared.state.withLockedValue { $0.report.pushes += 1 }
                    let at = micros()
                    guard
                        await syncUntilEmpty(
                            c, &state, &rng, lossRatio: o.lostReplyRatio, count: 100, pushAt: at, o, shared)
                    else { return }
                }
            }
            await g.next()
            g.cancelAll()
        }
        var s = box.withLockedValue { $0 }
        s.subscribedAt = .max
        return s
    }

    /// SYNCs until a reply has fewer than `count` messages; false if the connection failed.
    static func syncUntilEmpty(
        _ c: RESPClient, _ state: inout PhoneState, _ rng: inout SplitMix64, lossRatio: Double, count: Int,
        pushAt: UInt64?, _ o: ChatDemoOptions, _ shared: Shared
    ) async -> Bool {
        for _ in 0..<10_000 {
            let t0 = micros()
            guard
                let reply = try? await c.send(["SYNC", state.uid, String(state.key), "COUNT", String(count)])
            else {
                return false
            }
            let t1 = micros()
            guard case .array(let parts?) = reply, parts.count == 3, case .integer(let key) = parts[0],
                case .array(let ms?) = parts[1]
            else {
                shared.fail("\(state.name): bad SYNC reply \(reply)")
                return false
            }
            if rng.chance(lossRatio) {
                shared.state.withLockedValue {
                    $0.report.lostReplies += 1
                    $0.report.syncs += 1
                    _ = $0.sync.record(max(1, t1 - t0))
                }
                continue
            }
            var sentAt: [UInt64] = []
            for m in ms {
                guard case .array(let f?) = m, f.count == 3, case .integer(let seq) = f[0],
                    case .bulkString(let p?) = f[2]
                else {
                    shared.fail("\(state.name): bad message \(m)")
                    return false
                }
                let text = String(decoding: p, as: UTF8.self)
                let parts = text.split(separator: "|")
                let seqU = UInt64(seq)
                if seqU <= (state.got.last?.seq ?? 0) {
                    shared.fail(
                        "\(state.name): seq \(seqU) after \(state.got.last?.seq ?? 0) (order or duplicate)")
                }
                state.got.append((seqU, String(parts.first ?? "")))
                if parts.count == 2, let s = UInt64(parts[1]), s >= state.subscribedAt { sentAt.append(s) }
            }
            state.key = UInt64(key)
            shared.state.withLockedValue { s in
                s.report.syncs += 1
                s.report.deliveries += ms.count
                _ = s.sync.record(max(1, t1 - t0))
                if let pushAt, !ms.isEmpty { _ = s.pushToSync.record(max(1, t1 - pushAt)) }
                for at in sentAt where t1 > at { _ = s.sendToDevice.record(t1 - at) }
            }
            if ms.count < count { return true }
        }
        return true
    }

    /// The phone got exactly its user's acknowledged messages (plus uncertain ones at most once), in order.
    static func check(user: Int, _ state: PhoneState, _ shared: Shared) {
        let (acked, uncertain) = shared.state.withLockedValue { ($0.acked[user], $0.uncertain) }
        var seen: [UInt64: String] = [:]
        for (seq, id) in state.got {
            if seen[seq] != nil { shared.fail("\(state.name): seq \(seq) delivered twice") }
            seen[seq] = id
        }
        for (seq, id) in acked where seen[seq] != id {
            shared.fail(
                "\(state.name): acknowledged message \(id) (seq \(seq)) missing, got \(seen[seq] ?? "nothing")"
            )
        }
        for (seq, id) in seen where acked[seq] == nil && !uncertain.contains(id) {
            shared.fail("\(state.name): unexpected message \(id) at seq \(seq)")
        }
    }
}

/// The demo's choices come from TernCore's seeded SplitMix64 (a run's schedule of choices replays).
extension SplitMix64 {
    /// Uniform in `lo..<hi` (`lo` when `hi <= lo`).
    mutating func uniform(_ lo: Double, _ hi: Double) -> Double {
        lo + (max(hi, lo) - lo) * Double(next() >> 11) / Double(1 << 53)
    }
}
