public import TernCore

/// What storage returned for one record.
public enum LoadResult: Sendable, Hashable {
    case absent
    case state([UInt8])
    /// The record exists but failed its checksum.
    case damaged
}

/// The persistence a `ReplicaNode` needs; the simulator and the server inject their own.
public protocol ReplicaStorage: AnyObject {
    /// The record stored under `key`.
    func load(_ key: [UInt8]) throws -> LoadResult
    /// Writes a batch atomically (all or nothing after a crash); not yet durable.
    func write(_ batch: [(key: [UInt8], value: [UInt8])]) throws
    /// Makes every earlier write durable.
    func sync() throws
}

/// Messages about several keys to one peer, sent as one frame (packet merging).
public struct Frame: Sendable, Hashable {
    public var from: NodeID
    public var to: NodeID
    public var items: [FrameItem]
    public init(from: NodeID, to: NodeID, items: [FrameItem]) {
        self.from = from
        self.to = to
        self.items = items
    }
}

/// One message of a frame.
public struct FrameItem: Sendable, Hashable {
    public var key: [UInt8]
    public var message: PaxosMessage
    public init(key: [UInt8], message: PaxosMessage) {
        self.key = key
        self.message = message
    }
}

/// What a flush releases: frames for peers, then replies for clients (already durable).
public struct NodeOutput: Sendable {
    public var frames: [Frame] = []
    public var replies: [ClientReply] = []
    /// Keys whose state changed in this flush (for observers).
    public var touched: [[UInt8]] = []
    /// Tokens of `raiseFence` calls whose fence is durable now (answer the rebuilding peer).
    public var fencesDurable: [UInt64] = []
    public init() {}
}

/// Where each key's three replicas live (one per campus).
///
/// The server adapts TernPlacement's ring to it; the simulator and the old initialiser use
/// `FixedPlacement` (the same three nodes for every key).
public protocol ReplicaPlacement: Sendable {
    /// The three replicas of `key`, distinct, one per campus.
    func replicas(for key: [UInt8]) -> [NodeID]
    /// The one replica of `key` that may open the key's first instance with the round-0 ballot
    /// (0, owner) and no Phase 1 (docs/PROTOCOL.md, "Fresh keys: round 0 at the owner"), or nil
    /// for none. (safety) It must name the same node at every node and for the key's whole life:
    /// a placement whose replicas of a key can change answers nil (the default).
    func fastAcceptOwner(for key: [UInt8]) -> NodeID?
}

extension ReplicaPlacement {
    public func fastAcceptOwner(for key: [UInt8]) -> NodeID? { nil }
}

/// The same three replicas for every key.
public struct FixedPlacement: ReplicaPlacement {
    /// The three nodes.
    public let nodes: [NodeID]
    public init(_ nodes: [NodeID]) {
        precondition(nodes.count == 3 && Set(nodes).count == 3, "three distinct replicas")
        self.nodes = nodes
    }
    public func replicas(for key: [UInt8]) -> [NodeID] { nodes }
    /// One of the three by a hash of the key (the same nodes hold every key; the simulator's fresh
    /// keys then have owners on every node).
    public func fastAcceptOwner(for key: [UInt8]) -> NodeID? { nodes[Int(XXH64.hash(key, seed: 0x0A) % 3)] }
}

/// One group-commit batch, taken by `ReplicaNode.beginFlush()`.
///
/// The shell must write `records` atomically (and make them durable when `mustSync`), and only
/// then call `ReplicaNode.finishFlush(_:)`, which releases the frames and client replies that
/// depend on them. Nothing in here may leave the node before that.
public struct PreparedFlush: Sendable {
    /// Records to write as one atomic batch (storage keys as `ReplicaNode.recordKey` defines them).
    public let records: [(key: [UInt8], value: [UInt8])]
    /// True when a promise, an accepted value or the epoch is among `records`: the write must be
    /// durable (fsynced) before `finishFlush`.
    public let mustSync: Bool
    let serial: UInt64
    let frames: [Frame]
    let replies: [ClientReply]
    let selfItems: [FrameItem]
    let keys: [[UInt8]]
    let fences: [UInt64]
    /// Messages and replies waiting for this batch (statistics, tests).
    public var heldMessages: Int { frames.reduce(0) { $0 + $1.items.count } + selfItems.count }
    /// Client replies waiting for this batch.
    public var heldReplies: Int { replies.count }
}

