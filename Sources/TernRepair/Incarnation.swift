public import TernConsensus
public import TernCore

/// One start of a node: its incarnation number (one more than the last one its data directory
/// remembers) and a nonce drawn at that start, which tells a retransmitted `hello` from a second
/// start that reached the same number (a directory restored from a backup does exactly that).
public struct Incarnation: Sendable, Hashable, CustomStringConvertible {
    public var number: UInt64
    public var nonce: UInt64
    public init(number: UInt64, nonce: UInt64) {
        self.number = number
        self.nonce = nonce
    }
    public var description: String { "\(number)/\(String(nonce, radix: 16))" }
}

/// What a node keeps durably about incarnations (docs/REPAIR.md, "A directory restored from an
/// older backup"): its own current one (`\0incarnation`) and, per other node, the latest one it
/// acknowledged (`\0incarnations`). Both in the project's byte codec.
public enum IncarnationRecords {
    /// Storage key of the node's own current incarnation.
    public static let ownKey: [UInt8] = [0] + Array("incarnation".utf8)
    /// Storage key of the table of other nodes' incarnations this node acknowledged.
    public static let seenKey: [UInt8] = [0] + Array("incarnations".utf8)

    public static func encode(_ i: Incarnation) -> [UInt8] {
        var w = ByteWriter()
        w.u64(i.number)
        w.u64(i.nonce)
        return w.bytes
    }

    public static func decode(_ bytes: [UInt8]) -> Incarnation? {
        var r = ByteReader(bytes)
        guard let n = r.u64(), let nonce = r.u64(), r.atEnd else { return nil }
        return Incarnation(number: n, nonce: nonce)
    }

    /// The own record: the latest confirmed start and the unconfirmed ones since
    /// (`OwnIncarnations`). A record of 16 bytes is the earlier format (one start, taken as
    /// confirmed, as it was read before).
    public static func encode(own: OwnIncarnations) -> [UInt8] {
        var w = ByteWriter()
        w.u8(2)
        w.u64(own.confirmed)
        w.u32(UInt32(own.starts.count))
        for i in own.starts {
            w.u64(i.number)
            w.u64(i.nonce)
        }
        return w.bytes
    }

    public static func decodeOwn(_ bytes: [UInt8]) -> OwnIncarnations? {
        if bytes.count == 16, let i = decode(bytes) {
            return OwnIncarnations(confirmed: i.number, starts: [])
        }
        var r = ByteReader(bytes)
        guard r.u8() == 2, let confirmed = r.u64(), let n = r.u32(), Int(n) <= OwnIncarnations.limit
        else { return nil }
        var starts: [Incarnation] = []
        for _ in 0..<n {
            guard let number = r.u64(), let nonce = r.u64() else { return nil }
            starts.append(Incarnation(number: number, nonce: nonce))
        }
        return r.atEnd ? OwnIncarnations(confirmed: confirmed, starts: starts) : nil
    }

    public static func encode(seen: [NodeID: Incarnation]) -> [UInt8] {
        var w = ByteWriter()
        w.u32(UInt32(seen.count))
        for (node, i) in seen.sorted(by: { $0.key < $1.key }) {
            w.u32(node.rawValue)
            w.u64(i.number)
            w.u64(i.nonce)
        }
        return w.bytes
    }

    public static func decodeSeen(_ bytes: [UInt8]) -> [NodeID: Incarnation]? {
        var r = ByteReader(bytes)
        guard let n = r.u32(), Int(n) <= bytes.count else { return nil }
        var seen: [NodeID: Incarnation] = [:]
        for _ in 0..<n {
            guard let node = r.u32(), let number = r.u64(), let nonce = r.u64() else { return nil }
            seen[NodeID(node)] = Incarnation(number: number, nonce: nonce)
        }
        return r.atEnd ? seen : nil
    }
}

