import Foundation
import TernCore
import TernServer
import Testing

@Suite(.serialized, .timeLimit(.minutes(3))) struct StreamProcessTests {
    @Test(
        "A blocked XREADGROUP whose stream is retyped as it parks is answered, and the key stays served (real processes)"
    )
    func blockedRetypeRace() async throws {
        // Redis's "Blocking XREADGROUP: key type changed with transaction" hung the suite: the
        // wake-up ran the first take again rather than the parked look, and each take (a write)
        // woke it once more. Caught within 3 rounds of 40 before the fix (Blocking.swift).
        let cluster = try ProcessCluster()
        defer { cluster.killAll() }
        try await cluster.startAll()
        let (status, out) = try runPython("stream_block_race.py", [String(cluster.port(n1)), "40"])
        #expect(status == 0, "\(out)")
        #expect(out.contains("stream block race: OK"), "\(out)")
    }

    @Test(
        "redis-py drives the Streams commands against three real server processes (RESP2 and RESP3), XACKADD and the backlog bound"
    )
    func redisPy() async throws {
        let cluster = try ProcessCluster { $0.streamMaxEntries = 20 }
        defer { cluster.killAll() }
        try await cluster.startAll()
        let (status, out) = try runPython(
            "streams.py", [String(cluster.port(n1)), String(cluster.port(n2)), "20"])
        #expect(status == 0, "\(out)")
        #expect(out.contains("streams redis-py: OK"), "\(out)")
        // /metrics (docs/QUEUE.md, "Metrics"): the stream the script left, on every replica.
        let key = try #require(
            out.split(separator: "\n").first { $0.hasPrefix("metrics stream: ") }?.dropFirst(16))
        for node in [n1, n2] {
            // A replica learns the last instance chosen a moment after the proposer answered.
            var metrics = ""
            for _ in 0..<20 {
                metrics = try await cluster.http("GET", "/metrics", node: node).body
                if metrics.contains("stream=\"\(key)\",group=\"mg\"} 1.0") { break }
                try await Task.sleep(for: .milliseconds(100))
            }
            func value(_ name: String, _ labels: String) -> String? {
                metrics.split(separator: "\n").first { $0.hasPrefix(name + "{") && $0.contains(labels) }
                    .map { String($0.split(separator: " ").last ?? "") }
            }
            #expect(value("tern_stream_length", "stream=\"\(key)\"}") == "3.0", "\(metrics)")
            #expect(
                value("tern_stream_group_backlog", "stream=\"\(key)\",group=\"mg\"}") == "2.0", "\(metrics)")
            #expect(
                value("tern_stream_group_pending", "stream=\"\(key)\",group=\"mg\"}") == "1.0", "\(metrics)")
        }
    }
}
