public import TernCore

/// Paxos state of one key at one replica: acceptor, proposer and learner in one value.
///
/// Deterministic and free of IO: every entry point returns `Effects` that the driver must carry
/// out in order (persist, then send, then reply). The three replicas of a key are `me` and the
/// two `peers`; a majority is two of the three, except while the key is damaged (see `damaged`).
///
/// ```
///  write (slow path)            write (fast path: our value chosen at c)
///  P ──Prepare(c+1,b)──► A      P ──Accept(c+1,b,v)──► A
///  P ◄──Promise(slot?)── A      P ◄──Accepted────────── A
///  P ──Accept(c+1,b,v)─► A      P ──Chosen(c+1,v)────► A
///  P ◄──Accepted──────── A
///  P ──Chosen(c+1,v)───► A
/// ```
///
/// A fresh key's first instance skips Phase 1 at the key's `owner` (round 0, docs/PROTOCOL.md
/// "Fresh keys: round 0 at the owner"): the owner votes for its value in the same step, durably
/// before its Accepts leave, and the write takes one round trip like the fast path.
public struct KeyReplica: Sendable {
    /// The key this replica is about.
    public let key: [UInt8]
    /// This node.
    public let me: NodeID
    /// The key's two other replicas.
    public let peers: [NodeID]
    /// The one replica that may ever propose with a round-0 ballot (0, owner) on this key, the same
    /// at every replica for the key's whole life (`ReplicaPlacement.fastAcceptOwner`); nil: no
    /// round 0 on this key (refused as an acceptor too).
    public let owner: NodeID?
    /// The durable part: chosen instance and value, promise, open slot.
    public private(set) var state: KeyState
    /// True while the persisted state is known to be lost or corrupt: the replica refuses to vote
    /// (Prepare/Accept/ReadCheck) until a Phase 1 promised by **both** peers has re-taught it.
    public private(set) var damaged: Bool

    struct PendingOp: Sendable {
        var op: Operation
        var id: RequestID
        var tag: UInt64
        /// An Accept carrying it was sent: a failure must be reported as `.unknown`.
        var mayBeAccepted: Bool { acceptedAt != nil }
        /// The first instance at which an Accept carrying it was sent and not yet ruled out: it
        /// can have been chosen only at or above it.
        var acceptedAt: UInt64?
        /// The last instance at which an Accept carrying it was sent.
        var acceptedLast: UInt64 = 0
        /// Routed here by another replica (`ProposeBound.carryUntil`): carried by no Accept above it.
        var carryUntil: UInt64 = .max
        /// Taken back from a route that went silent (`ProposeBound.heldBy`): another proposer may
        /// carry it at instances up to this one, so it is carried here only above it.
        var heldUntil: UInt64 = 0
    }
    struct Preparing: Sendable {
        var ballot: Ballot
        var instance: UInt64
        var promises: [(NodeID, AcceptedSlot?)] = []
        var deadline: UInt64
        var retransmits = 0
        /// While damaged (a `recover` round, which names no instance): the peers' granted answers.
        var reports: [RecoveryReport] = []
    }
    /// One peer's granted answer to `recover`: its chosen instance and value and its open slot,
    /// under its durable promise of the round's ballot.
    struct RecoveryReport: Sendable {
        var peer: NodeID
        var chosen: UInt64
        var value: KeyValue
        var accepted: AcceptedSlot?
    }
    struct Accepting: Sendable {
        var ballot: Ballot
        var instance: UInt64
        var value: KeyValue
        var ops: [PendingOp]
        var acks: [NodeID] = []
        /// Peers that refused this round-0 Accept without a higher promise (they take no round 0
        /// from us on this key): once both did, Phase 1 at once rather than after the timeouts.
        var refusedRoundZero: [NodeID] = []
        var deadline: UInt64
        var retransmits = 0
        /// Keyspace events of `value` (`KeyspaceEvents`), published once it is chosen.
        var events: [String] = []
    }
    enum Phase: Sendable {
        case idle
        case preparing(Preparing)
        case accepting(Accepting)
    }
    struct ReadWaiter: Sendable {
        var tag: UInt64
        /// 0 while waiting for a catch-up or a barrier to finish.
        var nonce: UInt64
        var attempts: Int
        var deadline: UInt64
    }

    var phase: Phase = .idle
    var pending: [PendingOp] = []
    /// A ballot whose Phase 1 a majority granted for every instance above `chosen` (ours was
    /// chosen last, or our barrier finished, and no higher ballot was seen since).
    public private(set) var fastBallot: Ballot?
    /// A read found an open slot: finish it (Phase 1 + recovery) before answering.
    var needBarrier = false
    var backoffUntil: UInt64 = 0
    /// Consecutive rejections / timeouts of our phases.
    public private(set) var rejections = 0
    var highestSeen: Ballot = .zero
    var reads: [ReadWaiter] = []
    /// When each of `peers` last sent us a Prepare or Accept of its own ballot (tick + 1; 0 =
    /// never): the node routes writes of a key another replica is proposing on (`proposing`).
    var peerProposedAt: (UInt64, UInt64) = (0, 0)
    /// The chosen instance `pending` was last settled against (nil: settle again). A write queued
    /// by `propose` is settled as it is queued, so only a new chosen value, or ops put back in the
    /// queue, need another pass (a hot key queues thousands of writes, and every `propose` while
    /// backing off used to settle them all again).
    var settledAt: UInt64?

