import Foundation
import NIOCore
import TernCore
import TernRESP

/// One client connection as CLIENT LIST and CLIENT INFO show it (Redis 7's fields).
public struct ClientFacts: Sendable, Hashable {
    public var id: UInt64
    public var addr: String
    public var laddr: String
    public var fd: Int
    public var name: String
    /// Seconds since the connection was accepted, and since its last command.
    public var age: Int64
    public var idle: Int64
    /// `N` plain, `P` subscribed (pub/sub), `e` no-evict added (Redis's letters).
    public var subscribed: Bool
    public var noEvict: Bool
    public var sub: Int
    /// The query buffer (decoder) bytes; reply bytes waiting (`obl`), replies waiting (`oll`),
    /// and everything unread by the client (`omem`, the socket's outbound buffer included).
    public var qbuf: Int
    public var obl: Int
    public var oll: Int
    public var omem: Int
    /// The last command, `container|sub` for a subcommand (Redis's `cmd=`).
    public var cmd: String
    public var resp: Int
    public var libName: String
    public var libVersion: String
    /// The ACL user the connection runs as.
    public var user = "default"

    public init(id: UInt64, addr: String, laddr: String) {
        self.id = id
        self.addr = addr
        self.laddr = laddr
        fd = -1
        name = ""
        age = 0
        idle = 0
        subscribed = false
        noEvict = false
        sub = 0
        qbuf = 0
        obl = 0
        oll = 0
        omem = 0
        cmd = "NULL"
        resp = 2
        libName = ""
        libVersion = ""
    }

    /// Redis's flags field.
    public var flags: String {
        let letters = (subscribed ? "P" : "") + (noEvict ? "e" : "")
        return letters.isEmpty ? "N" : letters
    }

    /// One CLIENT LIST line (without its newline), Redis 7.2's field order.
    public var line: String {
        "id=\(id) addr=\(addr) laddr=\(laddr) fd=\(fd) name=\(name) age=\(age) idle=\(idle) flags=\(flags) "
            + "db=0 sub=\(sub) psub=0 ssub=0 multi=-1 qbuf=\(qbuf) qbuf-free=0 argv-mem=0 multi-mem=0 "
            + "rbs=\(qbuf) rbp=0 obl=\(obl) oll=\(oll) omem=\(omem) tot-mem=\(qbuf + omem) events=r cmd=\(cmd) "
            + "user=\(user) redir=-1 resp=\(resp) lib-name=\(libName) lib-ver=\(libVersion)"
    }
}

/// What CLIENT KILL selects (Redis 7's filters; all given must match).
public struct ClientFilter: Sendable, Hashable {
    public var id: UInt64?
    public var addr: String?
    public var laddr: String?
    /// `normal` or `pubsub` (Tern has no master or replica clients).
    public var type: String?
    public var user: String?
    /// The connection asking, skipped unless SKIPME no.
    public var skip: UInt64?

    public init() {}

    public func matches(_ c: ClientFacts) -> Bool {
        if let skip, c.id == skip { return false }
        if let id, c.id != id { return false }
        if let addr, c.addr != addr { return false }
        if let laddr, c.laddr != laddr { return false }
        if let user, user != "default" { return false }
        if let type {
            switch type {
            case "normal": if c.subscribed { return false }
            case "pubsub": if !c.subscribed { return false }
            default: return false
            }
        }
        return true
    }
}

/// One command's counters (INFO commandstats).
public struct CommandStat: Sendable, Hashable {
    public var name: String
    public var calls: Int
    public var usec: Int
    public var rejected: Int
    public var failed: Int
    /// Calls by `LatencyBuckets` bucket and their summed time, since start (never reset).
    public var latency: [Int]
    public var latencyMicrosEver: Int
    public init(
        name: String, calls: Int = 0, usec: Int = 0, rejected: Int = 0, failed: Int = 0,
        latency: [Int] = [Int](repeating: 0, count: LatencyBuckets.count), latencyMicrosEver: Int = 0
    ) {
        self.name = name
        self.calls = calls
        self.usec = usec
        self.rejected = rejected
        self.failed = failed
        self.latency = latency
        self.latencyMicrosEver = latencyMicrosEver
    }
}

