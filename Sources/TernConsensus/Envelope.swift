public import TernCore

// Red envelopes as values of ordinary Paxos keys: the encoding of an envelope and the pure apply
// logic of `Operation.envelope` (docs/ENVELOPE.md).
//
// ```
//  value := version u8 | total u64 | count u32 | seed u64 | deadlineMs u64 | remaining u64
//           | refunded u64 | flags u8 | opened u32 | (uid u64 | amount u32) * opened
// ```
// 12 bytes per opener, appended at the end, so an open patches the header in place and appends
// (no decode of the openers: a hot envelope merges hundreds of opens into one instance).
//
// The amount of the k-th open is drawn when the open APPLIES, from `XXH64(seed ‖ k)`: every
// replica (and a proposer that re-proposes an adopted value) computes the same amount, and two
// opens merged into one instance each see the remaining amount the other left. The seed is chosen
// once, by whoever proposed the CREATE, and then lives in the replicated value.

/// One envelope command, carried by `Operation.envelope`.
public enum EnvelopeOp: Sendable, Hashable {
    /// Create the envelope (refused if the key holds one). `deadlineMs` 0 = never expires; `seed`
    /// is the randomness every open draws from.
    case create(totalCents: UInt64, count: UInt32, deadlineMs: UInt64, seed: UInt64)
    /// Open it for `uid` at the proposer's wall-clock `nowMs`: the amount is drawn at apply.
    case open(uid: UInt64, nowMs: UInt64)
    /// Refund what is left if the deadline has passed at `nowMs` (the proposer's clock).
    case expire(nowMs: UInt64)
    /// MUTANT ONLY (`tern sim --envelope-mutant proposer-draws`): an open whose amount the
    /// proposer drew from its own view and RNG; apply takes it as given. No server sends it.
    case openDrawn(uid: UInt64, nowMs: UInt64, amount: UInt64)
}

/// The result of an `EnvelopeOp`, as the chosen instance that applied it decided.
public enum EnvelopeResult: Sendable, Hashable {
    case created
    /// The key already holds an envelope.
    case exists
    /// No envelope under the key.
    case noSuchEnvelope
    /// `uid` got `amount` cents; `again` when it had opened before (the same amount).
    case opened(amount: UInt64, again: Bool)
    /// Every share is taken.
    case empty
    /// The envelope expired (now or earlier); `refunded` cents went back to its creator.
    case expired(refunded: UInt64)
    /// `expire` before the deadline: nothing changed.
    case notExpired
}

/// One opener's share.
public struct EnvelopeShare: Sendable, Hashable {
    public var uid: UInt64
    public var amount: UInt64
    public init(uid: UInt64, amount: UInt64) {
        self.uid = uid
        self.amount = amount
    }
}

/// The value of an envelope key.
public struct EnvelopeState: Sendable, Hashable {
    public var totalCents: UInt64
    public var count: UInt32
    public var seed: UInt64
    /// Wall-clock milliseconds after which opens refund instead (0 = never).
    public var deadlineMs: UInt64
    /// Cents not yet given out nor refunded.
    public var remaining: UInt64
    /// Cents given back at expiry.
    public var refunded: UInt64
    public var expired: Bool
    /// The shares, in the order they were opened.
    public var openers: [EnvelopeShare]

    public static let version: UInt8 = 1
    /// Largest `count`: bounds the value to 12 bytes × 10 000 + header.
    public static let countMax: UInt32 = 10_000
    /// Largest total (amounts are stored in 32 bits).
    public static let totalCentsMax = UInt64(UInt32.max)
    static let headerBytes = 1 + 8 + 4 + 8 + 8 + 8 + 8 + 1 + 4
    static let openerBytes = 12

    /// Sum of the shares given out.
    public var sharesTotal: UInt64 { openers.reduce(0) { $0 + $1.amount } }
    /// The amount `uid` got, if it opened.
    public func share(of uid: UInt64) -> UInt64? { openers.first { $0.uid == uid }?.amount }

    public init(totalCents: UInt64, count: UInt32, seed: UInt64, deadlineMs: UInt64) {
        self.totalCents = totalCents
        self.count = count
        self.seed = seed
        self.deadlineMs = deadlineMs
        remaining = totalCents
        refunded = 0
        expired = false
        openers = []
    }

    public func encoded() -> [UInt8] {
        var w = ByteWriter()
        w.bytes.reserveCapacity(Self.headerBytes + Self.openerBytes * openers.count)
        w.u8(Self.version)
        w.u64(totalCents)
        w.u32(count)
        w.u64(seed)
        w.u64(deadlineMs)
        w.u64(remaining)
        w.u64(refunded)
        w.u8(expired ? 1 : 0)
        w.u32(UInt32(openers.count))
        for o in openers {
            w.u64(o.uid)
            w.u32(UInt32(o.amount))
        }
        return w.bytes
    }

