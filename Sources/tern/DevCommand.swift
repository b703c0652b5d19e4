import ArgumentParser
import Foundation
import TernCore
import TernPlacement
import TernServer
import TernTransport

#if canImport(Glibc)
    // With swift-nio-ssl in the build graph, `timespec` is seen through CoreFoundation's module.
    import CoreFoundation
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// `tern dev`: a local three-campus cluster with its data under one folder.
///
/// First run: plans a map (balanced tokens) and a random cluster secret and writes them under
/// `--dir`; later runs reuse them (same cluster, same data). Starts one `tern server` child per node
/// (this same executable), prints one line per node, waits until every node answers `/health`,
/// and on SIGINT/SIGTERM stops them all (SIGTERM, wait, exit 0). A child that dies meanwhile is
/// reported.
struct DevCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dev",
        abstract: "Run a local three-campus cluster (data under one folder) until Ctrl-C."
    )

    @Option(help: "Where the map, the settings, the data and the logs live.")
    var dir: String = "./tern-data"

    @Option(help: "Nodes per campus (first run only: a later run reuses the map).")
    var nodesPerCampus: Int = 1

    @Option(help: "First node's client port; peer ports are +100, admin ports +200 (first run only).")
    var basePort: Int = 7379

    @Flag(help: "Enable POST /fault on the admin ports (tests only; first run only).")
    var testFaults = false

    @Option(help: "Where the nodes' fsyncs run: thread (default) or inline (first run only; docs/SERVER.md).")
    var fsync: String = "thread"

    @Option(help: "Seconds to wait for every node to become healthy.")
    var startTimeout: Double = 60

    @Flag(
        help: """
            TLS: make a throwaway CA and node certificates under <dir>/tls (first time), serve TLS \
            clients on each client port + 300 and use mutual TLS between the nodes (docs/SECURITY.md).
            """)
    var tls = false

    @Flag(
        help: """
            Key layout hash-tag-groups: keys that share a {hash tag} are one Paxos key, so MULTI and \
            multi-key commands on them are atomic (first run only: fixed when the cluster is planned; \
            docs/DATA.md).
            """)
    var hashTagGroups = false

    func run() async throws {
        let root = URL(fileURLWithPath: dir).standardizedFileURL.path
        try FileManager.default.createDirectory(
            atPath: root, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let mapPath = root + "/cluster.toml"
        let settingsPath = root + "/server.toml"
        let map: ClusterMap
        // Planned in this run: the nodes' empty directories are new, not wiped (`--new-cluster`).
        var planned = false
        if FileManager.default.fileExists(atPath: mapPath) {
            map = try ClusterMap(contentsOfFile: mapPath)
            _ = try ServerConfig(contentsOfFile: settingsPath)
            print(
                "tern dev: reusing the cluster in \(root) (\(map.nodes.count) nodes, key layout \(map.keyLayout.rawValue))"
            )
            if hashTagGroups && map.keyLayout != .hashTagGroups {
                throw ValidationError(
                    "tern dev: the cluster in \(root) was created with key layout \(map.keyLayout.rawValue); the "
                        + "layout is fixed when a cluster is created (use a new --dir for hash-tag groups)")
            }
        } else {
            let campuses = Dictionary(uniqueKeysWithValues: Campus.allCases.map { ($0, nodesPerCampus) })
            var plannedMap = try TokenPlanner.plan(
                name: "tern-dev", nodesPerCampus: campuses, tokensPerNode: 64,
                scheme: .init(basePort: basePort))
            if hashTagGroups { plannedMap.keyLayout = .hashTagGroups }
            map = plannedMap
            var settings = ServerConfig(secret: ServerConfig.randomSecret())
            settings.testFaults = testFaults
            // Values (and collections, which are one value: docs/DATA.md) up to 16 MiB on a developer's
            // cluster, as tools and Redis's own suite expect (a 4 MB SET is one of its first tests);
            // `tern server` keeps 1 MiB unless server.toml says otherwise.
            settings.maxValueBytes = ServerConfig.maxValueBytesLimit
            guard fsync == "thread" || fsync == "inline" else {
                throw ValidationError("--fsync must be thread or inline")
            }
            settings.fsyncInline = fsync == "inline"
            // The secret is written before the map: a map without its settings is never left behind.
            try settings.toml().write(toFile: settingsPath, atomically: true, encoding: .utf8)
            chmod(settingsPath, 0o600)
            try map.write(toFile: mapPath)
            print("tern dev: planned a new cluster in \(root) (\(map.nodes.count) nodes)")
            planned = true
        }
        // Every port must be ours: with another cluster on them, our nodes would fail to bind while
        // the health check below found the other cluster healthy, and a benchmark or a user would
        // talk to it instead.
        for n in map.nodes {
            for (what, address) in [
                ("client", n.clientAddress), ("peer", n.peerAddress), ("admin", n.adminAddress),
            ] where !Self.portIsFree(address) {
                throw ValidationError(
                    "tern dev: \(address) (n\(n.id.rawValue)'s \(what) port) is in use: another tern dev "
                        + "or server is running there; stop it, or choose other ports with --base-port")
            }
        }
        var nodeSettings: [NodeID: String] = [:]
        var tlsPorts: [NodeID: Int] = [:]
        if tls {
            let base = try ServerConfig(contentsOfFile: settingsPath)
            let files = try Self.makeCertificates(root: root, map: map)
            for n in map.nodes {
                let port = (Int(n.clientAddress.split(separator: ":").last ?? "") ?? 0) + Self.tlsPortOffset
                let address =
                    n.clientAddress.split(separator: ":").dropLast().joined(separator: ":") + ":\(port)"
                guard Self.portIsFree(address) else {
                    throw ValidationError(
                        "tern dev: \(address) (n\(n.id.rawValue)'s TLS port) is in use; stop what runs there, "
                            + "or choose other ports with --base-port")
                }
                var settings = base
                settings.tlsPort = port
                settings.tlsCertFile = files.cert(n.id)
                settings.tlsKeyFile = files.key(n.id)
                settings.tlsCACertFile = files.ca
                // A client certificate is not needed (redis-cli --tls --cacert works), but one that
                // is sent must come from the dev CA (tls/client.crt is one).
                settings.tlsAuthClients = .optional
                settings.tlsPeerCertFile = files.cert(n.id)
                settings.tlsPeerKeyFile = files.key(n.id)
                settings.tlsPeerCACertFile = files.ca
                let path = root + "/n\(n.id.rawValue).server.toml"
                try settings.toml().write(toFile: path, atomically: true, encoding: .utf8)
                chmod(path, 0o600)
                nodeSettings[n.id] = path
                tlsPorts[n.id] = port
            }
        }
        let exe = try Self.ownExecutable()
        let supervisor = Supervisor()
        supervisor.installSignalHandlers()
        for n in map.nodes {
            let data = root + "/n\(n.id.rawValue)"
            let log = root + "/n\(n.id.rawValue).log"
            let pid = try Self.spawn(
                exe,
                [
                    "server", "--config", mapPath, "--node", "\(n.id.rawValue)", "--data", data,
                    "--server-config", nodeSettings[n.id] ?? settingsPath,
                    // A development cluster: FLUSHALL on (test harnesses send it before each file).
                    "--allow-flushall",
                ] + (planned ? ["--new-cluster"] : []),
                log: log)
            supervisor.add(pid: pid, name: "n\(n.id.rawValue)", log: log)
            let tlsNote = tlsPorts[n.id].map { " tls \($0)" } ?? ""
            print(
                "n\(n.id.rawValue) campus \(n.campus) client \(n.clientAddress)\(tlsNote) admin \(n.adminAddress)"
            )
        }
        fflush(nil)
        let deadline = Date().addingTimeInterval(startTimeout)
        var pending = map.nodes
        while !pending.isEmpty && Date() < deadline && !supervisor.stopping {
            pending = pending.filter { !Self.healthy($0.adminAddress) }
            if !pending.isEmpty { try await Task.sleep(nanoseconds: 100_000_000) }
        }
        if !pending.isEmpty && !supervisor.stopping {
            stderrLine(
                "tern dev: not healthy after \(Int(startTimeout)) s: "
                    + pending.map { "n\($0.id.rawValue)" }.joined(separator: " ")
                    + " (see their logs in \(root))")
        } else if !supervisor.stopping {
            let first = map.nodes[0].clientAddress
            let port = first.split(separator: ":").last.map(String.init) ?? "7379"
            print("tern dev: all \(map.nodes.count) nodes healthy. Try: redis-cli -p \(port) set hello world")
            if let tlsPort = tlsPorts[map.nodes[0].id] {
                print(
                    "tern dev: TLS (clients, and mutual TLS between the nodes). Try: redis-cli --tls --cacert "
                        + "\(root)/tls/ca.crt -p \(tlsPort) get hello")
            }
        }
        fflush(nil)
        let status = await supervisor.waitForStop()
        throw ExitCode(status)
    }

    /// The TLS client port of a node is its client port plus this.
    static let tlsPortOffset = 300

    /// Where `makeCertificates` put the files.
    struct CertificateFiles {
        var dir: String
        var ca: String { dir + "/ca.crt" }
        func cert(_ id: NodeID) -> String { dir + "/n\(id.rawValue).crt" }
        func key(_ id: NodeID) -> String { dir + "/n\(id.rawValue).key" }
    }

    /// A throwaway CA and a certificate per node (plus one for a client, tls/client.crt) under
    /// `root`/tls, made once: a later run reuses them. The CA's key is not kept (nothing more is
    /// ever signed with it); delete the folder to make a new set.
    static func makeCertificates(root: String, map: ClusterMap) throws -> CertificateFiles {
        let files = CertificateFiles(dir: root + "/tls")
        let fm = FileManager.default
        let complete =
            fm.fileExists(atPath: files.ca) && fm.fileExists(atPath: files.dir + "/client.crt")
            && map.nodes.allSatisfy {
                fm.fileExists(atPath: files.cert($0.id)) && fm.fileExists(atPath: files.key($0.id))
            }
        if complete { return files }
        try fm.createDirectory(
            atPath: files.dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let ca = try ThrowawayCA(commonName: "Tern dev CA (\(map.name))")
        func write(_ text: String, _ path: String, secret: Bool) throws {
            try text.write(toFile: path, atomically: true, encoding: .utf8)
            chmod(path, secret ? 0o600 : 0o644)
        }
        for n in map.nodes {
            let issued = try ca.issue(commonName: "tern node \(n.id.rawValue)")
            try write(issued.certificatePEM, files.cert(n.id), secret: false)
            try write(issued.keyPEM, files.key(n.id), secret: true)
        }
        let client = try ca.issue(commonName: "tern dev client")
        try write(client.certificatePEM, files.dir + "/client.crt", secret: false)
        try write(client.keyPEM, files.dir + "/client.key", secret: true)
        // The CA last: its presence marks a complete set.
        try write(ca.certificatePEM, files.ca, secret: false)
        print("tern dev: made a throwaway CA and certificates in \(files.dir)")
        return files
    }

    /// This process's executable (the children run the same binary).
    static func ownExecutable() throws -> String {
        var buffer = [CChar](repeating: 0, count: 4096)
        let n = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        if n > 0 { return String(decoding: buffer[..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self) }
        return CommandLine.arguments[0]
    }

    /// Starts `exe args` in its own process group (so a terminal's Ctrl-C reaches only us; we
    /// forward it), with default signal dispositions and stdout/stderr appended to `log`.
    static func spawn(_ exe: String, _ args: [String], log: String) throws -> pid_t {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 1, log, O_WRONLY | O_CREAT | O_APPEND, 0o600)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        defer { posix_spawnattr_destroy(&attr) }
        var defaults = sigset_t()
        sigemptyset(&defaults)
        sigaddset(&defaults, SIGINT)
        sigaddset(&defaults, SIGTERM)
        sigaddset(&defaults, SIGPIPE)
        sigaddset(&defaults, SIGHUP)
        posix_spawnattr_setsigdefault(&attr, &defaults)
        var empty = sigset_t()
        sigemptyset(&empty)
        posix_spawnattr_setsigmask(&attr, &empty)
        posix_spawnattr_setpgroup(&attr, 0)
        posix_spawnattr_setflags(
            &attr, Int16(POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK))
        let argv = ([exe] + args).map { strdup($0) } + [nil]
        defer { for p in argv { free(p) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, exe, &actions, &attr, argv, environ)
        guard rc == 0 else { throw ValidationError("cannot start \(exe): \(String(cString: strerror(rc)))") }
        return pid
    }

    /// `address` ("host:port", IPv4) as a socket address, or nil if it is not one.
    static func ipv4(_ address: String) -> sockaddr_in? {
        guard let colon = address.lastIndex(of: ":"),
            let port = UInt16(address[address.index(after: colon)...])
        else { return nil }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = port.bigEndian
        guard inet_pton(AF_INET, String(address[..<colon]), &addr.sin_addr) == 1 else { return nil }
        return addr
    }

    /// Calls `body` with `addr` as the `sockaddr` that bind/connect take.
    static func withSockaddr(_ addr: sockaddr_in, _ body: (UnsafePointer<sockaddr>, socklen_t) -> Int32)
        -> Int32
    {
        withUnsafePointer(to: addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                body($0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
    }

    /// Whether `address` ("host:port", IPv4) can be bound now (SO_REUSEADDR, as the server binds:
    /// connections in TIME_WAIT from an earlier run do not count as in use).
    static func portIsFree(_ address: String) -> Bool {
        // Not an address: not ours to judge (the server reports a bad address itself).
        guard let addr = ipv4(address) else { return true }
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return true }
        defer { close(fd) }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        return withSockaddr(addr) { bind(fd, $0, $1) } == 0
    }

    /// GET /health on `address` answers 200.
    static func healthy(_ address: String) -> Bool { http("GET", "/health", at: address)?.status == 200 }

    /// One HTTP/1.1 request to a node's admin address (a plain blocking socket with a short
    /// timeout): the status code and the body, nil when the node does not answer. The admin token,
    /// if the environment has one (`TERN_ADMIN_TOKEN`), goes with it (docs/SECURITY.md).
    static func http(_ method: String, _ path: String, at address: String) -> (status: Int, body: String)? {
        let token = ProcessInfo.processInfo.environment["TERN_ADMIN_TOKEN"].flatMap { $0.isEmpty ? nil : $0 }
        guard let addr = ipv4(address) else { return nil }
        let host = String(address[..<address.lastIndex(of: ":")!])
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var timeout = timeval(tv_sec: 1, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        guard withSockaddr(addr, { connect(fd, $0, $1) }) == 0 else { return nil }
        let authorization = token.map { "Authorization: Bearer \($0)\r\n" } ?? ""
        let request = Array(
            "\(method) \(path) HTTP/1.1\r\nHost: \(host)\r\nContent-Length: 0\r\nConnection: close\r\n\(authorization)\r\n"
                .utf8)
        guard send(fd, request, request.count, 0) == request.count else { return nil }
        var reply: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 16_384)
        while reply.count < 4 << 20 {
            let n = recv(fd, &chunk, chunk.count, 0)
            if n <= 0 { break }
            reply += chunk[..<n]
        }
        let text = String(decoding: reply, as: UTF8.self)
        guard text.hasPrefix("HTTP/1.1 "), let code = Int(text.dropFirst(9).prefix(3)) else { return nil }
        let body = text.range(of: "\r\n\r\n").map { String(text[$0.upperBound...]) } ?? ""
        return (code, body)
    }
}

/// Watches the children: reports unexpected exits, forwards SIGINT/SIGTERM as SIGTERM, waits.
final class Supervisor: @unchecked Sendable {
    // @unchecked Sendable: every mutable field is guarded by `lock`.
    struct Child {
        var pid: pid_t
        var name: String
        var log: String
        var exited = false
    }
    private let lock = NSLock()
    private var children: [Child] = []
    private var stoppingFlag = false
    private var sources: [any DispatchSourceSignal] = []
    private var done: CheckedContinuation<Int32, Never>?
    private var finished: Int32?

    var stopping: Bool { lock.withLock { stoppingFlag } }

    func add(pid: pid_t, name: String, log: String) {
        lock.withLock { children.append(Child(pid: pid, name: name, log: log)) }
        Thread.detachNewThread { [self] in
            var status: Int32 = 0
            while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
            self.exited(pid: pid, status: status)
        }
    }

    private func exited(pid: pid_t, status: Int32) {
        let (child, stopping, allDone) = lock.withLock { () -> (Child?, Bool, Bool) in
            guard let i = children.firstIndex(where: { $0.pid == pid }) else {
                return (nil, stoppingFlag, false)
            }
            children[i].exited = true
            return (children[i], stoppingFlag, children.allSatisfy(\.exited))
        }
        guard let child else { return }
        let code = (status & 0x7f) == 0 ? "exit status \((status >> 8) & 0xff)" : "signal \(status & 0x7f)"
        if !stopping {
            stderrLine(
                "tern dev: \(child.name) (pid \(pid)) stopped unexpectedly (\(code)); see \(child.log)")
        } else if code != "exit status 0" {
            stderrLine("tern dev: \(child.name) stopped with \(code); see \(child.log)")
        }
        if allDone && stopping { finish(0) }
        if allDone && !stopping {
            stderrLine("tern dev: every node has stopped")
            finish(1)
        }
    }

    func installSignalHandlers() {
        // SIGHUP: passed on to every node (each reloads its certificates).
        signal(SIGHUP, SIG_IGN)
        let hup = DispatchSource.makeSignalSource(signal: SIGHUP, queue: .global())
        hup.setEventHandler { [self] in
            let running = lock.withLock { children.filter { !$0.exited }.map(\.pid) }
            for pid in running { kill(pid, SIGHUP) }
        }
        hup.resume()
        sources.append(hup)
        for sig in [SIGINT, SIGTERM] {
            signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            source.setEventHandler { [self] in self.stopAll() }
            source.resume()
            sources.append(source)
        }
    }

    /// SIGTERM to every child still running; SIGKILL after 20 s.
    func stopAll() {
        let running = lock.withLock { () -> [pid_t] in
            stoppingFlag = true
            return children.filter { !$0.exited }.map(\.pid)
        }
        if running.isEmpty {
            finish(0)
            return
        }
        print("tern dev: stopping \(running.count) node(s)")
        fflush(nil)
        for pid in running { kill(pid, SIGTERM) }
        DispatchQueue.global().asyncAfter(deadline: .now() + 20) { [self] in
            let left = lock.withLock { children.filter { !$0.exited }.map(\.pid) }
            for pid in left { kill(pid, SIGKILL) }
        }
    }

    private func finish(_ code: Int32) {
        let c = lock.withLock { () -> CheckedContinuation<Int32, Never>? in
            if finished != nil { return nil }
            finished = code
            let c = done
            done = nil
            return c
        }
        c?.resume(returning: code)
    }

    /// Returns after a stop signal once every child has exited.
    func waitForStop() async -> Int32 {
        await withCheckedContinuation { c in
            let ready = lock.withLock { () -> Int32? in
                if let f = finished { return f }
                done = c
                return nil
            }
            if let ready { c.resume(returning: ready) }
        }
    }
}
