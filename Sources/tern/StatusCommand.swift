import ArgumentParser
import Foundation
import TernCore
import TernPlacement
import TernServer

/// `tern status --map cluster.toml`: the dashboard's view in a terminal, one line per node and a
/// summary per campus, asked of every node's admin port (docs/OPERATIONS.md). Exits 1 when a
/// campus is down (none of its nodes answers healthy), so a script or a cron job can alarm on it.
struct StatusCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Show every node's health, load and repair progress; exit 1 when a campus is down.")

    @Option(help: "The cluster map.")
    var map: String

    /// What `/status` says that this view shows (fields absent on older nodes are optional).
    struct View: Decodable {
        var node: UInt32
        var campus: String
        var healthy: Bool?
        var learner_only: Bool?
        var ops_per_sec: Int?
        var latency_p99_ms: Double?
        var keys_loaded: Int?
        var peers_connected: Int?
        var peers: [Peer]?
        var repair: RepairStatus?
        struct Peer: Decodable { var node: UInt32 }
    }

    /// One node's state as the view shows it.
    enum Health: String {
        case up, rebuilding, unhealthy, down
    }

    static func health(_ v: View?) -> Health {
        guard let v else { return .down }
        if v.healthy == true { return .up }
        return v.learner_only == true ? .rebuilding : .unhealthy
    }

    /// The repair column: the pass's progress, or idle after a full pass.
    static func repairText(_ r: RepairStatus?) -> String {
        guard let r else { return "off" }
        if r.running {
            let pct = r.bucketsTotal == 0 ? 0 : 100 * r.bucketsDone / r.bucketsTotal
            return "pass \(r.pass) \(pct)%\(r.fullPace ? " full pace" : "")"
        }
        return r.lastPassAgoSeconds.map { "100% (\(Int($0)) s ago)" } ?? "no pass yet"
    }

    /// The table and campus summary for `map` given each node's view; and whether a campus is down.
    static func render(map: ClusterMap, views: [NodeID: View]) -> (text: String, campusDown: Bool) {
        func pad(_ s: String, _ n: Int) -> String {
            s.count >= n ? s + " " : s + String(repeating: " ", count: n - s.count)
        }
        var lines = ["cluster \(map.name): \(map.nodes.count) nodes"]
        lines.append(
            pad("NODE", 6) + pad("CAMPUS", 8) + pad("HEALTH", 12) + pad("REQ/S", 8) + pad("P99 MS", 9)
                + pad("KEYS", 9) + pad("PEERS", 7) + "REPAIR")
        let nodes = map.nodes.sorted {
            ($0.campus.rawValue, $0.id.rawValue) < ($1.campus.rawValue, $1.id.rawValue)
        }
        for n in nodes {
            let v = views[n.id]
            let h = health(v)
            var line = pad("n\(n.id.rawValue)", 6) + pad("\(n.campus)", 8) + pad(h.rawValue, 12)
            if let v {
                line +=
                    pad(v.ops_per_sec.map { "\($0)" } ?? "-", 8)
                    + pad(v.latency_p99_ms.map { String(format: "%.2f", $0) } ?? "-", 9)
                    + pad(v.keys_loaded.map { "\($0)" } ?? "-", 9)
                    + pad("\(v.peers_connected ?? 0)/\(v.peers?.count ?? 0)", 7) + repairText(v.repair)
            } else {
                line += "not answering at \(n.adminAddress)"
            }
            lines.append(line)
        }
        var down = false
        for campus in Set(map.nodes.map(\.campus)).sorted(by: { $0.rawValue < $1.rawValue }) {
            let members = map.nodes.filter { $0.campus == campus }
            let up = members.filter { health(views[$0.id]) == .up }.count
            let state = up == members.count ? "" : up == 0 ? "  DOWN" : "  degraded"
            if up == 0 { down = true }
            lines.append("campus \(campus): \(up)/\(members.count) up\(state)")
        }
        return (lines.joined(separator: "\n"), down)
    }

    func run() throws {
        let m = try ClusterMap(contentsOfFile: map)
        var views: [NodeID: View] = [:]
        for n in m.nodes {
            if let r = DevCommand.http("GET", "/status", at: n.adminAddress), r.status == 200,
                let v = try? JSONDecoder().decode(View.self, from: Data(r.body.utf8))
            {
                views[n.id] = v
            }
        }
        let (text, campusDown) = Self.render(map: m, views: views)
        print(text)
        if campusDown { throw ExitCode(1) }
    }
}
