import NIOConcurrencyHelpers
import TernRESP

/// A client connection's way out for frames nobody asked for: RESP3 pushes and RESP2 pub/sub
/// messages (sync notices, docs/SYNC.md). Handed to a `CommandPlan.connection` plan.
///
/// A pushed frame takes the connection's next reply slot: it goes out after the replies owed to
/// the commands read before it, never in the middle of one.
public final class ConnectionOutlet: Sendable {
    static let ids = NIOLockedValueBox<UInt64>(0)

    /// Unique in this process.
    public let id: UInt64
    let deliver: @Sendable (RESPValue) -> Void
    let state = NIOLockedValueBox<(closed: Bool, onClose: [@Sendable () -> Void])>((false, []))

    /// An outlet that hands pushed frames to `deliver` (the front end's; tests use their own).
    public init(deliver: @escaping @Sendable (RESPValue) -> Void) {
        id = Self.ids.withLockedValue {
            $0 += 1
            return $0
        }
        self.deliver = deliver
    }

    /// Sends `value` to the client (any thread; dropped once the connection closed).
    public func push(_ value: RESPValue) {
        guard !state.withLockedValue({ $0.closed }) else { return }
        deliver(value)
    }

    /// Runs `body` once when the connection closes (at once if it already has).
    public func whenClosed(_ body: @escaping @Sendable () -> Void) {
        let closed = state.withLockedValue { s -> Bool in
            if !s.closed { s.onClose.append(body) }
            return s.closed
        }
        if closed { body() }
    }

    /// The connection closed: run the close handlers.
    func close() {
        let handlers = state.withLockedValue { s -> [@Sendable () -> Void] in
            guard !s.closed else { return [] }
            s.closed = true
            defer { s.onClose = [] }
            return s.onClose
        }
        for h in handlers { h() }
    }
}
