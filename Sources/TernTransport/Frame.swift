import NIOCore
import TernCore

/// One unit of the peer protocol, as it travels between two nodes.
///
/// Wire layout, version 1 (all integers big-endian):
/// ```
///  0      2        3        4              8
///  +------+--------+--------+--------------+----------------------+
///  | "TN" | ver=1  | kind   | body bytes   | body (kind-specific) |
///  +------+--------+--------+--------------+----------------------+
///  kind 1 hello      nameLen u8 | cluster name (UTF-8) | from u32 | to u32 | nonce[32]
///  kind 2 challenge  from u32 | to u32 | nonce[32] | mac[32]
///  kind 3 response   mac[32]
///  kind 4 batch      count u32 (>= 1) | count x (length u32 | message bytes)
///  kind 5 ping       (empty)
///  kind 6 reject     reason u8
/// ```
/// The encoding is canonical: a body either decodes to exactly one `Frame` whose encoding is
/// the same bytes, or it is rejected. The fuzz target checks that property.
public enum Frame: Sendable, Hashable {
    /// Dialer → listener, first frame: who I am, whom I think I dialled, my challenge.
    case hello(Hello)
    /// Listener → dialer: the listener's challenge and its answer to the dialer's.
    case challenge(Challenge)
    /// Dialer → listener: the dialer's answer to the listener's challenge.
    case response(mac: [UInt8])
    /// Opaque messages, in order. Delivered to the node as one batch.
    case batch([ByteBuffer])
    /// Keep-alive: proves the connection (and the peer's event loop) is alive.
    case ping
    /// The sender refuses the handshake, and closes the connection after this frame.
    case reject(RejectReason)

    /// Body of a `hello` frame.
    public struct Hello: Sendable, Hashable {
        public var clusterName: String
        public var from: NodeID
        public var to: NodeID
        public var nonce: [UInt8]
        public init(clusterName: String, from: NodeID, to: NodeID, nonce: [UInt8]) {
            self.clusterName = clusterName
            self.from = from
            self.to = to
            self.nonce = nonce
        }
    }

    /// Body of a `challenge` frame.
    public struct Challenge: Sendable, Hashable {
        public var from: NodeID
        public var to: NodeID
        public var nonce: [UInt8]
        public var mac: [UInt8]
        public init(from: NodeID, to: NodeID, nonce: [UInt8], mac: [UInt8]) {
            self.from = from
            self.to = to
            self.nonce = nonce
            self.mac = mac
        }
    }

    /// The frame's kind byte.
    public var kind: FrameKind {
        switch self {
        case .hello: .hello
        case .challenge: .challenge
        case .response: .response
        case .batch: .batch
        case .ping: .ping
        case .reject: .reject
        }
    }
}

/// The kind byte of a frame header.
public enum FrameKind: UInt8, Sendable, Hashable, CustomStringConvertible {
    case hello = 1
    case challenge = 2
    case response = 3
    case batch = 4
    case ping = 5
    case reject = 6

    public var description: String {
        switch self {
        case .hello: "hello"
        case .challenge: "challenge"
        case .response: "response"
        case .batch: "batch"
        case .ping: "ping"
        case .reject: "reject"
        }
    }
}

/// Why a node refused a handshake; sent in a `reject` frame so the other side can log it.
///
/// It tells an honest but misconfigured node what to fix, and tells an attacker nothing it could
/// not learn by trying.
public enum RejectReason: UInt8, Sendable, Hashable, CustomStringConvertible {
    case wrongCluster = 1
    case notForMe = 2
    case unknownNode = 3
    case wrongDirection = 4
    case badMAC = 5
    case protocolViolation = 6

    public var description: String {
        switch self {
        case .wrongCluster: "wrong cluster name"
        case .notForMe: "hello addressed to another node id"
        case .unknownNode: "node id not in this node's peer list"
        case .wrongDirection: "only the node with the lower id dials"
        case .badMAC: "authentication failed (wrong secret or replayed handshake)"
        case .protocolViolation: "unexpected frame during handshake"
        }
    }
}

/// A frame that cannot be decoded. The connection it came from is closed; nothing is delivered.
public struct FrameError: Error, Hashable, CustomStringConvertible {
    /// What is wrong, in a form tests and metrics can match on.
    public enum Code: Sendable, Hashable {
        case badMagic
        case unsupportedVersion
        case unknownKind
        case oversized
        case malformedBody
        case truncated
    }

    public var code: Code
    /// A sentence for the log: what was expected and what arrived.
    public var detail: String

    public init(_ code: Code, _ detail: String) {
        self.code = code
        self.detail = detail
    }

    public var description: String { "peer frame rejected: \(detail)" }
}

