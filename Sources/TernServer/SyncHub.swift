import NIOConcurrencyHelpers
import NIOCore
import TernRESP

/// One node's sync notices: connections subscribed to uids, and SYNC … BLOCK calls waiting for
/// an inbox to grow. A notice is a hint ("uid's inbox reached seq"); the client then SYNCs.
///
/// Thread-safe (one lock); pushes and wake-ups run outside it.
public final class SyncHub: Sendable {
    struct Subscription {
        var outlet: ConnectionOutlet
        /// `SYNC.SUBSCRIBE uid` (RESP3 push `sync <uid> <seq>`). (`SUBSCRIBE sync:<uid>` is a pub/sub
        /// channel: `PubSubHub`.)
        var push = false
        var isEmpty: Bool { !push }
    }
    struct State {
        var subscriptions: [UInt64: [UInt64: Subscription]] = [:]
        /// Outlet id → uids it subscribed to (for the clean-up when it closes).
        var byOutlet: [UInt64: Set<UInt64>] = [:]
        var waiters: [UInt64: [ObjectIdentifier: SyncWaiter]] = [:]
    }
    let state = NIOLockedValueBox(State())
    let eventLoop: any EventLoop

    /// - Parameter eventLoop: where waits time out.
    public init(eventLoop: any EventLoop) { self.eventLoop = eventLoop }

    /// How a subscription was made, which decides the shape of its notices.
    public enum Style: Sendable { case push }

    /// Subscribes `outlet` to `uid`'s notices; the number of uids it now has in `style`.
    @discardableResult
    public func subscribe(_ outlet: ConnectionOutlet, uid: UInt64, style: Style) -> Int {
        let first = state.withLockedValue { s -> Bool in
            var sub = s.subscriptions[uid, default: [:]][outlet.id] ?? Subscription(outlet: outlet)
            switch style {
            case .push: sub.push = true
            }
            s.subscriptions[uid, default: [:]][outlet.id] = sub
            let isNew = s.byOutlet[outlet.id] == nil
            s.byOutlet[outlet.id, default: []].insert(uid)
            return isNew
        }
        if first { outlet.whenClosed { [self] in self.removeAll(outlet.id) } }
        return count(outlet, style: style)
    }

    /// Removes `outlet`'s subscription to `uid` in `style`; the number of uids it still has in it.
    @discardableResult
    public func unsubscribe(_ outlet: ConnectionOutlet, uid: UInt64, style: Style) -> Int {
        state.withLockedValue { s in
            guard var sub = s.subscriptions[uid]?[outlet.id] else { return }
            switch style {
            case .push: sub.push = false
            }
            if sub.isEmpty {
                s.subscriptions[uid]![outlet.id] = nil
                if s.subscriptions[uid]!.isEmpty { s.subscriptions[uid] = nil }
                s.byOutlet[outlet.id]?.remove(uid)
            } else {
                s.subscriptions[uid]![outlet.id] = sub
            }
        }
        return count(outlet, style: style)
    }

    /// The uids `outlet` is subscribed to in `style`, ascending.
    public func uids(_ outlet: ConnectionOutlet, style: Style) -> [UInt64] {
        state.withLockedValue { s in
            (s.byOutlet[outlet.id] ?? []).filter { uid in
                guard let sub = s.subscriptions[uid]?[outlet.id] else { return false }
                return sub.push
            }.sorted()
        }
    }

    func count(_ outlet: ConnectionOutlet, style: Style) -> Int { uids(outlet, style: style).count }

    func removeAll(_ outletID: UInt64) {
        state.withLockedValue { s in
            for uid in s.byOutlet.removeValue(forKey: outletID) ?? [] {
                s.subscriptions[uid]?[outletID] = nil
                if s.subscriptions[uid]?.isEmpty == true { s.subscriptions[uid] = nil }
            }
        }
    }

    /// Subscribers (all styles) and waiters now, for tests and status.
    public var counts: (subscriptions: Int, waiters: Int) {
        state.withLockedValue { s in
            (s.subscriptions.values.reduce(0) { $0 + $1.count }, s.waiters.values.reduce(0) { $0 + $1.count })
        }
    }

    /// Arms a wait for `uid`'s next notice. Arm BEFORE reading the inbox, so a message appended
    /// between the read and the wait still wakes it.
    public func arm(uid: UInt64) -> SyncWaiter {
        let w = SyncWaiter(promise: eventLoop.makePromise(of: Void.self))
        state.withLockedValue { $0.waiters[uid, default: [:]][ObjectIdentifier(w)] = w }
        w.hub = (self, uid)
        return w
    }

    func disarm(_ w: SyncWaiter, uid: UInt64) {
        state.withLockedValue { s in
            s.waiters[uid]?[ObjectIdentifier(w)] = nil
            if s.waiters[uid]?.isEmpty == true { s.waiters[uid] = nil }
        }
    }

    /// `uid`'s inbox reached `seq`: wake its waiters, notify its subscribers (this node only).
    public func notify(uid: UInt64, seq: UInt64) {
        let (subs, waiters) = state.withLockedValue { s in
            (
                Array((s.subscriptions[uid] ?? [:]).values),
                Array((s.waiters.removeValue(forKey: uid) ?? [:]).values)
            )
        }
        for w in waiters { w.fire() }
        let uidText = Array(String(uid).utf8)
        for sub in subs {
            if sub.push {
                sub.outlet.push(
                    .push([.bulkString(Array("sync".utf8)), .bulkString(uidText), .integer(Int64(seq))]))
            }
        }
    }
}

/// One armed wait of `SyncHub` (fires once: at a notice, or at its deadline).
public final class SyncWaiter: @unchecked Sendable {
    // @unchecked Sendable: `hub` is set once by `arm` before the waiter is shared; the promise
    // is thread-safe and completes once (`fired` guards it).
    let promise: EventLoopPromise<Void>
    let fired = NIOLockedValueBox(false)
    var hub: (SyncHub, UInt64)?

    init(promise: EventLoopPromise<Void>) { self.promise = promise }

    func fire() {
        let first = fired.withLockedValue { f -> Bool in
            defer { f = true }
            return !f
        }
        if first { promise.succeed(()) }
    }

    /// Waits for a notice or until `deadline`; then disarms.
    public func wait(until deadline: NIODeadline) async {
        let timer = promise.futureResult.eventLoop.scheduleTask(deadline: deadline) { self.fire() }
        try? await promise.futureResult.get()
        timer.cancel()
        cancel()
    }

    /// Disarms (the wait is no longer needed).
    public func cancel() {
        if let (hub, uid) = hub { hub.disarm(self, uid: uid) }
        fire()
    }
}
