import Foundation
import NIOCore
import TernCheck
import TernCore
import TernRESP
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Successful completions, by the node the client talks to (for the gaps on the survivors).
final class Completions: @unchecked Sendable {
    // @unchecked Sendable: `times` is guarded by `lock`.
    private let lock = NSLock()
    private var times: [(node: NodeID, at: UInt64)] = []
    func add(_ node: NodeID, _ at: UInt64) { lock.withLock { times.append((node, at)) } }
    var all: [(node: NodeID, at: UInt64)] { lock.withLock { times } }

    /// The longest time in `from...to` during which no client of a node other than `victim` got an
    /// answer (the window's edges count as answers).
    func longestGap(excluding victim: NodeID, from: UInt64, to: UInt64) -> UInt64 {
        let t = all.filter { $0.node != victim && $0.at > from && $0.at < to }.map(\.at).sorted()
        var last = from
        var gap: UInt64 = 0
        for x in t + [to] {
            gap = max(gap, x - last)
            last = x
        }
        return gap
    }
}

/// The availability target of issue 10 on real processes: one node killed, paused or cut off, the
/// other two keep serving without a pause (PaxosStore has no leader to elect).
@Suite(.serialized, .timeLimit(.minutes(5))) struct AvailabilityProcessTests {
    @Test(
        "SIGKILL, SIGSTOP and isolate each node in turn under 30 clients on 20 hot keys: the survivors never stop serving for more than 0.35 s; the history is linearizable"
    )
    func faultsOnEachNodeInTurn() async throws {
        let cluster = try ProcessCluster()
        defer { cluster.killAll() }
        try await cluster.startAll()
        let recorder = Recorder()
        let completions = Completions()
        // Ten registers (GET/SET) and ten counters (GET/INCR): an INCR of a string would be an error.
        let keys = (0..<10).map { "reg\($0)" } + (0..<10).map { "cnt\($0)" }
        let stop = NIOLockedValueBoxFlag()
        let nodes = [n1, n2, n3]
        // Each client pauses 10 ms between operations (TERN_AVAIL_THINK_US overrides). Without a
        // pause a release build on a quiet 2-core machine records 236 000–277 000 operations in 60 s
        // (~14 000 per key), and the linearizability checker's search runs out of budget on the
        // registers' histories (many DELs, so many reads of "absent" to place): the verdict is
        // "undecided", not a violation — also on the commit before this one (2026-12-07), and with
        // 25 times the budget one key of 20 stayed undecided after 7.5 min. With the pause the
        // history is ~100 000 operations and 1 800 a second keep the gap measured to a few ms.
        let thinkNanos =
            UInt64(
                ProcessInfo.processInfo.environment["TERN_AVAIL_THINK_US"].flatMap { UInt64($0) } ?? 10_000)
            * 1000
        func worker(_ id: Int, node: NodeID) async {
            var rng = SystemRandomNumberGenerator()
            var seq = 0
            while !stop.value {
                guard let c = try? await cluster.client(node) else {
                    try? await Task.sleep(nanoseconds: 50_000_000)
                    continue
                }
                while !stop.value {
                    seq += 1
                    let key = keys[Int.random(in: 0..<keys.count, using: &rng)]
                    let input: OperationInput
                    switch Int.random(in: 0..<10, using: &rng) {
                    case 0..<4: input = .get
                    case 4: input = .delete
                    default: input = key.hasPrefix("cnt") ? .incr(1) : .put("w\(id)-\(seq)")
                    }
                    let out = await recordedOp(c, client: id, key: key, input: input, recorder: recorder)
                    if out == .unknown { break }  // a new connection: this one may be dead
                    if out != .failed { completions.add(node, nowMicros()) }
                    if thinkNanos > 0 { try? await Task.sleep(nanoseconds: thinkNanos) }
                }
                await c.close()
            }
        }
        var windows: [(fault: String, victim: NodeID, from: UInt64, to: UInt64)] = []
        let started = nowMicros()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for id in 0..<30 { group.addTask { await worker(id, node: nodes[id % 3]) } }
            try await Task.sleep(nanoseconds: 3_000_000_000)
            for victim in nodes {
                let others = nodes.filter { $0 != victim }
                // SIGKILL: down for 3 s, then restarted.
                var from = nowMicros()
                _ = await cluster.signal(victim, SIGKILL)
                try await Task.sleep(nanoseconds: 3_000_000_000)
                cluster.start(victim)
                try await cluster.waitHealthy(victim)
                try await Task.sleep(nanoseconds: 1_500_000_000)
                windows.append(("SIGKILL", victim, from, nowMicros()))
                // SIGSTOP for 6 s: connections stay open, then it resumes with its old memory.
                from = nowMicros()
                cluster.signalNoWait(victim, SIGSTOP)
                try await Task.sleep(nanoseconds: 6_000_000_000)
                cluster.signalNoWait(victim, SIGCONT)
                try await Task.sleep(nanoseconds: 1_500_000_000)
                windows.append(("SIGSTOP", victim, from, nowMicros()))
                // Isolated for 5 s: both survivors drop all traffic with it.
                from = nowMicros()
                for o in others {
                    _ = try await cluster.http("POST", "/fault?peer=\(victim.rawValue)&mode=drop", node: o)
                }
                try await Task.sleep(nanoseconds: 5_000_000_000)
                for o in others {
                    _ = try await cluster.http("POST", "/fault?peer=\(victim.rawValue)&mode=none", node: o)
                }
                try await Task.sleep(nanoseconds: 1_500_000_000)
                windows.append(("isolated", victim, from, nowMicros()))
            }
            // The faults take about 60 s; the load runs at least that long whatever the timing
            // (a run once stopped at 59.98 s).
            let elapsed = nowMicros() - started
            if elapsed < 60_500_000 { try await Task.sleep(nanoseconds: (60_500_000 - elapsed) * 1000) }
            stop.set()
            try await group.waitForAll()
        }
        let seconds = Double(nowMicros() - started) / 1e6
        var worst: UInt64 = 0
        var lines: [String] = []
        for w in windows {
            let gap = completions.longestGap(excluding: w.victim, from: w.from, to: w.to)
            worst = max(worst, gap)
            lines.append("\(w.fault) \(w.victim): \(gap / 1000) ms")
        }
        let history = recorder.all
        let answered = completions.all.count
        print(
            "[availability] \(String(format: "%.0f", seconds)) s of load, \(history.count) ops (\(answered) answered); "
                + "longest gap on the survivors: \(lines.joined(separator: ", "))")
        #expect(seconds >= 60, "at least 60 s of load")
        #expect(worst <= 350_000, "the survivors stopped serving for \(worst / 1000) ms (target 350 ms)")
        let path = cluster.dir + "/../tern-availability-history-\(getpid()).jsonl"
        try HistoryFile.write(history, to: path)
        let verdict = checkLinearizable(history)
        #expect(verdict == .linearizable, "history at \(path): \(verdict)")
        if verdict == .linearizable { try? FileManager.default.removeItem(atPath: path) }
    }
}
