public import TernCore

/// A Paxos ballot: compared by `round` first, then by `node`.
///
/// `round = epoch << 32 | counter`, where the epoch is persisted and bumped at every start, so a
/// node never reuses a round after a restart (PAXOS.md, Restart). `Ballot.zero` means "nothing".
public struct Ballot: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var round: UInt64
    public var node: NodeID
    public init(round: UInt64, node: NodeID) {
        self.round = round
        self.node = node
    }
    /// The ballot below every real one: no promise made.
    public static let zero = Ballot(round: 0, node: NodeID(0))
    public static func < (lhs: Ballot, rhs: Ballot) -> Bool {
        (lhs.round, lhs.node.rawValue) < (rhs.round, rhs.node.rawValue)
    }
    public var epoch: UInt32 { UInt32(truncatingIfNeeded: round >> 32) }
    public var description: String { "\(round >> 32).\(round & 0xFFFF_FFFF)@\(node)" }
}

/// Hands out ballots for one node: above every ballot seen, never reused across restarts.
public struct BallotClock: Sendable, Hashable {
    /// Persisted; bumped (and synced) at every start, and raised to a later epoch seen in a ballot.
    public private(set) var epoch: UInt32
    /// In memory only; the epoch makes forgetting it safe.
    public private(set) var counter: UInt32 = 0
    /// Set when `epoch` changed and must be persisted before anything using it is sent.
    public var epochDirty = false
    public init(epoch: UInt32) { self.epoch = epoch }

    /// A fresh ballot for `node` strictly above `above`.
    ///
    /// Outbid by a ballot of a later epoch, the clock joins that epoch (persisted by the driver
    /// before the ballot leaves the node) and counts on from its counter, rather than jumping
    /// past it: two proposers outbidding each other used to leapfrog epochs (`/status` showed the
    /// epoch rising ~60/s under contention, and request ids and read nonces keep the epoch in 24
    /// bits). Joining is safe because a ballot is (round, node): rounds of one epoch used by two
    /// nodes never collide, and a restart still moves past every round this node used.
    public mutating func next(above: Ballot, node: NodeID) -> Ballot {
        if above.epoch > epoch { join(above.epoch) }
        if above.epoch == epoch {
            // Strictly above `above` whatever the node ids: one more than its counter.
            counter = max(counter, UInt32(truncatingIfNeeded: above.round))
        }
        if counter == UInt32.max {
            precondition(epoch < UInt32.max, "epoch space exhausted")
            join(epoch + 1)
        }
        counter += 1
        return Ballot(round: UInt64(epoch) << 32 | UInt64(counter), node: node)
    }
    /// An acceptor promised or accepted `b`: a later epoch in it is joined (and persisted with the
    /// promise), so this node's epoch bounds every ballot it ever voted for, not only those it
    /// issued. A peer's fence for a rebuilding node rests on that (`ReplicaNode.fenceFloor`).
    public mutating func observe(_ b: Ballot) {
        if b.epoch > epoch { join(b.epoch) }
    }
    private mutating func join(_ e: UInt32) {
        epoch = e
        counter = 0
        epochDirty = true
    }
}

/// Identity of a client request: retries carry the same id so replicas apply it once.
public struct RequestID: Sendable, Hashable, CustomStringConvertible {
    /// The issuing client (or node) — the high part of the id.
    public var client: UInt32
    /// Increments per request of that client.
    public var counter: UInt64
    public init(client: UInt32, counter: UInt64) {
        self.client = client
        self.counter = counter
    }
    public var description: String { "\(client):\(counter)" }

    /// Client ids at or above this are derived from client-supplied ids (`clientSupplied(_:)`); nodes and
    /// the simulator's clients use smaller ones.
    public static let clientSuppliedBase: UInt32 = 0x8000_0000

    /// The request id of a client-supplied idempotency key (its bytes, already qualified by
    /// whatever makes it unique, e.g. the uid and attempt): two XXH64 hashes, 95 bits, in the
    /// client-supplied range. The same bytes give the same id on every node.
    public static func clientSupplied(_ key: [UInt8]) -> RequestID {
        let h = XXH64.hash(key, seed: 0x7E57)
        return RequestID(
            client: clientSuppliedBase | UInt32(truncatingIfNeeded: h >> 33),
            counter: XXH64.hash(key, seed: 0x1D))
    }
}

