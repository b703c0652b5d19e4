import Histogram

/// Which operation each request performs.
public enum LoadCommand: String, CaseIterable, Sendable {
    /// `SET key value` / etcd put.
    case set
    /// `GET key` / etcd range (linearizable unless serializable reads are asked for).
    case get
    /// `INCR counter:…` (RESP only: etcd has no increment).
    case incr
    /// GET with probability `readRatio`, otherwise SET.
    case mixed
    /// `SEQ.NEXT <uid>` with a uniformly random uid below `uids` (Tern's sequence service).
    case seqnext
}

/// The knobs of one load run, the same for every target so that runs compare.
public struct LoadOptions: Sendable {
    /// TCP connections, spread over the event loops.
    public var connections = 64
    /// Requests written at once per connection; the next batch leaves when the whole batch has been
    /// answered (redis-benchmark's `-P` semantics).
    public var pipeline = 1
    /// Keys are `key:` + a uniformly random 12-digit number below `keys` (redis-benchmark's
    /// `key:__rand_int__` with `-r keys`); counters are `counter:` + the same digits.
    public var keys = 100_000
    /// Bytes per SET value.
    public var valueBytes = 100
    /// Share of GETs in the `mixed` workload.
    public var readRatio = 0.5
    /// Measured seconds (after the warm-up).
    public var durationSeconds = 10.0
    /// Seconds of load before measuring starts (connections open, caches warm).
    public var warmupSeconds = 1.0
    public var command = LoadCommand.set
    /// Every request uses the same key (`key:000000000000`, `counter:000000000000`).
    public var hotKey = false
    /// Event-loop threads of the generator.
    public var threads = 2
    /// Seed of the key choice (per connection: seed + connection number).
    public var seed: UInt64 = 1
    /// Requests still unanswered this long after the end are counted as timeouts and their
    /// connections closed.
    public var drainSeconds = 10.0
    /// `seqnext`: uids are uniformly random below this (decimal, no padding).
    public var uids: UInt64 = 1_000_000
    /// Write every key once (value of `valueBytes`) before the warm-up, so that reads find values.
    public var prefill = false

    public init() {}

    /// A problem with the options, said plainly; nil if they are usable.
    public func validationError() -> String? {
        if connections < 1 { return "--connections must be at least 1" }
        if pipeline < 1 { return "--pipeline must be at least 1" }
        if keys < 1 || keys > 1_000_000_000_000 { return "--keys must be between 1 and 10^12" }
        if valueBytes < 0 || valueBytes > 64 << 20 { return "--value-bytes must be between 0 and 64 MiB" }
        if !(0...1).contains(readRatio) { return "--read-ratio must be between 0 and 1" }
        if !(durationSeconds > 0) { return "--duration must be positive" }
        if !(warmupSeconds >= 0) { return "--warmup must not be negative" }
        if threads < 1 { return "--threads must be at least 1" }
        if uids < 1 { return "--uids must be at least 1" }
        return nil
    }
}

/// What a load run measured.
public struct LoadResult: Sendable {
    /// Requests answered (any reply, errors included) that were sent after the warm-up and
    /// answered before the end.
    public var operations = 0
    /// Error replies among `operations`, plus requests lost to closed connections and timeouts.
    public var errors = 0
    /// Null replies (GET of a missing key) among `operations`.
    public var nullReplies = 0
    /// Requests still unanswered `drainSeconds` after the end.
    public var timeouts = 0
    /// The first error seen, for the report.
    public var firstError: String?
    /// Length of the measured window.
    public var seconds = 0.0
    /// Latency of each counted request in nanoseconds, from the write of its batch to its reply.
    public var latency = LoadResult.makeHistogram()
    /// CPU the generator's own process used during the window.
    public var clientUserSeconds = 0.0
    public var clientSystemSeconds = 0.0
    /// CPU the `--server-pid` processes used during the window (nil if none were given).
    public var serverCPUSeconds: Double?
    /// Cores of this machine.
    public var cores = 1
    /// Seconds the prefill took (nil without `--prefill`).
    public var prefillSeconds: Double?

    public init() {}

    public var operationsPerSecond: Double { seconds > 0 ? Double(operations) / seconds : 0 }

    /// Latency at `percentile` (0–100) in milliseconds.
    public func latencyMilliseconds(_ percentile: Double) -> Double {
        latency.totalCount == 0 ? 0 : Double(latency.valueAtPercentile(percentile)) / 1e6
    }

