// Sync inboxes as values of ordinary Paxos keys: the encoding of an inbox head and the pure
// apply logic of `Operation.inboxAppend` / `Operation.inboxSeal` (docs/SYNC.md).
//
// An inbox is one **head** key plus immutable **bucket** keys:
// ```
//  head  \0inbox:<uid>          last seq, trimmed-through seq, index of sealed buckets,
//                               the newest unsealed messages (≤ 64, ≤ 256 KiB normally)
//  bucket \0inbox:<uid>:<first> up to 64 sealed messages, written once, before the head
//                               drops them (a crash in between leaves an orphan bucket that
//                               the next seal overwrites with the same bytes)
// ```
// Appends go to the head only, in strictly increasing sequence order: an append whose sequence
// is not above the head's `last` is refused, so once a reader has seen the inbox up to `s`
// nothing at or below `s` can appear later.

/// One message of an inbox.
public struct InboxMessage: Sendable, Hashable {
    public var seq: UInt64
    /// Wall-clock milliseconds given by the server that accepted it (for age-based retention).
    public var timeMs: UInt64
    public var payload: [UInt8]
    public init(seq: UInt64, timeMs: UInt64, payload: [UInt8]) {
        self.seq = seq
        self.timeMs = timeMs
        self.payload = payload
    }
}

/// A sealed bucket as the head's index lists it.
public struct InboxBucketRef: Sendable, Hashable {
    /// Sequence of its first message: the bucket key's suffix.
    public var first: UInt64
    public var last: UInt64
    public var count: UInt32
    /// Time of its newest message (age-based retention drops the bucket after it).
    public var lastTimeMs: UInt64
    public init(first: UInt64, last: UInt64, count: UInt32, lastTimeMs: UInt64) {
        self.first = first
        self.last = last
        self.count = count
        self.lastTimeMs = lastTimeMs
    }
}

/// How long an inbox keeps messages. Trimming drops whole buckets: at least `messagesMax`
/// messages are kept (up to one bucket more), and a bucket goes once its newest message is older
/// than `ageMsMax`.
public struct InboxRetention: Sendable, Hashable {
    public var messagesMax: UInt64
    public var ageMsMax: UInt64
    public init(messagesMax: UInt64 = 10_000, ageMsMax: UInt64 = 7 * 24 * 3_600_000) {
        self.messagesMax = messagesMax
        self.ageMsMax = ageMsMax
    }
}

/// The value of an inbox's head key.
public struct InboxHead: Sendable, Hashable {
    /// Sequence of the newest message ever appended (0 = none).
    public var last: UInt64 = 0
    /// Every message at or below this sequence may have been dropped by retention (0 = none).
    public var trimmedThrough: UInt64 = 0
    /// Sealed buckets, oldest first.
    public var buckets: [InboxBucketRef] = []
    /// Unsealed messages, oldest first, all newer than every bucket.
    public var messages: [InboxMessage] = []
    public init() {}

    /// Format version of the head and bucket encodings.
    public static let version: UInt8 = 1
    /// A head with this many unsealed messages asks to be sealed...
    public static let bucketMessagesMax = 64
    /// ...or with this many payload bytes.
    public static let bucketBytesMax = 256 << 10
    /// Beyond this the head refuses appends until it is sealed (bounds one Paxos value).
    public static let headMessagesMax = 4 * bucketMessagesMax
    public static let headBytesMax = 4 << 20

    /// Payload bytes of the unsealed messages.
    public var messageBytes: Int { messages.reduce(0) { $0 + $1.payload.count } }

    /// True when the bucket starting at `first` is garbage: retention dropped it (its messages are
    /// all at or below `trimmedThrough`, since buckets are contiguous and dropped oldest first) and
    /// the index no longer lists it — the key a crash between the trim and the delete left behind.
    /// A bucket written for a seal that has not applied yet starts above `trimmedThrough` (its
    /// messages are still in the head), so it is never taken for garbage.
    public func isOrphan(bucketFirst first: UInt64) -> Bool {
        first <= trimmedThrough && !buckets.contains { $0.first == first }
    }

    /// True when the oldest unsealed messages fill a bucket: 64 of them, or more bytes than a
    /// bucket holds. Strictly more: then the message that does not fit is already in the head, so
    /// later appends cannot change `sealPrefix` and every sealer writes the same bucket. (With
    /// `>=`, a head of exactly 256 KiB followed by an empty message would give two sealers two
    /// different buckets under one key, and the index could list a message the bucket lacks.)
    public var needsSeal: Bool {
        messages.count >= Self.bucketMessagesMax || messageBytes > Self.bucketBytesMax
    }

    /// The messages the next seal moves to a bucket: the longest prefix within a bucket's bounds
    /// (at least one message), or nil if the head does not need sealing. Deterministic in the
    /// prefix alone, so a retried seal of the same head writes the same bucket.
    public var sealPrefix: ArraySlice<InboxMessage>? {
        guard needsSeal else { return nil }
        var bytes = 0
        var n = 0
        for m in messages {
            if n == Self.bucketMessagesMax || (n > 0 && bytes + m.payload.count > Self.bucketBytesMax) {
                break
            }
            bytes += m.payload.count
            n += 1
        }
        return messages[..<n]
    }

    /// Messages kept in the inbox (sealed and unsealed).
    public var messageCount: UInt64 {
        buckets.reduce(UInt64(messages.count)) { $0 + UInt64($1.count) }
    }

