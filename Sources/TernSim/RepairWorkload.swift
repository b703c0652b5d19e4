import TernConsensus
import TernCore
import TernRepair
import TernStorage

/// Repairs and repair faults of one simulation (`SimResult.repair`).
public struct RepairStats: Sendable, Hashable {
    /// Repairs by cause, summed over every scanner of the run (`RepairCounters`): this replica was
    /// behind and learned; a peer was behind and was taught; a key was missing here and was
    /// recovered as damaged; a peer was told it misses keys; the scan read a damaged record.
    public var behind = 0
    public var taught = 0
    public var missing = 0
    public var peerMissing = 0
    public var damaged = 0
    /// `missing` actions that found the replica blank and marked the key damaged (from this node's
    /// own comparison or from a peer's `missing` notice).
    public var missingMarked = 0
    /// Keys a learner-only node loaded (damaged) because a peer listed them: the rebuild's repairs.
    public var rebuildLoads = 0
    /// Records the `copy-bytes` mutant copied from a peer's disk.
    public var copies = 0
    /// Records a bulk rebuild installed from its peers' merged records (docs/REPAIR.md), and
    /// fences raised for a rebuilding peer.
    public var installed = 0
    public var fences = 0
    /// Two values chosen at one instance, seen by a scanner (each one is also a violation).
    public var alarms = 0
    /// Passes ended (complete or not), and how many were complete.
    public var passes = 0
    public var completePasses = 0
    /// Faults: disks wiped, records dropped; learner-only rebuilds started (at each start with the
    /// marker) and finished (the marker removed).
    public var wipes = 0
    public var drops = 0
    /// Disks replaced by an older backup (`--restore`), and starts the incarnation check found
    /// stale (each then rebuilds learner-only).
    public var restores = 0
    public var staleDetected = 0
    public var rebuildStarts = 0
    public var rebuildsDone = 0
    /// Rebuilds finished while the clients still ran (before the heal).
    public var rebuildsDoneUnderLoad = 0
    /// Keys compared across the three replicas after the scanners settled.
    public var keysCompared = 0
    /// Ticks from the heal until the scanners settled.
    public var settleTicks: UInt64 = 0
    public init() {}

    /// Repairs of every cause.
    public var repairs: Int { behind + taught + missingMarked + damaged + rebuildLoads + copies + installed }

    mutating func add(_ c: RepairCounters) {
        behind += c.behind
        taught += c.taught
        missing += c.missing
        peerMissing += c.peerMissing
        damaged += c.damaged
        alarms += c.alarms
        fences += c.fencesRaised
    }

    /// One line for `tern sim`.
    public var summary: String {
        "repairs \(repairs) (behind \(behind), taught \(taught), missing \(missingMarked) [found \(missing), told \(peerMissing)], "
            + "damaged \(damaged), rebuild loads \(rebuildLoads), installed \(installed)"
            + "\(copies > 0 ? ", copies \(copies)" : "")), \(fences) fences, "
            + "\(wipes) wipes, \(drops) drops, \(restores) restores (\(staleDetected) found stale), "
            + "\(rebuildsDone)/\(rebuildStarts) rebuilds done (\(rebuildsDoneUnderLoad) under load), "
            + "\(completePasses)/\(passes) complete passes, \(keysCompared) keys compared"
    }
}

