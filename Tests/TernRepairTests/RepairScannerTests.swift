import TernConsensus
import TernCore
import Testing

@testable import TernRepair

/// Three scanners over in-memory records, with a miniature shell: listings and reads from a
/// dictionary, messages delivered at once, repair actions applied the way the protocol would
/// (learn: take a later chosen value from the peer; teach: the peer takes ours if later).
final class MiniCluster {
    let ids = [NodeID(1), NodeID(2), NodeID(3)]
    var scanners: [NodeID: RepairScanner] = [:]
    var records: [NodeID: [[UInt8]: LoadResult]] = [:]
    var actions: [NodeID: [(key: [UInt8], action: NodeCore.RepairAction)]] = [:]
    var alarms: [SafetyAlarm] = []
    var rebuildingSeen: [NodeID: [NodeID]] = [:]
    var messageBytes = 0
    var messages = 0
    var passesEnded: [NodeID: Int] = [:]
    /// Nodes whose incoming messages are dropped (down, or cut off).
    var silent: Set<NodeID> = []
    var now: UInt64 = 0
    /// The bulk rebuild's fences: each node's floor (raised at once, "durable" at once), the
    /// epoch floor each node adds to what is asked (its votes' epochs), and the installs.
    var fences: [NodeID: Ballot] = [:]
    var epochFloor: [NodeID: Ballot] = [:]
    var installed: [NodeID: Int] = [:]
    var distrusted: [NodeID: [[UInt8]]] = [:]
    /// Fetches each node sent (bulk rebuild).
    var fetches: [NodeID: Int] = [:]

    init(options: RepairOptions = MiniCluster.options) {
        let ids = self.ids
        for id in ids {
            scanners[id] = RepairScanner(me: id, others: ids, options: options, now: 0) { _ in ids }
            records[id] = [:]
        }
    }

    static var options: RepairOptions {
        var o = RepairOptions()
        o.bucketBits = 6
        o.chunkBuckets = 16
        o.keysPerSecond = 1_000_000
        o.passIntervalNanos = 1_000_000_000
        return o
    }

    static func state(_ chosen: UInt64, _ value: String) -> KeyState {
        var s = KeyState()
        s.chosen = chosen
        s.value = KeyValue(bytes: Array(value.utf8))
        return s
    }

    func put(_ key: String, _ chosen: UInt64, _ value: String, at nodes: [Int]) {
        for n in nodes {
            records[ids[n]]![Array(key.utf8)] = .state(PaxosCodec.encode(Self.state(chosen, value)))
        }
    }

    func chosen(_ key: String, at n: Int) -> UInt64? {
        guard case .state(let b) = records[ids[n]]![Array(key.utf8)] else { return nil }
        return PaxosCodec.decode(b)?.chosen
    }

    /// Runs `n` steps of 10 ms, whatever the passes do.
    func steps(_ n: Int) {
        let saved = passesEnded
        passesEnded = [:]
        for _ in 0..<n { run(passes: Int.max, maxSteps: 1, quiet: true) }
        for (k, v) in saved { passesEnded[k, default: 0] += v }
    }

    /// Runs until every scanner ended `passes` passes (or a time bound).
    func run(passes: Int = 1, stepNanos: UInt64 = 10_000_000, maxSteps: Int = 100_000, quiet: Bool = false) {
        for _ in 0..<maxSteps {
            now += stepNanos
            for id in ids { scanners[id]!.tick(now: now) }
            var moved = true
            while moved {
                moved = false
                for id in ids {
                    let r = scanners[id]!.ready()
                    if !r.isEmpty { moved = true }
                    carryOut(id, r)
                }
            }
            if ids.allSatisfy({ (passesEnded[$0] ?? 0) >= passes }) { return }
        }
        if !quiet { Issue.record("the scanners did not finish \(passes) passes") }
    }