/// Counters of one node, for the status page and metrics.
public struct ReplicaNodeStats: Sendable, Hashable {
    /// Batches taken (`beginFlush` calls that found work).
    public var flushes = 0
    /// Batches that had records to write.
    public var writes = 0
    /// Batches that needed a sync.
    public var syncs = 0
    /// Records written.
    public var records = 0
    /// Their keys' and values' bytes (what a change costs the disk, before framing).
    public var recordBytes = 0
    /// Frames released to peers, and the messages in them.
    public var frames = 0
    public var messages = 0
    /// Instances this node proposed with client writes, and the writes merged into them.
    public var instancesProposed = 0
    public var opsMerged = 0
    /// Key records loaded from storage (lazily or by `install`), and keys evicted when idle
    /// beyond the bound.
    public var keyLoads = 0
    public var keysEvicted = 0
    /// Peer messages about keys this node does not replicate (a map mismatch), dropped.
    public var misrouted = 0
    public init() {}
}

/// The node-level driver: owns the `KeyReplica`s of one node and does their IO in the right order.
///
/// Inputs (`receive`, `propose`, `read`, `tick`) only queue effects. A batch is taken with
/// `beginFlush()`: every queued record in ONE batch needing at most ONE sync (group commit), plus
/// the messages (one frame per peer) and client replies that may leave only after that batch is
/// durable; `finishFlush(_:)` releases them and feeds messages the node sent to itself back in.
/// Inputs that arrive while a batch is being written accumulate for the next one; at most one
/// batch is in flight, so batches are durable in order.
///
/// ```
///  inputs ─► queue ─beginFlush─► [records | frames+replies held] ─write+sync─► finishFlush ─► out
///                 ▲ (next batch accumulates meanwhile)                             │ self msgs
///                 └────────────────────────────────────────────────────────────────┘
/// ```
///
/// `flush()` is the synchronous form (begin, write, sync, finish, repeated for self messages) the
/// simulator uses. Keys are loaded lazily from `storage` when one is given; a node without storage
/// (the server) must `install` a key's record before using the key. Not thread-safe: one event
/// loop (or the simulator) owns it.
public final class ReplicaNode {
    /// This node.
    public let id: NodeID
    /// The three replicas of every key with a fixed placement; empty with a per-key placement.
    public let replicas: [NodeID]
    /// Where each key's replicas live.
    public let placement: any ReplicaPlacement
    let storage: (any ReplicaStorage)?
    var ctx: NodeContext
    /// Keys are hashed once where they enter (`HashedKey`): one message touches these maps and
    /// sets several times.
    var keys: [HashedKey: KeyReplica] = [:]
    /// Keys with timers running, in a deterministic order.
    var busy: [HashedKey] = []
    var busySet: Set<HashedKey> = []
    var dirty: [HashedKey] = []
    var dirtySet: Set<HashedKey> = []
    var mustSync = false
    var outbox: [(to: NodeID, item: FrameItem)] = []
    var replies: [ClientReply] = []
    /// `replyBeforePersist` mutant only: records written after their messages left.
    var deferred: [(key: [UInt8], value: [UInt8])] = []
    /// The batch being written, if any.
    var inFlight: UInt64?
    var serial: UInt64 = 0
    /// Eviction order (CLOCK): loaded keys, oldest first from `clockHead`; `referenced` gives a
    /// key used since the hand last passed a second chance.
    var clock: [HashedKey] = []
    var clockHead = 0
    var referenced: Set<HashedKey> = []
    /// Idle keys beyond this many are evicted after a batch (they reload from storage on use).
    public var keysLoadedMax = Int.max
    /// Learner-only (a node rebuilding after its storage lost what it promised: lost durable
    /// bytes, a damaged epoch record, an empty or restored directory): every key loads as damaged,
    /// so it casts no vote and answers no read from its own state until both peers re-taught it
    /// (`KeyReplica.damaged`). Set by the node before traffic, cleared once a full repair pass has
    /// rebuilt every range (TernRepair).
    public var learnerOnly = false {
        didSet {
            ctx.votesHeld = servesNothing
            if !learnerOnly {
                rebuilt = []
                distrusted = []
                isCopied = nil
            }
        }
    }
    /// While learner-only: true for a key whose state a bulk copy installed (docs/REPAIR.md,
    /// "Bulk rebuild"): it loads as it is, unless `distrust` named it. Set by the shell.
    public var isCopied: (([UInt8]) -> Bool)?
    /// Keys a bulk copy could not install (a read of the old record was under way, or a peer's
    /// record was unreadable): they load damaged and recover one by one.
    var distrusted: Set<HashedKey> = []
    /// The node-wide promise floor raised since the last batch, and the callers waiting for it.
    var fenceDirty = false
    var fenceTokens: [UInt64] = []
    /// The node's incarnation check has not passed yet (docs/REPAIR.md, "A directory restored
    /// from an older backup"): until the other nodes confirmed that its data directory is not older
    /// than a start of it they acknowledged, it answers no Prepare, Accept, ReadCheck or recover
    /// (they are dropped; their senders retransmit or go on with the other replica), and
    /// `NodeCore` serves no client from it. Unlike `learnerOnly`, its keys load as they are.
    public var votingHeld = false {
        didSet { ctx.votesHeld = servesNothing }
    }
    /// Learner-only or held: client requests go to the other replicas.
    public var servesNothing: Bool { learnerOnly || votingHeld }
    /// Vote requests dropped while `votingHeld`.
    public private(set) var votesHeld = 0

