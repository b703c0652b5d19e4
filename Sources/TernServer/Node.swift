import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import TernConsensus
import TernCore
import TernPlacement
import TernRepair
import TernStorage

/// Sends opaque messages to peers: the transport in production, an in-process loopback in tests.
///
/// Messages given to one peer in one event-loop turn may leave as one frame; delivery is
/// best-effort (Paxos retransmits, forwarded requests time out and retry).
public protocol PeerLink: Sendable {
    /// Queues `message` for `peer`; never blocks.
    func send(_ message: ByteBuffer, to peer: NodeID)
}

/// Tunables of a `Node`.
public struct NodeOptions: Sendable {
    /// Length of one consensus tick. With the core's defaults (re-send after 8 ticks, back-off up
    /// to 6·2^k ticks) 5 ms gives re-sends after 40 ms and back-offs of a few tens of ms: above a
    /// loopback or same-city round trip plus an fsync, and short enough that a lost message costs
    /// little.
    public var tick: TimeAmount = .milliseconds(5)
    /// How long a client request is retried internally before the client gets an error.
    public var requestTimeout: TimeAmount = .seconds(3)
    /// How long a forwarded attempt waits for the replica's answer before a read tries another
    /// replica (a write keeps waiting until `requestTimeout`: it may be applied there).
    public var forwardTimeout: TimeAmount = .milliseconds(300)
    /// How long a replica that did not answer a forward is avoided (unless nothing else is left).
    public var suspectFor: TimeAmount = .seconds(1)
    /// Idle keys kept in memory; beyond it they are evicted and reload from storage on use.
    public var keysLoadedMax = 1_000_000
    /// The consensus core's tunables (in ticks); `NodeCoreOptions` says why its defaults differ
    /// from `PaxosConfig`'s.
    public var paxos: PaxosConfig = NodeCoreOptions().paxos
    /// The anti-entropy scanner's settings; nil: no scanner (tests of other things).
    public var repair: RepairOptions? = RepairOptions()
    /// Treat a data directory without an epoch record as a new node's, which votes at once,
    /// instead of a wiped or replaced disk, which rebuilds learner-only first. In-process test
    /// clusters on fresh stores, and `tern server --new-cluster` (the first start of a cluster just
    /// planned: `tern dev` passes it on the run that planned it).
    public var trustEmptyDirectory = false
    /// How long a restarted node waits for every other node to confirm its incarnation before it
    /// votes with the confirmations it has (at least one; docs/REPAIR.md, "A directory restored
    /// from an older backup").
    public var incarnationGrace: TimeAmount = .seconds(5)
    /// How often a running node moves to its next incarnation once the current one is confirmed
    /// (0: never): a hot backup restored later is found stale unless it was copied within the last
    /// period (docs/REPAIR.md).
    public var incarnationBump: TimeAmount = .seconds(60)
    /// The bound on any node's wall-clock error, in ms: a key with a deadline is treated as
    /// expired this much before its deadline by this node's clock, so that no node serves it after
    /// the deadline (docs/DATA.md, "Expiry": the clock assumption).
    public var clockSkewBoundMs: UInt64 = 50
    /// A hash-tag group's encoded size bound (the server's `max_value_bytes`): a write that would
    /// pass it is refused (docs/DATA.md, "Hash-tag groups").
    public var groupBytesMax = 1 << 20
    /// A big list's bucket bounds (docs/DATA.md, "Big lists"): elements, and encoded bytes beyond
    /// one element, per bucket. Taken by a list when it becomes bucketed and kept in its head.
    public var listBucketElements = ListBuckets.defaultBucketElements
    public var listBucketBytes = ListBuckets.defaultBucketBytes
    /// The size of a big set's or hash's buckets (docs/DATA.md, "Big sets, hashes and sorted sets").
    public var keyedBucketMembers = KeyedBuckets.defaultBucketMembers
    public var keyedBucketBytes = KeyedBuckets.defaultBucketBytes
    public init() {}

    /// The request layer's options (the core counts time in nanoseconds).
    var core: NodeCoreOptions {
        var o = NodeCoreOptions()
        o.requestTimeout = UInt64(requestTimeout.nanoseconds)
        o.forwardTimeout = UInt64(forwardTimeout.nanoseconds)
        o.suspectFor = UInt64(suspectFor.nanoseconds)
        o.keysLoadedMax = keysLoadedMax
        o.paxos = paxos
        return o
    }
}

/// Counters for the status page and metrics.
public struct NodeStatus: Sendable, Hashable {
    public var node: NodeID
    public var campus: Campus
    public var epoch: UInt32
    public var keysLoaded: Int
    public var consensus: ReplicaNodeStats
    /// Storage fsyncs (group commits).
    public var fsyncs: Int
    /// Client requests served here (local replica or forwarded by this node), by outcome.
    public var requests: Int
    public var requestsFailed: Int
    /// Requests this node forwarded to another replica, and forwards it served for others.
    public var forwardedOut: Int
    public var forwardedIn: Int
    /// Internal retries (a refused, unknown or timed-out attempt tried again).
    public var retries: Int
    /// Requests waiting now.
    public var inFlight: Int
    /// Peer messages that failed to decode.
    public var badPeerMessages: Int
    /// Key records that were damaged (or unreadable) when loaded; each was logged, and the key
    /// refuses to vote until both peers re-teach it.
    public var damagedKeyLoads = 0
    /// Expired keys the paced sweep found and removed through the protocol (docs/DATA.md).
    public var expiredSwept = 0
    /// Writes of hot keys routed to the replica proposing on them, and routes taken back after
    /// they went silent (`NodeCoreCounters.routed`, docs/PROTOCOL.md).
    public var routed = 0
    public var routesTakenBack = 0
    /// Writes another node forwarded here that were relayed to the key's proposer
    /// (`NodeCoreCounters.relayed`).
    public var relayed = 0
    /// The engine's damage counters (records with a bad checksum, damage no key can be found for).
    public var storageDamagedRecords = 0
    public var storageUnattributedDamage = 0
    /// False once the node stopped serving (storage failure, shutting down).
    public var serving: Bool
    /// Rebuilding: it serves and votes nothing from its own state (and why it is).
    public var learnerOnly = false
    public var learnerOnlyReason: String?
    /// This start's incarnation ("number/nonce") and its check: "checking" (the node votes on
    /// nothing yet), "passed", or "stale" (the directory was older than a start a peer
    /// acknowledged: the node rebuilds).
    public var incarnation: String?
    public var incarnationCheck: String?
    /// Keys in memory that are damaged now (waiting for both peers to re-teach them).
    public var damagedKeys = 0
    /// The anti-entropy scanner (nil when it is off).
    public var repair: RepairStatus?
    /// fsyncs by `LatencyBuckets` bucket and their summed time in microseconds.
    public var fsyncLatency = [Int](repeating: 0, count: LatencyBuckets.count)
    public var fsyncMicros = 0
}

