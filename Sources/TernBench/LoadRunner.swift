import Histogram
import NIOCore
import NIOPosix
import TernCore

/// When the measured window starts and ends, on the monotonic clock of `NIODeadline`.
struct LoadWindow: Sendable {
    var measureStartNanos: UInt64
    var measureEndNanos: UInt64
    var drainEndNanos: UInt64
}

/// Sent down each connection's pipeline once every connection is open: start the load.
struct LoadStart: Sendable {
    var window: LoadWindow
}

/// Counters of the connections of one event loop. Touched only on that loop (it is reached
/// through a `NIOLoopBound`), so it needs no lock.
final class LoopStats {
    var result = LoadResult()

    /// Counts one reply of a batch written at `batchStart`, if the batch lies in the window.
    @inline(__always)
    func reply(
        window: LoadWindow, batchStart: UInt64, now: UInt64, isError: Bool, isNull: Bool, errorText: String
    ) {
        if isError && result.firstError == nil { result.firstError = errorText }
        guard batchStart >= window.measureStartNanos && now <= window.measureEndNanos else { return }
        result.operations += 1
        result.latency.record(now &- batchStart)
        if isError { result.errors += 1 }
        if isNull { result.nullReplies += 1 }
    }

    /// A connection failed with `outstanding` requests unanswered.
    func lost(_ outstanding: Int, reason: String, window: LoadWindow?, now: UInt64) {
        if result.firstError == nil { result.firstError = reason }
        if let window, now <= window.measureEndNanos { result.errors += outstanding }
    }
}

/// Loop-confined state of one load connection: one batch in flight, the window, the end.
final class LoadConnection {
    let stats: LoopStats
    let done: EventLoopPromise<Void>
    let pipeline: Int
    var window: LoadWindow?
    var outstanding = 0
    var batchStart: UInt64 = 0
    var finished = false

    init(stats: LoopStats, done: EventLoopPromise<Void>, pipeline: Int) {
        self.stats = stats
        self.done = done
        self.pipeline = pipeline
    }

    /// Closes the connection and reports it done (once).
    func finish(_ context: ChannelHandlerContext) {
        guard !finished else { return }
        finished = true
        context.close(promise: nil)
        done.succeed()
    }
}

/// What every load connection does the same way, whatever protocol it speaks: wait for
/// ``LoadStart``, keep one batch of `pipeline` requests in flight, stop at the end of the window
/// (or at the drain deadline), count requests lost with the connection.
protocol LoadConnectionHandler: ChannelInboundHandler {
    var connection: LoadConnection { get }
    /// Writes and flushes `count` requests.
    func writeBatch(_ count: Int, context: ChannelHandlerContext)
}

extension LoadConnectionHandler {
    func handleStart(context: ChannelHandlerContext, event: Any) {
        guard let start = event as? LoadStart else {
            context.fireUserInboundEventTriggered(event)
            return
        }
        connection.window = start.window
        let bound = NIOLoopBound((connection, context), eventLoop: context.eventLoop)
        context.eventLoop.scheduleTask(deadline: NIODeadline.uptimeNanoseconds(start.window.drainEndNanos)) {
            let (connection, context) = bound.value
            guard !connection.finished else { return }
            connection.stats.result.timeouts += connection.outstanding
            connection.stats.lost(0, reason: "no reply within the drain time", window: nil, now: 0)
            connection.finish(context)
        }
        sendBatch(context)
    }

    /// The next batch, or the end if the window is over.
    func sendBatch(_ context: ChannelHandlerContext) {
        guard let window = connection.window else { return }
        let now = NIODeadline.now().uptimeNanoseconds
        if now >= window.measureEndNanos {
            finish(context)
            return
        }
        connection.outstanding = connection.pipeline
        connection.batchStart = now
        writeBatch(connection.pipeline, context: context)
    }

    /// Counts one reply of the current batch.
    func replied(now: UInt64, isError: Bool, isNull: Bool, errorText: String) {
        guard let window = connection.window else { return }
        connection.stats.reply(
            window: window, batchStart: connection.batchStart, now: now, isError: isError, isNull: isNull,
            errorText: errorText)
        connection.outstanding -= 1
    }

    func connectionFailed(context: ChannelHandlerContext, reason: String) {
        guard !connection.finished else { return }
        connection.stats.lost(
            connection.outstanding, reason: reason, window: connection.window,
            now: NIODeadline.now().uptimeNanoseconds)
        finish(context)
    }

    func connectionClosed(context: ChannelHandlerContext) {
        if !connection.finished {
            connection.stats.lost(
                connection.outstanding, reason: "server closed the connection", window: connection.window,
                now: NIODeadline.now().uptimeNanoseconds)
            connection.finished = true
            connection.done.succeed()
        }
        context.fireChannelInactive()
    }

    func finish(_ context: ChannelHandlerContext) {
        connection.finish(context)
    }
}

/// A connection's load handler, as the runner needs it: connected, then started, then done.
struct OpenConnection: Sendable {
    var channel: any Channel
    var done: EventLoopFuture<Void>
}

/// Opens connections, starts them together, samples CPU at the window's edges, merges results.
public enum LoadRunner {
    /// Makes one connection on `loop`; `stats` is that loop's counters.
    typealias Connect =
        @Sendable (_ loop: any EventLoop, _ stats: NIOLoopBound<LoopStats>, _ index: Int) -> EventLoopFuture<
            OpenConnection
        >

