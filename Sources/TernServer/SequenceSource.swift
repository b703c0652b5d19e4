import TernConsensus

/// Where sync inboxes get a uid's next sequence numbers: the sequence allocator (`SEQ.NEXT`).
///
/// Shared by the sequence service (which implements it) and the sync service (which uses it for
/// `MSG.SEND`), so neither depends on the other's internals.
public protocol SequenceSource: Sendable {
    /// Allocates `count` (≥ 1) consecutive sequence numbers for `uid`, each strictly greater than
    /// every number handed out for `uid` before (gaps allowed).
    func nextSequence(uid: UInt64, count: UInt32) async -> SequenceAllocation
}

/// The outcome of `SequenceSource.nextSequence`.
public enum SequenceAllocation: Sendable, Hashable {
    /// `first...last` were allocated (`last - first + 1 == count`).
    case allocated(first: UInt64, last: UInt64)
    /// Nothing was allocated; the reply to give the client (for example NOQUORUM).
    case failed(NodeReply)
}