/// The scanner's state for `/status` and `/metrics` (docs/REPAIR.md).
public struct RepairStatus: Sendable, Hashable, Codable {
    public var pass: UInt64
    public var running: Bool
    public var fullPace: Bool
    public var bucketsDone: Int
    public var bucketsTotal: Int
    /// Buckets done per range of the ring (each `bucketsPerRange` buckets), this pass.
    public var rangesDone: [Int]
    public var bucketsPerRange: Int
    public var passesCompleted: Int
    public var lastPassComplete: Bool
    /// Seconds since the last pass ended (nil: none yet), and how long it took.
    public var lastPassAgoSeconds: Double?
    public var lastPassSeconds: Double
    public var keysRead: Int
    public var bytesRead: Int
    public var keysCompared: Int
    public var bucketsMatched: Int
    public var bucketsDiffered: Int
    public var repairedBehind: Int
    public var repairedTaught: Int
    public var repairedMissing: Int
    public var peerMissing: Int
    public var repairedDamaged: Int
    /// Keys loaded to be rebuilt one by one while learner-only.
    public var rebuilt: Int
    /// Keys installed from the peers' merged records while learner-only (the bulk rebuild), their
    /// bytes, and fences raised here for a rebuilding peer.
    public var copied: Int
    public var copiedBytes: Int
    public var fencesRaised: Int
    /// Keys no index reaches any more (orphaned inbox buckets), deleted.
    public var orphansCollected: Int
    public var safetyAlarms: Int
    public var peerTimeouts: Int
    public var keysPerSecond: Double
}

/// One node of the cluster: the thin shell around a `NodeCore` (the request layer and its
/// `ReplicaNode`, a pure state machine) on ONE event loop. The shell feeds the core its inputs —
/// client requests, peer messages, ticks, storage completions, with the time — and carries out
/// each `NodeReady`: peer messages to the link, replies to the waiting promises, reads and batch
/// writes to the `Store` (which calls back; no Swift task per load or batch).
///
/// ```
///  execute ─┐  receive ─┐  tick ─┐  Store callbacks (loaded, flushed) ─┐
///           ▼           ▼        ▼                                      ▼
///                 NodeCore (pure: routing, forwarding, retries, Paxos, batches)
///                        │ ready()
///           ┌────────────┼───────────────┬──────────────────┐
///           ▼            ▼               ▼                  ▼
///     link.send     promises        store.get(key)   store.write(batch, sync: mustSync)
/// ```
/// Every mutable field is touched on `eventLoop` only; public entry points hop there.
public final class Node: @unchecked Sendable {
    // @unchecked Sendable: all mutable state below is confined to `eventLoop` (each entry point
    // hops there), the rest is immutable and Sendable.

    public let id: NodeID
    public let campus: Campus
    public let map: ClusterMap
    public let eventLoop: any EventLoop
    let ring: Ring
    let store: Store
    let options: NodeOptions
    let logger: Logger
    var link: (any PeerLink)?

    let core: NodeCore
    /// The anti-entropy scanner (TernRepair, pure), fed by this shell.
    let scanner: RepairScanner?
    /// Connections blocked on keys (BLPOP, XREAD BLOCK), woken when a record of one is written.
    public let blockedKeys: BlockedKeys
    /// How Redis keys map onto Paxos keys (the cluster map's `key_layout`): every request goes
    /// through `KeyLayout.route` in `submit`, the one seam of hash-tag groups.
    public var layout: KeyLayout { map.keyLayout }
    /// Why the node is learner-only (nil: it is not).
    var learnerReason: String?
    /// The incarnation check (TernRepair, pure), fed by this shell; set by `start`.
    var incarnation: IncarnationGuard?
    /// A complete pass that began after the node became learner-only has ended.
    var rebuildPassDone = false
    /// The marker's removal is under way.
    var leavingLearnerOnly = false
    /// Fences raised on the replica and not yet durable: for a rebuilding peer, or this node's own
    /// (peer nil) while it rebuilds (docs/REPAIR.md, "Bulk rebuild").
    var fencesWaiting: [UInt64: (peer: NodeID?, floor: Ballot)] = [:]
    var fenceTokens: UInt64 = 0
    var tickTask: RepeatedTask?
    /// Client requests waiting, by the core's request id.
    var promises: [UInt64: EventLoopPromise<NodeReply>] = [:]
    var drained: [EventLoopPromise<Void>] = []
    /// A `drive` is scheduled for later in this loop turn (inputs arrived, or the core had more
    /// than one call's work).
    var driveScheduled = false
    /// Expired keys the sweep removed (`NodeStatus.expiredSwept`).
    var expiredSwept = 0
    /// The streams this node holds, for /metrics (StreamMetrics.swift).
    var streams = StreamRegistry()
    /// A `drive` is running, and another input arrived during it (a store callback made inline,
    /// a reply's callback that sent the next request): it runs again before returning.
    var driving = false
    var driveAgain = false
    /// Big lists', sets' and hashes' upkeep under way on this node, by key (Lists.swift,
    /// KeyedCollections.swift): one at a time per key.
    var upkeepUnderWay: [[UInt8]: EventLoopFuture<Void>] = [:]
    /// Buckets of big lists read or written here (Lists.swift).
    var bucketCache = BucketCache<[[UInt8]]>.lists()
    /// The encoding of the list bucket last unsealed in part (`unsealList`), by bucket key.
    var unsealEncoding: (key: [UInt8], bytes: [UInt8])?
    /// Pushes and pops served per slot of list keys since the slot's last upkeep check (Lists.swift).
    var listOpCounts = [UInt8](repeating: 0, count: 4096)
    /// Big sets' and hashes' heads last seen here, their buckets, their upkeep under way and their
    /// writes served per slot since the last flush check (KeyedCollections.swift).
    var keyedHeads: [[UInt8]: KeyedHeadInfo] = [:]
    var keyedCache = BucketCache<[[UInt8]: [UInt8]]>.keyed()
    var keyedOpCounts = [UInt8](repeating: 0, count: 4096)