    static func asksForVote(_ m: PaxosMessage) -> Bool {
        switch m {
        case .prepare, .accept, .readCheck, .recover: true
        default: false
        }
    }

    /// Learner-only from now on, found after the start (the incarnation check said the directory
    /// is stale): every key in memory is replaced by a damaged replica, as a reload would give.
    /// Only while `votingHeld` (nothing was voted or served from these keys; none has client
    /// work in flight).
    public func becomeLearnerOnly() {
        learnerOnly = true
        for k in keys.keys.sorted(by: { $0.bytes.lexicographicallyPrecedes($1.bytes) }) {
            keys[k] = makeReplica(k, .damaged)
            suspected.remove(k)
            touch(k)
        }
    }

    /// Loaded keys that are damaged now (they never leave memory until recovered).
    var damagedKeys: Set<HashedKey> = []
    /// While learner-only: keys recovered since (a reload of one of them is trusted again).
    var rebuilt: Set<HashedKey> = []
    /// Keys damaged only on suspicion (`markMissing`: blank here while a peer holds a value).
    var suspected: Set<HashedKey> = []
    /// How many keys are damaged now (waiting for both peers to re-teach them).
    public var damagedKeyCount: Int { damagedKeys.count }
    /// Counters.
    public private(set) var stats = ReplicaNodeStats()

    /// Storage key of the node's epoch record (key records are prefixed with 1).
    public static let epochKey: [UInt8] = [0] + Array("epoch".utf8)
    /// Storage key of the node's rebuild marker: present (and durable) while the node is
    /// learner-only, so a restart in the middle of a rebuild stays learner-only.
    public static let rebuildKey: [UInt8] = [0] + Array("rebuild".utf8)
    /// Storage key of the node's fence record: the node-wide promise floor (`raiseFence`).
    public static let fenceKey: [UInt8] = [0] + Array("fence".utf8)
    /// Storage key of `key`'s Paxos record.
    public static func recordKey(_ key: [UInt8]) -> [UInt8] { [1] + key }

    /// The longest key the cluster stores (32 KiB; the engine's own bound is 64 KiB - 1 for the
    /// record key). Checked where keys enter — client commands (`Node.execute`, the RESP layer)
    /// and peer frames (`PaxosWire.decode`) — so no record the engine would refuse is ever made:
    /// a 64 KiB key used to reach every replica's engine, whose refusal fenced all three nodes.
    public static let keyBytesMax = 32 << 10

    /// Starts the node with the same three replicas for every key: reads the epoch, bumps it and
    /// syncs it before anything else can happen, so no round used before the restart is used again.
    public convenience init(
        id: NodeID, replicas: [NodeID], storage: any ReplicaStorage, config: PaxosConfig, seed: UInt64
    )
        throws
    {
        precondition(replicas.count == 3 && replicas.contains(id), "three replicas, this node among them")
        try self.init(
            id: id, placement: FixedPlacement(replicas), storage: storage, config: config, seed: seed)
    }

    /// Starts the node with a per-key placement and lazy loading from `storage` (epoch bumped and
    /// synced first, as above).
    public init(
        id: NodeID, placement: any ReplicaPlacement, storage: any ReplicaStorage, config: PaxosConfig,
        seed: UInt64
    ) throws {
        self.id = id
        self.placement = placement
        self.replicas = (placement as? FixedPlacement)?.nodes ?? []
        self.storage = storage
        var loaded = LoadResult.absent
        loaded = try storage.load(Self.epochKey)
        var epoch = try Self.storedEpoch(loaded)
        if config.mutant != .noEpochOnRestart || epoch == 0 {
            epoch += 1
            try storage.write([(Self.epochKey, PaxosCodec.encodeEpoch(epoch))])
            try storage.sync()
        }
        ctx = NodeContext(
            me: id, now: 0, ballots: BallotClock(epoch: epoch), rng: SplitMix64(seed: seed), config: config)
        ctx.fence = try Self.storedFence(storage.load(Self.fenceKey))
    }

