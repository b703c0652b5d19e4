public import TernCore

/// Why bytes from a peer were refused. Decoding never crashes and never reads past the end.
public struct WireError: Error, Sendable, Hashable, CustomStringConvertible {
    /// What is wrong, for a log line.
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { "bad peer frame: \(message)" }
}

/// The peer wire format of Paxos frames, and of the operations and outcomes the server's own
/// envelopes carry. Pure: bytes in, values out.
///
/// ```
/// frame := version u8 (=2; 2 added KeyValue.floor and instances) | from u32 | to u32 | count u32 | item*count
/// item  := key (len u32 | bytes) | tag u8 | fields of the message (see `PaxosMessage`)
/// slot  := 0 | 1 instance u64 ballot keyValue          ballot := round u64 | node u32
/// ```
/// Integers are little-endian; `keyValue` is the same encoding as the persisted record's
/// (`PaxosCodec`). Every length is checked against the bytes that remain, counts are bounded by
/// them, and trailing bytes are an error: a truncated or garbage frame is refused whole.
public enum PaxosWire {
    /// The frame format written today.
    public static let version: UInt8 = 2
    /// The smallest possible item: an empty key (4) and a tag with its smallest fields (1 + 8).
    static let itemBytesMin = 13

    /// Encodes a frame.
    public static func encode(_ frame: Frame) -> [UInt8] { encode(frame, after: []) }

    /// Encodes a frame after `prefix` (a node's envelope byte), in one array sized up front: a
    /// frame carrying a list's head or a stream is kilobytes, and growing the array, then copying
    /// it behind the prefix, cost a copy and several reallocations per frame.
    public static func encode(_ frame: Frame, after prefix: [UInt8]) -> [UInt8] {
        var w = ByteWriter()
        var size = prefix.count + 13
        for item in frame.items { size += 4 + item.key.count + sizeEstimate(item.message) }
        w.bytes.reserveCapacity(size)
        w.bytes += prefix
        w.u8(version)
        w.u32(frame.from.rawValue)
        w.u32(frame.to.rawValue)
        w.u32(UInt32(frame.items.count))
        for item in frame.items {
            w.blob(item.key)
            message(item.message, &w)
        }
        return w.bytes
    }

    /// Decodes a frame produced by `encode`.
    /// - Throws: `WireError` for a wrong version, a truncated field, an unknown tag, a count the
    ///   bytes cannot hold, or trailing bytes.
    public static func decode(_ bytes: [UInt8]) throws(WireError) -> Frame {
        try decode(bytes, from: 0)
    }

    /// Decodes the frame that starts at `offset` of `bytes` and runs to its end (after a node's
    /// envelope byte), without copying it out first.
    public static func decode(_ bytes: [UInt8], from offset: Int) throws(WireError) -> Frame {
        guard offset <= bytes.count else { throw WireError("empty") }
        var r = ByteReader(bytes, range: offset..<bytes.count)
        guard let v = r.u8() else { throw WireError("empty") }
        guard v == version else { throw WireError("version \(v), expected \(version)") }
        guard let from = r.u32(), let to = r.u32(), let count = r.u32() else {
            throw WireError("truncated header")
        }
        guard Int(count) <= r.remaining / itemBytesMin else {
            throw WireError("\(count) items cannot fit in \(r.remaining) bytes")
        }
        var items: [FrameItem] = []
        items.reserveCapacity(Int(count))
        for k in 0..<Int(count) {
            guard let key = r.blob() else { throw WireError("item \(k): truncated key") }
            guard key.count <= ReplicaNode.keyBytesMax else {
                throw WireError(
                    "item \(k): key of \(key.count) bytes (the limit is \(ReplicaNode.keyBytesMax))")
            }
            guard let m = message(&r) else { throw WireError("item \(k): bad or truncated message") }
            items.append(FrameItem(key: key, message: m))
        }
        guard r.atEnd else { throw WireError("\(r.remaining) trailing bytes") }
        return Frame(from: NodeID(from), to: NodeID(to), items: items)
    }