    func carryOut(_ id: NodeID, _ r: RepairReady) {
        let s = scanners[id]!
        for l in r.listings {
            let keys = records[id]!.keys.filter { l.buckets.contains(s.bucket(of: $0)) }
            s.listed(chunk: l.chunk, keys: Array(keys))
        }
        for read in r.reads {
            s.read(id: read.id, records: read.keys.map { ($0, records[id]![$0] ?? .absent) })
        }
        for m in r.messages {
            if case .fetch? = RepairMessage.decode(m.bytes) { fetches[id, default: 0] += 1 }
        }
        for m in r.messages where !silent.contains(m.to) {
            messages += 1
            messageBytes += m.bytes.count
            scanners[m.to]!.receive(from: id, m.bytes)
        }
        for a in r.actions {
            actions[id, default: []].append(a)
            apply(a.action, key: a.key, at: id)
        }
        alarms += r.alarms
        for f in r.fenceRequests {
            let floor = max(f.floor, fences[id] ?? .zero, epochFloor[id] ?? .zero)
            fences[id] = floor
            s.fenceRaised(for: f.peer, floor: floor)  // its answer leaves with the next `ready`
        }
        if let own = r.ownFence {
            fences[id] = max(own, fences[id] ?? .zero)
            s.ownFenceDurable(own)
        }
        for install in r.installs {
            for (k, rec) in install.pairs { records[id]![k] = .state(rec) }
            installed[id, default: 0] += install.keys.count
            distrusted[id, default: []] += install.distrust
            s.noteWritten(install.keys)
        }
        rebuildingSeen[id, default: []] += r.rebuildingPeers
        if r.passEnded != nil { passesEnded[id, default: 0] += 1 }
    }

    func apply(_ action: NodeCore.RepairAction, key: [UInt8], at id: NodeID) {
        func chosen(_ n: NodeID) -> UInt64 {
            guard case .state(let b) = records[n]![key] else { return 0 }
            return PaxosCodec.decode(b)?.chosen ?? 0
        }
        switch action {
        case .learn(let peer):
            if chosen(peer) > chosen(id) { records[id]![key] = records[peer]![key] }
        case .teach(let peer):
            if chosen(id) > chosen(peer) { records[peer]![key] = records[id]![key] }
        case .missing, .load, .copy: break
        }
        scanners[id]!.noteWritten([key])
    }

    func count(_ id: Int, where match: (NodeCore.RepairAction) -> Bool) -> Int {
        (actions[ids[id]] ?? []).filter { match($0.action) }.count
    }
}

@Suite struct RepairScannerTests {
    @Test func atRestOnlyDigestsTravel() {
        let c = MiniCluster()
        for k in 0..<2_000 { c.put("k\(k)", UInt64(1 + k % 5), "v\(k)", at: [0, 1, 2]) }
        c.run()
        #expect(c.actions.isEmpty)
        #expect(c.alarms.isEmpty)
        // 64 buckets, each node summarises each non-empty bucket to two peers and gets a match:
        // bytes in proportion to buckets, not to the 2 000 keys.
        let buckets = MiniCluster.options.bucketCount
        #expect(c.messages <= 3 * 2 * 2 * buckets)
        #expect(c.messageBytes <= 3 * 2 * buckets * 40)
        for id in c.ids {
            #expect(c.scanners[id]!.counters.lastPassComplete)
            #expect(c.scanners[id]!.counters.keysCompared == 0)
        }
    }

