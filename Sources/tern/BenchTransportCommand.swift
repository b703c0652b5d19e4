import ArgumentParser
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import TernCore
import TernTransport

/// `tern bench transport`: the peer transport's figures for docs/TRANSPORT.md.
struct BenchTransportCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "transport",
        abstract: "Messages/s and messages per write between two transports on 127.0.0.1 (one event-loop "
            + "thread each): bursts per event-loop turn, a free-running sender thread, and round trips."
    )

    @Option(help: "Seconds per measurement.")
    var seconds = 3.0

    @Option(help: "Bytes per message.")
    var size = 100

    @Option(help: "Messages per event-loop turn, comma-separated, for the burst measurements.")
    var bursts = "1,10,100,1000"

    @Option(help: "Most messages in flight (sent, not yet received) before the sender waits.")
    var window = 50_000

    @Option(help: "Which parts to run: comma-separated of burst,thread,rtt.")
    var parts = "burst,thread,rtt"

    func run() async throws {
        guard size >= 0, seconds > 0, window > 0 else {
            throw ValidationError("size, seconds and window must be positive")
        }
        let selected = Set(parts.split(separator: ",").map(String.init))
        print(
            "machine: \(ProcessInfo.processInfo.activeProcessorCount) cores; \(size)-byte messages, "
                + "\(seconds) s per cell, window \(window) messages")
        if selected.contains("burst") {
            for burst in bursts.split(separator: ",").compactMap({ Int($0) }) where burst > 0 {
                try await measure(.burst(burst))
            }
        }
        if selected.contains("thread") { try await measure(.thread) }
        if selected.contains("rtt") { try await measureRoundTrips() }
    }

    enum Sender {
        /// A task on the sender's event loop sends `n` messages, then yields the loop.
        case burst(Int)
        /// A thread outside the event loops calls `send` as fast as the window allows.
        case thread
    }

    /// Two connected transports; `receive` sees every batch n2 gets.
    struct Pair {
        var sender: PeerTransport
        var receiver: PeerTransport
        var senderGroup: MultiThreadedEventLoopGroup
        var receiverGroup: MultiThreadedEventLoopGroup

        func shutdown() async throws {
            await sender.shutdown()
            await receiver.shutdown()
            try await senderGroup.shutdownGracefully()
            try await receiverGroup.shutdownGracefully()
        }
    }

    func makePair(
        onSenderBatch: @escaping @Sendable (NodeID, [ByteBuffer]) -> Void = { _, _ in },
        onReceiverBatch: @escaping @Sendable (NodeID, [ByteBuffer]) -> Void
    ) async throws -> Pair {
        let secret = (0..<32).map { _ in UInt8.random(in: 0...255) }
        func config(_ me: UInt32, _ other: UInt32) -> TransportConfig {
            TransportConfig(
                clusterName: "bench", me: NodeID(me), listen: PeerAddress(host: "127.0.0.1", port: 0),
                peers: [NodeID(other): PeerAddress(host: "127.0.0.1", port: 0)], secret: secret,
                sendQueueBytesMax: 256 << 20)
        }
        let logger = Logger(label: "bench", factory: { _ in SwiftLogNoOpLogHandler() })
        let senderGroup = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let receiverGroup = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let sender = PeerTransport(
            config: config(1, 2), group: senderGroup, logger: logger, onBatch: onSenderBatch)
        let receiver = PeerTransport(
            config: config(2, 1), group: receiverGroup, logger: logger, onBatch: onReceiverBatch)
        try await receiver.start()
        try await sender.start()
        sender.updatePeers([NodeID(2): PeerAddress(host: "127.0.0.1", port: receiver.boundPort)])
        receiver.updatePeers([NodeID(1): PeerAddress(host: "127.0.0.1", port: sender.boundPort)])
        let deadline = ContinuousClock.now + .seconds(5)
        while sender.metrics().peers[NodeID(2)]?.connected != true {
            guard ContinuousClock.now < deadline else { throw ValidationError("transports did not connect") }
            try await Task.sleep(for: .milliseconds(5))
        }
        return Pair(
            sender: sender, receiver: receiver, senderGroup: senderGroup, receiverGroup: receiverGroup)
    }

    /// Received messages and receive callbacks, updated by the receiver's event loop.
    final class Tally: Sendable {
        let box = NIOLockedValueBox((messages: 0, callbacks: 0))
        var messages: Int { box.withLockedValue { $0.messages } }
    }

    func measure(_ mode: Sender) async throws {
        let tally = Tally()
        let pair = try await makePair { _, messages in
            tally.box.withLockedValue {
                $0.messages += messages.count
                $0.callbacks += 1
            }
        }
        let payload = ByteBuffer(repeating: 0x5A, count: size)
        let sender = pair.sender
        let window = window
        let duration = TimeAmount.nanoseconds(Int64(seconds * 1e9))
        let stop = NIODeadline.now() + duration
        let start = ContinuousClock.now
        let sent: Int
        switch mode {
        case .burst(let n):
            let loop = pair.senderGroup.next()
            let done = loop.makePromise(of: Int.self)
            // One pump per event-loop turn: `n` sends, then the transport's flush runs, then the next
            // pump. When the window is full, wait a little instead of spinning.
            @Sendable func pump(_ total: Int) {
                if NIODeadline.now() >= stop { return done.succeed(total) }
                guard total - tally.messages < window else {
                    loop.scheduleTask(in: .microseconds(50)) { pump(total) }
                    return
                }
                for _ in 0..<n { sender.send(payload, to: NodeID(2)) }
                loop.execute { pump(total + n) }
            }
            loop.execute { pump(0) }
            sent = try await done.futureResult.get()
        case .thread:
            sent = await Task.detached {
                var total = 0
                while NIODeadline.now() < stop {
                    for _ in 0..<256 {
                        sender.send(payload, to: NodeID(2))
                    }
                    total += 256
                    while total - tally.messages >= window && NIODeadline.now() < stop { await Task.yield() }
                }
                return total
            }.value
        }
        // Let the tail arrive.
        let tailDeadline = ContinuousClock.now + .seconds(5)
        while tally.messages < sent - Int(sender.metrics().dropped) && ContinuousClock.now < tailDeadline {
            try await Task.sleep(for: .milliseconds(1))
        }
        let elapsed = (ContinuousClock.now - start).seconds
        let m = sender.metrics()
        let (received, callbacks) = tally.box.withLockedValue { ($0.messages, $0.callbacks) }
        let label: String =
            switch mode {
            case .burst(let n): "burst \(n)/turn"
            case .thread: "sender thread"
            }
        print(
            String(
                format:
                    "%@ %10.0f msgs/s  %7.1f MB/s  %7.1f msgs/write (max %d)  %7.1f msgs/callback  dropped %d",
                padded(label), Double(received) / elapsed, Double(m.bytesSent) / elapsed / 1e6,
                m.messagesPerWriteMean, m.messagesPerWriteMax, Double(received) / Double(max(1, callbacks)),
                m.dropped))
        try await pair.shutdown()
    }

    /// One message in flight: n1 sends, n2's callback answers, n1's callback sends the next.
    func measureRoundTrips() async throws {
        struct Run {
            var samples: [Int64] = []
            var sentAt = NIODeadline.now()
            var stop = NIODeadline.distantFuture
            var sender: PeerTransport?
            var receiver: PeerTransport?
            var finished = false
        }
        let run = NIOLockedValueBox(Run())
        let payload = ByteBuffer(repeating: 0x5A, count: size)
        let pair = try await makePair(
            onSenderBatch: { _, _ in
                let now = NIODeadline.now()
                let next = run.withLockedValue { r -> PeerTransport? in
                    r.samples.append((now - r.sentAt).nanoseconds)
                    guard now < r.stop else {
                        r.finished = true
                        return nil
                    }
                    r.sentAt = NIODeadline.now()
                    return r.sender
                }
                next?.send(payload, to: NodeID(2))
            },
            onReceiverBatch: { from, messages in
                let receiver = run.withLockedValue { $0.receiver }
                for m in messages { receiver?.send(m, to: from) }
            })
        let start = ContinuousClock.now
        run.withLockedValue { r in
            r.sender = pair.sender
            r.receiver = pair.receiver
            r.stop = .now() + .nanoseconds(Int64(seconds * 1e9))
            r.sentAt = .now()
        }
        pair.sender.send(payload, to: NodeID(2))
        while !run.withLockedValue({ $0.finished }) { try await Task.sleep(for: .milliseconds(10)) }
        let elapsed = (ContinuousClock.now - start).seconds
        let all = run.withLockedValue { $0.samples }.sorted()
        func micros(_ p: Double) -> Double {
            Double(all[min(all.count - 1, Int(Double(all.count) * p))]) / 1e3
        }
        print(
            String(
                format: "%@ %10.0f round trips/s (1 in flight)  p50 %.0f µs  p99 %.0f µs  max %.0f µs",
                padded("round trip"), Double(all.count) / elapsed, micros(0.5), micros(0.99), micros(1)))
        try await pair.shutdown()
    }

    private func padded(_ label: String) -> String {
        label.padding(toLength: 16, withPad: " ", startingAt: 0)
    }
}
