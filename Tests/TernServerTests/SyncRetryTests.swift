import NIOCore
import TernConsensus
import TernCore
import TernRESP
import TernServer
import Testing

@Suite(.timeLimit(.minutes(2))) struct SyncRetryTests {
    @Test("MSG.SEND … ID: a retry through another node answers the first sequence and appends nothing")
    func sendRetryIsIdempotent() async throws {
        let s = try await SyncCluster.start()
        let c = [try await s.client(0), try await s.client(1), try await s.client(2)]
        let first = try await c[0].send(["MSG.SEND", "9", "hello", "ID", "phone-1:42"])
        guard case .integer(let seq) = first else {
            Issue.record("MSG.SEND: \(first)")
            return
        }
        // redis-py retrying after a timeout, and the retry landing on the other campuses.
        for k in [1, 2, 0, 1] {
            #expect(try await c[k].send(["MSG.SEND", "9", "hello", "ID", "phone-1:42"]) == .integer(seq))
        }
        // Another id, or none, is another message; the retries' sequences were skipped, not used.
        guard case .integer(let other) = try await c[2].send(["MSG.SEND", "9", "hello", "ID", "phone-1:43"]),
            case .integer(let plain) = try await c[1].send(["MSG.SEND", "9", "again"])
        else {
            Issue.record("second sends")
            return
        }
        #expect(other > seq && plain > other)
        let all = try #require(syncReply(try await c[0].send(["SYNC", "9", "0"])))
        #expect(all.messages.map(\.seq) == [UInt64(seq), UInt64(other), UInt64(plain)])
        #expect(all.messages.map(\.payload) == ["hello", "hello", "again"])
        for x in c { await x.close() }
        await s.stop()
    }

    @Test("MSG.FANOUT … ID: a retry answers the same sequences; each inbox holds the message once")
    func fanoutRetryIsIdempotent() async throws {
        let s = try await SyncCluster.start()
        let a = try await s.client(0)
        let b = try await s.client(2)
        let first = try await a.send(["MSG.FANOUT", "group hi", "1", "2", "3", "ID", "g7"])
        guard case .array(let seqs?) = first, seqs.count == 3 else {
            Issue.record("MSG.FANOUT: \(first)")
            return
        }
        #expect(try await b.send(["MSG.FANOUT", "group hi", "1", "2", "3", "ID", "g7"]) == first)
        for u in ["1", "2", "3"] {
            #expect(syncReply(try await b.send(["SYNC", u, "0"]))?.messages.map(\.payload) == ["group hi"])
        }
        await a.close()
        await b.close()
        await s.stop()
    }

    @Test("Concurrent retries of one MSG.SEND on all three nodes: one message, one answer")
    func concurrentRetries() async throws {
        let s = try await SyncCluster.start()
        let answers = await withTaskGroup(of: Result<UInt64, SyncError>.self) { g in
            for k in 0..<9 {
                g.addTask {
                    await s.services[k % 3].send(
                        uid: 4, payload: Array("x".utf8), clientID: Array("dup".utf8))
                }
            }
            var out: [Result<UInt64, SyncError>] = []
            for await r in g { out.append(r) }
            return out
        }
        let seqs = Set(answers.compactMap { try? $0.get() })
        #expect(seqs.count == 1 && answers.count == 9, "\(answers)")
        let all = try #require(try? await s.services[1].sync(uid: 4, after: 0, count: 100).get())
        #expect(all.messages.count == 1)
        #expect(all.messages.first.map { seqs.contains($0.seq) } == true)
        await s.stop()
    }

    @Test("ID option: bad syntax and bad ids are refused")
    func idErrors() async throws {
        let s = try await SyncCluster.start()
        let c = try await s.client(0)
        func isError(_ v: RESPValue, _ prefix: String) -> Bool {
            if case .error(let e) = v { return e.hasPrefix(prefix) }
            return false
        }
        #expect(isError(try await c.send(["MSG.SEND", "1", "p", "ID"]), "ERR wrong number of arguments"))
        #expect(isError(try await c.send(["MSG.SEND", "1", "p", "KEY", "x"]), "ERR syntax error"))
        #expect(isError(try await c.send(["MSG.SEND", "1", "p", "ID", ""]), "ERR client message id"))
        let long = String(repeating: "i", count: 129)
        #expect(isError(try await c.send(["MSG.SEND", "1", "p", "ID", long]), "ERR client message id"))
        #expect(isError(try await c.send(["MSG.FANOUT", "p", "1", "ID", long]), "ERR client message id"))
        await c.close()
        await s.stop()
    }

    @Test("A sync key beyond the inbox's end is an error, never an empty answer")
    func syncKeyBeyondEnd() async throws {
        let s = try await SyncCluster.start()
        let c = try await s.client(1)
        // No inbox yet: only 0 is a key it ever gave out.
        #expect(syncReply(try await c.send(["SYNC", "8", "0"]))?.messages.count == 0)
        #expect(
            try await c.send(["SYNC", "8", "5"])
                == .error(
                    "ERR sync key 5 is beyond the end of the inbox (its last sequence is 0); sync from 0 to read it again from its oldest kept message"
                ))
        _ = try await c.send(["MSG.SEND", "8", "a"])
        guard case .integer(let last) = try await c.send(["MSG.SEND", "8", "b"]) else {
            Issue.record("send")
            return
        }
        #expect(syncReply(try await c.send(["SYNC", "8", String(last)]))?.messages.count == 0)
        let bad = try await c.send(["SYNC", "8", String(last + 1), "BLOCK", "100"])
        guard case .error(let e) = bad else {
            Issue.record("answered \(bad)")
            return
        }
        #expect(
            e.hasPrefix(
                "ERR sync key \(last + 1) is beyond the end of the inbox (its last sequence is \(last))"))
        await c.close()
        await s.stop()
    }

    @Test("A client-supplied request id is carried through forwarding: six nodes, one increment")
    func suppliedIDIsForwarded() async throws {
        let c = try await LoopbackCluster.start(perCampus: 2)
        let id = RequestID.clientSupplied(Array("retry-me".utf8))
        #expect(id.client >= RequestID.clientSuppliedBase)
        var answers: [NodeReply] = []
        // Three of the six nodes are not replicas of the key: they forward it, with the same id.
        for n in c.nodes.keys.sorted(by: { $0.rawValue < $1.rawValue }) {
            answers.append(await c.nodes[n]!.execute(key: Array("k".utf8), .write(.incr(1)), id: id))
        }
        #expect(answers == Array(repeating: .done(.number(1)), count: 6))
        #expect(await c.nodes.values.first!.execute(key: Array("k".utf8), .read) == .value(Array("1".utf8)))
        await c.stop()
    }
}
