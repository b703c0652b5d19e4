// XADD's idempotency key (docs/QUEUE.md, "Retries: XADD IDMP"): Redis 8.6's `IDMP producer-id
// idempotent-id` and `IDMPAUTO producer-id`. The stream remembers, in its replicated value, which
// (producer, idempotent id) pairs it added recently and the entry id each got; an XADD carrying a
// pair it remembers answers that id and adds nothing. Because the memory is part of the value that
// Paxos chooses, a retry through any node, after any failover, sees it. Pure: the time that ages
// the memory is the clock carried in the write, as for `*` ids.
import TernCore

/// An XADD's idempotency option, as given.
public enum StreamIdempotencyOption: Sendable, Hashable {
    /// `IDMP producer-id idempotent-id`.
    case given(producer: [UInt8], iid: [UInt8])
    /// `IDMPAUTO producer-id`: the idempotent id is derived from the entry's fields and values.
    case auto(producer: [UInt8])

    /// The remembered form: 128-bit hashes of the producer and of the idempotent id (any length
    /// in, 32 bytes kept), two XXH64s with different seeds each.
    func key(fields: [[UInt8]]) -> StreamValue.IdempotencyKey {
        func h(_ b: [UInt8]) -> (UInt64, UInt64) {
            (XXH64.hash(b, seed: 0x1D3F), XXH64.hash(b, seed: 0x7A11))
        }
        let producer: [UInt8]
        let iid: [UInt8]
        switch self {
        case .given(let p, let i):
            producer = p
            iid = i
        case .auto(let p):
            producer = p
            var w = ByteWriter()
            for f in fields { w.blob(f) }
            iid = w.bytes
        }
        let (p1, p2) = h(producer)
        let (i1, i2) = h(iid)
        return .init(producer: p1, producer2: p2, iid: i1, iid2: i2)
    }
}

extension StreamValue {
    /// A (producer, idempotent id) pair, hashed.
    public struct IdempotencyKey: Sendable, Hashable {
        public var producer: UInt64
        public var producer2: UInt64
        public var iid: UInt64
        public var iid2: UInt64
        public init(producer: UInt64, producer2: UInt64, iid: UInt64, iid2: UInt64) {
            self.producer = producer
            self.producer2 = producer2
            self.iid = iid
            self.iid2 = iid2
        }
        var sameProducer: (IdempotencyKey) -> Bool {
            { $0.producer == producer && $0.producer2 == producer2 }
        }
    }
    /// One XADD with an idempotency key that added an entry.
    public struct IdempotentAdd: Sendable, Hashable {
        public var key: IdempotencyKey
        /// The id the entry got: what a retry answers.
        public var id: StreamID
        /// The clock carried by that XADD.
        public var addedMs: UInt64
        public init(key: IdempotencyKey, id: StreamID, addedMs: UInt64) {
            self.key = key
            self.id = id
            self.addedMs = addedMs
        }
    }

    /// How long a pair is remembered at least (Redis 8.6's default IDMP-DURATION, 100 s) …
    public static let idempotencyDurationMs: UInt64 = 100_000
    /// … unless its producer made this many newer keyed adds (Redis's default IDMP-MAXSIZE) …
    public static let idempotencyPerProducerMax = 100
    /// … or the stream this many, all producers together (Tern's bound: each write carries the
    /// whole stream, so its memory is bounded too — 56 bytes a pair, at most 55 KiB).
    public static let idempotencyTotalMax = 1_000

    /// Forgets the pairs older than the duration at `nowMs`.
    mutating func pruneIdempotent(nowMs: UInt64) {
        idempotent.removeAll { $0.addedMs &+ Self.idempotencyDurationMs <= nowMs }
    }

    /// The id the add of `key` got, if the stream remembers it.
    func idempotentID(_ key: IdempotencyKey) -> StreamID? {
        idempotent.last { $0.key == key }?.id
    }

    /// Remembers that `key` added entry `id` at `nowMs`, within the bounds.
    mutating func rememberIdempotent(_ key: IdempotencyKey, id: StreamID, nowMs: UInt64) {
        let same = key.sameProducer
        if idempotent.reduce(0, { $0 + (same($1.key) ? 1 : 0) }) >= Self.idempotencyPerProducerMax,
            let oldest = idempotent.firstIndex(where: { same($0.key) })
        {
            idempotent.remove(at: oldest)
        }
        if idempotent.count >= Self.idempotencyTotalMax { idempotent.removeFirst() }
        idempotent.append(IdempotentAdd(key: key, id: id, addedMs: nowMs))
    }

    // MARK: Codec (a section after the groups, written only when there is something to keep,
    // so a stream that never saw IDMP encodes exactly as before)

    static let idempotencySection: UInt8 = 1

    func encodeIdempotent(_ w: inout ByteWriter) {
        guard !idempotent.isEmpty else { return }
        w.u8(Self.idempotencySection)
        w.u32(UInt32(idempotent.count))
        for a in idempotent {
            for x in [a.key.producer, a.key.producer2, a.key.iid, a.key.iid2, a.id.ms, a.id.seq, a.addedMs] {
                w.u64(x)
            }
        }
    }

    /// Reads the section if `r` has one; false when it is malformed. Bytes after it, or a section
    /// of another kind (a later version's), are skipped, not refused: a stream that failed to
    /// decode would be taken for an empty one by the next write.
    mutating func decodeIdempotent(_ r: inout ByteReader) -> Bool {
        guard !r.atEnd, r.u8() == Self.idempotencySection else { return true }
        guard let n = r.u32(), Int(n) <= r.remaining / 56 else { return false }
        idempotent.reserveCapacity(Int(n))
        for _ in 0..<n {
            var x: [UInt64] = []
            for _ in 0..<7 {
                guard let v = r.u64() else { return false }
                x.append(v)
            }
            idempotent.append(
                IdempotentAdd(
                    key: IdempotencyKey(producer: x[0], producer2: x[1], iid: x[2], iid2: x[3]),
                    id: StreamID(x[4], x[5]), addedMs: x[6]))
        }
        return true
    }
}