/// A write on one key: closure-free and serialisable so it can travel inside a Paxos value.
public enum Operation: Sendable, Hashable {
    /// Set the value.
    case put([UInt8])
    /// Remove the key.
    case delete
    /// Add to the value read as a decimal integer (absent = 0).
    case incr(Int64)
    /// Set `new` only if the value equals `expected` (`nil` = must be absent).
    case cas(expected: [UInt8]?, new: [UInt8])
    /// Append bytes; the result is the new length (`.number`). Refused (`.tooLarge`) if the result
    /// would exceed `maxBytes`.
    case append([UInt8], maxBytes: Int)
    /// Set the value if `condition` holds. The result is `.previous(old)` when `returnOld` (Redis
    /// `SET … GET`, `GETSET`), else `.swapped(applied)`.
    case set([UInt8], condition: SetCondition, returnOld: Bool)
    /// Remove the key; the result says whether it existed (`.existed`), for Redis `DEL`.
    case remove
    /// Append a message to a sync inbox head, refused unless `seq` is above the inbox's last
    /// (`InboxHead.applyAppend`, docs/SYNC.md).
    case inboxAppend(seq: UInt64, timeMs: UInt64, payload: [UInt8])
    /// Move the inbox head's oldest messages `first...last` to their (already written) bucket and
    /// trim old buckets (`InboxHead.applySeal`).
    case inboxSeal(first: UInt64, last: UInt64, retention: InboxRetention, nowMs: UInt64)
    /// A Redis write command on the key's typed value (`DataModel.apply`): the lower-cased name
    /// first, arguments checked by the server, times absolute (docs/DATA.md).
    case data([[UInt8]])
    /// A red-envelope command (`EnvelopeState.apply`, docs/ENVELOPE.md).
    case envelope(EnvelopeOp)
    /// An operation on the members of a hash-tag group key (`GroupValue.apply`, docs/DATA.md).
    indirect case group(GroupOperation)
}

/// When `Operation.set` applies.
public enum SetCondition: UInt8, Sendable, Hashable {
    /// Always (plain `SET`).
    case always = 0
    /// Only if the key is absent (`NX`).
    case ifAbsent = 1
    /// Only if the key exists (`XX`).
    case ifPresent = 2
}

/// The result of one operation, as decided by the chosen instance that applied it.
public enum OperationResult: Sendable, Hashable {
    case ok
    case number(Int64)
    case swapped(Bool)
    /// `incr` on a value that is not a decimal integer; the value is unchanged.
    case notANumber
    /// `append` beyond its bound; the value is unchanged.
    case tooLarge
    /// The value before a `set` with `returnOld` (nil = absent).
    case previous([UInt8]?)
    /// A `set` with `returnOld` was applied by an earlier instance, and the previous value it saw
    /// is no longer remembered (old values are kept only for the instance that applied them, so a
    /// key's record does not grow with the de-dup window). Only a late retry sees this.
    case previousForgotten
    /// Whether `remove` found the key.
    case existed(Bool)
    /// `incr` would overflow 64 bits; the value is unchanged.
    case overflow
    /// `inboxAppend` applied; `needsSeal` when the head's oldest messages fill a bucket.
    case inboxAppended(needsSeal: Bool)
    /// `inboxAppend` refused: its sequence is not above the inbox's `last`.
    case inboxRefused(last: UInt64)
    /// `inboxAppend` refused: the head is at its bound until it is sealed.
    case inboxFull
    /// `inboxSeal` done (`applied` false: the head had changed); `dropped` are the first sequences
    /// of the buckets retention removed from the index (their keys are to be deleted).
    case inboxSealed(applied: Bool, dropped: [UInt64])
    /// A `data` command's reply.
    case data(DataReply)
    /// What a red-envelope command did.
    case envelope(EnvelopeResult)
    /// `inboxAppend` applied at sequence `seq` (what `applyAppend` answers since client message
    /// ids: a retry answered from the de-dup window learns the sequence of the first attempt).
    case inboxAppendedAt(seq: UInt64, needsSeal: Bool)
}

