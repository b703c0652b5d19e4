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

/// A client request on one key.
public enum KeyRequest: Sendable, Hashable {
    /// A linearizable read.
    case read
    /// A write (or read-modify-write).
    case write(Operation)
}

/// What a client request came to, after the node's internal retries.
public enum NodeReply: Sendable, Hashable {
    /// The write took effect with this result.
    case done(OperationResult)
    /// The read's value (nil = absent).
    case value([UInt8]?)
    /// Gave up within the request timeout; certainly not applied (every attempt was refused
    /// before an Accept carried it). Usually: fewer than 2 of 3 campuses reachable. The text says
    /// what this node saw of the key's replicas (`Node.quorumDetail`).
    case notApplied(String)
    /// Gave up within the request timeout; a write may or may not have been applied.
    case unknown(String)
    /// The node cannot serve requests (shutting down, or its storage failed).
    case unavailable(String)
    /// The request itself is invalid (e.g. its key is too long); nothing was tried.
    case refused(String)
}

extension NodeReply {
    /// The refusal of a key longer than `ReplicaNode.keyBytesMax`.
    public static func keyTooLong(_ count: Int) -> NodeReply {
        .refused("key is too long (\(count) bytes; the limit is \(ReplicaNode.keyBytesMax))")
    }
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
    /// The consensus core's tunables (in ticks). The server queues more writes per key than the
    /// core's defaults (hot keys under many pipelined clients) and merges up to 256 per instance.
    public var paxos: PaxosConfig = {
        var c = PaxosConfig()
        c.pendingMax = 16_384
        c.mergeMax = 256
        return c
    }()
    public init() {}
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

/// Kinds of the server's peer messages (the first byte of each message).
enum Envelope: UInt8 {
    /// A Paxos frame (`PaxosWire`).
    case paxos = 1
    /// A client request forwarded to a replica of its key.
    case forward = 2
    /// The replica's answer to a forwarded request.
    case forwardReply = 3
    /// A message of a service built on the node (sequence allocator, sync notices): the next
    /// byte is the service kind (`Node.setServiceHandler`), the rest is the service's own.
    case service = 4
}

/// One node of the cluster: a `ReplicaNode` on ONE event loop, its storage, routing of client
/// requests to the key's replicas, and the peer protocol.
///
/// ```
///  client request ─► execute ─► me a replica? ─yes─► load key (async) ─► ReplicaNode.propose/read
///                               │ no                                     │ beginFlush
///                               ▼                                        ▼
///                   forward (envelope) to the key's          Store.write (await, durable)
///                   replica in my campus, else another        │ finishFlush
///                   (timeout → next replica, same RequestID)  ▼
///                                                   frames → peers, replies → waiting callers
/// ```
/// Every mutable field is touched on `eventLoop` only; public entry points hop there.
public final class Node: @unchecked Sendable {
    // @unchecked Sendable: all mutable state below is confined to `eventLoop` (each entry point
    // hops there; internal methods assert it), the rest is immutable and Sendable.

    public let id: NodeID
    public let campus: Campus
    public let map: ClusterMap
    public let eventLoop: any EventLoop
    let ring: Ring
    let store: Store
    let options: NodeOptions
    let logger: Logger
    var link: (any PeerLink)?

    let core: ReplicaNode
    var flushing = false
    var failed: String?
    var closing = false
    var tickTask: RepeatedTask?
    var ticks: UInt64 = 0

    /// Keys being read from storage, with what waits for them.
    var loading: [[UInt8]: [() -> Void]] = [:]

    enum Origin {
        case local(UInt64)
        case remote(NodeID, UInt64)
    }
    /// Core tags (and forwarded attempts' tags) → whom the answer is for.
    var origins: [UInt64: Origin] = [:]
    var nextTag: UInt64 = 0
    var requestCounter: UInt64 = 0