/// The process's figures INFO shows, gathered by the front end.
public struct ServerFacts: Sendable, Hashable {
    public var unixMicros: Int64 = 0
    public var uptimeSeconds: Int64 = 0
    public var processID: Int = 0
    public var port: Int = 0
    public var os: String = ""
    public var connectedClients = 0
    public var maxClients = 0
    public var blockedClients = 0
    public var pubsubClients = 0
    public var clientBufferBytes = 0
    public var totalConnections = 0
    public var rejectedConnections = 0
    public var evictedClients = 0
    public var totalCommands = 0
    public var opsPerSecond = 0
    public var errorReplies = 0
    /// Error replies by their first word (INFO errorstats).
    public var errors: [String: Int] = [:]
    public var keyspaceHits = 0
    public var keyspaceMisses = 0
    public var rssBytes = 0
    public var peakRSSBytes = 0
    public var systemMemoryBytes = 0
    public var cpuSystem = 0.0
    public var cpuUser = 0.0
    /// Commands called at least once (or rejected) since start or CONFIG RESETSTAT, by name.
    public var commands: [CommandStat] = []
    /// Calls by `LatencyBuckets` bucket since start, and over the last 1.6 s (all loops).
    public var latency = [Int](repeating: 0, count: LatencyBuckets.count)
    public var recentLatency = [Int](repeating: 0, count: LatencyBuckets.count)
    /// The last error replies to clients, oldest first.
    public var recentErrors: [RecentError] = []
    public init() {}
}

/// What the front end lets a command see and change: the connection registry, the process's
/// figures, the live `maxclients`. The processor's plans use it; tests give a fake.
public protocol FrontendView: Sendable {
    var eventLoop: any EventLoop { get }
    /// The asking connection (call on its event loop).
    func me() -> ClientFacts
    /// Every client connection.
    func clients() -> EventLoopFuture<[ClientFacts]>
    /// The figures of INFO.
    func facts() -> EventLoopFuture<ServerFacts>
    /// Closes the connections `filter` matches (the asking one after this reply); how many.
    func kill(_ filter: ClientFilter) -> EventLoopFuture<Int>
    /// `maxclients` now, and setting it (new connections past it are refused; open ones stay).
    var maxClients: Int { get }
    func setMaxClients(_ n: Int)
    /// The port clients connect to.
    var port: Int { get }
    /// CONFIG RESETSTAT: commandstats, error count, connection and command totals back to 0.
    func resetStats()
    /// CLIENT UNBLOCK: answers connection `id`'s blocked command (its timeout reply, or an
    /// `-UNBLOCKED` error); whether one was blocked.
    func unblock(_ id: UInt64, error: Bool) -> EventLoopFuture<Bool>
    /// MONITOR: this connection gets every command the node reads from now on.
    func monitor() -> Bool
}

extension CommandProcessor {
    /// INFO's sections in Redis's order, and what `default`, `all` and `everything` stand for.
    static let infoSections = [
        "server", "clients", "memory", "persistence", "stats", "replication", "cpu", "modules",
        "commandstats",
        "errorstats", "cluster", "keyspace",
    ]
    static let defaultInfoSections: Set<String> = [
        "server", "clients", "memory", "persistence", "stats", "replication", "cpu", "modules", "errorstats",
        "cluster", "keyspace",
    ]

    /// The sections INFO `args` (after the name) asks for: none or `default` the default ones,
    /// `all` and `everything` all of them; unknown names add nothing (as Redis).
    static func infoSelection(_ args: ArraySlice<[UInt8]>) -> Set<String> {
        if args.isEmpty { return defaultInfoSections }
        var out: Set<String> = []
        for a in args {
            let s = String(decoding: a, as: UTF8.self).lowercased()
            switch s {
            case "default": out.formUnion(defaultInfoSections)
            // `all` leaves out module-generated sections, which Tern has none of.
            case "all", "everything": out.formUnion(infoSections)
            default: if infoSections.contains(s) { out.insert(s) }
            }
        }
        return out
    }

    static func human(_ bytes: Int) -> String {
        let units = ["B", "K", "M", "G", "T"]
        var v = Double(bytes)
        var u = 0
        while v >= 1024 && u < units.count - 1 {
            v /= 1024
            u += 1
        }
        return u == 0 ? "\(bytes)B" : String(format: "%.2f%@", v, units[u])
    }

    static func fixed(_ v: Double, _ places: Int) -> String { String(format: "%.\(places)f", v) }