/// What a node's directory remembers of its own starts (`IncarnationRecords.ownKey`): the latest
/// start that another node is known to have acknowledged (`confirmed`), and every start since,
/// oldest first, the current one last.
///
/// Why the unconfirmed starts are kept: a start that crashed before any node welcomed it leaves a
/// directory whose latest start no peer has recorded. Were that start's number the baseline of the
/// next check, a directory restored from a backup, started once (its number now equal to the one
/// a peer recorded for the lost directory's start) and stopped before the check answered, would
/// pass the check at its next start. So the check compares a peer's record with the last
/// *confirmed* start, and a peer's record above it must be one of these starts (same nonce).
public struct OwnIncarnations: Sendable, Hashable {
    /// At most this many unconfirmed starts are kept (the oldest go first; a peer that recorded
    /// one of those then finds the directory stale: a needless rebuild, never a missed one).
    public static let limit = 64
    public var confirmed: UInt64
    public var starts: [Incarnation]
    public init(confirmed: UInt64 = 0, starts: [Incarnation] = []) {
        self.confirmed = confirmed
        self.starts = starts
    }
    /// The latest start's number (the next one is one above).
    public var latest: UInt64 { max(confirmed, starts.last?.number ?? 0) }
    /// The record of the next start, drawn with `nonce`.
    public func starting(nonce: UInt64) -> OwnIncarnations {
        adding(Incarnation(number: latest + 1, nonce: nonce))
    }
    /// The record with `start` as the latest (the oldest unconfirmed ones beyond `limit` go).
    public func adding(_ start: Incarnation) -> OwnIncarnations {
        var n = self
        n.starts.append(start)
        if n.starts.count > Self.limit { n.starts.removeFirst(n.starts.count - Self.limit) }
        return n
    }
    /// The record once `start` was acknowledged by another node.
    public func confirming(_ start: Incarnation) -> OwnIncarnations {
        var n = self
        n.confirmed = max(confirmed, start.number)
        n.starts.removeAll { $0.number <= n.confirmed }
        return n
    }
}

/// The incarnation check's peer messages, carried on the repair service (kind 3) with their own
/// first bytes (5 and 6; the scanner's messages use 1–4).
///
/// ```
///  N (starting: its directory says `stored`; this start is `current`)     P
///  ── hello(confirmed, earlier, current) ──────────────────────────────►  seen[N] newer than
///                                                                          `stored` (and not
///                                                                          `current` itself)?
///  ◄──────────────────────────────────────── stale(seen[N]) ───────────  yes: N's directory is
///                                                                          older than a start P
///                                                                          acknowledged
///  ◄───────────────────────────────── welcome(current) ─────────────────  no: seen[N] := current,
///                                                                          durably, then answer
/// ```
public enum IncarnationMessage: Sendable, Hashable {
    /// `stored`: the sender's last confirmed start; `earlier`: its unconfirmed starts before
    /// `current` (`OwnIncarnations`); `trusted`: false for a start that does not vote with what its
    /// directory holds (it rebuilds learner-only, or the directory is new): such a start is not
    /// checked, only recorded when it is newer than the peer's record (else the peer answers
    /// `stale` with its record, and the start takes a number above it).
    case hello(stored: UInt64, earlier: [Incarnation] = [], current: Incarnation, trusted: Bool = true)
    case welcome(current: Incarnation)
    case stale(seen: Incarnation)

    static let helloKind: UInt8 = 5
    static let replyKind: UInt8 = 6

    /// True when `bytes` is an incarnation message (not the scanner's).
    public static func isIncarnation(_ bytes: [UInt8]) -> Bool {
        bytes.first == helloKind || bytes.first == replyKind
    }

    public func encode() -> [UInt8] {
        var w = ByteWriter()
        switch self {
        case .hello(let stored, let earlier, let current, let trusted):
            w.u8(Self.helloKind)
            w.u8(trusted ? 1 : 0)
            w.u64(stored)
            w.u64(current.number)
            w.u64(current.nonce)
            w.u32(UInt32(earlier.count))
            for i in earlier {
                w.u64(i.number)
                w.u64(i.nonce)
            }
        case .welcome(let current):
            w.u8(Self.replyKind)
            w.u8(0)
            w.u64(current.number)
            w.u64(current.nonce)
        case .stale(let seen):
            w.u8(Self.replyKind)
            w.u8(1)
            w.u64(seen.number)
            w.u64(seen.nonce)
        }
        return w.bytes
    }