    /// The fence in a loaded fence record (`.zero` = none). A damaged one may have forgotten a
    /// fence: as for the epoch record, the node must rebuild.
    public static func storedFence(_ loaded: LoadResult) throws(ReplicaNodeError) -> Ballot {
        switch loaded {
        case .absent: return .zero
        case .damaged: throw .epochDamaged
        case .state(let b):
            guard let f = PaxosCodec.decodeFence(b) else { throw .epochDamaged }
            return f
        }
    }

    /// Starts a node whose IO the caller does asynchronously (the server): `epoch` must already be
    /// durable (see `nextEpoch(after:)`); keys are `install`ed before use; batches go through
    /// `beginFlush`/`finishFlush` only.
    public init(id: NodeID, placement: any ReplicaPlacement, epoch: UInt32, config: PaxosConfig, seed: UInt64)
    {
        precondition(epoch > 0, "the epoch starts at 1")
        self.id = id
        self.placement = placement
        self.replicas = (placement as? FixedPlacement)?.nodes ?? []
        self.storage = nil
        ctx = NodeContext(
            me: id, now: 0, ballots: BallotClock(epoch: epoch), rng: SplitMix64(seed: seed), config: config)
    }

    /// The epoch in a loaded epoch record (0 = none yet).
    static func storedEpoch(_ loaded: LoadResult) throws(ReplicaNodeError) -> UInt32 {
        switch loaded {
        case .absent: return 0
        case .damaged: throw .epochDamaged
        case .state(let b):
            guard let e = PaxosCodec.decodeEpoch(b) else { throw .epochDamaged }
            return e
        }
    }

    /// The epoch a starting node runs in, given its stored epoch record, and the record to make
    /// durable (write and fsync) before the node is created with it.
    public static func nextEpoch(after loaded: LoadResult) throws(ReplicaNodeError) -> (
        epoch: UInt32, record: (key: [UInt8], value: [UInt8])
    ) {
        let e = try storedEpoch(loaded)
        guard e < UInt32.max else { throw .epochDamaged }
        return (e + 1, (epochKey, PaxosCodec.encodeEpoch(e + 1)))
    }

    /// The epoch this incarnation runs in.
    public var epoch: UInt32 { ctx.ballots.epoch }

    // MARK: - The fence (docs/REPAIR.md, "Bulk rebuild")

    /// The node-wide promise floor: every key acts as if it had promised at least this.
    public var fence: Ballot { ctx.fence }

    /// Sets the fence read from the fence record at start (before any traffic).
    public func restoreFence(_ b: Ballot) { ctx.fence = max(ctx.fence, b) }

    /// The floor this node takes when a rebuilding peer asks for `requested`: also above every
    /// ballot this node ever issued, promised or accepted — its epoch bounds them all, since an
    /// acceptor joins the epoch of what it votes for (`BallotClock.observe`), durably.
    public func fenceFloor(requested: Ballot) -> Ballot {
        let e = UInt64(min(epoch, UInt32.max - 1)) + 1
        return max(requested, ctx.fence, Ballot(round: e << 32, node: NodeID(0)))
    }

    /// Raises the fence to `b` at once (no vote below it from now on) and writes it with the next
    /// batch, synced; `token` comes back in `NodeOutput.fencesDurable` once it is durable.
    public func raiseFence(_ b: Ballot, token: UInt64) {
        ctx.fence = max(ctx.fence, b)
        fenceDirty = true
        fenceTokens.append(token)
    }

    /// While learner-only: whether a bulk copy may install `key`'s record now (it is not in memory:
    /// a key in memory recovers one by one, and its memory may be newer than any copy).
    public func mayInstallCopy(_ key: [UInt8]) -> Bool { mayInstallCopy(HashedKey(key)) }
    func mayInstallCopy(_ k: HashedKey) -> Bool { keys[k] == nil && !rebuilt.contains(k) }

    /// Keys a bulk copy did not install: they load damaged (and recover one by one).
    public func distrust(_ keys: [[UInt8]]) {
        for k in keys { distrusted.insert(HashedKey(k)) }
    }
    /// Current tick.
    public var now: UInt64 { ctx.now }
    /// Keys in memory.
    public var keysLoaded: Int { keys.count }
    /// Keys with timers running (phases, reads, back-off, recovery).
    public var keysBusy: Int { busy.count }

    /// True when this node is one of `key`'s three replicas.
    public func isReplica(of key: [UInt8]) -> Bool { placement.replicas(for: key).contains(id) }

    /// True when `key`'s state is in memory (no storage read needed to use it).
    public func isLoaded(_ key: [UInt8]) -> Bool { keys[HashedKey(key)] != nil }
    func isLoaded(_ key: HashedKey) -> Bool { keys[key] != nil }

