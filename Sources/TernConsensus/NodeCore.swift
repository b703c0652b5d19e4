public import TernCore

/// A client request on one key.
public enum KeyRequest: Sendable, Hashable {
    /// A linearizable read.
    case read
    /// A write (or read-modify-write).
    case write(Operation)
    /// A linearizable read of a data value answered where it is served: the node reads the key
    /// (as `.read`) and answers `DataModel.read` of these arguments, reading a big list's buckets
    /// only where the answer lies (LRANGE, LINDEX, LLEN; DataListBuckets.swift). The server's shell
    /// turns it into `.read` before the core sees it; the core treats it as `.read`.
    case readData([[UInt8]])
}

/// What a client request came to, after the node's internal retries.
public enum NodeReply: Sendable, Hashable {
    /// The write took effect with this result.
    case done(OperationResult)
    /// The read's value (nil = absent).
    case value([UInt8]?)
    /// The read's value, typed or expiring (`KeyValue.stored`).
    case typed(StoredValue)
    /// Gave up within the request timeout; certainly not applied (every attempt was refused
    /// before an Accept carried it). Usually: fewer than 2 of 3 campuses reachable. The text says
    /// what this node saw of the key's replicas (`NodeCore.quorumDetail`).
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

/// Tunables of a `NodeCore`; times in nanoseconds of the shell's monotonic clock.
public struct NodeCoreOptions: Sendable {
    /// How long a client request is retried internally before the client gets an error.
    public var requestTimeout: UInt64 = 3_000_000_000
    /// How long a forwarded attempt waits for the replica's answer before a read tries another
    /// replica (a write keeps waiting until `requestTimeout`: it may be applied there).
    public var forwardTimeout: UInt64 = 300_000_000
    /// How long a replica that did not answer a forward is avoided (unless nothing else is left).
    public var suspectFor: UInt64 = 1_000_000_000
    /// A refused attempt is tried again after `retryPause` plus up to `retryJitter` (seeded).
    public var retryPause: UInt64 = 5_000_000
    public var retryJitter: UInt64 = 20_000_000
    /// Idle keys kept in memory; beyond it they are evicted (and loaded again on use).
    public var keysLoadedMax = 1_000_000
    /// The consensus core's tunables (in ticks). The server queues more writes per key than the
    /// core's defaults (hot keys under many pipelined clients) and merges up to 1024 per instance
    /// (256 until 2026-12-07: a hot envelope under 64 connections × 16 pipelined opens filled
    /// every instance to that cap, `ops_per_instance` ~240, so the instance rate bounded the
    /// opens; `mergeBytesMax` still bounds an Accept's size).
    public var paxos: PaxosConfig = {
        var c = PaxosConfig()
        c.pendingMax = 16_384
        c.mergeMax = 1024
        return c
    }()
    /// Routing a hot key to one proposer (docs/PROTOCOL.md, "Routing a hot key to one proposer"):
    /// a write of a key on which a replica earlier in the key's replica order proposed within the
    /// last `routeWindowTicks` consensus ticks is forwarded to that replica instead of proposed
    /// here (0: never route).
    public var routeWindowTicks: UInt64 = 20
    /// A routed write may be carried by the proposer it went to at up to this many instances above
    /// the key's chosen instance here; past them it is answered `.retryable` there, and a route
    /// that went silent is taken back and proposed here once they are decided — which, on a key
    /// nobody else writes, takes this many instances run empty. 8 until 2026-12-08: the node-level
    /// simulator's surviving clients then waited up to 0.7 s (p90 of 100 seeds, one node per
    /// campus) after a proposer stopped; with 2, 0.3 s, and fewer clients unanswered without
    /// faults (BENCHMARKS, "Route slack").
    public var routeSlack: UInt64 = 2
    /// A routed write is taken back once nothing at all arrived from the proposer it went to for
    /// this long (only then: past `forwardTimeout` with the proposer still heard from, it waits as
    /// any forward does). A proposer busy on a hot key sends this node Accepts every few
    /// milliseconds, so silence means it stopped, however long its queue is.
    public var routeSilence: UInt64 = 100_000_000
    /// A deliberately broken variant for the simulator's checks (never in production).
    public var mutant: NodeMutant = .none
    public init() {}
}

/// Deliberate bugs in the request layer, each of which the simulator must catch.
public enum NodeMutant: String, Sendable, Hashable, CaseIterable {
    case none
    /// A write whose forwarded attempt went silent is sent again elsewhere with a FRESH request id
    /// (the replica that went silent may still apply the first one: the write applies twice).
    case freshIDAfterSilentForward = "fresh-id-after-silent-forward"
    /// A relayed write (`NodeCore.relay`) whose outcome is unknown is answered as certainly not
    /// applied: its forwarder tries it again elsewhere while the first may still apply.
    case relayUnknownAsRetryable = "relay-unknown-as-retryable"
    /// A routed write taken back after its route went silent is proposed here without the hold
    /// (`ProposeBound.heldBy`): the silent proposer may still carry it.
    case takenBackUnheld = "taken-back-unheld"
}

/// Counters of the request layer.
public struct NodeCoreCounters: Sendable, Hashable {
    /// Client requests taken here, and those that ended in an error.
    public var requests = 0
    public var failed = 0
    /// Requests this node forwarded to another replica, and forwards it served for others.
    public var forwardedOut = 0
    public var forwardedIn = 0
    /// Internal retries (a refused or timed-out attempt tried again).
    public var retries = 0
    /// Writes of hot keys routed to the replica proposing on them (also in `forwardedOut`), and
    /// routed writes taken back after the route went silent.
    public var routed = 0
    public var routesTakenBack = 0
    /// Writes forwarded here by a node that is not a replica of the key, relayed to the replica
    /// proposing on it (`relay`): no second proposer on a hot key.
    public var relayed = 0
    /// Peer messages that failed to decode.
    public var badMessages = 0
    /// Key records that were damaged (or unreadable) when loaded.
    public var damagedLoads = 0
    public init() {}
}

/// What the shell must carry out after feeding the core inputs (etcd-io/raft's `Ready`).
///
/// Order: send `messages`, deliver `replies`, hand `services` to their handlers, start `loads`
/// (answer each with `NodeCore.loaded`), write `flush` (durably when `mustSync`; then
/// `NodeCore.flushed`). When `more` is set, call `ready()` again soon (after other work).
public struct NodeReady: Sendable {
    /// Envelope-framed peer messages, in order, per destination.
    public var messages: [(to: NodeID, bytes: [UInt8])] = []
    /// Answers to client requests, by the id `NodeCore.request` returned.
    public var replies: [(request: UInt64, reply: NodeReply)] = []
    /// Service messages that arrived (kind, payload), for the services built on the node.
    public var services: [(from: NodeID, kind: UInt8, payload: [UInt8])] = []
    /// Keys whose records must be read from storage (`ReplicaNode.recordKey`).
    public var loads: [[UInt8]] = []
    /// The batch to write, if one was started (at most one is in flight).
    public var flush: PreparedFlush?
    /// Peer messages that were dropped, and why (for the log).
    public var badMessages: [(from: NodeID, why: String)] = []
    /// Keys whose consensus state changed (observers).
    public var touched: [[UInt8]] = []
    /// `ReplicaNode.raiseFence` tokens whose fence is durable now.
    public var fencesDurable: [UInt64] = []
    /// More work is queued than one call took.
    public var more = false
    public var isEmpty: Bool {
        messages.isEmpty && replies.isEmpty && services.isEmpty && loads.isEmpty && flush == nil
            && badMessages.isEmpty && !more && fencesDurable.isEmpty
    }
}

/// Kinds of the node's peer messages (the first byte of each message).
enum Envelope: UInt8 {
    /// A Paxos frame (`PaxosWire`).
    case paxos = 1
    /// A client request forwarded to a replica of its key.
    case forward = 2
    /// The replica's answer to a forwarded request.
    case forwardReply = 3
    /// A message of a service built on the node: the next byte is the service kind, the rest is
    /// the service's own.
    case service = 4
}

/// The node's request layer as a deterministic state machine: routing by placement, forwarding
/// and its timeouts, retries with the same request id, waiters, key loading and the group-commit
/// pipeline around one `ReplicaNode`. No clock, socket, thread or file: the shell passes the time
/// with each input and carries out `ready()`.
///
/// ```
///  request ─► me a replica? ─yes─► key loaded? ─no─► loads ─► loaded() ─┐
///             │ no                 │ yes                                 ▼
///             ▼                    └──────────────────► ReplicaNode.propose/read
///  forward (envelope) to the key's replica in my         │ beginFlush ─► flush ─► flushed()
///  campus, else another; silent → (reads) next replica,  ▼
///  same request id                              messages, replies (ready)
/// ```
public final class NodeCore {
    public let id: NodeID
    /// This node's campus: the index of its position in `placement.replicas(for:)` (0, 1, 2).
    public let campusIndex: Int
    public let placement: any ReplicaPlacement
    public let options: NodeCoreOptions
    public let replica: ReplicaNode