    // MARK: - Encoding

    public func encoded() -> [UInt8] {
        var w = ByteWriter()
        w.bytes.reserveCapacity(32 + 28 * buckets.count + messageBytes + 20 * messages.count)
        w.u8(Self.version)
        w.u64(last)
        w.u64(trimmedThrough)
        w.u32(UInt32(buckets.count))
        for b in buckets {
            w.u64(b.first)
            w.u64(b.last)
            w.u32(b.count)
            w.u64(b.lastTimeMs)
        }
        Self.write(messages[...], into: &w)
        return w.bytes
    }

    /// Decodes a head; nil if `bytes` is not one.
    public static func decode(_ bytes: [UInt8]) -> InboxHead? {
        var r = ByteReader(bytes)
        guard r.u8() == version, let last = r.u64(), let trimmed = r.u64(), let nb = r.u32(),
            Int(nb) <= r.remaining / 28
        else { return nil }
        var h = InboxHead()
        h.last = last
        h.trimmedThrough = trimmed
        for _ in 0..<nb {
            guard let f = r.u64(), let l = r.u64(), let c = r.u32(), let t = r.u64() else { return nil }
            h.buckets.append(InboxBucketRef(first: f, last: l, count: c, lastTimeMs: t))
        }
        guard let ms = readMessages(&r), r.atEnd else { return nil }
        h.messages = ms
        return h
    }

    /// The value of a bucket key.
    public static func encodeBucket(_ messages: ArraySlice<InboxMessage>) -> [UInt8] {
        var w = ByteWriter()
        w.u8(version)
        write(messages, into: &w)
        return w.bytes
    }

    /// Decodes a bucket; nil if malformed.
    public static func decodeBucket(_ bytes: [UInt8]) -> [InboxMessage]? {
        var r = ByteReader(bytes)
        guard r.u8() == version, let ms = readMessages(&r), r.atEnd else { return nil }
        return ms
    }

    static func write(_ messages: ArraySlice<InboxMessage>, into w: inout ByteWriter) {
        w.u32(UInt32(messages.count))
        for m in messages {
            w.u64(m.seq)
            w.u64(m.timeMs)
            w.blob(m.payload)
        }
    }

    static func readMessages(_ r: inout ByteReader) -> [InboxMessage]? {
        guard let n = r.u32(), Int(n) <= r.remaining / 20 else { return nil }
        var out: [InboxMessage] = []
        out.reserveCapacity(Int(n))
        for _ in 0..<n {
            guard let s = r.u64(), let t = r.u64(), let p = r.blob() else { return nil }
            out.append(InboxMessage(seq: s, timeMs: t, payload: p))
        }
        return out
    }

    // MARK: - Apply (pure; called by `KeyValue.applying` on every replica alike)

    /// Applies `inboxAppend` to the head's bytes (nil = no inbox yet): the new bytes and result.
    public static func applyAppend(_ bytes: [UInt8]?, seq: UInt64, timeMs: UInt64, payload: [UInt8])
        -> (bytes: [UInt8]?, result: OperationResult)
    {
        var head = InboxHead()
        if let bytes {
            guard let h = decode(bytes) else { return (bytes, .notANumber) }
            head = h
        }
        // The ordering rule: appends arrive in strictly increasing order, or not at all.
        guard seq > head.last else { return (bytes, .inboxRefused(last: head.last)) }
        guard head.messages.count < headMessagesMax, head.messageBytes + payload.count <= headBytesMax
        else { return (bytes, .inboxFull) }
        head.last = seq
        head.messages.append(InboxMessage(seq: seq, timeMs: timeMs, payload: payload))
        return (head.encoded(), .inboxAppendedAt(seq: seq, needsSeal: head.needsSeal))
    }

    /// Applies `inboxSeal`: drops unsealed messages `first...last` from the head and indexes them as
    /// the bucket keyed by `first` (which the caller wrote before), then trims old buckets. A
    /// seal that no longer matches the head (another caller sealed first) changes nothing.
    public static func applySeal(
        _ bytes: [UInt8]?, first: UInt64, last: UInt64, retention: InboxRetention, nowMs: UInt64
    ) -> (bytes: [UInt8]?, result: OperationResult) {
        guard let bytes, let decoded = decode(bytes) else {
            return (bytes, bytes == nil ? .inboxSealed(applied: false, dropped: []) : .notANumber)
        }
        var head = decoded
        guard let prefix = head.sealPrefix, prefix.first?.seq == first, prefix.last?.seq == last else {
            return (bytes, .inboxSealed(applied: false, dropped: []))
        }
        head.buckets.append(
            InboxBucketRef(
                first: first, last: last, count: UInt32(prefix.count), lastTimeMs: prefix.last!.timeMs))
        head.messages.removeFirst(prefix.count)
        var dropped: [UInt64] = []
        var total = head.messageCount
        while let oldest = head.buckets.first {
            let tooMany = total - UInt64(oldest.count) >= retention.messagesMax
            let tooOld = nowMs > oldest.lastTimeMs && nowMs - oldest.lastTimeMs > retention.ageMsMax
            guard tooMany || tooOld else { break }
            head.buckets.removeFirst()
            total -= UInt64(oldest.count)
            head.trimmedThrough = max(head.trimmedThrough, oldest.last)
            dropped.append(oldest.first)
        }
        return (head.encoded(), .inboxSealed(applied: true, dropped: dropped))
    }
}
