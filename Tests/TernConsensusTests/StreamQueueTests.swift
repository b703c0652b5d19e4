import TernConsensus
import TernCore
import Testing

private func b(_ s: String) -> [UInt8] { Array(s.utf8) }
private func words(_ s: String) -> [[UInt8]] { s.split(separator: " ").map { Array($0.utf8) } }

/// A stream write as the server normalises it (`name key nowMs limit rest…`), applied as a new
/// instance.
@discardableResult
private func w(_ v: inout KeyValue, _ line: String, now: UInt64 = 1000, limit: Int = 0) -> DataReply {
    w(&v, words(line), now: now, limit: limit)
}
@discardableResult
private func w(_ v: inout KeyValue, _ args: [[UInt8]], now: UInt64 = 1000, limit: Int = 0) -> DataReply {
    var a = args
    a.insert(contentsOf: [b(String(now)), b(String(limit))], at: 2)
    let i = (v.recent.last?.instance ?? 0) + 1
    v = v.applying([(.data(a), RequestID(client: 1, counter: i))], window: 8, instance: i)
    guard case .data(let r) = v.recent.last?.result else { return .error("no result") }
    return r
}
private func r(_ v: KeyValue, _ line: String, now: UInt64 = 1000) -> DataReply {
    let s: StoredValue? = v.bytes.map { StoredValue(kind: v.kind, deadlineMs: v.deadlineMs, bytes: $0) }
    return DataModel.read(words(line), s, nowMs: now)
}
private func id(_ s: String) -> DataReply { .bulk(b(s)) }
private func err(_ s: String) -> DataReply { .error("ERR " + s) }

/// The queue's additions on the pure stream value (docs/QUEUE.md): the summary /metrics shows.
@Suite struct StreamQueueTests {
    @Test(
        "The summary /metrics shows: length, and per group backlog after its last-delivered id, pending, consumers"
    )
    func summary() throws {
        var v = KeyValue()
        for i in 1...6 { w(&v, "xadd s \(i)-0 f v\(i)") }
        w(&v, "xgroup s create workers 0")
        w(&v, "xgroup s create late $")
        w(&v, "xgroup s create empty 0")
        // workers: 4 delivered to two consumers, one of them acknowledged; 2 left to deliver.
        w(&v, "xreadgroup s workers w1 3 0 >")
        w(&v, "xreadgroup s workers w2 1 0 >")
        w(&v, "xack s workers 2-0")
        // A deleted entry after the last-delivered id is not backlog (it will never be delivered).
        w(&v, "xdel s 6-0")
        w(&v, "xadd s 7-0 f v7")
        let bytes = try #require(v.bytes)
        let s = try #require(StreamValue.summary(bytes))
        #expect(s.length == 6)
        #expect(
            s.groups == [
                .init(name: b("empty"), backlog: 6, pending: 0, consumers: 0),
                .init(name: b("late"), backlog: 1, pending: 0, consumers: 0),
                .init(name: b("workers"), backlog: 2, pending: 3, consumers: 2),
            ])
        // The same as the decoded value and XINFO GROUPS say.
        let decoded = try #require(StreamValue(bytes))
        #expect(s.length == decoded.entries.count)
        #expect(s.groups.map(\.pending) == decoded.groups.map(\.pending.count))
        guard case .array(let summary?) = r(v, "xpending s workers") else {
            Issue.record("XPENDING")
            return
        }
        #expect(summary.first == .integer(3))
        // Not a stream's bytes: nil, never a crash.
        #expect(StreamValue.summary([1, 2, 3]) == nil)
        #expect(StreamValue.summary(Array(bytes.dropLast(3))) == nil)
        #expect(StreamValue.summary([255, 255, 255, 255]) == nil)
        #expect(StreamValue.summary(StreamValue().encoded) == .init(length: 0, groups: []))
    }
}
