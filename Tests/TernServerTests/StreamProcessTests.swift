import Foundation
import TernCore
import TernServer
import Testing

@Suite(.serialized, .timeLimit(.minutes(3))) struct StreamProcessTests {
    @Test(
        "redis-py drives the Streams commands against three real server processes (RESP2 and RESP3), XACKADD and the backlog bound"
    )
    func redisPy() async throws {
        let cluster = try ProcessCluster { $0.streamMaxEntries = 20 }
        defer { cluster.killAll() }
        try await cluster.startAll()
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("Python/streams.py").path
        let (status, out) = try run(
            "/usr/bin/env", ["python3", script, String(cluster.port(n1)), String(cluster.port(n2)), "20"])
        #expect(status == 0, "\(out)")
        #expect(out.contains("streams redis-py: OK"), "\(out)")
    }
}
