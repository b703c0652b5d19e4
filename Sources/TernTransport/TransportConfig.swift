import NIOCore
import TernCore

/// Where a node listens for its peers.
public struct PeerAddress: Sendable, Hashable, CustomStringConvertible {
    public var host: String
    /// TCP port; 0 means "not known yet" in a peer list, and "pick a free one" for `listen`.
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}

/// Everything a `PeerTransport` needs to know; checked by `PeerTransport.start()`.
public struct TransportConfig: Sendable {
    /// Must be equal on every node: a node of another cluster is refused.
    public var clusterName: String
    /// This node's id.
    public var me: NodeID
    /// Where to listen; port 0 picks a free port (tests), read it back from `boundPort`.
    public var listen: PeerAddress
    /// Every other node. An entry for `me` is ignored. Port 0 = address not known yet.
    public var peers: [NodeID: PeerAddress]
    /// The cluster secret that both sides of a connection prove they know (at least 16 bytes).
    public var secret: [UInt8]
    /// Largest frame body accepted or sent; a batch above it is split into several frames.
    public var maxFrameBytes: Int = 16 << 20
    /// First re-dial delay after a failed attempt; doubles up to `reconnectBackoffMax`.
    public var reconnectBackoffMin: TimeAmount = .milliseconds(20)
    /// Cap of the re-dial delay.
    public var reconnectBackoffMax: TimeAmount = .seconds(1)
    /// Most message bytes handed to one connection's socket in one write (at least one message).
    /// A longer queue leaves in several writes, with other event-loop work (heartbeats) between.
    public var writeBytesMax: Int = 1 << 20
    /// Bytes of messages waiting for one peer (not yet handed to the socket); a message that would
    /// pass it is dropped and counted. Paxos retransmits, so dropping beats unbounded memory.
    public var sendQueueBytesMax: Int
    /// An idle connection sends a ping this often.
    public var heartbeatInterval: TimeAmount = .milliseconds(200)
    /// A connection that received nothing (not even a ping) for this long is closed and re-dialled:
    /// TCP alone takes minutes to notice a peer whose machine vanished.
    public var idleTimeout: TimeAmount = .seconds(2)
    /// A connection must finish its handshake within this, or it is closed.
    public var handshakeTimeout: TimeAmount = .seconds(2)
    /// TCP connect timeout of one dial attempt.
    public var connectTimeout: TimeAmount = .seconds(1)
    /// Mutual TLS under the handshake (docs/SECURITY.md); nil: plain TCP.
    public var tls: PeerTLS?

    public init(
        clusterName: String, me: NodeID, listen: PeerAddress, peers: [NodeID: PeerAddress], secret: [UInt8],
        maxFrameBytes: Int = 16 << 20, reconnectBackoffMin: TimeAmount = .milliseconds(20),
        reconnectBackoffMax: TimeAmount = .seconds(1), sendQueueBytesMax: Int = 64 << 20
    ) {
        self.clusterName = clusterName
        self.me = me
        self.listen = listen
        self.peers = peers
        self.secret = secret
        self.maxFrameBytes = maxFrameBytes
        self.reconnectBackoffMin = reconnectBackoffMin
        self.reconnectBackoffMax = reconnectBackoffMax
        self.sendQueueBytesMax = sendQueueBytesMax
    }

    /// Every reason this configuration cannot work, as sentences; empty if it is usable.
    public func problems() -> [String] {
        var out: [String] = []
        let nameBytes = clusterName.utf8.count
        if nameBytes == 0 || nameBytes > FrameCodec.clusterNameBytesMax {
            out.append(
                "clusterName must be 1...\(FrameCodec.clusterNameBytesMax) UTF-8 bytes (got \(nameBytes))")
        }
        if secret.count < 16 { out.append("secret must be at least 16 bytes (got \(secret.count))") }
        if !(0...65535).contains(listen.port) { out.append("listen port \(listen.port) is not a TCP port") }
        for (id, address) in peers where id != me && !(0...65535).contains(address.port) {
            out.append("peer \(id)'s port \(address.port) is not a TCP port")
        }
        if maxFrameBytes < 1024 || maxFrameBytes > Int(UInt32.max) {
            out.append("maxFrameBytes must be in 1024...\(UInt32.max) (got \(maxFrameBytes))")
        }
        if writeBytesMax < 1 { out.append("writeBytesMax must be positive (got \(writeBytesMax))") }
        if sendQueueBytesMax < 1 {
            out.append("sendQueueBytesMax must be positive (got \(sendQueueBytesMax))")
        }
        if reconnectBackoffMin.nanoseconds <= 0 || reconnectBackoffMax < reconnectBackoffMin {
            out.append("need 0 < reconnectBackoffMin <= reconnectBackoffMax")
        }
        if heartbeatInterval.nanoseconds <= 0 || idleTimeout <= heartbeatInterval {
            out.append("need 0 < heartbeatInterval < idleTimeout")
        }
        if handshakeTimeout.nanoseconds <= 0 || connectTimeout.nanoseconds <= 0 {
            out.append("handshakeTimeout and connectTimeout must be positive")
        }
        return out
    }
}

/// A fault injected by hand (tests, the admin command) into the traffic with one peer.
public enum PeerFault: Sendable, Hashable, CustomStringConvertible {
    /// Traffic flows normally.
    case none
    /// Messages are discarded (counted in `faultDropped`). Heartbeats still flow, so the
    /// connection stays up and recovery is instant when the fault is lifted.
    case drop
    /// Messages are held back this long, order kept.
    case delay(TimeAmount)

    public var description: String {
        switch self {
        case .none: "none"
        case .drop: "drop"
        case .delay(let t): "delay \(Double(t.nanoseconds) / 1e6) ms"
        }
    }
}

/// Which traffic with a peer a fault applies to.
public enum FaultDirection: Sendable, Hashable {
    /// Messages this node sends to the peer.
    case outgoing
    /// Messages this node receives from the peer (before they reach `onBatch`).
    case incoming
    /// Both.
    case both
}

/// Why `PeerTransport.start()` failed.
public struct TransportError: Error, Hashable, CustomStringConvertible {
    public enum Code: Sendable, Hashable {
        case invalidConfig
        case alreadyStarted
        case bindFailed
    }

    public var code: Code
    public var detail: String

    public init(_ code: Code, _ detail: String) {
        self.code = code
        self.detail = detail
    }

    public var description: String { "transport: \(detail)" }
}