/// One request applied by a chosen instance, remembered (bounded) to de-duplicate retries.
public struct AppliedRequest: Sendable, Hashable {
    public var id: RequestID
    public var result: OperationResult
    /// The instance whose value applied it.
    public var instance: UInt64
    public init(id: RequestID, result: OperationResult, instance: UInt64) {
        self.id = id
        self.result = result
        self.instance = instance
    }
}

/// The whole value of one Paxos instance: the key's bytes plus the recent request ids.
///
/// Values are whole (not deltas), so old instances can be forgotten. `recent` travels with the
/// value so every replica de-duplicates the same way.
///
/// `recent` is bounded, so it cannot say "never applied" for every id; `floor` says for which
/// instances it can: every request applied at an instance above `floor` is in `recent`. A
/// proposer that sent an Accept carrying a request at instance `a` may re-propose it only while
/// `floor < a` (then absence from `recent` proves it was never applied); otherwise its outcome is
/// unknown and it is never proposed again (found by an independent harness: a request retried
/// after 60 later writes was applied twice; docs/SERVER.md, "Exactly once").
public struct KeyValue: Sendable, Hashable {
    public var bytes: [UInt8]?
    /// What `bytes` holds (Redis's types; services' values are strings).
    public var kind: ValueKind = .string
    /// Absolute expiry in milliseconds since the Unix epoch (0 = none): a value whose deadline is
    /// at or below the proposer's expiry horizon is removed before anything applies to it.
    public var deadlineMs: UInt64 = 0
    public var recent: [AppliedRequest]
    /// Requests applied at instances up to `floor` may have been forgotten.
    public var floor: UInt64
    public init(
        bytes: [UInt8]? = nil, recent: [AppliedRequest] = [], floor: UInt64 = 0, kind: ValueKind = .string,
        deadlineMs: UInt64 = 0
    ) {
        self.bytes = bytes
        self.kind = kind
        self.deadlineMs = deadlineMs
        self.recent = recent
        self.floor = floor
    }
    public static let absent = KeyValue()

    /// A decimal integer as Redis reads one (`string2ll`): an optional minus sign and digits, no
    /// plus sign, spaces or leading zeros, within 64 bits; nil otherwise.
    public static func strictInteger(_ b: [UInt8]) -> Int64? {
        guard !b.isEmpty, b.count <= 20 else { return nil }
        let negative = b[0] == UInt8(ascii: "-")
        let digits = negative ? b.dropFirst() : b[...]
        guard let first = digits.first, digits.allSatisfy({ $0 >= 48 && $0 <= 57 }) else { return nil }
        if first == UInt8(ascii: "0") && (digits.count > 1 || negative) { return nil }
        return Int64(String(decoding: b, as: UTF8.self))
    }

    /// The result recorded for `id`, if it was applied within the de-dup window.
    public func result(for id: RequestID) -> OperationResult? {
        recent.last(where: { $0.id == id })?.result
    }

    /// True when `recent` proves that no request applied at an instance `>= instance` is missing
    /// from it.
    public func remembersEverything(from instance: UInt64) -> Bool { floor < instance }

    /// Applies `ops` in order as the value of `instance`; each caller's result is recorded in
    /// `recent` (capped at `window`, raising `floor` past what it drops).
    /// The value as a read returns it: nil for a plain string without expiry (`bytes` is then
    /// the whole story), else its kind and deadline.
    public var stored: StoredValue? {
        guard let b = bytes, kind != .string || deadlineMs != 0 else { return nil }
        return StoredValue(kind: kind, deadlineMs: deadlineMs, bytes: b)
    }

    /// True when the value has a deadline at or below `horizonMs` (0: no clock, nothing expires).
    public func isExpired(horizonMs: UInt64) -> Bool {
        bytes != nil && deadlineMs != 0 && horizonMs != 0 && deadlineMs <= horizonMs
    }

    public func applying(
        _ ops: [(Operation, RequestID)], window: Int, instance: UInt64, horizonMs: UInt64 = 0
    ) -> KeyValue {
        var none: [String]?
        return applying(ops, window: window, instance: instance, horizonMs: horizonMs, events: &none)
    }

