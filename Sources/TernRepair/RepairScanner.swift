public import TernConsensus
public import TernCore

/// Tunables of the anti-entropy scanner; times in nanoseconds of the shell's monotonic clock.
public struct RepairOptions: Sendable, Hashable {
    /// The ring is cut into 2^bucketBits ranges (buckets) by the top bits of a key's position
    /// (XXH64, as placement hashes it). A pass compares one digest per bucket and peer, so at rest
    /// it moves a few messages per bucket whatever the number of keys.
    public var bucketBits: UInt8 = 12
    /// Buckets per listing: a listing walks the node's whole key directory once, and the chunk's
    /// keys stay in memory while its buckets are scanned (and while peers ask about them).
    public var chunkBuckets = 256
    /// The default pace: records read per second and record bytes per second (in `server.toml`:
    /// `repair_keys_per_second`, `repair_mb_per_second`).
    public var keysPerSecond: Double = 1_000
    public var bytesPerSecond: Double = 4_194_304
    /// The pace of a pass started by `tern repair now` (and of a rebuild) ...
    public var fullPaceKeysPerSecond: Double = 1_000_000
    public var fullPaceBytesPerSecond: Double = 1_073_741_824
    /// ... while no client request waits on the node; while some do, full pace yields to them and
    /// reads at most this many records per second.
    public var fullPaceBusyKeysPerSecond: Double = 1_000
    /// Pause between one pass's end and the next one's start.
    public var passIntervalNanos: UInt64 = 60_000_000_000
    /// A peer that has not answered a bucket's summary within this is given up for that bucket in
    /// this pass (counted; the pass does not count as complete).
    public var peerTimeoutNanos: UInt64 = 5_000_000_000
    /// Buckets whose summaries may await answers at once.
    public var bucketsInFlightMax = 8
    /// The same for a full-pace pass of a node that is not rebuilding (`tern repair now`); a
    /// rebuild keeps `bucketsInFlightMax`, since every answer it gets starts recoveries.
    public var fullPaceBucketsInFlightMax = 128
    /// Bound of one `keys` reply (keys plus summaries); a longer list is cut (`truncated`).
    public var keysReplyBytesMax = 1 << 20
    /// While rebuilding (learner-only), the scan waits while more keys than this are still damaged
    /// (each one is a recovery Phase 1 in flight).
    public var rebuildDamagedMax = 2_048
    /// A learner-only node rebuilds in bulk (docs/REPAIR.md, "Bulk rebuild"): it fences its peers
    /// (a node-wide promise floor, durable on each), then copies their whole records bucket by
    /// bucket, instead of recovering every key under a fresh ballot of its own. False: the
    /// per-key recovery of every key (the way before 2026-12-07).
    public var bulkRebuild = true
    /// Bound of the record bytes of one `records` reply; keys beyond it go without their record
    /// (the rebuilding node recovers those one by one).
    public var recordsReplyBytesMax = 1 << 20
    /// Keys under this prefix that the scan reads here, where this node is the key's first
    /// replica (campus A's, so one node per key reports it), are handed to the shell as garbage
    /// candidates (`RepairReady.candidates`); the services decide (an orphaned inbox bucket).
    public var candidatePrefix: [UInt8] = [0]
    /// Deliberately broken variants (simulator only).
    public var mutant: RepairMutant = .none
    public init() {}

    /// The number of buckets.
    public var bucketCount: Int { 1 << Int(bucketBits) }

    /// The bucket of a ring position (XXH64 of a key): its top `bucketBits` bits. The one place
    /// that says it, for the scanner and for the shells' listings.
    public func bucket(ofPosition position: UInt64) -> Int {
        Int(truncatingIfNeeded: position >> (64 - UInt64(bucketBits)))
    }

    /// The bucket of a stored key record (`ReplicaNode.recordKey`: 1, then the key), nil for any
    /// other record: the storage engine's partition of it (`KeyPartitioning`), so that a listing
    /// of a chunk's buckets reads only their keys.
    public func bucket(ofRecordKey record: UnsafeRawBufferPointer) -> Int? {
        guard record.first == 1 else { return nil }
        return bucket(ofPosition: XXH64.hash(UnsafeRawBufferPointer(rebasing: record.dropFirst())))
    }
}

/// Deliberately broken scanners, each of which the simulator's checks must catch.
public enum RepairMutant: String, Sendable, Hashable, CaseIterable {
    case none
    /// Repairs a replica that is behind, missing or rebuilding by copying the peer's stored record
    /// into it as if it were its own ("copy bytes blindly", `NodeCore.RepairAction.copy`): a
    /// replica that lost its promises then votes with the peer's, not under a fresh ballot both
    /// peers promised.
    case copyBytes = "copy-bytes"
    /// Not the scanner's: a restarted node votes at once, without the incarnation check
    /// (`IncarnationGuard`), so a directory restored from an older backup votes with the backup's
    /// promises. The simulator's `--restore` fault must catch it.
    case skipIncarnationCheck = "skip-incarnation-check"
    /// The bulk rebuild copies each key's chosen value but not the peers' open slots: a value
    /// chosen by the rebuilding node's lost vote and one peer's (a slot there) can be lost to a
    /// later Phase 1 of the rebuilt node and the other peer.
    case copyWithoutSlots = "copy-without-slots"
    /// The bulk rebuild copies without any fence: no floor on the peers, none on this node, and
    /// each copied key promises only its copied slot's ballot. A promise this node gave before it
    /// lost its disk (a Phase 1 whose Accepts come late) is then forgotten: an older ballot gets
    /// this node's vote, and so does the later one, each with another value.
    case copyUnfenced = "copy-unfenced"
}

/// What the scanner found in one bucket that the protocol says cannot happen: two different
/// values chosen at one instance. Reported, counted, logged; never "repaired" by picking one.
public struct SafetyAlarm: Sendable, Hashable, CustomStringConvertible {
    public var key: [UInt8]
    public var instance: UInt64
    public var peer: NodeID
    public var mine: UInt64
    public var theirs: UInt64
    public var description: String {
        "key \(String(decoding: key, as: UTF8.self).debugDescription) instance \(instance): value digest "
            + "\(String(mine, radix: 16)) here, \(String(theirs, radix: 16)) at \(peer)"
    }
}

/// Counters of the scanner (`/status`, `/metrics`).
public struct RepairCounters: Sendable, Hashable {
    /// Passes finished, and whether the last one compared every bucket with every peer.
    public var passesCompleted = 0
    public var lastPassComplete = false
    /// The shell's clock at the last pass's end (0: none yet).
    public var lastPassEndedAt: UInt64 = 0
    /// Nanoseconds the last pass took.
    public var lastPassNanos: UInt64 = 0
    /// Records read (own scan and answers to peers), and their bytes.
    public var keysRead = 0
    public var bytesRead = 0
    /// Keys compared with a peer's list (only where digests differed).
    public var keysCompared = 0
    /// Buckets whose digest matched a peer's, and buckets that needed a key list.
    public var bucketsMatched = 0
    public var bucketsDiffered = 0
    /// Repairs by cause: this replica was behind (learned); a peer was behind (taught); a key was
    /// missing here (recovered as damaged); a peer was told it misses keys; a damaged record was
    /// found by the scan (recovered as damaged).
    public var behind = 0
    public var taught = 0
    public var missing = 0
    public var peerMissing = 0
    public var damaged = 0
    /// Keys a learner-only node loaded to rebuild them (each recovered as damaged).
    public var rebuilt = 0
    /// Keys a learner-only node installed from its peers' records (bulk rebuild), and their bytes.
    public var copied = 0
    public var copiedBytes = 0
    /// Fences raised here for a rebuilding peer.
    public var fencesRaised = 0
    /// Two values chosen at one instance (must stay 0).
    public var alarms = 0
    /// A peer did not answer a bucket's summary in time.
    public var peerTimeouts = 0
    /// Peer messages that did not decode or made no sense.
    public var badMessages = 0
    public init() {}
}

