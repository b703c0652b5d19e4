import ArgumentParser
import Foundation
import TernCore
import TernPlacement
import TernServer

/// `tern repair status|now`: the anti-entropy scanner of every node of a cluster, through the
/// nodes' admin ports (docs/REPAIR.md).
struct RepairCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "repair",
        abstract: "Anti-entropy: show every node's repair progress, or start a full-pace pass.",
        subcommands: [RepairStatusCommand.self, RepairNowCommand.self]
    )
}

/// What `/status` says that the repair view shows.
struct NodeRepairView: Decodable {
    var node: UInt32
    var campus: String
    var learner_only: Bool?
    var learner_only_reason: String?
    var damaged_keys: Int?
    var repair: RepairStatus?

    /// Fetches the view of one node (nil: it did not answer).
    static func fetch(_ address: String) -> NodeRepairView? {
        guard let r = DevCommand.http("GET", "/status", at: address), r.status == 200 else { return nil }
        return try? JSONDecoder().decode(NodeRepairView.self, from: Data(r.body.utf8))
    }

    /// One line: node, campus, pass, progress, repairs by cause, alarms.
    var line: String {
        let head = "n\(node) campus \(campus)"
        guard let r = repair else { return "\(head): repair scanner off" }
        let pct = r.bucketsTotal == 0 ? 0 : 100 * r.bucketsDone / r.bucketsTotal
        let state =
            r.running
            ? "pass \(r.pass) \(pct)%\(r.fullPace ? " (full pace)" : "")" : "idle after pass \(r.pass)"
        let last =
            r.lastPassAgoSeconds.map {
                "last full pass \(Int($0)) s ago in \(String(format: "%.1f", r.lastPassSeconds)) s"
                    + (r.lastPassComplete ? "" : " (incomplete: a peer did not answer)")
            } ?? "no full pass yet"
        var s =
            "\(head): \(state); \(last); compared \(r.keysCompared) keys; repaired behind \(r.repairedBehind), "
            + "taught \(r.repairedTaught), missing \(r.repairedMissing), damaged \(r.repairedDamaged), "
            + "rebuilt \(r.rebuilt), copied \(r.copied), orphans \(r.orphansCollected); "
            + "alarms \(r.safetyAlarms)"
        if learner_only == true {
            s += "; LEARNER-ONLY (\(learner_only_reason ?? "rebuilding")), \(damaged_keys ?? 0) keys damaged"
        }
        return s
    }
}

struct RepairStatusCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Print each node's repair progress (exit 1 if a node does not answer).")

    @Option(help: "The cluster map.")
    var map: String

    func run() throws {
        let m = try ClusterMap(contentsOfFile: map)
        var down = 0
        for n in m.nodes {
            if let v = NodeRepairView.fetch(n.adminAddress) {
                print(v.line)
            } else {
                down += 1
                print("n\(n.id.rawValue) campus \(n.campus): not answering at \(n.adminAddress)")
            }
        }
        if down > 0 { throw ExitCode(1) }
    }
}

struct RepairNowCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "now", abstract: "Start a full-pace repair pass on every node (or one), and follow it.")

    @Option(help: "The cluster map.")
    var map: String

    @Option(help: "Only this node (its id).")
    var node: UInt32?

    @Flag(help: "Return at once instead of following the pass until it ends.")
    var noWait = false

    func run() throws {
        let m = try ClusterMap(contentsOfFile: map)
        let nodes = m.nodes.filter { node == nil || $0.id.rawValue == node }
        guard !nodes.isEmpty else { throw ValidationError("no node \(node ?? 0) in the map") }
        var started: [(id: UInt32, address: String, pass: UInt64)] = []
        for n in nodes {
            let before = NodeRepairView.fetch(n.adminAddress)?.repair?.pass ?? 0
            guard let r = DevCommand.http("POST", "/repair", at: n.adminAddress) else {
                print("n\(n.id.rawValue): not answering at \(n.adminAddress)")
                continue
            }
            print("n\(n.id.rawValue): \(r.body.trimmingCharacters(in: .whitespacesAndNewlines))")
            if r.status == 200 { started.append((n.id.rawValue, n.adminAddress, before)) }
        }
        guard !noWait, !started.isEmpty else { return }
        // Follow until each node's pass ended: buckets done over all nodes, rate and time left.
        let progress = Progress("tern repair now", unit: "buckets")
        while true {
            var done = 0
            var buckets = (done: 0, total: 0)
            var parts: [String] = []
            for s in started {
                guard let r = NodeRepairView.fetch(s.address)?.repair else {
                    parts.append("n\(s.id) ?")
                    continue
                }
                if !r.running && r.pass > s.pass {
                    done += 1
                    parts.append("n\(s.id) done")
                    buckets.done += r.bucketsTotal
                } else {
                    let pct = r.bucketsTotal == 0 ? 0 : 100 * r.bucketsDone / r.bucketsTotal
                    parts.append("n\(s.id) \(pct)%")
                    buckets.done += r.bucketsDone
                }
                buckets.total += r.bucketsTotal
            }
            progress.update(
                done: buckets.done, of: buckets.total, detail: parts.joined(separator: ", "),
                force: done == started.count)
            if done == started.count { break }
            Thread.sleep(forTimeInterval: 1)
        }
        progress.finish()
        for s in started { if let v = NodeRepairView.fetch(s.address) { print(v.line) } }
    }
}
