import NIOConcurrencyHelpers
import NIOCore
import TernConsensus
import TernCore
import TernRESP

/// The connections of one node blocked on keys (BLPOP, XREAD BLOCK, ...). A blocked command is
/// woken when this node writes a record of one of its keys — its own writes, and, on a replica of
/// the key, a peer's accept or chosen value — and then runs its attempt again (a linearizable
/// read first), so a wake-up is only a hint and a missed one costs at most a poll interval.
///
/// Commands that take what they find (the pops, BLMOVE, XREADGROUP) are served in line, as Redis
/// serves its blocked clients: a change of a key wakes only the one that has waited longest on
/// it (its `ticket`, taken when it started waiting and kept across its attempts), which holds the
/// key's turn until its attempt ends; a change meanwhile is remembered and wakes the next in line
/// when the turn ends, and an answered command hands the turn on at once (its pop may have left
/// more). So on one node the longest-waiting client takes first. Between nodes there is no line:
/// clients blocked on different nodes race for the element (docs/SERVER.md, "Blocking
/// commands"); a waiter's poll timer lets it look only when nobody ahead in line waits on its
/// keys (`mayLook`). Readers that take nothing (XREAD) are all woken.
///
/// The line is per Paxos key (under hash-tag groups one line holds every member key of a tag):
/// a waiter woken by a change that finds nothing for it and parks hands the change on to the next
/// in line that waits on another member key (`BLPOP target{t}` woken by `RPUSH blist{t}` hands
/// it to `BLMOVE blist{t} …` behind it; both used to wait for ever).
public final class BlockedKeys: Sendable {
    struct Waiter {
        /// The Paxos keys its keys' writes land on, and the keys themselves.
        let keys: [[UInt8]]
        let members: [[UInt8]]
        /// The blocked command's place in line (nil: not in line, woken with every change).
        let ticket: UInt64?
        let wake: @Sendable () -> Void
    }
    struct State {
        var byKey: [[UInt8]: Set<UInt64>] = [:]
        var waiters: [UInt64: Waiter] = [:]
        var nextID: UInt64 = 0
        var nextTicket: UInt64 = 0
        /// Per key: the ticket of the command whose turn it is (and the keys it waits on), and
        /// whether the key changed since.
        var turns: [[UInt8]: (ticket: UInt64, changed: Bool, members: [[UInt8]])] = [:]
    }
    private let state = NIOLockedValueBox(State())
    /// A key's writes land on its Paxos key (its hash-tag group's, docs/DATA.md): wait on that.
    let layout: KeyLayout

    public init(layout: KeyLayout = .perKey) { self.layout = layout }

    /// A place in line for a command that starts waiting now.
    func ticket() -> UInt64 {
        state.withLockedValue { s in
            s.nextTicket += 1
            return s.nextTicket
        }
    }

    /// Registers `wake` (called at most once, from the thread that wrote) for `keys`; the id to
    /// remove it with. With a `ticket` the waiter takes its turn in line (see above).
    func add(_ keys: [[UInt8]], ticket: UInt64? = nil, wake: @escaping @Sendable () -> Void) -> UInt64 {
        let members = keys
        let keys = Array(Set(keys.map(layout.paxosKey))).sorted { $0.lexicographicallyPrecedes($1) }
        return state.withLockedValue { s in
            s.nextID += 1
            let id = s.nextID
            s.waiters[id] = Waiter(keys: keys, members: members, ticket: ticket, wake: wake)
            for k in keys { s.byKey[k, default: []].insert(id) }
            return id
        }
    }

    func remove(_ id: UInt64) {
        state.withLockedValue { s in _ = Self.take(id, &s) }
    }

    private static func take(_ id: UInt64, _ s: inout State) -> Waiter? {
        guard let w = s.waiters.removeValue(forKey: id) else { return nil }
        for k in w.keys {
            s.byKey[k]?.remove(id)
            if s.byKey[k]?.isEmpty == true { s.byKey[k] = nil }
        }
        return w
    }