    /// INFO's text for `sections`, Redis's field names with `f`'s figures.
    func infoText(_ f: ServerFacts, sections: Set<String>) -> String {
        var parts: [String] = []
        for s in Self.infoSections where sections.contains(s) {
            var lines: [String] = []
            switch s {
            case "server":
                lines = [
                    "# Server", "redis_version:7.0.0", "redis_mode:standalone", "os:\(f.os)", "arch_bits:64",
                    "process_id:\(f.processID)", "tcp_port:\(f.port)", "server_time_usec:\(f.unixMicros)",
                    "uptime_in_seconds:\(f.uptimeSeconds)", "uptime_in_days:\(f.uptimeSeconds / 86_400)",
                    "hz:\(hz)", "configured_hz:\(hz)",
                ]
                lines += info().split(whereSeparator: \.isNewline).map(String.init)
            case "clients":
                lines = [
                    "# Clients", "connected_clients:\(f.connectedClients)", "cluster_connections:0",
                    "maxclients:\(f.maxClients)", "blocked_clients:\(f.blockedClients)",
                    "pubsub_clients:\(f.pubsubClients)",
                ]
            case "memory":
                lines = [
                    "# Memory", "used_memory:\(f.rssBytes)", "used_memory_human:\(Self.human(f.rssBytes))",
                    "used_memory_rss:\(f.rssBytes)", "used_memory_rss_human:\(Self.human(f.rssBytes))",
                    "used_memory_peak:\(f.peakRSSBytes)",
                    "used_memory_peak_human:\(Self.human(f.peakRSSBytes))",
                    "total_system_memory:\(f.systemMemoryBytes)",
                    "total_system_memory_human:\(Self.human(f.systemMemoryBytes))",
                    "maxmemory:\(memory.limitBytes)", "maxmemory_human:\(maxmemoryHuman)",
                    "maxmemory_policy:noeviction",
                    "mem_clients_normal:\(f.clientBufferBytes)",
                ]
            case "persistence":
                let now = f.unixMicros / 1_000_000
                lines = [
                    "# Persistence", "loading:0", "async_loading:0", "rdb_changes_since_last_save:0",
                    "rdb_bgsave_in_progress:0", "rdb_last_save_time:\(now)", "rdb_last_bgsave_status:ok",
                    "aof_enabled:1", "aof_rewrite_in_progress:0", "aof_rewrite_scheduled:0",
                    "aof_last_bgrewrite_status:ok", "aof_last_write_status:ok",
                ]
            case "stats":
                lines = [
                    "# Stats", "total_connections_received:\(f.totalConnections)",
                    "total_commands_processed:\(f.totalCommands)",
                    "instantaneous_ops_per_sec:\(f.opsPerSecond)",
                    "rejected_connections:\(f.rejectedConnections)", "evicted_keys:0",
                    "evicted_clients:\(f.evictedClients)", "keyspace_hits:\(f.keyspaceHits)",
                    "keyspace_misses:\(f.keyspaceMisses)", "total_error_replies:\(f.errorReplies)",
                ]
            case "replication":
                lines = [
                    "# Replication", "role:master", "connected_slaves:0", "master_failover_state:no-failover",
                    "master_repl_offset:0",
                ]
            case "cpu":
                lines = [
                    "# CPU", "used_cpu_sys:\(Self.fixed(f.cpuSystem, 6))",
                    "used_cpu_user:\(Self.fixed(f.cpuUser, 6))",
                    "used_cpu_sys_children:0.000000", "used_cpu_user_children:0.000000",
                ]
            case "commandstats":
                lines = ["# Commandstats"]
                for c in f.commands.sorted(by: { $0.name < $1.name }) {
                    let perCall = c.calls == 0 ? 0 : Double(c.usec) / Double(c.calls)
                    lines.append(
                        "cmdstat_\(c.name):calls=\(c.calls),usec=\(c.usec),usec_per_call=\(Self.fixed(perCall, 2)),"
                            + "rejected_calls=\(c.rejected),failed_calls=\(c.failed)")
                }
            case "modules":
                // Tern's services are not Redis modules.
                lines = ["# Modules"]
            case "cluster":
                // Not Redis Cluster: every node serves every key (clients must not ask for slots).
                lines = ["# Cluster", "cluster_enabled:0"]
            case "errorstats":
                lines = ["# Errorstats"]
                for (kind, count) in f.errors.sorted(by: { $0.key < $1.key }) {
                    lines.append("errorstat_\(kind):count=\(count)")
                }
            default:
                // Keyspace: Tern cannot count the cluster's keys yet (docs/SERVER.md).
                lines = ["# Keyspace"]
            }
            parts.append(lines.map { $0 + "\r\n" }.joined())
        }
        return parts.joined(separator: "\r\n")
    }
}
