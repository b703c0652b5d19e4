public import TernCore

/// The sequence allocator's pure core (docs/SEQ.md): one `SectionAllocator` per section on a node.
///
/// No clock, socket or randomness: the host feeds it client requests and the results of the key
/// requests it asked for, and carries out its outputs. The host runs each key request on the
/// section key as a linearizable operation of the store (a read, or a compare-and-set).

/// Where a section's state lives in the store: the key `\0seq:<section>`.
public enum SeqKeys {
    /// The section key of `section` (clients cannot write keys that start with `\0`).
    public static func sectionKey(_ section: UInt64) -> [UInt8] {
        [0] + Array("seq:\(section)".utf8)
    }
}

/// The value of a section key: the section's ceiling and who last took it.
public struct SectionRecord: Sendable, Hashable, CustomStringConvertible {
    /// Every number handed out for a uid of the section is ≤ `maxSeq`.
    public var maxSeq: UInt64
    /// The node that wrote this record (took the section or raised its ceiling).
    public var owner: NodeID
    /// Bumped at each takeover.
    public var epoch: UInt64

    public init(maxSeq: UInt64, owner: NodeID, epoch: UInt64) {
        self.maxSeq = maxSeq
        self.owner = owner
        self.epoch = epoch
    }

    static let version: UInt8 = 1
    /// Encoded size: version byte, maxSeq, owner, epoch (big endian).
    public static let encodedCount = 21

    /// Fixed 21-byte encoding: version 1, maxSeq (8), owner (4), epoch (8), big endian.
    public var encoded: [UInt8] {
        var out: [UInt8] = [Self.version]
        out.reserveCapacity(Self.encodedCount)
        for s in stride(from: 56, through: 0, by: -8) {
            out.append(UInt8(truncatingIfNeeded: maxSeq >> UInt64(s)))
        }
        for s in stride(from: 24, through: 0, by: -8) {
            out.append(UInt8(truncatingIfNeeded: owner.rawValue >> UInt32(s)))
        }
        for s in stride(from: 56, through: 0, by: -8) {
            out.append(UInt8(truncatingIfNeeded: epoch >> UInt64(s)))
        }
        return out
    }

    /// Decodes `encoded`; nil if the bytes are not a version-1 record.
    public init?(decoding b: [UInt8]) {
        guard b.count == Self.encodedCount, b[0] == Self.version else { return nil }
        var m: UInt64 = 0
        for i in 1...8 { m = m << 8 | UInt64(b[i]) }
        var o: UInt32 = 0
        for i in 9...12 { o = o << 8 | UInt32(b[i]) }
        var e: UInt64 = 0
        for i in 13...20 { e = e << 8 | UInt64(b[i]) }
        self.init(maxSeq: m, owner: NodeID(o), epoch: e)
    }

    public var description: String { "max=\(maxSeq) owner=\(owner) epoch=\(epoch)" }
}

/// A request the allocator needs run on its section key.
public enum SeqKeyRequest: Sendable, Hashable {
    /// A linearizable read.
    case read
    /// Set `new` only if the value is exactly `expected` (nil = absent).
    case cas(expected: [UInt8]?, new: [UInt8])
}

/// How a key request ended.
public enum SeqKeyResult: Sendable, Hashable {
    /// The read's value.
    case value([UInt8]?)
    /// The compare-and-set's outcome.
    case swapped(Bool)
    /// Certainly not applied (a read that failed, or a write refused before any Accept).
    case failed
    /// A write that may or may not have been applied (timeout).
    case unknown
}

/// Why a client request got no numbers.
public enum SeqFailure: Sendable, Hashable, CustomStringConvertible {
    /// The section key could not be read or written (fewer than 2 of 3 campuses reachable…).
    case unavailable
    /// Other nodes kept taking the section while this one tried to.
    case contended
    /// The numbers would pass 2^64 - 1.
    case overflow