    /// A replica of `key` at `me`, starting from what storage returned. `promisedFloor`: for a
    /// key loaded `.damaged` whose record was readable but is not trusted (a node rebuilding
    /// learner-only), the promise that record holds: the recovery's fresh ballot goes above it, so
    /// the durable promise never goes back (a promise the record kept may still be owed).
    /// `owner`: the key's round-0 owner (`owner`), one of the three replicas, or nil.
    public init(
        key: [UInt8], me: NodeID, peers: [NodeID], loaded: LoadedKey, promisedFloor: Ballot = .zero,
        owner: NodeID? = nil, mutant: Mutant = .none
    ) {
        precondition(peers.count == 2 && !peers.contains(me), "a key has exactly three replicas")
        precondition(owner.map { $0 == me || peers.contains($0) } ?? true, "the owner is a replica")
        self.key = key
        self.me = me
        self.peers = peers
        self.owner = owner
        switch loaded {
        case .absent:
            state = KeyState()
            damaged = false
        case .state(let s):
            state = s
            damaged = false
        case .damaged:
            state = KeyState()
            state.promised = promisedFloor
            // The mutant forgets that it forgot: it votes as if it had never promised anything.
            damaged = mutant != .damagedAnswersFresh
        }
        highestSeen = state.promised
    }

    /// True while the replica has work that needs ticks (phases, reads, back-off, recovery).
    public var isBusy: Bool {
        if case .idle = phase {
            return !pending.isEmpty || !reads.isEmpty || needBarrier || damaged
        }
        return true
    }
    /// Pending plus in-flight writes.
    public var queuedWrites: Int {
        if case .accepting(let a) = phase { return pending.count + a.ops.count }
        return pending.count
    }

    // MARK: - Entry points

    /// Queues a write; it is merged with the other queued writes of this key into one instance.
    ///
    /// The caller must not send the same request id again once an attempt answered `.unknown`
    /// (or may still be running elsewhere): only the replica that first proposed a request can
    /// tell, from `acceptedAt`, whether the bounded de-dup window still vouches for it.
    ///
    /// `bound`: a write routed here by another replica, or taken back from one (`ProposeBound`).
    public mutating func propose(
        _ op: Operation, id: RequestID, tag: UInt64, bound: ProposeBound = .none, ctx: inout NodeContext
    ) -> Effects {
        var fx = Fx()
        if let r = state.value.result(for: id) {
            fx.effects.replies.append(ClientReply(tag: tag, outcome: .done(r)))
        } else if queuedWrites >= ctx.config.pendingMax {
            fx.effects.replies.append(ClientReply(tag: tag, outcome: .retryable))
        } else if case .carryUntil(let last) = bound, last <= state.chosen {
            // Every instance it may be carried at is decided already: certainly not applied here.
            fx.effects.replies.append(ClientReply(tag: tag, outcome: .retryable))
        } else {
            var p = PendingOp(op: op, id: id, tag: tag)
            switch bound {
            case .none: break
            case .carryUntil(let last): p.carryUntil = last
            case .heldBy(let first, let last):
                // (safety) As if an Accept of ours had carried it at first...last: `settle` answers
                // it from the chosen value (or `.unknown`) once last is decided, and only then may
                // it be carried here (`beginAccept`).
                p.acceptedAt = first
                p.acceptedLast = last
                p.heldUntil = last
                settledAt = nil
            }
            pending.append(p)
            startIfNeeded(&fx, &ctx)
        }
        return finish(fx)
    }

    /// Peers that sent this replica a Prepare or an Accept of their own ballot in the last `window`
    /// ticks: other proposers active on the key.
    public func proposing(within window: UInt64, now: UInt64) -> [NodeID] {
        var out: [NodeID] = []
        if peerProposedAt.0 != 0 && peerProposedAt.0 + window > now { out.append(peers[0]) }
        if peerProposedAt.1 != 0 && peerProposedAt.1 + window > now { out.append(peers[1]) }
        return out
    }

    private mutating func notePeerProposing(_ peer: NodeID, _ b: Ballot, _ ctx: NodeContext) {
        guard peer != me, b.node == peer else { return }
        if peer == peers[0] {
            peerProposedAt.0 = ctx.now + 1
        } else if peer == peers[1] {
            peerProposedAt.1 = ctx.now + 1
        }
    }

    /// Reads the key: linearizable (ReadCheck to a majority) unless `staleOK`.
    public mutating func read(staleOK: Bool, tag: UInt64, ctx: inout NodeContext) -> Effects {
        var fx = Fx()
        if (staleOK || ctx.config.mutant == .staleReads) && !damaged {
            fx.effects.replies.append(ClientReply(tag: tag, outcome: state.value.readOutcome))
            return finish(fx)
        }
        if reads.count >= ctx.config.pendingMax {
            // Back-pressure: a bounded number of reads wait per key.
            fx.effects.replies.append(ClientReply(tag: tag, outcome: .retryable))
            return finish(fx)
        }
        var w = ReadWaiter(tag: tag, nonce: 0, attempts: 0, deadline: 0)
        if damaged {
            w.deadline = ctx.now + ctx.config.retransmitTicks * 4
            reads.append(w)
            startIfNeeded(&fx, &ctx)
        } else {
            reads.append(w)
            issueReadCheck(at: reads.count - 1, &fx, &ctx)
        }
        return finish(fx)
    }