/// The repair workload's state inside a `Simulation`: one `RepairScanner` per node (recreated at
/// every start, like the server's), their peer messages on the simulated network, and the nodes'
/// learner-only rebuilds.
struct RepairWorkload {
    var scanners: [RepairScanner?] = [nil, nil, nil]
    /// Repair peer messages in flight, by arrival tick.
    var inTransit: [(at: UInt64, from: Int, to: Int, bytes: [UInt8])] = []
    /// Per node: learner-only now; the first pass number that counts for leaving it; a qualifying
    /// complete pass has ended (leave once no key is damaged).
    var learnerOnly = [false, false, false]
    var rebuildFromPass: [UInt64] = [0, 0, 0]
    var rebuildPassDone = [false, false, false]
    /// Per node: the next start must be learner-only (its disk was wiped or lost a record).
    var rebuildAtStart = [false, false, false]
    /// Per node: when (ns) the last complete pass started.
    var lastCompletePassStart: [UInt64] = [0, 0, 0]
    /// When (ns) a scanner last asked for a repair or a node left learner-only.
    var lastActivity: UInt64 = 0
    /// When (tick) the run healed; the scanners must then settle.
    var healedAt: UInt64?
    var settled = false
    var stats = RepairStats()
    var messagesSent = 0
    /// Per node: its incarnation check (only with `--restore`), its last backup (a copy of its
    /// disk taken at a crash), and whether its disk was restored from one and not yet found stale
    /// (its state counts as lost for the one-lost-state-at-a-time guard).
    var incarnations: [IncarnationGuard?] = [nil, nil, nil]
    var backups: [MemoryFileSystem?] = [nil, nil, nil]
    var restoredUnchecked = [false, false, false]
    /// Fences raised on a node and not yet durable (`ReplicaNode.raiseFence` tokens): for a
    /// rebuilding peer, or the node's own (peer nil). Lost with the node's memory.
    var fencesWaiting: [[UInt64: (peer: NodeID?, floor: Ballot)]] = [[:], [:], [:]]
    var fenceTokens: UInt64 = 0
}

extension Simulation {
    /// A tick stands for the server's 5 ms tick (as in the seq workload).
    var repairNow: UInt64 { now * Self.seqNanosPerTick }

    /// Ticks the scanners get after the heal to settle before the run counts as stuck.
    static let repairSettleTicksMax: UInt64 = 40_000

    /// The scanners' buckets in the simulator (64), which the simulated engines group key records
    /// by when the repair workload runs (`SimStorageOptions.listingBucketBits`).
    static let repairBucketBits: UInt8 = 6

    /// The scanners' options in the simulator: a fast pace in simulated time (a pass of the
    /// workload's few keys takes a few dozen ticks), small buckets, short timeouts.
    var repairOptions: RepairOptions {
        var o = RepairOptions()
        o.bucketBits = Self.repairBucketBits
        o.chunkBuckets = 16
        o.keysPerSecond = 1_000_000
        o.bytesPerSecond = 1_073_741_824
        o.passIntervalNanos = 40 * Self.seqNanosPerTick
        o.peerTimeoutNanos = 60 * Self.seqNanosPerTick
        o.mutant = config.repairMutant
        return o
    }

    /// Node `i` started (a new `ReplicaNode` over its storage): a new scanner; learner-only if its
    /// disk lost state since the last start (the marker is written durably first) or if the marker
    /// is still there (restarted in the middle of a rebuild).
    func repairNodeStarted(_ i: Int, _ n: ReplicaNode) {
        guard config.repair else { return }
        if let old = repair.scanners[i] { repair.stats.add(old.counters) }
        let s = storages[i]
        do {
            if repair.rebuildAtStart[i] {
                repair.rebuildAtStart[i] = false
                try s.write([(ReplicaNode.rebuildKey, [1])])
                try s.sync()
            }
        } catch {
            storageFailed(i, error)
        }
        let marked: Bool
        switch (try? s.load(ReplicaNode.rebuildKey)) ?? .damaged {
        case .absent: marked = false
        default: marked = true
        }
        let ids = self.ids
        let scanner = RepairScanner(me: ids[i], others: ids, options: repairOptions, now: repairNow) { _ in
            ids
        }
        // The engine groups the key records by the scanner's buckets: fetches read a bucket whole.
        scanner.readsBuckets =
            repairOptions.bucketBits == config.storage.listingBucketBits && s.engine.partitionCount != nil
        repair.scanners[i] = scanner
        repair.learnerOnly[i] = marked
        repair.rebuildPassDone[i] = false
        if incarnationsOn { incarnationNodeStarted(i, n, learnerOnly: marked) }
        repair.fencesWaiting[i] = [:]
        if marked {
            n.learnerOnly = true
            scanner.learnerOnly = true
            scanner.beginBulkRebuild(on: n)
            repair.rebuildFromPass[i] = scanner.pass + 1
            repair.stats.rebuildStarts += 1
            if config.traceKey != nil { print("t=\(now) n\(i + 1) starts LEARNER-ONLY") }
        }
        mix(0x4E9A &+ UInt64(i) << 1 &+ (marked ? 1 : 0))
    }