    public var description: String {
        switch self {
        case .unavailable: "the section key could not be read or written"
        case .contended: "the section kept moving to other nodes"
        case .overflow: "sequence would overflow 2^64-1"
        }
    }
}

/// What the host must do.
public enum SeqOutput: Sendable, Hashable {
    /// Run `request` on the section key, then call `keyResult(id:_:)` with its outcome.
    case request(id: UInt64, SeqKeyRequest)
    /// Answer request `tag`: numbers `first...last` (for a `current` query, first == last == the
    /// current value).
    case reply(tag: UInt64, first: UInt64, last: UInt64)
    /// Answer request `tag` with an error.
    case fail(tag: UInt64, SeqFailure)
}

/// Deliberately broken allocators, to prove the simulator's sequence checks can fail.
public enum SeqMutant: String, Sendable, Hashable, CaseIterable {
    case none
    /// Replies as soon as the numbers are allocated in memory, without the confirming read.
    case seqNoConfirm = "seq-no-confirm"
    /// A takeover starts the uids at the old ceiling minus one step instead of at the old ceiling.
    case seqLowBase = "seq-low-base"
    /// Trusts a stale read: after a confirm it keeps the batch even if the key changed.
    case seqIgnoreLoss = "seq-ignore-loss"
    /// The seq host (not the allocator): every incarnation of a node numbers its forwards from 0,
    /// so a late answer to the previous incarnation's forward is taken for a new one's.
    case seqRestartTags = "seq-restart-tags"
}

/// Tunables of one allocator.
public struct SeqConfig: Sendable, Hashable {
    /// Raise of the ceiling per write (seqsvr's step).
    public var step: UInt64 = 10_000
    /// Takeovers (failed CAS, or a section lost again) without one confirmed batch before the
    /// waiting requests fail: two nodes that keep taking the section from each other must not
    /// keep a request forever.
    public var takeoverAttemptsMax = 6
    /// Requests queued per section; beyond it a request fails at once (back-pressure).
    public var queueMax = 100_000
    public var mutant: SeqMutant = .none
    public init() {}
}

/// One section's allocator on one node. See docs/SEQ.md for the safety argument.
///
/// - takeover: read the key, CAS it old → (old.max + step, me, epoch + 1); every uid then starts
///   at the OLD max (`base`), the new max is the `limit`.
/// - allocation happens in memory (`cur[uid]`); passing the limit needs a CAS raise first.
/// - a batch of replies is released only after a linearizable operation on the key, invoked after
///   every allocation of the batch, shows the key still holds what this allocator last wrote.
///   Exactly one key request is in flight at a time; requests arriving meanwhile wait for it.
public struct SectionAllocator: Sendable {
    public let section: UInt64
    public let me: NodeID
    public var config: SeqConfig

    enum Request: Sendable {
        case next(uid: UInt64, count: UInt64, tag: UInt64)
        case current(uid: UInt64, tag: UInt64)
        var tag: UInt64 {
            switch self {
            case .next(_, _, let t), .current(_, let t): t
            }
        }
    }

    struct Owned: Sendable {
        /// Value every uid not in `cur` starts from (the ceiling read at takeover).
        var base: UInt64
        /// The ceiling we wrote; no number above it may be handed out.
        var limit: UInt64
        /// What we last wrote to the key (the confirm must read exactly this).
        var written: [UInt8]
        var record: SectionRecord
        /// Last number allocated per uid since the takeover.
        var cur: [UInt64: UInt64] = [:]
    }

    enum InFlight: Sendable {
        /// Takeover step 1.
        case takeRead
        /// Takeover step 2: CAS to `record` over `expected`, base = `base`.
        case takeCAS(record: SectionRecord, base: UInt64)
        /// Raise of the ceiling to `record` (also confirms the batch).
        case raise(record: SectionRecord)
        /// Read confirming the batch.
        case confirm
    }

