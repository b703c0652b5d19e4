import NIOCore
import TernConsensus

/// The streams a node holds, for `/metrics` (docs/QUEUE.md, "Metrics"): every key whose chosen
/// value is a stream and of which the node wrote a record (its own writes and, as a replica,
/// its peers') or loaded it since it started. At most `streamsMax` are kept, the most recently
/// written ones: a scrape reads each kept stream's value, so its cost is bounded whatever the
/// number of streams. Not thread-safe: the node keeps it on its event loop.
public struct StreamRegistry {
    /// Streams exported at most.
    public static let streamsMax = 100
    /// Groups exported per stream at most (in name order).
    public static let groupsMax = 32

    /// Key → when it was last noted.
    private var stamps: [[UInt8]: UInt64] = [:]
    private var clock: UInt64 = 0
    /// Streams left out to stay within `streamsMax` (a counter: it keeps rising while more
    /// streams than that are busy).
    public private(set) var dropped = 0

    /// `key` holds a stream now: keep it, dropping the least recently noted one if full.
    public init() {}

    public mutating func note(_ key: [UInt8]) {
        clock += 1
        if stamps[key] != nil {
            stamps[key] = clock
            return
        }
        if stamps.count >= Self.streamsMax, let oldest = stamps.min(by: { $0.value < $1.value })?.key {
            stamps[oldest] = nil
            dropped += 1
        }
        stamps[key] = clock
    }

    /// `key` no longer holds a stream.
    public mutating func forget(_ key: [UInt8]) { stamps[key] = nil }

    /// The kept keys, in byte order.
    public var keys: [[UInt8]] { stamps.keys.sorted { $0.lexicographicallyPrecedes($1) } }
}

/// The Prometheus text of the streams' gauges.
public enum StreamMetrics {
    /// One stream as a scrape found it.
    public struct Stream: Sendable {
        public var key: [UInt8]
        public var summary: StreamValue.Summary
        public init(key: [UInt8], summary: StreamValue.Summary) {
            self.key = key
            self.summary = summary
        }
    }

    /// The gauges, a family at a time (Prometheus wants a family's samples together):
    /// `tern_stream_length{stream}`, `tern_stream_group_backlog{stream,group}`,
    /// `tern_stream_group_pending{stream,group}`, `tern_stream_group_consumers{stream,group}`, and
    /// the registry's own `tern_stream_metrics_streams` and `tern_stream_metrics_dropped_total`.
    /// `labels`: the node's labels (`node="1",campus="A"`).
    public static func exposition(_ streams: [Stream], labels: String, dropped: Int) -> String {
        var out = ""
        func family(_ name: String, _ help: String, _ type: String = "gauge") {
            out += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n"
        }
        family(
            "tern_stream_metrics_streams",
            "Streams this node exports below (those it holds, at most \(StreamRegistry.streamsMax), docs/QUEUE.md)."
        )
        out += "tern_stream_metrics_streams{\(labels)} \(Double(streams.count))\n"
        family(
            "tern_stream_metrics_dropped_total",
            "Streams left out of the stream gauges because more than \(StreamRegistry.streamsMax) were written.",
            "counter")
        out += "tern_stream_metrics_dropped_total{\(labels)} \(Double(dropped))\n"
        guard !streams.isEmpty else { return out }
        family("tern_stream_length", "Entries in the stream (XLEN).")
        for s in streams {
            out +=
                "tern_stream_length{\(labels),stream=\"\(labelValue(s.key))\"} \(Double(s.summary.length))\n"
        }
        let rows: [(name: String, help: String, value: (StreamValue.Summary.Group) -> Int)] = [
            (
                "tern_stream_group_backlog",
                "Entries after the group's last-delivered id, not yet delivered to any of its consumers (its lag).",
                { $0.backlog }
            ),
            (
                "tern_stream_group_pending",
                "Entries delivered to the group's consumers and not acknowledged (XPENDING's count).",
                { $0.pending }
            ),
            ("tern_stream_group_consumers", "Consumers of the group.", { $0.consumers }),
        ]
        guard streams.contains(where: { !$0.summary.groups.isEmpty }) else { return out }
        for row in rows {
            family(row.name, row.help)
            for s in streams {
                let stream = labelValue(s.key)
                for g in s.summary.groups.prefix(StreamRegistry.groupsMax) {
                    out +=
                        "\(row.name){\(labels),stream=\"\(stream)\",group=\"\(labelValue(g.name))\"} "
                        + "\(Double(row.value(g)))\n"
                }
            }
        }
        return out
    }

    /// A key or group name as a Prometheus label value: UTF-8 (bytes that are not become
    /// U+FFFD), with `\`, `"` and newlines escaped.
    public static func labelValue(_ bytes: [UInt8]) -> String {
        var out = ""
        for ch in String(decoding: bytes, as: UTF8.self) {
            switch ch {
            case "\\": out += "\\\\"
            case "\"": out += "\\\""
            case "\n": out += "\\n"
            default: out.append(ch)
            }
        }
        return out
    }

    /// The gauges of the streams `node` holds now. The values are taken on the node's loop (a
    /// reference each); their summaries are computed here, off the loop.
    public static func text(node: Node, labels: String) async -> String {
        let (values, dropped) = await node.streamValues()
        let streams = values.compactMap { v in
            StreamValue.summary(v.bytes).map { Stream(key: v.key, summary: $0) }
        }
        return exposition(streams, labels: labels, dropped: dropped)
    }
}

extension Node {
    /// Notes which of `keys` (written or loaded just now) hold streams. On the loop.
    func noteStreams(_ keys: [[UInt8]]) {
        for k in keys where k.first != 0 && core.replica.chosenKind(of: k) == .stream {
            streams.note(k)
        }
    }

    /// The chosen values of the streams this node holds (`StreamRegistry`), and how many were
    /// dropped at its bound. A kept key that no longer holds a stream is forgotten; one evicted
    /// from memory (past keys_loaded_max) is skipped until it is loaded again.
    func streamValues() async -> (values: [(key: [UInt8], bytes: [UInt8])], dropped: Int) {
        let promise = eventLoop.makePromise(of: ([([UInt8], [UInt8])], Int).self)
        eventLoop.execute {
            var out: [([UInt8], [UInt8])] = []
            for k in self.streams.keys {
                guard let r = self.core.replica.inspect(k) else { continue }
                guard r.state.value.kind == .stream, let bytes = r.state.value.bytes else {
                    self.streams.forget(k)
                    continue
                }
                out.append((k, bytes))
            }
            promise.succeed((out, self.streams.dropped))
        }
        guard let (values, dropped) = try? await promise.futureResult.get() else { return ([], 0) }
        return (values.map { (key: $0.0, bytes: $0.1) }, dropped)
    }
}
