import TernCore
import TernPlacement
import Testing

/// The reference: scan every token of the campus for the smallest one ≥ position, else the
/// smallest token overall.
private func bruteForceOwner(_ map: ClusterMap, _ campus: Campus, _ position: UInt64) -> NodeID {
    let pairs = map.nodes(in: campus).flatMap { node in node.tokens.map { ($0, node.id) } }
    if let next = pairs.filter({ $0.0 >= position }).min(by: { $0.0 < $1.0 }) { return next.1 }
    return pairs.min(by: { $0.0 < $1.0 })!.1
}

@Test(arguments: [1, 2, 3, 5])
func lookupAgreesWithBruteForce(nodesPerCampus: Int) throws {
    let map = try TokenPlanner.plan(
        name: "t", nodesPerCampus: [.a: nodesPerCampus, .b: nodesPerCampus + 1, .c: 2], tokensPerNode: 7)
    let ring = Ring(map: map)
    var rng = SystemRandomNumberGenerator()
    var mismatches: [String] = []
    for _ in 0..<2_000 {
        let key = (0..<Int.random(in: 0...40, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng)
        }
        let position = XXH64.hash(key)
        let replicas = ring.replicas(for: key)
        for campus in Campus.allCases {
            let expected = bruteForceOwner(map, campus, position)
            if replicas[campus] != expected || ring.replica(for: key, in: campus) != expected {
                mismatches.append("key \(key) campus \(campus): \(replicas[campus]), expected \(expected)")
            }
        }
    }
    #expect(mismatches.isEmpty, "\(mismatches.prefix(3))")
}

@Test func tokensThemselvesAndWrapAround() throws {
    let map = try TokenPlanner.plan(name: "t", nodesPerCampus: [.a: 3, .b: 2, .c: 1], tokensPerNode: 4)
    let ring = Ring(map: map)
    for campus in Campus.allCases {
        let nodes = map.nodes(in: campus)
        let all = nodes.flatMap { node in node.tokens.map { ($0, node.id) } }.sorted { $0.0 < $1.0 }
        // A position equal to a token belongs to that token's node; one past it to the next token's.
        for (index, (token, owner)) in all.enumerated() {
            #expect(ring.replica(forPosition: token, in: campus) == owner)
            let next = all[(index + 1) % all.count].1
            #expect(ring.replica(forPosition: token &+ 1, in: campus) == next)
        }
        // Past the last token, and at the very top of the ring, wrap to the first token's node.
        #expect(ring.replica(forPosition: .max, in: campus) == all[0].1)
        #expect(ring.replica(forPosition: all.last!.0 &+ 1, in: campus) == all[0].1)
        #expect(ring.replica(forPosition: 0, in: campus) == all[0].1)
    }
}

@Test func handPlacedTokensAtTheEdges() throws {
    let map = try ClusterMap(
        name: "t", version: 1,
        nodes: [
            NodeEntry(
                id: NodeID(1), campus: .a, peerAddress: "h:1", clientAddress: "h:2", adminAddress: "h:3",
                tokens: [0]),
            NodeEntry(
                id: NodeID(2), campus: .a, peerAddress: "h:4", clientAddress: "h:5", adminAddress: "h:6",
                tokens: [.max]),
            NodeEntry(
                id: NodeID(3), campus: .b, peerAddress: "h:7", clientAddress: "h:8", adminAddress: "h:9",
                tokens: [1 << 63]),
            NodeEntry(
                id: NodeID(4), campus: .c, peerAddress: "h:10", clientAddress: "h:11", adminAddress: "h:12",
                tokens: [5]),
        ])
    let ring = Ring(map: map)
    #expect(ring.replica(forPosition: 0, in: .a) == NodeID(1))
    #expect(ring.replica(forPosition: 1, in: .a) == NodeID(2))
    #expect(ring.replica(forPosition: .max, in: .a) == NodeID(2))
    #expect(ring.replicas(forPosition: 6) == Replicas(a: NodeID(2), b: NodeID(3), c: NodeID(4)))
}
