import TernConsensus
import TernCore
import TernServer
import Testing

/// Per-stream and per-group gauges on /metrics (docs/QUEUE.md, "Metrics").
@Suite(.timeLimit(.minutes(1))) struct StreamMetricsTests {
    @Test("The exposition: one family at a time, labels stream and group, names escaped")
    func exposition() {
        let streams = [
            StreamMetrics.Stream(
                key: b("jobs"),
                summary: .init(
                    length: 12,
                    groups: [
                        .init(name: b("mail"), backlog: 0, pending: 1, consumers: 1),
                        .init(name: b("workers"), backlog: 5, pending: 3, consumers: 2),
                    ])),
            StreamMetrics.Stream(key: b("odd\"name\\\n"), summary: .init(length: 0, groups: [])),
        ]
        let text = StreamMetrics.exposition(streams, labels: "node=\"1\",campus=\"A\"", dropped: 4)
        let lines = text.split(separator: "\n").map(String.init)
        let samples = lines.filter { !$0.hasPrefix("#") }
        #expect(
            samples == [
                "tern_stream_metrics_streams{node=\"1\",campus=\"A\"} 2.0",
                "tern_stream_metrics_dropped_total{node=\"1\",campus=\"A\"} 4.0",
                "tern_stream_length{node=\"1\",campus=\"A\",stream=\"jobs\"} 12.0",
                "tern_stream_length{node=\"1\",campus=\"A\",stream=\"odd\\\"name\\\\\\n\"} 0.0",
                "tern_stream_group_backlog{node=\"1\",campus=\"A\",stream=\"jobs\",group=\"mail\"} 0.0",
                "tern_stream_group_backlog{node=\"1\",campus=\"A\",stream=\"jobs\",group=\"workers\"} 5.0",
                "tern_stream_group_pending{node=\"1\",campus=\"A\",stream=\"jobs\",group=\"mail\"} 1.0",
                "tern_stream_group_pending{node=\"1\",campus=\"A\",stream=\"jobs\",group=\"workers\"} 3.0",
                "tern_stream_group_consumers{node=\"1\",campus=\"A\",stream=\"jobs\",group=\"mail\"} 1.0",
                "tern_stream_group_consumers{node=\"1\",campus=\"A\",stream=\"jobs\",group=\"workers\"} 2.0",
            ], "\(text)")
        // Every family has its HELP and TYPE once, before its samples.
        for name in [
            "tern_stream_metrics_streams", "tern_stream_metrics_dropped_total", "tern_stream_length",
            "tern_stream_group_backlog", "tern_stream_group_pending", "tern_stream_group_consumers",
        ] {
            #expect(lines.filter { $0.hasPrefix("# TYPE \(name) ") }.count == 1, "\(name)")
            let type = lines.firstIndex { $0.hasPrefix("# TYPE \(name) ") } ?? .max
            let first = lines.firstIndex { $0.hasPrefix(name + "{") } ?? -1
            #expect(type < first, "\(name)")
        }
        // No stream: only the registry's two.
        #expect(
            StreamMetrics.exposition([], labels: "node=\"2\"", dropped: 0).split(separator: "\n").filter {
                !$0.hasPrefix("#")
            } == [
                "tern_stream_metrics_streams{node=\"2\"} 0.0",
                "tern_stream_metrics_dropped_total{node=\"2\"} 0.0",
            ])
    }

    @Test("The registry keeps the 100 most recently written streams and counts those it drops")
    func registryBound() {
        var r = StreamRegistry()
        for i in 0..<StreamRegistry.streamsMax { r.note(b("s\(i)")) }
        r.note(b("s0"))  // s0 written again: s1 is now the oldest
        #expect(r.dropped == 0 && r.keys.count == StreamRegistry.streamsMax)
        r.note(b("new"))
        #expect(r.dropped == 1 && r.keys.count == StreamRegistry.streamsMax)
        #expect(r.keys.contains(b("s0")) && r.keys.contains(b("new")) && !r.keys.contains(b("s1")))
        r.forget(b("new"))
        #expect(r.keys.count == StreamRegistry.streamsMax - 1 && r.keys.first == b("s0"))
    }

    @Test("Through a cluster: every replica exports the stream's gauges; a deleted stream leaves them")
    func cluster() async throws {
        let c = try await LoopbackCluster.start(perCampus: 1)
        let n = c.nodes[NodeID(1)]!
        func write(_ args: String) async -> NodeReply {
            var a = args.split(separator: " ").map { Array($0.utf8) }
            a.insert(contentsOf: [b("1000"), b("0")], at: 2)
            return await n.execute(key: a[1], .write(.data(a)))
        }
        for i in 1...4 { _ = await write("xadd q \(i)-0 f v") }
        _ = await write("xgroup q create g 0")
        _ = await write("xreadgroup q g w 1 0 >")
        _ = await write("xadd other 1-0 f v")
        #expect(await n.execute(key: b("plain"), .write(.put(b("x")))) == .done(.ok))
        let labels = "node=\"x\""
        var text = await StreamMetrics.text(node: n, labels: labels)
        #expect(text.contains("tern_stream_metrics_streams{node=\"x\"} 2.0"), "\(text)")
        #expect(text.contains("tern_stream_length{node=\"x\",stream=\"q\"} 4.0"), "\(text)")
        #expect(
            text.contains("tern_stream_group_backlog{node=\"x\",stream=\"q\",group=\"g\"} 3.0"), "\(text)")
        #expect(
            text.contains("tern_stream_group_pending{node=\"x\",stream=\"q\",group=\"g\"} 1.0"), "\(text)")
        #expect(!text.contains("plain"))
        // The other replicas hold the stream too (they wrote its accepted records).
        for other in c.nodes.values where other !== n {
            var seen = ""
            for _ in 0..<50 {
                seen = await StreamMetrics.text(node: other, labels: labels)
                if seen.contains("tern_stream_group_pending{node=\"x\",stream=\"q\",group=\"g\"} 1.0") {
                    break
                }
                try await Task.sleep(for: .milliseconds(20))
            }
            #expect(seen.contains("tern_stream_length{node=\"x\",stream=\"q\"} 4.0"), "\(seen)")
        }
        #expect(
            await n.execute(key: b("other"), .write(.data([b("del"), b("other")])))
                == .done(.data(.integer(1))))
        text = await StreamMetrics.text(node: n, labels: labels)
        #expect(
            text.contains("tern_stream_metrics_streams{node=\"x\"} 1.0") && !text.contains("other"), "\(text)"
        )
        await c.stop()
    }
}