    /// About how many bytes `message` writes for `m`, what `encode` reserves: 32 per de-dup
    /// entry covers ids with results of up to ~10 bytes (longer results cost the array one more
    /// growth, as before).
    static func sizeEstimate(_ m: PaxosMessage) -> Int {
        func value(_ v: KeyValue) -> Int { 32 + (v.bytes?.count ?? 0) + 32 * v.recent.count }
        func slot(_ s: AcceptedSlot?) -> Int { s.map { 32 + value($0.value) } ?? 1 }
        switch m {
        case .accept(_, _, let v), .chosen(_, let v), .learnReply(_, let v): return 32 + value(v)
        case .promise(_, _, let a), .readState(_, _, let a): return 32 + slot(a)
        case .recovery(_, _, _, let v, let a): return 64 + value(v) + slot(a)
        default: return 48
        }
    }

    static func message(_ m: PaxosMessage, _ w: inout ByteWriter) {
        switch m {
        case .prepare(let i, let b):
            w.u8(0)
            w.u64(i)
            w.ballot(b)
        case .promise(let i, let b, let slot):
            w.u8(1)
            w.u64(i)
            w.ballot(b)
            self.slot(slot, &w)
        case .accept(let i, let b, let v):
            w.u8(2)
            w.u64(i)
            w.ballot(b)
            w.keyValue(v)
        case .accepted(let i, let b):
            w.u8(3)
            w.u64(i)
            w.ballot(b)
        case .reject(let i, let b, let p, let c):
            w.u8(4)
            w.u64(i)
            w.ballot(b)
            w.ballot(p)
            w.u64(c)
        case .chosen(let i, let v):
            w.u8(5)
            w.u64(i)
            w.keyValue(v)
        case .readCheck(let n):
            w.u8(6)
            w.u64(n)
        case .readState(let n, let c, let slot):
            w.u8(7)
            w.u64(n)
            w.u64(c)
            self.slot(slot, &w)
        case .learn(let have):
            w.u8(8)
            w.u64(have)
        case .learnReply(let i, let v):
            w.u8(9)
            w.u64(i)
            w.keyValue(v)
        case .recover(let b):
            w.u8(10)
            w.ballot(b)
        case .commit(let i, let b):
            w.u8(12)
            w.u64(i)
            w.ballot(b)
        case .recovery(let b, let p, let c, let v, let slot):
            w.u8(11)
            w.ballot(b)
            w.ballot(p)
            w.u64(c)
            w.keyValue(v)
            self.slot(slot, &w)
        }
    }

    static func message(_ r: inout ByteReader) -> PaxosMessage? {
        guard let tag = r.u8() else { return nil }
        switch tag {
        case 0:
            guard let i = r.u64(), let b = r.ballot() else { return nil }
            return .prepare(instance: i, ballot: b)
        case 1:
            guard let i = r.u64(), let b = r.ballot(), let s = slot(&r) else { return nil }
            return .promise(instance: i, ballot: b, accepted: s.value)
        case 2:
            guard let i = r.u64(), let b = r.ballot(), let v = r.keyValue() else { return nil }
            return .accept(instance: i, ballot: b, value: v)
        case 3:
            guard let i = r.u64(), let b = r.ballot() else { return nil }
            return .accepted(instance: i, ballot: b)
        case 4:
            guard let i = r.u64(), let b = r.ballot(), let p = r.ballot(), let c = r.u64() else { return nil }
            return .reject(instance: i, ballot: b, promised: p, chosen: c)
        case 5:
            guard let i = r.u64(), let v = r.keyValue() else { return nil }
            return .chosen(instance: i, value: v)
        case 6:
            return r.u64().map { .readCheck(nonce: $0) }
        case 7:
            guard let n = r.u64(), let c = r.u64(), let s = slot(&r) else { return nil }
            return .readState(nonce: n, chosen: c, accepted: s.value)
        case 8:
            return r.u64().map { .learn(have: $0) }
        case 9:
            guard let i = r.u64(), let v = r.keyValue() else { return nil }
            return .learnReply(instance: i, value: v)
        case 10:
            return r.ballot().map { .recover(ballot: $0) }
        case 11:
            guard let b = r.ballot(), let p = r.ballot(), let c = r.u64(), let v = r.keyValue(),
                let s = slot(&r)
            else { return nil }
            return .recovery(ballot: b, promised: p, chosen: c, value: v, accepted: s.value)
        case 12:
            guard let i = r.u64(), let b = r.ballot() else { return nil }
            return .commit(instance: i, ballot: b)
        default:
            return nil
        }
    }

