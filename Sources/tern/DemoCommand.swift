import ArgumentParser
import Foundation
import TernBench

/// `tern demo`: demonstrations against a running cluster.
struct DemoCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo", abstract: "Demonstrations against a running cluster (tern dev).",
        subcommands: [DemoChatCommand.self])
}

/// `tern demo chat`: simulated phones on sync inboxes; exits non-zero if any device lost, duplicated
/// or reordered a message (docs/SYNC.md).
struct DemoChatCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "chat",
        abstract: "Phones that send, sync and reconnect at random; checks exactly-once in-order delivery.")

    @Option(help: "Host of the nodes' client ports.") var host = "127.0.0.1"
    @Option(help: "Client ports, comma-separated (tern dev: 7379,7380,7381).") var ports = "7379,7380,7381"
    @Option(help: "Users.") var users = 1_000
    @Option(help: "Devices (phones) per user.") var devices = 3
    @Option(help: "Minutes of sending.") var minutes = 1.0
    @Option(help: "Seconds of sending (overrides --minutes).") var seconds: Double?
    @Option(help: "Concurrent senders.") var senders = 16
    @Option(help: "Seed of the phones' and senders' choices.") var seed: UInt64 = 1
    @Option(help: "Longest online period of a phone, in seconds.") var onlineMax = 6.0
    @Option(help: "Longest offline period of a phone, in seconds.") var offlineMax = 3.0
    @Option(help: "Share of SYNC replies a phone drops on purpose (0...1).") var lostRatio = 0.05

    func run() async throws {
        var o = ChatDemoOptions()
        o.host = host
        o.ports = ports.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard !o.ports.isEmpty, users > 0, devices > 0, senders > 0 else {
            throw ValidationError("need at least one port, user, device and sender")
        }
        o.users = users
        o.devices = devices
        o.seconds = seconds ?? minutes * 60
        o.senders = senders
        o.seed = seed
        o.onlineSecondsMax = onlineMax
        o.offlineSecondsMax = offlineMax
        o.lostReplyRatio = lostRatio
        // Fresh uids per run: earlier runs' messages stay out of this run's inboxes.
        o.uidBase = UInt64(Date().timeIntervalSince1970 * 1000) * 1_000_000 % (1 << 62)
        print("tern demo chat: \(users) users x \(devices) devices, \(o.seconds) s, uids from \(o.uidBase)")
        let progress = Progress("tern demo chat", seconds: o.seconds)
        progress.every()
        // The demo's milestones stay as lines of their own; the progress line shows the time left.
        let report = try await ChatDemo.run(o) { progress.note($0) }
        progress.finish()
        print(report.text, terminator: "")
        if !report.ok { throw ExitCode.failure }
    }
}