    /// The last time an input carried.
    public private(set) var now: UInt64 = 0
    public private(set) var failed: String?
    public private(set) var closing = false
    public private(set) var counters = NodeCoreCounters()
    var inFlightFlush: PreparedFlush?
    var out = NodeReady()

    /// Keys being read from storage, with what waits for them.
    var loading: [HashedKey: [() -> Void]] = [:]

    enum Origin {
        case local(UInt64)
        case remote(NodeID, UInt64)
    }
    /// Core tags (and forwarded attempts' tags) → whom the answer is for.
    var origins: [UInt64: Origin] = [:]
    var nextTag: UInt64 = 0
    var requestCounter: UInt64

    struct Waiter {
        var key: [UInt8]
        var request: KeyRequest
        var rid: RequestID
        var began: UInt64
        var deadline: UInt64
        var attempts = 0
        /// Tag of the current attempt.
        var tag: UInt64 = 0
        /// The replica the current attempt went to (nil: this node).
        var target: NodeID?
        var attemptDeadline: UInt64?
        /// A write attempt answered `.unknown` (an Accept may have carried it).
        var sawUnknown = false
        /// Write attempts that have not answered yet (they may still apply).
        var open: Set<UInt64> = []
        /// Some attempt of a write may have been applied.
        var mayHaveApplied: Bool { sawUnknown || !open.isEmpty || tookBack }
        /// Waiting to try again at this time.
        var retryAt: UInt64?
        /// Instances at which a replica this write was routed to may carry it (`ProposeBound`):
        /// every later attempt here is held until they are decided.
        var routed: (first: UInt64, last: UInt64)?
        /// A route of it went silent and it was taken back: that route may still apply it (its late
        /// answer still answers the client), so it is never routed again and never "not applied".
        var tookBack = false
        /// Tag of the last routed attempt, and when it left.
        var routedTag: UInt64 = 0
        var routedAt: UInt64 = 0
        /// A write forwarded here by `peer` under its tag `tag`, relayed (`relay`): the answer goes
        /// back to that peer, not to a client of this node.
        var relay: (peer: NodeID, tag: UInt64)?
        /// What a local attempt of this write proposes under.
        var bound: ProposeBound { routed.map { .heldBy(first: $0.first, last: $0.last) } ?? .none }
    }
    var waiters: [UInt64: Waiter] = [:]
    /// Waiters in the order they began (ids only grow): deadline checks visit them in a fixed order.
    var waiterIDs: [UInt64] { waiters.keys.sorted() }
    var suspectUntil: [NodeID: UInt64] = [:]
    /// When a message from each peer last arrived (what a NOQUORUM reply reports).
    var lastHeard: [NodeID: UInt64] = [:]
    var rng: SplitMix64
    var ticks: UInt64 = 0

