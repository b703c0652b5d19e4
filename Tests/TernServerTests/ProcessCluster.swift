import Foundation
import NIOCore
import NIOPosix
import TernCore
import TernPlacement
import TernRESP
import TernServer

#if canImport(Glibc)
    import Glibc
#endif

/// The `tern` executable built beside the test bundle (`swift build --build-tests` builds it).
func ternExecutable() -> String {
    var buffer = [CChar](repeating: 0, count: 4096)
    let n = readlink("/proc/self/exe", &buffer, buffer.count - 1)
    let me = n > 0 ? String(decoding: buffer[..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self) : ""
    var dir = URL(fileURLWithPath: me).deletingLastPathComponent()
    // The bundle may be a directory (…/TernPackageTests.xctest/…) on some layouts.
    while !dir.path.isEmpty && dir.path != "/" {
        let candidate = dir.appendingPathComponent("tern").path
        if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        dir = dir.deletingLastPathComponent()
    }
    return ".build/debug/tern"
}

/// A free TCP port on 127.0.0.1 (bound to port 0, then released).
func freePort() -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_port = 0
    inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr)
    _ = withUnsafePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
        }
    }
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafeMutablePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
    }
    return Int(UInt16(bigEndian: addr.sin_port))
}

/// Starts `exe args` with stdout and stderr appended to `log`; returns its pid.
func spawnProcess(_ exe: String, _ args: [String], log: String) -> pid_t {
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 1, log, O_WRONLY | O_CREAT | O_APPEND, 0o644)
    posix_spawn_file_actions_adddup2(&actions, 1, 2)
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
    let argv = ([exe] + args).map { strdup($0) } + [nil]
    defer { for p in argv { free(p) } }
    var pid: pid_t = 0
    let rc = posix_spawn(&pid, exe, &actions, nil, argv, environ)
    precondition(rc == 0, "cannot start \(exe): \(rc)")
    return pid
}