    public static func decode(_ bytes: [UInt8]) -> IncarnationMessage? {
        var r = ByteReader(bytes)
        guard let kind = r.u8() else { return nil }
        let m: IncarnationMessage
        switch kind {
        case helloKind:
            guard let trusted = r.u8(), trusted <= 1, let stored = r.u64(), let n = r.u64(),
                let nonce = r.u64(), let count = r.u32(), Int(count) <= OwnIncarnations.limit
            else { return nil }
            var earlier: [Incarnation] = []
            for _ in 0..<count {
                guard let en = r.u64(), let enonce = r.u64() else { return nil }
                earlier.append(Incarnation(number: en, nonce: enonce))
            }
            m = .hello(
                stored: stored, earlier: earlier, current: Incarnation(number: n, nonce: nonce),
                trusted: trusted == 1)
        case replyKind:
            guard let flag = r.u8(), flag <= 1, let n = r.u64(), let nonce = r.u64() else { return nil }
            let i = Incarnation(number: n, nonce: nonce)
            m = flag == 0 ? .welcome(current: i) : .stale(seen: i)
        default:
            return nil
        }
        return r.atEnd ? m : nil
    }
}

/// The incarnation check of one node, a deterministic state machine (no clock, socket or file):
/// at start the node must not vote until the other nodes confirmed that its data directory is not
/// older than a start of it they acknowledged; and it answers the other nodes' own checks.
///
/// Why: a directory restored from an older backup holds the backup's promises and accepted values,
/// not the ones the node gave since; voting with them can choose a second value at an instance
/// (docs/PROTOCOL.md §4). Nothing in the directory can tell (its epoch record and `durable.mark`
/// came along), so the witnesses are the peers: every start of a node gets a new incarnation
/// number (`stored + 1`) and a nonce, and the node votes only once a peer has durably recorded it.
/// A restored directory's `stored` is then below what some peer recorded for the node.
///
/// Decision: `stale` from any node → the node rebuilds learner-only (the shell's existing path).
/// `welcome` from every other node → it votes. Some nodes silent: once `graceNanos` passed since
/// the start and at least one welcomed it, it votes too (a restart during another node's outage
/// must not take the cluster's keys down); the residual risk is written in docs/REPAIR.md.
public final class IncarnationGuard {
    public let me: NodeID
    public let others: [NodeID]
    /// What the directory's own record says now (`OwnIncarnations`): this start is the latest.
    /// An untrusted start renumbers itself above a peer's record (see `hello`); a running node
    /// bumps (`bumpNanos`).
    public private(set) var own: OwnIncarnations
    /// This start.
    public var current: Incarnation { own.starts[own.starts.count - 1] }
    /// The last confirmed start the directory remembers (0: none).
    public var stored: UInt64 { own.confirmed }
    /// The directory's unconfirmed starts before this one.
    public var earlier: [Incarnation] { Array(own.starts.dropLast()) }
    /// False for a start that does not vote with what its directory holds (`checking: false`), and
    /// from the moment a checked start is found stale (it rebuilds, and is recorded as it is).
    public private(set) var trusted: Bool
    /// True once another node welcomed this start (the own record was then rewritten).
    var confirmedOnce = false
    /// When `tick` first saw this start confirmed (the bump period counts from it).
    var confirmedAt: UInt64?
    /// A running node moves to its next incarnation this often once the current one is confirmed
    /// (0: never), so a hot backup (copied while it ran) restored later is found stale unless it
    /// was taken within the last period (docs/REPAIR.md).
    let bumpNanos: UInt64
    /// A new number (a bump, a renumbered untrusted start) is announced only once the shell has
    /// made the own record that holds it durable (`ownPersisted`).
    var ownPending = false
    /// The latest incarnation of each other node this node acknowledged (durable in the shell).
    public private(set) var seen: [NodeID: Incarnation]