    /// Advances timers: retransmits, back-off, read retries, recovery.
    public mutating func tick(ctx: inout NodeContext) -> Effects {
        var fx = Fx()
        switch phase {
        case .idle:
            startIfNeeded(&fx, &ctx)
        case .preparing(var p):
            if ctx.now >= p.deadline {
                if p.retransmits >= ctx.config.retransmitsMax {
                    abandon(&fx, &ctx, outbid: true)
                } else {
                    p.retransmits += 1
                    p.deadline = ctx.now + ctx.config.retransmitTicks
                    if damaged {
                        for n in peers where !p.reports.contains(where: { $0.peer == n }) {
                            fx.send(n, .recover(ballot: p.ballot))
                        }
                    } else {
                        for n in [me] + peers where !p.promises.contains(where: { $0.0 == n }) {
                            fx.send(n, .prepare(instance: p.instance, ballot: p.ballot))
                        }
                    }
                    phase = .preparing(p)
                }
            }
        case .accepting(var a):
            if ctx.now >= a.deadline {
                if a.retransmits >= ctx.config.retransmitsMax {
                    abandon(&fx, &ctx, outbid: true)
                } else {
                    a.retransmits += 1
                    a.deadline = ctx.now + ctx.config.retransmitTicks
                    for n in [me] + peers where !a.acks.contains(n) {
                        fx.send(n, .accept(instance: a.instance, ballot: a.ballot, value: a.value))
                    }
                    phase = .accepting(a)
                }
            }
        }
        var i = 0
        while i < reads.count {
            if ctx.now >= reads[i].deadline {
                reads[i].attempts += 1
                if reads[i].attempts > ctx.config.readAttemptsMax {
                    fx.effects.replies.append(ClientReply(tag: reads[i].tag, outcome: .retryable))
                    reads.remove(at: i)
                    continue
                }
                if damaged {
                    reads[i].deadline = ctx.now + ctx.config.retransmitTicks * 4
                } else {
                    issueReadCheck(at: i, &fx, &ctx)
                }
            }
            i += 1
        }
        return finish(fx)
    }

