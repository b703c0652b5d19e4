import Foundation
import TernCore
import Testing

@Suite(.serialized, .timeLimit(.minutes(3))) struct EnvelopeProcessTests {
    @Test("500 members open 100 envelopes concurrently through all three server processes; the bank holds")
    func demoEnvelope() async throws {
        let cluster = try ProcessCluster(requestTimeoutMs: 3000)
        defer { cluster.killAll() }
        try await cluster.startAll()
        let ports = [n1, n2, n3].map { String(cluster.port($0)) }.joined(separator: ",")
        // 100 envelopes of 3 shares, 5 members each (500 members): two of every five find it empty.
        let (status, out) = try run(
            cluster.exe,
            [
                "demo", "envelope", "--ports", ports, "--groups", "100", "--members", "5", "--count", "3",
                "--connections", "30", "--pipeline", "4",
            ])
        #expect(status == 0, "\(out)")
        #expect(out.contains("check: OK"), "\(out)")
        #expect(out.contains("shares paid: 300"), "\(out)")
        // One hot envelope: 500 members at once, 400 shares.
        let (hot, hotOut) = try run(
            cluster.exe,
            [
                "demo", "envelope", "--ports", ports, "--groups", "1", "--members", "500", "--count", "400",
                "--connections", "30", "--pipeline", "8",
            ])
        #expect(hot == 0, "\(hotOut)")
        #expect(hotOut.contains("check: OK"), "\(hotOut)")
        #expect(hotOut.contains("shares paid: 400"), "\(hotOut)")
    }
}
