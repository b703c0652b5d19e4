import Atomics
import TernCore

/// A snapshot of a transport's counters (since `start()`) and of its peers.
public struct TransportMetrics: Sendable, Hashable {
    /// Messages handed to sockets (a message in a delayed batch counts when it leaves).
    public var messagesSent = 0
    /// Socket writes (flushes). `messagesSent / writes` is the packet-merging factor.
    public var writes = 0
    /// Batch frames sent (a batch larger than `maxFrameBytes` takes several frames in one write).
    public var framesSent = 0
    /// Bytes of batch frames sent (handshakes and pings not included).
    public var bytesSent = 0
    /// Messages received in batch frames from authenticated peers.
    public var messagesReceived = 0
    /// Batch frames received.
    public var framesReceived = 0
    /// Calls to `onBatch`: frames read together from one socket read are delivered as one batch.
    public var batchesDelivered = 0
    /// Every byte read from peer sockets.
    public var bytesReceived = 0
    /// Messages dropped because the peer's send queue was full, the message could never fit a
    /// frame, the peer is unknown, or the transport is shut down.
    public var dropped = 0
    /// Messages written to a connection that closed before the kernel took them (best-effort loss).
    public var lostInFlight = 0
    /// Messages discarded by the fault switch, in either direction.
    public var faultDropped = 0
    /// Authenticated connections opened, counting the first one to each peer.
    public var connectionsEstablished = 0
    /// Authenticated connections to a peer that had been connected before.
    public var reconnects = 0
    /// Dial attempts that did not reach a TCP connection.
    public var connectFailures = 0
    /// Handshakes that failed on either side (refused, bad MAC, replay, wrong peer, timeout).
    public var authFailures = 0
    /// Peer connections refused by TLS (mutual TLS on: a certificate from another CA, none, or
    /// a peer that does not speak TLS).
    public var tlsFailures = 0
    /// Connections closed while still in their handshake to make room for newer ones (a flood
    /// of silent connections on the peer port; `PeerTransport.register`).
    public var handshakesEvicted = 0
    /// Malformed, oversized or truncated frames received (each closed its connection).
    public var framingErrors = 0
    /// Connections closed because nothing arrived for `idleTimeout`.
    public var idleTimeouts = 0
    /// `messagesPerWrite[i]` = writes that carried 2^i ... 2^(i+1)-1 messages.
    public var messagesPerWrite: [Int] = Array(repeating: 0, count: Counters.histogramBuckets)
    /// The most messages one write carried.
    public var messagesPerWriteMax = 0
    /// The most bytes one write carried (frames included).
    public var bytesPerWriteMax = 0
    /// Per peer: connection and queue state.
    public var peers: [NodeID: PeerStatus] = [:]

    public init() {}

    /// Average messages per socket write; 0 before the first write.
    public var messagesPerWriteMean: Double { writes == 0 ? 0 : Double(messagesSent) / Double(writes) }
}

/// One peer, as `metrics()` sees it.
public struct PeerStatus: Sendable, Hashable {
    public var address: PeerAddress?
    /// An authenticated connection is open.
    public var connected: Bool
    /// This node dials the peer (lower id dials), rather than waiting for it.
    public var dials: Bool
    public var queuedMessages: Int
    public var queuedBytes: Int
    public var outgoingFault: PeerFault
    public var incomingFault: PeerFault
}

/// Lock-free counters shared by the transport's connections.
final class Counters: Sendable {
    static let histogramBuckets = 24

    let messagesSent = ManagedAtomic(0)
    let writes = ManagedAtomic(0)
    let framesSent = ManagedAtomic(0)
    let bytesSent = ManagedAtomic(0)
    let messagesReceived = ManagedAtomic(0)
    let framesReceived = ManagedAtomic(0)
    let batchesDelivered = ManagedAtomic(0)
    let bytesReceived = ManagedAtomic(0)
    let dropped = ManagedAtomic(0)
    let lostInFlight = ManagedAtomic(0)
    let faultDropped = ManagedAtomic(0)
    let connectionsEstablished = ManagedAtomic(0)
    let reconnects = ManagedAtomic(0)
    let connectFailures = ManagedAtomic(0)
    let authFailures = ManagedAtomic(0)
    let tlsFailures = ManagedAtomic(0)
    let framingErrors = ManagedAtomic(0)
    let handshakesEvicted = ManagedAtomic(0)
    let idleTimeouts = ManagedAtomic(0)
    let messagesPerWriteMax = ManagedAtomic(0)
    let bytesPerWriteMax = ManagedAtomic(0)
    let messagesPerWrite: [ManagedAtomic<Int>] = (0..<histogramBuckets).map { _ in ManagedAtomic(0) }

    /// Records one socket write carrying `messages` messages in `frames` frames.
    func recordWrite(messages: Int, frames: Int, bytes: Int) {
        writes.wrappingIncrement(ordering: .relaxed)
        messagesSent.wrappingIncrement(by: messages, ordering: .relaxed)
        framesSent.wrappingIncrement(by: frames, ordering: .relaxed)
        bytesSent.wrappingIncrement(by: bytes, ordering: .relaxed)
        let bucket = min(Self.histogramBuckets - 1, Int.bitWidth - 1 - max(1, messages).leadingZeroBitCount)
        messagesPerWrite[bucket].wrappingIncrement(ordering: .relaxed)
        Self.raise(bytesPerWriteMax, to: bytes)
        Self.raise(messagesPerWriteMax, to: messages)
    }

    /// Sets `atomic` to `value` if that is larger (lock-free; concurrent raises keep the largest).
    static func raise(_ atomic: ManagedAtomic<Int>, to value: Int) {
        var seen = atomic.load(ordering: .relaxed)
        while value > seen {
            let (exchanged, original) = atomic.compareExchange(
                expected: seen, desired: value, ordering: .relaxed)
            if exchanged { break }
            seen = original
        }
    }

    func snapshot() -> TransportMetrics {
        var m = TransportMetrics()
        m.messagesSent = messagesSent.load(ordering: .relaxed)
        m.writes = writes.load(ordering: .relaxed)
        m.framesSent = framesSent.load(ordering: .relaxed)
        m.bytesSent = bytesSent.load(ordering: .relaxed)
        m.messagesReceived = messagesReceived.load(ordering: .relaxed)
        m.framesReceived = framesReceived.load(ordering: .relaxed)
        m.batchesDelivered = batchesDelivered.load(ordering: .relaxed)
        m.bytesReceived = bytesReceived.load(ordering: .relaxed)
        m.dropped = dropped.load(ordering: .relaxed)
        m.lostInFlight = lostInFlight.load(ordering: .relaxed)
        m.faultDropped = faultDropped.load(ordering: .relaxed)
        m.connectionsEstablished = connectionsEstablished.load(ordering: .relaxed)
        m.reconnects = reconnects.load(ordering: .relaxed)
        m.connectFailures = connectFailures.load(ordering: .relaxed)
        m.authFailures = authFailures.load(ordering: .relaxed)
        m.tlsFailures = tlsFailures.load(ordering: .relaxed)
        m.handshakesEvicted = handshakesEvicted.load(ordering: .relaxed)
        m.framingErrors = framingErrors.load(ordering: .relaxed)
        m.idleTimeouts = idleTimeouts.load(ordering: .relaxed)
        m.messagesPerWriteMax = messagesPerWriteMax.load(ordering: .relaxed)
        m.bytesPerWriteMax = bytesPerWriteMax.load(ordering: .relaxed)
        m.messagesPerWrite = messagesPerWrite.map { $0.load(ordering: .relaxed) }
        return m
    }
}