    /// Puts `key`'s record, read by the caller from storage, in memory. Ignored when the key is
    /// already loaded (memory is newer than any record read meanwhile).
    ///
    /// The caller must not let two reads of one key race with a use of it: issue one read per key
    /// at a time, and install it before the key is used.
    public func install(_ key: [UInt8], _ record: LoadResult) {
        let key = HashedKey(key)
        guard keys[key] == nil else { return }
        keys[key] = makeReplica(key, record)
    }

    /// `trusted`: the record is taken as is even while learner-only (the copy-bytes mutant only).
    private func makeReplica(_ hashed: HashedKey, _ record: LoadResult, trusted: Bool = false) -> KeyReplica {
        let key = hashed.bytes
        var loaded: LoadedKey
        switch record {
        case .absent: loaded = .absent
        case .damaged: loaded = .damaged
        case .state(let b): loaded = PaxosCodec.decode(b).map { .state($0) } ?? .damaged
        }
        var floor = Ballot.zero
        if learnerOnly && !trusted && ctx.config.mutant != .learnerVotes && !rebuilt.contains(hashed)
            && !(isCopied?(key) == true && !distrusted.contains(hashed))
        {
            if case .state(let st) = loaded { floor = st.promised }
            loaded = .damaged
        }
        if case .damaged = loaded, ctx.config.mutant != .damagedAnswersFresh { damagedKeys.insert(hashed) }
        let all = placement.replicas(for: key)
        precondition(all.count == 3 && all.contains(id), "this node is not a replica of the key")
        stats.keyLoads += 1
        clock.append(hashed)
        let owner = ctx.config.fastAccept ? placement.fastAcceptOwner(for: key) : nil
        return KeyReplica(
            key: key, me: id, peers: all.filter { $0 != id }, loaded: loaded, promisedFloor: floor,
            owner: owner.flatMap { all.contains($0) ? $0 : nil }, mutant: ctx.config.mutant)
    }

    /// The replica of `key` (loaded from storage on first use).
    func replica(_ key: HashedKey) -> KeyReplica {
        if let r = keys[key] { return r }
        guard let storage else { preconditionFailure("key used before install on a node without storage") }
        let r = makeReplica(key, (try? storage.load(Self.recordKey(key.bytes))) ?? .damaged)
        keys[key] = r
        return r
    }

    /// Read-only view of a loaded key, for observers and tests.
    public func inspect(_ key: [UInt8]) -> KeyReplica? { keys[HashedKey(key)] }

    /// The kind of a loaded key's chosen value; nil when the key is not loaded or absent (the
    /// shell's list of streams for /metrics asks this of every key it writes).
    public func chosenKind(of key: [UInt8]) -> ValueKind? {
        guard let v = keys[HashedKey(key)]?.state.value, v.bytes != nil else { return nil }
        return v.kind
    }

    private func apply(_ key: HashedKey, _ body: (inout KeyReplica, inout NodeContext) -> Effects) {
        var index = keys.index(forKey: key)
        if index == nil {
            keys[key] = replica(key)
            index = keys.index(forKey: key)
        }
        if keysLoadedMax != Int.max { referenced.insert(key) }
        // Mutated in place (one lookup): copying the replica out and back would copy its queues
        // every step.
        let (fx, busyNow, damagedNow) = Self.step(&keys.values[index!], &ctx, body)
        if !damagedNow, !damagedKeys.isEmpty, damagedKeys.remove(key) != nil {
            if learnerOnly { rebuilt.insert(key) }
            suspected.remove(key)
        }
        if fx.persist != nil, dirtySet.insert(key).inserted { dirty.append(key) }
        if fx.mustSync { mustSync = true }
        if fx.mergedOps > 0 {
            stats.instancesProposed += 1
            stats.opsMerged += fx.mergedOps
        }
        for m in fx.messages { outbox.append((m.to, FrameItem(key: key.bytes, message: m.message))) }
        replies += fx.replies
        if !fx.keyEvents.isEmpty { keyEvents += fx.keyEvents }
        if busyNow, busySet.insert(key).inserted { busy.append(key) }
    }

    /// Runs `body` on a replica in place and says whether it is busy after (reading `isBusy` through
    /// the dictionary's getter would copy the whole replica).
    @inline(__always)
    private static func step(
        _ r: inout KeyReplica, _ ctx: inout NodeContext,
        _ body: (inout KeyReplica, inout NodeContext) -> Effects
    ) -> (Effects, Bool, Bool) {
        let fx = body(&r, &ctx)
        return (fx, r.isBusy, r.damaged)
    }

    /// The encoded state of a loaded key, read in place (no copy of the replica).
    private func encodedState(_ key: HashedKey) -> [UInt8] {
        func encode(_ r: inout KeyReplica) -> [UInt8] { PaxosCodec.encode(r.state) }
        return encode(&keys.values[keys.index(forKey: key)!])
    }