/// Waits up to `seconds` for `pid` to exit; its exit status, or nil if it is still running.
func waitExit(_ pid: pid_t, seconds: Double) async -> Int32? {
    let deadline = Date().addingTimeInterval(seconds)
    // Checked once more after the deadline: on a loaded machine (every suite at once on 2 cores)
    // this task may not run again until long after it, and a process that exited meanwhile was
    // reported as still running (tern dev's port check failed CI that way once).
    while true {
        var status: Int32 = 0
        if waitpid(pid, &status, WNOHANG) == pid {
            return (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
        }
        if Date() >= deadline { return nil }
        try? await Task.sleep(nanoseconds: 20_000_000)
    }
}

/// Real `tern server` processes on 127.0.0.1 with random free ports and data in a temporary
/// directory. Always call `killAll()` (a `defer`) so no process outlives a failed test.
final class ProcessCluster: @unchecked Sendable {
    // @unchecked Sendable: `pids` is guarded by `lock`; the rest is immutable.
    let dir: String
    let map: ClusterMap
    let exe = ternExecutable()
    private let lock = NSLock()
    private var pids: [NodeID: pid_t] = [:]
    static let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)

    /// With `user`, the servers run as that (non-root) account through setpriv, and the cluster
    /// directory is theirs.
    let user: String?
    /// The admin token the settings carry (sent by `http` unless told otherwise).
    let adminToken: String?
    /// Each node reads its own n<id>.server.toml (`perNode`).
    let perNodeSettings: Bool

    init(
        perCampus: Int = 1, requestTimeoutMs: Int = 1500, user: String? = nil, maxClients: Int? = nil,
        settings configure: (inout ServerConfig) -> Void = { _ in },
        perNode: ((NodeID, inout ServerConfig) -> Void)? = nil
    ) throws {
        self.user = user
        dir = NSTemporaryDirectory() + "tern-it-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        var nodes: [NodeEntry] = []
        // The kernel may hand out a port again once it was released: never use one twice.
        var used: Set<Int> = []
        func freePort() -> Int {
            while true {
                let p = TernServerTests.freePort()
                if used.insert(p).inserted { return p }
            }
        }
        let planned = try TokenPlanner.plan(
            name: "it", nodesPerCampus: [.a: perCampus, .b: perCampus, .c: perCampus], tokensPerNode: 16)
        for n in planned.nodes {
            nodes.append(
                NodeEntry(
                    id: n.id, campus: n.campus, peerAddress: "127.0.0.1:\(freePort())",
                    clientAddress: "127.0.0.1:\(freePort())", adminAddress: "127.0.0.1:\(freePort())",
                    tokens: n.tokens))
        }
        map = try ClusterMap(name: "it", version: 1, nodes: nodes)
        try map.write(toFile: dir + "/cluster.toml")
        var settings = ServerConfig(secret: ServerConfig.randomSecret())
        settings.testFaults = true
        settings.requestTimeoutMilliseconds = requestTimeoutMs
        if let maxClients { settings.maxClients = maxClients }
        configure(&settings)
        adminToken = settings.adminToken
        try settings.toml().write(toFile: dir + "/server.toml", atomically: true, encoding: .utf8)
        perNodeSettings = perNode != nil
        if let perNode {
            for n in map.nodes {
                var mine = settings
                perNode(n.id, &mine)
                try mine.toml().write(
                    toFile: dir + "/n\(n.id.rawValue).server.toml", atomically: true, encoding: .utf8)
            }
        }
        if let user {
            let (status, out) = try run("/bin/chown", ["-R", "\(user):", dir])
            guard status == 0 else { throw ClusterTestError("chown \(user) \(dir): \(out)") }
        }
    }

    func port(_ id: NodeID) -> Int { Int(map.node(id)!.clientAddress.split(separator: ":")[1])! }
    func adminPort(_ id: NodeID) -> Int { Int(map.node(id)!.adminAddress.split(separator: ":")[1])! }
    func log(_ id: NodeID) -> String { dir + "/n\(id.rawValue).log" }

    /// A field of /proc/PID/status of node `id` in bytes (`VmRSS`: now, `VmHWM`: the peak so far).
    func memory(_ id: NodeID, _ field: String) -> Int? {
        guard let pid = lock.withLock({ pids[id] }),
            let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
            let line = text.split(separator: "\n").first(where: { $0.hasPrefix(field + ":") }),
            let kb = line.split(separator: " ").dropFirst().first.flatMap({ Int($0) })
        else { return nil }
        return kb * 1024
    }

    func start(_ id: NodeID) {
        var args = [
            "server", "--config", dir + "/cluster.toml", "--node", "\(id.rawValue)", "--data",
            dir + "/n\(id.rawValue)",
        ]
        if perNodeSettings { args += ["--server-config", dir + "/n\(id.rawValue).server.toml"] }
        let pid =
            if let user {
                spawnProcess(
                    "/usr/bin/setpriv",
                    [
                        "--reuid=\(user)", "--regid=\(user == "nobody" ? "nogroup" : user)", "--clear-groups",
                        exe,
                    ]
                        + args, log: log(id))
            } else {
                spawnProcess(exe, args, log: log(id))
            }
        lock.withLock { pids[id] = pid }
    }

    func startAll() async throws {
        for n in map.nodes { start(n.id) }
        for n in map.nodes { try await waitHealthy(n.id) }
    }

    /// Polls GET /health until 200.
    func waitHealthy(_ id: NodeID, seconds: Double = 30) async throws {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if (try? await http("GET", "/health", node: id))?.status == 200 { return }
            try await Task.sleep(nanoseconds: 50_000_000)
        }
        throw ClusterTestError("n\(id.rawValue) not healthy after \(seconds) s; log:\n" + logTail(id))
    }

    func logTail(_ id: NodeID) -> String {
        ((try? String(contentsOfFile: log(id), encoding: .utf8)) ?? "").split(separator: "\n").suffix(20)
            .joined(separator: "\n")
    }

    /// Sends `signal` to node `id`; with SIGKILL/SIGTERM waits for it to exit and returns its status.
    @discardableResult
    func signal(_ id: NodeID, _ sig: Int32) async -> Int32? {
        guard let pid = lock.withLock({ pids[id] }) else { return nil }
        kill(pid, sig)
        let status = await waitExit(pid, seconds: 15)
        if status != nil { _ = lock.withLock { pids.removeValue(forKey: id) } }
        return status
    }

    /// Waits for node `id` to exit by itself (for example refusing to start); its status, or nil.
    func waitForExit(_ id: NodeID, seconds: Double) async -> Int32? {
        guard let pid = lock.withLock({ pids[id] }) else { return nil }
        let status = await waitExit(pid, seconds: seconds)
        if status != nil { _ = lock.withLock { pids.removeValue(forKey: id) } }
        return status
    }

    /// Sends `signal` to node `id` and returns at once (SIGSTOP, SIGCONT).
    func signalNoWait(_ id: NodeID, _ sig: Int32) {
        guard let pid = lock.withLock({ pids[id] }) else { return }
        kill(pid, sig)
    }

    /// SIGKILL every process still running (synchronous: safe in a `defer`), then remove the data.
    func killAll() {
        let all = lock.withLock { () -> [pid_t] in
            let p = Array(pids.values)
            pids = [:]
            return p
        }
        for pid in all {
            kill(pid, SIGKILL)
            var status: Int32 = 0
            waitpid(pid, &status, 0)
        }
        try? FileManager.default.removeItem(atPath: dir)
    }

    func client(_ id: NodeID) async throws -> RESPClient {
        try await RESPClient.connect(
            host: "127.0.0.1", port: port(id), group: Self.group, requestTimeout: .seconds(10))
    }

    /// A tiny HTTP/1.1 request to the node's admin port.
    func http(_ method: String, _ path: String, node id: NodeID, token: String?? = nil) async throws -> (
        status: Int, body: String
    ) {
        let authorization = (token ?? adminToken).map { "Authorization: Bearer \($0)\r\n" } ?? ""
        let channel = try await ClientBootstrap(group: Self.group).connect(
            host: "127.0.0.1", port: adminPort(id)
        )
        .get()
        let collector = BodyCollector()
        try await channel.pipeline.addHandler(collector).get()
        var b = channel.allocator.buffer(capacity: 128)
        b.writeString(
            "\(method) \(path) HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\n\(authorization)\r\n"
        )
        try await channel.writeAndFlush(b).get()
        try await channel.closeFuture.get()
        let text = collector.text
        let status = Int(text.split(separator: " ").dropFirst().first ?? "") ?? 0
        let body = text.components(separatedBy: "\r\n\r\n").dropFirst().joined(separator: "\r\n\r\n")
        return (status, body)
    }
}

final class BodyCollector: ChannelInboundHandler, @unchecked Sendable {
    // @unchecked Sendable: used on one channel's event loop; `text` is read after the channel closed.
    typealias InboundIn = ByteBuffer
    var text = ""
    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        text += String(buffer: unwrapInboundIn(data))
    }
}

struct ClusterTestError: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}

/// Runs `Python/<script>` (beside this file) with `python3` and `args`; (exit status,
/// stdout+stderr).
func runPython(_ script: String, _ args: [String]) throws -> (Int32, String) {
    let path = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("Python/" + script).path
    return try run("/usr/bin/env", ["python3", path] + args)
}

/// Runs a command-line program and returns (exit status, stdout+stderr).
func run(_ exe: String, _ args: [String], input: String? = nil) throws -> (Int32, String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: exe)
    p.arguments = args
    let out = Pipe()
    p.standardOutput = out
    p.standardError = out
    if let input {
        let inp = Pipe()
        p.standardInput = inp
        try p.run()
        inp.fileHandleForWriting.write(Data(input.utf8))
        try inp.fileHandleForWriting.close()
    } else {
        try p.run()
    }
    let data = out.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return (p.terminationStatus, String(decoding: data, as: UTF8.self))
}
