import Foundation
import NIOCore
import TernConsensus
import TernCore
import TernPlacement
import TernRESP
import TernSeq
import TernServer
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Clients must not touch the services' keys (`\0seq:…`).
@Suite struct ReservedKeyTests {
    @Test("Redis commands refuse keys that start with a zero byte")
    func refused() {
        let refusal = "-ERR keys starting with a zero byte are reserved for Tern's services\r\n"
        #expect(wire(["GET", "\0seq:0"]) == refusal)
        #expect(wire(["SET", "\0seq:0", "x"]) == refusal)
        #expect(wire(["INCR", "\0x"]) == refusal)
        #expect(wire(["DEL", "a", "\0seq:1"]) == refusal)
        #expect(wire(["MSET", "a", "\0", "\0b", "1"]) == refusal)
        #expect(wire(["MGET", "a", "\0"]) == refusal)
        // A zero byte elsewhere, or as a value, is an ordinary key or value.
        #expect(wire(["MSET", "a", "\0", "b", "1"], replies: [.done(.ok), .done(.ok)]) == "+OK\r\n")
        #expect(wire(["GET", "a\0"], replies: [.value(nil)]) == "$-1\r\n")
    }
}

/// One SEQ.NEXT as a client saw it (microseconds).
struct SeqCall: Sendable {
    var uid: UInt64
    var call: UInt64
    var ret: UInt64
    var value: UInt64
}

final class SeqRecorder: @unchecked Sendable {
    // @unchecked Sendable: guarded by `lock`.
    private let lock = NSLock()
    private var calls: [SeqCall] = []
    private var errors = 0
    func add(_ c: SeqCall) { lock.withLock { calls.append(c) } }
    func failed() { lock.withLock { errors += 1 } }
    var all: [SeqCall] { lock.withLock { calls } }
    var failures: Int { lock.withLock { errors } }
}

/// Per uid: no value twice; a call made after another call's reply got a larger value.
func seqViolations(_ calls: [SeqCall]) -> [String] {
    var out: [String] = []
    for uid in Set(calls.map(\.uid)).sorted() {
        let ops = calls.filter { $0.uid == uid }
        let values = ops.map(\.value).sorted()
        for (a, b) in zip(values, values.dropFirst()) where a == b {
            out.append("uid \(uid): \(a) returned twice")
        }
        let byRet = ops.sorted { $0.ret < $1.ret }
        var p = 0
        var best: SeqCall?
        for b in ops.sorted(by: { $0.call < $1.call }) {
            while p < byRet.count && byRet[p].ret < b.call {
                if best == nil || byRet[p].value > best!.value { best = byRet[p] }
                p += 1
            }
            if let best, b.value <= best.value {
                out.append(
                    "uid \(uid): \(b.value) (call at \(b.call)) after \(best.value) (returned at \(best.ret))"
                )
            }
        }
    }
    return out
}

@Suite struct SeqCheckTests {
    @Test("The cluster test's check flags a repeat and a value going back, and passes a good history")
    func checkCanFail() {
        let good = [
            SeqCall(uid: 1, call: 0, ret: 10, value: 5), SeqCall(uid: 1, call: 11, ret: 20, value: 9),
        ]
        #expect(seqViolations(good).isEmpty)
        // Concurrent calls may come back in any order, but never with the same value.
        let concurrent = [
            SeqCall(uid: 1, call: 0, ret: 10, value: 9), SeqCall(uid: 1, call: 5, ret: 20, value: 5),
        ]
        #expect(seqViolations(concurrent).isEmpty)
        let repeated = [
            SeqCall(uid: 1, call: 0, ret: 10, value: 5), SeqCall(uid: 1, call: 5, ret: 20, value: 5),
        ]
        #expect(seqViolations(repeated).count >= 1)
        let back = [
            SeqCall(uid: 1, call: 0, ret: 10, value: 9), SeqCall(uid: 1, call: 11, ret: 20, value: 5),
        ]
        #expect(seqViolations(back).count == 1)
        // Other uids are independent.
        let twoUIDs = [
            SeqCall(uid: 1, call: 0, ret: 10, value: 9), SeqCall(uid: 2, call: 11, ret: 20, value: 5),
        ]
        #expect(seqViolations(twoUIDs).isEmpty)
    }
}