/// Where a pass is.
public struct RepairProgress: Sendable, Hashable {
    /// The pass under way (or the last one, between passes).
    public var pass: UInt64
    /// Buckets of this pass finished, out of `bucketsTotal`.
    public var bucketsDone: Int
    public var bucketsTotal: Int
    /// Per chunk of `chunkBuckets` buckets (a range of the ring): buckets done.
    public var chunksDone: [Int]
    public var running: Bool
    public var fullPace: Bool
    public var learnerOnly: Bool
}

/// A bulk rebuild's records of one bucket, to install (`RepairReady.installs`): `records` holds
/// `keys[i]`'s merged record at span `i` (one buffer for the bucket, no array per record).
public struct RepairInstall: Sendable {
    public var bucket: Int
    public var keys: [[UInt8]]
    public var records: PackedBytes
    /// Keys to distrust (they recover one by one), besides any whose load is under way.
    public var distrust: [[UInt8]]
    public init(bucket: Int, keys: [[UInt8]], records: PackedBytes, distrust: [[UInt8]]) {
        self.bucket = bucket
        self.keys = keys
        self.records = records
        self.distrust = distrust
    }
    /// The records as pairs, each its own arrays (tests).
    public var pairs: [(key: [UInt8], record: [UInt8])] {
        keys.indices.map { (keys[$0], Array(records[$0]!)) }
    }
}

/// What the shell must do after feeding the scanner its inputs.
public struct RepairReady: Sendable {
    /// Peer messages (service kind 3), in order, per destination.
    public var messages: [(to: NodeID, bytes: [UInt8])] = []
    /// Key listings to make: the keys this node stores (`ReplicaNode.recordKey` prefix removed)
    /// whose bucket is in `buckets`; answer each with `RepairScanner.listed`.
    public var listings: [(chunk: Int, buckets: Range<Int>)] = []
    /// Records to read (the key records of these keys); answer each with `RepairScanner.read`.
    public var reads: [(id: UInt64, keys: [[UInt8]])] = []
    /// Whole buckets to read (with `RepairScanner.readsBuckets`): every key record this node
    /// stores in the bucket; answer each with `RepairScanner.read(id:keys:values:)`.
    public var bucketReads: [(id: UInt64, bucket: Int)] = []
    /// What to do to keys (`NodeCore.repair`).
    public var actions: [(key: [UInt8], action: NodeCore.RepairAction)] = []
    /// Two values chosen at one instance: log them (both digests and the local record).
    public var alarms: [SafetyAlarm] = []
    /// A rebuilding peer asks for a fence of at least `floor`: raise this node's
    /// (`ReplicaNode.fenceFloor`, `raiseFence`) and, once durable, call `fenceRaised`.
    public var fenceRequests: [(peer: NodeID, floor: Ballot)] = []
    /// This rebuilding node's own fence: raise it, and call `ownFenceDurable` once durable.
    public var ownFence: Ballot?
    /// Records to install (learner-only, bulk rebuild): write each key's record (where
    /// `ReplicaNode.mayInstallCopy` allows; unsynced is fine, the rebuild marker's removal syncs),
    /// and `distrust` the keys listed there plus any whose load is under way.
    public var installs: [RepairInstall] = []
    /// Keys under `RepairOptions.candidatePrefix` with a value here: the services check whether
    /// they are garbage (nothing reaches them any more) and delete them through the protocol.
    public var candidates: [[UInt8]] = []
    /// Keys whose value here has a deadline at or below `RepairScanner.expiryHorizonMs`, found by
    /// this node's scan where it is the key's first replica: the node removes them through the
    /// protocol (the paced expiry sweep, docs/DATA.md).
    public var expired: [[UInt8]] = []
    /// Peers newly seen rebuilding (asking for full lists): keys damaged here only on suspicion
    /// that they share trust their memory again (`NodeCore.peerRebuilding`).
    public var rebuildingPeers: [NodeID] = []
    /// Peer messages dropped, and why.
    public var badMessages: [(from: NodeID, why: String)] = []
    /// A pass ended (`complete`: every bucket compared with every peer).
    public var passEnded: (pass: UInt64, complete: Bool)?
    public var isEmpty: Bool {
        messages.isEmpty && listings.isEmpty && reads.isEmpty && bucketReads.isEmpty && actions.isEmpty
            && alarms.isEmpty
            && badMessages.isEmpty && passEnded == nil && candidates.isEmpty && rebuildingPeers.isEmpty
            && expired.isEmpty && fenceRequests.isEmpty && ownFence == nil && installs.isEmpty
    }
}

/// The anti-entropy scanner of one node, a deterministic state machine (no clock, socket, thread
/// or file): the shell lists keys, reads records, carries messages and repair actions, and passes
/// the time.
///
/// A pass walks the ring bucket by bucket, paced. For each bucket it reads this node's records of
/// the keys it replicates there, XORs one mixed digest per key (`KeySummary.entryDigest`) per peer
/// that shares the key, and sends each peer its digest. The peer compares with its own (cached
/// from its own reads until a write touches the bucket); equal digests end the bucket in one round
/// trip. Only where they differ are per-key summaries exchanged, and every difference is repaired
/// through the protocol: a replica behind learns (`learn`), a peer behind is taught the chosen
/// value (`chosen`), a key missing on one side is recovered as damaged there (learn from both peers
/// under a fresh ballot promised by both), a damaged record found by the read is recovered the same
/// way, and two values chosen at one instance raise a `SafetyAlarm` — never "fixed" by picking one.
///
/// While the node is learner-only (it lost what it promised), each bucket asks every peer for its
/// whole list, and every key of every list is loaded (learner-only loads every key damaged), so it
/// recovers under the damaged-key rule; the shell leaves learner-only after a complete pass once
/// no key is still damaged.
public final class RepairScanner {
    public let me: NodeID
    /// Every other node of the cluster (a learner-only node asks all of them).
    public let others: [NodeID]
    public private(set) var options: RepairOptions
    let replicas: @Sendable ([UInt8]) -> [NodeID]

    public private(set) var counters = RepairCounters()
    /// Set by the shell: the node is rebuilding. A new rebuild fences its peers again.
    public var learnerOnly = false {
        didSet {
            if learnerOnly != oldValue {
                fenceState = .idle
                copiedBuckets = []
            }
        }
    }
    /// Set by the shell when the node becomes learner-only: the floor it asks its peers for first
    /// (its own epoch's first ballot; each peer raises it above every ballot it voted for).
    public var fenceRequest: Ballot = .zero

    enum FenceState: Equatable {
        case idle
        case asking(floor: Ballot, confirmed: [NodeID: Ballot], retryAt: UInt64)
        case persisting(Ballot)
        case done(Ballot)
    }
    var fenceState = FenceState.idle
    /// Buckets whose records were installed in this rebuild: never copied again (their keys may
    /// have voted since), and their keys load as they are (`isCopied`).
    var copiedBuckets = Set<Int>()
    /// Set by the shell when its storage reads a whole bucket's records at once (its key records
    /// are grouped by bucket, `RepairOptions.bucket(ofRecordKey:)`): a rebuilding peer's fetch is
    /// then answered from one such read (`RepairReady.bucketReads`), with no listing and no
    /// lookup per key.
    public var readsBuckets = false
    /// The expiry horizon (Unix ms), set by the shell: the scan reports keys expired by it.
    public var expiryHorizonMs: UInt64 = 0
    var now: UInt64 = 0
    var lastRefill: UInt64?
    var keyCredits: Double = 0
    var byteCredits: Double = 0
    public private(set) var fullPace = false
    /// Full pace lasts until this pass has ended (`startFullPass`: a whole pass that began after
    /// the request runs at full pace, not only the rest of the pass under way).
    var fullPaceThrough: UInt64 = 0
    var busy = false
    var clientsWaiting = false
    /// Client requests waiting beyond which the default-pace scan waits.
    public static let busyRequests = 256
    var damagedNow = 0

