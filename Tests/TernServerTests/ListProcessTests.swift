import Foundation
import TernCore
import TernServer
import Testing

/// A big list (docs/DATA.md, "Big lists") through redis-py and three real server processes: every
/// answer checked against a Python list while the list is bucketed, sealed, merged, unsealed and
/// joined by the nodes (`Python/big_list.py`).
@Suite(.serialized, .timeLimit(.minutes(3))) struct ListProcessTests {
    @Test("A big list through three real processes answers as a plain list, whichever node serves it")
    func bigList() async throws {
        let cluster = try ProcessCluster()
        defer { cluster.killAll() }
        try await cluster.startAll()
        let (status, out) = try runPython(
            "big_list.py", ["7"] + [n1, n2, n3].map { String(cluster.port($0)) })
        #expect(status == 0, "\(out)")
        #expect(out.contains("big list redis-py: OK"), "\(out)")
    }
}
