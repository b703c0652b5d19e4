import TernCore
import Testing

@testable import TernConsensus

/// The stream codec's shortcuts (StreamCodec.swift): an encoding that copies the entries it kept
/// from the previous encoding is byte for byte the plain encoding, with the same entry places,
/// and a run of writes through the cache answers and encodes exactly as without it.
@Suite struct StreamCodecTests {
    private func b(_ s: String) -> [UInt8] { Array(s.utf8) }

    /// A write as the server normalises it, applied as one instance of its own.
    private func write(_ v: inout KeyValue, _ words: [String], now: UInt64) -> DataReply {
        var a = words.map { Array($0.utf8) }
        a.insert(contentsOf: [b(String(now)), b("0")], at: 2)
        let i = (v.recent.last?.instance ?? 0) + 1
        v = v.applying([(.data(a), RequestID(client: 1, counter: i))], window: 8, instance: i)
        guard case .data(let r) = v.recent.last?.result else { return .error("no result") }
        return r
    }

    /// The plain encoding of `s`, and its entries' places as decoding finds them.
    private func plain(_ s: StreamValue) -> EncodedStream {
        StreamCodec.encode(s, reusing: nil)
    }

    @Test("Reusing the previous encoding gives the plain encoding's bytes and entry places")
    func reuse() {
        var rng = SplitMix64(seed: 7)
        var s = StreamValue()
        s.groups = [StreamValue.Group(name: b("g"), lastID: .zero, entriesRead: 0)]
        var old = plain(s)
        var ms: UInt64 = 1
        for step in 0..<600 {
            switch rng.next() % 7 {
            case 0, 1, 2:
                ms += 1 + rng.next() % 3
                let n = 1 + Int(rng.next() % 3)
                let fields = (0..<(2 * n)).map { k in b("f\(k)-\(rng.next() % 1000)") }
                s.entries.append(StreamValue.Entry(id: StreamID(ms, 0), fields: fields))
                s.lastID = StreamID(ms, 0)
                s.entriesAdded += 1
            case 3:
                if !s.entries.isEmpty { s.entries.remove(at: Int(rng.next() % UInt64(s.entries.count))) }
            case 4:
                s.entries.removeFirst(min(s.entries.count, Int(rng.next() % 4)))
            case 5:
                // The same id again with other fields (XDEL of the top entry, XSETID back, XADD).
                if let last = s.entries.last {
                    s.entries[s.entries.count - 1] = StreamValue.Entry(
                        id: last.id, fields: [b("x"), b("\(step)")])
                }
            default:
                s.groups[0].pending.append(
                    StreamValue.Pending(id: StreamID(ms, 0), consumer: b("c"), deliveryMs: ms, deliveries: 1))
            }
            let reused = StreamCodec.encode(s, reusing: old)
            let fresh = plain(s)
            #expect(reused.bytes == fresh.bytes)
            #expect(reused.starts == fresh.starts)
            #expect(StreamCodec.decode(reused.bytes)?.starts == fresh.starts)
            #expect(StreamValue(reused.bytes) == s)
            // Sometimes from a decoded copy (fields are other arrays, equal bytes).
            old = rng.next() % 4 == 0 ? StreamCodec.decode(reused.bytes)! : reused
        }
    }

    @Test("A queue's writes through the cache answer and encode as the plain codec would")
    func queue() {
        var v = KeyValue()
        #expect(write(&v, ["xgroup", "q", "create", "g", "$", "mkstream"], now: 1) == .ok)
        for round in 0..<40 {
            let now = UInt64(100 + round)
            for k in 0..<3 { _ = write(&v, ["xadd", "q", "*", "t", "\(round).\(k)"], now: now) }
            let got = write(&v, ["xreadgroup", "q", "g", "c\(round % 2)", "2", "0", ">"], now: now)
            guard case .array(let entries?) = got else {
                Issue.record("nothing delivered at round \(round): \(got)")
                return
            }
            for e in entries {
                guard case .array(let parts?) = e, case .bulk(let id?) = parts[0] else { continue }
                #expect(
                    write(&v, ["xack", "q", "g", String(decoding: id, as: UTF8.self)], now: now)
                        == .integer(1))
                #expect(
                    write(&v, ["xdel", "q", String(decoding: id, as: UTF8.self)], now: now) == .integer(1))
            }
            // Nothing new for another group's consumer: an empty take leaves the value as it is.
            if round % 10 == 0 {
                let before = v.bytes
                _ = write(&v, ["xgroup", "q", "create", "h\(round)", "$"], now: now)
                let after = v.bytes
                #expect(
                    write(&v, ["xreadgroup", "q", "h\(round)", "c", "1", "0", ">"], now: now) == .array(nil))
                #expect(v.bytes == after && before != after)
            }
            // The value is the plain encoding of what it decodes to.
            let s = StreamCodec.decode(v.bytes!)!
            #expect(StreamCodec.encode(s.value, reusing: nil).bytes == v.bytes!)
        }
        let s = StreamValue(v.bytes!)!
        #expect(s.entriesAdded == 120 && s.entries.count == 120 - 80)
        #expect(s.groups.first { $0.name == b("g") }?.pending.isEmpty == true)
    }
}