    /// The waiters a change of `key` wakes (taken out): every one not in line, and the first in
    /// line unless the key's turn is someone's (then the change is remembered for the turn's end).
    private static func changed(_ key: [UInt8], _ s: inout State, into out: inout [Waiter]) {
        guard let ids = s.byKey[key] else { return }
        var first: (id: UInt64, ticket: UInt64)?
        for id in ids.sorted() {
            guard let w = s.waiters[id] else { continue }
            guard let t = w.ticket else {
                if let w = take(id, &s) { out.append(w) }
                continue
            }
            if first == nil || t < first!.ticket { first = (id, t) }
        }
        guard let first else { return }
        if s.turns[key] != nil {
            s.turns[key]?.changed = true
            return
        }
        giveTurn(first.id, first.ticket, &s, into: &out)
    }

    /// Wakes waiter `id` (taken out), which holds the turn of its keys until its attempt ends.
    private static func giveTurn(_ id: UInt64, _ ticket: UInt64, _ s: inout State, into out: inout [Waiter]) {
        guard let w = take(id, &s) else { return }
        for k in w.keys where s.turns[k] == nil { s.turns[k] = (ticket, false, w.members) }
        out.append(w)
    }

    /// The turn holder of `key` (waiting on `members`) found nothing and parked: the change that
    /// woke it goes to the first in line after it that waits on a key it does not (a waiter
    /// whose keys are all the holder's would find nothing either).
    private static func handOn(
        _ key: [UInt8], after ticket: UInt64, members: [[UInt8]], _ s: inout State, into out: inout [Waiter]
    ) {
        guard let ids = s.byKey[key] else { return }
        let mine = Set(members)
        var next: (id: UInt64, ticket: UInt64)?
        for id in ids {
            guard let w = s.waiters[id], let t = w.ticket, t > ticket, !Set(w.members).isSubset(of: mine)
            else {
                continue
            }
            if next == nil || t < next!.ticket { next = (id, t) }
        }
        guard let next else { return }
        giveTurn(next.id, next.ticket, &s, into: &out)
    }

    /// Whether the command holding `ticket` may look at `keys` on its poll: no other command holds
    /// the turn of one of them, and none waiting on one of them is ahead in line.
    func mayLook(_ ticket: UInt64, _ keys: [[UInt8]]) -> Bool {
        let members = Set(keys)
        let keys = keys.map(layout.paxosKey)
        return state.withLockedValue { s in
            for k in keys {
                if let turn = s.turns[k], turn.ticket != ticket { return false }
                for id in s.byKey[k] ?? [] {
                    // Ahead in line on one of the same keys (another member of a hash-tag group
                    // is another key: what it waits for is not what this one waits for).
                    if let w = s.waiters[id], let t = w.ticket, t < ticket,
                        !members.isDisjoint(with: w.members)
                    {
                        return false
                    }
                }
            }
            return true
        }
    }

    /// Wakes (and forgets) the waiters a change of `keys` wakes.
    public func wake(_ keys: [[UInt8]]) {
        let woken: [Waiter] = state.withLockedValue { s in
            guard !s.byKey.isEmpty else { return [] }
            var out: [Waiter] = []
            for k in keys { Self.changed(k, &s, into: &out) }
            return out
        }
        for w in woken { w.wake() }
    }

    /// The attempt of the command holding `ticket` ended: its turns end. When it `answered` (it
    /// may have taken something and left more, or failed without taking), the next in line is
    /// woken at once; when it parked, only if its keys changed during the turn.
    func turnEnded(_ ticket: UInt64, answered: Bool) {
        let woken: [Waiter] = state.withLockedValue { s in
            let mine = s.turns.filter { $0.value.ticket == ticket }
            guard !mine.isEmpty else { return [] }
            var out: [Waiter] = []
            for (k, turn) in mine.sorted(by: { $0.key.lexicographicallyPrecedes($1.key) }) {
                s.turns[k] = nil
                if answered || turn.changed {
                    Self.changed(k, &s, into: &out)
                } else {
                    Self.handOn(k, after: ticket, members: turn.members, &s, into: &out)
                }
            }
            return out
        }
        for w in woken { w.wake() }
    }

    /// Commands blocked now on this node.
    public var count: Int { state.withLockedValue { $0.waiters.count } }
}