    /// Starts a node: reads and bumps the epoch durably (before anything can be sent), then runs
    /// the tick timer on `eventLoop`.
    ///
    /// - Parameters:
    ///   - store: the node's storage, opened by the caller (`.always` durability in production).
    ///   - link: where peer messages go; may be set later with `setLink` (before traffic).
    public static func start(
        id: NodeID, map: ClusterMap, store: Store, link: (any PeerLink)?, eventLoop: any EventLoop,
        options: NodeOptions = NodeOptions(), logger: Logger
    ) async throws -> Node {
        guard let entry = map.node(id) else {
            throw NodeError("node \(id.rawValue) is not in cluster map \"\(map.name)\"")
        }
        var stored = LoadResult.damaged
        do {
            stored = try await store.get(ReplicaNode.epochKey).map { .state($0) } ?? .absent
        } catch {
            guard case .damaged = error else { throw error }
        }
        // Learner-only (docs/REPAIR.md): this node may have forgotten what it promised or
        // acknowledged, so it must neither vote nor serve from its own state until a full repair
        // pass has rebuilt every range it replicates.
        var reasons: [String] = []
        let lost = try await store.lostDurableBytes()
        if !lost.isEmpty {
            reasons.append("the data directory lost fsynced bytes (\(lost.joined(separator: "; ")))")
        }
        if (try await store.stats()).unattributedDamage > 0 {
            reasons.append("recovery found damaged records whose keys it cannot name")
        }
        let marked: Bool
        do {
            marked = try await store.get(ReplicaNode.rebuildKey) != nil
        } catch {
            marked = true  // a damaged marker was there: the rebuild was not finished
        }
        if marked { reasons.append("a rebuild was under way when the node stopped") }
        if case .absent = stored, !options.trustEmptyDirectory {
            // A new cluster's nodes all start so; they leave learner-only after one pass over
            // empty ranges (a second or so). A replaced or wiped disk must not vote as if it had
            // never promised anything.
            reasons.append("the data directory has no epoch record (a new, replaced or wiped disk)")
        }
        var epoch: UInt32
        do {
            epoch = try ReplicaNode.nextEpoch(after: stored).epoch
        } catch {
            reasons.append("the epoch record is damaged")
            epoch = 1
        }
        // The node-wide promise floor it gave a rebuilding peer (docs/REPAIR.md, "Bulk rebuild").
        var fence = Ballot.zero
        do {
            fence = try ReplicaNode.storedFence(
                try await store.get(ReplicaNode.fenceKey).map { .state($0) } ?? .absent)
        } catch {
            reasons.append("the fence record is damaged")
        }
        let learnerOnly = !reasons.isEmpty
        if learnerOnly {
            guard options.repair != nil else {
                throw NodeError(
                    "refusing to start: \(reasons.joined(separator: "; ")); rebuilding needs the repair "
                        + "scanner, which is off (repair = false)")
            }
            // The epoch record itself may be among what was lost: take one above any this node can
            // have used (a ballot reused with another value would be unsafe).
            epoch = max(epoch, Node.clockEpoch())
        }
        // The incarnation check (docs/REPAIR.md): this start's number is one above the one the
        // directory remembers, durable before any message leaves; a node that may vote with what
        // its directory holds waits until the other nodes confirm that no later start of it is
        // known to them (a directory restored from an older backup).
        var ownBefore = OwnIncarnations()
        do {
            if let b = try await store.get(IncarnationRecords.ownKey) {
                ownBefore = IncarnationRecords.decodeOwn(b) ?? OwnIncarnations()
            }
        } catch {
            guard case .damaged = error else { throw error }
        }
        var seen: [NodeID: Incarnation] = [:]
        do {
            if let b = try await store.get(IncarnationRecords.seenKey) {
                seen = IncarnationRecords.decodeSeen(b) ?? [:]
            }
        } catch {
            guard case .damaged = error else { throw error }
        }
        let own = ownBefore.starting(nonce: UInt64.random(in: 1...UInt64.max))
        let current = own.starts[own.starts.count - 1]
        // A directory that has voted before (it has an epoch record) is checked; a new one
        // rebuilds or is trusted empty anyway.
        var votedBefore = true
        if case .absent = stored { votedBefore = false }
        let checking = !learnerOnly && votedBefore
        var records: [BatchEntry] = [
            .put(ReplicaNode.epochKey, PaxosCodec.encodeEpoch(epoch)),
            .put(IncarnationRecords.ownKey, IncarnationRecords.encode(own: own)),
        ]
        if let layoutRecord = try await Node.checkKeyLayout(
            map.keyLayout, store: store, votedBefore: votedBefore)
        {
            records.append(layoutRecord)
        }
        if learnerOnly { records.append(.put(ReplicaNode.rebuildKey, Array("rebuild".utf8))) }
        try await store.write(records)
        let node = Node(
            id: id, campus: entry.campus, map: map, store: store, link: link, eventLoop: eventLoop,
            epoch: epoch, options: options, logger: logger)
        try await eventLoop.submit {
            node.incarnation = IncarnationGuard(
                me: id, others: map.nodes.map(\.id), stored: own.confirmed,
                earlier: Array(own.starts.dropLast()),
                current: current, seen: seen,
                checking: checking, now: Node.clock(),
                graceNanos: UInt64(max(options.incarnationGrace.nanoseconds, 0)),
                bumpNanos: UInt64(max(options.incarnationBump.nanoseconds, 0)))
            if checking { node.core.votingHeld = true }
            node.core.replica.restoreFence(fence)
            if learnerOnly { node.enterLearnerOnly(reasons.joined(separator: "; ")) }
            node.startTimer()
            node.setGarbageCollector(prefix: ListBuckets.bucketKeyPrefix) { [node] key in
                node.onLoop { node.collectListBucket(key) }
            }
            node.setGarbageCollector(prefix: KeyedBuckets.bucketKeyPrefix) { [node] key in
                node.onLoop { node.collectKeyedBucket(key) }
            }
        }.get()
        logger.info(
            "node started",
            metadata: [
                "node": "\(id)", "campus": "\(entry.campus)", "epoch": "\(epoch)",
                "learner-only": "\(learnerOnly)", "incarnation": "\(current)",
                "incarnation-check": "\(checking)",
            ])
        return node
    }

    /// The record that remembers which key layout a data directory was written with.
    static let keyLayoutKey: [UInt8] = [0] + Array("keylayout".utf8)

