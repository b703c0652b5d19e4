import Foundation
import Testing

@testable import TernFuzzFrame

/// Every input in Fuzz/frame-seeds (the seed corpus, plus any crash the fuzzer ever found) goes
/// through the fuzz target's checks on each test run: canonical decoding, and no batch delivered
/// by a peer that did not authenticate.
@Test func fuzzSeedsPassTheFuzzTargetChecks() throws {
    let dir = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("../../Fuzz/frame-seeds").standardized.path
    let names = try FileManager.default.contentsOfDirectory(atPath: dir).sorted()
    #expect(names.count >= 10)
    for name in names {
        let data = try #require(FileManager.default.contents(atPath: dir + "/" + name))
        data.withUnsafeBytes { FrameFuzzer.run($0) }
    }
}