    @Test func aReplicaBehindLearns() {
        let c = MiniCluster()
        for k in 0..<300 { c.put("k\(k)", 3, "new\(k)", at: [0, 1]) }
        for k in 0..<300 { c.put("k\(k)", k % 10 == 0 ? 2 : 3, k % 10 == 0 ? "old\(k)" : "new\(k)", at: [2]) }
        c.run()
        for k in stride(from: 0, to: 300, by: 10) { #expect(c.chosen("k\(k)", at: 2) == 3) }
        #expect(c.alarms.isEmpty)
        let learned = c.count(2) { if case .learn = $0 { true } else { false } }
        let taught =
            c.count(0) { if case .teach = $0 { true } else { false } }
            + c.count(1) { if case .teach = $0 { true } else { false } }
        #expect(learned + taught >= 30)
    }

    @Test func aMissingKeyIsRecoveredAsDamaged() {
        let c = MiniCluster()
        for k in 0..<100 { c.put("k\(k)", 1, "v\(k)", at: [0, 1, 2]) }
        c.records[c.ids[1]]![Array("k7".utf8)] = nil
        c.run()
        let missing = (c.actions[c.ids[1]] ?? []).filter {
            $0.key == Array("k7".utf8) && $0.action == .missing
        }
        #expect(!missing.isEmpty)
        // Never only taught: a replica that holds nothing may have lost promises with the record.
        #expect(c.count(0) { $0 == .missing } == 0)
    }

    @Test func twoValuesAtOneInstanceRaiseAnAlarmAndAreNotRepaired() {
        let c = MiniCluster()
        for k in 0..<50 { c.put("k\(k)", 4, "v\(k)", at: [0, 1, 2]) }
        c.put("k9", 4, "forked", at: [2])
        c.run()
        #expect(!c.alarms.isEmpty)
        #expect(c.alarms.allSatisfy { $0.key == Array("k9".utf8) && $0.instance == 4 })
        for n in 0..<3 {
            #expect(!(c.actions[c.ids[n]] ?? []).contains { $0.key == Array("k9".utf8) })
        }
        #expect(c.scanners.values.reduce(0) { $0 + $1.counters.alarms } == c.alarms.count)
    }

    @Test func aDamagedRecordIsLoaded() {
        let c = MiniCluster()
        for k in 0..<100 { c.put("k\(k)", 1, "v\(k)", at: [0, 1, 2]) }
        c.records[c.ids[0]]![Array("k3".utf8)] = .damaged
        c.run()
        #expect((c.actions[c.ids[0]] ?? []).contains { $0.key == Array("k3".utf8) && $0.action == .load })
        #expect(c.scanners[c.ids[0]]!.counters.damaged >= 1)
    }

    /// The per-key rebuild (`bulkRebuild = false`).
    static var perKey: RepairOptions {
        var o = MiniCluster.options
        o.bulkRebuild = false
        return o
    }

    @Test func learnerOnlyAsksForEveryListAndLoadsEveryKey() {
        let c = MiniCluster(options: Self.perKey)
        for k in 0..<200 { c.put("k\(k)", 2, "v\(k)", at: [0, 1]) }
        // A key only promised at n1 (never chosen): the rebuilding node must hear of it too.
        var promisedOnly = KeyState()
        promisedOnly.promised = Ballot(round: 7, node: NodeID(1))
        c.records[c.ids[0]]![Array("p".utf8)] = .state(PaxosCodec.encode(promisedOnly))
        c.scanners[c.ids[2]]!.learnerOnly = true
        c.run()
        let loads = Set((c.actions[c.ids[2]] ?? []).filter { $0.action == .load }.map(\.key))
        #expect(loads.count == 201)
        #expect(loads.contains(Array("p".utf8)))
        #expect(c.scanners[c.ids[2]]!.counters.lastPassComplete)
    }

    /// Keys the peers hold only as a promise or an accepted slot (nothing chosen yet) may carry a
    /// vote the rebuilding node cast and lost: it must load (and so recover) them too.
    @Test func learnerOnlyLoadsKeysPeersHoldUnchosen() {
        let c = MiniCluster(options: Self.perKey)
        for k in 0..<50 { c.put("k\(k)", 0, "", at: [0, 1]) }
        c.scanners[c.ids[2]]!.learnerOnly = true
        c.run()
        let loads = Set((c.actions[c.ids[2]] ?? []).filter { $0.action == .load }.map(\.key))
        #expect(loads.count == 50)
        // Not learner-only, the same keys are nothing to compare.
        #expect((c.actions[c.ids[0]] ?? []).isEmpty && (c.actions[c.ids[1]] ?? []).isEmpty)
    }

    @Test func anUnansweredPeerMakesThePassIncomplete() {
        var o = MiniCluster.options
        o.peerTimeoutNanos = 50_000_000
        let c = MiniCluster(options: o)
        for k in 0..<100 { c.put("k\(k)", 1, "v\(k)", at: [0, 1, 2]) }
        // n3 hears nothing (cut off).
        c.silent = [c.ids[2]]
        c.run()
        #expect(!c.scanners[c.ids[0]]!.counters.lastPassComplete)
        #expect(c.scanners[c.ids[0]]!.counters.peerTimeouts > 0)
        #expect(c.actions.isEmpty)
    }

    @Test func paceBoundsTheReadRate() {
        var o = MiniCluster.options
        o.keysPerSecond = 1_000
        let c = MiniCluster(options: o)
        for k in 0..<2_000 { c.put("k\(k)", 1, "v\(k)", at: [0, 1, 2]) }
        c.run()
        // 2 000 keys at 1 000 keys/s: at least about two seconds of (simulated) time.
        let nanos = c.scanners[c.ids[0]]!.counters.lastPassNanos
        #expect(nanos >= 1_500_000_000)
    }

    @Test func aFullPaceRequestDuringAPassRunsAWholePassAtFullPace() {
        var o = MiniCluster.options
        o.keysPerSecond = 100
        let c = MiniCluster(options: o)
        for k in 0..<1_000 { c.put("k\(k)", 1, "v\(k)", at: [0, 1, 2]) }
        // Let the first pass start at the slow pace (100 keys/s: 10 s for 1 000 keys) ...
        c.steps(600)
        let s = c.scanners[c.ids[0]]!
        #expect(s.progress.running && !s.progress.fullPace)
        // ... then ask for full pace mid-pass.
        let requested = s.pass
        s.startFullPass()
        for _ in 0..<2_000 where !(s.pass > requested && !s.progress.running) { c.steps(1) }
        // The pass under way finished and the whole next one ran, both at full pace, in far less
        // than the slow pace's 10 s; then the pace drops back.
        #expect(s.pass == requested + 1)
        #expect(!s.progress.running && !s.progress.fullPace)
        #expect(s.counters.lastPassNanos < 2_000_000_000, "\(s.counters.lastPassNanos)")
    }

    @Test func noKeyIsMarkedMissingWhileAnotherOfItsReplicasRebuilds() {
        let c = MiniCluster()
        // A key in a late bucket, so that n3's first full summaries come before the others reach it.
        let name = (0..<100).map { "k\($0)" }.first {
            c.scanners[c.ids[0]]!.bucket(of: Array($0.utf8)) >= 16
        }!
        c.put(name, 3, "v", at: [0])  // n1 holds it; n2 is blank; n3 is rebuilding
        c.scanners[c.ids[2]]!.learnerOnly = true
        c.scanners[c.ids[2]]!.startFullPass()
        c.run()
        let atN2 = (c.actions[c.ids[1]] ?? []).filter { $0.key == Array(name.utf8) }.map(\.action)
        let atN1 = (c.actions[c.ids[0]] ?? []).filter { $0.key == Array(name.utf8) }.map(\.action)
        #expect(!atN2.contains(.missing), "\(atN2)")
        // n1 teaches the blank n2 instead (its memory is whole: n3's is the one lost).
        #expect(atN1.contains(.teach(to: c.ids[1])), "\(atN1)")
        #expect(c.chosen(name, at: 1) == 3)
        for id in c.ids.prefix(2) { #expect(c.scanners[id]!.isRebuilding(c.ids[2])) }
    }

    @Test func answersToPeersStayWithinThisNodesBudget() {
        var o = MiniCluster.options
        o.keysPerSecond = 100
        let c = MiniCluster(options: o)
        for k in 0..<2_000 { c.put("k\(k)", 1, "v\(k)", at: [0, 1, 2]) }
        // n2 and n3 scan at full pace; n1 keeps its slow pace, and must not read faster to answer
        // them (its clients come first): their summaries wait for its budget.
        c.scanners[c.ids[1]]!.startFullPass()
        c.scanners[c.ids[2]]!.startFullPass()
        c.steps(400)  // 4 s, of which about 3 after the passes start
        let n1 = c.scanners[c.ids[0]]!.counters.keysRead
        #expect(n1 <= 100 * 4 + 200, "n1 read \(n1) records in 4 s at 100 per second")
        // The full-pace peers go as fast as n1's answers let them: faster than n1, and n1 answers.
        #expect(c.scanners[c.ids[1]]!.counters.keysRead > n1)
        let answered = c.scanners[c.ids[0]]!.counters
        #expect(answered.bucketsMatched + answered.bucketsDiffered > 0)
    }

    @Test func messagesRoundTripAndMalformedOnesAreRefused() {
        let ms: [RepairMessage] = [
            .summary(pass: 3, bucket: 17, bits: 12, full: true, digest: 0xDEAD_BEEF, count: 9),
            .match(pass: 1, bucket: 4095),
            .keys(
                pass: 2, bucket: 1, truncated: false,
                entries: [
                    KeyEntry(key: Array("a".utf8), summary: KeySummary(chosen: 5, valueDigest: 7)),
                    KeyEntry(key: Array("b".utf8), summary: nil),
                ]),
            .missing(keys: [Array("x".utf8), []]),
            .fence(floor: Ballot(round: 5 << 32, node: NodeID(0))),
            .fenced(floor: Ballot(round: 6 << 32 | 3, node: NodeID(2))),
            .fetch(pass: 4, bucket: 99, bits: 12),
            .records(
                pass: 4, bucket: 99, truncated: true, rebuilding: true,
                entries: [
                    RecordEntry(key: Array("a".utf8), record: [1, 2, 3]),
                    RecordEntry(key: Array("b".utf8), record: nil),
                ]),
        ]
        for m in ms {
            let b = m.encode()
            #expect(RepairMessage.decode(b) == m)
            #expect(RepairMessage.decode(b + [0]) == nil)
            #expect(RepairMessage.decode(Array(b.dropLast())) == nil)
        }
        #expect(RepairMessage.decode([]) == nil)
        #expect(RepairMessage.decode([9]) == nil)
    }

    @Test func digestsDependOnInstanceAndValue() {
        let k = XXH64.hash(Array("k".utf8))
        let a = KeySummary(MiniCluster.state(1, "v")).entryDigest(keyHash: k)
        #expect(a == KeySummary(MiniCluster.state(1, "v")).entryDigest(keyHash: k))
        #expect(a != KeySummary(MiniCluster.state(2, "v")).entryDigest(keyHash: k))
        #expect(a != KeySummary(MiniCluster.state(1, "w")).entryDigest(keyHash: k))
        #expect(a != KeySummary(MiniCluster.state(1, "v")).entryDigest(keyHash: k ^ 1))
    }
}

/// The bulk rebuild (docs/REPAIR.md, "Bulk rebuild"): fence every peer, then copy merged records.
@Suite struct BulkRebuildTests {
    static func slot(_ instance: UInt64, _ round: UInt64, _ node: UInt32, _ value: String) -> AcceptedSlot {
        AcceptedSlot(
            instance: instance, ballot: Ballot(round: round, node: NodeID(node)),
            value: KeyValue(bytes: Array(value.utf8)))
    }

    @Test func copiesTheHighestChosenAndTheOpenSlotAboveItUnderTheFence() throws {
        let c = MiniCluster()
        let me = c.ids[2]
        // k1: chosen 3 at n1, 2 at n2 (behind). k2: chosen nowhere, n2 holds a slot (the lost
        // vote of n3 and n2's may have chosen it). k3: n1 has chosen 1 and a slot at 2 of a lower
        // ballot than n2's slot at 2.
        c.put("k1", 3, "new", at: [0])
        c.put("k1", 2, "old", at: [1])
        var s2 = KeyState()
        s2.promised = Ballot(round: 9 << 32 | 1, node: NodeID(2))
        s2.accepted = Self.slot(1, 9 << 32 | 1, 2, "slot")
        c.records[c.ids[1]]![Array("k2".utf8)] = .state(PaxosCodec.encode(s2))
        var a = MiniCluster.state(1, "one")
        a.accepted = Self.slot(2, 4 << 32, 1, "low")
        c.records[c.ids[0]]![Array("k3".utf8)] = .state(PaxosCodec.encode(a))
        var b = MiniCluster.state(1, "one")
        b.accepted = Self.slot(2, 7 << 32, 2, "high")
        c.records[c.ids[1]]![Array("k3".utf8)] = .state(PaxosCodec.encode(b))
        // n2 voted in epoch 9: its fence goes above that, and so everyone's.
        c.epochFloor[c.ids[1]] = Ballot(round: 10 << 32, node: NodeID(0))
        c.scanners[me]!.fenceRequest = Ballot(round: 2 << 32, node: NodeID(0))
        c.scanners[me]!.learnerOnly = true
        c.run()
        let floor = Ballot(round: 10 << 32, node: NodeID(0))
        #expect(c.fences[c.ids[0]] == floor && c.fences[c.ids[1]] == floor && c.fences[me] == floor)
        func state(_ k: String) throws -> KeyState {
            guard case .state(let bytes) = c.records[me]![Array(k.utf8)] else {
                throw CancellationError()
            }
            return try #require(PaxosCodec.decode(bytes))
        }
        let k1 = try state("k1")
        #expect(k1.chosen == 3 && k1.value == KeyValue(bytes: Array("new".utf8)) && k1.promised == floor)
        let k2 = try state("k2")
        #expect(k2.chosen == 0 && k2.accepted == Self.slot(1, 9 << 32 | 1, 2, "slot"))
        #expect(k2.promised == floor)
        let k3 = try state("k3")
        #expect(k3.chosen == 1 && k3.accepted == Self.slot(2, 7 << 32, 2, "high"))
        #expect(c.installed[me] == 3)
        #expect((c.actions[me] ?? []).isEmpty, "nothing recovered one by one")
        #expect(c.scanners[me]!.counters.lastPassComplete)
        #expect(c.scanners[me]!.isCopied(Array("k1".utf8)))
    }

    @Test func theCopyWaitsForEveryPeersFence() {
        let c = MiniCluster()
        let me = c.ids[2]
        c.put("k", 1, "v", at: [0, 1])
        c.silent = [c.ids[1]]
        c.scanners[me]!.learnerOnly = true
        c.steps(300)
        #expect(c.fences[me] == nil, "no own fence without n2's")
        #expect(c.fences[c.ids[0]] != nil, "n1 raised its fence")
        #expect(c.fetches[me] == nil, "nothing fetched before every fence")
        #expect(c.installed[me] == nil)
        c.silent = []
        c.run()
        #expect(c.installed[me] == 1)
        #expect(c.fences[c.ids[1]] != nil)
    }

    @Test func theMutantsBreakWhatTheyShould() throws {
        var o = MiniCluster.options
        o.mutant = .copyWithoutSlots
        let c = MiniCluster(options: o)
        let me = c.ids[2]
        var s2 = KeyState()
        s2.accepted = Self.slot(1, 9 << 32 | 1, 2, "slot")
        c.records[c.ids[1]]![Array("k".utf8)] = .state(PaxosCodec.encode(s2))
        c.scanners[me]!.learnerOnly = true
        c.run()
        guard case .state(let bytes) = c.records[me]![Array("k".utf8)] else {
            Issue.record("not installed")
            return
        }
        #expect(try #require(PaxosCodec.decode(bytes)).accepted == nil)

        o.mutant = .copyUnfenced
        let d = MiniCluster(options: o)
        var promised = MiniCluster.state(1, "v")
        promised.promised = Ballot(round: 3 << 32, node: NodeID(1))
        d.records[d.ids[0]]![Array("k".utf8)] = .state(PaxosCodec.encode(promised))
        d.records[d.ids[1]]![Array("k".utf8)] = .state(PaxosCodec.encode(promised))
        d.scanners[d.ids[2]]!.fenceRequest = Ballot(round: 2 << 32, node: NodeID(0))
        d.scanners[d.ids[2]]!.learnerOnly = true
        d.run()
        // Copied with no fence anywhere, and no promise.
        #expect(d.fences.isEmpty)
        guard case .state(let copied) = d.records[d.ids[2]]![Array("k".utf8)] else {
            Issue.record("not installed")
            return
        }
        #expect(try #require(PaxosCodec.decode(copied)).promised == .zero)
    }

    @Test func aRecordDamagedAtAPeerIsRecoveredOneByOne() {
        let c = MiniCluster()
        let me = c.ids[2]
        c.put("a", 1, "v", at: [0, 1])
        c.put("b", 1, "w", at: [0, 1])
        c.records[c.ids[1]]![Array("b".utf8)] = .damaged
        c.scanners[me]!.learnerOnly = true
        c.run()
        #expect(c.installed[me] == 1)
        #expect(c.distrusted[me] == [Array("b".utf8)])
        #expect((c.actions[me] ?? []).contains { $0.key == Array("b".utf8) && $0.action == .load })
    }
}
