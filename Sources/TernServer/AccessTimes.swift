import NIOConcurrencyHelpers

/// OBJECT IDLETIME: when this node's clients last used each key.
///
/// Redis keeps a 24-bit LRU clock in every object of its one process. A Tern key is served by any
/// node, so this is a **per-node** figure: the time since a command received by *this* node named
/// the key (a client of another node touches only that node's figure). Commands that Redis looks
/// keys up with `LOOKUP_NOTOUCH` (TYPE, TTL, PTTL, EXPIRETIME, PEXPIRETIME, EXISTS, OBJECT) do not
/// count; TOUCH does. The map is bounded: past `capacity` keys it is emptied and the time noted,
/// and a key it does not hold reads as idle since then (or since the node started): for a key the
/// map forgot, the idle time is counted from when it was forgotten, so it can read shorter than it
/// is (nothing in Tern acts on it: Tern never evicts).
public final class AccessTimes: Sendable {
    struct State {
        var last: [[UInt8]: Int64] = [:]
        /// When the map last started empty (the node's start, or the last overflow).
        var since: Int64
    }
    let state: NIOLockedValueBox<State>
    let capacity: Int

    public init(nowMs: Int64, capacity: Int = 200_000) {
        state = NIOLockedValueBox(State(since: nowMs))
        self.capacity = max(1, capacity)
    }

    /// Commands whose key lookups do not change a key's access time (Redis's LOOKUP_NOTOUCH).
    static let noTouch: Set<String> = [
        "type", "ttl", "pttl", "expiretime", "pexpiretime", "exists", "object",
    ]

    /// Notes that `keys` were used at `nowMs`.
    public func touch(_ keys: [[UInt8]], nowMs: Int64) {
        guard !keys.isEmpty else { return }
        state.withLockedValue { s in
            if s.last.count + keys.count > capacity {
                s.last.removeAll(keepingCapacity: true)
                s.since = nowMs
            }
            for k in keys { s.last[k] = nowMs }
        }
    }

    /// Whole seconds since `key` was last used through this node.
    public func idleSeconds(_ key: [UInt8], nowMs: Int64) -> Int64 {
        let at = state.withLockedValue { $0.last[key] ?? $0.since }
        return max(0, nowMs - at) / 1000
    }
}
