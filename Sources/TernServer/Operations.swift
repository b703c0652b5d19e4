import Foundation
import Logging
import NIOConcurrencyHelpers
import TernCore

/// One recent error for the dashboard: a warning or error the node logged, or an error reply it
/// sent a client. Repeats of the newest entry are counted, not stored again.
public struct RecentError: Sendable, Hashable, Codable {
    /// Unix seconds of the last occurrence.
    public var at: Double
    /// `log` (a logged warning or error) or `reply` (an error reply to a client).
    public var source: String
    public var text: String
    public var count: Int

    public init(at: Double, source: String, text: String, count: Int = 1) {
        self.at = at
        self.source = source
        self.text = text
        self.count = count
    }

    /// Texts are cut to this many characters (a ring of a few entries stays small).
    static let textMax = 240

    /// Adds `text` to `ring` (bounded by `max`): a repeat of the newest entry bumps its count.
    static func record(_ ring: inout [RecentError], source: String, text: String, at: Double, max: Int) {
        let cut = String(text.prefix(textMax))
        if var last = ring.last, last.text == cut, last.source == source {
            last.count += 1
            last.at = at
            ring[ring.count - 1] = last
            return
        }
        ring.append(RecentError(at: at, source: source, text: cut))
        if ring.count > max { ring.removeFirst(ring.count - max) }
    }

    /// The newest `max` of several rings, oldest first.
    static func merge(_ rings: [[RecentError]], max: Int) -> [RecentError] {
        Array(rings.flatMap { $0 }.sorted { $0.at < $1.at }.suffix(max))
    }
}

/// The last warnings and errors the process logged (bounded), for `/status` and the dashboard.
public final class ErrorRing: Sendable {
    private let entries = NIOLockedValueBox<[RecentError]>([])
    let max: Int

    public init(max: Int = 10) { self.max = max }

    public func record(_ text: String, at: Double = Date().timeIntervalSince1970) {
        entries.withLockedValue { RecentError.record(&$0, source: "log", text: text, at: at, max: max) }
    }

    public var recent: [RecentError] { entries.withLockedValue { $0 } }
}

/// A log handler that keeps warnings and worse in an `ErrorRing` (beside the process's own
/// handler, through swift-log's MultiplexLogHandler).
public struct ErrorRingLogHandler: LogHandler {
    let ring: ErrorRing
    public var logLevel: Logger.Level = .warning
    public var metadata: Logger.Metadata = [:]

    public init(ring: ErrorRing) { self.ring = ring }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        guard event.level >= .warning else { return }
        var text = "\(event.level): \(event.message)"
        let all = metadata.merging(event.metadata ?? [:]) { $1 }
        if !all.isEmpty {
            text +=
                " " + all.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
        }
        ring.record(text)
    }
}
