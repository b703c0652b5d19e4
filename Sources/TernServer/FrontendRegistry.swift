import Foundation
import NIOConcurrencyHelpers
import NIOCore
import TernCore
import TernRESP

/// One command's counters on one event loop (INFO commandstats): touched only on that loop, so
/// counting a call takes no lock.
final class CommandCounter {
    let name: String
    let hasSubcommands: Bool
    /// SYNC … BLOCK waits: counted in `blocked_clients` while it runs.
    let blocking: Bool
    var calls = 0
    var usec = 0
    var rejected = 0
    var failed = 0
    /// Calls by latency bucket (`LatencyBuckets`) and their summed time: never reset (CONFIG
    /// RESETSTAT clears the INFO counters above), so `/metrics` exports them as counters.
    var latency = [Int](repeating: 0, count: LatencyBuckets.count)
    var latencyMicrosEver = 0
    init(_ spec: CommandSpec) {
        name = spec.name
        hasSubcommands = !spec.subcommands.isEmpty
        blocking = spec.flags.contains("blocking")
    }
}

/// What the front end keeps per event loop: its connections, the command counters, the totals and
/// the ops/sec samples. Only its loop touches it (the registry hands work to it with `submit`), so
/// the hot path takes no lock: the same rule as the connection handlers on that loop.
final class FrontendShard: @unchecked Sendable {
    let loop: any EventLoop
    var connections: [UInt64: RESPConnectionHandler] = [:]
    /// Every command name of the table (subcommands as `container|sub`), made once: a lookup never
    /// inserts.
    let counters: [String: CommandCounter]
    var totalConnections = 0
    var errorReplies = 0
    /// Error replies by their first word (`ERR`, `NOQUORUM`, …): INFO errorstats.
    var errorCounts: [String: Int] = [:]
    /// Key reads that found a value, and that found none (INFO's keyspace_hits and _misses).
    var keyspaceHits = 0
    var keyspaceMisses = 0
    var blocked = 0
    /// Whether a MONITOR connection exists on this node (read per command, set by the registry).
    var monitoring = false
    /// Calls counted since start (never reset: the ops/sec samples are deltas of it) and its value
    /// at the last CONFIG RESETSTAT.
    var commandsEver = 0
    var commandsAtReset = 0
    /// Redis's instantaneous_ops_per_sec: 16 samples, one per 100 ms.
    var samples = [Int](repeating: 0, count: 16)
    var sampleIndex = 0
    var lastSample: (commands: Int, at: NIODeadline)
    var sampler: RepeatedTask?
    /// Every call of this loop by latency bucket, and its value at each of the last 16 samples
    /// (the oldest, 1.6 s ago, is subtracted for the recent p50/p99 of `/status`).
    var latency = [Int](repeating: 0, count: LatencyBuckets.count)
    var latencyHistory = [[Int]](
        repeating: [Int](repeating: 0, count: LatencyBuckets.count), count: 16)
    /// The last error replies of this loop (a repeat of the newest is counted, not stored).
    var recentErrors: [RecentError] = []

    init(loop: any EventLoop, table: CommandTable) {
        self.loop = loop
        var counters: [String: CommandCounter] = [:]
        for c in table.commands {
            counters[c.name] = CommandCounter(c)
            for s in c.subcommands { counters[s.name] = CommandCounter(s) }
        }
        self.counters = counters
        lastSample = (0, .now())
    }

    /// The counter for `args` (the subcommand's when it has one), nil for an unknown command.
    func counter(for args: [[UInt8]]) -> CommandCounter? {
        guard let first = args.first, let top = counters[String(decoding: first, as: UTF8.self).lowercased()]
        else { return nil }
        if top.hasSubcommands, args.count >= 2,
            let sub = counters[top.name + "|" + String(decoding: args[1], as: UTF8.self).lowercased()]
        {
            return sub
        }
        return top
    }

    /// Counts one finished call of `counter` that took from `start` to now and answered `reply`.
    func finished(_ counter: CommandCounter, since start: NIODeadline, reply: RESPValue, rejected: Bool) {
        if rejected {
            counter.rejected += 1
            return
        }
        counter.calls += 1
        let micros = Int((NIODeadline.now() - start).nanoseconds / 1000)
        counter.usec += micros
        let bucket = LatencyBuckets.index(micros: micros)
        counter.latency[bucket] += 1
        counter.latencyMicrosEver += micros
        latency[bucket] += 1
        if case .error = reply { counter.failed += 1 }
        commandsEver += 1
    }