    struct Waiter {
        var key: [UInt8]
        var request: KeyRequest
        var rid: RequestID
        var deadline: NIODeadline
        var attempts = 0
        /// Tag of the current attempt.
        var tag: UInt64 = 0
        /// The replica the current attempt went to (nil: this node).
        var target: NodeID?
        var attemptDeadline: NIODeadline?
        /// A write attempt answered `.unknown` (an Accept may have carried it).
        var sawUnknown = false
        /// Write attempts that have not answered yet (they may still apply).
        var open: Set<UInt64> = []
        /// Some attempt of a write may have been applied.
        var mayHaveApplied: Bool { sawUnknown || !open.isEmpty }
        /// Waiting to try again at this time.
        var retryAt: NIODeadline?
        var promise: EventLoopPromise<NodeReply>
    }
    var waiters: [UInt64: Waiter] = [:]
    var suspectUntil: [NodeID: NIODeadline] = [:]
    /// When a message from each peer last arrived (what a NOQUORUM reply reports).
    var lastHeard: [NodeID: NIODeadline] = [:]
    var counters = (requests: 0, failed: 0, forwardedOut: 0, forwardedIn: 0, retries: 0, bad: 0, damaged: 0)
    var rng = SplitMix64(seed: 0)
    var drained: [EventLoopPromise<Void>] = []

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
        core = ReplicaNode(
            id: id, placement: RingPlacement(ring: ring), epoch: epoch, config: options.paxos,
            seed: UInt64(id.rawValue) << 32 | UInt64(epoch))
        core.keysLoadedMax = options.keysLoadedMax
        rng = SplitMix64(seed: UInt64(id.rawValue) &* 0x9E37_79B9 ^ UInt64(epoch))
        requestCounter = UInt64(epoch) << 40
    }

    /// Sets where peer messages go (when the transport is created after the node).
    public func setLink(_ link: any PeerLink) {
        eventLoop.execute { self.link = link }
    }

    private func startTimer() {
        tickTask = eventLoop.scheduleRepeatedTask(initialDelay: options.tick, delay: options.tick) {
            [self] _ in
            self.onTick()
        }
    }

    // MARK: - Client requests

    /// The replicas of `key`: one per campus (A, B, C).
    public func replicas(of key: [UInt8]) -> Replicas { ring.replicas(for: key) }

    /// Runs a client request on `key`: locally if this node is one of its replicas, else forwarded;
    /// retried internally (same request id) until `options.requestTimeout`.
    public func execute(key: [UInt8], _ request: KeyRequest) -> EventLoopFuture<NodeReply> {
        let promise = eventLoop.makePromise(of: NodeReply.self)
        eventLoop.execute { self.start(key: key, request, promise) }
        return promise.futureResult
    }

    /// The async form of `execute`.
    public func execute(key: [UInt8], _ request: KeyRequest) async -> NodeReply {
        (try? await execute(key: key, request).get()) ?? .unavailable("node stopped")
    }

    private func start(key: [UInt8], _ request: KeyRequest, _ promise: EventLoopPromise<NodeReply>) {
        if let failed {
            promise.succeed(.unavailable(failed))
            return
        }
        if closing {
            promise.succeed(.unavailable("node is shutting down"))
            return
        }
        guard key.count <= ReplicaNode.keyBytesMax else {
            promise.succeed(.keyTooLong(key.count))
            return
        }
        counters.requests += 1
        requestCounter += 1
        let wid = requestCounter
        waiters[wid] = Waiter(
            key: key, request: request, rid: RequestID(client: id.rawValue, counter: requestCounter),
            deadline: .now() + options.requestTimeout, promise: promise)
        attempt(wid)
    }

    /// Sends the waiter's next attempt: locally, or to a replica chosen by campus and suspicion.
    private func attempt(_ wid: UInt64) {
        guard var w = waiters[wid] else { return }
        let replicas = ring.replicas(for: w.key)
        let all = [replicas.a, replicas.b, replicas.c]
        nextTag += 1
        let tag = nextTag
        origins[tag] = .local(wid)
        w.tag = tag
        w.attempts += 1
        w.retryAt = nil
        if all.contains(id) {
            w.target = nil
            w.attemptDeadline = nil
            if case .write = w.request { w.open.insert(tag) }
            waiters[wid] = w
            let key = w.key
            let request = w.request
            let rid = w.rid
            whenLoaded([key]) {
                self.submitLocal(key: key, request, rid: rid, tag: tag)
            }
            return
        }
        let now = NIODeadline.now()
        // Own campus first, then the others; a replica that recently failed to answer goes last.
        let ordered = [replicas[campus]] + all.filter { $0 != replicas[campus] }
        let healthy = ordered.filter { (suspectUntil[$0] ?? .distantPast) <= now }
        let pool = healthy.isEmpty ? ordered : healthy
        let target = pool[(w.attempts - 1) % pool.count]
        w.target = target
        w.attemptDeadline = now + options.forwardTimeout
        if case .write = w.request { w.open.insert(tag) }
        waiters[wid] = w
        counters.forwardedOut += 1
        var out = ByteWriter()
        out.u8(Envelope.forward.rawValue)
        out.u64(tag)
        out.u32(w.rid.client)
        out.u64(w.rid.counter)
        out.blob(w.key)
        switch w.request {
        case .read: out.u8(0)
        case .write(let op):
            out.u8(1)
            PaxosWire.encode(op, into: &out)
        }
        send(out.bytes, to: target)
    }