    /// Queues a frame's messages from a peer. Items about keys this node does not replicate are
    /// dropped (counted in `stats.misrouted`).
    public func receive(_ frame: Frame) {
        let fixed = placement is FixedPlacement
        for item in frame.items {
            if !fixed && !isReplica(of: item.key) {
                stats.misrouted += 1
                continue
            }
            if votingHeld && Self.asksForVote(item.message) {
                votesHeld += 1
                continue
            }
            apply(HashedKey(item.key)) { r, c in r.step(item.message, from: frame.from, ctx: &c) }
        }
    }

    /// The same for items whose keys the caller hashed and found replicated here (`NodeCore`,
    /// which also loaded them); `misrouted` counts the items it dropped.
    func receive(from: NodeID, _ items: [(HashedKey, PaxosMessage)], misrouted: Int) {
        stats.misrouted += misrouted
        for (key, message) in items {
            if votingHeld && Self.asksForVote(message) {
                votesHeld += 1
                continue
            }
            apply(key) { r, c in r.step(message, from: from, ctx: &c) }
        }
    }

    /// Queues a client write; the reply carries `tag`. This node must be a replica of `key`.
    public func propose(
        key: [UInt8], _ op: Operation, id rid: RequestID, tag: UInt64, bound: ProposeBound = .none
    ) {
        apply(HashedKey(key)) { r, c in r.propose(op, id: rid, tag: tag, bound: bound, ctx: &c) }
    }

    /// For routing a write of a loaded `key`: the other replicas that proposed on it in the last
    /// `window` ticks (`KeyReplica.proposing`), and its chosen instance. Nil when the key is not
    /// in memory (then nobody proposed on it here lately).
    func proposalHint(_ key: HashedKey, within window: UInt64) -> (proposing: [NodeID], chosen: UInt64)? {
        guard let i = keys.index(forKey: key) else { return nil }
        return (keys.values[i].proposing(within: window, now: ctx.now), keys.values[i].state.chosen)
    }

    /// Queues a client read; the reply carries `tag`. This node must be a replica of `key`.
    public func read(key: [UInt8], staleOK: Bool = false, tag: UInt64) {
        apply(HashedKey(key)) { r, c in r.read(staleOK: staleOK, tag: tag, ctx: &c) }
    }

    // MARK: - Repair (driven by the anti-entropy scanner, TernRepair)

    /// Asks `peer` for `key`'s chosen value (this replica was found behind). This node must be a
    /// replica of `key`.
    public func requestLearn(key: [UInt8], from peer: NodeID) {
        apply(HashedKey(key)) { r, _ in r.requestLearn(from: peer) }
    }

    /// Sends `peer` this replica's chosen value of `key` (the peer was found behind).
    public func teach(key: [UInt8], to peer: NodeID) {
        apply(HashedKey(key)) { r, _ in r.teach(peer) }
    }

    /// Loads `key` (with storage) so that damage in its record surfaces: a damaged key is busy and
    /// starts its recovery on the next tick.
    public func load(key: [UInt8]) { touch(HashedKey(key)) }

    /// Steps `key` once with no input, so that a damaged replica joins the busy keys (its recovery
    /// runs on ticks).
    private func touch(_ key: HashedKey) { apply(key) { _, _ in Effects() } }

    /// Installs `record` as `key`'s state whatever `learnerOnly` says, replacing what is in
    /// memory. Only the `copy-bytes` repair mutant does this (a record copied from a peer is
    /// trusted as if it were this replica's own memory); the real scanner never does.
    public func adoptCopiedRecord(key: [UInt8], _ record: [UInt8]) {
        let hashed = HashedKey(key)
        // Not by clearing `learnerOnly` for the moment: that also forgets the keys rebuilt so far.
        keys[hashed] = makeReplica(hashed, .state(record), trusted: true)
        damagedKeys.remove(hashed)
    }

    /// Treats `key` as damaged when this replica holds nothing for it although a peer holds a
    /// chosen value: its record may have been lost (a dropped record, a lost file), and with it
    /// promises this replica made. Recovery is then the damaged-key rule: learn from both peers and
    /// a fresh ballot promised by both. Returns true when the key was marked.
    @discardableResult
    public func markMissing(key: [UInt8]) -> Bool {
        let hashed = HashedKey(key)
        let current = replica(hashed)
        if keys[hashed] == nil { keys[hashed] = current }
        guard current.isBlank, ctx.config.mutant != .damagedAnswersFresh else { return false }
        keys[hashed] = makeReplica(hashed, .damaged)
        suspected.insert(hashed)
        touch(hashed)
        return true
    }