    /// Refuses a data directory written with another key layout than the map's (its data would be
    /// looked for under other keys: hidden, and new writes would sit beside it). A directory
    /// without the record is new (no epoch record: it takes the map's layout) or older than
    /// layouts (it was written per key). Returns the record to write, if any.
    static func checkKeyLayout(_ layout: KeyLayout, store: Store, votedBefore: Bool) async throws
        -> BatchEntry?
    {
        var recorded: KeyLayout?
        do {
            if let b = try await store.get(keyLayoutKey) {
                recorded = KeyLayout(rawValue: String(decoding: b, as: UTF8.self))
                guard recorded != nil else {
                    throw NodeError("refusing to start: the data directory's key layout record is unreadable")
                }
            }
        } catch let e as StorageError {
            guard case .damaged = e else { throw e }
            throw NodeError("refusing to start: the data directory's key layout record is damaged")
        }
        let found = recorded ?? (votedBefore ? .perKey : layout)
        guard found == layout else {
            throw NodeError(
                "refusing to start: the data directory holds data of key layout \"\(found.rawValue)\" but the "
                    + "cluster map says \"\(layout.rawValue)\"; the key layout is fixed when a cluster is "
                    + "created (docs/DATA.md, \"Hash-tag groups\")")
        }
        return recorded == nil ? .put(keyLayoutKey, Array(layout.rawValue.utf8)) : nil
    }

    /// An epoch from the wall clock (minutes since 2024-01-01), for a node that cannot trust its
    /// stored epoch: above every epoch a node reaches by restarts (one per start), and within the
    /// 24 bits that request ids and read nonces keep of it until 2055. Assumes the clock does not
    /// stand more than the time since this node's last start behind (docs/REPAIR.md).
    static func clockEpoch() -> UInt32 {
        let minutes = (Date().timeIntervalSince1970 - 1_704_067_200) / 60
        return UInt32(min(max(minutes, 1), Double(1 << 24 - 1)))
    }

    /// On the loop: the node rebuilds (see `NodeCore.learnerOnly`); the scanner runs at full pace.
    func enterLearnerOnly(_ why: String) {
        learnerReason = why
        core.learnerOnly = true
        scanner?.learnerOnly = true
        // The bulk rebuild (docs/REPAIR.md).
        scanner?.beginBulkRebuild(on: core.replica)
        scanner?.startFullPass()
        logger.warning(
            """
            node is learner-only: it serves and votes nothing from its own state until a full repair \
            pass has rebuilt every range it replicates
            """,
            metadata: ["why": "\(why)"])
    }

    init(
        id: NodeID, campus: Campus, map: ClusterMap, store: Store, link: (any PeerLink)?,
        eventLoop: any EventLoop, epoch: UInt32, options: NodeOptions, logger: Logger
    ) {
        self.id = id
        self.campus = campus
        self.map = map
        self.blockedKeys = BlockedKeys(layout: map.keyLayout)
        self.ring = Ring(map: map)
        self.store = store
        self.link = link
        self.eventLoop = eventLoop
        self.options = options
        self.logger = logger
        let placement = RingPlacement(ring: ring)
        core = NodeCore(
            id: id, campusIndex: Campus.allCases.firstIndex(of: campus)!,
            placement: placement,
            epoch: epoch, options: options.core, now: Node.clock())
        scanner = options.repair.map {
            RepairScanner(
                me: id, others: map.nodes.map(\.id), options: $0, now: Node.clock(),
                replicas: { placement.replicas(for: $0) })
        }
        // The engine keeps the key records per bucket (`RepairOptions.bucket(ofRecordKey:)`): a
        // fetch reads its bucket whole.
        scanner?.readsBuckets = store.partitionCount == scanner?.options.bucketCount
    }

    /// The shell's monotonic clock, in nanoseconds (what the core's deadlines are measured in).
    static func clock() -> UInt64 { NIODeadline.now().uptimeNanoseconds }

    /// Sets where peer messages go (when the transport is created after the node).
    public func setLink(_ link: any PeerLink) {
        eventLoop.execute { self.link = link }
    }

    private func startTimer() {
        tickTask = eventLoop.scheduleRepeatedTask(initialDelay: options.tick, delay: options.tick) {
            [self] _ in
            let now = Node.clock()
            self.core.tick(now: now)
            self.repairTick(now)
            self.drive()
        }
    }

    // MARK: - Client requests

    /// The replicas of `key`: one per campus (A, B, C).
    public func replicas(of key: [UInt8]) -> Replicas { ring.replicas(for: key) }

    /// Runs a client request on `key`: locally if this node is one of its replicas, else forwarded;
    /// retried internally (same request id) until `options.requestTimeout`.
    ///
    /// Called on the node's loop (the server's connections run there), the request enters the core
    /// at once and the core runs once at the end of the loop turn, for every request and peer
    /// message read in that turn (packet merging); from another thread it hops to the loop.
    ///
    /// `id`: a request id derived from a client-supplied id (`RequestID.client`), so that a retry
    /// through any node is answered the first result (`NodeCore.request`); nil = a fresh one.
    public func execute(key: [UInt8], _ request: KeyRequest, id: RequestID? = nil) -> EventLoopFuture<
        NodeReply
    > {
        switch request {
        case .read:
            // A big list kept in buckets reads as one plain value (Lists.swift).
            return submit(key: key, .read, id: id).flatMap { self.settleExpiry(key: key, $0, attempts: 3) }
                .flatMap { self.assembleList(key, $0, attempts: 4) }
                .flatMap { self.assembleKeyed(key, $0, attempts: 4) }
        case .readData(let args):
            return submit(key: key, .read, id: id).flatMap { self.settleExpiry(key: key, $0, attempts: 3) }
                .flatMap { self.answerData(key, args, $0, attempts: 4) }
        case .write(let op):
            // A set or hash write: facts for a big one's head, and its upkeep (KeyedCollections.swift).
            if case .data(let args) = op, Self.isKeyedWrite(args), layout.groupKey(of: key) == nil {
                return keyedWrite(key, args, id: id, attempts: 8)
            }
            let reply = submit(key: key, request, id: id)
            guard case .data = op else { return reply }
            // A write a big list cannot take as it is: its upkeep first, then the write again.
            return reply.flatMap { self.afterListWrite(key, op, $0, attempts: 8) }
        }
    }

    /// The expiry horizon: this node's wall clock plus the clock-skew bound (docs/DATA.md).
    func expiryHorizonMs() -> UInt64 {
        UInt64(max(0, CommandProcessor.unixMicros() / 1000)) + options.clockSkewBoundMs
    }