    private func submitLocal(key: [UInt8], _ request: KeyRequest, rid: RequestID, tag: UInt64) {
        switch request {
        case .read: core.read(key: key, tag: tag)
        case .write(let op): core.propose(key: key, op, id: rid, tag: tag)
        }
        kick()
    }

    /// An answer for the attempt tagged `tag` (from the local core or a forwarded reply).
    private func answer(tag: UInt64, _ outcome: ClientOutcome) {
        guard let origin = origins.removeValue(forKey: tag) else { return }
        switch origin {
        case .remote(let peer, let originTag):
            var out = ByteWriter()
            out.u8(Envelope.forwardReply.rawValue)
            out.u64(originTag)
            PaxosWire.encode(outcome, into: &out)
            send(out.bytes, to: peer)
        case .local(let wid):
            guard var w = waiters[wid] else { return }
            switch outcome {
            case .done(let r): resolve(wid, .done(r))
            case .value(let v): resolve(wid, .value(v))
            case .retryable, .unknown:
                // `.retryable` settles that attempt as not applied; `.unknown` may have applied.
                w.open.remove(tag)
                if outcome == .unknown { w.sawUnknown = true }
                // A write that may have been applied is never sent again: the replica that carried
                // it is the only one that can still tell (docs/SERVER.md, "Exactly once"). Its
                // outcome is unknown once no attempt of it is still open.
                if w.sawUnknown {
                    if w.open.isEmpty {
                        resolve(wid, .unknown(quorumDetail(w)))
                    } else {
                        waiters[wid] = w
                    }
                    return
                }
                // Only the current attempt's failure schedules the next one.
                guard w.tag == tag else {
                    waiters[wid] = w
                    return
                }
                retryLater(&w)
                waiters[wid] = w
            }
        }
    }

    /// What this node saw of the key's other replicas while request `w` ran: those it heard
    /// nothing from since the request began, by campus, or that every one answered (then the cause
    /// was contention or load, not a missing campus).
    func quorumDetail(_ w: Waiter) -> String {
        let replicas = ring.replicas(for: w.key)
        let now = NIODeadline.now()
        let began = w.deadline - options.requestTimeout
        var silent: [String] = []
        for campus in Campus.allCases where replicas[campus] != id {
            let peer = replicas[campus]
            guard let heard = lastHeard[peer] else {
                silent.append("campus \(campus) (\(peer): nothing received since this node started)")
                continue
            }
            if heard < began {
                silent.append(
                    "campus \(campus) (\(peer): nothing received for \((now - heard).nanoseconds / 1_000_000) ms)"
                )
            }
        }
        let ms = (now - began).nanoseconds / 1_000_000
        if silent.isEmpty {
            return "every campus answered, but no quorum within \(ms) ms (contention or overload)"
        }
        return "no answer within \(ms) ms from \(silent.joined(separator: " or "))"
    }

    /// Schedules another attempt after a short randomised pause (or fails the request at its deadline).
    private func retryLater(_ w: inout Waiter) {
        counters.retries += 1
        let pause = TimeAmount.milliseconds(5 + Int64(rng.below(20)))
        w.retryAt = .now() + pause
        w.attemptDeadline = nil
        // The old attempt's tag stays mapped: a late success still answers the client.
    }

    private func resolve(_ wid: UInt64, _ reply: NodeReply) {
        guard let w = waiters.removeValue(forKey: wid) else { return }
        switch reply {
        case .done, .value: break
        default: counters.failed += 1
        }
        w.promise.succeed(reply)
        if waiters.isEmpty && closing {
            for p in drained { p.succeed(()) }
            drained = []
        }
    }

    /// Deadlines: forwarded attempts that got no answer, retries due, requests out of time.
    private func checkWaiters() {
        let now = NIODeadline.now()
        for (wid, w) in waiters {
            if now >= w.deadline {
                let detail = quorumDetail(w)
                resolve(wid, w.mayHaveApplied ? .unknown(detail) : .notApplied(detail))
                continue
            }
            if let at = w.attemptDeadline, now >= at, let target = w.target {
                suspectUntil[target] = now + options.suspectFor
                var w = w
                if case .write = w.request {
                    // The silent replica may still carry it: wait for its late answer (or the
                    // deadline) instead of proposing the same request a second time elsewhere.
                    w.attemptDeadline = nil
                    waiters[wid] = w
                    continue
                }
                retryLater(&w)
                w.retryAt = now
                waiters[wid] = w
                attempt(wid)
                continue
            }
            if let at = w.retryAt, now >= at { attempt(wid) }
        }
    }