    public enum Decision: Sendable, Hashable {
        /// Still waiting for answers.
        case checking
        /// The node may vote.
        case passed
        /// `peer` acknowledged `seen`, a later start than this directory remembers: rebuild.
        case stale(peer: NodeID, seen: Incarnation)
    }
    public private(set) var decision: Decision
    var welcomed: Set<NodeID> = []
    let startedAt: UInt64
    var lastHelloAt: UInt64?
    let graceNanos: UInt64
    let helloIntervalNanos: UInt64
    /// Deliberately broken (simulator only): decide `passed` at once, ask no one, and ignore a
    /// `stale` answer (the node's own check is skipped; it still answers the others').
    let skipCheck: Bool

    var out = IncarnationReady()

    /// - Parameters:
    ///   - checking: false for a node that rebuilds anyway (learner-only for another reason): it
    ///     still announces `current`, but does not wait for anything.
    public init(
        me: NodeID, others: [NodeID], stored: UInt64, earlier: [Incarnation] = [], current: Incarnation,
        seen: [NodeID: Incarnation],
        checking: Bool, now: UInt64, graceNanos: UInt64 = 5_000_000_000,
        helloIntervalNanos: UInt64 = 1_000_000_000, bumpNanos: UInt64 = 0, skipCheck: Bool = false
    ) {
        precondition(current.number > stored, "a start's incarnation is above the stored one")
        self.me = me
        self.others = others.filter { $0 != me }.sorted()
        self.own = OwnIncarnations(confirmed: stored, starts: earlier + [current])
        self.seen = seen
        self.startedAt = now
        self.graceNanos = graceNanos
        self.helloIntervalNanos = helloIntervalNanos
        self.bumpNanos = bumpNanos
        self.skipCheck = skipCheck
        self.trusted = checking
        decision = checking && !skipCheck && !self.others.isEmpty ? .checking : .passed
    }

    /// Time passes: (re)sends `hello` to the nodes that have not welcomed this start yet, and ends
    /// the wait once the grace period is over with at least one welcome.
    public func tick(now: UInt64) {
        if decision == .checking, now >= startedAt + graceNanos, !welcomed.isEmpty {
            decision = .passed
            out.decided = .passed
        }
        if confirmedOnce && confirmedAt == nil { confirmedAt = now }
        // (A start found stale is recorded like an untrusted one from then on, and bumps too.)
        if bumpNanos > 0, let c = confirmedAt, now >= c + bumpNanos, !skipCheck, !ownPending {
            // The next incarnation while running: recorded by the peers like a start, so a copy of
            // the directory taken before now is older than what they hold.
            own = OwnIncarnations(
                confirmed: current.number,
                starts: [Incarnation(number: current.number + 1, nonce: current.nonce)])
            welcomed = []
            confirmedOnce = false
            confirmedAt = nil
            lastHelloAt = nil
            ownPending = true
            out.persistOwn = own
            out.bumped = current
        }
        guard !ownPending else { return }
        guard lastHelloAt.map({ now >= $0 + helloIntervalNanos }) ?? true else { return }
        // Hellos go on after the decision too, until every node has recorded this start: the
        // more witnesses hold it, the smaller the residual risk.
        let missing = others.filter { !welcomed.contains($0) }
        guard !missing.isEmpty, !skipCheck else { return }
        lastHelloAt = now
        for n in missing {
            out.messages.append(
                (
                    n,
                    IncarnationMessage.hello(
                        stored: stored, earlier: earlier, current: current, trusted: trusted
                    )
                    .encode()
                ))
        }
    }

