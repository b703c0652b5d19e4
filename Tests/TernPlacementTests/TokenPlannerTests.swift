import TernCore
import TernPlacement
import Testing

private let ringSize = 18_446_744_073_709_551_616.0

@Test(arguments: 1...8, [1, 3, 16, 64])
func planIsBalancedUniqueAndDeterministic(nodesPerCampus: Int, tokensPerNode: Int) throws {
    let counts: [Campus: Int] = [.a: nodesPerCampus, .b: max(1, nodesPerCampus - 1), .c: nodesPerCampus + 1]
    let map = try TokenPlanner.plan(name: "t", nodesPerCampus: counts, tokensPerNode: tokensPerNode)
    #expect(try TokenPlanner.plan(name: "t", nodesPerCampus: counts, tokensPerNode: tokensPerNode) == map)
    let all = map.nodes.flatMap(\.tokens)
    #expect(Set(all).count == all.count)
    let shares = TokenPlanner.shares(of: map)
    for campus in Campus.allCases {
        let nodes = map.nodes(in: campus)
        #expect(nodes.count == counts[campus])
        let fair = 1.0 / Double(nodes.count)
        var sum = 0.0
        for node in nodes {
            #expect(node.tokens.count == tokensPerNode)
            let share = shares[node.id]!
            sum += share
            // Exact up to a few ring positions out of 2^64.
            #expect(abs(share - fair) < 1e-9, "node \(node.id) owns \(share), fair \(fair)")
        }
        #expect(abs(sum - 1) < 1e-9)
    }
}

@Test func planRefusesBadInput() {
    #expect(throws: TokenPlanner.PlanError.self) {
        try TokenPlanner.plan(name: "t", nodesPerCampus: [.a: 1, .b: 1], tokensPerNode: 4)
    }
    #expect(throws: TokenPlanner.PlanError.self) {
        try TokenPlanner.plan(name: "t", nodesPerCampus: [.a: 1, .b: 1, .c: 1], tokensPerNode: 0)
    }
    #expect(throws: TokenPlanner.PlanError.self) {
        try TokenPlanner.plan(name: "t", nodesPerCampus: [.a: 40, .b: 40, .c: 40], tokensPerNode: 1)
    }
}

@Test func planAddressesFollowTheScheme() throws {
    let map = try TokenPlanner.plan(
        name: "t", nodesPerCampus: [.a: 1, .b: 1, .c: 2], tokensPerNode: 1, scheme: .init(basePort: 9000))
    #expect(
        map.nodes.map(\.clientAddress) == [
            "127.0.0.1:9000", "127.0.0.1:9001", "127.0.0.1:9002", "127.0.0.1:9003",
        ])
    #expect(map.nodes[3].peerAddress == "127.0.0.1:9103")
    #expect(map.nodes[3].adminAddress == "127.0.0.1:9203")
    #expect(map.nodes.map(\.campus) == [.a, .b, .c, .c])
}

private func newNode(_ id: UInt32, _ campus: Campus) -> NodeEntry {
    NodeEntry(
        id: NodeID(id), campus: campus, peerAddress: "10.0.0.\(id):1", clientAddress: "10.0.0.\(id):2",
        adminAddress: "10.0.0.\(id):3", tokens: [])
}

@Test(arguments: [(1, 1), (1, 8), (2, 4), (3, 16), (5, 8), (8, 3)])
func addingANodeMovesOnlyItsSlices(oldCount: Int, tokensPerNode: Int) throws {
    let before = try TokenPlanner.plan(
        name: "t", nodesPerCampus: [.a: 2, .b: oldCount, .c: 3], tokensPerNode: tokensPerNode)
    let added = newNode(100, .b)
    let (after, moves) = try TokenPlanner.adding(added, to: before)
    #expect(after.version == before.version + 1)
    #expect(after.nodes.count == before.nodes.count + 1)
    // Existing nodes keep their tokens; other campuses are untouched.
    for node in before.nodes { #expect(after.node(node.id) == node) }
    let newTokens = after.node(NodeID(100))!.tokens
    #expect(Set(newTokens) == Set(moves.map(\.end)))
    #expect(moves.allSatisfy { $0.to == NodeID(100) })

    // Every old node of B gives up ≈ 1/(N+1) of its share; the new node gets ≈ 1/(N+1).
    let n = Double(oldCount)
    let oldShares = TokenPlanner.shares(of: before)
    let newShares = TokenPlanner.shares(of: after)
    for node in before.nodes(in: .b) {
        let given = moves.filter { $0.from == node.id }.reduce(0.0) { $0 + Double($1.length) / ringSize }
        #expect(abs(given - oldShares[node.id]! / (n + 1)) < 1e-9)
        #expect(abs(newShares[node.id]! - 1 / (n + 1)) < 1e-9)
    }
    #expect(abs(newShares[NodeID(100)]! - 1 / (n + 1)) < 1e-9)
    for node in before.nodes where node.campus != .b { #expect(newShares[node.id] == oldShares[node.id]) }

    // Sampled keys: a key changes owner only if it falls in a moved range, and then to the new node.
    let oldRing = Ring(map: before)
    let newRing = Ring(map: after)
    var moved = 0
    var violations: [String] = []
    var rng = SystemRandomNumberGenerator()
    let samples = 100_000
    for _ in 0..<samples {
        let position = UInt64.random(in: 0...UInt64.max, using: &rng)
        let old = oldRing.replicas(forPosition: position)
        let new = newRing.replicas(forPosition: position)
        let range = moves.first { $0.contains(position) }
        if old.a != new.a || old.c != new.c {
            violations.append("\(Token.format(position)): another campus changed, \(old) -> \(new)")
        } else if old.b != new.b {
            moved += 1
            if new.b != NodeID(100) || range?.from != old.b {
                violations.append(
                    "\(Token.format(position)): \(old) -> \(new), range \(String(describing: range))")
            }
        } else if let range {
            violations.append("\(Token.format(position)): in \(range) but did not move")
        }
    }
    // One #expect for the whole sample: 100k expectations would dominate the test's run time.
    #expect(violations.isEmpty, "\(violations.count) violations, first: \(violations.prefix(3))")
    let fraction = Double(moved) / Double(samples)
    #expect(abs(fraction - 1 / (n + 1)) < 0.01, "moved \(fraction), expected \(1 / (n + 1))")
}

@Test func addingRepeatedlyStaysBalancedAndBounded() throws {
    var map = try TokenPlanner.plan(name: "t", nodesPerCampus: [.a: 3, .b: 3, .c: 3], tokensPerNode: 16)
    for id in UInt32(10)...UInt32(14) {
        map = try TokenPlanner.adding(newNode(id, .a), to: map).map
        let nodes = map.nodes(in: .a)
        let shares = TokenPlanner.shares(of: map)
        for node in nodes {
            #expect(abs(shares[node.id]! - 1 / Double(nodes.count)) < 1e-9)
            #expect(node.tokens.count <= 2 * 16)
        }
    }
    #expect(map.version == 6)
    #expect(throws: TokenPlanner.PlanError.self) { try TokenPlanner.adding(newNode(10, .a), to: map) }
}