    // MARK: - Peers

    private func send(_ bytes: [UInt8], to peer: NodeID) {
        guard let link else { return }
        link.send(ByteBuffer(bytes: bytes), to: peer)
    }

    /// Handlers of `Envelope.service` messages, by service kind (set before traffic arrives).
    let serviceHandlers = NIOLockedValueBox<[UInt8: @Sendable (NodeID, [UInt8]) -> Void]>([:])

    /// Routes peer messages of service `kind` to `handler` (called on the node's event loop).
    /// Kinds in use: 1 = sequence allocator (TernServer/Seq*), 2 = sync notices (TernServer/Sync*).
    public func setServiceHandler(_ kind: UInt8, _ handler: @escaping @Sendable (NodeID, [UInt8]) -> Void) {
        serviceHandlers.withLockedValue { $0[kind] = handler }
    }

    /// Sends a service message to `peer` (best effort, like every peer message); any thread.
    public func sendService(_ kind: UInt8, _ payload: [UInt8], to peer: NodeID) {
        eventLoop.execute { self.send([Envelope.service.rawValue, kind] + payload, to: peer) }
    }

    /// Messages from `peer` (the transport's `onBatch`); any thread.
    public func receive(from peer: NodeID, _ messages: [ByteBuffer]) {
        eventLoop.execute {
            self.lastHeard[peer] = .now()
            for m in messages { self.handle(from: peer, Array(m.readableBytesView)) }
        }
    }

    private func handle(from peer: NodeID, _ bytes: [UInt8]) {
        guard failed == nil, let kind = bytes.first.flatMap(Envelope.init(rawValue:)) else {
            if failed == nil { bad(peer, "unknown envelope") }
            return
        }
        var r = ByteReader(bytes)
        _ = r.u8()
        switch kind {
        case .paxos:
            let frame: Frame
            do {
                frame = try PaxosWire.decode(Array(bytes.dropFirst()))
            } catch {
                bad(peer, "\(error)")
                return
            }
            guard frame.from == peer, frame.to == id else {
                bad(peer, "frame from \(frame.from) to \(frame.to) on the link from \(peer)")
                return
            }
            suspectUntil[peer] = nil
            let keys = frame.items.map(\.key).filter { core.isReplica(of: $0) }
            whenLoaded(keys) {
                self.core.receive(frame)
                self.kick()
            }
        case .forward:
            guard let originTag = r.u64(), let client = r.u32(), let counter = r.u64(), let key = r.blob(),
                let k = r.u8()
            else { return bad(peer, "truncated forward") }
            let request: KeyRequest
            if k == 0 {
                request = .read
            } else if k == 1, let op = PaxosWire.decodeOperation(&r) {
                request = .write(op)
            } else {
                return bad(peer, "bad forwarded request")
            }
            guard r.atEnd else { return bad(peer, "trailing bytes in forward") }
            counters.forwardedIn += 1
            nextTag += 1
            let tag = nextTag
            origins[tag] = .remote(peer, originTag)
            guard core.isReplica(of: key), failed == nil, !closing else {
                // Our map disagrees with the sender's, or we are stopping: certainly not applied.
                answer(tag: tag, .retryable)
                return
            }
            let rid = RequestID(client: client, counter: counter)
            whenLoaded([key]) { self.submitLocal(key: key, request, rid: rid, tag: tag) }
        case .service:
            guard bytes.count >= 2 else { return bad(peer, "truncated service message") }
            guard let handler = serviceHandlers.withLockedValue({ $0[bytes[1]] }) else {
                return bad(peer, "no service of kind \(bytes[1])")
            }
            handler(peer, Array(bytes.dropFirst(2)))
        case .forwardReply:
            guard let tag = r.u64(), let outcome = PaxosWire.decodeOutcome(&r), r.atEnd else {
                return bad(peer, "bad forward reply")
            }
            suspectUntil[peer] = nil
            answer(tag: tag, outcome)
        }
    }

    private func bad(_ peer: NodeID, _ why: String) {
        counters.bad += 1
        logger.warning("dropped a bad peer message", metadata: ["peer": "\(peer)", "why": "\(why)"])
    }

    // MARK: - Loading keys (never on the event loop's thread: the store reads on its own queue)