    /// An incarnation message from `peer`.
    public func receive(from peer: NodeID, _ bytes: [UInt8]) {
        guard let m = IncarnationMessage.decode(bytes) else {
            out.badMessages.append((peer, "malformed incarnation message"))
            return
        }
        switch m {
        case .hello(let theirStored, let theirEarlier, let theirs, let theirTrusted):
            if let s = seen[peer], s.nonce == theirs.nonce, s.number > theirs.number {
                // A delayed hello of the same run (a bump or renumber keeps the nonce; a start
                // draws a new one): we already recorded a later number of it. Not evidence.
                return
            }
            if !theirTrusted, let s = seen[peer], s != theirs, s.number >= theirs.number {
                // A start that rebuilds anyway is recorded only above our record (a lower one
                // would let an older directory of it pass later): it renumbers above `s`.
                out.messages.append((peer, IncarnationMessage.stale(seen: s).encode()))
                return
            }
            if theirTrusted, let s = seen[peer], s.number > theirStored, s != theirs,
                !theirEarlier.contains(s)
            {
                // Its directory is older than a start of it we acknowledged (a restored backup),
                // or than one it reached with another nonce since (a restored directory started
                // again, whether or not that start was confirmed).
                out.messages.append((peer, IncarnationMessage.stale(seen: s).encode()))
                return
            }
            if seen[peer] != theirs, (seen[peer]?.number ?? 0) <= theirs.number {
                seen[peer] = theirs
                out.persistSeen = seen
                // The welcome leaves only after the table is durable (`IncarnationReady`).
                out.afterPersist.append((peer, IncarnationMessage.welcome(current: theirs).encode()))
            } else {
                out.messages.append((peer, IncarnationMessage.welcome(current: theirs).encode()))
            }
        case .welcome(let c):
            guard c == current, others.contains(peer) else { return }
            welcomed.insert(peer)
            if !confirmedOnce {
                // A node recorded this start: later checks compare against it.
                confirmedOnce = true
                out.persistOwn = own.confirming(current)
            }
            if decision == .checking && welcomed.count == others.count {
                decision = .passed
                out.decided = .passed
            }
        case .stale(let s):
            guard others.contains(peer), !skipCheck else { return }
            // A record of this very run (a bump or renumber keeps the nonce), answered to a delayed
            // hello: not evidence that the directory is old.
            if s.nonce == current.nonce && s.number <= current.number { return }
            if trusted {
                // Whatever was decided: a node already voting learns late that its directory was
                // old (it welcomed by another node first); it must stop and rebuild all the same.
                decision = .stale(peer: peer, seen: s)
                out.decided = decision
                // From now on it rebuilds: recorded like any untrusted start, above the peer's
                // record. (Left at its old number, its next start would reach the peer's number
                // with another nonce and be found stale again, after a finished rebuild: the
                // restoring mix's seed 5151 rebuilt that node a second time beside another
                // node's rebuild, and the two wedged.)
                trusted = false
            }
            // Not checked, only recorded: take a number above the peer's record, durably, and
            // announce it again (the nodes that welcomed the old number are asked again).
            guard s.number >= current.number else { return }
            own = own.adding(Incarnation(number: s.number + 1, nonce: current.nonce))
            welcomed = []
            confirmedOnce = false
            lastHelloAt = nil
            ownPending = true
            out.persistOwn = own
        }
    }

    /// The shell made the last `persistOwn` durable: a new number may now be announced.
    public func ownPersisted() { ownPending = false }

    /// Takes what the shell must do now.
    public func ready() -> IncarnationReady {
        let r = out
        out = IncarnationReady()
        return r
    }
}

/// What the shell must do for the incarnation check, in this order: write `persistSeen` (the whole
/// table, `IncarnationRecords.seenKey`) and sync; only then send `afterPersist`; `messages` may go
/// at once; write the own record if `persistOwn`. Then act on `decided`.
public struct IncarnationReady: Sendable {
    public var persistSeen: [NodeID: Incarnation]?
    /// Write the own record (`IncarnationRecords.ownKey`), synced, then call
    /// `IncarnationGuard.ownPersisted()`: this start was welcomed for the first time (it is now the
    /// confirmed one), an untrusted start took a new number, or a running node bumped its
    /// incarnation (the guard announces a new number only after `ownPersisted`, so a peer never
    /// records a number the directory could forget).
    public var persistOwn: OwnIncarnations?
    /// The running node moved to this incarnation (a bump: for the log and `/status`).
    public var bumped: Incarnation?
    public var afterPersist: [(to: NodeID, bytes: [UInt8])] = []
    public var messages: [(to: NodeID, bytes: [UInt8])] = []
    public var decided: IncarnationGuard.Decision?
    public var badMessages: [(from: NodeID, why: String)] = []
    public var isEmpty: Bool {
        persistSeen == nil && persistOwn == nil && bumped == nil && afterPersist.isEmpty && messages.isEmpty
            && decided == nil && badMessages.isEmpty
    }
}
