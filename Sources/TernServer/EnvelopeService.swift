import Foundation
import NIOCore
import TernConsensus
import TernCore
import TernRESP

/// Red envelopes: `ENVELOPE.CREATE`, `ENVELOPE.OPEN`, `ENVELOPE.INFO` (docs/ENVELOPE.md).
///
/// Each envelope is one Paxos key `\0env:<id>` whose value is an `EnvelopeState`. An open is one
/// write (`Operation.envelope(.open)`) that carries only the uid and this node's clock; the amount
/// is drawn when the chosen instance applies it, from the seed in the value, so every replica and
/// every retry sees the same amount. Opens of one hot envelope queue on the key's proposer and are
/// merged, up to `PaxosConfig.mergeMax` per instance.
///
/// ```
///  ENVELOPE.OPEN id uid ─► write \0env:<id> .envelope(.open(uid, nowMs))
///                          ─► chosen instance applies: uid seen? its amount : draw(seed, k)
///                          ─► the result recorded for the request id is the reply
/// ```
public final class EnvelopeService: CommandModule, Sendable {
    public let node: Node
    /// Wall-clock milliseconds (injected: expiry tests move it). Carried in OPEN and expiry
    /// operations: the protocol, not the reader's clock, decides that an envelope expired.
    let clock: @Sendable () -> UInt64

    public init(
        node: Node, clock: @escaping @Sendable () -> UInt64 = { UInt64(Date().timeIntervalSince1970 * 1000) }
    ) {
        self.node = node
        self.clock = clock
    }

    static func key(_ id: [UInt8]) -> [UInt8] { Array("\0env:".utf8) + id }

    public var commandSpecs: [CommandSpec] {
        [
            CommandSpec(
                "envelope.create", arity: -4, flags: ["write", "denyoom"], categories: ["@write", "@fast"],
                summary: "Creates a red envelope (ENVELOPE.CREATE id total_cents count [TTL seconds]).",
                since: "0.1.0", group: "module"),
            CommandSpec(
                "envelope.open", arity: 3, flags: ["write"], categories: ["@write", "@fast"],
                summary: "Opens an envelope for a uid: its share in cents (the same one when opened again).",
                since: "0.1.0", group: "module"),
            CommandSpec(
                "envelope.info", arity: 2, flags: ["readonly"], categories: ["@read", "@slow"],
                summary: "An envelope's total, remaining, count, shares, expiry and refund.", since: "0.1.0",
                group: "module"),
        ]
    }

    static func err(_ text: String) -> RESPValue { .error("ERR " + text) }
    static func arity(_ name: String) -> RESPValue { err("wrong number of arguments for '\(name)' command") }
    static let badTotal = err("total_cents must be an integer from 1 to \(EnvelopeState.totalCentsMax)")
    static let badCount = err("count must be an integer from 1 to \(EnvelopeState.countMax)")
    static let totalBelowCount = err("total_cents must be at least count (every share is at least 1 cent)")
    static let badTTL = err("TTL must be an integer number of seconds from 1 to 31536000")
    static let badUID = err("uid must be an integer from 0 to 2^64-1")
    static let noSuch = err("no such envelope")
    static let idTooLong = err("envelope id is too long (at most 256 bytes)")
    static let wrongType = RESPValue.error("WRONGTYPE the envelope key holds a value that is not an envelope")

    /// The RESP answer to an envelope write.
    static func reply(_ r: NodeReply) -> RESPValue {
        switch r {
        case .done(.envelope(let e)):
            switch e {
            case .created: return .simpleString("OK")
            case .exists: return err("envelope already exists")
            case .noSuchEnvelope: return noSuch
            case .opened(let amount, _): return .integer(Int64(amount))
            case .empty: return err("envelope is empty: all its shares were taken")
            case .expired(let refunded): return err("envelope expired (\(refunded) cents refunded)")
            case .notExpired: return .integer(0)
            }
        case .done(.notANumber): return wrongType
        default: return CommandProcessor.failure(r, write: true)
        }
    }

