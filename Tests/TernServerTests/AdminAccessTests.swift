import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import TernServer
import Testing

/// A backend with canned answers; the fault switch is on or off as a node's `test_faults`.
struct CannedBackend: AdminBackend {
    var faults = false
    func healthy() async -> Bool { true }
    func statusJSON() async -> String { "{\"node\":1}\n" }
    func metricsText() async -> String { "tern_requests_total 0\n" }
    func setFault(peer: String?, mode: String?, milliseconds: String?) async -> AdminFaultResult {
        faults ? .applied("fault \(mode ?? "?")") : .disabled
    }
    func repairNow() async -> Bool { true }
    func clusterJSON(authorization: String?) async -> String { "{\"nodes\":[]}\n" }
}

/// One HTTP/1.1 request to 127.0.0.1:`port` with an optional `Authorization` value: status and body.
func adminRequest(
    port: Int, _ method: String, _ path: String, authorization: String? = nil
) async throws -> (status: Int, body: String) {
    let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
        .connect(host: "127.0.0.1", port: port).get()
    let collector = BodyCollector()
    try await channel.pipeline.addHandler(collector).get()
    var b = channel.allocator.buffer(capacity: 128)
    var request = "\(method) \(path) HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\n"
    if let authorization { request += "Authorization: \(authorization)\r\n" }
    b.writeString(request + "\r\n")
    try await channel.writeAndFlush(b).get()
    try await channel.closeFuture.get()
    let text = collector.text
    let status = Int(text.split(separator: " ").dropFirst().first ?? "") ?? 0
    let body = text.components(separatedBy: "\r\n\r\n").dropFirst().joined(separator: "\r\n\r\n")
    return (status, body)
}

@Suite(.timeLimit(.minutes(1))) struct AdminAccessTests {
    static func start(token: String?, faults: Bool = false) async throws -> AdminServer {
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        return try await AdminServer.start(
            host: "127.0.0.1", port: 0, backend: CannedBackend(faults: faults),
            access: AdminAccess(token: token), group: MultiThreadedEventLoopGroup.singleton, logger: logger)
    }

    @Test("With a token: /status, /repair and /fault answer 401 (saying why) without it or with a wrong one")
    func refusesWithoutToken() async throws {
        let admin = try await Self.start(token: "s3cret-token", faults: true)
        defer { Task { await admin.close() } }
        let p = admin.port
        let missing = try await adminRequest(port: p, "GET", "/status")
        #expect(missing.status == 401)
        #expect(missing.body.contains("Authorization: Bearer"), "\(missing.body)")
        #expect(missing.body.contains("admin_token"), "the answer names the config key: \(missing.body)")
        let wrong = try await adminRequest(port: p, "GET", "/status", authorization: "Bearer s3cret-tokeN")
        #expect(wrong.status == 401)
        #expect(wrong.body == "wrong admin token\n")
        let basic = try await adminRequest(port: p, "GET", "/status", authorization: "Basic czNjcmV0")
        #expect(basic.status == 401)
        #expect(try await adminRequest(port: p, "POST", "/repair").status == 401)
        #expect(try await adminRequest(port: p, "POST", "/fault?peer=2&mode=drop").status == 401)
        // Unknown paths do not tell an anonymous caller what exists.
        #expect(try await adminRequest(port: p, "GET", "/nope").status == 401)
        // A token as a prefix of the real one, or the real one with more after it, is wrong.
        #expect(
            try await adminRequest(port: p, "GET", "/status", authorization: "Bearer s3cret").status == 401)
        #expect(
            try await adminRequest(port: p, "GET", "/status", authorization: "Bearer s3cret-token2").status
                == 401)
    }

    @Test("With the token everything answers; /health, /metrics and / need none")
    func acceptsToken() async throws {
        let admin = try await Self.start(token: "s3cret-token", faults: true)
        defer { Task { await admin.close() } }
        let p = admin.port
        let auth = "Bearer s3cret-token"
        let status = try await adminRequest(port: p, "GET", "/status", authorization: auth)
        #expect(status.status == 200 && status.body == "{\"node\":1}\n")
        #expect(
            try await adminRequest(port: p, "GET", "/status", authorization: "bearer  s3cret-token").status
                == 200)
        #expect(try await adminRequest(port: p, "POST", "/repair", authorization: auth).status == 200)
        #expect(
            try await adminRequest(port: p, "POST", "/fault?peer=2&mode=drop", authorization: auth).status
                == 200)
        #expect(try await adminRequest(port: p, "GET", "/nope", authorization: auth).status == 404)
        let health = try await adminRequest(port: p, "GET", "/health")
        #expect(health.status == 200 && health.body == "ok\n")
        #expect(try await adminRequest(port: p, "GET", "/metrics").status == 200)
        // `/` is open (the dashboard page loads, then sends the token itself); 404 until it exists.
        #expect(try await adminRequest(port: p, "GET", "/").status != 401)
        // Only GET is open: a POST to an open path still needs the token.
        #expect(try await adminRequest(port: p, "POST", "/health").status == 401)
    }

    @Test("Without a token (loopback, as tern dev) every endpoint answers")
    func noTokenLoopback() async throws {
        let admin = try await Self.start(token: nil)
        defer { Task { await admin.close() } }
        #expect(try await adminRequest(port: admin.port, "GET", "/status").status == 200)
        #expect(try await adminRequest(port: admin.port, "POST", "/repair").status == 200)
    }

    @Test("POST /fault does not exist without test_faults: 404, not 403")
    func faultOnlyWithTestFaults() async throws {
        let admin = try await Self.start(token: nil, faults: false)
        defer { Task { await admin.close() } }
        let r = try await adminRequest(port: admin.port, "POST", "/fault?peer=2&mode=drop")
        #expect(r.status == 404)
        #expect(r.body.contains("test_faults"))
    }

    @Test("The token check: open paths, scheme, constant-time compare of different lengths")
    func accessRule() {
        let a = AdminAccess(token: "abc")
        #expect(a.check(method: .GET, path: "/health", authorization: nil) == .allowed)
        #expect(a.check(method: .GET, path: "/", authorization: nil) == .allowed)
        #expect(a.check(method: .GET, path: "/status", authorization: "Bearer abc") == .allowed)
        #expect(a.check(method: .GET, path: "/status", authorization: "Bearer ab") != .allowed)
        #expect(a.check(method: .GET, path: "/status", authorization: "Bearer abcd") != .allowed)
        #expect(a.check(method: .GET, path: "/status", authorization: "Bearer ") != .allowed)
        #expect(a.check(method: .GET, path: "/status", authorization: "abc") != .allowed)
        #expect(AdminAccess(token: nil).check(method: .POST, path: "/fault", authorization: nil) == .allowed)
    }
}