    /// `applying`, also listing the keyspace events the instance raises (`KeyspaceEvents`) into
    /// `events` when it is not nil (the proposer, while notifications are on).
    public func applying(
        _ ops: [(Operation, RequestID)], window: Int, instance: UInt64, horizonMs: UInt64,
        events: inout [String]?
    ) -> KeyValue {
        var next = self
        // Old values returned by earlier instances are forgotten: keeping up to `window` whole
        // values in every record (and every Accept) would multiply the key's size.
        for k in next.recent.indices {
            if case .previous(let old) = next.recent[k].result, old != nil {
                next.recent[k].result = .previousForgotten
            }
            if case .data(let r) = next.recent[k].result, r.weight > 64 {
                next.recent[k].result = .previousForgotten
            }
        }
        // Expiry is decided here, through the protocol: the proposer's horizon (its clock plus the
        // skew bound) says the deadline passed, and the instance it proposes removes the value.
        if next.isExpired(horizonMs: horizonMs) {
            DataModel.clear(&next)
            events?.append(KeyspaceEvents.expired)
        }
        for (op, id) in ops {
            if next.result(for: id) != nil { continue }
            // Again before each merged op: one before it may have left a deadline already at or
            // below the horizon (`SET … PXAT` a moment ago), and the next op must find the key
            // gone, as it would in an instance of its own. Without this a merged `PEXPIREAT`
            // revived such a value, and a read long after its deadline returned it (found by the
            // simulator's data workload, seed 143).
            if next.isExpired(horizonMs: horizonMs) {
                DataModel.clear(&next)
                events?.append(KeyspaceEvents.expired)
            }
            let result: OperationResult
            switch op {
            case .put(let b):
                DataModel.clear(&next)
                next.bytes = b
                result = .ok
            case .delete:
                DataModel.clear(&next)
                result = .ok
            case .incr(let d):
                let current: Int64?
                if let b = next.bytes {
                    current = KeyValue.strictInteger(b)
                } else {
                    current = 0
                }
                if let c = current {
                    let (sum, overflow) = c.addingReportingOverflow(d)
                    if overflow {
                        result = .overflow
                    } else {
                        next.bytes = Array(String(sum).utf8)
                        result = .number(sum)
                    }
                } else {
                    result = .notANumber
                }
            case .cas(let expected, let new):
                if next.bytes == expected {
                    next.bytes = new
                    result = .swapped(true)
                } else {
                    result = .swapped(false)
                }
            case .append(let b, let maxBytes):
                let cur = next.bytes ?? []
                if cur.count + b.count > maxBytes {
                    result = .tooLarge
                } else {
                    next.bytes = cur + b
                    result = .number(Int64(cur.count + b.count))
                }
            case .set(let b, let condition, let returnOld):
                let old = next.bytes
                let applies: Bool
                switch condition {
                case .always: applies = true
                case .ifAbsent: applies = old == nil
                case .ifPresent: applies = old != nil
                }
                if applies {
                    DataModel.clear(&next)
                    next.bytes = b
                }
                result = returnOld ? .previous(old) : .swapped(applies)
            case .remove:
                result = .existed(next.bytes != nil)
                DataModel.clear(&next)
            case .inboxAppend(let seq, let timeMs, let payload):
                (next.bytes, result) = InboxHead.applyAppend(
                    next.bytes, seq: seq, timeMs: timeMs, payload: payload)
            case .inboxSeal(let first, let last, let retention, let nowMs):
                (next.bytes, result) = InboxHead.applySeal(
                    next.bytes, first: first, last: last, retention: retention, nowMs: nowMs)
            case .data(let args):
                let before = events == nil ? nil : next
                let seed = instance &* 0x9E37_79B9_7F4A_7C15 ^ id.counter
                let reply = DataModel.apply(args, to: &next, seed: seed, horizonMs: horizonMs, lists: true)
                if let before {
                    events?.append(
                        contentsOf: KeyspaceEvents.events(
                            args, reply: reply, before: before, after: next, seed: seed))
                }
                result = .data(reply)
            case .envelope(let e): result = EnvelopeState.apply(&next.bytes, e)
            case .group(let g):
                result = GroupValue.apply(
                    g, to: &next, id: id, instance: instance, horizonMs: horizonMs, events: &events)
            }
            next.recent.append(AppliedRequest(id: id, result: result, instance: instance))
        }
        // Never trim the requests this instance applied: the proposer answers each merged op from
        // `recent`, and an op missing there is re-queued and applied AGAIN (found by a test with
        // mergeMax 64 > window 32: 48 increments gave 64).
        let keep = max(window, ops.count)
        if next.recent.count > keep {
            let dropped = next.recent.count - keep
            next.floor = max(next.floor, next.recent[dropped - 1].instance)
            next.recent.removeFirst(dropped)
        }
        return next
    }
}