    enum Phase: Equatable {
        case waiting(until: UInt64)
        case listing(chunk: Int)
        case scanning(chunk: Int, next: Int)
    }
    var phase: Phase
    public private(set) var pass: UInt64 = 0
    var passStartedAt: UInt64 = 0
    var passComplete = true
    var bucketsDone = 0
    var chunksDone: [Int]

    /// Cached listings: chunk → bucket → keys (at most three chunks: this node's own and two
    /// peers' current ones); new keys join them as they are written.
    var listings: [Int: [Int: Set<[UInt8]>]] = [:]
    var listingOrder: [Int] = []
    var listingsAsked: Set<Int> = []
    /// Answers to peers waiting for a chunk's listing.
    var waitingForListing: [Int: [(NodeID, RepairMessage)]] = [:]

    /// Digest per bucket per peer, from the last read of the bucket, until a write touches it.
    var digests: [Int: [NodeID: UInt64]] = [:]
    /// Writes seen per bucket (a read issued before a write must not fill the cache).
    var bucketWrites: [Int: UInt64] = [:]

    enum ReadPurpose {
        case scan(bucket: Int, writes: UInt64)
        case answer(peer: NodeID, pass: UInt64, bucket: Int, full: Bool, digest: UInt64, writes: UInt64)
        case fetch(peer: NodeID, pass: UInt64, bucket: Int)
    }
    var reads: [UInt64: ReadPurpose] = [:]
    var nextRead: UInt64 = 0

    struct Pending {
        /// This node's keys of the bucket: nil = damaged here.
        var mine: [[UInt8]: KeySummary?]
        var awaiting: [NodeID: UInt64]
        /// A bulk rebuild's fetch: the peers' records so far, and whether one was cut.
        var fetching = false
        var records: [NodeID: RecordList] = [:]
        var cut = false
        /// A peer answered that it rebuilds too: nothing of this bucket is copied.
        var peerRebuilding = false
    }
    var pending: [Int: Pending] = [:]
    var scansReading = 0
    /// Peers seen rebuilding (a full summary from them), until when.
    var rebuilding: [NodeID: UInt64] = [:]
    /// Peers' summaries that need reads, waiting for this node's budget (oldest first).
    var answersWaiting: [(NodeID, RepairMessage)] = []
    /// Beyond this many waiting summaries, more are dropped (their senders time out and retry).
    static let answersWaitingMax = 4_096

    /// How long a full summary marks its sender as rebuilding.
    static let rebuildingNanos: UInt64 = 30_000_000_000

    func isRebuilding(_ peer: NodeID) -> Bool { (rebuilding[peer] ?? 0) > now }

    /// `peer` is rebuilding (it sent a full summary, a fence request or a fetch): newly seen, it is
    /// reported (`RepairReady.rebuildingPeers`).
    func markRebuilding(_ peer: NodeID) {
        if !isRebuilding(peer) { out.rebuildingPeers.append(peer) }
        rebuilding[peer] = now + Self.rebuildingNanos
    }

    /// True when another replica of `key` than this node is rebuilding: a blank replica is then
    /// not marked missing (see `RepairReady.rebuildingPeers`).
    func hasRebuildingReplica(_ key: [UInt8]) -> Bool {
        !rebuilding.isEmpty && replicas(key).contains { $0 != me && isRebuilding($0) }
    }

    var out = RepairReady()

    /// A scanner for node `me`; `replicas` is the placement (the key's three replicas), `others`
    /// every other node of the cluster map.
    public init(
        me: NodeID, others: [NodeID], options: RepairOptions, now: UInt64,
        replicas: @escaping @Sendable ([UInt8]) -> [NodeID]
    ) {
        precondition(options.bucketBits >= 1 && options.bucketBits <= 20, "1 to 20 bucket bits")
        precondition(options.chunkBuckets >= 1 && options.bucketCount % options.chunkBuckets == 0)
        self.me = me
        self.others = others.filter { $0 != me }.sorted()
        self.options = options
        self.replicas = replicas
        self.now = now
        chunksDone = Array(repeating: 0, count: options.bucketCount / options.chunkBuckets)
        // The first pass starts after a short delay (let the node settle), not a whole interval.
        phase = .waiting(until: now + min(options.passIntervalNanos, 5_000_000_000))
    }

    var chunkCount: Int { options.bucketCount / options.chunkBuckets }

    /// The bucket of a key: the top bits of its ring position.
    public func bucket(of key: [UInt8]) -> Int { bucket(ofPosition: XXH64.hash(key)) }
    public func bucket(ofPosition position: UInt64) -> Int { options.bucket(ofPosition: position) }
    func chunk(ofBucket b: Int) -> Int { b / options.chunkBuckets }
    func buckets(ofChunk c: Int) -> Range<Int> {
        (c * options.chunkBuckets)..<((c + 1) * options.chunkBuckets)
    }

    // MARK: - Inputs

    /// Time passes. `clientRequests`: client requests waiting on the node now — beyond
    /// `busyRequests` this node's own scan at the default pace waits, and any at all slow a
    /// full-pace pass to `fullPaceBusyKeysPerSecond` (answers to peers go on). `damagedKeys`: keys
    /// waiting for recovery now (`NodeCore.damagedKeyCount`).
    public func tick(now t: UInt64, clientRequests: Int = 0, damagedKeys: Int = 0) {
        advance(t)
        busy = clientRequests > Self.busyRequests
        clientsWaiting = clientRequests > 0
        damagedNow = damagedKeys
        refill()
        checkTimeouts()
        drive()
    }

    /// Runs a whole pass at full pace from now (`tern repair now`): at once when between passes;
    /// when a pass is under way, it finishes at full pace and the next starts right after it, also
    /// at full pace (so the full-pace pass covers every bucket after the request).
    public func startFullPass() {
        fullPace = true
        if case .waiting = phase {
            fullPaceThrough = pass + 1
            phase = .waiting(until: now)
        } else {
            fullPaceThrough = pass + 1
        }
        drive()
    }

    /// Changes the pace (the shell's `CONFIG SET`-style knobs); takes effect at once.
    public func setPace(keysPerSecond: Double, bytesPerSecond: Double) {
        options.keysPerSecond = max(keysPerSecond, 1)
        options.bytesPerSecond = max(bytesPerSecond, 1)
    }

    /// The keys of `chunk` this node stores (what `listings` asked for).
    public func listed(chunk: Int, keys: [[UInt8]]) {
        guard listingsAsked.contains(chunk) else { return }
        var byBucket: [Int: Set<[UInt8]>] = [:]
        for k in keys {
            let b = bucket(of: k)
            guard chunk == self.chunk(ofBucket: b) else { continue }
            byBucket[b, default: []].insert(k)
        }
        listed(chunk: chunk, byBucket)
    }

    /// The keys of `chunk` this node stores, already grouped by bucket: `lists[i]` holds those of
    /// the chunk's `i`-th bucket (the storage engine's partitions, `bucket(ofRecordKey:)`).
    public func listed(chunk: Int, buckets lists: [[[UInt8]]]) {
        guard listingsAsked.contains(chunk) else { return }
        var byBucket: [Int: Set<[UInt8]>] = [:]
        let first = buckets(ofChunk: chunk).lowerBound
        for (i, keys) in lists.enumerated() where !keys.isEmpty && i < options.chunkBuckets {
            byBucket[first + i] = Set(keys)
        }
        listed(chunk: chunk, byBucket)
    }

