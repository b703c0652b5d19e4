import Foundation
import TernCore
import TernPlacement
import Testing

private func sampleMap() throws -> ClusterMap {
    try TokenPlanner.plan(name: "test", nodesPerCampus: [.a: 2, .b: 1, .c: 3], tokensPerNode: 4)
}

@Test func mapRoundTripsThroughTOML() throws {
    let map = try sampleMap()
    let text = map.toml()
    #expect(try ClusterMap(toml: text) == map)
    #expect(text.contains("version = 1"))
}

@Test func mapRoundTripsThroughAFile() throws {
    let map = try sampleMap()
    let path = "/tmp/tern-placement-test-\(UInt64.random(in: 0...UInt64.max)).toml"
    try map.write(toFile: path)
    #expect(try ClusterMap(contentsOfFile: path) == map)
}

@Test func keyLayoutRoundTripsAndIsRefusedWhenUnknown() throws {
    var map = try sampleMap()
    #expect(!map.toml().contains("key_layout"), "the default is not written")
    #expect(map.transportName == "test")
    map.keyLayout = .hashTagGroups
    let text = map.toml()
    #expect(text.contains("key_layout = \"hash-tag-groups\""))
    #expect(try ClusterMap(toml: text).keyLayout == .hashTagGroups)
    #expect(map.transportName == "test (hash-tag-groups)", "peers of two layouts refuse each other")
    #expect(
        try map.adding(
            NodeEntry(
                id: NodeID(99), campus: .a, peerAddress: "127.0.0.1:1", clientAddress: "127.0.0.1:2",
                adminAddress: "127.0.0.1:3", tokens: [12345])
        ).keyLayout == .hashTagGroups)
    #expect(throws: ClusterMapError.self) {
        try ClusterMap(toml: text.replacingOccurrences(of: "hash-tag-groups", with: "groups"))
    }
}

@Test func nameWithQuotesRoundTrips() throws {
    let map = try ClusterMap(name: "a \"b\" \\ c", version: 7, nodes: sampleMap().nodes)
    #expect(try ClusterMap(toml: map.toml()) == map)
}

private let header = """
    name = "t"
    version = 1
    campuses = ["A", "B", "C"]

    """

private func node(
    _ id: Int, _ campus: String, port: Int, tokens: String = "[\"0x10\"]", extra: String = ""
) -> String {
    """

    [[nodes]]
    id = \(id)
    campus = "\(campus)"
    peer = "127.0.0.1:\(port + 100)"
    client = "127.0.0.1:\(port)"
    admin = "127.0.0.1:\(port + 200)"
    tokens = \(tokens)
    \(extra)
    """
}

private let validNodes =
    node(1, "A", port: 1000, tokens: "[\"0x1\"]") + node(2, "B", port: 1001, tokens: "[\"0x2\"]")
    + node(3, "C", port: 1002, tokens: "[\"0x3\"]")

@Test func minimalHandWrittenMapLoads() throws {
    let map = try ClusterMap(toml: header + validNodes)
    #expect(map.nodes.count == 3)
    #expect(map.node(NodeID(2))?.campus == .b)
}

private let invalidMaps: [(String, ClusterMapError.Kind)] = [
    ("name = ", .syntax),
    (header, .missingField),
    ("version = 1\ncampuses = [\"A\",\"B\",\"C\"]\n" + validNodes, .missingField),
    ("name = \"t\"\nversion = -1\ncampuses = [\"A\",\"B\",\"C\"]\n" + validNodes, .badValue),
    ("name = \"t\"\nversion = 1\ncampuses = [\"A\",\"B\"]\n" + validNodes, .badCampus),
    ("name = \"t\"\nversion = 1\n" + validNodes, .missingField),
    ("name = \"\"\nversion = 1\ncampuses = [\"A\",\"B\",\"C\"]\n" + validNodes, .emptyName),
    (header + "colour = 1\n" + validNodes, .unknownField),
    (
        header + node(1, "A", port: 1000, extra: "weight = 2")
            + node(2, "B", port: 1001, tokens: "[\"0x2\"]"), .unknownField
    ),
    (header + node(1, "A", port: 1000) + node(2, "B", port: 1001, tokens: "[\"0x2\"]"), .emptyCampus),
    (header + validNodes + node(4, "D", port: 1003, tokens: "[\"0x4\"]"), .badCampus),
    (header + validNodes + node(3, "A", port: 1003, tokens: "[\"0x4\"]"), .duplicateNodeID),
    (header + validNodes + node(4, "A", port: 1002, tokens: "[\"0x4\"]"), .duplicateAddress),
    (header + validNodes + node(4, "A", port: 1003, tokens: "[]"), .missingTokens),
    (header + validNodes + node(4, "A", port: 1003, tokens: "[\"0x3\"]"), .duplicateToken),
    (header + validNodes + node(4, "A", port: 1003, tokens: "[\"12\"]"), .badToken),
    (header + validNodes + node(4, "A", port: 1003, tokens: "[\"0x1ffffffffffffffff\"]"), .badToken),
    (header + validNodes + node(4, "A", port: 1003, tokens: "[5]"), .badToken),
    (header + validNodes + node(4, "A", port: 70000, tokens: "[\"0x4\"]"), .badAddress),
]

@Test(arguments: invalidMaps)
func invalidMapsAreRejected(text: String, kind: ClusterMapError.Kind) {
    do {
        let map = try ClusterMap(toml: text)
        Issue.record("accepted an invalid map: \(map)")
    } catch {
        #expect(error.kind == kind, "\(error)")
    }
}

@Test func missingTokensFieldIsNamed() {
    let text =
        header + validNodes
        + node(4, "A", port: 1003).replacingOccurrences(of: "tokens = [\"0x10\"]", with: "")
    do {
        _ = try ClusterMap(toml: text)
        Issue.record("accepted a node without tokens")
    } catch {
        #expect(error.kind == .missingTokens)
        #expect(error.message.contains("node 4"))
    }
}

@Test(arguments: ["127.0.0.1", "127.0.0.1:", ":80", "host:0", "host:65536", "host:8x", "a b:1", "::1:80"])
func badAddressesAreRejected(address: String) throws {
    var nodes = try sampleMap().nodes
    nodes[0].clientAddress = address
    #expect(throws: ClusterMapError.self) { try ClusterMap(name: "t", version: 1, nodes: nodes) }
}

@Test(arguments: ["localhost:7379", "10.0.0.1:1", "[::1]:65535", "db-3.example.com:80"])
func goodAddressesAreAccepted(address: String) throws {
    var nodes = try sampleMap().nodes
    nodes[0].clientAddress = address
    _ = try ClusterMap(name: "t", version: 1, nodes: nodes)
}

@Test func missingFileIsAnIOError() {
    do {
        _ = try ClusterMap(contentsOfFile: "/nonexistent/cluster.toml")
        Issue.record("read a missing file")
    } catch {
        #expect(error.kind == .io)
    }
}