    /// `peer` is rebuilding (learner-only: it lost its memory). Keys this replica shares with it
    /// that are damaged only on suspicion (`markMissing`) trust their blank memory again: with
    /// the peer's state lost, this replica's cannot be lost too (one replica's state at a time),
    /// and two damaged replicas of one key would each wait for the other's promise forever.
    /// Returns how many keys were cleared.
    @discardableResult
    public func clearSuspicions(sharedWith peer: NodeID) -> Int {
        var cleared = 0
        for k in suspected.sorted(by: { $0.bytes.lexicographicallyPrecedes($1.bytes) })
        where placement.replicas(for: k.bytes).contains(peer) {
            suspected.remove(k)
            guard let r = keys[k], r.damaged, !learnerOnly else { continue }
            keys[k] = makeReplica(k, .absent)
            damagedKeys.remove(k)
            touch(k)
            cleared += 1
        }
        return cleared
    }

    /// The expiry horizon (Unix ms: wall clock plus the skew bound), set by the shell before it
    /// steps the node; writes this node proposes remove values whose deadline is at or below it.
    /// Keyspace events of instances this node got chosen, until the shell takes them.
    var keyEvents: [KeyEvent] = []

    /// The keyspace events raised since the last call (docs/PUBSUB.md); the shell publishes them.
    public func takeKeyEvents() -> [KeyEvent] {
        defer { keyEvents = [] }
        return keyEvents
    }

    /// Whether proposers list keyspace events (the shell sets it from `notify-keyspace-events`).
    public var keyEventsOn: Bool {
        get { ctx.keyEventsOn }
        set { ctx.keyEventsOn = newValue }
    }

    public var expiryHorizonMs: UInt64 {
        get { ctx.expiryHorizonMs }
        set { ctx.expiryHorizonMs = newValue }
    }

    /// Advances time by one tick for every key with running timers.
    public func tick() throws {
        ctx.now += 1
        if !deferred.isEmpty, let storage {
            // The mutant's late persist.
            try storage.write(deferred)
            try storage.sync()
            deferred = []
        }
        let keysNow = busy
        busy = []
        busySet = []
        for k in keysNow { apply(k) { r, c in r.tick(ctx: &c) } }
    }

    /// Takes everything queued as one batch: the records to write and the messages and replies
    /// that must wait for them. At most one batch may be in flight.
    public func beginFlush() -> PreparedFlush {
        precondition(inFlight == nil, "a batch is already in flight: finish it first")
        serial += 1
        inFlight = serial
        var records: [(key: [UInt8], value: [UInt8])] = []
        var sync = mustSync
        if ctx.ballots.epochDirty {
            records.append((Self.epochKey, PaxosCodec.encodeEpoch(ctx.ballots.epoch)))
            ctx.ballots.epochDirty = false
            sync = true
        }
        let fences = fenceTokens
        if fenceDirty {
            // (safety) Announced once durable, and with every vote cast before it durable too (the
            // batches before this one, and this one's records): the bulk copy reads them after.
            records.append((Self.fenceKey, PaxosCodec.encodeFence(ctx.fence)))
            fenceDirty = false
            fenceTokens = []
            sync = true
        }
        records.reserveCapacity(dirty.count + 1)
        for k in dirty { records.append((Self.recordKey(k.bytes), encodedState(k))) }
        let written = dirty.map(\.bytes)
        dirty = []
        dirtySet = []
        mustSync = false
        var perPeer: [NodeID: [FrameItem]] = [:]
        var peerOrder: [NodeID] = []
        var selfItems: [FrameItem] = []
        for (to, item) in outbox {
            if to == id {
                selfItems.append(item)
            } else {
                if perPeer[to] == nil { peerOrder.append(to) }
                perPeer[to, default: []].append(item)
            }
        }
        outbox = []
        let held = replies
        replies = []
        let frames = peerOrder.map { Frame(from: id, to: $0, items: perPeer[$0]!) }
        if !(records.isEmpty && frames.isEmpty && held.isEmpty && selfItems.isEmpty) {
            stats.flushes += 1
            if !records.isEmpty { stats.writes += 1 }
            if sync && !records.isEmpty { stats.syncs += 1 }
            stats.records += records.count
            for r in records { stats.recordBytes += r.key.count + r.value.count }
        }
        return PreparedFlush(
            records: records, mustSync: sync && !records.isEmpty, serial: serial, frames: frames,
            replies: held, selfItems: selfItems, keys: written, fences: fences)
    }