    /// A read that returned a value whose deadline is at or below the horizon is not answered
    /// from it: the node proposes an instance that removes it (the decision that it expired goes
    /// through the protocol, so every replica agrees), then answers absent — or reads again if
    /// the key was written meanwhile.
    func settleExpiry(key: [UInt8], _ r: NodeReply, attempts: Int) -> EventLoopFuture<NodeReply> {
        guard case .typed(let v) = r, DataModel.settle(v, horizonMs: expiryHorizonMs()) == .expire else {
            return eventLoop.makeSucceededFuture(r)
        }
        return submit(key: key, .write(DataModel.expireCheck(key))).flatMap { w in
            guard case .done(let result) = w else { return self.eventLoop.makeSucceededFuture(w) }
            switch DataModel.afterExpireCheck(result) {
            case true?: return self.eventLoop.makeSucceededFuture(.value(nil))
            case false? where attempts > 0, nil where attempts > 0:
                return self.submit(key: key, .read).flatMap {
                    self.settleExpiry(key: key, $0, attempts: attempts - 1)
                }
            default:
                return self.eventLoop.makeSucceededFuture(.unknown("the key kept changing while it expired"))
            }
        }
    }

    func submit(key: [UInt8], _ request: KeyRequest, id: RequestID? = nil) -> EventLoopFuture<NodeReply> {
        let promise = eventLoop.makePromise(of: NodeReply.self)
        // Hash-tag groups: a member's request runs on its group key (`KeyLayout.route`).
        let routed = layout.route(key, request, groupBytesMax: options.groupBytesMax)
        onLoop {
            let wid = self.core.request(key: routed.key, routed.request, now: Node.clock(), id: id)
            self.promises[wid] = promise
            self.driveLater()
        }
        guard routed.key != key else { return promise.futureResult }
        let layout = self.layout
        return promise.futureResult.map { layout.reply(key, $0) }
    }

    /// Runs `body` now if on the node's loop, else hops there.
    @inline(__always) func onLoop(_ body: @escaping @Sendable () -> Void) {
        if eventLoop.inEventLoop { body() } else { eventLoop.execute(body) }
    }

    /// Runs the core once later in this loop turn (after the rest of what was read). On the loop.
    func driveLater() {
        guard !driveScheduled else { return }
        driveScheduled = true
        eventLoop.execute {
            self.driveScheduled = false
            self.drive()
        }
    }

    /// The async form of `execute`.
    public func execute(key: [UInt8], _ request: KeyRequest, id: RequestID? = nil) async -> NodeReply {
        (try? await execute(key: key, request, id: id).get()) ?? .unavailable("node stopped")
    }

    // MARK: - Peers

    /// Handlers of service messages, by service kind (set before traffic arrives).
    let serviceHandlers = NIOLockedValueBox<[UInt8: @Sendable (NodeID, [UInt8]) -> Void]>([:])

    /// Routes peer messages of service `kind` to `handler` (called on the node's event loop).
    /// Kinds in use: 1 = sequence allocator (TernServer/Seq*), 2 = sync notices (TernServer/Sync*),
    /// 3 = repair scanner, 4 = keyspace listings (KeyspaceService), 5 = ACL users (ACL.swift),
    /// 6 = pub/sub (PubSubService). A kind registered twice is a programming error: the second
    /// handler would silently take the first one's messages (ACL and the keyspace both took 4, and
    /// every SCAN and FLUSHALL of a full server went unanswered).
    public func setServiceHandler(_ kind: UInt8, _ handler: @escaping @Sendable (NodeID, [UInt8]) -> Void) {
        let taken = serviceHandlers.withLockedValue { handlers -> Bool in
            if handlers[kind] != nil || kind == Node.repairServiceKind { return true }
            handlers[kind] = handler
            return false
        }
        precondition(!taken, "peer service kind \(kind) is registered twice")
    }

    /// Sends a service message to `peer` (best effort, like every peer message); any thread.
    public func sendService(_ kind: UInt8, _ payload: [UInt8], to peer: NodeID) {
        onLoop {
            self.core.sendService(kind, payload, to: peer)
            self.driveLater()
        }
    }

    /// Messages from `peer` (the transport's `onBatch`, on the node's loop in the server); any
    /// thread.
    public func receive(from peer: NodeID, _ messages: [ByteBuffer]) {
        onLoop {
            self.core.receive(from: peer, messages.map { Array($0.readableBytesView) }, now: Node.clock())
            self.driveLater()
        }
    }

    // MARK: - Carrying out the core's output

    /// Takes the core's `ready()` and carries it out, again while inputs arrived meanwhile. On the
    /// event loop; safe to call from within itself (a store callback made inline).
    func drive() {
        if driving {
            driveAgain = true
            return
        }
        driving = true
        repeat {
            driveAgain = false
            driveOnce()
        } while driveAgain
        driving = false
    }

    /// Where keyspace events go (the `KeyspaceNotifier`); nil while notifications are off, and
    /// then proposers do not compute them.
    public let keyEventSink = NIOLockedValueBox<(@Sendable ([KeyEvent]) -> Void)?>(nil)

    private func driveOnce() {
        let horizon = expiryHorizonMs()
        core.replica.expiryHorizonMs = horizon
        let sink = keyEventSink.withLockedValue { $0 }
        core.replica.keyEventsOn = sink != nil
        if let scanner {
            scanner.expiryHorizonMs = horizon
            carryOut(scanner.ready())
        }
        let r = core.ready()
        if let sink {
            let events = core.replica.takeKeyEvents()
            if !events.isEmpty { sink(events) }
        }
        if r.isEmpty { return checkDrained() }
        if let link {
            for m in r.messages { link.send(ByteBuffer(bytes: m.bytes), to: m.to) }
        }
        for (wid, reply) in r.replies { promises.removeValue(forKey: wid)?.succeed(reply) }
        if !r.services.isEmpty {
            let handlers = serviceHandlers.withLockedValue { $0 }
            for s in r.services {
                if s.kind == Node.repairServiceKind, IncarnationMessage.isIncarnation(s.payload),
                    let incarnation
                {
                    incarnation.receive(from: s.from, s.payload)
                    carryOut(incarnation.ready())
                    continue
                }
                if s.kind == Node.repairServiceKind, let scanner {
                    scanner.receive(from: s.from, s.payload)
                    driveAgain = true
                    continue
                }
                guard let h = handlers[s.kind] else {
                    // Counted, and logged with the other bad messages at the next drive.
                    core.rejectService(from: s.from, kind: s.kind)
                    continue
                }
                h(s.from, s.payload)
            }
        }
        for b in r.badMessages {
            logger.warning("dropped a bad peer message", metadata: ["peer": "\(b.from)", "why": "\(b.why)"])
        }
        for token in r.fencesDurable {
            guard let f = fencesWaiting.removeValue(forKey: token) else { continue }
            if let peer = f.peer {
                scanner?.fenceRaised(for: peer, floor: f.floor)
            } else {
                logger.info(
                    "fenced: the copy of the peers' records begins", metadata: ["floor": "\(f.floor)"])
                scanner?.ownFenceDurable(f.floor)
            }
            driveAgain = true
        }
        if !r.touched.isEmpty {
            scanner?.noteWritten(r.touched)
            blockedKeys.wake(r.touched)
            noteStreams(r.touched)
        }
        for k in r.loads { load(k) }
        if let p = r.flush { write(p) }
        if r.more { driveLater() }
        checkDrained()
    }

