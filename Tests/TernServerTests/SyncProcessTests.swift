import Foundation
import TernCore
import TernRESP
import Testing

@Suite(.serialized, .timeLimit(.minutes(3))) struct SyncProcessTests {
    @Test(
        "tern demo chat against three real server processes: every device gets every message once, in order")
    func demoChat() async throws {
        let cluster = try ProcessCluster()
        defer { cluster.killAll() }
        try await cluster.startAll()
        let ports = [n1, n2, n3].map { String(cluster.port($0)) }.joined(separator: ",")
        let (status, out) = try run(
            cluster.exe,
            [
                "demo", "chat", "--ports", ports, "--users", "20", "--devices", "2", "--seconds", "3",
                "--senders", "4",
            ])
        #expect(status == 0, "\(out)")
        #expect(out.contains("check: OK"), "\(out)")
        #expect(out.contains("messages/s"), "\(out)")
        // Nothing to talk to: a clear failure, not a hang.
        let (down, message) = try run(
            cluster.exe, ["demo", "chat", "--ports", String(freePort()), "--seconds", "1"])
        #expect(down != 0, "\(message)")
    }

    @Test(
        "redis-py reads sync notices: RESP2 and RESP3 SUBSCRIBE sync:<uid>, SYNC.SUBSCRIBE via its parser; MSG.SEND ID retries"
    )
    func redisPy() async throws {
        let cluster = try ProcessCluster()
        defer { cluster.killAll() }
        try await cluster.startAll()
        let (status, out) = try runPython(
            "sync_push.py", [String(cluster.port(n1)), String(cluster.port(n2))])
        #expect(status == 0, "\(out)")
        #expect(out.contains("redis-py") && out.contains(": OK"), "\(out)")
    }
}