/// A blocked command of one connection: its reply slot, its next attempt and its timers.
struct BlockedCommand {
    let seq: UInt64
    let version: RESPVersion
    let shardBound: NIOLoopBound<(RESPValue) -> Void>
    /// When the wait ends (nil: never).
    let deadline: NIODeadline?
    let timeout: RESPValue
    /// Its place in line (`BlockedKeys.ticket`), nil for a command that takes nothing (XREAD).
    let ticket: UInt64?
    /// Bumped per attempt: a wake-up or timer of an older attempt is ignored.
    var generation: UInt64 = 0
    /// The registration in `BlockedKeys` and the poll timer of the attempt now parked.
    var waiterID: UInt64?
    var timer: Scheduled<Void>?
    /// A key changed while the attempt ran: run it again at once rather than park.
    var changed = false
    /// The current poll interval (doubles while nothing changes, up to `pollMax`).
    var poll: TimeAmount = RESPConnectionHandler.pollMin
    /// The call a wake-up runs, once the command has parked: from then on a key of the wrong
    /// kind keeps it blocked (Redis answers WRONGTYPE only when the command is first called; a
    /// blocked BLPOP is not woken by a SET of its key: "LPUSH + DEL + SET should not awake").
    var parkedCall: BlockingCall?
}

extension RESPConnectionHandler {
    static let pollMin = TimeAmount.milliseconds(100)
    static let pollMax = TimeAmount.milliseconds(1000)

    /// Starts a blocking command: its first attempt runs now; commands read after it wait until
    /// it answers (`held`).
    func startBlocking(
        _ seq: UInt64, _ call: BlockingCall, _ version: RESPVersion,
        _ shardBound: NIOLoopBound<(RESPValue) -> Void>, context: ChannelHandlerContext
    ) {
        let deadline = call.timeoutMs > 0 ? NIODeadline.now() + .milliseconds(call.timeoutMs) : nil
        blocked = BlockedCommand(
            seq: seq, version: version, shardBound: shardBound, deadline: deadline, timeout: call.timeout,
            ticket: call.takes ? node.blockedKeys.ticket() : nil)
        shard.blocked += 1
        attempt(call, context: context)
    }

    /// Runs one attempt of the blocked command; listens for changes of its keys while it runs, so
    /// a write that lands between the attempt's read and the parking is not missed.
    /// `woken`: this is the parked call run again (its first round, the reads): a key of another
    /// kind found there keeps the command blocked, while a later round's WRONGTYPE (BRPOPLPUSH's
    /// destination) is answered, as Redis serves it.
    func attempt(_ call: BlockingCall, woken: Bool = false, context: ChannelHandlerContext) {
        guard var b = blocked, !evicted else { return }
        b.generation += 1
        b.changed = false
        let generation = b.generation
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        let loop = context.eventLoop
        // An attempt that follows another at once (`.again`, a change seen) replaces its waiter.
        if let old = b.waiterID { node.blockedKeys.remove(old) }
        b.waiterID = node.blockedKeys.add(call.keys, ticket: b.ticket) {
            loop.execute {
                let (handler, _) = loopBound.value
                guard handler.blocked?.generation == generation else { return }
                handler.blocked?.waiterID = nil
                handler.blocked?.changed = true
                // Parked meanwhile (the notice comes through the loop, so it may come after the
                // attempt's answer): run the call it parked with, not this attempt's. Running this
                // one again made an XREADGROUP whose first take met a key turned into another kind
                // take again and again, each take a write that woke it once more: the key was
                // written without end and no read of it was served.
                if let b = handler.blocked, b.timer != nil {
                    handler.resume(b.parkedCall ?? call, generation, context: loopBound.value.1)
                }
            }
        }
        blocked = b
        let futures = call.requests.map { execute($0.key, $0.request, context: context) }
        EventLoopFuture.whenAllComplete(futures, on: loop).whenSuccess { results in
            let (handler, context) = loopBound.value
            guard let b = handler.blocked, b.generation == generation else { return }
            let replies = results.map { r -> NodeReply in
                switch r {
                case .success(let v): v
                case .failure: .unavailable("node stopped")
                }
            }
            switch call.step(replies) {
            // Only when every key read is one the command waits on (a pop's keys, a move's
            // source): BLMOVE's first round also reads the destination, whose kind is an error.
            case .answer(CommandProcessor.wrongType)
            where woken && b.parkedCall != nil && call.requests.allSatisfy({ call.keys.contains($0.key) }):
                handler.park(b.parkedCall!, context: context)
            case .answer(let v): handler.finishBlocking(v, context: context)
            case .again(let next): handler.attempt(next, context: context)
            case .wait(let next): handler.park(next, context: context)
            }
        }
    }