    /// Handles one message from `peer` (which may be `me`: a node sends to itself too).
    public mutating func step(_ message: PaxosMessage, from peer: NodeID, ctx: inout NodeContext) -> Effects {
        var fx = Fx()
        switch message {
        case .prepare(let i, let b):
            notePeerProposing(peer, b, ctx)
            guard !damaged else { break }
            highestSeen = max(highestSeen, b)
            if i == state.chosen + 1 && b >= promisedNow(ctx) {
                raisePromise(b, &fx, &ctx)
                let slot = state.accepted?.instance == i ? state.accepted : nil
                fx.send(peer, .promise(instance: i, ballot: b, accepted: slot))
            } else {
                fx.send(
                    peer, .reject(instance: i, ballot: b, promised: promisedNow(ctx), chosen: state.chosen))
            }
        case .accept(let i, let b, let v):
            notePeerProposing(peer, b, ctx)
            guard !damaged else { break }
            highestSeen = max(highestSeen, b)
            let slot = AcceptedSlot(instance: i, ballot: b, value: v)
            let overwrite = b.round == 0 && ctx.config.mutant == .fastAcceptOverwrites
            if i == state.chosen + 1 && (b >= promisedNow(ctx) || overwrite) && takesRoundZero(slot, ctx) {
                raisePromise(b, &fx, &ctx)
                if state.accepted != slot {
                    precondition(
                        overwrite || (state.accepted.map { $0.ballot != b || $0.value == v } ?? true),
                        "two values with one ballot at one instance")
                    state.accepted = slot
                    fx.dirty = true
                    fx.effects.mustSync = true
                }
                fx.send(peer, .accepted(instance: i, ballot: b))
            } else {
                fx.send(
                    peer, .reject(instance: i, ballot: b, promised: promisedNow(ctx), chosen: state.chosen))
            }
        case .promise(let i, let b, let slot):
            // A damaged replica recovers through `recover`/`recovery` only.
            guard !damaged, case .preparing(var p) = phase, p.instance == i, p.ballot == b else { break }
            guard !p.promises.contains(where: { $0.0 == peer }) else { break }
            p.promises.append((peer, slot))
            phase = .preparing(p)
            if hasQuorum(p.promises.map(\.0)) { promiseQuorum(p, &fx, &ctx) }
        case .accepted(let i, let b):
            guard case .accepting(var a) = phase, a.instance == i, a.ballot == b else { break }
            guard !a.acks.contains(peer) else { break }
            a.acks.append(peer)
            phase = .accepting(a)
            if hasQuorum(a.acks) { acceptQuorum(a, &fx, &ctx) }
        case .reject(let i, let b, let promised, let chosen):
            highestSeen = max(highestSeen, promised)
            if chosen > state.chosen {
                // We are behind: fetch the later value; our attempt (if any) is stale.
                fx.send(peer, .learn(have: state.chosen))
                abandonIfAtOrBelow(chosen, &fx, &ctx)
                break
            }
            guard let (pi, pb) = currentAttempt, pi == i, pb == b else { break }
            if chosen + 1 < i {
                // The peer is behind: teach it our chosen value, then ask again.
                fx.send(peer, .chosen(instance: state.chosen, value: state.value))
                resend(to: peer, &fx)
            } else if promised > b {
                abandon(&fx, &ctx, outbid: true)
            } else if b.round == 0, case .accepting(var a) = phase, peers.contains(peer) {
                // A peer that takes no round 0 from us on this key (its placement or configuration
                // names no owner, or another): with both refusing, Phase 1 at once (it finds our
                // own round-0 vote and finishes that value first).
                if !a.refusedRoundZero.contains(peer) { a.refusedRoundZero.append(peer) }
                phase = .accepting(a)
                if a.refusedRoundZero.count == peers.count {
                    abandon(&fx, &ctx, outbid: false)
                    startIfNeeded(&fx, &ctx)
                }
            }
        case .chosen(let i, let v), .learnReply(let i, let v):
            if i > state.chosen { learnChosen(i, v, &fx, &ctx) }
        case .commit(let i, let b):
            guard i > state.chosen else { break }
            // One ballot carries one value at one instance, so the slot accepted at (i, b) holds
            // what was chosen. Anything else (the Accept lost or refused, the slot since replaced,
            // a damaged replica that does not know its slot) asks the proposer for the value.
            if !damaged, let a = state.accepted, a.instance == i,
                a.ballot == b || ctx.config.mutant == .commitAnyBallot
            {
                learnChosen(i, a.value, &fx, &ctx)
            } else {
                fx.send(peer, .learn(have: state.chosen))
            }
        case .learn(let have):
            if state.chosen > have {
                fx.send(peer, .learnReply(instance: state.chosen, value: state.value))
            }
        case .recover(let b):
            // A damaged peer's recovery: a Prepare for every instance above our chosen one. Granted
            // like a Prepare (persist and sync before the answer leaves: `raisePromise`).
            guard !damaged else { break }
            highestSeen = max(highestSeen, b)
            if b >= promisedNow(ctx) {
                raisePromise(b, &fx, &ctx)
                fx.send(
                    peer,
                    .recovery(
                        ballot: b, promised: b, chosen: state.chosen, value: state.value,
                        accepted: state.accepted))
            } else {
                fx.send(
                    peer,
                    .recovery(ballot: b, promised: promisedNow(ctx), chosen: 0, value: .absent, accepted: nil)
                )
            }
        case .recovery(let b, let promised, let c, let v, let slot):
            highestSeen = max(highestSeen, promised)
            guard damaged, peers.contains(peer), case .preparing(var p) = phase, p.ballot == b else { break }
            guard !p.reports.contains(where: { $0.peer == peer }) else { break }
            if promised > b {
                abandon(&fx, &ctx, outbid: true)
                break
            }
            p.reports.append(RecoveryReport(peer: peer, chosen: c, value: v, accepted: slot))
            phase = .preparing(p)
            if peers.allSatisfy({ n in p.reports.contains { $0.peer == n } }) { recovered(p, &fx, &ctx) }
        case .readCheck(let nonce):
            guard !damaged else { break }
            fx.send(peer, .readState(nonce: nonce, chosen: state.chosen, accepted: state.accepted))
        case .readState(let nonce, let chosen, let slot):
            guard nonce != 0, !damaged, let w = reads.firstIndex(where: { $0.nonce == nonce }) else { break }
            if chosen > state.chosen {
                reads[w].nonce = 0
                fx.send(peer, .learn(have: state.chosen))
            } else if slot?.instance == state.chosen + 1 || state.accepted?.instance == state.chosen + 1 {
                // An instance may be half-way: finish it before answering (PAXOS.md, Reads).
                reads[w].nonce = 0
                needBarrier = true
                startIfNeeded(&fx, &ctx)
            } else {
                fx.effects.replies.append(ClientReply(tag: reads[w].tag, outcome: state.value.readOutcome))
                reads.remove(at: w)
            }
        }
        return finish(fx)
    }

    // MARK: - Proposer

    private var currentAttempt: (UInt64, Ballot)? {
        switch phase {
        case .idle: nil
        case .preparing(let p): (p.instance, p.ballot)
        case .accepting(let a): (a.instance, a.ballot)
        }
    }

    /// Two of three; while damaged, both peers (our own memory does not count).
    private func hasQuorum(_ responders: [NodeID]) -> Bool {
        if damaged { return peers.allSatisfy { responders.contains($0) } }
        return Set(responders).count >= 2
    }

