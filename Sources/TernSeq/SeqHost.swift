public import TernConsensus
public import TernCore

/// The answer to one SEQ.NEXT / SEQ.CUR (local or forwarded).
public enum SeqAnswer: Sendable, Hashable {
    case numbers(first: UInt64, last: UInt64)
    case failed(SeqFailure)
}

/// What the host asks its shell to do (etcd-io/raft's `Ready`, for the sequence service).
public struct SeqReady: Sendable {
    /// Key requests on a section key, answered later with `SeqHost.keyResult(tag:_:)`.
    public var keyRequests: [(tag: UInt64, section: UInt64, request: SeqKeyRequest)] = []
    /// Peer messages of the sequence service (peer service kind `SeqHost.serviceKind`).
    public var messages: [(to: NodeID, bytes: [UInt8])] = []
    /// Answers to the shell's requests, by the tag the shell gave them.
    public var answers: [(tag: UInt64, answer: SeqAnswer)] = []
    public var isEmpty: Bool { keyRequests.isEmpty && messages.isEmpty && answers.isEmpty }
    public init() {}
}

/// The sequence service's node-level logic, pure (docs/SEQ.md): which node serves a section,
/// forwarding to it and what to do when it does not answer, one `SectionAllocator` per section
/// served here, the translation between the allocators' key requests and the node's replies, and
/// the peer messages. No clock, socket or thread: the shell (`SeqService` in the server, the
/// simulator's seq workload) passes the time in nanoseconds and carries out `ready()`.
public struct SeqHost: Sendable {
    public struct Options: Sendable {
        /// uids per section (seqsvr: 100,000).
        public var sectionUIDs: UInt64 = 100_000
        /// The allocator's tunables (step 10,000).
        public var allocator = SeqConfig()
        /// How long a forwarded request waits for the owner before this node serves it.
        public var forwardTimeoutNanos: UInt64 = 300_000_000
        /// How long an owner that did not answer a forward is avoided.
        public var suspectForNanos: UInt64 = 3_000_000_000
        public init() {}
    }

    /// The peer service kind of the sequence allocator.
    public static let serviceKind: UInt8 = 1

    public let me: NodeID
    public let options: Options
    public private(set) var allocators: [UInt64: SectionAllocator] = [:]
    /// Counters, for /status and tests.
    public private(set) var local = 0
    public private(set) var forwardedOut = 0
    public private(set) var forwardedIn = 0
    public private(set) var forwardTimeouts = 0

    struct Request {
        var current: Bool
        var uid: UInt64
        var count: UInt64
        /// The section key's replicas, indexed by campus (for routing again after a timeout).
        var replicas: [NodeID]
    }
    /// Who is waiting for an allocator reply tag: the shell (its tag) or a peer (its tag).
    enum Waiter {
        case shell(UInt64)
        case peer(NodeID, UInt64)
    }
    var waiters: [UInt64: Waiter] = [:]
    var forwards: [UInt64: (shellTag: UInt64, request: Request, target: NodeID, deadline: UInt64)] = [:]
    var suspectUntil: [NodeID: UInt64] = [:]
    var keyTags: [UInt64: (section: UInt64, id: UInt64, request: SeqKeyRequest)] = [:]
    var nextTag: UInt64 = 0
    var out = SeqReady()

    /// - tagBase: where this incarnation's tags start. Tags name forwards on the wire, and a peer
    ///   may answer a forward of this node's previous incarnation after a restart (the transport
    ///   keeps a peer's queue across reconnects): with tags restarting at 0, that late answer was
    ///   taken for a new forward's and its numbers handed out twice (found by the simulator once it
    ///   ran the forwarding). Give each incarnation its own range (the server: random).
    public init(me: NodeID, options: Options = Options(), tagBase: UInt64 = 0) {
        self.me = me
        self.options = options
        nextTag = tagBase
    }

    public func section(of uid: UInt64) -> UInt64 { uid / options.sectionUIDs }

    /// The node that should serve `section` now, given its key's replicas by campus: the
    /// preferred owner (campus `section % 3`) unless it is suspect, then the next campuses'.
    public func owner(of section: UInt64, replicas: [NodeID], now: UInt64) -> NodeID {
        for k in 0..<UInt64(replicas.count) {
            let n = replicas[Int((section + k) % UInt64(replicas.count))]
            if n == me || (suspectUntil[n] ?? 0) <= now { return n }
        }
        return me
    }

    /// The earliest forward deadline: the shell calls `tick(now:)` then (or sooner).
    public var nextDeadline: UInt64? { forwards.values.map(\.deadline).min() }

    // MARK: - Inputs

    /// A SEQ.NEXT (`current` false) or SEQ.CUR from this node's clients, answered under `tag`.
    /// `replicas`: the section key's replicas by campus (`SeqKeys.sectionKey(section(of: uid))`).
    public mutating func request(
        tag: UInt64, current: Bool, uid: UInt64, count: UInt64, replicas: [NodeID], now: UInt64
    ) {
        route(shellTag: tag, Request(current: current, uid: uid, count: count, replicas: replicas), now: now)
    }