    /// Requests not yet allocated.
    var queue: [Request] = []
    /// Allocated, waiting for the confirm in flight (or the next one).
    var batch: [(request: Request, first: UInt64, last: UInt64)] = []
    var owned: Owned?
    var inFlight: (id: UInt64, what: InFlight)?
    var nextID: UInt64 = 0
    var takeoverAttempts = 0

    public init(section: UInt64, me: NodeID, config: SeqConfig = SeqConfig()) {
        self.section = section
        self.me = me
        self.config = config
    }

    /// True while this allocator believes it owns the section.
    public var isOwner: Bool { owned != nil }
    /// uids with a number allocated since the last takeover (memory use).
    public var activeUIDs: Int { owned?.cur.count ?? 0 }
    /// Bytes the per-uid table holds now (hash buckets of 16 bytes plus the occupancy bitmap);
    /// docs/SEQ.md reports it per active uid, next to a measured RSS.
    public var tableBytes: Int {
        guard let cur = owned?.cur else { return 0 }
        return cur.capacity * 16 + cur.capacity / 8
    }
    /// Requests waiting (queued or in an unconfirmed batch).
    public var waiting: Int { queue.count + batch.count }
    /// True when nothing waits and no key request is in flight.
    public var isIdle: Bool { queue.isEmpty && batch.isEmpty && inFlight == nil }

    /// SEQ.NEXT: `count` (≥ 1) numbers for `uid`, answered under `tag`.
    public mutating func allocate(uid: UInt64, count: UInt64, tag: UInt64) -> [SeqOutput] {
        guard queue.count < config.queueMax else { return [.fail(tag: tag, .unavailable)] }
        queue.append(.next(uid: uid, count: max(count, 1), tag: tag))
        return pump()
    }

    /// SEQ.CUR: the last number handed out for `uid` (after a takeover: the base, which is ≥ every
    /// number handed out before), confirmed like an allocation.
    public mutating func current(uid: UInt64, tag: UInt64) -> [SeqOutput] {
        guard queue.count < config.queueMax else { return [.fail(tag: tag, .unavailable)] }
        queue.append(.current(uid: uid, tag: tag))
        return pump()
    }

    /// The outcome of key request `id`.
    public mutating func keyResult(id: UInt64, _ result: SeqKeyResult) -> [SeqOutput] {
        guard let (current, what) = inFlight, current == id else { return [] }
        inFlight = nil
        var out: [SeqOutput] = []
        switch what {
        case .takeRead:
            guard case .value(let bytes) = result else {
                failAll(.unavailable, &out)
                return out + pump()
            }
            var old = SectionRecord(maxSeq: 0, owner: NodeID(0), epoch: 0)
            if let bytes {
                guard let r = SectionRecord(decoding: bytes) else {
                    // Never written by an allocator: refuse rather than guess a base.
                    failAll(.unavailable, &out)
                    return out + pump()
                }
                old = r
            }
            let (newMax, o1) = old.maxSeq.addingReportingOverflow(config.step)
            let (newEpoch, o2) = old.epoch.addingReportingOverflow(1)
            if o1 || o2 {
                failAll(.overflow, &out)
                return out + pump()
            }
            var base = old.maxSeq
            if config.mutant == .seqLowBase {
                base = old.maxSeq >= config.step ? old.maxSeq - config.step : 0
            }
            let record = SectionRecord(maxSeq: newMax, owner: me, epoch: newEpoch)
            issue(.cas(expected: bytes, new: record.encoded), .takeCAS(record: record, base: base), &out)
        case .takeCAS(let record, let base):
            switch result {
            case .swapped(true):
                owned = Owned(base: base, limit: record.maxSeq, written: record.encoded, record: record)
            case .swapped(false):
                // Someone else moved the key between our read and our CAS: read again (bounded).
                takeoverAttempts += 1
                if takeoverAttempts >= config.takeoverAttemptsMax { failAll(.contended, &out) }
            default:
                failAll(.unavailable, &out)
            }
        case .raise(let record):
            switch result {
            case .swapped(true):
                owned?.limit = record.maxSeq
                owned?.written = record.encoded
                owned?.record = record
                release(&out)
            case .swapped(false):
                lostAgain(&out)
            default:
                // Unknown outcome: treat the section as lost; the next takeover re-reads it.
                lose()
                failAll(.unavailable, &out)
            }
        case .confirm:
            switch result {
            case .value(let v):
                if let o = owned, v == o.written || config.mutant == .seqIgnoreLoss {
                    release(&out)
                } else {
                    lostAgain(&out)
                }
            default:
                lose()
                failAll(.unavailable, &out)
            }
        }
        return out + pump()
    }