    /// Reads a key's record (in the server the Store runs on this loop and calls back inline).
    private func load(_ k: [UInt8]) {
        store.get(ReplicaNode.recordKey(k)) { result in
            let record: LoadResult
            switch result {
            case .success(let bytes): record = bytes.map { .state($0) } ?? .absent
            case .failure(let error):
                // Corrupt (or unreadable: treated the same, the safe way) — the key refuses to
                // vote until both peers re-teach it.
                record = .damaged
                self.logger.error(
                    "a key's stored record is damaged; it is served again once both peers re-teach it",
                    metadata: ["key-bytes": "\(k.count)", "error": "\(error)"])
            }
            self.onLoop {
                self.core.loaded(k, record)
                self.noteStreams([k])
                self.drive()
            }
        }
    }

    /// Writes a batch. Only what the core marks `mustSync` waits for an fsync (docs/SERVER.md); the
    /// rest (a chosen value peers can teach again) is appended and released. In the server the
    /// append runs here, inline; only the fsync leaves the loop (one hand-back per group).
    private func write(_ p: PreparedFlush) {
        let entries = p.records.map { BatchEntry.put($0.key, $0.value) }
        store.write(entries, sync: p.mustSync) { result in
            self.onLoop {
                switch result {
                case .success:
                    self.core.flushed(p)
                case .failure(let error):
                    self.logger.critical(
                        "storage write failed; the node stops serving", metadata: ["error": "\(error)"])
                    self.core.storageFailed("\(error)")
                }
                self.drive()
            }
        }
    }

    // MARK: - Repair (the anti-entropy scanner)

    /// The service kind of the scanners' peer messages.
    static let repairServiceKind: UInt8 = 3

    private func repairTick(_ now: UInt64) {
        if let incarnation {
            incarnation.tick(now: now)
            carryOut(incarnation.ready())
        }
        guard let scanner else { return }
        scanner.tick(now: now, clientRequests: core.inFlight, damagedKeys: core.damagedKeyCount)
        if core.learnerOnly && rebuildPassDone && core.damagedKeyCount == 0 && !leavingLearnerOnly {
            leaveLearnerOnly()
        }
    }

    /// Carries out what the scanner asked for. On the loop.
    private func carryOut(_ r: RepairReady) {
        guard let scanner, !r.isEmpty else { return }
        for m in r.messages { core.sendService(Node.repairServiceKind, m.bytes, to: m.to) }
        for (key, action) in r.actions { core.repair(key: key, action) }
        for p in r.rebuildingPeers { core.peerRebuilding(p) }
        // The bulk rebuild's fences (docs/REPAIR.md): raised at once, answered once durable.
        for f in r.fenceRequests {
            let floor = core.replica.fenceFloor(requested: f.floor)
            fenceTokens += 1
            fencesWaiting[fenceTokens] = (f.peer, floor)
            core.replica.raiseFence(floor, token: fenceTokens)
            logger.info(
                "fence raised for a rebuilding peer", metadata: ["peer": "\(f.peer)", "floor": "\(floor)"])
        }
        if let own = r.ownFence {
            fenceTokens += 1
            fencesWaiting[fenceTokens] = (nil, own)
            core.replica.raiseFence(own, token: fenceTokens)
        }
        for install in r.installs { installCopies(install) }
        let options = scanner.options
        for l in r.listings {
            let range = l.buckets
            if store.partitionCount == options.bucketCount {
                // The engine keeps the keys per bucket (`RepairOptions.bucket(ofRecordKey:)`): a
                // listing reads the chunk's buckets only.
                store.liveKeys(inPartitions: range, droppingPrefix: 1) { lists in
                    self.onLoop {
                        self.scanner?.listed(chunk: l.chunk, buckets: lists ?? [])
                        self.drive()
                    }
                }
                continue
            }
            store.liveKeys(where: { k in
                guard k.first == 1 else { return false }
                let position = k.withUnsafeBytes {
                    XXH64.hash(UnsafeRawBufferPointer(rebasing: $0.dropFirst()))
                }
                return range.contains(options.bucket(ofPosition: position))
            }) { keys in
                self.onLoop {
                    self.scanner?.listed(chunk: l.chunk, keys: keys.map { Array($0.dropFirst()) })
                    self.drive()
                }
            }
        }
        for read in r.bucketReads {
            // A rebuilding peer's fetch: the bucket's key records (`ReplicaNode.recordKey`: 1,
            // then the key) straight from the engine's partition. Closed: no answer at all.
            store.records(inPartition: read.bucket, prefix: 1) { found in
                guard let found else { return }
                self.onLoop {
                    self.scanner?.read(id: read.id, keys: found.keys, values: found.values)
                    self.drive()
                }
            }
        }
        for read in r.reads {
            let keys = read.keys
            // The key records (`ReplicaNode.recordKey`: 1, then the key), read into one buffer,
            // from the mapped data files: no array and no system call per record.
            store.get(many: keys, prefix: 1) { packed in
                self.onLoop {
                    self.scanner?.read(id: read.id, keys: keys, packed: packed)
                    self.drive()
                }
            }
        }
        // The expiry sweep: each expired key found by the scan is removed through the protocol.
        for key in r.expired {
            expiredSwept += 1
            if KeyLayout.isGroupKey(key) {
                // A hash-tag group: its instance removes the members past the horizon.
                _ = submit(key: key, .write(.group(GroupOperation(.sweep, bytesMax: 0))))
                continue
            }
            _ = submit(key: key, .write(.data([Array("expirecheck".utf8), key])))
        }
        if !r.candidates.isEmpty {
            let all = collectors.withLockedValue { $0 }
            for key in r.candidates {
                for c in all where key.starts(with: c.prefix) { c.collect(key) }
            }
        }
        for a in r.alarms {
            logger.critical(
                "SAFETY ALARM: two different values chosen at one instance; left as found, not repaired",
                metadata: ["detail": "\(a)"])
        }
        for b in r.badMessages {
            logger.warning(
                "dropped a bad repair message", metadata: ["peer": "\(b.from)", "why": "\(b.why)"])
        }
        if let ended = r.passEnded {
            let c = scanner.counters
            logger.info(
                "repair pass ended",
                metadata: [
                    "pass": "\(ended.pass)", "complete": "\(ended.complete)",
                    "seconds": "\(Double(c.lastPassNanos) / 1e9)", "keys-read": "\(c.keysRead)",
                    "behind": "\(c.behind)", "taught": "\(c.taught)", "missing": "\(c.missing)",
                    "damaged": "\(c.damaged)", "alarms": "\(c.alarms)",
                ])
            if core.learnerOnly && ended.complete { rebuildPassDone = true }
        }
        driveAgain = true
    }