    /// A flush of node `i` made these fences durable: the scanner answers or begins its copy.
    func repairFencesDurable(_ i: Int, _ tokens: [UInt64]) {
        guard config.repair, !tokens.isEmpty, let s = repair.scanners[i] else { return }
        for t in tokens {
            guard let f = repair.fencesWaiting[i].removeValue(forKey: t) else { continue }
            if let peer = f.peer {
                s.fenceRaised(for: peer, floor: f.floor)
            } else {
                if config.traceKey != nil { print("t=\(now) n\(i + 1) FENCED at \(f.floor)") }
                s.ownFenceDurable(f.floor)
            }
            mix(0xFE7C &+ UInt64(i) &+ f.floor.round << 8)
        }
        repairDrive(i)
    }

    /// Node `i` went down: its scanner is gone with its memory.
    func repairNodeStopped(_ i: Int) {
        repair.incarnations[i] = nil
        repair.fencesWaiting[i] = [:]
        guard config.repair, let old = repair.scanners[i] else { return }
        repair.stats.add(old.counters)
        repair.scanners[i] = nil
    }

    /// A flush of node `i` wrote these keys' records.
    func repairNoteWritten(_ i: Int, _ touched: [[UInt8]]) {
        guard config.repair, !touched.isEmpty, let s = repair.scanners[i] else { return }
        s.noteWritten(touched)
    }

    /// Step 1: repair messages due now reach their (running) nodes' scanners.
    func repairDeliver() {
        guard config.repair else { return }
        var k = 0
        while k < repair.inTransit.count {
            guard repair.inTransit[k].at <= now else {
                k += 1
                continue
            }
            let m = repair.inTransit.remove(at: k)
            guard nodes[m.to] != nil else { continue }
            whenRunning(m.to) { [self] in
                if IncarnationMessage.isIncarnation(m.bytes) {
                    guard nodes[m.to] != nil, let g = repair.incarnations[m.to] else { return }
                    g.receive(from: ids[m.from], m.bytes)
                    incarnationDrive(m.to)
                    return
                }
                guard nodes[m.to] != nil, let s = repair.scanners[m.to] else { return }
                s.receive(from: ids[m.from], m.bytes)
                repairDrive(m.to)
            }
        }
    }

    /// Step 5, after the nodes flushed: every running scanner's clock, then its work; learner-only
    /// nodes leave once rebuilt; after the heal, whether the scanners have settled.
    func repairTick() {
        guard config.repair else { return }
        for i in 0..<3 where pausedUntil[i] == nil {
            guard let n = nodes[i], let s = repair.scanners[i] else { continue }
            if let g = repair.incarnations[i] {
                g.tick(now: repairNow)
                incarnationDrive(i)
            }
            s.tick(now: repairNow, damagedKeys: n.damagedKeyCount)
            repairDrive(i)
            if repair.learnerOnly[i] && repair.rebuildPassDone[i] && n.damagedKeyCount == 0 {
                leaveLearnerOnly(i, n, s)
            }
        }
        if let healedAt = repair.healedAt, !repair.settled { repairCheckSettled(healedAt) }
    }

    func leaveLearnerOnly(_ i: Int, _ n: ReplicaNode, _ s: RepairScanner) {
        do throws(StorageError) {
            try storages[i].remove(ReplicaNode.rebuildKey)
        } catch {
            storageFailed(i, error)
            return
        }
        n.learnerOnly = false
        s.learnerOnly = false
        repair.learnerOnly[i] = false
        repair.rebuildPassDone[i] = false
        repair.stats.rebuildsDone += 1
        if !healed { repair.stats.rebuildsDoneUnderLoad += 1 }
        repair.lastActivity = repairNow
        if config.traceKey != nil { print("t=\(now) n\(i + 1) leaves learner-only") }
        mix(0x1EA5E &+ UInt64(i))
    }