/// An acceptor's open slot: it accepted `value` at `instance` (= chosen + 1) with `ballot`.
public struct AcceptedSlot: Sendable, Hashable {
    public var instance: UInt64
    public var ballot: Ballot
    public var value: KeyValue
    public init(instance: UInt64, ballot: Ballot, value: KeyValue) {
        self.instance = instance
        self.ballot = ballot
        self.value = value
    }
}

/// What one replica keeps durably for one key (PAXOS.md, "Per key, per replica").
public struct KeyState: Sendable, Hashable {
    /// The last chosen instance (0 = the key never existed).
    public var chosen: UInt64 = 0
    /// The value of instance `chosen`.
    public var value: KeyValue = .absent
    /// Covers every instance above `chosen`.
    public var promised: Ballot = .zero
    /// The open slot at `chosen + 1`, if any.
    public var accepted: AcceptedSlot?
    public init() {}
}

/// How a key's persisted record came back from storage.
public enum LoadedKey: Sendable, Hashable {
    /// Never written at this replica.
    case absent
    case state(KeyState)
    /// The record failed its checksum: the replica may have promised things it forgot.
    case damaged
}

/// Peer-to-peer messages about one key. All ballots and instances are the sender's view.
public enum PaxosMessage: Sendable, Hashable {
    case prepare(instance: UInt64, ballot: Ballot)
    case promise(instance: UInt64, ballot: Ballot, accepted: AcceptedSlot?)
    case accept(instance: UInt64, ballot: Ballot, value: KeyValue)
    case accepted(instance: UInt64, ballot: Ballot)
    /// Refusal of `prepare`/`accept` at (instance, ballot); carries the acceptor's promise and
    /// chosen instance so the proposer knows whether it is outbid, behind or ahead.
    case reject(instance: UInt64, ballot: Ballot, promised: Ballot, chosen: UInt64)
    case chosen(instance: UInt64, value: KeyValue)
    /// "The value accepted at (instance, ballot) is chosen": a Chosen without its value, which the
    /// proposer sends the peers it sent the Accept (docs/PROTOCOL.md §3, "Commit"). A peer holding
    /// that slot learns its value; any other asks with `learn`.
    case commit(instance: UInt64, ballot: Ballot)
    case readCheck(nonce: UInt64)
    case readState(nonce: UInt64, chosen: UInt64, accepted: AcceptedSlot?)
    /// "My chosen instance is `have`; send me yours if it is later."
    case learn(have: UInt64)
    case learnReply(instance: UInt64, value: KeyValue)
    /// A damaged replica's recovery, one round trip (docs/PROTOCOL.md §4, "Damaged key"):
    /// "promise `ballot` for every instance above your chosen one, durably, and tell me your
    /// chosen instance, its value and your open slot". Unlike `prepare` it names no instance: the
    /// damaged replica does not know its chosen instance, and guessing one cost a Reject, a Learn
    /// and a second Prepare per key.
    case recover(ballot: Ballot)
    /// The answer to `recover`: granted when `promised == ballot` (the promise is durable before it
    /// leaves, like a Promise), with the acceptor's chosen instance, value and open slot; refused
    /// when `promised > ballot` (then `chosen`, `value` and `accepted` are empty).
    case recovery(ballot: Ballot, promised: Ballot, chosen: UInt64, value: KeyValue, accepted: AcceptedSlot?)
}

