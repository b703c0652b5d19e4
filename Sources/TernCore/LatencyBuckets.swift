/// Latency buckets (Prometheus-style upper bounds), shared by the request latency histograms per
/// command and the fsync latency histogram of `/metrics`, and the p50/p99 of `/status` and the
/// dashboard. Counting one is an array increment where it is measured (docs/OPERATIONS.md).
public enum LatencyBuckets {
    /// Upper bounds in microseconds; one more bucket (+Inf) follows the last.
    public static let boundsMicros: [Int] = [
        100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
        2_500_000, 5_000_000,
    ]
    /// Buckets per histogram (the bounds and +Inf).
    public static var count: Int { boundsMicros.count + 1 }

    /// The bucket of a call that took `micros`.
    @inline(__always)
    public static func index(micros: Int) -> Int {
        var i = 0
        while i < boundsMicros.count && micros > boundsMicros[i] { i += 1 }
        return i
    }

    /// The `q` quantile (0...1) in milliseconds of the calls counted in `buckets` (not cumulative),
    /// interpolated linearly inside its bucket as Prometheus's histogram_quantile does; nil if
    /// empty. A quantile in the +Inf bucket is reported as the last bound.
    public static func quantileMilliseconds(_ buckets: [Int], _ q: Double) -> Double? {
        let total = buckets.reduce(0, +)
        guard total > 0 else { return nil }
        let rank = q * Double(total)
        var seen = 0
        for (i, n) in buckets.enumerated() where n > 0 {
            if Double(seen + n) >= rank {
                guard i < boundsMicros.count else { return Double(boundsMicros.last!) / 1000 }
                let lower = i == 0 ? 0 : Double(boundsMicros[i - 1])
                let upper = Double(boundsMicros[i])
                let inside = (rank - Double(seen)) / Double(n)
                return (lower + (upper - lower) * max(0, min(1, inside))) / 1000
            }
            seen += n
        }
        return Double(boundsMicros.last!) / 1000
    }
}