    /// Runs the load; `prefill`, if given and asked for by the options, runs first on the same
    /// event loops and its duration is reported.
    static func run(
        options: LoadOptions, serverPIDs: [Int32],
        prefill: (@Sendable (MultiThreadedEventLoopGroup) async throws -> Void)? = nil, connect: Connect
    ) async throws -> LoadResult {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: options.threads)
        do {
            var prefillSeconds: Double?
            if options.prefill, let prefill {
                let start = NIODeadline.now()
                try await prefill(group)
                prefillSeconds = Double((NIODeadline.now() - start).nanoseconds) / 1e9
            }
            var result = try await run(
                options: options, serverPIDs: serverPIDs, group: group, connect: connect)
            result.prefillSeconds = prefillSeconds
            try await group.shutdownGracefully()
            return result
        } catch {
            try? await group.shutdownGracefully()
            throw error
        }
    }

    static func run(
        options: LoadOptions, serverPIDs: [Int32], group: MultiThreadedEventLoopGroup, connect: Connect
    ) async throws -> LoadResult {
        let loops = Array(group.makeIterator())
        var stats: [NIOLoopBound<LoopStats>] = []
        for loop in loops {
            stats.append(try await loop.submit { NIOLoopBound(LoopStats(), eventLoop: loop) }.get())
        }
        var connections: [OpenConnection] = []
        do {
            for i in 0..<options.connections {
                let loop = i % loops.count
                connections.append(try await connect(loops[loop], stats[loop], i).get())
            }
        } catch {
            for connection in connections { try? await connection.channel.close() }
            throw error
        }

        let start = NIODeadline.now().uptimeNanoseconds
        let measureStart = start + UInt64(options.warmupSeconds * 1e9)
        let measureEnd = measureStart + UInt64(options.durationSeconds * 1e9)
        let window = LoadWindow(
            measureStartNanos: measureStart, measureEndNanos: measureEnd,
            drainEndNanos: measureEnd + UInt64(options.drainSeconds * 1e9))
        for connection in connections {
            connection.channel.pipeline.fireUserInboundEventTriggered(LoadStart(window: window))
        }

        try await sleep(untilUptime: measureStart)
        let clientBefore = ownCPUSeconds()
        let serversBefore = serverPIDs.map(processCPUSeconds)
        try await sleep(untilUptime: measureEnd)
        let clientAfter = ownCPUSeconds()
        let serversAfter = serverPIDs.map(processCPUSeconds)

        for connection in connections { try? await connection.done.get() }
        var result = LoadResult()
        for (loop, bound) in zip(loops, stats) {
            result.merge(try await loop.submit { bound.value.result }.get())
        }
        result.seconds = options.durationSeconds
        result.clientUserSeconds = clientAfter.user - clientBefore.user
        result.clientSystemSeconds = clientAfter.system - clientBefore.system
        if !serverPIDs.isEmpty {
            var total = 0.0
            for (before, after) in zip(serversBefore, serversAfter) {
                if let before, let after { total += after - before }
            }
            result.serverCPUSeconds = total
        }
        result.cores = coreCount()
        return result
    }

    static func sleep(untilUptime nanos: UInt64) async throws {
        let now = NIODeadline.now().uptimeNanoseconds
        if nanos > now { try await Task.sleep(nanoseconds: nanos - now) }
    }
}

/// Key choice uses TernCore's seeded SplitMix64, with a multiply-shift bound.
extension SplitMix64 {
    /// Uniform in 0..<bound (bound ≥ 1), by multiply-shift (bias below 2^-32 for bench-sized bounds).
    mutating func next(below bound: UInt64) -> UInt64 {
        next().multipliedFullWidth(by: bound).high
    }
}

/// Chooses each request's key and operation, the same way for every target.
struct KeyChooser {
    var rng: SplitMix64
    let options: LoadOptions

    init(options: LoadOptions, connection: Int) {
        self.options = options
        self.rng = SplitMix64(seed: options.seed &+ UInt64(connection) &* 0x2545_F491_4F6C_DD1D)
    }

    mutating func key() -> UInt64 {
        options.hotKey ? 0 : rng.next(below: UInt64(options.keys))
    }

    /// The operation of the next request (`mixed` resolved to `get` or `set`).
    mutating func operation() -> LoadCommand {
        switch options.command {
        case .mixed: rng.chance(options.readRatio) ? .get : .set
        default: options.command
        }
    }
}

/// The key of number `n`: `key:` and 12 digits.
func benchKey(_ n: Int) -> [UInt8] {
    var buffer = ByteBuffer(string: "key:")
    buffer.writeTwelveDigits(UInt64(n))
    return Array(buffer.readableBytesView)
}

extension ByteBuffer {
    /// Appends `n` as exactly 12 ASCII digits (zero-padded), as redis-benchmark's `__rand_int__`.
    mutating func writeTwelveDigits(_ n: UInt64) {
        precondition(n < 1_000_000_000_000, "keys are 12 digits")
        writeWithUnsafeMutableBytes(minimumWritableBytes: 12) { raw in
            var value = n
            for i in stride(from: 11, through: 0, by: -1) {
                raw[i] = UInt8(ascii: "0") &+ UInt8(truncatingIfNeeded: value % 10)
                value /= 10
            }
            return 12
        }
    }
}