    /// Nothing to take: wait for a change of the keys, the poll timer or the deadline.
    func park(_ call: BlockingCall, context: ChannelHandlerContext) {
        guard var b = blocked else { return }
        let now = NIODeadline.now()
        if let d = b.deadline, now >= d {
            return finishBlocking(b.timeout, context: context)
        }
        if b.changed {
            // Something was written while the attempt ran: look again now.
            b.poll = Self.pollMin
            b.parkedCall = call
            blocked = b
            return attempt(call, woken: true, context: context)
        }
        b.parkedCall = call
        armPoll(&b, call, now: now, context: context)
        b.poll = .nanoseconds(min(b.poll.nanoseconds * 2, Self.pollMax.nanoseconds))
        blocked = b
        // Parked (still registered): the next in line may look if the keys changed meanwhile.
        if let t = b.ticket { node.blockedKeys.turnEnded(t, answered: false) }
    }

    /// The poll timer: look again, unless a command ahead in line on one of the keys is waiting
    /// or holds the turn (then poll later: it is woken first, so a poll cannot take out of turn).
    func pollFired(_ call: BlockingCall, _ generation: UInt64, context: ChannelHandlerContext) {
        guard var b = blocked, b.generation == generation else { return }
        let now = NIODeadline.now()
        let expired = b.deadline.map { now >= $0 } ?? false
        if !expired, let t = b.ticket, !node.blockedKeys.mayLook(t, call.keys) {
            armPoll(&b, call, now: now, context: context)
            blocked = b
            return
        }
        resume(call, generation, context: context)
    }

    /// Sets `b`'s poll timer: the current interval, or less if the deadline comes first.
    private func armPoll(
        _ b: inout BlockedCommand, _ call: BlockingCall, now: NIODeadline, context: ChannelHandlerContext
    ) {
        var wait = b.poll
        if let d = b.deadline, d - now < wait { wait = d - now }
        let generation = b.generation
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        b.timer = context.eventLoop.scheduleTask(in: wait) {
            let (handler, context) = loopBound.value
            handler.pollFired(call, generation, context: context)
        }
    }

    /// A wake-up or the timer: the deadline answers the timeout, anything else tries again.
    func resume(_ call: BlockingCall, _ generation: UInt64, context: ChannelHandlerContext) {
        guard var b = blocked, b.generation == generation else { return }
        b.timer?.cancel()
        b.timer = nil
        if let id = b.waiterID { node.blockedKeys.remove(id) }
        b.waiterID = nil
        blocked = b
        if let d = b.deadline, NIODeadline.now() >= d { return finishBlocking(b.timeout, context: context) }
        attempt(call, woken: true, context: context)
    }

    /// Answers the blocked command and runs the commands that waited for it.
    func finishBlocking(_ value: RESPValue, context: ChannelHandlerContext) {
        guard let b = blocked else { return }
        cancelBlocking()
        b.shardBound.value(value)
        fill(b.seq, value, b.version, context: context)
        while blocked == nil, !held.isEmpty, !evicted {
            handle(held.removeFirst(), context: context)
        }
        if !evicted { adjustReading(context: context, output: outputBytes(context: context)) }
    }

    /// Forgets the blocked command's registration and timer (answered, unblocked, or closed).
    func cancelBlocking() {
        guard let b = blocked else { return }
        b.timer?.cancel()
        if let id = b.waiterID { node.blockedKeys.remove(id) }
        shard.blocked -= 1
        blocked = nil
        // Answered, unblocked or closed: the next in line looks now.
        if let t = b.ticket { node.blockedKeys.turnEnded(t, answered: true) }
    }

    /// CLIENT UNBLOCK: answers the blocked command with its timeout reply, or with `-UNBLOCKED`.
    func unblock(error: Bool, context: ChannelHandlerContext) -> Bool {
        guard let b = blocked else { return false }
        finishBlocking(
            error ? .error("UNBLOCKED client unblocked via CLIENT UNBLOCK") : b.timeout, context: context)
        return true
    }
}