/// A message to send: to `to`, about the key of the replica that produced it.
public struct Outgoing: Sendable, Hashable {
    public var to: NodeID
    public var message: PaxosMessage
    public init(to: NodeID, message: PaxosMessage) {
        self.to = to
        self.message = message
    }
}

/// What a proposer may do with a write it did not take from a client itself (`NodeCore`'s
/// routing of hot keys, docs/PROTOCOL.md "Routing a hot key to one proposer").
public enum ProposeBound: Sendable, Hashable {
    /// An ordinary write.
    case none
    /// Routed here by another replica of the key: carry it in no Accept above this instance
    /// (above it, the sender may take it back). Answered `.retryable` if not applied by then.
    case carryUntil(UInt64)
    /// Taken back from a route that went silent: the replica it was routed to may have carried it
    /// at instances first...last (no lower: the sender had seen first - 1 chosen without it).
    case heldBy(first: UInt64, last: UInt64)
}

/// The answer to one client call.
public enum ClientOutcome: Sendable, Hashable {
    /// A write took effect with this result.
    case done(OperationResult)
    /// A read's value (`nil` = absent).
    case value([UInt8]?)
    /// A read's value when it is typed or expiring (`KeyValue.stored`).
    case typed(StoredValue)
    /// Certainly not applied (never reached an Accept); safe to retry.
    case retryable
    /// May or may not have been applied (an Accept carrying it was sent); retry with the same id.
    case unknown
}

/// A reply to the client call identified by `tag` (chosen by the caller of `propose`/`read`).
public struct ClientReply: Sendable, Hashable {
    public var tag: UInt64
    public var outcome: ClientOutcome
    public init(tag: UInt64, outcome: ClientOutcome) {
        self.tag = tag
        self.outcome = outcome
    }
}

/// What the shell must do after a step, **in this order**: persist `persist` (and fsync if
/// `mustSync`); only then send `messages` (messages to the replica's own node are delivered back
/// to it like any other); only then deliver `replies`.
///
/// The order is the safety contract: a Promise or Accepted that leaves before its state is durable
/// can be forgotten by a crash, and two values could be chosen for one instance.
public struct Effects: Sendable {
    /// The key's whole state to write, if it changed.
    public var persist: KeyState?
    /// True when `persist` holds a promise or an accepted value that a message depends on.
    public var mustSync = false
    public var messages: [Outgoing] = []
    public var replies: [ClientReply] = []
    /// Client writes merged into an instance this step proposed (0 = none proposed); statistics.
    public var mergedOps = 0
    /// Keyspace events of the instances this step got chosen (proposer only, while
    /// `NodeContext.keyEventsOn`); published by the shell (docs/PUBSUB.md).
    public var keyEvents: [KeyEvent] = []
    public init() {}
    public var isEmpty: Bool { persist == nil && messages.isEmpty && replies.isEmpty }
}

/// Deliberately broken protocols, used only to prove that the simulator's checks can fail.
public enum Mutant: String, Sendable, Hashable, CaseIterable {
    case none
    /// The driver sends replies before its writes are durable (the sync comes later).
    case replyBeforePersist
    /// A proposer ignores the accepted values reported in promises.
    case ignoreAcceptedValue
    /// A damaged key answers as if it had never promised or accepted anything.
    case damagedAnswersFresh
    /// The node does not bump its epoch on restart, so it may reuse a round.
    case noEpochOnRestart
    /// Every read is answered locally (as if `staleOK`), without asking a majority.
    case staleReads
    /// A proposer re-proposes a request that is missing from `recent` even when `floor` says it
    /// may have been applied and forgotten (the exactly-once hole before the fix; run it with a
    /// small `dedupWindow`).
    case forgetfulRetry
    /// A learner-only node (rebuilding after it lost what it promised) loads its keys as if its
    /// storage were intact, and so votes with forgotten promises.
    case learnerVotes
    /// Every replica of a fresh key may skip Phase 1 with its own round-0 ballot (0, itself), not
    /// only the key's owner, and acceptors take a round-0 Accept from any of them: a value
    /// accepted at (0, n3) by a minority then outranks one chosen at (0, n1) in a later Phase 1.
    case fastAcceptAnyNode
    /// An acceptor takes a round-0 Accept whatever it promised or accepted (as if round 0 could
    /// not be outbid): a late round-0 Accept overwrites a value a Phase 1 ballot got chosen.
    case fastAcceptOverwrites
    /// A Commit makes its receiver learn whatever it accepted at that instance, whatever the
    /// ballot: a slot an Accept of a lower ballot left (the higher one's Accept lost) is taken as
    /// the chosen value.
    case commitAnyBallot
}