    /// A core for node `id` (in campus `campusIndex`) that started epoch `epoch` (already durable:
    /// `ReplicaNode.nextEpoch`).
    public init(
        id: NodeID, campusIndex: Int, placement: any ReplicaPlacement, epoch: UInt32,
        options: NodeCoreOptions, now: UInt64
    ) {
        self.id = id
        self.campusIndex = campusIndex
        self.placement = placement
        self.options = options
        self.now = now
        replica = ReplicaNode(
            id: id, placement: placement, epoch: epoch, config: options.paxos,
            seed: UInt64(id.rawValue) << 32 | UInt64(epoch))
        replica.keysLoadedMax = options.keysLoadedMax
        rng = SplitMix64(seed: UInt64(id.rawValue) &* 0x9E37_79B9 ^ UInt64(epoch))
        requestCounter = UInt64(epoch) << 40
        // Tags name forwards in peers' answers, which may arrive after a restart: a new
        // incarnation's tags must not repeat an old one's (its epoch is higher).
        nextTag = UInt64(epoch) << 40
    }

    /// Requests waiting now.
    public var inFlight: Int { waiters.count }
    /// A batch is being written.
    public var isFlushing: Bool { inFlightFlush != nil }
    public var serving: Bool { failed == nil && !closing }

    // MARK: - Inputs