    func listed(chunk: Int, _ byBucket: [Int: Set<[UInt8]>]) {
        guard listingsAsked.remove(chunk) != nil else { return }
        listings[chunk] = byBucket
        listingOrder.removeAll { $0 == chunk }
        listingOrder.append(chunk)
        trimListings()
        if case .listing(let c) = phase, c == chunk {
            phase = .scanning(chunk: chunk, next: buckets(ofChunk: chunk).lowerBound)
        }
        for (peer, m) in waitingForListing.removeValue(forKey: chunk) ?? [] { handle(from: peer, m) }
        drive()
    }

    /// The records read for `reads` entry `id`, in any order.
    public func read(id: UInt64, records: [(key: [UInt8], record: LoadResult)]) {
        if case .fetch? = reads[id] {
            var packed = PackedBytes()
            for (_, record) in records {
                switch record {
                case .absent: packed.appendMissing(.absent)
                case .damaged: packed.appendMissing(.damaged)
                case .state(let bytes): packed.append(bytes)
                }
            }
            return read(id: id, keys: records.map(\.key), packed: packed)
        }
        guard let purpose = reads.removeValue(forKey: id) else { return }
        var summaries: [[UInt8]: KeySummary?] = [:]
        summaries.reserveCapacity(records.count)
        var bytes = 0
        for (key, record) in records {
            counters.keysRead += 1
            if case .state(let b) = record { bytes += b.count }
            let s = KeySummary(record)
            if s == nil {
                counters.damaged += 1
                out.actions.append((key, .load))
            }
            summaries[key] = s
        }
        counters.bytesRead += bytes
        // Keys of an answer were charged when it was issued; bytes are known only now.
        if case .scan = purpose {
            spend(keys: records.count, bytes: bytes)
        } else {
            spend(keys: 0, bytes: bytes)
        }
        switch purpose {
        case .scan(let b, let writes):
            scansReading -= 1
            if !learnerOnly && expiryHorizonMs != 0 {
                for (key, record) in records where replicas(key).first == me {
                    if case .state(let bytes) = record, let s = PaxosCodec.decode(bytes),
                        s.value.isExpired(horizonMs: expiryHorizonMs)
                            || (KeyLayout.isGroupKey(key)
                                && GroupValue(s.value.bytes).hasExpired(horizonMs: expiryHorizonMs))
                    {
                        out.expired.append(key)
                    }
                }
            }
            if !learnerOnly && !options.candidatePrefix.isEmpty {
                for (key, record) in records
                where key.starts(with: options.candidatePrefix) && replicas(key).first == me {
                    if case .state(let bytes) = record, PaxosCodec.decode(bytes)?.value.bytes != nil {
                        out.candidates.append(key)
                    }
                }
            }
            scanned(bucket: b, summaries, cache: bucketWrites[b, default: 0] == writes)
        case .answer(let peer, let pass, let b, let full, let theirs, let writes):
            let mineDigest = digest(of: summaries, sharedWith: peer)
            if bucketWrites[b, default: 0] == writes { digests[b, default: [:]][peer] = mineDigest }
            reply(to: peer, pass: pass, bucket: b, full: full, theirDigest: theirs, summaries, mineDigest)
        case .fetch:
            break  // answered above
        }
        drive()
    }

    /// The records read for `reads` entry `id` (`keys` as asked), in one buffer
    /// (`Store.get(many:prefix:)`): span `i` is `keys[i]`'s record, `Span.absent` or
    /// `Span.damaged`. A fetch is answered from the buffer as it is (no array per record); the
    /// other reads take each record as its own array.
    public func read(id: UInt64, keys: [[UInt8]], packed: PackedBytes) {
        guard let purpose = reads[id] else { return }
        guard case .fetch(let peer, let pass, let b) = purpose else {
            var records: [(key: [UInt8], record: LoadResult)] = []
            records.reserveCapacity(keys.count)
            for (i, key) in keys.enumerated() {
                let span = packed.spans[i]
                if span.isPresent {
                    records.append((key, .state(Array(packed.buffer[span.range]))))
                } else {
                    records.append((key, span == .absent ? .absent : .damaged))
                }
            }
            return read(id: id, records: records)
        }
        reads[id] = nil
        answerFetch(peer: peer, pass: pass, bucket: b, keys: keys, packed)
        drive()
    }

    /// A whole bucket read for `bucketReads` entry `id`: `keys[i]`'s record at span `i` of
    /// `values` (`Span.damaged`: it fails its checksum). Only the keys this node and the asking
    /// peer both replicate are answered, as from a listing.
    public func read(id: UInt64, keys: PackedBytes, values: PackedBytes) {
        guard case .fetch(let peer, let pass, let b)? = reads[id] else { return }
        reads[id] = nil
        var shared: [[UInt8]] = []
        var records = PackedBytes()
        shared.reserveCapacity(keys.count)
        records.spans.reserveCapacity(keys.count)
        records.buffer.reserveCapacity(values.buffer.count)
        keys.buffer.withUnsafeBytes { k in
            values.buffer.withUnsafeBytes { v in
                for i in 0..<keys.count {
                    let key = Array(UnsafeRawBufferPointer(rebasing: k[keys.spans[i].range]))
                    let r = replicas(key)
                    guard r.contains(me) && r.contains(peer) else { continue }
                    shared.append(key)
                    let span = values.spans[i]
                    if span.isPresent {
                        records.append(UnsafeRawBufferPointer(rebasing: v[span.range]))
                    } else {
                        records.appendMissing(span)
                    }
                }
            }
        }
        answerFetch(peer: peer, pass: pass, bucket: b, keys: shared, records)
        drive()
    }

    /// Answers a rebuilding peer's `fetch` with the records as stored: a fetch needs no summary,
    /// so a record is only checked (`PaxosCodec.isWhole`: what a summary's decode checks, without
    /// building the state), not decoded, and the message is written from the read's buffer.
    func answerFetch(peer: NodeID, pass: UInt64, bucket b: Int, keys: [[UInt8]], _ packed: PackedBytes) {
        var bytes = 0
        for (i, key) in keys.enumerated() {
            counters.keysRead += 1
            let span = packed.spans[i]
            if span == .absent { continue }
            if span.isPresent {
                bytes += span.length
                if PaxosCodec.isWhole(packed.buffer, in: span.range) { continue }
            }
            counters.damaged += 1
            out.actions.append((key, .load))
        }
        counters.bytesRead += bytes
        // Keys of an answer were charged when it was issued; bytes are known only now.
        spend(keys: 0, bytes: bytes)
        var order = Array(keys.indices)
        if !Self.isSorted(keys) { order.sort { keys[$0].lexicographicallyPrecedes(keys[$1]) } }
        out.messages.append(
            (
                peer,
                RepairMessage.encodeRecords(
                    pass: pass, bucket: UInt32(b), rebuilding: learnerOnly, keys: keys, records: packed,
                    indices: order, keyBytesMax: options.keysReplyBytesMax,
                    recordBytesMax: options.recordsReplyBytesMax)
            ))
    }

    /// Whether `keys` are in strictly increasing byte order.
    static func isSorted<C: Sequence>(_ keys: C) -> Bool where C.Element == [UInt8] {
        var previous: [UInt8]?
        for k in keys {
            if let p = previous, !p.lexicographicallyPrecedes(k) { return false }
            previous = k
        }
        return true
    }

    /// Keys whose records this node just wrote: their buckets' cached digests are stale, and new
    /// keys join the cached listings.
    public func noteWritten(_ keys: [[UInt8]]) {
        for k in keys {
            let b = bucket(of: k)
            bucketWrites[b, default: 0] += 1
            digests[b] = nil
            let c = chunk(ofBucket: b)
            if listings[c] != nil { listings[c]![b, default: []].insert(k) }
        }
    }

