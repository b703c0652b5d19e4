import Logging
import NIOConcurrencyHelpers
import NIOCore
import TernConsensus
import TernCore
import TernPlacement
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
    /// The engine's damage counters (records with a bad checksum, damage no key can be found for).
    public var storageDamagedRecords = 0
    public var storageUnattributedDamage = 0
    /// False once the node stopped serving (storage failure, shutting down).
    public var serving: Bool
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
    var tickTask: RepeatedTask?
    /// Client requests waiting, by the core's request id.
    var promises: [UInt64: EventLoopPromise<NodeReply>] = [:]
    var drained: [EventLoopPromise<Void>] = []
    /// A `drive` is scheduled for later in this loop turn (inputs arrived, or the core had more
    /// than one call's work).
    var driveScheduled = false
    /// A `drive` is running, and another input arrived during it (a store callback made inline,
    /// a reply's callback that sent the next request): it runs again before returning.
    var driving = false
    var driveAgain = false

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
        let next: (epoch: UInt32, record: (key: [UInt8], value: [UInt8]))
        do {
            next = try ReplicaNode.nextEpoch(after: stored)
        } catch {
            throw NodeError(
                "the epoch record is damaged: this node cannot know which ballots it used; "
                    + "restore its data directory or start it with an empty one")
        }
        try await store.write([.put(next.record.key, next.record.value)])
        let node = Node(
            id: id, campus: entry.campus, map: map, store: store, link: link, eventLoop: eventLoop,
            epoch: next.epoch, options: options, logger: logger)
        try await eventLoop.submit { node.startTimer() }.get()
        logger.info(
            "node started",
            metadata: ["node": "\(id)", "campus": "\(entry.campus)", "epoch": "\(next.epoch)"])
        return node
    }

    init(
        id: NodeID, campus: Campus, map: ClusterMap, store: Store, link: (any PeerLink)?,
        eventLoop: any EventLoop, epoch: UInt32, options: NodeOptions, logger: Logger
    ) {
        self.id = id
        self.campus = campus
        self.map = map
        self.ring = Ring(map: map)
        self.store = store
        self.link = link
        self.eventLoop = eventLoop
        self.options = options
        self.logger = logger
        core = NodeCore(
            id: id, campusIndex: Campus.allCases.firstIndex(of: campus)!,
            placement: RingPlacement(ring: ring),
            epoch: epoch, options: options.core, now: Node.clock())
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
            self.core.tick(now: Node.clock())
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
    public func execute(key: [UInt8], _ request: KeyRequest) -> EventLoopFuture<NodeReply> {
        let promise = eventLoop.makePromise(of: NodeReply.self)
        onLoop {
            let wid = self.core.request(key: key, request, now: Node.clock())
            self.promises[wid] = promise
            self.driveLater()
        }
        return promise.futureResult
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
    public func execute(key: [UInt8], _ request: KeyRequest) async -> NodeReply {
        (try? await execute(key: key, request).get()) ?? .unavailable("node stopped")
    }

    // MARK: - Peers

    /// Handlers of service messages, by service kind (set before traffic arrives).
    let serviceHandlers = NIOLockedValueBox<[UInt8: @Sendable (NodeID, [UInt8]) -> Void]>([:])

    /// Routes peer messages of service `kind` to `handler` (called on the node's event loop).
    /// Kinds in use: 1 = sequence allocator (TernServer/Seq*), 2 = sync notices (TernServer/Sync*).
    public func setServiceHandler(_ kind: UInt8, _ handler: @escaping @Sendable (NodeID, [UInt8]) -> Void) {
        serviceHandlers.withLockedValue { $0[kind] = handler }
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

    private func driveOnce() {
        let r = core.ready()
        if r.isEmpty { return checkDrained() }
        if let link {
            for m in r.messages { link.send(ByteBuffer(bytes: m.bytes), to: m.to) }
        }
        for (wid, reply) in r.replies { promises.removeValue(forKey: wid)?.succeed(reply) }
        if !r.services.isEmpty {
            let handlers = serviceHandlers.withLockedValue { $0 }
            for s in r.services {
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

    private func checkDrained() {
        if core.closing && core.inFlight == 0 && !drained.isEmpty {
            for p in drained { p.succeed(()) }
            drained = []
        }
    }

    // MARK: - Status and shutdown

    /// Current counters.
    public func status() async -> NodeStatus {
        let fsyncs = (try? await store.syncCount()) ?? 0
        let storage = try? await store.stats()
        let promise = eventLoop.makePromise(of: NodeStatus.self)
        eventLoop.execute {
            let c = self.core.counters
            promise.succeed(
                NodeStatus(
                    node: self.id, campus: self.campus, epoch: self.core.replica.epoch,
                    keysLoaded: self.core.replica.keysLoaded, consensus: self.core.replica.stats,
                    fsyncs: fsyncs,
                    requests: c.requests, requestsFailed: c.failed, forwardedOut: c.forwardedOut,
                    forwardedIn: c.forwardedIn, retries: c.retries, inFlight: self.core.inFlight,
                    badPeerMessages: c.badMessages, damagedKeyLoads: c.damagedLoads,
                    storageDamagedRecords: storage?.damagedRecords ?? 0,
                    storageUnattributedDamage: storage?.unattributedDamage ?? 0,
                    serving: self.core.serving))
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
}

/// A node could not start or serve.
public struct NodeError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}