    /// Carries out what node `i`'s scanner asks for: listings and reads from its storage, peer
    /// messages onto the simulated network (loss, cuts and delays as for the Paxos frames), repair
    /// actions on the node, alarms as violations.
    func repairDrive(_ i: Int) {
        guard let n = nodes[i], let s = repair.scanners[i] else { return }
        let storage = storages[i]
        for _ in 0..<1000 {
            let r = s.ready()
            if r.isEmpty { return }
            for l in r.listings {
                if s.options.bucketBits == config.storage.listingBucketBits,
                    let lists = storage.liveKeys(inBuckets: l.buckets)
                {
                    s.listed(chunk: l.chunk, buckets: lists)
                    continue
                }
                let keys = storage.liveKeys.filter { $0.first == 1 }.map { Array($0.dropFirst()) }
                s.listed(chunk: l.chunk, keys: keys.filter { l.buckets.contains(s.bucket(of: $0)) })
            }
            for read in r.reads {
                s.read(id: read.id, keys: read.keys, packed: storage.load(many: read.keys, prefix: 1))
            }
            for read in r.bucketReads {
                guard let found = storage.records(inBucket: read.bucket, prefix: 1) else { continue }
                s.read(id: read.id, keys: found.keys, values: found.values)
            }
            for m in r.messages { repairSend(from: i, to: m.to, m.bytes) }
            for a in r.actions { repairApply(i, n, s, a.key, a.action) }
            for f in r.fenceRequests {
                let floor = n.fenceFloor(requested: f.floor)
                repair.fenceTokens += 1
                repair.fencesWaiting[i][repair.fenceTokens] = (f.peer, floor)
                n.raiseFence(floor, token: repair.fenceTokens)
                if config.traceKey != nil {
                    print("t=\(now) n\(i + 1) raises its fence to \(floor) for \(f.peer)")
                }
            }
            if let own = r.ownFence {
                repair.fenceTokens += 1
                repair.fencesWaiting[i][repair.fenceTokens] = (nil, own)
                n.raiseFence(own, token: repair.fenceTokens)
            }
            for install in r.installs { installCopies(i, n, s, install) }
            for p in r.rebuildingPeers { n.clearSuspicions(sharedWith: p) }
            for alarm in r.alarms {
                if violations.isEmpty {
                    violations.append(
                        violation(
                            check: "repair-alarm", key: keyName(alarm.key), detail: "node \(i + 1): \(alarm)")
                    )
                }
            }
            if let (pass, complete) = r.passEnded {
                repair.stats.passes += 1
                mix(0x9A55 &+ pass << 1 &+ (complete ? 1 : 0))
                if complete {
                    repair.stats.completePasses += 1
                    let c = s.counters
                    repair.lastCompletePassStart[i] = c.lastPassEndedAt - c.lastPassNanos
                    if repair.learnerOnly[i] && pass >= repair.rebuildFromPass[i] {
                        repair.rebuildPassDone[i] = true
                    }
                }
                if config.traceKey != nil {
                    print("t=\(now) n\(i + 1) pass \(pass) ended, complete \(complete)")
                }
            }
        }
    }

    /// A bulk rebuild's records, written on node `i` (unsynced: a later sync, at the latest the
    /// marker's removal, makes them durable; a crash before it rebuilds again).
    func installCopies(_ i: Int, _ n: ReplicaNode, _ s: RepairScanner, _ install: RepairInstall) {
        var indices: [Int] = []
        var written: [[UInt8]] = []
        var untrusted = install.distrust
        for (index, key) in install.keys.enumerated() {
            if n.mayInstallCopy(key) {
                indices.append(index)
                written.append(key)
                if config.traceKey == keyName(key) { print("t=\(now) n\(i + 1) INSTALLS a copy") }
            } else {
                untrusted.append(key)
            }
        }
        n.distrust(untrusted)
        guard !indices.isEmpty else { return }
        do {
            try storages[i].write(prefix: 1, keys: install.keys, values: install.records, indices: indices)
        } catch {
            storageFailed(i, error)
            return
        }
        s.noteWritten(written, bucket: install.bucket)
        repair.stats.installed += written.count
        repair.lastActivity = repairNow
        mix(0xC0B7 &+ UInt64(i) &+ UInt64(written.count) << 8)
    }

    /// One repair-service message from node `i` onto the simulated network (loss, cuts and delays
    /// as for the Paxos frames).
    func repairSend(from i: Int, to: NodeID, _ bytes: [UInt8]) {
        guard let j = ids.firstIndex(of: to) else { return }
        repair.messagesSent += 1
        mix(0x4E0 &+ UInt64(i) << 4 &+ UInt64(j) &+ UInt64(bytes.count) << 8)
        if cut[i][j] || rng.chance(faults.loss) { return }
        let copies = rng.chance(faults.duplicate) ? 2 : 1
        for _ in 0..<copies {
            repair.inTransit.append((now + 1 + rng.below(faults.delayTicksMax), i, j, bytes))
        }
    }

