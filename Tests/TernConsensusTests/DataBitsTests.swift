import TernConsensus
import TernCore
import Testing

private func b(_ s: String) -> [UInt8] { Array(s.utf8) }
private func cmd(_ s: String) -> [[UInt8]] { s.split(separator: " ").map { Array($0.utf8) } }

@discardableResult
private func apply(_ v: inout KeyValue, _ args: [[UInt8]]) -> DataReply {
    let i = (v.recent.last?.instance ?? 0) + 1
    v = v.applying([(.data(args), RequestID(client: 1, counter: i))], window: 8, instance: i, horizonMs: 0)
    guard case .data(let r) = v.recent.last?.result else { return .error("no result") }
    return r
}
@discardableResult
private func apply(_ v: inout KeyValue, _ line: String) -> DataReply { apply(&v, cmd(line)) }
private func read(_ v: KeyValue, _ line: String) -> DataReply {
    let s: StoredValue? = v.bytes.map { StoredValue(kind: v.kind, deadlineMs: v.deadlineMs, bytes: $0) }
    return DataModel.read(cmd(line), s, nowMs: 0)
}
private let wrongType = DataReply.error("WRONGTYPE Operation against a key holding the wrong kind of value")

/// SETBIT GETBIT BITCOUNT BITPOS, BITOP's and LCS's arithmetic, and the conditional one-key steps of
/// the commands across keys (DataBits.swift), against Redis 7.0.15's answers.
@Suite struct DataBitsTests {
    @Test("SETBIT/GETBIT: Redis's bit order (bit 0 is the first byte's high bit), growth with zeros")
    func setAndGetBits() {
        var v = KeyValue()
        #expect(read(v, "getbit k 0") == .integer(0))
        #expect(apply(&v, "setbit k 1 1") == .integer(0))
        #expect(v.bytes == [0b0100_0000] && v.kind == .string)
        // "@" is 0100 0000 (Redis's "SETBIT against string-encoded key").
        apply(&v, "set k @")
        #expect(apply(&v, "setbit k 2 1") == .integer(0))
        #expect(v.bytes == [0b0110_0000])
        #expect(apply(&v, "setbit k 1 0") == .integer(1))
        #expect(v.bytes == [0b0010_0000])
        #expect(apply(&v, "setbit k 17 1") == .integer(0))
        #expect(v.bytes == [0b0010_0000, 0, 0b0100_0000])
        #expect(read(v, "getbit k 2") == .integer(1))
        #expect(read(v, "getbit k 17") == .integer(1))
        #expect(read(v, "getbit k 10000") == .integer(0))
        var l = KeyValue()
        apply(&l, "rpush l a")
        #expect(apply(&l, "setbit l 0 1") == wrongType)
        #expect(read(l, "getbit l 0") == wrongType)
    }

    @Test("BITCOUNT and BITPOS with BYTE and BIT ranges, negatives from the end, absent keys")
    func countAndPosition() {
        var v = KeyValue()
        #expect(read(v, "bitcount k") == .integer(0))
        #expect(read(v, "bitpos k 1") == .integer(-1))
        #expect(read(v, "bitpos k 0") == .integer(0))
        apply(&v, "set k foobar")
        // Redis's documented examples.
        #expect(read(v, "bitcount k") == .integer(26))
        #expect(read(v, "bitcount k 0 0") == .integer(4))
        #expect(read(v, "bitcount k 1 1") == .integer(6))
        #expect(read(v, "bitcount k 1 1 byte") == .integer(6))
        #expect(read(v, "bitcount k 5 30 bit") == .integer(17))
        #expect(read(v, "bitcount k -2 -1") == .integer(7))
        #expect(read(v, "bitcount k 4 2") == .integer(0))
        apply(&v, cmd("set k") + [[0xff, 0xf0, 0x00]])
        #expect(read(v, "bitpos k 0") == .integer(12))
        #expect(read(v, "bitpos k 1 2") == .integer(-1))
        #expect(read(v, "bitpos k 0 2 -1 byte") == .integer(16))
        #expect(read(v, "bitpos k 1 7 15 bit") == .integer(7))
        // A clear bit past the string counts without an explicit end only.
        apply(&v, cmd("set k") + [[0xff, 0xff]])
        #expect(read(v, "bitpos k 0") == .integer(16))
        #expect(read(v, "bitpos k 0 0 -1") == .integer(-1))
        // An existing empty string holds no bit at all (an absent key: a clear bit at 0).
        apply(&v, cmd("set k") + [[]])
        #expect(read(v, "bitpos k 0") == .integer(-1))
        #expect(read(v, "bitpos k 1") == .integer(-1))
    }

    @Test("BITOP: AND OR XOR pad the shorter inputs with zeros; NOT flips")
    func bitop() {
        #expect(DataModel.bitop("and", [[0xff, 0x0f], [0xf0]]) == [0xf0, 0x00])
        #expect(DataModel.bitop("or", [[0x01], [0x10, 0x01]]) == [0x11, 0x01])
        #expect(DataModel.bitop("xor", [[0xff], [0x0f], []]) == [0xf0])
        #expect(DataModel.bitop("not", [[0x0f, 0xff]]) == [0xf0, 0x00])
        #expect(DataModel.bitop("and", [[], []]) == [])
    }

    @Test("LCS: Redis's subsequence and match ranges (its own examples)")
    func lcs() {
        let r = DataModel.lcs(b("ohmytext"), b("mynewtext"))
        #expect(r.sequence == b("mytext"))
        #expect(
            r.matches.map { [$0.a.lowerBound, $0.a.upperBound, $0.b.lowerBound, $0.b.upperBound] } == [
                [4, 7, 5, 8], [2, 3, 0, 1],
            ])
        #expect(DataModel.lcs([], b("abc")).sequence == [])
        #expect(DataModel.lcs(b("abc"), b("xyz")).matches.isEmpty)
    }

    @Test("lpopif takes an end only while it holds the element; delifeq deletes only its own value")
    func conditionalSteps() {
        var l = KeyValue()
        apply(&l, "rpush l a b c")
        #expect(apply(&l, "lpopif l left b") == .bulk(nil))
        #expect(apply(&l, "lpopif l right c") == .bulk(b("c")))
        #expect(apply(&l, "lpopif l left a") == .bulk(b("a")))
        #expect(apply(&l, "lpopif l left b") == .bulk(b("b")))
        #expect(l.bytes == nil)
        #expect(apply(&l, "lpopif l left b") == .bulk(nil))
        var s = KeyValue()
        apply(&s, "set s v")
        #expect(apply(&s, "delifeq s w") == .integer(0))
        #expect(apply(&s, "delifeq s v") == .integer(1))
        #expect(s.bytes == nil)
        apply(&s, "set s v pxat 99999")
        #expect(apply(&s, "delifeq s v") == .integer(0))
        #expect(apply(&s, "lpopif s left v") == wrongType)
    }
}
