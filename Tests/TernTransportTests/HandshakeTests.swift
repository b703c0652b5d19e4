import Crypto
import TernCore
import Testing

@testable import TernTransport

/// The pure handshake: ids 1 (dialer) and 2 (listener); the listener knows peers 1 and 3.
private func listener(
    me: UInt32 = 2, cluster: String = "test", secret: [UInt8] = testSecret
) -> Handshake {
    Handshake(clusterName: cluster, me: NodeID(me), secret: secret, role: .listener) { id in
        guard [1, 3].contains(id.rawValue) else { return .unknownNode }
        return id.rawValue > me ? .wrongDirection : nil
    }
}

private func dialer(
    me: UInt32 = 1, to: UInt32 = 2, cluster: String = "test", secret: [UInt8] = testSecret
) -> Handshake {
    Handshake(clusterName: cluster, me: NodeID(me), secret: secret, role: .dialer(peer: NodeID(to)))
}

private struct Transcript {
    var hello: Frame
    var challenge: Frame
    var response: Frame
}

/// An honest, complete handshake; returns what was said.
private func honestRun() throws -> Transcript {
    var d = dialer()
    var l = listener()
    let hello = d.start(nonce: Handshake.freshNonce())
    guard case .send(let challenge) = l.receive(hello, nonce: Handshake.freshNonce()) else {
        throw TimedOut(what: "challenge")
    }
    guard case .establish(let peer, let response?) = d.receive(challenge, nonce: []) else {
        throw TimedOut(what: "dialer establish")
    }
    #expect(peer == NodeID(2))
    #expect(l.receive(response, nonce: []) == .establish(peer: NodeID(1), send: nil))
    #expect(l.peer == NodeID(1) && d.peer == NodeID(2))
    return Transcript(hello: hello, challenge: challenge, response: response)
}

@Test func honestHandshakeEstablishesBothSides() throws {
    _ = try honestRun()
}

@Test func dialerDetectsAListenerWithAnotherSecret() {
    var d = dialer()
    var l = listener(secret: Array("some-other-secret-of-32-bytes!!!".utf8))
    let hello = d.start(nonce: Handshake.freshNonce())
    guard case .send(let challenge) = l.receive(hello, nonce: Handshake.freshNonce()) else {
        Issue.record("listener should answer a well-formed hello")
        return
    }
    #expect(d.receive(challenge, nonce: []) == .fail(.badMAC(peer: NodeID(2)), send: .reject(.badMAC)))
    #expect(d.peer == nil)
}

@Test func listenerDetectsADialerWithAnotherSecret() {
    // The dialer does not know the secret, so it cannot check the challenge; it answers with a MAC
    // made from its own (wrong) secret.
    var l = listener()
    let nonceD = Handshake.freshNonce()
    let hello = Frame.hello(.init(clusterName: "test", from: NodeID(1), to: NodeID(2), nonce: nonceD))
    guard case .send(.challenge(let c)) = l.receive(hello, nonce: Handshake.freshNonce()) else {
        Issue.record("no challenge")
        return
    }
    let wrong = Handshake.mac(
        .init(data: Array("some-other-secret-of-32-bytes!!!".utf8)), role: .dialer, cluster: "test",
        dialer: NodeID(1), listener: NodeID(2), dialerNonce: nonceD, listenerNonce: c.nonce)
    #expect(
        l.receive(.response(mac: wrong), nonce: []) == .fail(.badMAC(peer: NodeID(1)), send: .reject(.badMAC))
    )
    #expect(l.peer == nil)
}

@Test func replayedHandshakeIsRejected() throws {
    let recorded = try honestRun()
    // An eavesdropper replays the dialer's recorded frames to the listener: the listener's fresh
    // nonce differs, so the recorded response does not verify.
    var l = listener()
    guard case .send = l.receive(recorded.hello, nonce: Handshake.freshNonce()) else {
        Issue.record("the replayed hello itself is well-formed")
        return
    }
    #expect(
        l.receive(recorded.response, nonce: []) == .fail(.badMAC(peer: NodeID(1)), send: .reject(.badMAC)))
    // ... and replays the listener's recorded challenge to the dialer, whose nonce is fresh too.
    var d = dialer()
    _ = d.start(nonce: Handshake.freshNonce())
    #expect(
        d.receive(recorded.challenge, nonce: []) == .fail(.badMAC(peer: NodeID(2)), send: .reject(.badMAC)))
}

@Test func reflectedListenerProofIsNotAValidDialerProof() {
    // An attacker without the secret claims to be n1 and sends back the listener's own MAC.
    var l = listener()
    let nonce = Handshake.freshNonce()
    let hello = Frame.hello(.init(clusterName: "test", from: NodeID(1), to: NodeID(2), nonce: nonce))
    guard case .send(.challenge(let c)) = l.receive(hello, nonce: nonce) else {
        Issue.record("no challenge")
        return
    }
    #expect(
        l.receive(.response(mac: c.mac), nonce: []) == .fail(.badMAC(peer: NodeID(1)), send: .reject(.badMAC))
    )
}