    /// Counts an error reply (and keeps the last few for the dashboard).
    func error(_ text: String) {
        errorReplies += 1
        let kind = text.prefix { $0 != " " }
        errorCounts[String(kind.prefix(64)), default: 0] += 1
        RecentError.record(
            &recentErrors, source: "reply", text: text, at: Date().timeIntervalSince1970, max: 8)
    }

    func sample() {
        let now = NIODeadline.now()
        let ms = max(1, (now - lastSample.at).nanoseconds / 1_000_000)
        samples[sampleIndex] = Int(Int64(commandsEver - lastSample.commands) * 1000 / ms)
        latencyHistory[sampleIndex] = latency
        sampleIndex = (sampleIndex + 1) % samples.count
        lastSample = (commandsEver, now)
    }

    struct Snapshot {
        var clients: [ClientFacts]
        var commands: [CommandStat]
        var totalConnections: Int
        var totalCommands: Int
        var opsPerSecond: Int
        var errorReplies: Int
        var errorCounts: [String: Int]
        var hits: Int
        var misses: Int
        var blocked: Int
        /// Calls by latency bucket since start, and over the last 1.6 s.
        var latency: [Int]
        var recentLatency: [Int]
        var recentErrors: [RecentError]
    }

    func snapshot(withClients: Bool) -> Snapshot {
        Snapshot(
            clients: withClients ? connections.values.map { $0.facts() } : [],
            commands: counters.values.filter { $0.calls + $0.rejected > 0 }.map {
                CommandStat(
                    name: $0.name, calls: $0.calls, usec: $0.usec, rejected: $0.rejected, failed: $0.failed,
                    latency: $0.latency, latencyMicrosEver: $0.latencyMicrosEver)
            },
            totalConnections: totalConnections, totalCommands: commandsEver - commandsAtReset,
            opsPerSecond: samples.reduce(0, +) / samples.count, errorReplies: errorReplies,
            errorCounts: errorCounts, hits: keyspaceHits,
            misses: keyspaceMisses, blocked: blocked, latency: latency,
            recentLatency: zip(latency, latencyHistory[sampleIndex]).map { $0 - $1 },
            recentErrors: recentErrors)
    }

    func resetStats() {
        for c in counters.values {
            c.calls = 0
            c.usec = 0
            c.rejected = 0
            c.failed = 0
        }
        totalConnections = 0
        errorReplies = 0
        errorCounts = [:]
        keyspaceHits = 0
        keyspaceMisses = 0
        commandsAtReset = commandsEver
    }
}

/// The front end's registry: connection ids, one shard per event loop that runs connections, and
/// the process's figures for INFO. Locks are taken at accept and when a command asks (INFO,
/// CLIENT LIST/KILL), never per command.
final class FrontendRegistry: Sendable {
    let table: CommandTable
    let gate: ClientGate
    let started = NIODeadline.now()
    private let ids = NIOLockedValueBox<UInt64>(0)
    private let shards = NIOLockedValueBox<[ObjectIdentifier: FrontendShard]>([:])
    private let portBox = NIOLockedValueBox(0)
    /// The gate's monotonic counts (also in /metrics) at the last CONFIG RESETSTAT.
    private let gateBaseline = NIOLockedValueBox((refused: 0, evicted: 0))
    /// MONITOR connections: every command this node reads is shown to them.
    private let monitors = NIOLockedValueBox<[UInt64: ConnectionOutlet]>([:])

    init(table: CommandTable, gate: ClientGate) {
        self.table = table
        self.gate = gate
    }

    var port: Int {
        get { portBox.withLockedValue { $0 } }
        set { portBox.withLockedValue { $0 = newValue } }
    }

    func nextID() -> UInt64 {
        ids.withLockedValue {
            $0 += 1
            return $0
        }
    }

    /// The shard of `loop`, made (with its ops/sec sampler) on first use.
    func shard(_ loop: any EventLoop) -> FrontendShard {
        shards.withLockedValue { all in
            if let s = all[ObjectIdentifier(loop)] { return s }
            let s = FrontendShard(loop: loop, table: table)
            s.sampler = loop.scheduleRepeatedTask(initialDelay: .milliseconds(100), delay: .milliseconds(100))
            {
                _ in s.sample()
            }
            all[ObjectIdentifier(loop)] = s
            return s
        }
    }

    var allShards: [FrontendShard] { shards.withLockedValue { Array($0.values) } }

    func close() {
        for s in allShards { s.sampler?.cancel() }
    }

    private func snapshots(withClients: Bool, on loop: any EventLoop) -> EventLoopFuture<
        [FrontendShard.Snapshot]
    > {
        let parts = allShards.map { s in s.loop.submit { s.snapshot(withClients: withClients) } }
        return EventLoopFuture.whenAllSucceed(parts, on: loop)
    }