    /// Decodes an envelope; nil if `bytes` is not one.
    public static func decode(_ bytes: [UInt8]) -> EnvelopeState? {
        var r = ByteReader(bytes)
        guard r.u8() == version, let total = r.u64(), let count = r.u32(), let seed = r.u64(),
            let deadline = r.u64(), let remaining = r.u64(), let refunded = r.u64(), let flags = r.u8(),
            flags <= 1, let n = r.u32(), Int(n) * openerBytes == r.remaining
        else { return nil }
        var s = EnvelopeState(totalCents: total, count: count, seed: seed, deadlineMs: deadline)
        s.remaining = remaining
        s.refunded = refunded
        s.expired = flags == 1
        s.openers.reserveCapacity(Int(n))
        for _ in 0..<n {
            guard let u = r.u64(), let a = r.u32() else { return nil }
            s.openers.append(EnvelopeShare(uid: u, amount: UInt64(a)))
        }
        return s
    }

    /// The amount the open with index `index` (0-based) draws when `remaining` cents are left for
    /// `left` openers (≥ 1, and `remaining` ≥ `left`): the last gets the rest; the others a
    /// uniform draw in [1, 2 × remaining ÷ left] ("twice the remaining mean"), capped so that
    /// every later opener can still get 1 cent.
    public static func draw(seed: UInt64, index: UInt32, remaining: UInt64, left: UInt32) -> UInt64 {
        precondition(left >= 1 && remaining >= UInt64(left), "an envelope owes every opener a cent")
        if left == 1 { return remaining }
        let hi = min(2 * remaining / UInt64(left), remaining - UInt64(left - 1))
        var w = ByteWriter()
        w.u64(seed)
        w.u32(index)
        return 1 + XXH64.hash(w.bytes) % hi
    }

    // MARK: - Apply (pure; called by `KeyValue.applying` on every replica alike)

    // Offsets of the header fields patched in place.
    static let remainingAt = 1 + 8 + 4 + 8 + 8
    static let refundedAt = remainingAt + 8
    static let flagsAt = refundedAt + 8
    static let openedAt = flagsAt + 1

    /// Applies `op` to the key's bytes in place (nil = absent); the result. A value that is not
    /// an envelope is left alone and answers `.notANumber` (the wrong-type answer, as the inbox's).
    public static func apply(_ bytes: inout [UInt8]?, _ op: EnvelopeOp) -> OperationResult {
        switch op {
        case .create(let total, let count, let deadline, let seed):
            guard bytes == nil else { return .envelope(.exists) }
            precondition(count >= 1 && total >= UInt64(count) && total <= totalCentsMax && count <= countMax)
            bytes = EnvelopeState(totalCents: total, count: count, seed: seed, deadlineMs: deadline).encoded()
            return .envelope(.created)
        case .open(let uid, let now):
            return open(&bytes, uid: uid, nowMs: now, drawn: nil)
        case .openDrawn(let uid, let now, let amount):
            return open(&bytes, uid: uid, nowMs: now, drawn: amount)
        case .expire(let now):
            guard bytes != nil else { return .envelope(.noSuchEnvelope) }
            guard let h = header(bytes!) else { return .notANumber }
            if h.expired { return .envelope(.expired(refunded: h.refunded)) }
            guard h.deadline != 0, now >= h.deadline else { return .envelope(.notExpired) }
            return expire(&bytes!, h)
        }
    }

    struct Header {
        var count: UInt32
        var seed: UInt64
        var deadline: UInt64
        var remaining: UInt64
        var refunded: UInt64
        var expired: Bool
        var opened: UInt32
    }

    /// The header of an envelope value, checked against its length; nil if not an envelope.
    static func header(_ b: [UInt8]) -> Header? {
        guard b.count >= headerBytes, b[0] == version else { return nil }
        let opened = u32(b, openedAt)
        guard b[flagsAt] <= 1, b.count == headerBytes + openerBytes * Int(opened) else { return nil }
        return Header(
            count: u32(b, 9), seed: u64(b, 13), deadline: u64(b, 21), remaining: u64(b, remainingAt),
            refunded: u64(b, refundedAt), expired: b[flagsAt] == 1, opened: opened)
    }

    static func expire(_ b: inout [UInt8], _ h: Header) -> OperationResult {
        put64(&b, refundedAt, h.refunded + h.remaining)
        put64(&b, remainingAt, 0)
        b[flagsAt] = 1
        return .envelope(.expired(refunded: h.refunded + h.remaining))
    }

    static func open(_ bytes: inout [UInt8]?, uid: UInt64, nowMs: UInt64, drawn: UInt64?) -> OperationResult {
        guard bytes != nil else { return .envelope(.noSuchEnvelope) }
        guard let h = header(bytes!) else { return .notANumber }
        // Opening twice answers the first amount, even after expiry.
        if let again = previousShare(bytes!, uid: uid, opened: h.opened) {
            return .envelope(.opened(amount: again, again: true))
        }
        if h.expired { return .envelope(.expired(refunded: h.refunded)) }
        if h.deadline != 0 && nowMs >= h.deadline { return expire(&bytes!, h) }
        guard h.opened < h.count else { return .envelope(.empty) }
        let amount: UInt64
        if let drawn {
            // The mutant: trusts the proposer's amount (drawn from a view that merged opens
            // make stale), saturating rather than trapping so the checks, not a crash, see it.
            amount = drawn
            put64(&bytes!, remainingAt, h.remaining >= amount ? h.remaining - amount : 0)
        } else {
            amount = draw(seed: h.seed, index: h.opened, remaining: h.remaining, left: h.count - h.opened)
            put64(&bytes!, remainingAt, h.remaining - amount)
        }
        put32(&bytes!, openedAt, h.opened + 1)
        var w = ByteWriter()
        w.u64(uid)
        w.u32(UInt32(truncatingIfNeeded: amount))
        bytes!.append(contentsOf: w.bytes)
        return .envelope(.opened(amount: amount, again: false))
    }