    /// 1 µs to 60 s at three significant digits.
    static func makeHistogram() -> Histogram<UInt64> {
        Histogram(
            lowestDiscernibleValue: 1_000, highestTrackableValue: 60_000_000_000,
            numberOfSignificantValueDigits: .three)
    }

    mutating func merge(_ other: LoadResult) {
        operations += other.operations
        errors += other.errors
        nullReplies += other.nullReplies
        timeouts += other.timeouts
        firstError = firstError ?? other.firstError
        latency.add(other.latency)
    }

    /// Human-readable report.
    public func report(title: String) -> String {
        var lines = [title]
        lines.append(
            "  ops/s       \(format(operationsPerSecond, 0))  (\(operations) ops in \(format(seconds, 2)) s; "
                + "\(errors) errors; \(nullReplies) null replies; \(timeouts) timeouts)")
        lines.append(
            "  latency ms  p50 \(format(latencyMilliseconds(50), 3))  p99 \(format(latencyMilliseconds(99), 3))  "
                + "p99.9 \(format(latencyMilliseconds(99.9), 3))  max \(format(latencyMilliseconds(100), 3))")
        let cpu = clientUserSeconds + clientSystemSeconds
        lines.append(
            "  client CPU  \(format(clientUserSeconds, 2)) s user + \(format(clientSystemSeconds, 2)) s sys = "
                + "\(format(100 * cpu / max(seconds, 1e-9), 0))% of one core (this machine: \(cores) cores)")
        if let server = serverCPUSeconds {
            lines.append("  server CPU  \(format(100 * server / max(seconds, 1e-9), 0))% of one core")
        }
        if let firstError { lines.append("  first error \(firstError)") }
        if let prefillSeconds {
            lines.append(
                "  prefill     every key written once in \(format(prefillSeconds, 1)) s, before the warm-up")
        }
        return lines.joined(separator: "\n")
    }

    /// One JSON object (for scripts/bench-peers).
    public func json(target: String, options: LoadOptions) -> String {
        let cpu = clientUserSeconds + clientSystemSeconds
        var fields: [(String, String)] = [
            ("target", quote(target)), ("command", quote(options.command.rawValue)),
            ("hot_key", options.hotKey ? "true" : "false"), ("connections", "\(options.connections)"),
            ("pipeline", "\(options.pipeline)"), ("value_bytes", "\(options.valueBytes)"),
            ("seconds", format(seconds, 3)), ("operations", "\(operations)"),
            ("ops_per_sec", format(operationsPerSecond, 1)), ("errors", "\(errors)"),
            ("null_replies", "\(nullReplies)"), ("timeouts", "\(timeouts)"),
            ("p50_ms", format(latencyMilliseconds(50), 3)), ("p99_ms", format(latencyMilliseconds(99), 3)),
            ("p999_ms", format(latencyMilliseconds(99.9), 3)),
            ("max_ms", format(latencyMilliseconds(100), 3)),
            ("client_cpu_percent", format(100 * cpu / max(seconds, 1e-9), 1)), ("cores", "\(cores)"),
        ]
        if let server = serverCPUSeconds {
            fields.append(("server_cpu_percent", format(100 * server / max(seconds, 1e-9), 1)))
        }
        if let firstError { fields.append(("first_error", quote(firstError))) }
        if let prefillSeconds { fields.append(("prefill_seconds", format(prefillSeconds, 2))) }
        return "{" + fields.map { "\"\($0.0)\": \($0.1)" }.joined(separator: ", ") + "}"
    }
}

/// Fixed-point text without Foundation.
func format(_ value: Double, _ decimals: Int) -> String {
    guard value.isFinite else { return "\(value)" }
    var scale = 1.0
    for _ in 0..<decimals { scale *= 10 }
    let scaled = (abs(value) * scale).rounded()
    guard scaled < 9e18 else { return "\(value)" }
    let n = UInt64(scaled)
    let whole = n / UInt64(scale)
    let fraction = n % UInt64(scale)
    var text = (value < 0 && n > 0 ? "-" : "") + String(whole)
    if decimals > 0 {
        let digits = String(fraction)
        text += "." + String(repeating: "0", count: decimals - digits.count) + digits
    }
    return text
}

func quote(_ text: String) -> String {
    var out = "\""
    for scalar in text.unicodeScalars {
        switch scalar {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case _ where scalar.value < 0x20:
            let hex = String(scalar.value, radix: 16)
            out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
        default: out.unicodeScalars.append(scalar)
        }
    }
    return out + "\""
}