    static func slot(_ s: AcceptedSlot?, _ w: inout ByteWriter) {
        guard let s else {
            w.u8(0)
            return
        }
        w.u8(1)
        w.u64(s.instance)
        w.ballot(s.ballot)
        w.keyValue(s.value)
    }

    /// A decoded optional slot: the outer optional is "malformed", the inner one "no slot".
    static func slot(_ r: inout ByteReader) -> (value: AcceptedSlot?, Void)? {
        guard let flag = r.u8() else { return nil }
        if flag == 0 { return (nil, ()) }
        guard flag == 1, let i = r.u64(), let b = r.ballot(), let v = r.keyValue() else { return nil }
        return (AcceptedSlot(instance: i, ballot: b, value: v), ())
    }

    // MARK: - Operations and outcomes (for envelopes of forwarded client requests)

    /// Appends `op` to `w`.
    public static func encode(_ op: Operation, into w: inout ByteWriter) {
        switch op {
        case .put(let b):
            w.u8(0)
            w.blob(b)
        case .delete:
            w.u8(1)
        case .incr(let d):
            w.u8(2)
            w.u64(UInt64(bitPattern: d))
        case .cas(let expected, let new):
            w.u8(3)
            if let e = expected {
                w.u8(1)
                w.blob(e)
            } else {
                w.u8(0)
            }
            w.blob(new)
        case .append(let b, let maxBytes):
            w.u8(4)
            w.blob(b)
            w.u64(UInt64(max(0, maxBytes)))
        case .set(let b, let condition, let returnOld):
            w.u8(5)
            w.blob(b)
            w.u8(condition.rawValue)
            w.u8(returnOld ? 1 : 0)
        case .remove:
            w.u8(6)
        // Sync inboxes (tags from 24 on).
        case .inboxAppend(let seq, let timeMs, let payload):
            w.u8(24)
            w.u64(seq)
            w.u64(timeMs)
            w.blob(payload)
        case .inboxSeal(let first, let last, let retention, let nowMs):
            w.u8(25)
            w.u64(first)
            w.u64(last)
            w.u64(retention.messagesMax)
            w.u64(retention.ageMsMax)
            w.u64(nowMs)
        case .envelope(let e): e.encode(into: &w)
        // Redis data commands (tags from 60 on).
        case .data(let args):
            w.u8(60)
            w.u32(UInt32(args.count))
            for a in args { w.blob(a) }
        // Hash-tag groups (tags from 70 on).
        case .group(let g):
            w.u8(70)
            w.u64(UInt64(max(0, g.bytesMax)))
            switch g.kind {
            case .member(let key, let op):
                w.u8(0)
                w.blob(key)
                encode(op, into: &w)
            case .transaction(let args):
                w.u8(1)
                w.u32(UInt32(args.count))
                for a in args { w.blob(a) }
            case .sweep:
                w.u8(2)
            }
        }
    }