    /// Releases a batch whose records are written (and durable, if it said `mustSync`): returns its
    /// frames and replies, feeds the node's messages to itself back in (their effects join the next
    /// batch), then evicts idle keys beyond `keysLoadedMax`.
    public func finishFlush(_ flush: PreparedFlush) -> NodeOutput {
        precondition(inFlight == flush.serial, "finishFlush of a batch that is not in flight")
        inFlight = nil
        var out = NodeOutput()
        out.frames = flush.frames
        out.replies = flush.replies
        out.touched = flush.keys
        out.fencesDurable = flush.fences
        stats.frames += flush.frames.count
        stats.messages += flush.frames.reduce(0) { $0 + $1.items.count }
        if !flush.selfItems.isEmpty { receive(Frame(from: id, to: id, items: flush.selfItems)) }
        evictIdle()
        return out
    }

    /// True while a batch taken by `beginFlush` waits for `finishFlush`.
    public var flushInFlight: Bool { inFlight != nil }

    /// Persists everything queued (one batch, at most one sync), then releases messages and replies.
    ///
    /// Self-addressed messages are stepped after the sync and their own effects flushed in further
    /// rounds (bounded; the rest waits for the next flush). Needs a node with storage.
    public func flush() throws -> NodeOutput {
        var out = NodeOutput()
        guard hasWork else { return out }
        guard let storage else { preconditionFailure("flush() needs a node with storage") }
        var perPeer: [NodeID: [FrameItem]] = [:]
        var peerOrder: [NodeID] = []
        for _ in 0..<8 {
            let batch = beginFlush()
            if ctx.config.mutant == .replyBeforePersist && !batch.records.isEmpty {
                deferred += batch.records
            } else if !batch.records.isEmpty {
                do {
                    try storage.write(batch.records)
                    if batch.mustSync { try storage.sync() }
                } catch {
                    // Nothing of this batch may leave; its records stay dirty-free but its keys'
                    // memory is ahead of the disk, exactly as after a failed fsync: give up.
                    inFlight = nil
                    throw error
                }
            }
            let selfCount = batch.selfItems.count
            let part = finishFlush(batch)
            out.touched += part.touched
            out.replies += part.replies
            out.fencesDurable += part.fencesDurable
            for f in part.frames {
                if perPeer[f.to] == nil { peerOrder.append(f.to) }
                perPeer[f.to, default: []] += f.items
            }
            if selfCount == 0 { break }
        }
        for p in peerOrder { out.frames.append(Frame(from: id, to: p, items: perPeer[p]!)) }
        return out
    }

    /// True when a flush would do something.
    public var hasWork: Bool {
        !dirty.isEmpty || !outbox.isEmpty || !replies.isEmpty || ctx.ballots.epochDirty || fenceDirty
    }

    /// Evicts idle keys (no timers, nothing queued or unwritten, no message of theirs waiting)
    /// while more than `keysLoadedMax` are loaded; their state is on disk and reloads on next use.
    /// Returns how many were evicted.
    @discardableResult
    public func evictIdle() -> Int {
        guard keys.count > keysLoadedMax, inFlight == nil else { return 0 }
        var waiting = Set<HashedKey>()
        for (_, item) in outbox { waiting.insert(HashedKey(item.key)) }
        var evicted = 0
        var budget = 2 * (clock.count - clockHead)
        while keys.count > keysLoadedMax && budget > 0 && clockHead < clock.count {
            budget -= 1
            let k = clock[clockHead]
            clockHead += 1
            guard let r = keys[k] else { continue }
            if referenced.remove(k) != nil || r.isBusy || r.damaged || dirtySet.contains(k)
                || waiting.contains(k)
            {
                clock.append(k)
                continue
            }
            keys[k] = nil
            evicted += 1
        }
        if clockHead > 1024 && clockHead * 2 > clock.count {
            clock.removeFirst(clockHead)
            clockHead = 0
        }
        stats.keysEvicted += evicted
        return evicted
    }
}

/// A key with its hash computed once, over all its bytes at a time (an `[UInt8]` key hashes byte by
/// byte, on every lookup). The maps and sets of `ReplicaNode` and `NodeCore` use it.
struct HashedKey: Hashable, Sendable {
    let bytes: [UInt8]
    let hash: Int

    init(_ bytes: [UInt8]) {
        self.bytes = bytes
        var h = Hasher()
        bytes.withUnsafeBytes { h.combine(bytes: $0) }
        hash = h.finalize()
    }

    func hash(into hasher: inout Hasher) { hasher.combine(hash) }
    static func == (a: HashedKey, b: HashedKey) -> Bool { a.hash == b.hash && a.bytes == b.bytes }
}

/// Errors of the node driver.
public enum ReplicaNodeError: Error, Sendable {
    /// The epoch record is unreadable: the node cannot know which rounds it used.
    case epochDamaged
}