    func repairApply(
        _ i: Int, _ n: ReplicaNode, _ s: RepairScanner, _ key: [UInt8], _ action: NodeCore.RepairAction
    ) {
        if config.traceKey == keyName(key) { print("t=\(now) n\(i + 1) REPAIR \(action)") }
        switch action {
        case .learn(let peer):
            n.requestLearn(key: key, from: peer)
            mix(0xA1)
        case .teach(let peer):
            n.teach(key: key, to: peer)
            mix(0xA2)
        case .missing:
            if n.markMissing(key: key) { repair.stats.missingMarked += 1 }
            mix(0xA3)
        case .load:
            n.load(key: key)
            if repair.learnerOnly[i] { repair.stats.rebuildLoads += 1 }
            mix(0xA4)
            // A load is not a repair by itself (at rest the scan finds nothing to load).
            return
        case .copy(let peer):
            // The mutant: the peer's stored record, written here as this replica's own.
            guard let j = ids.firstIndex(of: peer),
                case .state(let bytes)? = try? storages[j].load(ReplicaNode.recordKey(key))
            else { return }
            do {
                try storages[i].write([(ReplicaNode.recordKey(key), bytes)])
                try storages[i].sync()
            } catch {
                storageFailed(i, error)
                return
            }
            n.adoptCopiedRecord(key: key, bytes)
            s.noteWritten([key])
            repair.stats.copies += 1
            mix(0xA5)
        }
        repair.lastActivity = repairNow
    }

    /// Faults at a crash of node `i` (down now), instead of bit rot: its whole disk wiped, or one
    /// record dropped. Guard (as for bit rot): one node's state lost at a time. Returns true when a
    /// fault was injected.
    func repairFaultAtCrash(_ i: Int) -> Bool {
        guard config.repair, repairOthersIntact(i) else { return false }
        let s = storages[i]
        if rng.chance(faults.wipe) {
            guard replaceDisk(i, with: nil) else { return true }
            unrepaired.removeAll { $0.node == i }
            if config.traceKey != nil { print("t=\(now) WIPE n\(i + 1)") }
            mix(0x3193 &+ UInt64(i))
            return true
        }
        if faults.restore > 0 {
            if let backup = repair.backups[i], rng.chance(faults.restore) {
                // The disk replaced by an older copy of itself: the node will start as if nothing
                // happened, with the backup's promises. Only the incarnation check can tell.
                guard replaceDisk(i, with: backup) else { return true }
                repair.backups[i] = nil
                unrepaired.removeAll { $0.node == i }
                if config.traceKey != nil { print("t=\(now) RESTORE n\(i + 1) from an older backup") }
                mix(0x5E5 &+ UInt64(i))
                return true
            }
            // A cold backup of the disk as the crash left it, restored at a later crash.
            if rng.chance(0.5) { repair.backups[i] = s.fileSystem.snapshot() }
        }
        if rng.chance(faults.drop) {
            // Half the time the hottest record (whose promise or open slot still matters).
            let recs = s.liveKeys.filter { $0.first == 1 }
            guard !recs.isEmpty else { return false }
            var k = recs[Int(rng.below(UInt64(recs.count)))]
            if rng.chance(0.5), let hot = s.recent.last(where: { $0.first == 1 }), recs.contains(hot) {
                k = hot
            }
            do throws(StorageError) {
                try s.remove(k)
            } catch {
                storageFailed(i, error)
                return true
            }
            repair.rebuildAtStart[i] = true
            repair.stats.drops += 1
            observer.corrupted(node: i, key: Array(k.dropFirst()))
            if config.traceKey != nil { print("t=\(now) DROP n\(i + 1) \(keyName(Array(k.dropFirst())))") }
            mix(0xD809 &+ UInt64(i))
            return true
        }
        return false
    }

    /// With the repair workload, while a campus is cut off (both ways), a crash hits one of the two
    /// others, half the time: its lost votes are then the ones the cut-off laggard never saw — the
    /// interleaving in which a rebuilding node that votes anyway (`learnerVotes`) lets the laggard
    /// choose a second value at an instance already chosen.
    func repairCrashTarget(_ i: Int) -> Int? {
        guard config.repair else { return nil }
        guard
            let cutOff = (0..<3).first(where: { a in
                (0..<3).allSatisfy { $0 == a || (cut[a][$0] && cut[$0][a]) }
            })
        else { return nil }
        guard i == cutOff else { return nil }
        return (cutOff + 1 + Int(rng.below(2))) % 3
    }

