import Foundation
import TernCore
import Testing

@Suite(.serialized, .timeLimit(.minutes(3))) struct QueueProcessTests {
    @Test(
        "A worker pool drains streams while a campus is SIGKILLed and restarted: every added entry acknowledged"
    )
    func drainThroughKill() async throws {
        let cluster = try ProcessCluster(requestTimeoutMs: 3000)
        defer { cluster.killAll() }
        try await cluster.startAll()
        let ports = [n1, n2, n3].map { String(cluster.port($0)) }.joined(separator: ",")
        // `tern demo queue` as the client: producers for 6 s, workers that crash now and then,
        // and connections that move to another node when theirs dies.
        let log = cluster.dir + "/queue-demo.log"
        let demo = spawnProcess(
            cluster.exe,
            [
                "demo", "queue", "--ports", ports, "--streams", "2", "--producers", "4", "--pipeline", "4",
                "--workers", "6", "--seconds", "6", "--crash-ratio", "0.05", "--claim-idle-ms", "500",
            ], log: log)
        defer { kill(demo, SIGKILL) }
        try await Task.sleep(nanoseconds: 2_000_000_000)
        await cluster.signal(n3, SIGKILL)
        try await Task.sleep(nanoseconds: 2_000_000_000)
        cluster.start(n3)
        try await cluster.waitHealthy(n3)
        let status = await waitExit(demo, seconds: 90)
        let out = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        #expect(status == 0, "\(out)")
        #expect(out.contains("check: OK"), "\(out)")
        // Work was done through the kill, and some of it redelivered after the crashes.
        #expect(!out.contains("added: 0 entries"), "\(out)")
        #expect(out.contains("worker crashes"), "\(out)")
    }
}