    /// Writes a bulk rebuild's records (keys not in memory, not recovered one by one, with no read
    /// of their old record under way; the others are distrusted: they recover one by one). Not
    /// synced: the rebuild marker's removal syncs them, and a restart before it rebuilds again.
    private func installCopies(_ install: RepairInstall) {
        var indices: [Int] = []
        var written: [[UInt8]] = []
        var untrusted = install.distrust
        indices.reserveCapacity(install.keys.count)
        written.reserveCapacity(install.keys.count)
        for (i, key) in install.keys.enumerated() {
            if core.mayInstallCopy(key) {
                indices.append(i)
                written.append(key)
            } else {
                untrusted.append(key)
            }
        }
        core.replica.distrust(untrusted)
        guard !indices.isEmpty else { return }
        // One batch written from the bucket's buffer (`ReplicaNode.recordKey`: 1, then the key).
        store.write(prefix: 1, keys: install.keys, values: install.records, indices: indices) { result in
            guard case .failure(let e) = result else { return }
            self.onLoop { self.core.storageFailed("writing rebuilt records: \(e)") }
        }
        scanner?.noteWritten(written, bucket: install.bucket)
    }

    /// Carries out what the incarnation check asked for. On the loop.
    private func carryOut(_ r: IncarnationReady) {
        guard !r.isEmpty else { return }
        for m in r.messages { core.sendService(Node.repairServiceKind, m.bytes, to: m.to) }
        if let own = r.persistOwn {
            // Later starts are checked against this one (OwnIncarnations); a new number is
            // announced only once this is durable.
            store.write([.put(IncarnationRecords.ownKey, IncarnationRecords.encode(own: own))], sync: true) {
                result in
                self.onLoop {
                    guard case .success = result else { return }
                    self.incarnation?.ownPersisted()
                }
            }
        }
        if let b = r.bumped {
            logger.info("incarnation bumped while running", metadata: ["incarnation": "\(b)"])
        }
        if let seen = r.persistSeen {
            let after = r.afterPersist
            // (safety) A welcome promises the peer that this node remembers its start: durable
            // first.
            store.write([.put(IncarnationRecords.seenKey, IncarnationRecords.encode(seen: seen))], sync: true)
            {
                result in
                self.onLoop {
                    guard case .success = result else { return }
                    for m in after { self.core.sendService(Node.repairServiceKind, m.bytes, to: m.to) }
                    self.drive()
                }
            }
        }
        for b in r.badMessages {
            logger.warning(
                "dropped a bad incarnation message", metadata: ["peer": "\(b.from)", "why": "\(b.why)"])
        }
        switch r.decided {
        case nil, .checking?: break
        case .passed?:
            if core.votingHeld {
                core.votingHeld = false
                logger.info(
                    "incarnation confirmed: the node votes and serves",
                    metadata: ["incarnation": "\(incarnation.map { "\($0.current)" } ?? "-")"])
            }
        case .stale(let peer, let seen)?:
            let why =
                "the data directory is older than a start of this node that \(peer) acknowledged "
                + "(incarnation \(seen.number); the directory remembers \(incarnation?.stored ?? 0)): "
                + "restored from an older backup?"
            logger.error("stale data directory", metadata: ["why": "\(why)"])
            guard scanner != nil else {
                // Without the scanner nothing can rebuild it: it keeps voting held (serves nothing).
                core.votingHeld = true
                logger.critical("the node cannot rebuild (repair = false): it stays out of every vote")
                return
            }
            // Rebuild: every key it may hold loads damaged from now on, and the marker makes a
            // restart in between rebuild too.
            core.votingHeld = true
            store.write([.put(ReplicaNode.rebuildKey, Array("rebuild".utf8))], sync: true) { _ in
                self.onLoop {
                    self.core.becomeLearnerOnly()
                    self.core.votingHeld = false
                    self.enterLearnerOnly(why)
                    self.drive()
                }
            }
        }
        driveAgain = true
    }

    /// Every range was rebuilt and no key is still damaged: remove the marker durably, then vote.
    private func leaveLearnerOnly() {
        leavingLearnerOnly = true
        store.write([.delete(ReplicaNode.rebuildKey)], sync: true) { result in
            self.onLoop {
                self.leavingLearnerOnly = false
                guard case .success = result else { return }
                self.core.learnerOnly = false
                self.scanner?.learnerOnly = false
                self.logger.notice(
                    "rebuild finished: the node votes and serves again",
                    metadata: ["was": "\(self.learnerReason ?? "-")"])
                self.learnerReason = nil
            }
        }
    }

