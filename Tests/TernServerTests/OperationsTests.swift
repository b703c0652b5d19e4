import Foundation
import Logging
import TernCore
import Testing

@testable import TernServer

/// The dashboard's figures computed without a cluster: latency quantiles from buckets, the recent
/// errors ring, and the progress lines of long commands (issue 14, docs/OPERATIONS.md).
@Suite struct OperationsTests {
    @Test("Bucket of a latency: at or below each bound, past the last bound +Inf")
    func bucketIndex() {
        #expect(LatencyBuckets.index(micros: 0) == 0)
        #expect(LatencyBuckets.index(micros: 100) == 0)
        #expect(LatencyBuckets.index(micros: 101) == 1)
        #expect(LatencyBuckets.index(micros: 1_000) == 3)
        #expect(LatencyBuckets.index(micros: 10_000_000) == LatencyBuckets.count - 1)
    }

    @Test("Quantiles interpolate inside their bucket (as histogram_quantile); none without calls")
    func quantiles() throws {
        var b = [Int](repeating: 0, count: LatencyBuckets.count)
        #expect(LatencyBuckets.quantileMilliseconds(b, 0.5) == nil)
        b[3] = 100  // all in (0.5 ms, 1 ms]
        #expect(try #require(LatencyBuckets.quantileMilliseconds(b, 0.5)) == 0.75)
        b[3] = 98
        b[9] = 2  // two slow calls in (50 ms, 100 ms]
        let p50 = try #require(LatencyBuckets.quantileMilliseconds(b, 0.5))
        let p99 = try #require(LatencyBuckets.quantileMilliseconds(b, 0.99))
        #expect(p50 > 0.5 && p50 <= 1)
        #expect(p99 > 50 && p99 <= 100)
        b[LatencyBuckets.count - 1] = 1000
        #expect(LatencyBuckets.quantileMilliseconds(b, 0.99) == 5_000)
    }

    @Test("The recent errors ring counts repeats of the newest entry and keeps the last few")
    func errorRing() {
        var ring: [RecentError] = []
        for i in 0..<3 {
            RecentError.record(&ring, source: "reply", text: "NOQUORUM x", at: Double(i), max: 4)
        }
        #expect(ring.count == 1 && ring[0].count == 3 && ring[0].at == 2)
        for i in 0..<6 { RecentError.record(&ring, source: "log", text: "e\(i)", at: Double(10 + i), max: 4) }
        #expect(ring.map(\.text) == ["e2", "e3", "e4", "e5"])
        let long = String(repeating: "x", count: 1000)
        RecentError.record(&ring, source: "log", text: long, at: 20, max: 4)
        #expect(ring.last?.text.count == RecentError.textMax)
        let merged = RecentError.merge([ring, [RecentError(at: 12.5, source: "reply", text: "r")]], max: 3)
        #expect(merged.map(\.at) == [14, 15, 20])
    }

    @Test("The error ring log handler keeps warnings and worse, not info")
    func logHandler() {
        let ring = ErrorRing(max: 5)
        var logger = Logger(label: "t") { _ in ErrorRingLogHandler(ring: ring) }
        logger.logLevel = .trace
        logger.info("fine")
        logger.warning("peer lost", metadata: ["peer": "n3"])
        logger.error("disk")
        #expect(ring.recent.map(\.text) == ["warning: peer lost peer=n3", "error: disk"])
    }

    @Test("tern sim's progress goes to stderr as plain lines when not on a terminal, stdout keeps the result")
    func simProgressPlain() async throws {
        let dir = NSTemporaryDirectory() + "tern-progress-\(getpid())"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: ternExecutable())
        p.arguments = ["sim", "--seeds", "3", "--ops", "20"]
        let out = Pipe()
        let err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        let stdout = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        let stderr = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        #expect(p.terminationStatus == 0, "\(stdout)\n\(stderr)")
        #expect(stdout.contains("done: 3 seeds"))
        #expect(!stdout.contains("seeds/s ·"))
        // The last update is always printed; plain lines, no carriage return.
        #expect(stderr.contains("tern sim · 3/3 seeds · "), "\(stderr)")
        #expect(stderr.contains("seeds/s"))
        #expect(!stderr.contains("\r"))
    }
}
