import TernConsensus
import TernCore
import TernPlacement
import Testing

@testable import TernServer

/// The ring's round-0 owner (docs/PROTOCOL.md §4, "Fresh keys: round 0 at the owner").
@Suite struct RingOwnerTests {
    @Test("The ring names a key's campus-A replica its round-0 owner, and no owner once the map changed")
    func ownerOnlyOnThePlannedMap() throws {
        let map = try TokenPlanner.plan(name: "t", nodesPerCampus: [.a: 2, .b: 1, .c: 2], tokensPerNode: 8)
        let planned = RingPlacement(ring: Ring(map: map))
        var owners: Set<NodeID> = []
        for i in 0..<200 {
            let k = Array("k\(i)".utf8)
            let owner = planned.fastAcceptOwner(for: k)
            #expect(owner == planned.replicas(for: k)[0])
            if let owner { owners.insert(owner) }
        }
        #expect(owners.count == 2, "both campus-A nodes own keys")
        let changed = RingPlacement(ring: Ring(map: try ClusterMap(name: "t", version: 2, nodes: map.nodes)))
        #expect(changed.fastAcceptOwner(for: Array("k0".utf8)) == nil)
    }
}
