import Crypto
import TernCore

/// Mutual HMAC challenge-response that opens every peer connection.
///
/// ```
///  dialer D (lower id)                                   listener L (higher id)
///     | hello(cluster, from D, to L, nonceD) ------------------> |  cluster ok? to == L? D known, D < L?
///     | <------------ challenge(from L, to D, nonceL, macL)      |  macL = HMAC(secret, "L" | ctx)
///  macL ok? from == L?                                           |
///     | response(macD) ---------------------------------------> |  macD = HMAC(secret, "D" | ctx) ok?
///     | batch, batch, ...  (both ways)                          |
///  ctx = "tern-peer-auth-v1" | cluster name | D | L | nonceD | nonceL
/// ```
/// Each side proves it knows the cluster secret by MACing the other side's fresh nonce, so a
/// recorded handshake cannot be replayed; the MAC covers the cluster name and both node ids, so a
/// proof made for one pair of ids cannot be reused under another, and the role byte stops a node's
/// own proof from being reflected back to it. A wrong cluster name, unknown id or wrong direction
/// is refused before any MAC is computed, with a `reject` frame that says why.
///
/// Deterministic given its nonces; the connection handler feeds it frames and performs its actions.
struct Handshake {
    enum Role {
        /// We dialled `peer`, whom we expect to answer.
        case dialer(peer: NodeID)
        /// We accepted a connection; `accepts` says whether a claimed dialer id is acceptable.
        case listener
    }

    enum State {
        case start
        case awaitingChallenge(nonce: [UInt8])
        case awaitingHello
        case awaitingResponse(dialer: NodeID, dialerNonce: [UInt8], listenerNonce: [UInt8])
        case established(NodeID)
        case failed
    }

    /// What the handler must do after a step.
    enum Action: Equatable {
        case send(Frame)
        /// Send the frame (if any), then treat the connection as authenticated with `peer`.
        case establish(peer: NodeID, send: Frame?)
        /// Send the frame (if any), count an auth failure, close the connection.
        case fail(HandshakeFailure, send: Frame?)
    }

    let clusterName: String
    let me: NodeID
    let key: SymmetricKey
    let role: Role
    /// For a listener: why the claimed dialer id is refused, or nil if it may dial us.
    let checkDialer: (NodeID) -> RejectReason?
    private(set) var state: State

    init(
        clusterName: String, me: NodeID, secret: [UInt8], role: Role,
        checkDialer: @escaping (NodeID) -> RejectReason? = { _ in nil }
    ) {
        self.clusterName = clusterName
        self.me = me
        self.key = SymmetricKey(data: secret)
        self.role = role
        self.checkDialer = checkDialer
        switch role {
        case .dialer: state = .start
        case .listener: state = .awaitingHello
        }
    }

    var peer: NodeID? {
        if case .established(let p) = state { return p }
        return nil
    }

    /// The dialer's first frame. `nonce` must be fresh random bytes (`Handshake.freshNonce()`).
    mutating func start(nonce: [UInt8]) -> Frame {
        guard case .dialer(let peer) = role, case .start = state else {
            preconditionFailure("Handshake.start is for a dialer that has not started")
        }
        state = .awaitingChallenge(nonce: nonce)
        return .hello(.init(clusterName: clusterName, from: me, to: peer, nonce: nonce))
    }

    /// Feeds one received frame. `nonce` is used only by a listener answering a hello: fresh bytes.
    mutating func receive(_ frame: Frame, nonce: @autoclosure () -> [UInt8]) -> Action {
        switch (state, frame) {
        case (_, .reject(let reason)):
            state = .failed
            return .fail(.rejectedByPeer(reason), send: nil)

        case (.awaitingHello, .hello(let h)):
            let refusal: RejectReason? =
                if h.clusterName != clusterName {
                    .wrongCluster
                } else if h.to != me {
                    .notForMe
                } else {
                    checkDialer(h.from)
                }
            if let refusal {
                state = .failed
                return .fail(
                    .refused(refusal, claimed: h.from, detail: describe(refusal, h)), send: .reject(refusal))
            }
            let listenerNonce = nonce()
            state = .awaitingResponse(dialer: h.from, dialerNonce: h.nonce, listenerNonce: listenerNonce)
            let mac = Self.mac(
                key, role: .listener, cluster: clusterName, dialer: h.from, listener: me,
                dialerNonce: h.nonce, listenerNonce: listenerNonce)
            return .send(.challenge(.init(from: me, to: h.from, nonce: listenerNonce, mac: mac)))

        case (.awaitingChallenge(let dialerNonce), .challenge(let c)):
            guard case .dialer(let expected) = role else {
                preconditionFailure("only a dialer awaits a challenge")
            }
            state = .failed
            guard c.from == expected, c.to == me else {
                return .fail(.wrongPeer(expected: expected, answered: c.from, addressedTo: c.to), send: nil)
            }
            let valid = Self.isValid(
                c.mac, key, role: .listener, cluster: clusterName, dialer: me, listener: expected,
                dialerNonce: dialerNonce, listenerNonce: c.nonce)
            guard valid else {
                return .fail(.badMAC(peer: expected), send: .reject(.badMAC))
            }
            state = .established(expected)
            let mac = Self.mac(
                key, role: .dialer, cluster: clusterName, dialer: me, listener: expected,
                dialerNonce: dialerNonce, listenerNonce: c.nonce)
            return .establish(peer: expected, send: .response(mac: mac))

        case (.awaitingResponse(let dialer, let dialerNonce, let listenerNonce), .response(let mac)):
            state = .failed
            let valid = Self.isValid(
                mac, key, role: .dialer, cluster: clusterName, dialer: dialer, listener: me,
                dialerNonce: dialerNonce, listenerNonce: listenerNonce)
            guard valid else { return .fail(.badMAC(peer: dialer), send: .reject(.badMAC)) }
            state = .established(dialer)
            return .establish(peer: dialer, send: nil)

        default:
            state = .failed
            return .fail(.unexpected(frame.kind), send: .reject(.protocolViolation))
        }
    }

