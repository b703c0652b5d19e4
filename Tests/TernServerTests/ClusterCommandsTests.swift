import TernCore
import TernPlacement
import TernRESP
import Testing

@testable import TernServer

@Suite struct ClusterCommandsTests {
    let nodes = (1...3).map { i in
        NodeEntry(
            id: NodeID(UInt32(i)), campus: [Campus.a, .b, .c][i - 1], peerAddress: "127.0.0.1:\(7478 + i)",
            clientAddress: "127.0.0.1:\(7378 + i)", adminAddress: "127.0.0.1:\(7578 + i)", tokens: [])
    }

    func run(_ m: ClusterCommands, _ args: [String]) -> RESPValue? {
        var s = Session(authenticated: true)
        guard
            case .reply(let v)? = m.plan(
                name: args[0].lowercased(), args: args.map { Array($0.utf8) }, session: &s)
        else { return nil }
        return v
    }

    @Test("CLUSTER KEYSLOT is Redis's CRC16 slot, hash tags included (Redis's documented examples)")
    func keyslot() {
        #expect(ClusterCommands.keySlot(Array("foo".utf8)) == 12182)
        #expect(ClusterCommands.keySlot(Array("somekey".utf8)) == 11058)
        #expect(ClusterCommands.keySlot(Array("{user1000}.following".utf8)) == 3443)
        #expect(ClusterCommands.keySlot(Array("{user1000}.followers".utf8)) == 3443)
        #expect(
            ClusterCommands.keySlot(Array("foo{}{bar}".utf8))
                == ClusterCommands.keySlot(Array("foo{}{bar}".utf8)))
        #expect(ClusterCommands.keySlot(Array("{}x".utf8)) != ClusterCommands.keySlot(Array("x".utf8)))
    }

    @Test("Each node is the master of one shard of all slots; the others are its replicas")
    func topology() throws {
        let m = ClusterCommands(me: nodes[1], nodes: nodes, clusterName: "dev")
        guard case .array(let shards?) = run(m, ["CLUSTER", "SLOTS"]), case .array(let e?) = shards.first
        else {
            Issue.record("CLUSTER SLOTS")
            return
        }
        #expect(shards.count == 1)
        #expect(e.count == 5)
        #expect(Array(e[0...1]) == [.integer(0), .integer(16383)])
        #expect(e[2] == .array([bulk("127.0.0.1"), .integer(7380), bulk(m.nodeID(nodes[1])), .array([])]))
        guard case .verbatim(let text)? = run(m, ["cluster", "nodes"]) else {
            Issue.record("CLUSTER NODES")
            return
        }
        let lines = text.split(separator: "\n")
        #expect(lines.count == 3)
        #expect(lines[0].hasSuffix("127.0.0.1:7380@7480 myself,master - 0 0 1 connected 0-16383"))
        #expect(lines[1].contains("slave \(m.nodeID(nodes[1]))"))
        #expect(m.nodeID(nodes[0]).count == 40)
        #expect(m.nodeID(nodes[0]) != m.nodeID(nodes[1]))
        #expect(run(m, ["CLUSTER", "MYID"]) == bulk(m.nodeID(nodes[1])))
        #expect(run(m, ["CLUSTER", "KEYSLOT", "foo"]) == .integer(12182))
        #expect(run(m, ["READONLY"]) == .ok)
        #expect(
            run(m, ["CLUSTER", "MEET", "x", "1"])
                == .error("ERR unknown subcommand 'MEET'. Try CLUSTER HELP."))
        #expect(
            run(m, ["CLUSTER", "KEYSLOT"])
                == .error("ERR wrong number of arguments for 'cluster|keyslot' command"))
        #expect(run(m, ["GET", "x"]) == nil)
    }
}