    /// With the repair workload, node `i`'s state may be damaged only while every other node's is
    /// whole: none rebuilding, none with a corrupted record not yet re-learned, and none holding a
    /// damaged key — which includes a key the scanner marked missing (a blank replica suspected of
    /// a lost record also refuses to vote until both peers re-teach it, so it counts as a lost
    /// copy: seed 103 of `--crash 0.005 --down-ticks 30 --wipe 0.5 --drop 0.3` wiped node 3 while
    /// node 2's blank `r1` was marked missing, and `r1` was then stuck with two replicas each
    /// waiting for the other's promise). Always true without the workload.
    func repairOthersIntact(_ i: Int) -> Bool {
        guard config.repair else { return true }
        return (0..<3).allSatisfy { j in
            j == i
                || (!repair.learnerOnly[j] && !repair.restoredUnchecked[j]
                    && (nodes[j]?.damagedKeyCount ?? 0) == 0)
        } && !unrepaired.contains { $0.node != i }
    }

    /// The nodes run the incarnation check (with `--restore`, or its mutant).
    var incarnationsOn: Bool {
        faults.restore > 0 || config.incarnationCheck || config.repairMutant == .skipIncarnationCheck
    }

    /// Node `i` started: its incarnation (one above the one its storage remembers, durable before
    /// anything leaves) and its check; a node that may vote with what its storage holds is held
    /// until the check passes. The nonce is the start's tick and node (distinct per start; no draw
    /// from the seed's generator).
    func incarnationNodeStarted(_ i: Int, _ n: ReplicaNode, learnerOnly: Bool) {
        let s = storages[i]
        var before = OwnIncarnations()
        if case .state(let b)? = try? s.load(IncarnationRecords.ownKey) {
            before = IncarnationRecords.decodeOwn(b) ?? OwnIncarnations()
        }
        var seen: [NodeID: Incarnation] = [:]
        if case .state(let b)? = try? s.load(IncarnationRecords.seenKey) {
            seen = IncarnationRecords.decodeSeen(b) ?? [:]
        }
        let own = before.starting(nonce: now << 4 | UInt64(i + 1))
        let current = own.starts[own.starts.count - 1]
        let stored = own.confirmed
        do {
            try s.write([(IncarnationRecords.ownKey, IncarnationRecords.encode(own: own))])
            try s.sync()
        } catch {
            storageFailed(i, error)
            return
        }
        let g = IncarnationGuard(
            me: ids[i], others: ids, stored: stored, earlier: Array(own.starts.dropLast()), current: current,
            seen: seen, checking: !learnerOnly && own.latest > 1, now: repairNow,
            graceNanos: 100 * Self.seqNanosPerTick,
            helloIntervalNanos: 20 * Self.seqNanosPerTick,
            bumpNanos: config.incarnationBumpTicks * Self.seqNanosPerTick,
            skipCheck: config.repairMutant == .skipIncarnationCheck)
        repair.incarnations[i] = g
        n.votingHeld = g.decision == .checking
        // Learner-only anyway (its rebuild covers the restored state), or nothing to check.
        if learnerOnly || !n.votingHeld { repair.restoredUnchecked[i] = false }
        if config.traceKey != nil { print("t=\(now) n\(i + 1) incarnation \(current), held \(n.votingHeld)") }
    }

