import TernCore
import TernPlacement
import TernRESP

/// Redis Cluster's discovery commands, so cluster-mode clients (redis-py `RedisCluster`,
/// `redis-cli -c`, Lettuce, go-redis' ClusterClient) can connect (docs/SERVER.md, "Cluster-mode
/// clients"). Tern is not sharded by slots: every node serves every key. So each node describes
/// **one shard holding all 16 384 slots, with itself as the master** and the other nodes as its
/// replicas: a client sends everything to the node it asked, and when that node goes away its
/// topology refresh asks another node, which names itself. Commands that a client splits by slot
/// (MGET across slots, pipelines) still reach one node and behave as on any node.
public struct ClusterCommands: CommandModule {
    public let me: NodeEntry
    public let nodes: [NodeEntry]
    public let clusterName: String

    public init(me: NodeEntry, nodes: [NodeEntry], clusterName: String) {
        self.me = me
        self.nodes = nodes
        self.clusterName = clusterName
    }

    static let slots = 16384

    public var commandSpecs: [CommandSpec] {
        func sub(_ n: String, _ arity: Int, _ summary: String) -> CommandSpec {
            CommandSpec(
                "cluster|" + n, arity: arity, flags: ["loading", "stale"], categories: ["@slow"],
                summary: summary, since: "3.0.0", group: "cluster")
        }
        return [
            CommandSpec(
                "cluster", arity: -2, flags: [], categories: ["@slow"],
                summary: "Redis Cluster discovery: Tern as one shard of all slots (docs/SERVER.md).",
                since: "3.0.0",
                group: "cluster",
                subcommands: [
                    sub("slots", 2, "Returns the mapping of cluster slots to nodes (all slots: this node)."),
                    sub("shards", 2, "Returns the mapping of cluster slots to shards (one shard)."),
                    sub("nodes", 2, "Returns the cluster configuration for a node (this node the master)."),
                    sub("info", 2, "Returns information about the state of a node."),
                    sub("myid", 2, "Returns the ID of a node."),
                    sub("keyslot", 3, "Returns the hash slot for a key."),
                    sub("help", 2, "Returns helpful text about the different subcommands."),
                ]),
            CommandSpec(
                "readonly", arity: 1, flags: ["loading", "stale", "fast"],
                categories: ["@fast", "@connection"],
                summary: "Accepted: every Tern read is linearizable on any node.", since: "3.0.0",
                group: "cluster"),
            CommandSpec(
                "readwrite", arity: 1, flags: ["loading", "stale", "fast"],
                categories: ["@fast", "@connection"],
                summary: "Accepted: every node takes writes.", since: "3.0.0", group: "cluster"),
            CommandSpec(
                "asking", arity: 1, flags: ["fast"], categories: ["@fast", "@connection"],
                summary: "Accepted: Tern never redirects.", since: "3.0.0", group: "cluster"),
        ]
    }

    public func plan(name: String, args: [[UInt8]], session: inout Session) -> CommandPlan? {
        switch name {
        case "readonly", "readwrite", "asking":
            guard args.count == 1 else { return .reply(CommandProcessor.arity(name)) }
            return .reply(.ok)
        case "cluster":
            guard args.count >= 2 else { return .reply(CommandProcessor.arity(name)) }
            let sub = String(decoding: args[1], as: UTF8.self).lowercased()
            guard let spec = commandSpecs[0].subcommands.first(where: { $0.name == "cluster|" + sub }) else {
                return .reply(
                    .error(
                        "ERR unknown subcommand '\(String(decoding: args[1].prefix(128), as: UTF8.self))'. "
                            + "Try CLUSTER HELP."))
            }
            guard spec.accepts(args.count) else { return .reply(CommandProcessor.arity("cluster|" + sub)) }
            return .reply(cluster(sub, args))
        default:
            return nil
        }
    }

    /// This node first, then the others in id order.
    var ordered: [NodeEntry] {
        [me] + nodes.filter { $0.id != me.id }.sorted { $0.id.rawValue < $1.id.rawValue }
    }