    public func plan(name: String, args: [[UInt8]], session: inout Session) -> CommandPlan? {
        switch name {
        case "envelope.create":
            guard args.count == 4 || args.count == 6 else { return .reply(Self.arity(name)) }
            guard args[1].count <= 256 else { return .reply(Self.idTooLong) }
            guard let total = KeyValue.strictInteger(args[2]), total >= 1,
                UInt64(total) <= EnvelopeState.totalCentsMax
            else { return .reply(Self.badTotal) }
            guard let count = KeyValue.strictInteger(args[3]), count >= 1,
                count <= Int64(EnvelopeState.countMax)
            else { return .reply(Self.badCount) }
            guard total >= count else { return .reply(Self.totalBelowCount) }
            var deadline: UInt64 = 0
            if args.count == 6 {
                guard String(decoding: args[4], as: UTF8.self).uppercased() == "TTL" else {
                    return .reply(.error("ERR syntax error"))
                }
                guard let ttl = KeyValue.strictInteger(args[5]), ttl >= 1, ttl <= 31_536_000 else {
                    return .reply(Self.badTTL)
                }
                deadline = clock() + UInt64(ttl) * 1000
            }
            let op = EnvelopeOp.create(
                totalCents: UInt64(total), count: UInt32(count), deadlineMs: deadline,
                seed: UInt64.random(in: 0...UInt64.max))
            return .requests([(Self.key(args[1]), .write(.envelope(op)))]) { Self.reply($0[0]) }
        case "envelope.open":
            guard args.count == 3 else { return .reply(Self.arity(name)) }
            guard args[1].count <= 256 else { return .reply(Self.idTooLong) }
            guard let uid = SyncService.uid(args[2]) else { return .reply(Self.badUID) }
            let op = EnvelopeOp.open(uid: uid, nowMs: clock())
            let key = Self.key(args[1])
            // Not ordered after the connection's earlier commands on the envelope (`.requests`
            // would be): opens of different uids pipelined on one connection (a backend opening
            // for many users) then reach the proposer together and merge into one instance. An
            // open commutes with every other open except the same uid's, which answers the same.
            return .future { [node] in node.execute(key: key, .write(.envelope(op))).map { Self.reply($0) } }
        case "envelope.info":
            guard args.count == 2 else { return .reply(Self.arity(name)) }
            guard args[1].count <= 256 else { return .reply(Self.idTooLong) }
            let key = Self.key(args[1])
            return .run { await self.info(key: key) }
        default:
            return nil
        }
    }

    /// A linearizable read; an envelope past its deadline (by this node's clock) that no operation
    /// has expired yet is expired first, through the protocol, so INFO reports the refund that
    /// every later reader sees.
    func info(key: [UInt8]) async -> RESPValue {
        var r = await node.execute(key: key, .read)
        guard case .value(let bytes) = r else { return CommandProcessor.failure(r, write: false) }
        guard let bytes else { return Self.noSuch }
        guard var s = EnvelopeState.decode(bytes) else { return Self.wrongType }
        let now = clock()
        if !s.expired && s.deadlineMs != 0 && now >= s.deadlineMs {
            r = await node.execute(key: key, .write(.envelope(.expire(nowMs: now))))
            guard case .done(.envelope) = r else { return Self.reply(r) }
            r = await node.execute(key: key, .read)
            guard case .value(let b?) = r, let again = EnvelopeState.decode(b) else {
                return CommandProcessor.failure(r, write: false)
            }
            s = again
        }
        return Self.infoReply(s)
    }

    /// Field/value pairs, like XINFO: `shares` is `[[uid, cents] …]` in opening order.
    static func infoReply(_ s: EnvelopeState) -> RESPValue {
        func field(_ name: String, _ v: UInt64) -> [RESPValue] {
            [.bulkString(Array(name.utf8)), .integer(Int64(bitPattern: v))]
        }
        var out: [RESPValue] = []
        out += field("total_cents", s.totalCents)
        out += field("remaining_cents", s.remaining)
        out += field("count", UInt64(s.count))
        out += field("opened", UInt64(s.openers.count))
        out += field("expired", s.expired ? 1 : 0)
        out += field("refunded_cents", s.refunded)
        out += field("deadline_ms", s.deadlineMs)
        out.append(.bulkString(Array("shares".utf8)))
        out.append(
            .array(
                s.openers.map { .array([.integer(Int64(bitPattern: $0.uid)), .integer(Int64($0.amount))]) }))
        return .array(out)
    }
}
