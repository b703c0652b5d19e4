import ArgumentParser
import Foundation
import TernBench

/// `tern demo`: demonstrations against a running cluster.
struct DemoCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo", abstract: "Demonstrations against a running cluster (tern dev).",
        subcommands: [DemoChatCommand.self, DemoEnvelopeCommand.self, DemoQueueCommand.self])
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

/// `tern demo envelope`: red envelopes opened concurrently by their groups' members; exits
/// non-zero if an envelope breaks the bank invariant or an answer disagrees (docs/ENVELOPE.md).
struct DemoEnvelopeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "envelope",
        abstract:
            "Creates envelopes and opens them concurrently; prints opens/s, p99 and the invariant check.")

    @Option(help: "Host of the nodes' client ports.") var host = "127.0.0.1"
    @Option(help: "Client ports, comma-separated (tern dev: 7379,7380,7381).") var ports = "7379,7380,7381"
    @Option(help: "Envelopes (one per group).") var groups = 100
    @Option(help: "Members per group (each opens its group's envelope).") var members = 200
    @Option(help: "Shares per envelope (default: half the members).") var count: Int?
    @Option(help: "Cents per envelope (default: 100 per share).") var totalCents: Int?
    @Option(help: "Concurrent connections (spread over the ports).") var connections = 64
    @Option(help: "Opens pipelined per connection.") var pipeline = 8
    @Option(help: "Seed of the opening order.") var seed: UInt64 = 1

    func run() async throws {
        var o = EnvelopeDemoOptions()
        o.host = host
        o.ports = ports.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard !o.ports.isEmpty, groups > 0, members > 0, connections > 0, pipeline > 0 else {
            throw ValidationError("need at least one port, group, member, connection and pipelined open")
        }
        o.groups = groups
        o.members = members
        o.count = count
        o.totalCents = totalCents
        o.connections = connections
        o.pipeline = pipeline
        o.seed = seed
        // Fresh envelope ids per run.
        o.prefix = "demo\(UInt64(Date().timeIntervalSince1970 * 1000)):"
        print(
            "tern demo envelope: \(groups) envelopes x \(members) members, \(connections) connections x \(pipeline) pipelined"
        )
        let report = try await EnvelopeDemo.run(o) { print($0) }
        print(report.text, terminator: "")
        if !report.ok { throw ExitCode.failure }
    }
}

/// `tern demo queue`: producers and a worker pool with crashes on Redis Streams; exits non-zero if
/// an added entry was not acknowledged, or one was delivered after its acknowledgement (docs/QUEUE.md).
struct DemoQueueCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "queue",
        abstract:
            "Producers add tasks, a worker pool with crashes drains them; prints throughput, latency, redeliveries and a check."
    )

    @Option(help: "Host of the nodes' client ports.") var host = "127.0.0.1"
    @Option(help: "Client ports, comma-separated (tern dev: 7379,7380,7381; Redis's port works too).")
    var ports = "7379,7380,7381"
    @Option(help: "Streams (tasks spread over them).") var streams = 4
    @Option(help: "Producer connections.") var producers = 8
    @Option(help: "XADDs pipelined per producer.") var pipeline = 8
    @Option(help: "Workers (at least one per stream).") var workers = 16
    @Option(help: "Entries per XREADGROUP.") var batch = 10
    @Option(help: "Seconds of adding (workers then drain the rest).") var seconds = 10.0
    @Option(help: "Chance a worker crashes holding a batch.") var crashRatio = 0.01
    @Option(help: "Idle milliseconds before a crashed worker's entries are claimed.") var claimIdleMs = 1000
    @Option(help: "Seed of the crashes.") var seed: UInt64 = 1
    @Flag(help: "Acknowledge a batch with one XACK of all its ids (default: one XACK per entry).")
    var ackTogether = false

    func run() async throws {
        var o = QueueDemoOptions()
        o.host = host
        o.ports = ports.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard !o.ports.isEmpty, streams > 0, producers > 0, pipeline > 0, batch > 0, workers >= streams,
            seconds > 0, (0.0..<1.0).contains(crashRatio)
        else {
            throw ValidationError(
                "need a port, streams, producers, pipeline and batch > 0, workers >= streams, seconds > 0, 0 <= crash-ratio < 1"
            )
        }
        o.streams = streams
        o.producers = producers
        o.pipeline = pipeline
        o.workers = workers
        o.batch = batch
        o.seconds = seconds
        o.crashRatio = crashRatio
        o.claimIdleMs = claimIdleMs
        o.seed = seed
        o.ackTogether = ackTogether
        o.prefix = "demoq\(UInt64(Date().timeIntervalSince1970 * 1000)):"
        print(
            "tern demo queue: \(streams) streams, \(producers) producers x \(pipeline) pipelined, \(workers) workers, \(seconds) s, crash ratio \(crashRatio)"
                + (ackTogether ? ", one XACK per batch" : "")
        )
        let report = try await QueueDemo.run(o) { print($0) }
        print(report.text, terminator: "")
        if !report.ok { throw ExitCode.failure }
    }
}
