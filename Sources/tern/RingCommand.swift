import ArgumentParser
import Foundation
import TernCore
import TernPlacement

#if canImport(Glibc)
    // With swift-nio-ssl in the build graph, `timespec` is seen through CoreFoundation's module.
    import CoreFoundation
#endif

/// `tern ring …`: plan, inspect and benchmark the cluster map's token ring (TernPlacement).
struct RingCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ring",
        abstract: "Plan and inspect the cluster map's token ring.",
        subcommands: [Plan.self, Show.self, Bench.self]
    )

    /// `tern ring plan`: a new map, or `--add` a node to an existing one.
    struct Plan: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Compute tokens offline and write the cluster map.",
            discussion: """
                New map:    tern ring plan --campus A=3 --campus B=3 --campus C=3 [--tokens-per-node N]
                            [--out cluster.toml] [--base-port P] [--name NAME]
                Add a node: tern ring plan --add NODE --campus A --map cluster.toml [--out FILE]
                Planned node i (0-based, in id order) listens on 127.0.0.1: client P+i, peer P+100+i,
                admin P+200+i.
                """
        )

        @Option(name: .customLong("campus"), help: "A=3 (new map, once per campus) or A (with --add).")
        var campuses: [String] = []

        @Option(help: "Tokens per node for a new map.")
        var tokensPerNode = 16

        @Option(help: "Where to write the map (default: cluster.toml, or --map's file with --add).")
        var out: String?

        @Option(help: "First client port of a new map (or of the scheme --add follows).")
        var basePort: Int?

        @Option(help: "Cluster name for a new map.")
        var name = "tern"

        @Flag(help: "Overwrite --out if it exists (new map only).")
        var force = false

        @Option(
            help:
                "Key layout of a new map: per-key (default) or hash-tag-groups (fixed for the cluster's life; docs/DATA.md)."
        )
        var keyLayout = "per-key"

        @Option(help: "Id (number) of the node to add to --map.")
        var add: UInt32?

        @Option(help: "The existing map, with --add.")
        var map: String?

        @Option(help: "Peer address of the added node (default: from the port scheme).")
        var peer: String?

        @Option(help: "Client address of the added node (default: from the port scheme).")
        var client: String?

        @Option(help: "Admin address of the added node (default: from the port scheme).")
        var admin: String?

        mutating func run() throws {
            if let add { try runAdd(NodeID(add)) } else { try runNew() }
        }

        private func runNew() throws {
            guard map == nil, peer == nil, client == nil, admin == nil else {
                throw ValidationError("--map, --peer, --client and --admin go with --add")
            }
            var counts: [Campus: Int] = [:]
            for spec in campuses {
                let parts = spec.split(separator: "=", omittingEmptySubsequences: false)
                guard parts.count == 2, let campus = parseCampus(String(parts[0])), let count = Int(parts[1]),
                    count >= 1
                else { throw ValidationError("--campus \(spec): expected A=3, B=2 or C=1 (campus=nodes)") }
                guard counts.updateValue(count, forKey: campus) == nil else {
                    throw ValidationError("--campus \(campus) given twice")
                }
            }
            guard counts.count == 3 else {
                throw ValidationError(
                    "give --campus for each of A, B and C, e.g. --campus A=3 --campus B=3 --campus C=3")
            }
            let path = out ?? "cluster.toml"
            if !force && FileManager.default.fileExists(atPath: path) {
                throw ValidationError("\(path) exists; pass --force to replace it or --out another file")
            }
            let scheme = TokenPlanner.AddressScheme(basePort: basePort ?? 7379)
            var map = try TokenPlanner.plan(
                name: name, nodesPerCampus: counts, tokensPerNode: tokensPerNode, scheme: scheme)
            guard let layout = KeyLayout(rawValue: keyLayout) else {
                throw ValidationError("--key-layout must be per-key or hash-tag-groups")
            }
            map.keyLayout = layout
            try map.write(toFile: path)
            print("wrote \(path): cluster \"\(map.name)\" version \(map.version), \(map.nodes.count) nodes")
            printShares(map)
        }

        private func runAdd(_ id: NodeID) throws {
            guard let mapPath = map else { throw ValidationError("--add needs --map FILE") }
            guard campuses.count == 1, let campus = parseCampus(campuses[0]) else {
                throw ValidationError("--add needs exactly one --campus A, B or C")
            }
            let old = try ClusterMap(contentsOfFile: mapPath)
            // Default addresses follow the plan's scheme, its base inferred from node 1's client port.
            let base =
                basePort
                ?? old.nodes.first.flatMap { node in
                    node.clientAddress.split(separator: ":").last.flatMap { Int($0) }.map {
                        $0 - Int(node.id.rawValue) + 1
                    }
                } ?? 7379
            let scheme = TokenPlanner.AddressScheme(basePort: base).addresses(index: Int(id.rawValue) - 1)
            let entry = NodeEntry(
                id: id, campus: campus, peerAddress: peer ?? scheme.peer,
                clientAddress: client ?? scheme.client,
                adminAddress: admin ?? scheme.admin, tokens: [])
            let (new, moves) = try TokenPlanner.adding(entry, to: old)
            let path = out ?? mapPath
            try new.write(toFile: path)
            let movedFraction = moves.reduce(0.0) { $0 + Double($1.length) } / 18_446_744_073_709_551_616.0
            print(
                "added \(id) to campus \(campus): \(moves.count) ranges move to it, "
                    + "\(percent(movedFraction)) of campus \(campus)'s data "
                    + "(1/\(old.nodes(in: campus).count + 1) = \(percent(1 / Double(old.nodes(in: campus).count + 1))))"
            )
            for move in moves { print("  move \(move)") }
            print("wrote \(path): cluster \"\(new.name)\" version \(new.version) (was \(old.version))")
            printShares(new)
        }
    }

    /// `tern ring show`: what a map holds.
    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print a map's nodes, token counts and shares.")

        @Option(help: "The cluster map file.")
        var map = "cluster.toml"

        func run() throws {
            let map = try ClusterMap(contentsOfFile: map)
            print("cluster \"\(map.name)\" version \(map.version), \(map.nodes.count) nodes")
            printShares(map)
        }
    }

    /// `tern ring bench` (hidden): lookups per second on a planned map.
    struct Bench: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Microbenchmark key → replicas lookups.", shouldDisplay: false)

        @Option(help: "A map to use instead of a planned one.")
        var map: String?

        @Option(help: "Nodes per campus of the planned map.")
        var nodesPerCampus = 3

        @Option(help: "Tokens per node of the planned map.")
        var tokensPerNode = 16

        @Option(help: "Bytes per key.")
        var keyBytes = 16

        @Option(help: "Lookups to time.")
        var lookups = 20_000_000

        @Flag(help: "Time only the key hashing (XXH64), to see what the ring searches add.")
        var hashOnly = false

        func run() throws {
            let map =
                try map.map { try ClusterMap(contentsOfFile: $0) }
                ?? TokenPlanner.plan(
                    name: "bench",
                    nodesPerCampus: [.a: nodesPerCampus, .b: nodesPerCampus, .c: nodesPerCampus],
                    tokensPerNode: tokensPerNode)
            let ring = Ring(map: map)
            // 64k distinct keys, laid out flat so that the loop neither allocates nor hits one cache line.
            let keyCount = 1 << 16
            var generator = SplitMix64(seed: 42)
            let keys = (0..<keyCount * keyBytes).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
            // Plain locals: reading an @Option in the loop would go through ArgumentParser's
            // property wrapper on every iteration and dominate the measurement.
            let (lookups, keyBytes, hashOnly) = (self.lookups, self.keyBytes, self.hashOnly)
            var checksum: UInt64 = 0
            let clock = ContinuousClock()
            let cpuStart = threadCPUSeconds()
            let elapsed = keys.withUnsafeBytes { bytes in
                clock.measure {
                    for i in 0..<lookups {
                        let start = (i & (keyCount - 1)) * keyBytes
                        let key = UnsafeRawBufferPointer(rebasing: bytes[start..<start + keyBytes])
                        if hashOnly {
                            checksum &+= XXH64.hash(key)
                        } else {
                            let replicas = ring.replicas(for: key)
                            checksum &+= UInt64(
                                replicas.a.rawValue ^ replicas.b.rawValue ^ replicas.c.rawValue)
                        }
                    }
                }
            }
            let cpuSeconds = threadCPUSeconds() - cpuStart
            let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18
            let perSecond = Double(lookups) / seconds
            let tokens = map.nodes.map(\.tokens.count).reduce(0, +)
            print(
                "ring lookup: \(lookups) lookups of \(keyBytes)-byte keys, \(map.nodes.count) nodes, \(tokens) tokens"
            )
            print(
                "  \(String(format: "%.1f", perSecond / 1e6))M lookups/s, "
                    + "\(String(format: "%.1f", seconds * 1e9 / Double(lookups))) ns/lookup wall clock; "
                    + "\(String(format: "%.1f", Double(lookups) / cpuSeconds / 1e6))M lookups per CPU-second "
                    + "(checksum \(checksum))")
        }
    }
}