    func clients(on loop: any EventLoop) -> EventLoopFuture<[ClientFacts]> {
        snapshots(withClients: true, on: loop).map { $0.flatMap(\.clients) }
    }

    /// Closes every connection `filter` matches, on its own loop; `asker` (id, seq) is closed after
    /// the reply to command `seq`.
    func kill(_ filter: ClientFilter, asker: (id: UInt64, seq: UInt64), on loop: any EventLoop)
        -> EventLoopFuture<Int>
    {
        let parts = allShards.map { s in
            s.loop.submit { () -> Int in
                var n = 0
                for h in s.connections.values where filter.matches(h.facts()) {
                    n += 1
                    h.kill(after: h.session.clientID == asker.id ? asker.seq : nil)
                }
                return n
            }
        }
        return EventLoopFuture.whenAllSucceed(parts, on: loop).map { $0.reduce(0, +) }
    }

    /// MONITOR: `outlet` gets every command this node reads from now on, until it closes.
    func addMonitor(_ outlet: ConnectionOutlet) {
        monitors.withLockedValue { $0[outlet.id] = outlet }
        outlet.whenClosed { [weak self] in
            guard let self else { return }
            self.monitors.withLockedValue { _ = $0.removeValue(forKey: outlet.id) }
            self.setMonitoring()
        }
        setMonitoring()
    }

    private func setMonitoring() {
        let on = monitors.withLockedValue { !$0.isEmpty }
        for s in allShards { s.loop.execute { s.monitoring = on } }
    }

    /// Shows one command to the MONITOR connections (not to `except`, the one that sent it).
    func monitor(_ line: String, except: ConnectionOutlet?) {
        let outlets = monitors.withLockedValue { Array($0.values) }
        for o in outlets where o !== except { o.push(.simpleString(line)) }
    }

    /// Redis's MONITOR line: `<unix seconds.micros> [0 <client address>] "name" "arg" …`, each
    /// argument quoted and escaped as Redis's sdscatrepr does.
    static func monitorLine(_ args: [[UInt8]], address: String, redact: Bool) -> String {
        let micros = Int64(Date().timeIntervalSince1970 * 1e6)
        let frac = String(micros % 1_000_000)
        var s =
            "\(micros / 1_000_000).\(String(repeating: "0", count: max(0, 6 - frac.count)))\(frac) [0 \(address)]"
        for (i, a) in args.enumerated() {
            s += " "
            if redact && i > 0 {
                s += "\"(redacted)\""
                continue
            }
            s += "\""
            for c in a {
                switch c {
                case UInt8(ascii: "\\"): s += "\\\\"
                case UInt8(ascii: "\""): s += "\\\""
                case 10: s += "\\n"
                case 13: s += "\\r"
                case 9: s += "\\t"
                case 7: s += "\\a"
                case 8: s += "\\b"
                case 32...126: s.unicodeScalars.append(UnicodeScalar(c))
                default: s += "\\x" + String(format: "%02x", c)
                }
            }
            s += "\""
        }
        return s
    }

    /// CLIENT UNBLOCK on connection `id`, on its own loop.
    func unblock(_ id: UInt64, error: Bool, on loop: any EventLoop) -> EventLoopFuture<Bool> {
        let parts = allShards.map { s in
            s.loop.submit { () -> Bool in
                guard let h = s.connections[id], let context = h.context else { return false }
                return h.unblock(error: error, context: context)
            }
        }
        return EventLoopFuture.whenAllSucceed(parts, on: loop).map { $0.contains(true) }
    }

    func resetStats() {
        let c = gate.counts
        gateBaseline.withLockedValue { $0 = (c.refused, c.evictedOutput + c.evictedMemory) }
        // The asking connection's shard at once, so RESETSTAT itself is the first call counted after.
        for s in allShards {
            if s.loop.inEventLoop { s.resetStats() } else { s.loop.execute { s.resetStats() } }
        }
    }