    private mutating func startIfNeeded(_ fx: inout Fx, _ ctx: inout NodeContext) {
        guard case .idle = phase else { return }
        // Requests already applied (a retry, or our own earlier attempt that won) answer at once;
        // those whose fate the chosen value cannot tell are answered `.unknown`, never re-proposed.
        if settledAt != state.chosen {
            pending = settle(pending, &fx, ctx.config.mutant)
            settledAt = state.chosen
        }
        bounceRouted(above: state.chosen, &fx)
        guard ctx.now >= backoffUntil else { return }
        let write = !pending.isEmpty && !damaged
        guard write || needBarrier || damaged else { return }
        let i = state.chosen + 1
        if write, let b = fastBallot, b >= promisedNow(ctx) {
            beginAccept(ballot: b, instance: i, &fx, &ctx)
            return
        }
        if write && !needBarrier && mayUseRoundZero(ctx) {
            beginAccept(ballot: Ballot(round: 0, node: me), instance: i, &fx, &ctx)
            return
        }
        fastBallot = nil
        let b = ctx.ballots.next(above: max(highestSeen, promisedNow(ctx)), node: me)
        highestSeen = max(highestSeen, b)
        phase = .preparing(Preparing(ballot: b, instance: i, deadline: ctx.now + ctx.config.retransmitTicks))
        if damaged {
            // Recovery: both peers must promise b (our own memory does not count), whatever their
            // chosen instance; one round trip (`recover`, `recovered`).
            for n in peers { fx.send(n, .recover(ballot: b)) }
            return
        }
        for n in [me] + peers { fx.send(n, .prepare(instance: i, ballot: b)) }
    }

    /// Routed writes that may be carried at no instance above `instance` (they were settled just
    /// before: none of them is applied) are answered `.retryable`: no Accept here will carry them.
    private mutating func bounceRouted(above instance: UInt64, _ fx: inout Fx) {
        guard pending.contains(where: { $0.carryUntil <= instance }) else { return }
        pending.removeAll { op in
            guard op.carryUntil <= instance else { return false }
            fx.effects.replies.append(ClientReply(tag: op.tag, outcome: .retryable))
            return true
        }
    }

    /// Phase 2 with our own queued writes merged into one value. Writes held for another proposer
    /// (`heldUntil` at or above `instance`) stay queued; if only those are queued, the instance
    /// carries none (it moves the key on towards the instance where they may be carried).
    private mutating func beginAccept(
        ballot: Ballot, instance: UInt64, _ fx: inout Fx, _ ctx: inout NodeContext
    ) {
        // (safety) Writes queued during a Phase 1 that need settling (taken back from a route) are
        // settled before any is carried; and none is carried above its bound.
        if settledAt != state.chosen {
            pending = settle(pending, &fx, ctx.config.mutant)
            settledAt = state.chosen
        }
        bounceRouted(above: instance - 1, &fx)
        var n = 0
        var bytes = 0
        let current = state.value.bytes?.count ?? 0
        var ops: [PendingOp]
        if pending.contains(where: { $0.heldUntil >= instance }) {
            ops = []
            var rest: [PendingOp] = []
            for p in pending {
                let cost = p.op.payloadBytes + (p.op.returnsValue ? current : 0)
                if p.heldUntil >= instance || n >= ctx.config.mergeMax
                    || (n > 0 && bytes + cost > ctx.config.mergeBytesMax)
                {
                    rest.append(p)
                    continue
                }
                bytes += cost
                n += 1
                ops.append(p)
            }
            pending = rest
        } else {
            while n < min(pending.count, ctx.config.mergeMax) {
                let cost = pending[n].op.payloadBytes + (pending[n].op.returnsValue ? current : 0)
                if n > 0 && bytes + cost > ctx.config.mergeBytesMax { break }
                bytes += cost
                n += 1
            }
            ops = Array(pending.prefix(n))
            pending.removeFirst(n)
        }
        for k in ops.indices {
            if ops[k].acceptedAt == nil { ops[k].acceptedAt = instance }
            ops[k].acceptedLast = instance
        }
        var events: [String]? = ctx.keyEventsOn ? [] : nil
        let value = state.value.applying(
            ops.map { ($0.op, $0.id) }, window: ctx.config.dedupWindow, instance: instance,
            horizonMs: ctx.expiryHorizonMs, events: &events)
        fx.effects.mergedOps += ops.count
        sendAccept(
            ballot: ballot, instance: instance, value: value, ops: ops, events: events ?? [], &fx, &ctx)
    }

    private mutating func sendAccept(
        ballot: Ballot, instance: UInt64, value: KeyValue, ops: [PendingOp], events: [String] = [],
        _ fx: inout Fx, _ ctx: inout NodeContext
    ) {
        var a = Accepting(
            ballot: ballot, instance: instance, value: value, ops: ops,
            deadline: ctx.now + ctx.config.retransmitTicks, events: events)
        var to = [me] + peers
        let slot = AcceptedSlot(instance: instance, ballot: ballot, value: value)
        if ballot.round == 0 && instance == state.chosen + 1 && ballot >= promisedNow(ctx) && !ctx.votesHeld
            && takesRoundZero(slot, ctx)
        {
            // (safety) A round-0 proposer votes for its own value in this step: the vote is in the
            // synced batch that releases the Accepts, so after a crash this replica finds the slot,
            // is no longer fresh, and never sends another value with (0, me) at this instance.
            // (Through a message to itself, the vote would be written one batch after the peers
            // got the Accept, and a crash in between forgets it.) Otherwise (votes held, or its
            // own acceptor would refuse) it goes as a message to itself, like any Accept.
            raisePromise(ballot, &fx, &ctx)
            if state.accepted != slot {
                state.accepted = slot
                fx.dirty = true
                fx.effects.mustSync = true
            }
            a.acks = [me]
            to = peers
        }
        phase = .accepting(a)
        for n in to { fx.send(n, .accept(instance: instance, ballot: ballot, value: value)) }
    }

