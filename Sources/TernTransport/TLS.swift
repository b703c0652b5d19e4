import Crypto
import Foundation
import NIOConcurrencyHelpers
import NIOSSL
import SwiftASN1
import X509

/// A TLS context built from files, that can be built again from the same files (SIGHUP): new
/// connections take the context current when they open; open connections keep theirs.
public final class ReloadableTLSContext: Sendable {
    private let make: @Sendable () throws -> NIOSSLContext
    private let box: NIOLockedValueBox<NIOSSLContext>

    /// Builds the first context at once (a bad file fails here, before anything listens).
    public init(_ make: @escaping @Sendable () throws -> NIOSSLContext) throws {
        self.make = make
        box = NIOLockedValueBox(try make())
    }

    /// The context new connections use.
    public var current: NIOSSLContext { box.withLockedValue { $0 } }

    /// Reads the files again; on any error the old context stays and the error is thrown.
    public func reload() throws { install(try build()) }

    /// A context from the files as they are now, not yet used (`install` makes it current).
    public func build() throws -> NIOSSLContext { try make() }

    /// Makes `context` the one new connections use.
    public func install(_ context: NIOSSLContext) { box.withLockedValue { $0 = context } }
}

/// Mutual TLS between peers (docs/SECURITY.md): every node presents its certificate, signed by the
/// one cluster CA, and accepts only certificates from that CA, on both ends of a connection.
public struct PeerTLS: Sendable {
    /// For connections this node accepts: a client certificate from the CA is required.
    public let server: ReloadableTLSContext
    /// For connections this node dials: the listener's certificate must come from the CA.
    public let client: ReloadableTLSContext

    public init(certFile: String, keyFile: String, caFile: String) throws {
        server = try ReloadableTLSContext {
            try TLSFiles.serverContext(cert: certFile, key: keyFile, ca: caFile, clients: .required)
        }
        client = try ReloadableTLSContext {
            try TLSFiles.clientContext(cert: certFile, key: keyFile, ca: caFile)
        }
    }

    /// Reads the files again; both contexts change, or (on an error) neither.
    public func reload() throws {
        let s = try server.build()
        let c = try client.build()
        server.install(s)
        client.install(c)
    }
}

/// Why a TLS file could not be used.
public struct TLSFileError: Error, Sendable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// How a listening side treats client certificates (Redis's `tls-auth-clients`).
public enum ClientCertificatePolicy: Sendable, Hashable {
    /// Not asked for.
    case none
    /// Checked against the CA if sent; a client without one is served.
    case optional
    /// Required, and must chain to the CA.
    case required
}

/// TLS contexts from PEM files (docs/SECURITY.md). TLS 1.2 is the lowest version accepted.
public enum TLSFiles {
    /// Every certificate in a PEM file (a chain: the leaf first).
    public static func certificates(_ path: String) throws -> [NIOSSLCertificate] {
        let certs: [NIOSSLCertificate]
        do {
            certs = try NIOSSLCertificate.fromPEMFile(path)
        } catch {
            throw TLSFileError("cannot read the PEM certificate file \(path): \(error)")
        }
        guard !certs.isEmpty else { throw TLSFileError("no certificate in \(path)") }
        return certs
    }

    /// The private key in a PEM file.
    public static func privateKey(_ path: String) throws -> NIOSSLPrivateKey {
        do {
            return try NIOSSLPrivateKey(file: path, format: .pem)
        } catch {
            throw TLSFileError("cannot read the PEM private key file \(path): \(error)")
        }
    }

    /// A context for a listening side that presents `cert`/`key`; client certificates are
    /// treated by `clients`, checked against the certificates in `ca` (only those: not the
    /// system's roots). Hostnames of clients are not checked (they have none to check).
    public static func serverContext(cert: String, key: String, ca: String?, clients: ClientCertificatePolicy)
        throws -> NIOSSLContext
    {
        var c = TLSConfiguration.makeServerConfiguration(
            certificateChain: try certificates(cert).map { .certificate($0) },
            privateKey: .privateKey(try privateKey(key)))
        c.minimumTLSVersion = .tlsv12
        if let ca { c.trustRoots = .certificates(try certificates(ca)) }
        switch clients {
        case .none: c.certificateVerification = .none
        case .optional: c.certificateVerification = .optionalVerification
        case .required:
            guard ca != nil else {
                throw TLSFileError("client certificates are required but no CA file is set")
            }
            c.certificateVerification = .noHostnameVerification
        }
        return try context(c)
    }