    /// `noteWritten` for keys all of bucket `b` (a bulk rebuild's install): no hashing per key.
    public func noteWritten(_ keys: [[UInt8]], bucket b: Int) {
        guard !keys.isEmpty else { return }
        bucketWrites[b, default: 0] += 1
        digests[b] = nil
        let c = chunk(ofBucket: b)
        if listings[c] != nil { listings[c]![b, default: []].formUnion(keys) }
    }

    /// The shell's node became learner-only (after `learnerOnly = true`): its peers are asked for a
    /// fence from its epoch up, and keys of the buckets copied since load as they are.
    public func beginBulkRebuild(on replica: ReplicaNode) {
        fenceRequest = Ballot(round: UInt64(replica.epoch) << 32, node: NodeID(0))
        replica.isCopied = { [weak self] key in self?.isCopied(key) ?? false }
    }

    /// This node's fence is durable at `floor` (≥ what `peer` asked): tell the peer.
    public func fenceRaised(for peer: NodeID, floor: Ballot) {
        counters.fencesRaised += 1
        send(.fenced(floor: floor), to: peer)
    }

    /// This rebuilding node's own fence is durable: the copy may begin.
    public func ownFenceDurable(_ floor: Ballot) {
        guard case .persisting(let f) = fenceState, f == floor else { return }
        fenceState = .done(floor)
        drive()
    }

    /// True for a key whose bucket this rebuild installed (see `ReplicaNode.isCopied`).
    public func isCopied(_ key: [UInt8]) -> Bool {
        !copiedBuckets.isEmpty && copiedBuckets.contains(bucket(of: key))
    }

    /// A repair message from `peer`.
    public func receive(from peer: NodeID, _ bytes: [UInt8]) {
        if bytes.first == RepairMessage.recordsKind {
            // A bucket's records: left where they lie in the message (no array per record).
            guard let r = RepairMessage.decodeRecords(bytes) else {
                return bad(peer, "malformed repair message")
            }
            received(from: peer, bucket: r.bucket, truncated: r.truncated, rebuilding: r.rebuilding, r.list)
            drive()
            return
        }
        guard let m = RepairMessage.decode(bytes) else { return bad(peer, "malformed repair message") }
        handle(from: peer, m)
        drive()
    }

    /// Takes what the shell must do now.
    public func ready() -> RepairReady {
        drive()
        let r = out
        out = RepairReady()
        return r
    }

    /// Where the pass is.
    public var progress: RepairProgress {
        var running = true
        if case .waiting = phase { running = false }
        return RepairProgress(
            pass: pass, bucketsDone: bucketsDone, bucketsTotal: options.bucketCount, chunksDone: chunksDone,
            running: running, fullPace: fullPace, learnerOnly: learnerOnly)
    }

    // MARK: - Pace

    func advance(_ t: UInt64) { if t > now { now = t } }

    func refill() {
        guard let last = lastRefill else {
            lastRefill = now
            return
        }
        let dt = Double(now - last) / 1e9
        lastRefill = now
        var (k, b) =
            fullPace
            ? (options.fullPaceKeysPerSecond, options.fullPaceBytesPerSecond)
            : (options.keysPerSecond, options.bytesPerSecond)
        if fullPace && clientsWaiting {
            k = min(k, max(options.fullPaceBusyKeysPerSecond, options.keysPerSecond))
        }
        // At most a tenth of a second's worth saved up.
        keyCredits = min(keyCredits + k * dt, max(k / 10, 1))
        byteCredits = min(byteCredits + b * dt, max(b / 10, 1))
    }

    func spend(keys: Int, bytes: Int) {
        keyCredits -= Double(keys)
        byteCredits -= Double(bytes)
    }

    // MARK: - The pass

    func drive() {
        while keyCredits > 0, !answersWaiting.isEmpty {
            let (peer, m) = answersWaiting.removeFirst()
            let saved = answersWaiting
            answersWaiting = []
            handle(from: peer, m)
            answersWaiting = answersWaiting + saved
        }
        var steps = 0
        while steps < 64 {
            steps += 1
            switch phase {
            case .waiting(let until):
                guard now >= until else { return }
                if learnerOnly && options.bulkRebuild && !fenced() { return }
                startPass()
            case .listing:
                return
            case .scanning(let c, let next):
                let range = buckets(ofChunk: c)
                if next >= range.upperBound {
                    // The chunk's buckets are all sent; wait for their answers, then move on.
                    guard scansReading == 0, !pending.keys.contains(where: { chunk(ofBucket: $0) == c })
                    else {
                        return
                    }
                    if c + 1 < chunkCount {
                        requestListing(c + 1, forScan: true)
                    } else {
                        endPass()
                    }
                    continue
                }
                guard canScan() else { return }
                scan(bucket: next)
                phase = .scanning(chunk: c, next: next + 1)
            }
        }
    }

    func canScan() -> Bool {
        // A rebuild keeps few buckets in flight: each answer loads every key of the peers' lists,
        // and too many recoveries at once only retransmit (a 1M-key rebuild livelocked with
        // 31 000 of them, twice: 128 buckets' lists arrive before any load is counted).
        // A bulk copy starts no recoveries: it keeps as many buckets in flight as a full-pace pass.
        let inFlightMax =
            fullPace && (!learnerOnly || bulkCopying)
            ? options.fullPaceBucketsInFlightMax : options.bucketsInFlightMax
        if pending.count + scansReading >= inFlightMax { return false }
        if keyCredits <= 0 || byteCredits <= 0 { return false }
        if busy && !fullPace { return false }
        if learnerOnly && damagedNow > options.rebuildDamagedMax { return false }
        return true
    }

    // MARK: - The fence (bulk rebuild)

    /// Whether the copy may begin: every peer's fence and this node's own are durable. Starts
    /// asking when nothing was asked yet.
    func fenced() -> Bool {
        switch fenceState {
        case .idle:
            // The mutant copies at once, with no fence at all.
            if options.mutant == .copyUnfenced { return true }
            let floor = fenceRequest
            for p in others { send(.fence(floor: floor), to: p) }
            fenceState = .asking(floor: floor, confirmed: [:], retryAt: now + options.peerTimeoutNanos)
            return false
        case .asking, .persisting: return false
        case .done: return true
        }
    }

    /// A peer's fence is durable at `floor`.
    func confirmed(_ peer: NodeID, _ floor: Ballot) {
        guard case .asking(var target, var confirmed, let retryAt) = fenceState else { return }
        confirmed[peer] = max(confirmed[peer] ?? .zero, floor)
        if floor > target {
            // Some peer voted above what the others were asked: every peer goes above it too.
            target = floor
            for p in others where !Self.covers(confirmed[p], target) { send(.fence(floor: target), to: p) }
        }
        if others.allSatisfy({ Self.covers(confirmed[$0], target) }) {
            fenceState = .persisting(target)
            out.ownFence = target
        } else {
            fenceState = .asking(floor: target, confirmed: confirmed, retryAt: retryAt)
        }
    }

    /// Asks again the peers that have not confirmed (lost messages, a peer down).
    func retryFence() {
        guard case .asking(let target, let confirmed, let retryAt) = fenceState, now >= retryAt else {
            return
        }
        for p in others where !Self.covers(confirmed[p], target) { send(.fence(floor: target), to: p) }
        fenceState = .asking(floor: target, confirmed: confirmed, retryAt: now + options.peerTimeoutNanos)
    }

    /// A peer's confirmed fence (nil: none yet) is at or above `target`.
    static func covers(_ confirmed: Ballot?, _ target: Ballot) -> Bool {
        confirmed.map { $0 >= target } ?? false
    }