@Suite(.serialized, .timeLimit(.minutes(4))) struct SeqClusterTests {
    @Test(
        "SEQ.NEXT stays monotonic per uid when the section owner is SIGKILLed mid-load and when every process restarts"
    )
    func ownerKilled() async throws {
        let cluster = try ProcessCluster()
        defer { cluster.killAll() }
        try await cluster.startAll()
        // Argument errors, Redis style.
        let c0 = try await cluster.client(n1)
        #expect(
            try await c0.send(["SEQ.NEXT"]) == .error("ERR wrong number of arguments for 'seq.next' command"))
        #expect(try await c0.send(["SEQ.NEXT", "-1"]) == .error("ERR uid is not an unsigned 64-bit integer"))
        #expect(
            try await c0.send(["SEQ.NEXT", "18446744073709551616"])
                == .error("ERR uid is not an unsigned 64-bit integer"))
        #expect(
            try await c0.send(["SEQ.NEXT", "1", "COUNT", "0"])
                == .error("ERR COUNT must be between 1 and 10000"))
        #expect(try await c0.send(["SEQ.NEXT", "1", "BOGUS", "2"]) == .error("ERR syntax error"))
        #expect(
            try await c0.send(["SEQ.CUR", "1", "2"])
                == .error("ERR wrong number of arguments for 'seq.cur' command"))
        let first = try await c0.send(["SEQ.NEXT", "18446744073709551615", "COUNT", "3"])
        guard case .array(let pair?) = first, pair.count == 2, case .integer(let f) = pair[0],
            case .integer(let l) = pair[1]
        else {
            Issue.record("SEQ.NEXT COUNT gave \(first)")
            return
        }
        #expect(l == f + 2)
        #expect(try await c0.send(["SEQ.CUR", "18446744073709551615"]) == .integer(l))
        await c0.close()

        // uids of section 0; its preferred owner is the section key's replica in campus A.
        let uids: [UInt64] = [1, 2, 3]
        let owner = Ring(map: cluster.map).replicas(for: SeqKeys.sectionKey(0))[.a]
        let others = cluster.map.nodes.map(\.id).filter { $0 != owner }
        let recorder = SeqRecorder()
        let stop = NIOLockedValueBoxFlag()
        let lastOK = NIOLockedMax()
        let pauseMax = NIOLockedMax()
        // 1 while the owner is down: the longest gap between consecutive answers (the first one
        // measured from the kill) is the failover pause.
        let phase = NIOLockedMax()
        // Workers on every node; one whose node dies moves to the next node.
        func worker(_ id: Int, _ stop: NIOLockedValueBoxFlag) async {
            var nodes = id % 3 == 0 ? [owner] + others : others
            if id % 2 == 1 { nodes.reverse() }
            var k = 0
            var client: RESPClient?
            while !stop.value {
                if client == nil {
                    client = try? await cluster.client(nodes[k % nodes.count])
                    if client == nil {
                        k += 1
                        try? await Task.sleep(nanoseconds: 20_000_000)
                        continue
                    }
                }
                let uid = uids[Int.random(in: 0..<uids.count)]
                let call = nowMicros()
                do {
                    let r = try await client!.send(["SEQ.NEXT", "\(uid)"])
                    let ret = nowMicros()
                    if case .integer(let v) = r {
                        recorder.add(SeqCall(uid: uid, call: call, ret: ret, value: UInt64(v)))
                        if phase.value == 1 {
                            let prev = lastOK.value
                            if ret > prev { pauseMax.update(ret - prev) }
                        }
                        lastOK.update(ret)
                    } else {
                        recorder.failed()
                    }
                } catch {
                    recorder.failed()
                    await client?.close()
                    client = nil
                    k += 1
                }
            }
            await client?.close()
        }
        let workers = Task {
            await withTaskGroup(of: Void.self) { g in
                for id in 0..<6 { g.addTask { await worker(id, stop) } }
            }
        }
        try await Task.sleep(nanoseconds: 1_500_000_000)
        let before = recorder.all.count
        let killedAt = nowMicros()
        lastOK.update(killedAt)
        phase.update(1)
        await cluster.signal(owner, SIGKILL)
        try await Task.sleep(nanoseconds: 3_000_000_000)
        let pause = pauseMax.value
        phase.update(2)
        cluster.start(owner)
        try await cluster.waitHealthy(owner)
        try await Task.sleep(nanoseconds: 1_500_000_000)
        stop.set()
        await workers.value
        let afterKill = recorder.all.filter { $0.call > killedAt }.count

        // Restart every process (SIGKILL all, start all): nothing goes back.
        for n in cluster.map.nodes { await cluster.signal(n.id, SIGKILL) }
        try await cluster.startAll()
        let c = try await cluster.client(others[0])
        for uid in uids {
            let call = nowMicros()
            let r = try await c.send(["SEQ.NEXT", "\(uid)"])
            guard case .integer(let v) = r else {
                Issue.record("SEQ.NEXT after the restart gave \(r)")
                continue
            }
            recorder.add(SeqCall(uid: uid, call: call, ret: nowMicros(), value: UInt64(v)))
        }
        await c.close()
        // And load again on the restarted cluster.
        let restartedAt = nowMicros()
        let stop2 = NIOLockedValueBoxFlag()
        let workers2 = Task {
            await withTaskGroup(of: Void.self) { g in
                for id in 0..<6 { g.addTask { await worker(id, stop2) } }
            }
        }
        try await Task.sleep(nanoseconds: 1_000_000_000)
        stop2.set()
        await workers2.value
        let afterRestart = recorder.all.filter { $0.call > restartedAt }.count

        let all = recorder.all
        print(
            "[seq-cluster] \(all.count) SEQ.NEXT answered (\(before) before the kill, \(afterKill) after, "
                + "\(afterRestart) after restarting every process), "
                + "\(recorder.failures) errors; failover pause (longest gap between answers after killing the "
                + "owner \(owner)): \(pause / 1000) ms")
        let bad = seqViolations(all)
        #expect(bad.isEmpty, "\(bad.prefix(10).joined(separator: "\n"))")
        #expect(afterKill > 50, "the other nodes kept serving the section")
        #expect(afterRestart > 20, "the restarted cluster serves the section")
        #expect(pause < 5_000_000, "failover pause \(pause / 1000) ms")
    }
}