    private func describe(_ reason: RejectReason, _ h: Frame.Hello) -> String {
        switch reason {
        case .wrongCluster:
            "dialer \(h.from) is in cluster \"\(h.clusterName)\", this node in \"\(clusterName)\""
        case .notForMe: "dialer \(h.from) meant to reach \(h.to), this is \(me)"
        case .unknownNode: "\(h.from) is not in this node's peer list"
        case .wrongDirection: "\(h.from) dialled \(me), but only the lower id dials"
        case .badMAC, .protocolViolation: "\(reason)"
        }
    }

    enum MACRole: UInt8 {
        case dialer = 0x44  // "D"
        case listener = 0x4C  // "L"
    }

    static let context = Array("tern-peer-auth-v1".utf8)

    /// The bytes both sides MAC: a domain label, the role, the cluster, both ids, both nonces.
    static func macInput(
        role: MACRole, cluster: String, dialer: NodeID, listener: NodeID, dialerNonce: [UInt8],
        listenerNonce: [UInt8]
    ) -> [UInt8] {
        var bytes = context
        bytes.append(role.rawValue)
        let name = Array(cluster.utf8)
        bytes.append(UInt8(truncatingIfNeeded: name.count))
        bytes += name
        for id in [dialer.rawValue, listener.rawValue] {
            bytes += [UInt8(id >> 24), UInt8((id >> 16) & 0xFF), UInt8((id >> 8) & 0xFF), UInt8(id & 0xFF)]
        }
        bytes += dialerNonce
        bytes += listenerNonce
        return bytes
    }

    static func mac(
        _ key: SymmetricKey, role: MACRole, cluster: String, dialer: NodeID, listener: NodeID,
        dialerNonce: [UInt8], listenerNonce: [UInt8]
    ) -> [UInt8] {
        let input = macInput(
            role: role, cluster: cluster, dialer: dialer, listener: listener, dialerNonce: dialerNonce,
            listenerNonce: listenerNonce)
        return Array(HMAC<SHA256>.authenticationCode(for: input, using: key))
    }

    /// Constant-time comparison (swift-crypto's), so timing does not reveal how much of a MAC matched.
    static func isValid(
        _ mac: [UInt8], _ key: SymmetricKey, role: MACRole, cluster: String, dialer: NodeID, listener: NodeID,
        dialerNonce: [UInt8], listenerNonce: [UInt8]
    ) -> Bool {
        let input = macInput(
            role: role, cluster: cluster, dialer: dialer, listener: listener, dialerNonce: dialerNonce,
            listenerNonce: listenerNonce)
        return HMAC<SHA256>.isValidAuthenticationCode(mac, authenticating: input, using: key)
    }

    /// 32 bytes from the system's cryptographic generator (getrandom on Linux).
    static func freshNonce() -> [UInt8] {
        var g = SystemRandomNumberGenerator()
        return (0..<FrameCodec.nonceBytes).map { _ in UInt8.random(in: 0...255, using: &g) }
    }
}

/// Why a handshake failed; logged, and counted in `TransportMetrics.authFailures`.
public enum HandshakeFailure: Error, Hashable, CustomStringConvertible {
    /// We refused the other side before checking any MAC.
    case refused(RejectReason, claimed: NodeID, detail: String)
    /// A MAC did not verify: wrong secret, a replayed handshake, or ids changed in flight.
    case badMAC(peer: NodeID)
    /// The node we dialled answered as someone else, or answered a hello meant for another node.
    case wrongPeer(expected: NodeID, answered: NodeID, addressedTo: NodeID)
    /// The other side refused us, and said why.
    case rejectedByPeer(RejectReason)
    /// A frame that has no place at this step of the handshake.
    case unexpected(FrameKind)
    /// The handshake did not finish in time.
    case timeout

    public var description: String {
        switch self {
        case .refused(_, _, let detail): "refused: \(detail)"
        case .badMAC(let peer): "authentication of \(peer) failed (wrong secret, replay, or altered ids)"
        case .wrongPeer(let expected, let answered, let to):
            "dialled \(expected) but \(answered) answered (addressed to \(to)): check the peer addresses"
        case .rejectedByPeer(let reason): "the peer refused us: \(reason)"
        case .unexpected(let kind): "unexpected \(kind) frame during the handshake"
        case .timeout: "handshake did not finish in time"
        }
    }
}

/// The dialer's handshake proof, for the fuzz target (same package), which needs to take a
/// listener past the handshake to fuzz what an authenticated peer can send.
package func dialerProof(
    secret: [UInt8], cluster: String, dialer: NodeID, listener: NodeID, dialerNonce: [UInt8],
    listenerNonce: [UInt8]
) -> [UInt8] {
    Handshake.mac(
        SymmetricKey(data: secret), role: .dialer, cluster: cluster, dialer: dialer, listener: listener,
        dialerNonce: dialerNonce, listenerNonce: listenerNonce)
}