    /// Carries out what node `i`'s incarnation check asks for.
    func incarnationDrive(_ i: Int) {
        guard let n = nodes[i], let g = repair.incarnations[i] else { return }
        let r = g.ready()
        if r.isEmpty { return }
        for m in r.messages { repairSend(from: i, to: m.to, m.bytes) }
        if let own = r.persistOwn {
            do {
                try storages[i].write([(IncarnationRecords.ownKey, IncarnationRecords.encode(own: own))])
                try storages[i].sync()
                g.ownPersisted()
            } catch {
                storageFailed(i, error)
                return
            }
        }
        if let seen = r.persistSeen {
            do {
                try storages[i].write([(IncarnationRecords.seenKey, IncarnationRecords.encode(seen: seen))])
                try storages[i].sync()
            } catch {
                storageFailed(i, error)
                return
            }
            for m in r.afterPersist { repairSend(from: i, to: m.to, m.bytes) }
        }
        switch r.decided {
        case nil, .checking?: break
        case .passed?:
            n.votingHeld = false
            // Not found stale: with the check skipped (the mutant) or the residual risk, a
            // restored node now votes with its backup's state; the checks must say so.
            if config.traceKey != nil { print("t=\(now) n\(i + 1) incarnation confirmed") }
        case .stale?:
            guard !repair.learnerOnly[i], let sc = repair.scanners[i] else { return }
            do {
                try storages[i].write([(ReplicaNode.rebuildKey, [1])])
                try storages[i].sync()
            } catch {
                storageFailed(i, error)
                return
            }
            n.becomeLearnerOnly()
            // Every key reloads damaged (its chosen state forgotten in memory, as at a
            // learner-only restart): the observer's per-node "never goes back" starts over.
            observer.restarted(node: i)
            n.votingHeld = false
            sc.learnerOnly = true
            sc.beginBulkRebuild(on: n)
            repair.learnerOnly[i] = true
            repair.restoredUnchecked[i] = false
            repair.rebuildFromPass[i] = sc.pass + 1
            repair.rebuildPassDone[i] = false
            repair.stats.rebuildStarts += 1
            repair.stats.staleDetected += 1
            if config.traceKey != nil { print("t=\(now) n\(i + 1) STALE directory: rebuilds learner-only") }
            mix(0x57A1E &+ UInt64(i))
        }
    }

    /// The run healed: from now on the scanners must settle.
    func repairHealed() {
        guard config.repair else { return }
        repair.healedAt = now
    }

    /// Settled: every node is up, not rebuilding, holds no damaged key, and completed a complete
    /// pass that started after the heal and after the last repair anywhere.
    func repairCheckSettled(_ healedAt: UInt64) {
        let since = max(healedAt * Self.seqNanosPerTick, repair.lastActivity)
        let done = (0..<3).allSatisfy { i in
            guard let n = nodes[i], pausedUntil[i] == nil else { return false }
            return !repair.learnerOnly[i] && n.damagedKeyCount == 0
                && repair.lastCompletePassStart[i] > since
        }
        if done {
            repair.settled = true
            repair.stats.settleTicks = now - healedAt
        } else if now - healedAt > Self.repairSettleTicksMax && violations.isEmpty {
            repair.settled = true
            var keys: [[UInt8]] = []
            for st in storages { keys += st.liveKeys.filter { $0.first == 1 }.map { Array($0.dropFirst()) } }
            keys.sort { $0.lexicographicallyPrecedes($1) }
            var stuck: [String] = []
            var last: [UInt8]?
            for k in keys where k != last {
                last = k
                let at = (0..<3).filter { nodes[$0]?.inspect(k)?.damaged ?? false }.map { "n\($0 + 1)" }
                if !at.isEmpty {
                    stuck.append("\(keyName(k).debugDescription) at \(at.joined(separator: ","))")
                }
            }
            violations.append(
                violation(
                    check: "repair", key: "-",
                    detail:
                        "the scanners did not settle within \(Self.repairSettleTicksMax) ticks of the heal "
                        + "(learner-only \(repair.learnerOnly), damaged \((0..<3).map { nodes[$0]?.damagedKeyCount ?? -1 }): "
                        + "\(stuck.joined(separator: "; ")))"
                ))
        }
    }

    var repairDone: Bool { !config.repair || repair.settled }