    private mutating func promiseQuorum(_ p: Preparing, _ fx: inout Fx, _ ctx: inout NodeContext) {
        let highest = p.promises.compactMap(\.1).filter { $0.instance == p.instance }.max {
            $0.ballot < $1.ballot
        }
        if let h = highest, ctx.config.mutant != .ignoreAcceptedValue {
            // (safety) Someone may have got h chosen: propose it first, our writes come after.
            sendAccept(ballot: p.ballot, instance: p.instance, value: h.value, ops: [], &fx, &ctx)
        } else if !pending.isEmpty {
            beginAccept(ballot: p.ballot, instance: p.instance, &fx, &ctx)
        } else {
            phase = .idle
            needBarrier = false
            fastBallot = p.ballot
            reissueWaitingReads(&fx, &ctx)
        }
    }

    /// Both peers granted a damaged replica's `recover(p.ballot)`: each promised p.ballot for
    /// every instance above its chosen one, durably, before answering. With c the highest chosen
    /// instance among the answers (and what this replica learned meanwhile), that is a Phase 1 at
    /// c+1 promised by both peers: no ballot below p.ballot can still win anything they did not
    /// report, so their reports plus this promise replace what we forgot. A slot at c+1 (only a
    /// peer whose chosen instance is c can hold one) is adopted and finished first, as after any
    /// Phase 1; a peer behind is taught c.
    private mutating func recovered(_ p: Preparing, _ fx: inout Fx, _ ctx: inout NodeContext) {
        var c = state.chosen
        var v = state.value
        for r in p.reports where r.chosen > c {
            c = r.chosen
            v = r.value
        }
        let slots: [AcceptedSlot] = p.reports.compactMap {
            $0.accepted.flatMap { $0.instance == c + 1 ? $0 : nil }
        }
        let highest = slots.max { $0.ballot < $1.ballot }
        damaged = false
        state.chosen = c
        state.value = v
        state.promised = max(state.promised, p.ballot)
        state.accepted = highest
        fx.dirty = true
        fx.effects.mustSync = true
        for r in p.reports where r.chosen < c { fx.send(r.peer, .chosen(instance: c, value: v)) }
        // Writes queued while damaged: those the learned value shows applied (a retry) answer
        // now, as `startIfNeeded` does before any attempt.
        pending = settle(pending, &fx, ctx.config.mutant)
        settledAt = nil
        var q = Preparing(ballot: p.ballot, instance: c + 1, deadline: p.deadline)
        q.promises = p.reports.map { ($0.peer, $0.accepted?.instance == c + 1 ? $0.accepted : nil) }
        phase = .preparing(q)
        promiseQuorum(q, &fx, &ctx)
    }

    private mutating func acceptQuorum(_ a: Accepting, _ fx: inout Fx, _ ctx: inout NodeContext) {
        learnChosen(a.instance, a.value, &fx, &ctx)
        // Only the proposer that got the instance chosen publishes its events, once (an instance
        // finished by another proposer's Phase 1 publishes none: best effort, docs/PUBSUB.md).
        for e in a.events { fx.effects.keyEvents.append(KeyEvent.raised(by: key, e)) }
        // Peers sent the Accept get a Commit, without the value (on a busy key, the key's whole
        // value: a list's head, a stream); a peer that refused it gets the value.
        for n in peers {
            if a.refusedRoundZero.contains(n) {
                fx.send(n, .chosen(instance: a.instance, value: a.value))
            } else {
                fx.send(n, .commit(instance: a.instance, ballot: a.ballot))
            }
        }
        // Our promise majority for a.ballot still covers the next instance: the fast path.
        fastBallot = a.ballot
        rejections = 0
        startIfNeeded(&fx, &ctx)
    }

    /// Gives up the current attempt; with `outbid`, backs off (randomised) and counts a rejection.
    private mutating func abandon(_ fx: inout Fx, _ ctx: inout NodeContext, outbid: Bool) {
        if case .accepting(let a) = phase {
            pending.insert(contentsOf: a.ops, at: 0)
            settledAt = nil
        }
        phase = .idle
        fastBallot = nil
        guard outbid else { return }
        rejections += 1
        if rejections > ctx.config.rejectionsMax {
            // Ops never carried by an Accept are handed back (the caller may retry them anywhere).
            // The others stay: only this replica can still settle them (`settle`), and answering
            // `.unknown` now would turn contention into errors.
            var kept: [PendingOp] = []
            for op in pending {
                if op.mayBeAccepted {
                    kept.append(op)
                } else {
                    fx.effects.replies.append(ClientReply(tag: op.tag, outcome: .retryable))
                }
            }
            pending = kept
            rejections = 0
        }
        let span = ctx.config.backoffTicksMax << UInt64(min(rejections, 4))
        backoffUntil = ctx.now + 1 + ctx.rng.below(max(span, 1))
    }

