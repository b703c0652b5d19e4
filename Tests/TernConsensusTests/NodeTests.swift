import TernConsensus
import TernCore
import Testing

/// A storage double that records the order of writes and syncs.
final class RecordingStorage: ReplicaStorage {
    var durable: [[UInt8]: [UInt8]] = [:]
    var unsynced: [([UInt8], [UInt8])] = []
    var syncs = 0
    func load(_ key: [UInt8]) throws -> LoadResult {
        if let v = unsynced.last(where: { $0.0 == key })?.1 ?? durable[key] { return .state(v) }
        return .absent
    }
    func write(_ batch: [(key: [UInt8], value: [UInt8])]) throws {
        unsynced += batch.map { ($0.key, $0.value) }
    }
    func sync() throws {
        for (k, v) in unsynced { durable[k] = v }
        unsynced = []
        syncs += 1
    }
    func crash() { unsynced = [] }
}

@Suite struct NodeTests {
    @Test("Restart bumps the epoch, durably, before anything else; new ballots are above the old ones")
    func restartBumpsEpoch() throws {
        let s = RecordingStorage()
        let a = try ReplicaNode(id: n1, replicas: [n1, n2, n3], storage: s, config: PaxosConfig(), seed: 1)
        #expect(a.epoch == 1)
        #expect(s.syncs == 1)
        s.crash()
        let b = try ReplicaNode(id: n1, replicas: [n1, n2, n3], storage: s, config: PaxosConfig(), seed: 1)
        #expect(b.epoch == 2)
        var clock = BallotClock(epoch: b.epoch)
        let ballot = clock.next(above: .zero, node: n1)
        #expect(ballot > Ballot(round: 1 << 32 | UInt64(UInt32.max), node: n1))
    }

    @Test(
        "A damaged epoch record stops the start with epochDamaged: rounds of the lost epoch are never reused")
    func damagedEpochRefusesToStart() throws {
        final class DamagedEpochStorage: ReplicaStorage {
            var writes = 0
            func load(_ key: [UInt8]) throws -> LoadResult {
                key == ReplicaNode.epochKey ? .damaged : .absent
            }
            func write(_ batch: [(key: [UInt8], value: [UInt8])]) throws { writes += batch.count }
            func sync() throws {}
        }
        let s = DamagedEpochStorage()
        #expect(throws: ReplicaNodeError.epochDamaged) {
            _ = try ReplicaNode(id: n1, replicas: [n1, n2, n3], storage: s, config: PaxosConfig(), seed: 1)
        }
        // Nothing was written over the damaged record: an operator can still inspect it.
        #expect(s.writes == 0)
    }

    @Test("Group commit: a flush writes one batch and syncs once before releasing the frame")
    func groupCommit() throws {
        let s = RecordingStorage()
        let node = try ReplicaNode(
            id: n1, replicas: [n1, n2, n3], storage: s, config: PaxosConfig(), seed: 1)
        let b = Ballot(round: 1 << 32 | 1, node: n2)
        let items = (0..<5).map { k in
            FrameItem(key: [UInt8(k)], message: .prepare(instance: 1, ballot: b))
        }
        node.receive(Frame(from: n2, to: n1, items: items))
        let syncsBefore = s.syncs
        let out = try node.flush()
        #expect(s.syncs == syncsBefore + 1)
        #expect(out.frames.count == 1)
        #expect(out.frames[0].items.count == 5)
        for k in 0..<5 {
            guard case .state(let rec) = try s.load([1, UInt8(k)]) else {
                Issue.record("not persisted")
                continue
            }
            #expect(PaxosCodec.decode(rec)?.promised == b)
        }
    }

    @Test("A corrupt record loads as damaged, never as absent")
    func corruptIsDamaged() throws {
        let s = RecordingStorage()
        var st = KeyState()
        st.chosen = 3
        var rec = PaxosCodec.encode(st)
        #expect(PaxosCodec.decode(rec) == st)
        rec[3] ^= 0x40
        #expect(PaxosCodec.decode(rec) == nil)
        s.durable[[1] + key] = rec
        let node = try ReplicaNode(
            id: n1, replicas: [n1, n2, n3], storage: s, config: PaxosConfig(), seed: 1)
        node.read(key: key, tag: 1)
        #expect(node.inspect(key)?.damaged == true)
    }

    @Test("Codec round-trips every field")
    func codecRoundTrip() {
        var st = KeyState()
        st.chosen = 42
        st.value = KeyValue(
            bytes: bytes("v"),
            recent: [
                AppliedRequest(id: rid(1), result: .number(-3), instance: 1),
                AppliedRequest(id: rid(2), result: .swapped(true), instance: 1),
            ])
        st.promised = Ballot(round: 7 << 32 | 9, node: n3)
        st.accepted = AcceptedSlot(instance: 43, ballot: st.promised, value: KeyValue(bytes: []))
        #expect(PaxosCodec.decode(PaxosCodec.encode(st)) == st)
        #expect(PaxosCodec.decodeEpoch(PaxosCodec.encodeEpoch(77)) == 77)
    }
}
