import Foundation
import TernCore
import TernServer
import Testing

/// A big set and a big hash (docs/DATA.md, "Big sets, hashes and sorted sets") through redis-py and three real
/// server processes: every answer checked against a Python set and dict while the nodes split,
/// flush and join them (`Python/big_set_hash.py`).
@Suite(.serialized, .timeLimit(.minutes(3))) struct KeyedProcessTests {
    @Test(
        "A big set and a big hash through three real processes answer as plain ones, whichever node serves them"
    )
    func bigSetAndHash() async throws {
        let cluster = try ProcessCluster()
        defer { cluster.killAll() }
        try await cluster.startAll()
        let (status, out) = try runPython(
            "big_set_hash.py", ["7"] + [n1, n2, n3].map { String(cluster.port($0)) })
        #expect(status == 0, "\(out)")
        #expect(out.contains("big set, hash and sorted set redis-py: OK"), "\(out)")
    }
}