    private mutating func abandonIfAtOrBelow(_ chosen: UInt64, _ fx: inout Fx, _ ctx: inout NodeContext) {
        if !damaged, let (i, _) = currentAttempt, i <= chosen { abandon(&fx, &ctx, outbid: false) }
    }

    private func resend(to peer: NodeID, _ fx: inout Fx) {
        switch phase {
        case .idle: break
        case .preparing(let p): fx.send(peer, .prepare(instance: p.instance, ballot: p.ballot))
        case .accepting(let a): fx.send(peer, .accept(instance: a.instance, ballot: a.ballot, value: a.value))
        }
    }

    // MARK: - Acceptor and learner

    /// Whether this replica may propose its fresh key's first instance with the round-0 ballot
    /// (0, me), skipping Phase 1 (docs/PROTOCOL.md, "Fresh keys: round 0 at the owner").
    ///
    /// (safety) Only the key's owner (one node per key, ever: two nodes' round-0 values at one
    /// instance could not be told apart by a later Phase 1, which takes the higher ballot); only
    /// while this replica holds nothing for the key — no chosen instance, no slot (its own earlier
    /// round-0 vote would show here: it is durable before its Accepts leave), no promise, no node
    /// fence, no ballot seen — so no lower ballot than (0, me) exists for Phase 1 to have missed;
    /// never while damaged or while the node's votes are held.
    private func mayUseRoundZero(_ ctx: NodeContext) -> Bool {
        guard ctx.config.fastAccept, !ctx.votesHeld, !damaged, let o = owner,
            o == me || ctx.config.mutant == .fastAcceptAnyNode
        else { return false }
        return state.chosen == 0 && state.accepted == nil && promisedNow(ctx) == .zero
            && highestSeen == .zero
    }

    /// The acceptor's extra rule for a round-0 Accept (`slot.ballot.round == 0`; other ballots
    /// pass): taken only from the key's owner, and only when nothing else is accepted at its
    /// instance here (the same slot again — a retransmission — is answered again). With the usual
    /// `ballot >= promise` rule this means: nothing promised above round 0.
    ///
    /// (safety) Even if the owner forgot an Accept it sent (a crash before its own vote was
    /// durable, which `sendAccept` rules out), an acceptor holds at most one round-0 value per
    /// instance, so at most one value can gain a round-0 majority.
    func takesRoundZero(_ slot: AcceptedSlot, _ ctx: NodeContext) -> Bool {
        guard slot.ballot.round == 0 else { return true }
        if ctx.config.mutant == .fastAcceptOverwrites { return true }
        guard let o = owner, slot.ballot.node == o || ctx.config.mutant == .fastAcceptAnyNode,
            slot.ballot != .zero
        else { return false }
        if let a = state.accepted, a.instance == slot.instance { return a == slot }
        return true
    }

    /// The promise this replica acts on: its own, or the node's fence if higher (a node-wide
    /// promise floor raised for a rebuilding peer, docs/REPAIR.md "Bulk rebuild").
    func promisedNow(_ ctx: NodeContext) -> Ballot { max(state.promised, ctx.fence) }

    private mutating func raisePromise(_ b: Ballot, _ fx: inout Fx, _ ctx: inout NodeContext) {
        // The node's epoch comes to bound every ballot it voted for (persisted with the promise).
        ctx.ballots.observe(b)
        guard b > state.promised else { return }
        state.promised = b
        fx.dirty = true
        fx.effects.mustSync = true
        if let f = fastBallot, f < b { fastBallot = nil }
    }

    private mutating func learnChosen(_ i: UInt64, _ v: KeyValue, _ fx: inout Fx, _ ctx: inout NodeContext) {
        precondition(i > state.chosen, "chosen instance must only grow")
        state.chosen = i
        state.value = v
        if let a = state.accepted, a.instance <= i { state.accepted = nil }
        fx.dirty = true
        fastBallot = nil
        switch phase {
        case .idle: break
        case .preparing(let p):
            // A recovery round (damaged) names no instance: what it learns meanwhile does not
            // make it stale.
            if p.instance <= i && !damaged { phase = .idle }
        case .accepting(let a):
            if a.instance <= i {
                // Ops applied by the chosen value are answered; the others go back in the queue
                // (`startIfNeeded` settles those the value cannot vouch for).
                pending.insert(contentsOf: a.ops, at: 0)
                settledAt = nil
                phase = .idle
            }
        }
        if damaged == false { needBarrier = false }
        reissueWaitingReads(&fx, &ctx)
        startIfNeeded(&fx, &ctx)
    }