    /// A context for a dialling side: trusts only the certificates in `ca`, presents `cert`/`key`
    /// if given. The server's name is not checked against its certificate: peers are dialled by
    /// address, and who they are is proved by the transport's handshake on top (docs/SECURITY.md).
    public static func clientContext(cert: String?, key: String?, ca: String) throws -> NIOSSLContext {
        var c = TLSConfiguration.makeClientConfiguration()
        c.minimumTLSVersion = .tlsv12
        c.trustRoots = .certificates(try certificates(ca))
        c.certificateVerification = .noHostnameVerification
        if let cert, let key {
            c.certificateChain = try certificates(cert).map { .certificate($0) }
            c.privateKey = .privateKey(try privateKey(key))
        }
        return try context(c)
    }

    static func context(_ c: TLSConfiguration) throws -> NIOSSLContext {
        do {
            return try NIOSSLContext(configuration: c)
        } catch {
            throw TLSFileError("the certificate and key do not make a TLS context: \(error)")
        }
    }
}

/// A throwaway certificate authority and the certificates it signs (`tern dev --tls`, tests):
/// ECDSA P-256 keys made with swift-crypto, X.509 certificates with swift-certificates, PEM out;
/// no openssl involved.
public struct ThrowawayCA: Sendable {
    let key: Certificate.PrivateKey
    let name: DistinguishedName
    /// The CA certificate, PEM.
    public let certificatePEM: String

    /// A new CA named `commonName`, valid from an hour ago for `days`.
    public init(commonName: String, days: Int = 365) throws {
        let p256 = P256.Signing.PrivateKey()
        key = Certificate.PrivateKey(p256)
        name = try DistinguishedName {
            OrganizationName("Tern")
            CommonName(commonName)
        }
        let now = Date()
        let ca = try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(),
            publicKey: .init(p256.publicKey), notValidBefore: now - 3600,
            notValidAfter: now + Double(days) * 86_400, issuer: name, subject: name,
            signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.isCertificateAuthority(maxPathLength: 0))
                Critical(KeyUsage(keyCertSign: true, cRLSign: true))
            },
            issuerPrivateKey: key)
        certificatePEM = try ca.serializeAsPEM().pemString
    }

    /// A certificate and its new key for `commonName`, signed by this CA, good for both ends of
    /// a TLS connection (server and client authentication), naming `localhost`, 127.0.0.1 and
    /// ::1 (loopback clusters), and `dnsNames` besides.
    public func issue(commonName: String, dnsNames: [String] = [], days: Int = 365) throws -> (
        certificatePEM: String, keyPEM: String
    ) {
        let leafKey = P256.Signing.PrivateKey()
        let subject = try DistinguishedName {
            OrganizationName("Tern")
            CommonName(commonName)
        }
        var names: [GeneralName] = (["localhost"] + dnsNames).map { .dnsName($0) }
        names.append(.ipAddress(ASN1OctetString(contentBytes: [127, 0, 0, 1])))
        names.append(
            .ipAddress(ASN1OctetString(contentBytes: ArraySlice([UInt8](repeating: 0, count: 15) + [1]))))
        let now = Date()
        let cert = try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(),
            publicKey: .init(leafKey.publicKey), notValidBefore: now - 3600,
            notValidAfter: now + Double(days) * 86_400, issuer: name, subject: subject,
            signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.notCertificateAuthority)
                Critical(KeyUsage(digitalSignature: true))
                try ExtendedKeyUsage([.serverAuth, .clientAuth])
                SubjectAlternativeNames(names)
            },
            issuerPrivateKey: key)
        return (try cert.serializeAsPEM().pemString, leafKey.pemRepresentation)
    }
}