/// CPU time of the calling thread, so the benchmark can say how much of the wall clock it got on a
/// shared machine.
private func threadCPUSeconds() -> Double {
    var time = timespec()
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &time)
    return Double(time.tv_sec) + Double(time.tv_nsec) * 1e-9
}

private func parseCampus(_ text: String) -> Campus? {
    Campus.allCases.first { $0.description == text.uppercased() }
}

private func percent(_ fraction: Double) -> String { String(format: "%.3f%%", fraction * 100) }

/// One line per node: campus, id, addresses, token count, share of its campus ring vs fair share.
private func printShares(_ map: ClusterMap) {
    let shares = TokenPlanner.shares(of: map)
    for campus in Campus.allCases {
        let nodes = map.nodes(in: campus)
        let fair = 1 / Double(nodes.count)
        print("campus \(campus): \(nodes.count) nodes, fair share \(percent(fair))")
        for node in nodes {
            let share = shares[node.id] ?? 0
            // Rounded first so that a deviation of -1e-15 does not print as "-0.0000%".
            let deviation = String(format: "%+.4f%%", ((share / fair - 1) * 1e6).rounded() / 1e4 + 0)
            print(
                "  \(node.id)  client \(node.clientAddress)  peer \(node.peerAddress)  admin \(node.adminAddress)  "
                    + "tokens \(node.tokens.count)  share \(percent(share)) (\(deviation) of fair)")
        }
    }
}