    var bulkCopying: Bool {
        guard learnerOnly && options.bulkRebuild else { return false }
        if case .done = fenceState { return true }
        return options.mutant == .copyUnfenced
    }

    var fenceFloor: Ballot {
        if options.mutant == .copyUnfenced { return .zero }
        switch fenceState {
        case .done(let f), .persisting(let f): return f
        case .asking(let f, _, _): return f
        case .idle: return fenceRequest
        }
    }

    func startPass() {
        pass += 1
        passStartedAt = now
        passComplete = true
        bucketsDone = 0
        chunksDone = Array(repeating: 0, count: chunkCount)
        requestListing(0, forScan: true)
    }

    func endPass() {
        counters.passesCompleted += 1
        counters.lastPassComplete = passComplete
        counters.lastPassEndedAt = now
        counters.lastPassNanos = now - passStartedAt
        out.passEnded = (pass, passComplete)
        // A rebuilding node tries again soon (at full pace): it serves nothing until a pass is
        // complete. A full-pace request made during this pass runs the next one at once.
        fullPace = learnerOnly || pass < fullPaceThrough
        let pause =
            pass < fullPaceThrough
            ? 0 : learnerOnly ? min(options.passIntervalNanos, 1_000_000_000) : options.passIntervalNanos
        phase = .waiting(until: now + pause)
    }

    func requestListing(_ c: Int, forScan: Bool) {
        if forScan {
            if listings[c] != nil {
                phase = .scanning(chunk: c, next: buckets(ofChunk: c).lowerBound)
                return
            }
            phase = .listing(chunk: c)
        }
        guard listingsAsked.insert(c).inserted else { return }
        out.listings.append((c, buckets(ofChunk: c)))
    }

    func trimListings() {
        var current: Int?
        switch phase {
        case .listing(let c), .scanning(let c, _): current = c
        case .waiting: break
        }
        while listingOrder.count > 3 {
            guard let victim = listingOrder.first(where: { $0 != current }) else { break }
            listingOrder.removeAll { $0 == victim }
            listings[victim] = nil
        }
    }

    /// The keys of `keys` this node replicates (and `peer` too, if given), sorted: one placement
    /// lookup per key.
    func mine(_ keys: Set<[UInt8]>?, sharedWith peer: NodeID? = nil) -> [[UInt8]] {
        guard let keys else { return [] }
        return keys.filter {
            let r = replicas($0)
            return r.contains(me) && (peer.map { r.contains($0) } ?? true)
        }.sorted { $0.lexicographicallyPrecedes($1) }
    }

    func scan(bucket b: Int) {
        if bulkCopying && copiedBuckets.contains(b) {
            // Installed earlier in this rebuild: its keys are trusted (and may have voted since).
            bucketDone(b)
            return
        }
        let keys = mine(listings[chunk(ofBucket: b)]?[b])
        if keys.isEmpty && !learnerOnly {
            bucketDone(b)
            return
        }
        if keys.isEmpty {
            scanned(bucket: b, [:], cache: false)
            return
        }
        nextRead += 1
        reads[nextRead] = .scan(bucket: b, writes: bucketWrites[b, default: 0])
        scansReading += 1
        out.reads.append((nextRead, keys))
    }

    /// The peers that share keys of `summaries` with this node.
    func peers(of summaries: [[UInt8]: KeySummary?]) -> [NodeID] {
        if learnerOnly { return others }
        var set = Set<NodeID>()
        for k in summaries.keys { for r in replicas(k) where r != me { set.insert(r) } }
        // A peer rebuilding in bulk copies every key: comparing with what it holds now would only
        // teach it keys one by one (each then loaded there, and no longer copied).
        if options.bulkRebuild { set = set.filter { !isRebuilding($0) } }
        return set.sorted()
    }

    func digest(of summaries: [[UInt8]: KeySummary?], sharedWith peer: NodeID) -> UInt64 {
        var d: UInt64 = 0
        for (k, s) in summaries {
            guard let s, s.chosen > 0, replicas(k).contains(peer) else { continue }
            d ^= s.entryDigest(keyHash: XXH64.hash(k))
        }
        return d
    }

    func scanned(bucket b: Int, _ summaries: [[UInt8]: KeySummary?], cache: Bool) {
        let peers = peers(of: summaries)
        guard !peers.isEmpty else {
            bucketDone(b)
            return
        }
        var p = Pending(mine: summaries, awaiting: [:])
        if bulkCopying {
            p.fetching = true
            for peer in peers {
                send(.fetch(pass: pass, bucket: UInt32(b), bits: options.bucketBits), to: peer)
                p.awaiting[peer] = now + options.peerTimeoutNanos
            }
            pending[b] = p
            return
        }
        for peer in peers {
            let d = digest(of: summaries, sharedWith: peer)
            // Kept for answering the peer's own summary of this bucket without reading again.
            if cache { digests[b, default: [:]][peer] = d }
            let count = summaries.filter { $0.value.map { $0.chosen > 0 } ?? false }.count
            send(
                .summary(
                    pass: pass, bucket: UInt32(b), bits: options.bucketBits, full: learnerOnly, digest: d,
                    count: UInt32(count)), to: peer)
            p.awaiting[peer] = now + options.peerTimeoutNanos
        }
        pending[b] = p
    }

    func bucketDone(_ b: Int) {
        bucketsDone += 1
        let c = chunk(ofBucket: b)
        if c < chunksDone.count { chunksDone[c] += 1 }
    }

    func checkTimeouts() {
        retryFence()
        for b in pending.keys.sorted() {
            guard var p = pending[b] else { continue }
            let late = p.awaiting.filter { now >= $0.value }.keys.sorted()
            guard !late.isEmpty else { continue }
            for peer in late {
                p.awaiting[peer] = nil
                counters.peerTimeouts += 1
                passComplete = false
            }
            finishIfAnswered(b, p)
        }
    }

    func finishIfAnswered(_ b: Int, _ p: Pending) {
        if p.awaiting.isEmpty {
            pending[b] = nil
            bucketDone(b)
        } else {
            pending[b] = p
        }
    }

    // MARK: - Peer messages

    func send(_ m: RepairMessage, to peer: NodeID) { out.messages.append((peer, m.encode())) }

    func bad(_ peer: NodeID, _ why: String) {
        counters.badMessages += 1
        out.badMessages.append((peer, why))
    }