    /// The scanner's state. On the loop.
    func repairStatus() -> RepairStatus? {
        guard let scanner else { return nil }
        let p = scanner.progress
        let c = scanner.counters
        let now = Node.clock()
        return RepairStatus(
            pass: p.pass, running: p.running, fullPace: p.fullPace, bucketsDone: p.bucketsDone,
            bucketsTotal: p.bucketsTotal, rangesDone: p.chunksDone,
            bucketsPerRange: scanner.options.chunkBuckets,
            passesCompleted: c.passesCompleted, lastPassComplete: c.lastPassComplete,
            lastPassAgoSeconds: c.lastPassEndedAt == 0 ? nil : Double(now &- c.lastPassEndedAt) / 1e9,
            lastPassSeconds: Double(c.lastPassNanos) / 1e9, keysRead: c.keysRead, bytesRead: c.bytesRead,
            keysCompared: c.keysCompared, bucketsMatched: c.bucketsMatched,
            bucketsDiffered: c.bucketsDiffered,
            repairedBehind: c.behind, repairedTaught: c.taught, repairedMissing: c.missing,
            peerMissing: c.peerMissing, repairedDamaged: c.damaged, rebuilt: c.rebuilt,
            copied: c.copied, copiedBytes: c.copiedBytes, fencesRaised: c.fencesRaised,
            orphansCollected: garbageCollected, safetyAlarms: c.alarms,
            peerTimeouts: c.peerTimeouts,
            keysPerSecond: p.fullPace ? scanner.options.fullPaceKeysPerSecond : scanner.options.keysPerSecond)
    }

    /// Garbage collectors by key prefix (`RepairOptions.candidatePrefix`'s keys the scan found).
    let collectors = NIOLockedValueBox<[(prefix: [UInt8], collect: @Sendable ([UInt8]) -> Void)]>([])
    /// Keys the collectors deleted (on the loop).
    var garbageCollected = 0

    /// Hands the repair scan's candidate keys under `prefix` to `collect` (on the node's loop),
    /// which deletes through the protocol those nothing reaches any more. Set before traffic.
    public func setGarbageCollector(prefix: [UInt8], _ collect: @escaping @Sendable ([UInt8]) -> Void) {
        collectors.withLockedValue { $0.append((prefix, collect)) }
    }

    /// A collector deleted one key (counted as an `orphan` repair); any thread.
    public func countGarbageCollected() { onLoop { self.garbageCollected += 1 } }

    /// Starts a repair pass at full pace now (`tern repair now`); any thread.
    public func repairNow() {
        onLoop {
            self.scanner?.startFullPass()
            self.drive()
        }
    }

    private func checkDrained() {
        if core.closing && core.inFlight == 0 && !drained.isEmpty {
            for p in drained { p.succeed(()) }
            drained = []
        }
    }

    // MARK: - Status and shutdown

    /// Current counters.
    public func status() async -> NodeStatus {
        let syncs = (try? await store.syncStats()) ?? Store.SyncStats()
        let fsyncs = syncs.count
        let storage = try? await store.stats()
        let promise = eventLoop.makePromise(of: NodeStatus.self)
        eventLoop.execute {
            let c = self.core.counters
            var status =
                NodeStatus(
                    node: self.id, campus: self.campus, epoch: self.core.replica.epoch,
                    keysLoaded: self.core.replica.keysLoaded, consensus: self.core.replica.stats,
                    fsyncs: fsyncs,
                    requests: c.requests, requestsFailed: c.failed, forwardedOut: c.forwardedOut,
                    forwardedIn: c.forwardedIn, retries: c.retries, inFlight: self.core.inFlight,
                    badPeerMessages: c.badMessages, damagedKeyLoads: c.damagedLoads,
                    storageDamagedRecords: storage?.damagedRecords ?? 0,
                    storageUnattributedDamage: storage?.unattributedDamage ?? 0,
                    serving: self.core.serving, learnerOnly: self.core.learnerOnly,
                    learnerOnlyReason: self.learnerReason, damagedKeys: self.core.damagedKeyCount,
                    repair: self.repairStatus(), fsyncLatency: syncs.latency, fsyncMicros: syncs.micros)
            status.expiredSwept = self.expiredSwept
            status.routed = c.routed
            status.routesTakenBack = c.routesTakenBack
            status.relayed = c.relayed
            if let g = self.incarnation {
                status.incarnation = "\(g.current)"
                switch g.decision {
                case .checking: status.incarnationCheck = "checking"
                case .passed: status.incarnationCheck = "passed"
                case .stale: status.incarnationCheck = "stale"
                }
            }
            promise.succeed(status)
        }
        return (try? await promise.futureResult.get())
            ?? NodeStatus(
                node: id, campus: campus, epoch: 0, keysLoaded: 0, consensus: ReplicaNodeStats(), fsyncs: 0,
                requests: 0, requestsFailed: 0, forwardedOut: 0, forwardedIn: 0, retries: 0, inFlight: 0,
                badPeerMessages: 0, serving: false)
    }

    /// Stops taking requests, lets those in flight finish (bounded by `grace`), waits for the last
    /// batch to be durable, stops the timer and closes the store (a final fsync).
    public func shutdown(grace: TimeAmount = .seconds(3)) async {
        let drained = eventLoop.makePromise(of: Void.self)
        eventLoop.execute {
            self.core.close()
            if self.core.inFlight == 0 { drained.succeed(()) } else { self.drained.append(drained) }
        }
        let timeout = eventLoop.scheduleTask(in: grace) { drained.succeed(()) }
        try? await drained.futureResult.get()
        timeout.cancel()
        // Let the batch in flight (if any) land, then stop the clock.
        for _ in 0..<200 {
            let busy = try? await eventLoop.submit { self.core.isFlushing }.get()
            if busy != true { break }
            try? await Task.sleep(nanoseconds: 5_000_000)
        }
        let stopped = eventLoop.makePromise(of: Void.self)
        eventLoop.execute {
            self.tickTask?.cancel(promise: stopped)
            if self.tickTask == nil { stopped.succeed(()) }
            self.core.failAll("node is shutting down")
            self.drive()
        }
        try? await stopped.futureResult.get()
        await store.close()
        logger.info("node stopped", metadata: ["node": "\(id)"])
    }
}

/// TernPlacement's ring as the consensus core's placement.
struct RingPlacement: ReplicaPlacement {
    let ring: Ring
    func replicas(for key: [UInt8]) -> [NodeID] {
        let r = ring.replicas(for: key)
        return [r.a, r.b, r.c]
    }
    /// The key's campus-A replica (first in the key's order, where `NodeCore.route` sends hot
    /// writes too), while the map is still the one the cluster was planned with (version 1).
    /// (safety) A key's owner must never change: a map change can move a key to another node of a
    /// campus, so after one (version > 1) no key has an owner. (Membership changes are not built;
    /// a node joining starts learner-only, and its rebuild's fences stop round 0 on every node as
    /// well: `KeyReplica.mayUseRoundZero` needs fence zero.)
    func fastAcceptOwner(for key: [UInt8]) -> NodeID? {
        ring.map.version == 1 ? ring.replica(for: key, in: .a) : nil
    }
}

/// A node could not start or serve.
public struct NodeError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}