    /// Runs `body` on the event loop once every key is in memory (reading missing ones first).
    /// One read per key at a time: a second caller waits for the first read.
    private func whenLoaded(_ keys: [[UInt8]], _ body: @escaping () -> Void) {
        let missing = Set(keys.filter { !core.isLoaded($0) })
        if missing.isEmpty {
            body()
            return
        }
        var remaining = missing.count
        let step = {
            remaining -= 1
            // A key loaded first may have been evicted while the others loaded: check again.
            if remaining == 0 { self.whenLoaded(keys, body) }
        }
        for k in missing {
            if loading[k] != nil {
                loading[k]!.append(step)
                continue
            }
            loading[k] = [step]
            // No Swift task per load: the Store calls back on its queue and we hop to the loop.
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
                self.eventLoop.execute {
                    if case .damaged = record { self.counters.damaged += 1 }
                    self.core.install(k, record)
                    for f in self.loading.removeValue(forKey: k) ?? [] { f() }
                }
            }
        }
    }

    // MARK: - Group commit

    /// Starts a batch if none is in flight: records → store (await, durable) → release.
    private func kick() {
        var rounds = 0
        while !flushing && failed == nil && core.hasWork && rounds < 16 {
            rounds += 1
            let p = core.beginFlush()
            if p.records.isEmpty {
                dispatch(core.finishFlush(p))
                continue
            }
            flushing = true
            let entries = p.records.map { BatchEntry.put($0.key, $0.value) }
            // No Swift task per batch: the Store calls back on its queue and we hop to the loop.
            // Only what the core marks `mustSync` waits for an fsync (docs/SERVER.md); the rest
            // (a chosen value peers can teach again) is appended and released.
            store.write(entries, sync: p.mustSync) { result in
                self.eventLoop.execute {
                    switch result {
                    case .success:
                        self.flushing = false
                        self.dispatch(self.core.finishFlush(p))
                        self.kick()
                    case .failure(let error):
                        self.storageFailed("\(error)")
                    }
                }
            }
        }
        if rounds == 16 { eventLoop.execute { self.kick() } }
    }

    private func dispatch(_ out: NodeOutput) {
        for f in out.frames {
            var bytes: [UInt8] = [Envelope.paxos.rawValue]
            bytes += PaxosWire.encode(f)
            send(bytes, to: f.to)
        }
        for r in out.replies { answer(tag: r.tag, r.outcome) }
    }

    /// A write failed: memory is ahead of the disk, nothing of it may leave. Fence the node.
    private func storageFailed(_ why: String) {
        failed = "storage failure: \(why)"
        logger.critical("storage write failed; the node stops serving", metadata: ["error": "\(why)"])
        for (wid, _) in waiters { resolve(wid, .unavailable(failed!)) }
    }

    private func onTick() {
        ticks += 1
        try? core.tick()
        if ticks % 4 == 0 { checkWaiters() }
        if ticks % 200 == 0 { core.evictIdle() }
        kick()
    }

    // MARK: - Status and shutdown

    /// Current counters.
    public func status() async -> NodeStatus {
        let fsyncs = (try? await store.syncCount()) ?? 0
        let storage = try? await store.stats()
        let promise = eventLoop.makePromise(of: NodeStatus.self)
        eventLoop.execute {
            promise.succeed(
                NodeStatus(
                    node: self.id, campus: self.campus, epoch: self.core.epoch,
                    keysLoaded: self.core.keysLoaded,
                    consensus: self.core.stats, fsyncs: fsyncs, requests: self.counters.requests,
                    requestsFailed: self.counters.failed, forwardedOut: self.counters.forwardedOut,
                    forwardedIn: self.counters.forwardedIn, retries: self.counters.retries,
                    inFlight: self.waiters.count, badPeerMessages: self.counters.bad,
                    damagedKeyLoads: self.counters.damaged,
                    storageDamagedRecords: storage?.damagedRecords ?? 0,
                    storageUnattributedDamage: storage?.unattributedDamage ?? 0,
                    serving: self.failed == nil && !self.closing))
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
            self.closing = true
            if self.waiters.isEmpty { drained.succeed(()) } else { self.drained.append(drained) }
        }
        let timeout = eventLoop.scheduleTask(in: grace) { drained.succeed(()) }
        try? await drained.futureResult.get()
        timeout.cancel()
        // Let the batch in flight (if any) land, then stop the clock.
        for _ in 0..<200 {
            let busy = try? await eventLoop.submit { self.flushing }.get()
            if busy != true { break }
            try? await Task.sleep(nanoseconds: 5_000_000)
        }
        let stopped = eventLoop.makePromise(of: Void.self)
        eventLoop.execute {
            self.tickTask?.cancel(promise: stopped)
            if self.tickTask == nil { stopped.succeed(()) }
            for (wid, _) in self.waiters { self.resolve(wid, .unavailable("node is shutting down")) }
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