    /// Reads an operation written by `encode(_:into:)`; nil if malformed.
    public static func decodeOperation(_ r: inout ByteReader) -> Operation? {
        guard let tag = r.u8() else { return nil }
        switch tag {
        case 0: return r.blob().map { .put($0) }
        case 1: return .delete
        case 2: return r.u64().map { .incr(Int64(bitPattern: $0)) }
        case 3:
            guard let flag = r.u8() else { return nil }
            var expected: [UInt8]?
            if flag == 1 {
                guard let e = r.blob() else { return nil }
                expected = e
            } else if flag != 0 {
                return nil
            }
            guard let new = r.blob() else { return nil }
            return .cas(expected: expected, new: new)
        case 4:
            guard let b = r.blob(), let m = r.u64(), m <= UInt64(Int.max) else { return nil }
            return .append(b, maxBytes: Int(m))
        case 5:
            guard let b = r.blob(), let c = r.u8().flatMap(SetCondition.init(rawValue:)), let g = r.u8(),
                g <= 1
            else { return nil }
            return .set(b, condition: c, returnOld: g == 1)
        case 6: return .remove
        case 24:
            guard let seq = r.u64(), let t = r.u64(), let p = r.blob() else { return nil }
            return .inboxAppend(seq: seq, timeMs: t, payload: p)
        case 25:
            guard let f = r.u64(), let l = r.u64(), let m = r.u64(), let a = r.u64(), let now = r.u64() else {
                return nil
            }
            return .inboxSeal(
                first: f, last: l, retention: InboxRetention(messagesMax: m, ageMsMax: a), nowMs: now)
        case 40...47: return EnvelopeOp.decode(tag: tag, &r).map { .envelope($0) }
        case 60:
            guard let n = r.u32(), n >= 1, Int(n) <= r.remaining / 4 else { return nil }
            var args: [[UInt8]] = []
            for _ in 0..<n {
                guard let a = r.blob() else { return nil }
                args.append(a)
            }
            return .data(args)
        case 70:
            guard let bound = r.u64(), bound <= UInt64(Int.max), let form = r.u8() else { return nil }
            switch form {
            case 0:
                // A member's operation is never a group's own (no nesting).
                guard let key = r.blob(), let op = decodeOperation(&r) else { return nil }
                if case .group = op { return nil }
                return .group(GroupOperation(.member(key, op), bytesMax: Int(bound)))
            case 1:
                guard let n = r.u32(), Int(n) <= r.remaining / 4 else { return nil }
                var args: [[UInt8]] = []
                for _ in 0..<n {
                    guard let a = r.blob() else { return nil }
                    args.append(a)
                }
                return .group(GroupOperation(.transaction(args), bytesMax: Int(bound)))
            case 2: return .group(GroupOperation(.sweep, bytesMax: Int(bound)))
            default: return nil
            }
        default: return nil
        }
    }

    /// Appends `outcome` to `w`.
    public static func encode(_ outcome: ClientOutcome, into w: inout ByteWriter) {
        switch outcome {
        case .done(let r):
            w.u8(0)
            w.result(r)
        case .value(nil):
            w.u8(1)
        case .value(let b?):
            w.u8(2)
            w.blob(b)
        case .retryable:
            w.u8(3)
        case .unknown:
            w.u8(4)
        case .typed(let v):
            w.u8(5)
            w.u8(v.kind.rawValue)
            w.u64(v.deadlineMs)
            w.blob(v.bytes)
        }
    }

    /// Reads an outcome written by `encode(_:into:)`; nil if malformed.
    public static func decodeOutcome(_ r: inout ByteReader) -> ClientOutcome? {
        guard let tag = r.u8() else { return nil }
        switch tag {
        case 0: return r.result().map { .done($0) }
        case 1: return .value(nil)
        case 2: return r.blob().map { .value($0) }
        case 3: return .retryable
        case 4: return .unknown
        case 5:
            guard let k = r.u8().flatMap(ValueKind.init(rawValue:)), let d = r.u64(), let b = r.blob() else {
                return nil
            }
            return .typed(StoredValue(kind: k, deadlineMs: d, bytes: b))
        default: return nil
        }
    }
}