    func handle(from peer: NodeID, _ m: RepairMessage) {
        switch m {
        case .summary(let pass, let bucket, let bits, let full, let digest, _):
            guard bits == options.bucketBits, Int(bucket) < options.bucketCount else {
                return bad(peer, "summary with \(bits) bucket bits (this node uses \(options.bucketBits))")
            }
            let b = Int(bucket)
            if full {
                markRebuilding(peer)
            } else {
                // It scans as a voting node again: its rebuild is over.
                rebuilding[peer] = nil
            }
            if !full, let cached = digests[b]?[peer], cached == digest {
                counters.bucketsMatched += 1
                return send(.match(pass: pass, bucket: bucket), to: peer)
            }
            // Reading to answer costs this node's own budget: with none left (its clients come
            // first), the summary waits its turn. A peer at full pace must not starve our clients.
            // A rebuilding peer's (`full`) is answered at once: the cluster is short of a replica
            // until it is done, and its passes would time out waiting (a 1M-key rebuild crawled).
            if !full && (keyCredits <= 0 || !answersWaiting.isEmpty) {
                if answersWaiting.count < Self.answersWaitingMax { answersWaiting.append((peer, m)) }
                return
            }
            guard let keys = sharedKeys(b, with: peer, answering: m) else { return }
            if keys.isEmpty {
                reply(to: peer, pass: pass, bucket: b, full: full, theirDigest: digest, [:], 0)
                return
            }
            nextRead += 1
            reads[nextRead] = .answer(
                peer: peer, pass: pass, bucket: b, full: full, digest: digest,
                writes: bucketWrites[b, default: 0])
            out.reads.append((nextRead, keys))
            // Charged now, so that the waiting answers released by one `drive` stay within budget.
            spend(keys: keys.count, bytes: 0)
        case .match(_, let bucket):
            let b = Int(bucket)
            guard var p = pending[b], p.awaiting.removeValue(forKey: peer) != nil else { return }
            counters.bucketsMatched += 1
            finishIfAnswered(b, p)
        case .keys(_, let bucket, let truncated, let entries):
            compare(bucket: Int(bucket), from: peer, entries, truncated: truncated)
        case .fence(let floor):
            markRebuilding(peer)
            out.fenceRequests.append((peer, floor))
        case .fenced(let floor):
            confirmed(peer, floor)
        case .fetch(let pass, let bucket, let bits):
            guard bits == options.bucketBits, Int(bucket) < options.bucketCount else {
                return bad(peer, "fetch with \(bits) bucket bits (this node uses \(options.bucketBits))")
            }
            // A rebuilding node answers too, saying so: its records are not to be copied.
            markRebuilding(peer)
            let b = Int(bucket)
            if readsBuckets {
                nextRead += 1
                reads[nextRead] = .fetch(peer: peer, pass: pass, bucket: b)
                out.bucketReads.append((nextRead, b))
                return
            }
            guard let keys = sharedKeys(b, with: peer, answering: m) else { return }
            if keys.isEmpty {
                return send(
                    .records(
                        pass: pass, bucket: bucket, truncated: false, rebuilding: learnerOnly, entries: []),
                    to: peer)
            }
            nextRead += 1
            reads[nextRead] = .fetch(peer: peer, pass: pass, bucket: b)
            out.reads.append((nextRead, keys))
        case .records(_, let bucket, let truncated, let rebuilding, let entries):
            received(
                from: peer, bucket: bucket, truncated: truncated, rebuilding: rebuilding, RecordList(entries))
        case .missing(let keys):
            // A rebuilding node rebuilds every key anyway (a load now would only recover it one by
            // one instead of copying it).
            guard !learnerOnly else { return }
            for k in keys
            where replicas(k).contains(me) && replicas(k).contains(peer) && !hasRebuildingReplica(k) {
                // Loaded from storage first: only a replica that really holds nothing is marked.
                out.actions.append((k, .missing))
            }
        }
    }

    /// A peer's records of a bucket this node fetched.
    func received(from peer: NodeID, bucket: UInt32, truncated: Bool, rebuilding: Bool, _ list: RecordList) {
        let b = Int(bucket)
        guard var p = pending[b], p.fetching, p.awaiting.removeValue(forKey: peer) != nil else { return }
        p.records[peer] = list
        if truncated { p.cut = true }
        if rebuilding { p.peerRebuilding = true }
        if p.awaiting.isEmpty { install(bucket: b, p) }
        finishIfAnswered(b, p)
    }

    /// This node's keys of bucket `b` that `peer` replicates too, from the chunk's listing; nil
    /// while the listing is being made (`m` is handled again once it is there).
    func sharedKeys(_ b: Int, with peer: NodeID, answering m: RepairMessage) -> [[UInt8]]? {
        let c = chunk(ofBucket: b)
        guard let listing = listings[c] else {
            waitingForListing[c, default: []].append((peer, m))
            requestListing(c, forScan: false)
            return nil
        }
        return mine(listing[b], sharedWith: peer)
    }

    /// Answers a peer's summary from this node's summaries of the bucket.
    func reply(
        to peer: NodeID, pass: UInt64, bucket b: Int, full: Bool, theirDigest: UInt64,
        _ summaries: [[UInt8]: KeySummary?], _ mineDigest: UInt64
    ) {
        if !full && mineDigest == theirDigest {
            counters.bucketsMatched += 1
            return send(.match(pass: pass, bucket: UInt32(b)), to: peer)
        }
        counters.bucketsDiffered += 1
        var entries: [KeyEntry] = []
        var size = 0
        var truncated = false
        for k in summaries.keys.sorted(by: { $0.lexicographicallyPrecedes($1) }) {
            let s = summaries[k]!
            // Keys never chosen here carry nothing to compare (a promise alone is not data) — except
            // to a learner-only node (`full`): a promise or an accepted slot here may stand for a
            // vote it cast and lost (say, the one that chose a value nobody has learned yet), so
            // it must load the key and recover it under a fresh ballot both peers promise.
            if let s, s.chosen == 0, !full { continue }
            size += k.count + 21
            if size > options.keysReplyBytesMax {
                truncated = true
                break
            }
            entries.append(KeyEntry(key: k, summary: s))
        }
        send(.keys(pass: pass, bucket: UInt32(b), truncated: truncated, entries: entries), to: peer)
    }

    /// A peer's list for a bucket this node summarised: repair every difference.
    func compare(bucket b: Int, from peer: NodeID, _ entries: [KeyEntry], truncated: Bool) {
        guard var p = pending[b], p.awaiting.removeValue(forKey: peer) != nil else { return }
        counters.bucketsDiffered += 1
        var listed = Set<[UInt8]>()
        for e in entries {
            listed.insert(e.key)
            let all = replicas(e.key)
            guard all.contains(me), all.contains(peer) else { continue }
            counters.keysCompared += 1
            if learnerOnly {
                // Learner-only loads every key damaged: loading it starts its recovery. (The
                // mutant copies the peer's record instead, and trusts it.)
                counters.rebuilt += 1
                damagedNow += 1  // an estimate until the next tick says how many are still damaged
                out.actions.append((e.key, options.mutant == .copyBytes ? .copy(from: peer) : .load))
                continue
            }
            guard let theirs = e.summary else { continue }  // damaged there: it recovers by itself
            guard let entry = p.mine[e.key] else {
                // Not in this node's listing: its record may be lost (or was written since the
                // listing; then `missing` finds it and only the learn applies).
                if theirs.chosen > 0 {
                    counters.missing += 1
                    repairBehind(e.key, from: peer, missing: true)
                }
                continue
            }
            guard let mine = entry else { continue }  // damaged here: already recovering
            if mine.chosen < theirs.chosen {
                counters.behind += 1
                repairBehind(e.key, from: peer, missing: false)
            } else if mine.chosen > theirs.chosen {
                counters.taught += 1
                out.actions.append((e.key, .teach(to: peer)))
            } else if mine.chosen > 0 && mine.valueDigest != theirs.valueDigest {
                counters.alarms += 1
                out.alarms.append(
                    SafetyAlarm(
                        key: e.key, instance: mine.chosen, peer: peer, mine: mine.valueDigest,
                        theirs: theirs.valueDigest))
            }
        }
        if !truncated {
            var missingThere: [[UInt8]] = []
            for (k, s) in p.mine where !listed.contains(k) {
                guard let s, s.chosen > 0, replicas(k).contains(peer) else { continue }
                if hasRebuildingReplica(k) {
                    // The key's other replica is rebuilding, so the peer's blank memory is whole
                    // (one replica's state lost at a time): teach it rather than mark it.
                    if !learnerOnly {
                        counters.taught += 1
                        out.actions.append((k, .teach(to: peer)))
                    }
                    continue
                }
                missingThere.append(k)
            }
            if !missingThere.isEmpty && !learnerOnly {
                missingThere.sort { $0.lexicographicallyPrecedes($1) }
                counters.peerMissing += missingThere.count
                send(.missing(keys: missingThere), to: peer)
            }
        } else {
            passComplete = false
        }
        if learnerOnly {
            for k in p.mine.keys.sorted(by: { $0.lexicographicallyPrecedes($1) }) where !listed.contains(k) {
                rebuildOneByOne(k)
            }
        }
        finishIfAnswered(b, p)
    }