    /// After the scanners settled: every key's chosen instance and value are the same on all three
    /// replicas (every record loaded from every storage), and no record is left damaged.
    func checkReplicasAgree() {
        guard config.repair else { return }
        var all: [[UInt8]] = []
        for s in storages { all += s.liveKeys.filter { $0.first == 1 } }
        all.sort { $0.lexicographicallyPrecedes($1) }
        var last: [UInt8]?
        for rk in all where rk != last {
            last = rk
            let key = Array(rk.dropFirst())
            repair.stats.keysCompared += 1
            var seen: [(chosen: UInt64, value: KeyValue?)] = []
            for i in 0..<3 {
                switch (try? storages[i].load(rk)) ?? .damaged {
                case .absent: seen.append((0, nil))
                case .damaged:
                    violations.append(
                        violation(
                            check: "replicas", key: keyName(key),
                            detail: "node \(i + 1)'s record is still damaged after repair settled"))
                    return
                case .state(let b):
                    guard let st = PaxosCodec.decode(b) else {
                        violations.append(
                            violation(
                                check: "replicas", key: keyName(key),
                                detail: "node \(i + 1)'s record does not decode after repair settled"))
                        return
                    }
                    seen.append((st.chosen, st.chosen == 0 ? nil : st.value))
                }
            }
            if !seen.allSatisfy({ $0.chosen == seen[0].chosen && $0.value == seen[0].value }) {
                let desc = seen.enumerated().map { i, s in
                    "n\(i + 1): chosen \(s.chosen) value \(s.value.map { "\($0.bytes.map { String(decoding: $0, as: UTF8.self) } ?? "nil")" } ?? "-")"
                }
                violations.append(
                    violation(
                        check: "replicas", key: keyName(key),
                        detail: "replicas differ after repair settled: " + desc.joined(separator: ", ")))
                return
            }
        }
    }

    /// Scenario: crashes `node` and wipes its disk (repair workload on); it restarts learner-only
    /// after `downTicks`.
    public func wipe(node i: Int, downTicks: UInt64) {
        precondition(config.repair, "wiping needs the repair workload (its marker and scanners)")
        nodes[i] = nil
        repairNodeStopped(i)
        guard replaceDisk(i, with: nil) else { return }
        downUntil[i] = now + downTicks
    }

    /// Scenario: crashes `node` and keeps a copy of its disk as the crash left it (a cold backup);
    /// it restarts after `downTicks`.
    public func crashAndBackUp(node i: Int, downTicks: UInt64) {
        crash(node: i, downTicks: downTicks)
        repair.backups[i] = storages[i].fileSystem.snapshot()
    }

    /// Scenario: copies `node`'s disk while it runs (a hot backup: what it has written so far,
    /// synced or not), for `crashAndRestoreBackup`.
    public func backUpWhileRunning(node i: Int) {
        repair.backups[i] = storages[i].fileSystem.snapshot()
    }

    /// Scenario: crashes `node` and replaces its disk with the copy `crashAndBackUp` kept; it
    /// restarts after `downTicks` as if nothing had happened (the incarnation check runs with the
    /// repair workload when `SimConfig.incarnationCheck` is set).
    public func crashAndRestoreBackup(node i: Int, downTicks: UInt64) {
        precondition(config.repair, "restoring needs the repair workload (its scanners rebuild the node)")
        guard let backup = repair.backups[i] else { preconditionFailure("no backup of node \(i + 1)") }
        nodes[i] = nil
        repairNodeStopped(i)
        guard replaceDisk(i, with: backup) else { return }
        downUntil[i] = now + downTicks
    }

    /// Node `i`'s disk replaced (the node is down): by an empty one (`backup` nil: wiped, it
    /// rebuilds at start) or by a copy of `backup` (restored: only the incarnation check can
    /// tell). False when the storage could not be opened (`storageFailed` recorded it).
    func replaceDisk(_ i: Int, with backup: MemoryFileSystem?) -> Bool {
        let bufferBytes = storages[i].writeBufferBytes
        do throws(StorageError) {
            if let backup {
                storages[i] = try BitcaskReplicaStorage(
                    fileSystem: backup.snapshot(), options: config.storage, writeBufferBytes: bufferBytes)
            } else {
                storages[i] = try BitcaskReplicaStorage(
                    options: config.storage, writeBufferBytes: bufferBytes)
            }
        } catch {
            storageFailed(i, error)
            return false
        }
        if backup == nil {
            repair.rebuildAtStart[i] = true
            repair.stats.wipes += 1
        } else {
            repair.restoredUnchecked[i] = true
            repair.stats.restores += 1
        }
        observer.lostEverything(node: i)
        return true
    }

    /// Scenario: whether `node` is learner-only (rebuilding) now.
    public func isLearnerOnly(_ node: Int) -> Bool { repair.learnerOnly[node] }

    /// Totals for `SimResult` (the scanners still running included).
    func repairResult() -> RepairStats {
        var st = repair.stats
        for s in repair.scanners { if let s { st.add(s.counters) } }
        return st
    }
}