    /// A sequence-service message from `peer`.
    /// Request: 1, tag u64, current u8, uid u64, count u64.
    /// Reply: 2, tag u64, 0, first u64, last u64 — or 2, tag u64, 1, failure u8.
    public mutating func receive(from peer: NodeID, _ payload: [UInt8]) {
        var r = ByteReader(payload)
        guard let op = r.u8(), let tag = r.u64() else { return }
        switch op {
        case 1:
            guard let cur = r.u8(), let uid = r.u64(), let count = r.u64() else { return }
            forwardedIn += 1
            // Served here whatever this node thinks of the owner: the peer chose us.
            serve(.peer(peer, tag), current: cur == 1, uid: uid, count: count)
        case 2:
            guard let status = r.u8(), let f = forwards.removeValue(forKey: tag) else { return }
            if status == 0, let first = r.u64(), let last = r.u64() {
                out.answers.append((f.shellTag, .numbers(first: first, last: last)))
            } else {
                let code = r.u8() ?? 0
                out.answers.append(
                    (f.shellTag, .failed(code == 2 ? .overflow : code == 1 ? .contended : .unavailable)))
            }
        default:
            return
        }
    }

    /// The node's reply to key request `tag` (one of `ready().keyRequests`).
    public mutating func keyResult(tag: UInt64, _ reply: NodeReply) {
        guard let k = keyTags.removeValue(forKey: tag), allocators[k.section] != nil else { return }
        let outputs = allocators[k.section]!.keyResult(id: k.id, Self.keyResult(reply, for: k.request))
        carryOut(k.section, outputs)
    }

    /// Forwards whose owner did not answer by now: avoid that owner for a while and route again
    /// (usually: serve here, taking the section over).
    public mutating func tick(now: UInt64) {
        let due = forwards.filter { $0.value.deadline <= now }.sorted { $0.key < $1.key }
        for (tag, f) in due {
            forwards.removeValue(forKey: tag)
            forwardTimeouts += 1
            suspectUntil[f.target] = now + options.suspectForNanos
            route(shellTag: f.shellTag, f.request, now: now)
        }
    }

    /// What to carry out since the last call, in order: key requests, peer messages, answers.
    public mutating func ready() -> SeqReady {
        defer { out = SeqReady() }
        return out
    }

    /// What a node reply means to an allocator — the one translation the server and the
    /// simulator share. A CAS that may have been applied is `.unknown` (the allocator re-reads
    /// before it trusts the ceiling); anything certainly not applied is `.failed`.
    public static func keyResult(_ reply: NodeReply, for request: SeqKeyRequest) -> SeqKeyResult {
        switch (reply, request) {
        case (.value(let v), .read): .value(v)
        case (.done(.swapped(let b)), .cas): .swapped(b)
        case (.notApplied, _), (.unavailable, _), (.refused, _), (_, .read): .failed
        case (.unknown, .cas), (.done, .cas), (.value, .cas), (.typed, .cas): .unknown
        }
    }

    // MARK: - Internals

    mutating func route(shellTag: UInt64, _ r: Request, now: UInt64) {
        let section = section(of: r.uid)
        let target = owner(of: section, replicas: r.replicas, now: now)
        if target == me {
            serve(.shell(shellTag), current: r.current, uid: r.uid, count: r.count)
            return
        }
        nextTag += 1
        forwardedOut += 1
        forwards[nextTag] = (shellTag, r, target, now + options.forwardTimeoutNanos)
        var w = ByteWriter()
        w.u8(1)
        w.u64(nextTag)
        w.u8(r.current ? 1 : 0)
        w.u64(r.uid)
        w.u64(r.count)
        out.messages.append((target, w.bytes))
    }

    mutating func serve(_ waiter: Waiter, current: Bool, uid: UInt64, count: UInt64) {
        local += 1
        let section = section(of: uid)
        nextTag += 1
        let tag = nextTag
        waiters[tag] = waiter
        if allocators[section] == nil {
            allocators[section] = SectionAllocator(section: section, me: me, config: options.allocator)
        }
        // Mutated in place (a copy out of the dictionary would copy its per-uid table on write).
        let outputs =
            current
            ? allocators[section]!.current(uid: uid, tag: tag)
            : allocators[section]!.allocate(uid: uid, count: count, tag: tag)
        carryOut(section, outputs)
    }

    mutating func carryOut(_ section: UInt64, _ outputs: [SeqOutput]) {
        for o in outputs {
            switch o {
            case .request(let id, let r):
                nextTag += 1
                keyTags[nextTag] = (section, id, r)
                out.keyRequests.append((nextTag, section, r))
            case .reply(let tag, let first, let last):
                answer(tag, .numbers(first: first, last: last))
            case .fail(let tag, let why):
                answer(tag, .failed(why))
            }
        }
    }

    mutating func answer(_ tag: UInt64, _ a: SeqAnswer) {
        switch waiters.removeValue(forKey: tag) {
        case .shell(let t)?: out.answers.append((t, a))
        case .peer(let peer, let t)?:
            var w = ByteWriter()
            w.u8(2)
            w.u64(t)
            switch a {
            case .numbers(let f, let l):
                w.u8(0)
                w.u64(f)
                w.u64(l)
            case .failed(let why):
                w.u8(1)
                w.u8(why == .overflow ? 2 : why == .contended ? 1 : 0)
            }
            out.messages.append((peer, w.bytes))
        case nil: return
        }
    }
}