    /// Takes a client request; its answer comes in a later (or the next) `ready()` under the
    /// returned id. Retried internally (same request id) until `options.requestTimeout`.
    ///
    /// `id`: the request id to propose under, when the client supplies one (a client message id,
    /// `RequestID.clientSupplied(_:)`): a retry of an applied request, through any node, is then answered
    /// its first result while the key's de-dup window remembers it. Nil: a fresh id of this node.
    public func request(key: [UInt8], _ request: KeyRequest, now: UInt64, id: RequestID? = nil) -> UInt64 {
        advance(now)
        requestCounter += 1
        let wid = requestCounter
        if let failed {
            out.replies.append((wid, .unavailable(failed)))
            return wid
        }
        if closing {
            out.replies.append((wid, .unavailable("node is shutting down")))
            return wid
        }
        guard key.count <= ReplicaNode.keyBytesMax else {
            out.replies.append((wid, .keyTooLong(key.count)))
            return wid
        }
        counters.requests += 1
        waiters[wid] = Waiter(
            key: key, request: request,
            rid: id ?? RequestID(client: self.id.rawValue, counter: requestCounter),
            began: self.now, deadline: self.now + options.requestTimeout)
        attempt(wid)
        return wid
    }

    /// Messages from `peer`, as `ready().messages` framed them.
    public func receive(from peer: NodeID, _ messages: [[UInt8]], now: UInt64) {
        advance(now)
        lastHeard[peer] = self.now
        for m in messages { handle(from: peer, m) }
    }

    /// A key's record, read from storage after `ready().loads` asked for it.
    public func loaded(_ key: [UInt8], _ record: LoadResult) {
        if case .damaged = record { counters.damagedLoads += 1 }
        replica.install(key, record)
        for f in loading.removeValue(forKey: HashedKey(key)) ?? [] { f() }
    }

    /// The batch `ready().flush` gave is written (and synced when it had to be).
    public func flushed(_ flush: PreparedFlush) {
        inFlightFlush = nil
        dispatch(replica.finishFlush(flush))
    }

    /// A storage write failed: memory is ahead of the disk, nothing of it may leave. The node is
    /// fenced; every waiting request is answered `unavailable`.
    public func storageFailed(_ why: String) {
        failed = "storage failure: \(why)"
        inFlightFlush = nil
        failAll(failed!)
    }

    /// One consensus tick; every fourth also checks deadlines, every 200th evicts idle keys.
    public func tick(now: UInt64) {
        advance(now)
        ticks += 1
        try? replica.tick()
        if ticks % 4 == 0 { checkWaiters() }
        if ticks % 200 == 0 { replica.evictIdle() }
    }

    /// Stops taking requests; those in flight go on (until `failAll`).
    public func close() { closing = true }

    /// Answers every waiting request: `.unknown` for a write some attempt of which may still
    /// apply (a client must not take it as refused and send it again), `.unavailable(why)` for the
    /// rest.
    public func failAll(_ why: String) {
        for wid in waiterIDs {
            guard let w = waiters[wid] else { continue }
            if case .write = w.request, w.mayHaveApplied {
                resolve(wid, .unknown("\(why); an attempt was under way"))
            } else {
                resolve(wid, .unavailable(why))
            }
        }
    }

    /// A service message of a kind no service handles (the shell knows its handlers): counted
    /// and reported in the next `ready().badMessages`, like every bad peer message.
    public func rejectService(from peer: NodeID, kind: UInt8) { bad(peer, "no service of kind \(kind)") }

    /// Queues a service message for `peer`.
    public func sendService(_ kind: UInt8, _ payload: [UInt8], to peer: NodeID) {
        send([Envelope.service.rawValue, kind] + payload, to: peer)
    }

    /// Takes what the shell must do now (and starts the next batch if none is in flight).
    public func ready() -> NodeReady {
        var rounds = 0
        while inFlightFlush == nil && failed == nil && replica.hasWork && rounds < 16 {
            rounds += 1
            let p = replica.beginFlush()
            if p.records.isEmpty {
                dispatch(replica.finishFlush(p))
                continue
            }
            inFlightFlush = p
            out.flush = p
        }
        if rounds == 16 && inFlightFlush == nil && replica.hasWork { out.more = true }
        let r = out
        out = NodeReady()
        return r
    }

    // MARK: - Attempts

    func advance(_ t: UInt64) { if t > now { now = t } }

