import Foundation

#if canImport(Glibc)
    // With swift-nio-ssl in the build graph, `timespec` is seen through CoreFoundation's module.
    import CoreFoundation
    import Glibc
#endif

/// A progress line for long work (`tern sim`, `tern bench`, `tern repair now`, `tern demo`), on
/// stderr so that stdout stays the result: on a terminal one line rewritten in place a few times
/// a second; otherwise (CI logs, a pipe) a plain line every `plainIntervalSeconds`. It shows what
/// is done of what, the rate and the time left (from the count, or from a known duration).
final class Progress: @unchecked Sendable {
    // @unchecked Sendable: every mutable field is guarded by `lock` (the ticker of `every` runs on
    // another thread than the work).
    let label: String
    let unit: String
    /// Guarded by `lock` (a total learnt while working, as `repair now`'s buckets, may change).
    private var total: Int?
    let seconds: Double?
    let tty: Bool
    let intervalSeconds: Double
    private let lock = NSLock()
    private let start = Progress.now()
    private var lastPrint = -Double.infinity
    private var lastWidth = 0
    private var ticker: Task<Void, Never>?

    /// `total`: the count the work ends at (seeds); `seconds`: how long it runs when it ends by the
    /// clock instead (a load run). `tty`: nil asks isatty(stderr).
    init(
        _ label: String, unit: String = "", total: Int? = nil, seconds: Double? = nil, tty: Bool? = nil,
        plainIntervalSeconds: Double = 5
    ) {
        self.label = label
        self.unit = unit
        self.total = total
        self.seconds = seconds
        self.tty = tty ?? (isatty(STDERR_FILENO) == 1)
        intervalSeconds = self.tty ? 0.2 : plainIntervalSeconds
    }

    static func now() -> Double {
        var t = timespec()
        clock_gettime(CLOCK_MONOTONIC, &t)
        return Double(t.tv_sec) + Double(t.tv_nsec) / 1e9
    }

    /// The line for `done` units after `elapsed` seconds, with `detail` appended.
    func line(done: Int?, elapsed: Double, detail: String) -> String {
        var parts = [label]
        if let done {
            parts.append(total.map { "\(done)/\($0)\(unit.isEmpty ? "" : " " + unit)" } ?? "\(done) \(unit)")
            if elapsed > 0 {
                parts.append(
                    String(format: "%.1f %@/s", Double(done) / elapsed, unit.isEmpty ? "items" : unit))
            }
        }
        var left: Double?
        if let total, let done, done > 0 {
            left = elapsed / Double(done) * Double(max(0, total - done))
        } else if let seconds {
            left = max(0, seconds - elapsed)
        }
        parts.append(
            String(format: "%.0f s", elapsed) + (left.map { String(format: ", eta %.0f s", $0) } ?? ""))
        if !detail.isEmpty { parts.append(detail) }
        return parts.joined(separator: " · ")
    }

    /// Reports `done` (nil: no count, only time) of `total` (when learnt only now); prints if the
    /// interval passed (or `force`).
    func update(done: Int?, of total: Int? = nil, detail: String = "", force: Bool = false) {
        let t = Self.now()
        lock.withLock {
            if let total { self.total = total }
            guard force || t - lastPrint >= intervalSeconds else { return }
            lastPrint = t
            write(line(done: done, elapsed: t - start, detail: detail))
        }
    }

    private func write(_ text: String) {
        if tty {
            // Pad over the previous line's tail; no newline until `finish`.
            let pad = max(0, lastWidth - text.count)
            FileHandle.standardError.write(Data(("\r" + text + String(repeating: " ", count: pad)).utf8))
            lastWidth = text.count
        } else {
            FileHandle.standardError.write(Data((text + "\n").utf8))
        }
    }

    /// Prints a line every interval from a background task until `finish` (work that ends by the
    /// clock and reports no count, or a count read by `count`).
    func every(_ count: (@Sendable () -> Int?)? = nil, detail: (@Sendable () -> String)? = nil) {
        let interval = intervalSeconds
        ticker = Task { [weak self] in
            while !Task.isCancelled {
                try? await Task.sleep(nanoseconds: UInt64(interval * 1e9))
                guard let self, !Task.isCancelled else { return }
                self.update(done: count?(), detail: detail?() ?? "")
            }
        }
    }

    /// Prints `text` as a line of its own on stdout (a milestone), above the progress line.
    func note(_ text: String) {
        lock.withLock {
            if tty && lastWidth > 0 {
                FileHandle.standardError.write(
                    Data(("\r" + String(repeating: " ", count: lastWidth) + "\r").utf8))
                lastWidth = 0
            }
            print(text)
            fflush(nil)
        }
    }

    /// Ends the line: on a terminal the in-place line is cleared (the caller prints its result).
    func finish() {
        ticker?.cancel()
        lock.withLock {
            if tty && lastWidth > 0 {
                FileHandle.standardError.write(
                    Data(("\r" + String(repeating: " ", count: lastWidth) + "\r").utf8))
                lastWidth = 0
            }
        }
    }
}