/// Encoding and decoding of peer frames (see `Frame` for the layout). Pure: no IO, no clock.
public enum FrameCodec {
    /// The two magic bytes, "TN".
    public static let magic: UInt16 = 0x544E
    /// The only version this code speaks.
    public static let version: UInt8 = 1
    /// Header size: magic, version, kind, body length.
    public static let headerBytes = 8
    /// Size of handshake nonces and MACs (HMAC-SHA256).
    public static let nonceBytes = 32
    /// Largest cluster name a hello can carry.
    public static let clusterNameBytesMax = 255
    /// Largest body any handshake frame can have; the limit before a connection is authenticated.
    public static let handshakeBodyBytesMax = 1 + clusterNameBytesMax + 8 + nonceBytes
    /// Bytes a batch frame adds to its messages: the count, then a length per message.
    public static func batchOverheadBytes(messages: Int) -> Int { headerBytes + 4 + 4 * messages }

    /// Decodes the frame at the front of `buffer`.
    ///
    /// Returns `nil` when more bytes are needed (the reader index is left where it was). Moves the
    /// reader index past the frame when it returns one. The header is checked as soon as its 8 bytes
    /// are there, so an oversized or foreign frame is refused before its body is buffered.
    /// Batch messages are slices of `buffer` (no copy).
    /// - Parameter bodyBytesMax: the largest body accepted; anything larger is `oversized`.
    public static func decode(_ buffer: inout ByteBuffer, bodyBytesMax: Int) throws(FrameError) -> Frame? {
        guard buffer.readableBytes >= headerBytes else { return nil }
        let start = buffer.readerIndex
        let m = buffer.getInteger(at: start, as: UInt16.self)!
        guard m == magic else {
            throw FrameError(.badMagic, "bad magic 0x\(String(m, radix: 16)), expected 0x544e (\"TN\")")
        }
        let v = buffer.getInteger(at: start + 2, as: UInt8.self)!
        guard v == version else {
            throw FrameError(.unsupportedVersion, "frame version \(v), this node speaks version \(version)")
        }
        let k = buffer.getInteger(at: start + 3, as: UInt8.self)!
        guard let kind = FrameKind(rawValue: k) else {
            throw FrameError(.unknownKind, "unknown frame kind \(k)")
        }
        let length = Int(buffer.getInteger(at: start + 4, as: UInt32.self)!)
        guard length <= bodyBytesMax else {
            throw FrameError(
                .oversized, "\(kind) frame body of \(length) bytes exceeds the limit of \(bodyBytesMax)")
        }
        try checkLength(kind, length)
        guard buffer.readableBytes >= headerBytes + length else { return nil }
        var body = buffer.getSlice(at: start + headerBytes, length: length)!
        let frame = try decodeBody(kind, &body)
        guard body.readableBytes == 0 else {
            throw FrameError(.malformedBody, "\(kind) frame has \(body.readableBytes) trailing bytes")
        }
        buffer.moveReaderIndex(forwardBy: headerBytes + length)
        return frame
    }

    /// Checks what is left in a stream that has ended: a partial frame is an error (`truncated`).
    public static func checkEnd(_ buffer: ByteBuffer) throws(FrameError) {
        guard buffer.readableBytes > 0 else { return }
        var need = headerBytes
        if buffer.readableBytes >= headerBytes,
            let length = buffer.getInteger(at: buffer.readerIndex + 4, as: UInt32.self)
        {
            need += Int(length)
        }
        throw FrameError(
            .truncated, "stream ended inside a frame: \(buffer.readableBytes) of \(need) bytes arrived")
    }

    /// Fixed-size kinds are checked from the header alone.
    private static func checkLength(_ kind: FrameKind, _ length: Int) throws(FrameError) {
        let expected: Int? =
            switch kind {
            case .challenge: 8 + 2 * nonceBytes
            case .response: nonceBytes
            case .ping: 0
            case .reject: 1
            case .hello, .batch: nil
            }
        if let expected, expected != length {
            throw FrameError(
                .malformedBody, "\(kind) frame body must be \(expected) bytes, header says \(length)")
        }
        if kind == .hello && (length < 1 + 8 + nonceBytes || length > handshakeBodyBytesMax) {
            throw FrameError(.malformedBody, "hello frame body of \(length) bytes is impossible")
        }
        if kind == .batch && length < 8 {
            throw FrameError(.malformedBody, "batch frame body of \(length) bytes cannot hold a message")
        }
    }