    /// Sends the waiter's next attempt: locally, or to a replica chosen by campus and suspicion.
    func attempt(_ wid: UInt64) {
        guard var w = waiters[wid] else { return }
        let all = placement.replicas(for: w.key)
        nextTag += 1
        let tag = nextTag
        origins[tag] = .local(wid)
        w.tag = tag
        w.attempts += 1
        w.retryAt = nil
        if all.contains(id) && !replica.servesNothing {
            // (safety) Never routed while an earlier attempt may still apply: a second proposer
            // would not know the instances the first may carry it at (`Waiter.routed`).
            if case .write(let op) = w.request, w.open.isEmpty, !w.sawUnknown, !w.tookBack,
                let r = route(w.key, among: all)
            {
                let (to, first, last) = r
                // A hot key another replica is proposing on: send it there (no duel of proposers).
                w.target = to
                w.attemptDeadline = now + options.forwardTimeout
                w.open.insert(tag)
                w.routed = (min(w.routed?.first ?? first, first), max(w.routed?.last ?? last, last))
                w.routedTag = tag
                w.routedAt = now
                waiters[wid] = w
                counters.forwardedOut += 1
                counters.routed += 1
                var b = forwardHeader(tag, w)
                b.u8(2)
                PaxosWire.encode(op, into: &b)
                b.u64(last)
                send(b.bytes, to: to)
                return
            }
            w.target = nil
            w.attemptDeadline = nil
            if case .write = w.request { w.open.insert(tag) }
            waiters[wid] = w
            let key = w.key
            let request = w.request
            let rid = w.rid
            // The mutant drops the hold: a taken-back write proposed here at once, while the
            // route's proposer may still carry it.
            let bound = options.mutant == .takenBackUnheld ? ProposeBound.none : w.bound
            whenLoaded([HashedKey(key)]) {
                self.submitLocal(key: key, request, rid: rid, tag: tag, bound: bound)
            }
            return
        }
        // Own campus first, then the others; a replica that recently failed to answer goes last.
        // A learner-only node serves nothing from its own state: it forwards its own keys too.
        let mine = all[campusIndex]
        let ordered = ([mine] + all.filter { $0 != mine }).filter { $0 != id }
        let healthy = ordered.filter { (suspectUntil[$0] ?? 0) <= now }
        let pool = healthy.isEmpty ? ordered : healthy
        let target = pool[(w.attempts - 1) % pool.count]
        w.target = target
        w.attemptDeadline = now + options.forwardTimeout
        if case .write = w.request { w.open.insert(tag) }
        waiters[wid] = w
        counters.forwardedOut += 1
        var b = forwardHeader(tag, w)
        switch w.request {
        case .read, .readData: b.u8(0)
        case .write(let op):
            b.u8(1)
            PaxosWire.encode(op, into: &b)
        }
        send(b.bytes, to: target)
    }

    /// A forward frame up to its request kind: tag, request id, key (a plain forward and a route
    /// alike; the caller adds the kind and the rest).
    func forwardHeader(_ tag: UInt64, _ w: Waiter) -> ByteWriter {
        var b = ByteWriter()
        b.u8(Envelope.forward.rawValue)
        b.u64(tag)
        b.u32(w.rid.client)
        b.u64(w.rid.counter)
        b.blob(w.key)
        return b
    }

    func submitLocal(
        key: [UInt8], _ request: KeyRequest, rid: RequestID, tag: UInt64, bound: ProposeBound = .none
    ) {
        switch request {
        case .read, .readData: replica.read(key: key, tag: tag)
        case .write(let op): replica.propose(key: key, op, id: rid, tag: tag, bound: bound)
        }
    }

    /// Where to route a write of `key` (this node one of its replicas `all`): the first replica in
    /// the key's order, before this node, that proposed on the key within `routeWindowTicks` and is
    /// not suspected, with the instances it may carry the write at (above the key's chosen instance
    /// here, up to `routeSlack` more). Nil: propose here. Deterministic in the inputs (ticks): the
    /// replica first in the order among those proposing never routes, so routes end at one proposer.
    func route(_ key: [UInt8], among all: [NodeID]) -> (to: NodeID, first: UInt64, last: UInt64)? {
        guard options.routeWindowTicks > 0, let mine = all.firstIndex(of: id), mine > 0,
            let hint = replica.proposalHint(HashedKey(key), within: options.routeWindowTicks),
            !hint.proposing.isEmpty
        else { return nil }
        for p in all[..<mine] where hint.proposing.contains(p) && (suspectUntil[p] ?? 0) <= now {
            return (p, hint.chosen + 1, hint.chosen + max(options.routeSlack, 1))
        }
        return nil
    }

    /// The answer to a forward `peer` sent under its tag `tag`.
    func sendForwardReply(_ outcome: ClientOutcome, tag: UInt64, to peer: NodeID) {
        var b = ByteWriter()
        b.u8(Envelope.forwardReply.rawValue)
        b.u64(tag)
        PaxosWire.encode(outcome, into: &b)
        send(b.bytes, to: peer)
    }