/// Tunables of the core, in ticks and counts.
public struct PaxosConfig: Sendable, Hashable {
    /// Re-send the current phase's messages after this many ticks without a quorum.
    public var retransmitTicks: UInt64 = 8
    /// Re-sends before a phase gives up and starts Phase 1 with a new ballot.
    public var retransmitsMax = 4
    /// Outbid (Reject) this many times in a row: pending writes fail with a retryable error.
    public var rejectionsMax = 5
    /// Upper bound of the randomised back-off after a Reject (doubled per rejection).
    public var backoffTicksMax: UInt64 = 6
    /// Pending writes (and, separately, waiting reads) per key; beyond it the call answers
    /// `.retryable` (back-pressure).
    public var pendingMax = 256
    /// Writes merged into one instance.
    public var mergeMax = 64
    /// Payload bytes (written values, plus the current value for each op that returns it) merged
    /// into one instance, at least one op always: bounds the size of one Accept (and with it the
    /// peer frames that carry Accepts, so that no message holds a link for long).
    public var mergeBytesMax = 1 << 20
    /// De-dup window: applied request ids remembered per key.
    public var dedupWindow = 32
    /// Read attempts (ReadCheck rounds) before a read fails.
    public var readAttemptsMax = 6
    /// The first instance of a fresh key skips Phase 1 at the key's owner, with the round-0 ballot
    /// (0, owner) (docs/PROTOCOL.md, "Fresh keys: round 0 at the owner"; `KeyReplica.owner`).
    public var fastAccept = true
    /// Deliberately broken protocol (tests only).
    public var mutant: Mutant = .none
    public init() {}
}

/// What a key replica needs from its node: the tick, ballots, randomness.
public struct NodeContext: Sendable {
    public var me: NodeID
    public var now: UInt64
    public var ballots: BallotClock
    public var rng: SplitMix64
    public var config: PaxosConfig
    /// Read nonces handed out by this incarnation (see `nextNonce`).
    public var noncesIssued: UInt64 = 0
    /// The expiry horizon in Unix milliseconds (the shell's wall clock plus the clock-skew bound):
    /// a value whose deadline is at or below it is removed by the next instance this node
    /// proposes. 0: no clock, nothing expires (docs/DATA.md, "Expiry").
    public var expiryHorizonMs: UInt64 = 0
    /// The proposer lists the keyspace events of the instances it gets chosen (set by the shell
    /// while `notify-keyspace-events` is on).
    public var keyEventsOn = false
    /// The node-wide promise floor (docs/REPAIR.md, "Bulk rebuild"): every key acts as if it had
    /// promised at least this ballot. Raised for a rebuilding peer, durable before it is announced.
    public var fence: Ballot = .zero
    /// The node casts no vote of its own now (learner-only or its incarnation check pending): no
    /// round-0 attempt, whose proposer votes for itself in the same step (`KeyReplica.owner`).
    public var votesHeld = false
    public init(me: NodeID, now: UInt64, ballots: BallotClock, rng: SplitMix64, config: PaxosConfig) {
        self.me = me
        self.now = now
        self.ballots = ballots
        self.rng = rng
        self.config = config
    }
}

extension NodeContext {
    /// A read nonce unique for this node across keys, evictions and restarts: the epoch (bumped
    /// at every start) in the high bits, a counter below. A nonce reused after a key was evicted
    /// and reloaded (or after a restart) could match a delayed `readState` sent for an older read,
    /// and answer a new read from a stale snapshot.
    public mutating func nextNonce() -> UInt64 {
        noncesIssued += 1
        return UInt64(ballots.epoch) << 40 | (noncesIssued & 0xFF_FFFF_FFFF)
    }
}