    /// The figures of INFO (`withClients`: also each connection's, for the pub/sub count).
    func facts(on loop: any EventLoop, withClients: Bool = true) -> EventLoopFuture<ServerFacts> {
        let gate = self.gate
        let baseline = gateBaseline.withLockedValue { $0 }
        let uptime = (NIODeadline.now() - started).nanoseconds / 1_000_000_000
        let port = self.port
        return snapshots(withClients: withClients, on: loop).map { snaps in
            var f = ServerFacts()
            f.unixMicros = CommandProcessor.unixMicros()
            f.uptimeSeconds = uptime
            f.processID = Int(getpid())
            f.port = port
            f.os = Self.os
            let counts = gate.counts
            f.connectedClients = counts.connected
            f.maxClients = gate.max
            f.clientBufferBytes = counts.memory
            f.rejectedConnections = counts.refused - baseline.refused
            f.evictedClients = counts.evictedOutput + counts.evictedMemory - baseline.evicted
            var stats: [String: CommandStat] = [:]
            for s in snaps {
                f.totalConnections += s.totalConnections
                f.totalCommands += s.totalCommands
                f.opsPerSecond += s.opsPerSecond
                f.errorReplies += s.errorReplies
                f.keyspaceHits += s.hits
                f.keyspaceMisses += s.misses
                f.errors.merge(s.errorCounts, uniquingKeysWith: +)
                f.blockedClients += s.blocked
                f.latency = zip(f.latency, s.latency).map { $0 + $1 }
                f.recentLatency = zip(f.recentLatency, s.recentLatency).map { $0 + $1 }
                f.recentErrors = RecentError.merge([f.recentErrors, s.recentErrors], max: 10)
                f.pubsubClients += s.clients.filter(\.subscribed).count
                for c in s.commands {
                    var t = stats[c.name] ?? CommandStat(name: c.name)
                    t.calls += c.calls
                    t.usec += c.usec
                    t.rejected += c.rejected
                    t.failed += c.failed
                    t.latency = zip(t.latency, c.latency).map { $0 + $1 }
                    t.latencyMicrosEver += c.latencyMicrosEver
                    stats[c.name] = t
                }
            }
            f.commands = stats.values.sorted { $0.name < $1.name }
            let (rss, peak, user, system) = Self.usage()
            f.rssBytes = rss
            f.peakRSSBytes = max(peak, rss)
            f.cpuUser = user
            f.cpuSystem = system
            f.systemMemoryBytes = Self.systemMemory
            return f
        }
    }

    /// `uname`: system, release, machine (INFO's os).
    static let os: String = {
        var u = utsname()
        uname(&u)
        func text<T>(_ field: T) -> String {
            withUnsafeBytes(of: field) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        }
        return "\(text(u.sysname)) \(text(u.release)) \(text(u.machine))"
    }()

    /// MemTotal of /proc/meminfo, in bytes (0 if unreadable).
    static let systemMemory: Int = {
        guard let text = try? String(contentsOfFile: "/proc/meminfo", encoding: .utf8),
            let line = text.split(separator: "\n").first(where: { $0.hasPrefix("MemTotal:") }),
            let kb = line.split(separator: " ").dropFirst().first.flatMap({ Int($0) })
        else { return 0 }
        return kb * 1024
    }()

    /// Resident bytes now (/proc/self/statm), peak resident bytes, user and system CPU seconds
    /// (getrusage).
    static func usage() -> (rss: Int, peak: Int, user: Double, system: Double) {
        var rss = 0
        if let text = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) {
            let fields = text.split(separator: " ")
            if fields.count >= 2, let pages = Int(fields[1]) {
                rss = pages * Int(sysconf(Int32(_SC_PAGESIZE)))
            }
        }
        var u = rusage()
        getrusage(RUSAGE_SELF.rawValue, &u)
        func seconds(_ t: timeval) -> Double { Double(t.tv_sec) + Double(t.tv_usec) / 1e6 }
        return (rss, Int(u.ru_maxrss) * 1024, seconds(u.ru_utime), seconds(u.ru_stime))
    }
}

/// The front end as a connection's command sees it (`CommandPlan.frontend`).
struct ConnectionView: FrontendView {
    let handler: NIOLoopBound<RESPConnectionHandler>
    let registry: FrontendRegistry
    let seq: UInt64
    let eventLoop: any EventLoop

    func me() -> ClientFacts { handler.value.facts() }
    func clients() -> EventLoopFuture<[ClientFacts]> { registry.clients(on: eventLoop) }
    func facts() -> EventLoopFuture<ServerFacts> { registry.facts(on: eventLoop) }
    func kill(_ filter: ClientFilter) -> EventLoopFuture<Int> {
        registry.kill(filter, asker: (handler.value.session.clientID, seq), on: eventLoop)
    }
    var maxClients: Int { registry.gate.max }
    var port: Int { registry.port }
    func setMaxClients(_ n: Int) { registry.gate.setMax(n) }
    func resetStats() { registry.resetStats() }
    func unblock(_ id: UInt64, error: Bool) -> EventLoopFuture<Bool> {
        registry.unblock(id, error: error, on: eventLoop)
    }
    func monitor() -> Bool {
        let h = handler.value
        guard let context = h.context else { return false }
        h.monitoring = true
        registry.addMonitor(h.outlet(context: context))
        return true
    }
}