    /// An answer for the attempt tagged `tag` (from the local replica or a forwarded reply).
    func answer(tag: UInt64, _ outcome: ClientOutcome) {
        guard let origin = origins.removeValue(forKey: tag) else { return }
        switch origin {
        case .remote(let peer, let originTag):
            sendForwardReply(outcome, tag: originTag, to: peer)
        case .local(let wid):
            guard var w = waiters[wid] else { return }
            switch outcome {
            case .done(let r): resolve(wid, .done(r))
            case .value(let v): resolve(wid, .value(v))
            case .typed(let v): resolve(wid, .typed(v))
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
        let replicas = placement.replicas(for: w.key)
        var silent: [String] = []
        for (c, peer) in replicas.enumerated() where peer != id {
            let campus = Campus.allCases[c]
            guard let heard = lastHeard[peer] else {
                silent.append("campus \(campus) (\(peer): nothing received since this node started)")
                continue
            }
            if heard < w.began {
                silent.append(
                    "campus \(campus) (\(peer): nothing received for \((now - heard) / 1_000_000) ms)")
            }
        }
        let ms = (now - w.began) / 1_000_000
        if silent.isEmpty {
            return "every campus answered, but no quorum within \(ms) ms (contention or overload)"
        }
        return "no answer within \(ms) ms from \(silent.joined(separator: " or "))"
    }

    /// Schedules another attempt after a short seeded pause.
    func retryLater(_ w: inout Waiter) {
        counters.retries += 1
        w.retryAt = now + options.retryPause + rng.below(options.retryJitter + 1)
        w.attemptDeadline = nil
        // The old attempt's tag stays mapped: a late success still answers the client.
    }

    /// A plain write forwarded by `peer` (a node that is not one of the key's replicas, or one
    /// that serves nothing) for a key another replica, earlier in the key's order, is proposing on
    /// (`route`): taken as a waiter of this node's own, so it goes to that proposer as a routed
    /// write, with everything a routed write of this node has (the bound, taking it back when the
    /// route goes silent, retries under the same request id); its answer goes back to `peer`.
    /// Without it each campus's replica proposed the writes its own campus's nodes forwarded, and
    /// on a hot key the three proposers duelled (the node-level simulator, without faults: clients
    /// past their 1 s timeout in 15 of 200 seeds at 2 nodes per campus, 14 of 200 at 3).
    func relay(key: [UInt8], _ request: KeyRequest, rid: RequestID, from peer: NodeID, tag: UInt64) {
        requestCounter += 1
        let wid = requestCounter
        counters.relayed += 1
        var w = Waiter(
            key: key, request: request, rid: rid, began: now, deadline: now + options.requestTimeout)
        w.relay = (peer, tag)
        waiters[wid] = w
        attempt(wid)
    }

    func resolve(_ wid: UInt64, _ reply: NodeReply) {
        guard let w = waiters.removeValue(forKey: wid) else { return }
        if let (peer, originTag) = w.relay {
            // A relayed write (`relay`): its forwarder hears what a replica proposing it would say.
            let outcome: ClientOutcome
            switch reply {
            case .done(let r): outcome = .done(r)
            case .value(let v): outcome = .value(v)
            case .typed(let v): outcome = .typed(v)
            case .unknown: outcome = options.mutant == .relayUnknownAsRetryable ? .retryable : .unknown
            // Certainly not applied: every attempt of it was settled as not applied.
            case .notApplied, .unavailable, .refused: outcome = w.mayHaveApplied ? .unknown : .retryable
            }
            sendForwardReply(outcome, tag: originTag, to: peer)
            return
        }
        switch reply {
        case .done, .value, .typed: break
        default: counters.failed += 1
        }
        out.replies.append((wid, reply))
    }

    /// Deadlines: forwarded attempts that got no answer, retries due, requests out of time.
    func checkWaiters() {
        for wid in waiterIDs {
            guard var w = waiters[wid] else { continue }
            if now >= w.deadline {
                let detail = quorumDetail(w)
                resolve(wid, w.mayHaveApplied ? .unknown(detail) : .notApplied(detail))
                continue
            }
            // A route whose proposer fell silent (`routeSilence`) counts as timed out.
            let silent =
                w.routedTag == w.tag && w.target != nil && now >= w.routedAt + options.routeSilence
                && now >= (w.target.flatMap { lastHeard[$0] } ?? 0) + options.routeSilence
            if case .write = w.request, silent || w.attemptDeadline.map({ now >= $0 }) == true,
                w.routedTag == w.tag, w.routed != nil, !w.tookBack, let target = w.target,
                options.mutant != .freshIDAfterSilentForward
            {
                guard silent, !replica.servesNothing else {
                    // Past `forwardTimeout` but its proposer is still heard from (a long queue on
                    // a hot key): keep waiting, as for any forward; taken back only on silence.
                    w.attemptDeadline = nil
                    waiters[wid] = w
                    continue
                }
                // The route went silent: take the write back, held until every instance the
                // route's proposer may carry it at is decided (`ProposeBound.heldBy`). A late
                // answer of the route still answers the client if it comes first; otherwise the
                // local attempt does, even `.unknown`, without waiting for the request deadline.
                suspectUntil[target] = now + options.suspectFor
                counters.routesTakenBack += 1
                w.tookBack = true
                w.open.remove(w.routedTag)
                retryLater(&w)
                w.retryAt = now
                waiters[wid] = w
                attempt(wid)
                continue
            }
            if let at = w.attemptDeadline, now >= at, let target = w.target {
                suspectUntil[target] = now + options.suspectFor
                if case .write = w.request {
                    if options.mutant == .freshIDAfterSilentForward {
                        // The bug: forget the silent attempt and try elsewhere as a new request.
                        requestCounter += 1
                        w.rid = RequestID(client: id.rawValue, counter: requestCounter)
                        w.open = []
                        retryLater(&w)
                        w.retryAt = now
                        waiters[wid] = w
                        attempt(wid)
                        continue
                    }
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

    func send(_ bytes: [UInt8], to peer: NodeID) { out.messages.append((peer, bytes)) }

    func handle(from peer: NodeID, _ bytes: [UInt8]) {
        guard failed == nil else { return }
        guard let kind = bytes.first.flatMap(Envelope.init(rawValue:)) else {
            return bad(peer, "unknown envelope")
        }
        var r = ByteReader(bytes)
        _ = r.u8()
        switch kind {
        case .paxos:
            let frame: Frame
            do {
                frame = try PaxosWire.decode(bytes, from: 1)
            } catch {
                return bad(peer, "\(error)")
            }
            guard frame.from == peer, frame.to == id else {
                return bad(peer, "frame from \(frame.from) to \(frame.to) on the link from \(peer)")
            }
            suspectUntil[peer] = nil
            // Each key is placed and hashed once here; the replica takes the hashed items.
            var items: [(HashedKey, PaxosMessage)] = []
            items.reserveCapacity(frame.items.count)
            var misrouted = 0
            for item in frame.items {
                if replica.isReplica(of: item.key) {
                    items.append((HashedKey(item.key), item.message))
                } else {
                    misrouted += 1
                }
            }
            whenLoaded(items.map(\.0)) {
                self.replica.receive(from: frame.from, items, misrouted: misrouted)
            }
        case .forward:
            guard let originTag = r.u64(), let client = r.u32(), let counter = r.u64(), let key = r.blob(),
                let k = r.u8()
            else { return bad(peer, "truncated forward") }
            let request: KeyRequest
            var bound = ProposeBound.none
            if k == 0 {
                request = .read
            } else if k == 1, let op = PaxosWire.decodeOperation(&r) {
                request = .write(op)
            } else if k == 2, let op = PaxosWire.decodeOperation(&r), let last = r.u64() {
                // A routed write (`route`): carried here at no instance above `last`.
                request = .write(op)
                bound = .carryUntil(last)
            } else {
                return bad(peer, "bad forwarded request")
            }
            guard r.atEnd else { return bad(peer, "trailing bytes in forward") }
            counters.forwardedIn += 1
            nextTag += 1
            let tag = nextTag
            origins[tag] = .remote(peer, originTag)
            guard replica.isReplica(of: key), key.count <= ReplicaNode.keyBytesMax, !closing,
                !replica.servesNothing
            else {
                // Our map disagrees with the sender's, we are stopping, or we are rebuilding
                // (learner-only) or not yet confirmed (the incarnation check): certainly not
                // applied here; the sender tries another replica.
                answer(tag: tag, .retryable)
                return
            }
            let rid = RequestID(client: client, counter: counter)
            if case .write = request, k == 1, route(key, among: placement.replicas(for: key)) != nil {
                origins[tag] = nil
                relay(key: key, request, rid: rid, from: peer, tag: originTag)
                return
            }
            whenLoaded([HashedKey(key)]) {
                self.submitLocal(key: key, request, rid: rid, tag: tag, bound: bound)
            }
        case .service:
            guard bytes.count >= 2 else { return bad(peer, "truncated service message") }
            out.services.append((peer, bytes[1], Array(bytes.dropFirst(2))))
        case .forwardReply:
            guard let tag = r.u64(), let outcome = PaxosWire.decodeOutcome(&r), r.atEnd else {
                return bad(peer, "bad forward reply")
            }
            suspectUntil[peer] = nil
            answer(tag: tag, outcome)
        }
    }

    func bad(_ peer: NodeID, _ why: String) {
        counters.badMessages += 1
        out.badMessages.append((peer, why))
    }

    // MARK: - Repair (carried out for the anti-entropy scanner, TernRepair)

    /// Learner-only: this node serves and votes nothing from its own state (see
    /// `ReplicaNode.learnerOnly`); client requests go to the other replicas.
    public var learnerOnly: Bool {
        get { replica.learnerOnly }
        set { replica.learnerOnly = newValue }
    }

    /// The incarnation check has not passed yet (`ReplicaNode.votingHeld`): the node votes on
    /// nothing and serves nothing from its own state; client requests go to the other replicas.
    public var votingHeld: Bool {
        get { replica.votingHeld }
        set { replica.votingHeld = newValue }
    }

    /// The node learned that its storage cannot be trusted after it started (the incarnation
    /// check found its directory stale): learner-only from now on, keys in memory included.
    public func becomeLearnerOnly() { replica.becomeLearnerOnly() }

    /// What the scanner asks of one key.
    public enum RepairAction: Sendable, Hashable {
        /// This replica is behind `peer`: ask it for the chosen value.
        case learn(from: NodeID)
        /// `peer` is behind: send it this replica's chosen value.
        case teach(to: NodeID)
        /// A peer holds a chosen value and this replica holds nothing: its record may be lost, so
        /// the key is recovered as damaged (both peers re-teach it under a fresh ballot).
        case missing
        /// Load the key so that damage in its record surfaces (loaded damaged, it recovers).
        case load
        /// The `copy-bytes` mutant only: take `peer`'s stored record as this replica's own. The
        /// simulator carries it out (it can read a peer's disk); a real node ignores it.
        case copy(from: NodeID)
    }

    /// Carries out `action` on `key` once the key is loaded. Keys this node does not replicate
    /// are ignored (the scanner's view of the map may lag).
    public func repair(key: [UInt8], _ action: RepairAction) {
        guard failed == nil, key.count <= ReplicaNode.keyBytesMax, replica.isReplica(of: key) else { return }
        whenLoaded([HashedKey(key)]) {
            switch action {
            case .learn(let peer): self.replica.requestLearn(key: key, from: peer)
            case .teach(let peer): self.replica.teach(key: key, to: peer)
            case .missing: self.replica.markMissing(key: key)
            // Stepped once, so a damaged key joins the busy keys and starts its recovery.
            case .load: self.replica.load(key: key)
            case .copy: break
            }
        }
    }

    /// While learner-only: whether a bulk copy may install `key`'s record now — not in memory, not
    /// recovered one by one since, and no read of its old record under way (that read would be
    /// trusted once its bucket is copied).
    public func mayInstallCopy(_ key: [UInt8]) -> Bool {
        let k = HashedKey(key)
        return loading[k] == nil && replica.mayInstallCopy(k)
    }

    /// Keys loaded and damaged now, waiting for both peers to re-teach them.
    public var damagedKeyCount: Int { replica.damagedKeyCount }

    /// `peer` is rebuilding: keys damaged here only on suspicion trust their memory again
    /// (`ReplicaNode.clearSuspicions`).
    public func peerRebuilding(_ peer: NodeID) { replica.clearSuspicions(sharedWith: peer) }

    // MARK: - Loading keys

    /// Runs `body` once every key is in memory (asking the shell to read missing ones first).
    /// One read per key at a time: a second caller waits for the first read.
    func whenLoaded(_ keys: [HashedKey], _ body: @escaping () -> Void) {
        var missing: [HashedKey] = []
        var seen = Set<HashedKey>()
        for k in keys where !replica.isLoaded(k) && seen.insert(k).inserted { missing.append(k) }
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
            out.loads.append(k.bytes)
        }
    }

    // MARK: - Group commit

    func dispatch(_ o: NodeOutput) {
        out.touched += o.touched
        out.fencesDurable += o.fencesDurable
        for f in o.frames {
            send(PaxosWire.encode(f, after: [Envelope.paxos.rawValue]), to: f.to)
        }
        for r in o.replies { answer(tag: r.tag, r.outcome) }
    }
}