    /// Answers the ops that the chosen value shows applied (`.done`) and those whose fate it
    /// cannot tell (`.unknown`: an Accept carrying them went out at an instance whose requests the
    /// value may have forgotten); returns the rest, which are certainly not applied yet.
    ///
    /// (safety) This is what makes a request apply at most once whatever the delay: a request can
    /// be chosen only at an instance at or above its first Accept (`acceptedAt`; other proposers
    /// only re-propose values they found accepted at that same instance), and while the value's
    /// `floor` is below that instance, its `recent` lists every request applied since.
    private func settle(_ ops: [PendingOp], _ fx: inout Fx, _ mutant: Mutant) -> [PendingOp] {
        let value = state.value
        var kept: [PendingOp] = []
        kept.reserveCapacity(ops.count)
        for var op in ops {
            if let r = value.result(for: op.id) {
                fx.effects.replies.append(ClientReply(tag: op.tag, outcome: .done(r)))
            } else if let a = op.acceptedAt, !value.remembersEverything(from: a), mutant != .forgetfulRetry {
                fx.effects.replies.append(ClientReply(tag: op.tag, outcome: .unknown))
            } else {
                // Not applied up to `chosen`; with no Accept of ours above it, not applied at all.
                if op.acceptedLast <= state.chosen { op.acceptedAt = nil }
                kept.append(op)
            }
        }
        return kept
    }

    private mutating func reissueWaitingReads(_ fx: inout Fx, _ ctx: inout NodeContext) {
        guard !damaged else { return }
        for k in reads.indices where reads[k].nonce == 0 { issueReadCheck(at: k, &fx, &ctx) }
    }

    private mutating func issueReadCheck(at k: Int, _ fx: inout Fx, _ ctx: inout NodeContext) {
        let nonce = ctx.nextNonce()
        reads[k].nonce = nonce
        reads[k].deadline = ctx.now + ctx.config.retransmitTicks * 2
        for n in peers { fx.send(n, .readCheck(nonce: nonce)) }
    }

    // MARK: - Repair (the anti-entropy scanner, TernRepair)

    /// Asks `peer` for its chosen value if it is later than ours (the scanner found this replica
    /// behind). The answer is an ordinary `learnReply`, learned like any other.
    public mutating func requestLearn(from peer: NodeID) -> Effects {
        var fx = Fx()
        fx.send(peer, .learn(have: state.chosen))
        return finish(fx)
    }

    /// Sends `peer` this replica's chosen value (the scanner found the peer behind): the same
    /// `chosen` message a proposer broadcasts, which the peer learns only if it is later than its
    /// own. Nothing while damaged (our state is not to be trusted) or while nothing is chosen.
    public func teach(_ peer: NodeID) -> Effects {
        var fx = Fx()
        if !damaged && state.chosen > 0 {
            fx.send(peer, .chosen(instance: state.chosen, value: state.value))
        }
        return finish(fx)
    }

    /// True when this replica holds nothing at all: never chose, promised or accepted anything.
    /// A key whose record went missing looks like this, and so does a key never seen here.
    public var isBlank: Bool {
        !damaged && state.chosen == 0 && state.promised == .zero && state.accepted == nil
    }

    private func finish(_ fx: Fx) -> Effects {
        var e = fx.effects
        // (safety) While damaged, nothing is written: the corrupt record on disk is the only
        // memory of the damage, and overwriting it with a clean-looking record (say, after learning
        // a chosen value) would let the next restart vote as if nothing had been promised.
        if fx.dirty && !damaged { e.persist = state }
        return e
    }
}

/// Effects under construction.
struct Fx {
    var effects = Effects()
    var dirty = false
    mutating func send(_ to: NodeID, _ m: PaxosMessage) {
        effects.messages.append(Outgoing(to: to, message: m))
    }
}

extension Operation {
    /// Bytes the operation carries (for the merge budget).
    var payloadBytes: Int {
        switch self {
        case .put(let b), .append(let b, _), .set(let b, _, _): b.count
        case .cas(let e, let b): (e?.count ?? 0) + b.count
        case .delete, .incr, .remove: 0
        case .inboxAppend(_, _, let p): p.count
        case .inboxSeal: 0
        case .data(let args): args.reduce(0) { $0 + $1.count }
        case .envelope: 16
        case .group(let g):
            switch g.kind {
            case .member(let k, let op): k.count + op.payloadBytes
            case .transaction(let args): args.reduce(0) { $0 + $1.count }
            case .sweep: 0
            }
        }
    }
    /// True when the result carries the key's previous value.
    var returnsValue: Bool {
        if case .set(_, _, true) = self { return true }
        if case .group(let g) = self {
            guard case .member(_, let op) = g.kind else { return true }
            return op.returnsValue
        }
        if case .data(let args) = self, let n = args.first {
            // Writes whose reply carries the key's value (or part of it). A run of stream writes
            // (RESPFrontend.swift) carries what its writes carry alone, which are not counted.
            let name = String(decoding: n, as: UTF8.self)
            if name == "multi" { return !DataModel.isStreamRun(args) }
            return ["set", "getdel", "getex", "spop"].contains(name)
        }
        return false
    }
}

extension KeyValue {
    /// What a read of this value answers.
    var readOutcome: ClientOutcome {
        if let s = stored { return .typed(s) }
        return .value(bytes)
    }
}