@Test func proofMadeForOneIdDoesNotAuthenticateAnother() throws {
    // A man in the middle rewrites the id in n1's hello to n3 (a peer the listener also knows):
    // the listener then MACs for n3, and n1's proof, made for n1, fails.
    var d = dialer()
    var l = listener(me: 4)
    guard case .hello(var h) = d.start(nonce: Handshake.freshNonce()) else { return }
    h.from = NodeID(3)
    h.to = NodeID(4)
    guard case .send(.challenge(var c)) = l.receive(.hello(h), nonce: Handshake.freshNonce()) else {
        Issue.record("no challenge")
        return
    }
    // The dialer sees a challenge made for n3 → it refuses it.
    c.to = NodeID(1)
    c.from = NodeID(2)
    #expect(d.receive(.challenge(c), nonce: []) == .fail(.badMAC(peer: NodeID(2)), send: .reject(.badMAC)))
    // And a dialer proof computed for n1 does not pass as n3's.
    let forN1 = Handshake.mac(
        .init(data: testSecret), role: .dialer, cluster: "test", dialer: NodeID(1), listener: NodeID(4),
        dialerNonce: h.nonce, listenerNonce: c.nonce)
    #expect(
        l.receive(.response(mac: forN1), nonce: []) == .fail(.badMAC(peer: NodeID(3)), send: .reject(.badMAC))
    )
}

struct Refusal: Sendable, CustomTestStringConvertible {
    var name: String
    var hello: Frame.Hello
    var reason: RejectReason
    var testDescription: String { name }
}

private let refusals: [Refusal] = [
    Refusal(
        name: "another cluster",
        hello: .init(clusterName: "other", from: NodeID(1), to: NodeID(2), nonce: testSecret),
        reason: .wrongCluster),
    Refusal(
        name: "hello meant for another node",
        hello: .init(clusterName: "test", from: NodeID(1), to: NodeID(9), nonce: testSecret),
        reason: .notForMe),
    Refusal(
        name: "unknown node id",
        hello: .init(clusterName: "test", from: NodeID(7), to: NodeID(2), nonce: testSecret),
        reason: .unknownNode),
    Refusal(
        name: "claims to be the listener itself",
        hello: .init(clusterName: "test", from: NodeID(2), to: NodeID(2), nonce: testSecret),
        reason: .unknownNode),
    Refusal(
        name: "higher id dialling",
        hello: .init(clusterName: "test", from: NodeID(3), to: NodeID(2), nonce: testSecret),
        reason: .wrongDirection),
]

@Test(arguments: refusals)
func listenerRefusesBeforeAnyMAC(_ r: Refusal) {
    var l = listener()
    guard
        case .fail(.refused(let reason, let claimed, let detail), .reject(let sent)) = l.receive(
            .hello(r.hello), nonce: [])
    else {
        Issue.record("not refused")
        return
    }
    #expect(reason == r.reason && sent == r.reason && claimed == r.hello.from)
    #expect(!detail.isEmpty)
    #expect(l.peer == nil)
}

@Test func dialerRefusesAnAnswerFromAnotherNode() throws {
    // n1 dials the address it has for n2, but n3 (a real member, with the secret) listens there.
    var d = dialer(to: 2)
    var l3 = listener(me: 3)
    guard case .hello(var h) = d.start(nonce: Handshake.freshNonce()) else { return }
    h.to = NodeID(3)  // pretend the dialer had aimed at n3, so n3 answers
    guard case .send(let challenge) = l3.receive(.hello(h), nonce: Handshake.freshNonce()) else {
        Issue.record("no challenge")
        return
    }
    #expect(
        d.receive(challenge, nonce: [])
            == .fail(.wrongPeer(expected: NodeID(2), answered: NodeID(3), addressedTo: NodeID(1)), send: nil))
}

@Test func framesOutOfOrderFailTheHandshake() throws {
    let t = try honestRun()
    var l = listener()
    #expect(
        l.receive(t.response, nonce: []) == .fail(.unexpected(.response), send: .reject(.protocolViolation)))
    var l2 = listener()
    #expect(
        l2.receive(.batch([buffer("x")]), nonce: [])
            == .fail(.unexpected(.batch), send: .reject(.protocolViolation)))
    var d = dialer()
    _ = d.start(nonce: Handshake.freshNonce())
    #expect(d.receive(.ping, nonce: []) == .fail(.unexpected(.ping), send: .reject(.protocolViolation)))
    var d2 = dialer()
    _ = d2.start(nonce: Handshake.freshNonce())
    #expect(d2.receive(.reject(.wrongCluster), nonce: []) == .fail(.rejectedByPeer(.wrongCluster), send: nil))
}

@Test func macCoversEveryField() {
    let base = Handshake.macInput(
        role: .dialer, cluster: "c", dialer: NodeID(1), listener: NodeID(2), dialerNonce: nonce(1),
        listenerNonce: nonce(2))
    let variants = [
        Handshake.macInput(
            role: .listener, cluster: "c", dialer: NodeID(1), listener: NodeID(2), dialerNonce: nonce(1),
            listenerNonce: nonce(2)),
        Handshake.macInput(
            role: .dialer, cluster: "d", dialer: NodeID(1), listener: NodeID(2), dialerNonce: nonce(1),
            listenerNonce: nonce(2)),
        Handshake.macInput(
            role: .dialer, cluster: "c", dialer: NodeID(3), listener: NodeID(2), dialerNonce: nonce(1),
            listenerNonce: nonce(2)),
        Handshake.macInput(
            role: .dialer, cluster: "c", dialer: NodeID(1), listener: NodeID(3), dialerNonce: nonce(1),
            listenerNonce: nonce(2)),
        Handshake.macInput(
            role: .dialer, cluster: "c", dialer: NodeID(1), listener: NodeID(2), dialerNonce: nonce(3),
            listenerNonce: nonce(2)),
        Handshake.macInput(
            role: .dialer, cluster: "c", dialer: NodeID(1), listener: NodeID(2), dialerNonce: nonce(1),
            listenerNonce: nonce(3)),
    ]
    for v in variants { #expect(v != base) }
    #expect(Handshake.freshNonce() != Handshake.freshNonce())
}

private func nonce(_ b: UInt8) -> [UInt8] { [UInt8](repeating: b, count: 32) }