    // MARK: - Internals

    /// Replies for every allocation of the confirmed batch.
    mutating func release(_ out: inout [SeqOutput]) {
        takeoverAttempts = 0
        for b in batch { out.append(.reply(tag: b.request.tag, first: b.first, last: b.last)) }
        batch.removeAll()
    }

    /// Ownership lost: the in-memory state is discarded, the batch's requests go back to the
    /// queue (their numbers were never sent; they are allocated again after the next takeover).
    mutating func lose() {
        owned = nil
        queue.insert(contentsOf: batch.map(\.request), at: 0)
        batch.removeAll()
    }

    /// Someone else holds the section now: take it again, unless that happened too often in a row.
    mutating func lostAgain(_ out: inout [SeqOutput]) {
        takeoverAttempts += 1
        if takeoverAttempts >= config.takeoverAttemptsMax {
            failAll(.contended, &out)
        } else {
            lose()
        }
    }

    /// Fails every waiting request (queued and unconfirmed).
    mutating func failAll(_ why: SeqFailure, _ out: inout [SeqOutput]) {
        owned = nil
        takeoverAttempts = 0
        for b in batch { out.append(.fail(tag: b.request.tag, why)) }
        for q in queue { out.append(.fail(tag: q.tag, why)) }
        batch.removeAll()
        queue.removeAll()
    }

    mutating func issue(_ r: SeqKeyRequest, _ what: InFlight, _ out: inout [SeqOutput]) {
        nextID += 1
        inFlight = (nextID, what)
        out.append(.request(id: nextID, r))
    }

    /// Allocates what it can and starts the next key request, if none is in flight.
    mutating func pump() -> [SeqOutput] {
        var out: [SeqOutput] = []
        guard inFlight == nil else { return out }
        if queue.isEmpty && batch.isEmpty { return out }
        guard var o = owned else {
            issue(.read, .takeRead, &out)
            return out
        }
        // Take the state out so `o.cur` is uniquely referenced: mutating a copy that `owned` still
        // shares would copy the whole per-uid table at every request (found by the memory test:
        // 1M uids took 8 minutes).
        owned = nil
        var needed: UInt64?
        var k = 0
        while k < queue.count {
            let r = queue[k]
            switch r {
            case .current(let uid, _):
                let v = o.cur[uid] ?? o.base
                batch.append((r, v, v))
            case .next(let uid, let count, let tag):
                let c = o.cur[uid] ?? o.base
                let (last, overflow) = c.addingReportingOverflow(count)
                if overflow {
                    out.append(.fail(tag: tag, .overflow))
                } else if last > o.limit {
                    needed = last
                } else {
                    o.cur[uid] = last
                    batch.append((r, c + 1, last))
                }
            }
            if needed != nil { break }
            k += 1
        }
        queue.removeFirst(k)
        owned = o
        if config.mutant == .seqNoConfirm {
            release(&out)
            if needed == nil { return out }
        }
        if let needed {
            let (stepped, o1) = o.limit.addingReportingOverflow(config.step)
            let newMax = o1 ? UInt64.max : max(stepped, needed)
            var record = o.record
            record.maxSeq = newMax
            issue(.cas(expected: o.written, new: record.encoded), .raise(record: record), &out)
        } else if !batch.isEmpty {
            issue(.read, .confirm, &out)
        }
        return out
    }
}