    /// The amount `uid` already got, scanning the openers. Every open of a hot envelope scans them
    /// all (up to 10 000), so the scan loads whole little-endian words instead of assembling each
    /// uid from eight bounds-checked byte reads.
    static func previousShare(_ b: [UInt8], uid: UInt64, opened: UInt32) -> UInt64? {
        precondition(b.count >= headerBytes + openerBytes * Int(opened))
        return b.withUnsafeBytes { raw -> UInt64? in
            var at = headerBytes
            for _ in 0..<opened {
                if UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: at, as: UInt64.self)) == uid {
                    return UInt64(
                        UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: at + 8, as: UInt32.self)))
                }
                at += openerBytes
            }
            return nil
        }
    }

    static func u32(_ b: [UInt8], _ at: Int) -> UInt32 {
        var v: UInt32 = 0
        for k in 0..<4 { v |= UInt32(b[at + k]) << (8 * k) }
        return v
    }
    static func u64(_ b: [UInt8], _ at: Int) -> UInt64 {
        var v: UInt64 = 0
        for k in 0..<8 { v |= UInt64(b[at + k]) << (8 * k) }
        return v
    }
    static func put32(_ b: inout [UInt8], _ at: Int, _ v: UInt32) {
        for k in 0..<4 { b[at + k] = UInt8(truncatingIfNeeded: v >> (8 * k)) }
    }
    static func put64(_ b: inout [UInt8], _ at: Int, _ v: UInt64) {
        for k in 0..<8 { b[at + k] = UInt8(truncatingIfNeeded: v >> (8 * k)) }
    }
}

// MARK: - Wire (tags 40…47 for operations, 40…55 for results)

extension EnvelopeOp {
    /// Appends the op, its tag first (40…43).
    public func encode(into w: inout ByteWriter) {
        switch self {
        case .create(let total, let count, let deadline, let seed):
            w.u8(40)
            w.u64(total)
            w.u32(count)
            w.u64(deadline)
            w.u64(seed)
        case .open(let uid, let now):
            w.u8(41)
            w.u64(uid)
            w.u64(now)
        case .expire(let now):
            w.u8(42)
            w.u64(now)
        case .openDrawn(let uid, let now, let amount):
            w.u8(43)
            w.u64(uid)
            w.u64(now)
            w.u64(amount)
        }
    }

    /// Reads the fields of the op with `tag` (already read); nil if malformed. A CREATE out of
    /// bounds is malformed: apply relies on the bounds.
    public static func decode(tag: UInt8, _ r: inout ByteReader) -> EnvelopeOp? {
        switch tag {
        case 40:
            guard let t = r.u64(), let c = r.u32(), let d = r.u64(), let s = r.u64(), c >= 1,
                c <= EnvelopeState.countMax, t >= UInt64(c), t <= EnvelopeState.totalCentsMax
            else { return nil }
            return .create(totalCents: t, count: c, deadlineMs: d, seed: s)
        case 41:
            guard let u = r.u64(), let n = r.u64() else { return nil }
            return .open(uid: u, nowMs: n)
        case 42: return r.u64().map { .expire(nowMs: $0) }
        case 43:
            guard let u = r.u64(), let n = r.u64(), let a = r.u64() else { return nil }
            return .openDrawn(uid: u, nowMs: n, amount: a)
        default: return nil
        }
    }
}

extension EnvelopeResult {
    /// Appends the result, its tag first (40…47).
    public func encode(into w: inout ByteWriter) {
        switch self {
        case .created: w.u8(40)
        case .exists: w.u8(41)
        case .noSuchEnvelope: w.u8(42)
        case .opened(let amount, let again):
            w.u8(again ? 44 : 43)
            w.u64(amount)
        case .empty: w.u8(45)
        case .expired(let refunded):
            w.u8(46)
            w.u64(refunded)
        case .notExpired: w.u8(47)
        }
    }

    /// Reads the fields of the result with `tag` (already read); nil if malformed.
    public static func decode(tag: UInt8, _ r: inout ByteReader) -> EnvelopeResult? {
        switch tag {
        case 40: return .created
        case 41: return .exists
        case 42: return .noSuchEnvelope
        case 43, 44: return r.u64().map { .opened(amount: $0, again: tag == 44) }
        case 45: return .empty
        case 46: return r.u64().map { .expired(refunded: $0) }
        case 47: return .notExpired
        default: return nil
        }
    }
}
