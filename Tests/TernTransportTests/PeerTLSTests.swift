import Foundation
import NIOCore
import NIOPosix
import TernCore
import Testing

@testable import TernTransport

/// Certificates for one test: a CA, and node certificates it signed, as files in a temporary folder.
struct TestPKI {
    let dir: String
    let ca: ThrowawayCA

    init() throws {
        dir = NSTemporaryDirectory() + "tern-pki-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        ca = try ThrowawayCA(commonName: "test CA")
        try ca.certificatePEM.write(toFile: caFile, atomically: true, encoding: .utf8)
    }

    var caFile: String { dir + "/ca.crt" }

    /// Issues a certificate for `name`; returns (cert file, key file).
    func issue(_ name: String) throws -> (cert: String, key: String) {
        let issued = try ca.issue(commonName: name)
        let cert = dir + "/\(name).crt"
        let key = dir + "/\(name).key"
        try issued.certificatePEM.write(toFile: cert, atomically: true, encoding: .utf8)
        try issued.keyPEM.write(toFile: key, atomically: true, encoding: .utf8)
        return (cert, key)
    }

    /// Peer TLS for a node with a certificate from this CA, trusting `trust` (this CA by default).
    func peerTLS(_ name: String, trust: String? = nil) throws -> PeerTLS {
        let (cert, key) = try issue(name)
        return try PeerTLS(certFile: cert, keyFile: key, caFile: trust ?? caFile)
    }

    func remove() { try? FileManager.default.removeItem(atPath: dir) }
}

@Suite(.isolatedCluster, .timeLimit(.minutes(1))) struct PeerTLSTests {
    @Test("Mutual TLS: two nodes with certificates from the cluster CA connect and exchange messages")
    func sameCAConnects() async throws {
        let pki = try TestPKI()
        defer { pki.remove() }
        var c1 = testConfig(1, peers: [2])
        c1.tls = try pki.peerTLS("n1")
        var c2 = testConfig(2, peers: [1])
        c2.tls = try pki.peerTLS("n2")
        let n1 = TestNode(c1)
        let n2 = TestNode(c2)
        try await startAndConnect([n1, n2])
        n1.transport.send(buffer("over tls"), to: n2.id)
        try await waitUntil("delivered") { n2.strings(from: n1.id) == ["over tls"] }
        #expect(n1.transport.metrics().tlsFailures == 0)
        await n1.transport.shutdown()
        await n2.transport.shutdown()
    }

    @Test("A peer whose certificate comes from another CA cannot join: refused, counted, on both ends")
    func otherCARefused() async throws {
        let pki = try TestPKI()
        let intruderPKI = try TestPKI()
        defer {
            pki.remove()
            intruderPKI.remove()
        }
        // n1 dials n2 (the lower id dials). n2 holds a certificate from another CA; it even trusts
        // the cluster CA, so only n1's check (the dialler's) can keep it out. Below, a listener of
        // the cluster is dialled by an intruder with a foreign certificate (the listener's check).
        var c1 = testConfig(1, peers: [2])
        c1.tls = try pki.peerTLS("n1")
        var c2 = testConfig(2, peers: [1])
        c2.tls = try intruderPKI.peerTLS("n2", trust: pki.caFile)
        let n1 = TestNode(c1)
        let n2 = TestNode(c2)
        for n in [n1, n2] { try await n.transport.start() }
        n1.transport.updatePeers([n2.id: n2.address])
        n2.transport.updatePeers([n1.id: n1.address])
        try await waitUntil("n1 counted a refused TLS handshake") { n1.transport.metrics().tlsFailures > 0 }
        n1.transport.send(buffer("secret"), to: n2.id)
        try await Task.sleep(for: .milliseconds(300))
        #expect(n1.transport.metrics().peers[n2.id]?.connected == false)
        #expect(n2.strings(from: n1.id).isEmpty)
        #expect(n1.transport.metrics().connectionsEstablished == 0)

        // An intruder dialling a listener: node 1 of another CA dials node 5 of the cluster.
        var listenerConfig = testConfig(5, peers: [1])
        listenerConfig.tls = try pki.peerTLS("n5")
        var intruderConfig = testConfig(1, peers: [5])
        intruderConfig.tls = try intruderPKI.peerTLS("n1x", trust: pki.caFile)
        let listener = TestNode(listenerConfig)
        let intruder = TestNode(intruderConfig)
        try await listener.transport.start()
        try await intruder.transport.start()
        intruder.transport.updatePeers([listener.id: listener.address])
        try await waitUntil("the listener counted a refused TLS handshake") {
            listener.transport.metrics().tlsFailures > 0
        }
        #expect(listener.transport.metrics().connectionsEstablished == 0)
        #expect(intruder.transport.metrics().connectionsEstablished == 0)
        for n in [n1, n2, listener, intruder] { await n.transport.shutdown() }
    }

    @Test("A peer without TLS cannot join a cluster that uses it")
    func plainPeerRefused() async throws {
        let pki = try TestPKI()
        defer { pki.remove() }
        var c1 = testConfig(1, peers: [2])
        c1.tls = try pki.peerTLS("n1")
        let n1 = TestNode(c1)
        let n2 = TestNode(testConfig(2, peers: [1]))
        for n in [n1, n2] { try await n.transport.start() }
        n1.transport.updatePeers([n2.id: n2.address])
        n2.transport.updatePeers([n1.id: n1.address])
        try await waitUntil("n1 counted a failed TLS handshake") { n1.transport.metrics().tlsFailures > 0 }
        #expect(n1.transport.metrics().connectionsEstablished == 0)
        #expect(n2.transport.metrics().connectionsEstablished == 0)
        await n1.transport.shutdown()
        await n2.transport.shutdown()
    }
}