    private static func decodeBody(_ kind: FrameKind, _ body: inout ByteBuffer) throws(FrameError) -> Frame {
        switch kind {
        case .hello:
            let nameLength = Int(body.readInteger(as: UInt8.self)!)
            guard body.readableBytes == nameLength + 8 + nonceBytes,
                let nameBytes = body.readBytes(length: nameLength)
            else {
                throw FrameError(
                    .malformedBody, "hello frame's cluster name length \(nameLength) does not fit its body")
            }
            guard let name = String(validating: nameBytes, as: UTF8.self) else {
                throw FrameError(.malformedBody, "hello frame's cluster name is not valid UTF-8")
            }
            let from = NodeID(body.readInteger(as: UInt32.self)!)
            let to = NodeID(body.readInteger(as: UInt32.self)!)
            let nonce = body.readBytes(length: nonceBytes)!
            return .hello(.init(clusterName: name, from: from, to: to, nonce: nonce))
        case .challenge:
            let from = NodeID(body.readInteger(as: UInt32.self)!)
            let to = NodeID(body.readInteger(as: UInt32.self)!)
            let nonce = body.readBytes(length: nonceBytes)!
            let mac = body.readBytes(length: nonceBytes)!
            return .challenge(.init(from: from, to: to, nonce: nonce, mac: mac))
        case .response:
            return .response(mac: body.readBytes(length: nonceBytes)!)
        case .ping:
            return .ping
        case .reject:
            let code = body.readInteger(as: UInt8.self)!
            guard let reason = RejectReason(rawValue: code) else {
                throw FrameError(.malformedBody, "reject frame with unknown reason \(code)")
            }
            return .reject(reason)
        case .batch:
            let count = Int(body.readInteger(as: UInt32.self)!)
            // Each message needs at least its 4-byte length: refuse absurd counts before allocating.
            guard count >= 1, count <= body.readableBytes / 4 else {
                throw FrameError(
                    .malformedBody, "batch frame claims \(count) messages in \(body.readableBytes) bytes")
            }
            var messages: [ByteBuffer] = []
            messages.reserveCapacity(count)
            for i in 0..<count {
                guard let length = body.readInteger(as: UInt32.self), Int(length) <= body.readableBytes,
                    let message = body.readSlice(length: Int(length))
                else {
                    throw FrameError(
                        .malformedBody, "batch frame's message \(i + 1) of \(count) overruns the body")
                }
                messages.append(message)
            }
            return .batch(messages)
        }
    }

    /// Appends `frame`'s encoding to `buffer`.
    /// - Precondition: handshake fields have their fixed sizes; a batch is not empty. These are
    ///   this module's own frames: a violation is a bug, not bad input.
    public static func encode(_ frame: Frame, into buffer: inout ByteBuffer) {
        switch frame {
        case .hello(let h):
            let name = Array(h.clusterName.utf8)
            precondition(name.count <= clusterNameBytesMax && h.nonce.count == nonceBytes)
            writeHeader(.hello, bodyBytes: 1 + name.count + 8 + nonceBytes, into: &buffer)
            buffer.writeInteger(UInt8(name.count))
            buffer.writeBytes(name)
            buffer.writeInteger(h.from.rawValue)
            buffer.writeInteger(h.to.rawValue)
            buffer.writeBytes(h.nonce)
        case .challenge(let c):
            precondition(c.nonce.count == nonceBytes && c.mac.count == nonceBytes)
            writeHeader(.challenge, bodyBytes: 8 + 2 * nonceBytes, into: &buffer)
            buffer.writeInteger(c.from.rawValue)
            buffer.writeInteger(c.to.rawValue)
            buffer.writeBytes(c.nonce)
            buffer.writeBytes(c.mac)
        case .response(let mac):
            precondition(mac.count == nonceBytes)
            writeHeader(.response, bodyBytes: nonceBytes, into: &buffer)
            buffer.writeBytes(mac)
        case .batch(let messages):
            writeBatch(messages[...], into: &buffer)
        case .ping:
            writeHeader(.ping, bodyBytes: 0, into: &buffer)
        case .reject(let reason):
            writeHeader(.reject, bodyBytes: 1, into: &buffer)
            buffer.writeInteger(reason.rawValue)
        }
    }

    /// Appends one batch frame holding `messages` to `buffer`.
    /// - Precondition: `messages` is not empty and its encoding fits a u32 length.
    public static func writeBatch(_ messages: ArraySlice<ByteBuffer>, into buffer: inout ByteBuffer) {
        precondition(!messages.isEmpty, "a batch frame holds at least one message")
        var body = 4
        for m in messages { body += 4 + m.readableBytes }
        precondition(body <= Int(UInt32.max))
        buffer.reserveCapacity(minimumWritableBytes: headerBytes + body)
        writeHeader(.batch, bodyBytes: body, into: &buffer)
        buffer.writeInteger(UInt32(messages.count))
        for m in messages {
            buffer.writeInteger(UInt32(m.readableBytes))
            buffer.writeImmutableBuffer(m)
        }
    }

    private static func writeHeader(_ kind: FrameKind, bodyBytes: Int, into buffer: inout ByteBuffer) {
        buffer.writeInteger(magic)
        buffer.writeInteger(version)
        buffer.writeInteger(kind.rawValue)
        buffer.writeInteger(UInt32(bodyBytes))
    }
}