    /// Every peer answered a bulk rebuild's fetch of bucket `b`: merge their records key by key
    /// and hand the installs to the shell (docs/REPAIR.md, "Bulk rebuild").
    ///
    /// Per key: the highest chosen instance and its value, and above it the open slot with the
    /// highest ballot — copying a slot this node never accepted is safe (the pair was genuinely
    /// proposed), and needed (a value chosen by this node's lost vote and one peer's may exist only
    /// as that peer's slot). The promise is the fence, above every ballot of before it.
    func install(bucket b: Int, _ p: Pending) {
        if p.cut || p.peerRebuilding {
            // A list was cut (what is not in it is unknown: the rest waits for the next pass), or
            // a peer rebuilds too (its records are not to be copied): recover what was listed one
            // by one, as the per-key rebuild does. Two replicas of a key rebuilding at once cannot
            // recover it (docs/REPAIR.md); a new cluster's nodes have no keys.
            if p.cut { passComplete = false }
            var seen = Set<[UInt8]>()
            for (_, list) in p.records.sorted(by: { $0.key < $1.key }) {
                for i in 0..<list.count {
                    let key = list.key(i)
                    if seen.insert(key).inserted { rebuildOneByOne(key) }
                }
            }
            return
        }
        let floor = fenceFloor
        let withoutSlots = options.mutant == .copyWithoutSlots
        // Each peer's entries in key order (the sender sorts them; an unsorted list is ordered
        // here), so the peers' lists merge as sorted runs, without a table of every key; every
        // key and record stays where it lies in its message until the merge writes the bucket's
        // records into one buffer.
        let lists = p.records.sorted(by: { $0.key < $1.key }).map(\.value)
        let orders = lists.map(\.order)
        var heads = [Int](repeating: 0, count: lists.count)
        var keys: [[UInt8]] = []
        var merged = PackedBytes()
        keys.reserveCapacity(lists.first?.count ?? 0)
        merged.spans.reserveCapacity(lists.first?.count ?? 0)
        merged.buffer.reserveCapacity(lists.first.map { $0.bytes.count } ?? 0)
        var distrust: [[UInt8]] = []
        var listed = Set<[UInt8]>()
        var parts: [RecordView.Part] = []
        while true {
            // The smallest key at the head of any list, and every peer's entries for it.
            var low: (list: Int, entry: Int)?
            for l in lists.indices where heads[l] < orders[l].count {
                let e = orders[l][heads[l]]
                if let m = low, !RecordList.precedes(lists[l], e, lists[m.list], m.entry) { continue }
                low = (l, e)
            }
            guard let low else { break }
            parts.removeAll(keepingCapacity: true)
            var whole = true
            for l in lists.indices {
                while heads[l] < orders[l].count,
                    RecordList.compare(lists[l], orders[l][heads[l]], lists[low.list], low.entry) == 0
                {
                    if let range = lists[l].records[orders[l][heads[l]]] {
                        parts.append(RecordView.Part(bytes: lists[l].bytes, range: range))
                    } else {
                        whole = false
                    }
                    heads[l] += 1
                }
            }
            let key = lists[low.list].key(low.entry)
            if !p.mine.isEmpty { listed.insert(key) }
            guard replicas(key).contains(me) else { continue }
            counters.keysCompared += 1
            var done = false
            if whole {
                let start = merged.buffer.count
                done = RecordView.merge(parts, floor: floor, withoutSlots: withoutSlots, into: &merged.buffer)
                // Debug builds (the simulator's runs) hold the raw merge to the decoded one.
                assert(
                    !done
                        || PaxosCodec.decode(Array(merged.buffer[start...]))
                            == Self.decodedMerge(
                                parts.map { Array($0.bytes[$0.range]) }, floor: floor,
                                withoutSlots: withoutSlots
                            ).state,
                    "the raw merge differs from the decoded one")
                if done {
                    merged.spans.append(PackedBytes.Span(start: start, length: merged.buffer.count - start))
                } else {
                    let records = parts.map { Array($0.bytes[$0.range]) }
                    switch Self.decodedMerge(records, floor: floor, withoutSlots: withoutSlots) {
                    case .state(let m):
                        merged.append(PaxosCodec.encode(m))
                        done = true
                    case .unusable: break
                    case .alarm(let instance):
                        counters.alarms += 1
                        out.alarms.append(
                            SafetyAlarm(key: key, instance: instance, peer: me, mine: 0, theirs: 0))
                    }
                }
            }
            guard done else {
                // Damaged (or too large) at a peer: recovered one by one.
                distrust.append(key)
                rebuildOneByOne(key)
                continue
            }
            counters.copied += 1
            counters.copiedBytes += merged.spans[merged.spans.count - 1].length
            keys.append(key)
        }
        // This node's own records that no peer holds: they recover one by one (the peers' absence
        // settles them, under a fresh ballot).
        for k in p.mine.keys.sorted(by: { $0.lexicographicallyPrecedes($1) }) where !listed.contains(k) {
            distrust.append(k)
            rebuildOneByOne(k)
        }
        copiedBuckets.insert(b)
        out.installs.append(RepairInstall(bucket: b, keys: keys, records: merged, distrust: distrust))
    }

    /// What the decoded merge of one key's records made.
    enum Merged: Equatable {
        case state(KeyState)
        /// A record does not decode: the key recovers one by one.
        case unusable
        /// Two different values chosen at this instance.
        case alarm(UInt64)
        var state: KeyState? {
            if case .state(let s) = self { return s }
            return nil
        }
    }

    /// The bulk rebuild's merge of one key's records, decoded (`RecordView.merge` does the same on
    /// the bytes, and falls back to this where it cannot decide): the highest chosen instance and
    /// its value, the highest-ballot open slot at chosen + 1, promise = max(floor, its ballot).
    static func decodedMerge(_ records: [[UInt8]], floor: Ballot, withoutSlots: Bool) -> Merged {
        var states: [KeyState] = []
        for rec in records {
            guard let s = PaxosCodec.decode(rec) else { return .unusable }
            states.append(s)
        }
        var merged = KeyState()
        for s in states where s.chosen > merged.chosen {
            merged.chosen = s.chosen
            merged.value = s.value
        }
        if merged.chosen > 0
            && states.contains(where: { $0.chosen == merged.chosen && $0.value != merged.value })
        {
            return .alarm(merged.chosen)
        }
        if !withoutSlots {
            for s in states {
                guard let slot = s.accepted, slot.instance == merged.chosen + 1 else { continue }
                if merged.accepted.map({ slot.ballot > $0.ballot }) ?? true { merged.accepted = slot }
            }
        }
        merged.promised = max(floor, merged.accepted?.ballot ?? .zero)
        return .state(merged)
    }

    /// While learner-only: load `key` (damaged), so that it recovers by the damaged-key rule.
    func rebuildOneByOne(_ key: [UInt8]) {
        counters.rebuilt += 1
        damagedNow += 1  // an estimate until the next tick says how many are still damaged
        out.actions.append((key, .load))
    }

    /// This replica is behind `peer` on `key` (or holds nothing for it).
    func repairBehind(_ key: [UInt8], from peer: NodeID, missing: Bool) {
        if options.mutant == .copyBytes {
            // The mutant: take the peer's record bytes as if they had always been ours.
            out.actions.append((key, .copy(from: peer)))
            return
        }
        if missing && !hasRebuildingReplica(key) { out.actions.append((key, .missing)) }
        out.actions.append((key, .learn(from: peer)))
    }
}