    /// A node's 40-hex-digit cluster id, stable for the cluster name and node id.
    func nodeID(_ n: NodeEntry) -> String {
        let text = Array("\(clusterName)/\(n.id.rawValue)".utf8)
        return (0..<3).map { seed in
            let h = XXH64.hash(text, seed: UInt64(seed))
            let s = String(h, radix: 16)
            return String(repeating: "0", count: 16 - s.count) + s
        }.joined().prefix(40).description
    }

    static func split(_ address: String) -> (host: String, port: Int) {
        guard let colon = address.lastIndex(of: ":"), let port = Int(address[address.index(after: colon)...])
        else {
            return (address, 0)
        }
        return (String(address[..<colon]), port)
    }

    func cluster(_ sub: String, _ args: [[UInt8]]) -> RESPValue {
        func bulk(_ s: String) -> RESPValue { .bulkString(Array(s.utf8)) }
        switch sub {
        case "slots":
            var entry: [RESPValue] = [.integer(0), .integer(Int64(Self.slots - 1))]
            for n in ordered {
                let (host, port) = Self.split(n.clientAddress)
                entry.append(.array([bulk(host), .integer(Int64(port)), bulk(nodeID(n)), .array([])]))
            }
            return .array([.array(entry)])
        case "shards":
            let list: [RESPValue] = ordered.enumerated().map { i, n in
                let (host, port) = Self.split(n.clientAddress)
                return .map([
                    bulk("id"), bulk(nodeID(n)), bulk("port"), .integer(Int64(port)), bulk("ip"), bulk(host),
                    bulk("endpoint"), bulk(host), bulk("role"), bulk(i == 0 ? "master" : "replica"),
                    bulk("replication-offset"), .integer(0), bulk("health"), bulk("online"),
                ])
            }
            return .array([
                .map([
                    bulk("slots"), .array([.integer(0), .integer(Int64(Self.slots - 1))]), bulk("nodes"),
                    .array(list),
                ])
            ])
        case "nodes":
            let master = nodeID(me)
            var text = ""
            for (i, n) in ordered.enumerated() {
                let (host, port) = Self.split(n.clientAddress)
                let peerPort = Self.split(n.peerAddress).port
                text += "\(nodeID(n)) \(host):\(port)@\(peerPort) "
                text +=
                    i == 0
                    ? "myself,master - 0 0 1 connected 0-\(Self.slots - 1)\n"
                    : "slave \(master) 0 0 1 connected\n"
            }
            return .verbatim(text)
        case "info":
            let lines = [
                "cluster_state:ok", "cluster_slots_assigned:\(Self.slots)", "cluster_slots_ok:\(Self.slots)",
                "cluster_slots_pfail:0", "cluster_slots_fail:0", "cluster_known_nodes:\(nodes.count)",
                "cluster_size:1", "cluster_current_epoch:1", "cluster_my_epoch:1",
            ]
            return .verbatim(lines.joined(separator: "\r\n") + "\r\n")
        case "myid":
            return bulk(nodeID(me))
        case "keyslot":
            return .integer(Int64(Self.keySlot(args[2])))
        default:  // help
            let lines = [
                "CLUSTER <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "SLOTS",
                "    Return information about slots range mappings (Tern: every slot, this node first).",
                "SHARDS", "    Return information about slot range mappings and the nodes (Tern: one shard).",
                "NODES", "    Return cluster configuration seen by node.", "INFO",
                "    Return information about the cluster.", "MYID", "    Return the node id.",
                "KEYSLOT <key>",
                "    Return the hash slot for <key>.", "HELP", "    Print this help.",
            ]
            return .array(lines.map { .simpleString($0) })
        }
    }

    /// Redis Cluster's slot of `key`: CRC16 (XMODEM) of the key, or of its `{hash tag}`, mod 16384.
    /// (The protocol's function for clients, not a checksum of Tern's data.)
    static func keySlot(_ key: [UInt8]) -> Int {
        // The same rule decides hash-tag groups (`KeyLayout.groupKey`).
        let part = HashTag.of(key) ?? key[...]
        var crc: UInt16 = 0
        for byte in part {
            crc ^= UInt16(byte) << 8
            for _ in 0..<8 { crc = crc & 0x8000 != 0 ? (crc << 1) ^ 0x1021 : crc << 1 }
        }
        return Int(crc) & (slots - 1)
    }
}
