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
}

/// The node-level driver: owns the `KeyReplica`s of one node and does their IO in the right order.
///
/// Inputs (`receive`, `propose`, `read`, `tick`) only queue effects; `flush()` writes every queued
/// record in ONE batch with at most ONE sync (group commit), and only then releases the batch's
/// messages (one frame per peer) and client replies. Messages a node sends to itself are fed back
/// within the same flush, after the sync that precedes them. Not thread-safe: one event loop (or
/// the simulator) owns it.
public final class ReplicaNode {
    /// This node.
    public let id: NodeID
    /// The three replicas of every key (one per campus). Placement comes later.
    public let replicas: [NodeID]
    let storage: any ReplicaStorage
    var ctx: NodeContext
    var keys: [[UInt8]: KeyReplica] = [:]
    /// Keys with timers running, in a deterministic order.
    var busy: [[UInt8]] = []
    var busySet: Set<[UInt8]> = []
    var dirty: [[UInt8]] = []
    var dirtySet: Set<[UInt8]> = []
    var mustSync = false
    var outbox: [(to: NodeID, item: FrameItem)] = []
    var replies: [ClientReply] = []
    /// `replyBeforePersist` mutant only: records written after their messages left.
    var deferred: [(key: [UInt8], value: [UInt8])] = []

    /// Storage key of the node's epoch record (key records are prefixed with 1).
    static let epochKey: [UInt8] = [0] + Array("epoch".utf8)
    static func recordKey(_ key: [UInt8]) -> [UInt8] { [1] + key }

    /// Starts the node: reads the epoch, bumps it and syncs it before anything else can happen, so
    /// no round used before the restart is used again.
    public init(
        id: NodeID, replicas: [NodeID], storage: any ReplicaStorage, config: PaxosConfig, seed: UInt64
    )
        throws
    {
        precondition(replicas.count == 3 && replicas.contains(id), "three replicas, this node among them")
        self.id = id
        self.replicas = replicas
        self.storage = storage
        var epoch: UInt32 = 0
        if case .state(let b) = try storage.load(Self.epochKey) {
            guard let e = PaxosCodec.decodeEpoch(b) else { throw ReplicaNodeError.epochDamaged }
            epoch = e
        }
        if config.mutant != .noEpochOnRestart || epoch == 0 {
            epoch += 1
            try storage.write([(Self.epochKey, PaxosCodec.encodeEpoch(epoch))])
            try storage.sync()
        }
        ctx = NodeContext(
            me: id, now: 0, ballots: BallotClock(epoch: epoch), rng: SplitMix64(seed: seed), config: config)
    }

    /// The epoch this incarnation runs in.
    public var epoch: UInt32 { ctx.ballots.epoch }
    /// Current tick.
    public var now: UInt64 { ctx.now }

    /// The replica of `key` (loaded from storage on first use).
    func replica(_ key: [UInt8]) -> KeyReplica {
        if let r = keys[key] { return r }
        let loaded: LoadedKey
        switch (try? storage.load(Self.recordKey(key))) ?? .damaged {
        case .absent: loaded = .absent
        case .damaged: loaded = .damaged
        case .state(let b): loaded = PaxosCodec.decode(b).map { .state($0) } ?? .damaged
        }
        let r = KeyReplica(
            key: key, me: id, peers: replicas.filter { $0 != id }, loaded: loaded, mutant: ctx.config.mutant)
        keys[key] = r
        return r
    }

    /// Read-only view of a loaded key, for observers and tests.
    public func inspect(_ key: [UInt8]) -> KeyReplica? { keys[key] }

    private func apply(_ key: [UInt8], _ body: (inout KeyReplica, inout NodeContext) -> Effects) {
        if keys[key] == nil { keys[key] = replica(key) }
        // Mutated in place: copying the replica out and back would copy its queues every step.
        let fx = body(&keys[key]!, &ctx)
        let r = keys[key]!
        if let _ = fx.persist, !dirtySet.contains(key) {
            dirtySet.insert(key)
            dirty.append(key)
        }
        if fx.mustSync { mustSync = true }
        for m in fx.messages { outbox.append((m.to, FrameItem(key: key, message: m.message))) }
        replies += fx.replies
        if r.isBusy, !busySet.contains(key) {
            busySet.insert(key)
            busy.append(key)
        }
    }

    /// Queues a frame's messages from a peer.
    public func receive(_ frame: Frame) {
        for item in frame.items {
            apply(item.key) { r, c in r.step(item.message, from: frame.from, ctx: &c) }
        }
    }

    /// Queues a client write; the reply carries `tag`.
    public func propose(key: [UInt8], _ op: Operation, id rid: RequestID, tag: UInt64) {
        apply(key) { r, c in r.propose(op, id: rid, tag: tag, ctx: &c) }
    }

    /// Queues a client read; the reply carries `tag`.
    public func read(key: [UInt8], staleOK: Bool = false, tag: UInt64) {
        apply(key) { r, c in r.read(staleOK: staleOK, tag: tag, ctx: &c) }
    }

    /// Advances time by one tick for every key with running timers.
    public func tick() throws {
        ctx.now += 1
        if !deferred.isEmpty {
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

    /// Persists everything queued (one batch, at most one sync), then releases messages and replies.
    ///
    /// Self-addressed messages are stepped after the sync and their own effects flushed in further
    /// rounds (bounded; the rest waits for the next flush).
    public func flush() throws -> NodeOutput {
        var out = NodeOutput()
        guard hasWork else { return out }
        var perPeer: [NodeID: [FrameItem]] = [:]
        var peerOrder: [NodeID] = []
        for _ in 0..<8 {
            var batch: [(key: [UInt8], value: [UInt8])] = []
            if ctx.ballots.epochDirty {
                batch.append((Self.epochKey, PaxosCodec.encodeEpoch(ctx.ballots.epoch)))
                ctx.ballots.epochDirty = false
                mustSync = true
            }
            for k in dirty { batch.append((Self.recordKey(k), PaxosCodec.encode(keys[k]!.state))) }
            out.touched += dirty
            if ctx.config.mutant == .replyBeforePersist && !batch.isEmpty {
                deferred += batch
            } else if !batch.isEmpty {
                try storage.write(batch)
                if mustSync { try storage.sync() }
            }
            dirty = []
            dirtySet = []
            mustSync = false
            let sending = outbox
            outbox = []
            out.replies += replies
            replies = []
            var selfItems: [FrameItem] = []
            for (to, item) in sending {
                if to == id {
                    selfItems.append(item)
                } else {
                    if perPeer[to] == nil { peerOrder.append(to) }
                    perPeer[to, default: []].append(item)
                }
            }
            if selfItems.isEmpty { break }
            receive(Frame(from: id, to: id, items: selfItems))
        }
        for p in peerOrder { out.frames.append(Frame(from: id, to: p, items: perPeer[p]!)) }
        return out
    }

    /// True when a flush would do something.
    public var hasWork: Bool {
        !dirty.isEmpty || !outbox.isEmpty || !replies.isEmpty || ctx.ballots.epochDirty
    }
}

/// Errors of the node driver.
public enum ReplicaNodeError: Error, Sendable {
    /// The epoch record is unreadable: the node cannot know which rounds it used.
    case epochDamaged
}
