import NIOCore
import TernConsensus
import TernCore
import TernPlacement
import TernRESP
import TernSeq

/// The sequence service (docs/SEQ.md): `SEQ.NEXT uid [COUNT n]` and `SEQ.CUR uid`.
///
/// uids are grouped in sections of `sectionUIDs`; each section has one `SectionAllocator` per node
/// that serves it, whose key requests run through `Node.execute` on the section key. A section is
/// served by its preferred owner (the section key's replica in campus `section % 3`); other nodes
/// forward to it (service kind 1). A forward that gets no answer within `forwardTimeout` marks
/// that node suspect for `suspectFor`; the section then goes to the next campus's replica, or is
/// served here. Two nodes serving one section is safe (the allocators' confirm reads settle it),
/// only slower.
///
/// Every mutable field is touched on the node's event loop only.
public final class SeqService: SequenceSource, CommandModule, @unchecked Sendable {
    // @unchecked Sendable: all mutable state is confined to `loop` (entry points hop there).

    /// Tunables.
    public struct Options: Sendable {
        /// uids per section (seqsvr: 100,000).
        public var sectionUIDs: UInt64 = 100_000
        /// The allocator's tunables (step 10,000).
        public var allocator = SeqConfig()
        /// How long a forwarded request waits for the owner before this node serves it.
        public var forwardTimeout: TimeAmount = .milliseconds(300)
        /// How long an owner that did not answer a forward is avoided.
        public var suspectFor: TimeAmount = .seconds(3)
        /// Largest COUNT of one SEQ.NEXT.
        public var countMax: UInt64 = 10_000
        public init() {}
    }

    /// The answer to one request (local or forwarded).
    enum Answer: Sendable {
        case numbers(first: UInt64, last: UInt64)
        case failed(SeqFailure)
    }

    /// The peer service kind of the sequence allocator.
    static let serviceKind: UInt8 = 1

    let node: Node
    let loop: any EventLoop
    let options: Options
    var allocators: [UInt64: SectionAllocator] = [:]
    var waiting: [UInt64: EventLoopPromise<Answer>] = [:]
    var forwards: [UInt64: (promise: EventLoopPromise<Answer>, timeout: Scheduled<Void>)] = [:]
    var suspectUntil: [NodeID: NIODeadline] = [:]
    var nextTag: UInt64 = 0
    var counters = (local: 0, forwardedOut: 0, forwardedIn: 0, forwardTimeouts: 0)

    /// Creates the service on `node` and registers its peer handler.
    public init(node: Node, options: Options = Options()) {
        self.node = node
        self.loop = node.eventLoop
        self.options = options
        node.setServiceHandler(Self.serviceKind) { [weak self] from, payload in
            self?.receive(from: from, payload)
        }
    }

    // MARK: - SequenceSource

    public func nextSequence(uid: UInt64, count: UInt32) async -> SequenceAllocation {
        let answer = await run(current: false, uid: uid, count: UInt64(max(count, 1)))
        switch answer {
        case .numbers(let f, let l): return .allocated(first: f, last: l)
        case .failed(let why): return .failed(.unavailable("SEQ \(why)"))
        }
    }

    /// Runs one request from any thread.
    func run(current: Bool, uid: UInt64, count: UInt64) async -> Answer {
        (try? await future(current: current, uid: uid, count: count).get()) ?? .failed(.unavailable)
    }

    /// Runs one request from any thread; the future completes on the node's loop.
    func future(current: Bool, uid: UInt64, count: UInt64) -> EventLoopFuture<Answer> {
        let promise = loop.makePromise(of: Answer.self)
        if loop.inEventLoop {
            route(current: current, uid: uid, count: count, promise)
        } else {
            loop.execute { self.route(current: current, uid: uid, count: count, promise) }
        }
        return promise.futureResult
    }

    // MARK: - Routing (on the loop)

    func section(of uid: UInt64) -> UInt64 { uid / options.sectionUIDs }

    /// The node that should serve `section` now: the preferred owner unless it is suspect, then
    /// the next campuses' replicas.
    func owner(of section: UInt64) -> NodeID {
        let replicas = node.replicas(of: SeqKeys.sectionKey(section))
        let now = NIODeadline.now()
        for k in 0..<UInt64(3) {
            let campus = Campus(rawValue: UInt8((section + k) % 3))!
            let n = replicas[campus]
            if n == node.id || (suspectUntil[n] ?? .distantPast) <= now { return n }
        }
        return node.id
    }

    func route(current: Bool, uid: UInt64, count: UInt64, _ promise: EventLoopPromise<Answer>) {
        let section = section(of: uid)
        let target = owner(of: section)
        if target == node.id {
            serveLocally(current: current, uid: uid, count: count, promise)
            return
        }
        nextTag += 1
        let tag = nextTag
        counters.forwardedOut += 1
        let timeout = loop.scheduleTask(in: options.forwardTimeout) {
            guard let f = self.forwards.removeValue(forKey: tag) else { return }
            // The owner did not answer: avoid it for a while and serve here (take the section).
            self.counters.forwardTimeouts += 1
            self.suspectUntil[target] = .now() + self.options.suspectFor
            self.route(current: current, uid: uid, count: count, f.promise)
        }
        forwards[tag] = (promise, timeout)
        var w = Writer()
        w.u8(1)
        w.u64(tag)
        w.u8(current ? 1 : 0)
        w.u64(uid)
        w.u64(count)
        node.sendService(Self.serviceKind, w.bytes, to: target)
    }

    func serveLocally(current: Bool, uid: UInt64, count: UInt64, _ promise: EventLoopPromise<Answer>) {
        counters.local += 1
        let section = section(of: uid)
        nextTag += 1
        let tag = nextTag
        waiting[tag] = promise
        if allocators[section] == nil {
            allocators[section] = SectionAllocator(section: section, me: node.id, config: options.allocator)
        }
        // Mutated in place (a copy out of the dictionary would copy its per-uid table on write).
        let out =
            current
            ? allocators[section]!.current(uid: uid, tag: tag)
            : allocators[section]!.allocate(uid: uid, count: count, tag: tag)
        carryOut(section, out)
    }

    func carryOut(_ section: UInt64, _ outputs: [SeqOutput]) {
        for o in outputs {
            switch o {
            case .request(let id, let r):
                let request: KeyRequest
                switch r {
                case .read: request = .read
                case .cas(let e, let n): request = .write(.cas(expected: e, new: n))
                }
                node.execute(key: SeqKeys.sectionKey(section), request).whenComplete { result in
                    self.loop.assertInEventLoop()
                    let reply: NodeReply
                    switch result {
                    case .success(let r): reply = r
                    case .failure: reply = .unavailable("node stopped")
                    }
                    let keyResult: SeqKeyResult
                    switch (reply, r) {
                    case (.value(let v), _): keyResult = .value(v)
                    case (.done(.swapped(let b)), _): keyResult = .swapped(b)
                    case (.notApplied, _): keyResult = .failed
                    case (_, .read): keyResult = .failed
                    default: keyResult = .unknown
                    }
                    guard let next = self.allocators[section]?.keyResult(id: id, keyResult) else { return }
                    self.carryOut(section, next)
                }
            case .reply(let tag, let first, let last):
                waiting.removeValue(forKey: tag)?.succeed(.numbers(first: first, last: last))
            case .fail(let tag, let why):
                waiting.removeValue(forKey: tag)?.succeed(.failed(why))
            }
        }
    }

    // MARK: - Peer messages (on the loop)

    /// Request: 1, tag u64, current u8, uid u64, count u64.
    /// Reply: 2, tag u64, 0, first u64, last u64 — or 2, tag u64, 1, failure u8.
    func receive(from peer: NodeID, _ payload: [UInt8]) {
        var r = Reader(payload)
        guard let op = r.u8(), let tag = r.u64() else { return }
        switch op {
        case 1:
            guard let cur = r.u8(), let uid = r.u64(), let count = r.u64() else { return }
            counters.forwardedIn += 1
            let promise = loop.makePromise(of: Answer.self)
            // Served here whatever this node thinks of the owner: the peer chose us.
            serveLocally(current: cur == 1, uid: uid, count: count, promise)
            promise.futureResult.whenSuccess { answer in
                var w = Writer()
                w.u8(2)
                w.u64(tag)
                switch answer {
                case .numbers(let f, let l):
                    w.u8(0)
                    w.u64(f)
                    w.u64(l)
                case .failed(let why):
                    w.u8(1)
                    w.u8(why == .overflow ? 2 : why == .contended ? 1 : 0)
                }
                self.node.sendService(Self.serviceKind, w.bytes, to: peer)
            }
        case 2:
            guard let status = r.u8(), let f = forwards.removeValue(forKey: tag) else { return }
            f.timeout.cancel()
            if status == 0, let first = r.u64(), let last = r.u64() {
                f.promise.succeed(.numbers(first: first, last: last))
            } else {
                let code = r.u8() ?? 0
                f.promise.succeed(.failed(code == 2 ? .overflow : code == 1 ? .contended : .unavailable))
            }
        default:
            return
        }
    }

    /// Counters and memory, for tests and docs: (active uids, sections served here).
    public func stats() async -> (activeUIDs: Int, sections: Int, forwardTimeouts: Int) {
        let p = loop.makePromise(of: (Int, Int, Int).self)
        loop.execute {
            p.succeed(
                (
                    self.allocators.values.reduce(0) { $0 + $1.activeUIDs }, self.allocators.count,
                    self.counters.forwardTimeouts
                ))
        }
        let s = (try? await p.futureResult.get()) ?? (0, 0, 0)
        return (s.0, s.1, s.2)
    }

    // MARK: - CommandModule

    public var commandNames: [String] { ["seq.next", "seq.cur"] }

    public func plan(name: String, args: [[UInt8]], session: inout Session) -> CommandPlan? {
        switch name {
        case "seq.next":
            guard args.count == 2 || args.count == 4 else { return .reply(CommandProcessor.arity(name)) }
            guard let uid = Self.parseUID(args[1]) else { return .reply(Self.badUID) }
            var count: UInt64 = 1
            if args.count == 4 {
                guard String(decoding: args[2], as: UTF8.self).uppercased() == "COUNT" else {
                    return .reply(CommandProcessor.syntax)
                }
                guard let n = Self.parseUID(args[3]), n >= 1, n <= options.countMax else {
                    return .reply(CommandProcessor.err("COUNT must be between 1 and \(options.countMax)"))
                }
                count = n
            }
            let withCount = args.count == 4
            let n = count
            return .future {
                self.future(current: false, uid: uid, count: n).map { answer in
                    switch answer {
                    case .numbers(let f, let l):
                        withCount ? .array([Self.number(f), Self.number(l)]) : Self.number(f)
                    case .failed(let why): Self.error(why)
                    }
                }
            }
        case "seq.cur":
            guard args.count == 2 else { return .reply(CommandProcessor.arity(name)) }
            guard let uid = Self.parseUID(args[1]) else { return .reply(Self.badUID) }
            return .future {
                self.future(current: true, uid: uid, count: 0).map { answer in
                    switch answer {
                    case .numbers(let f, _): Self.number(f)
                    case .failed(let why): Self.error(why)
                    }
                }
            }
        default:
            return nil
        }
    }

    static let badUID = CommandProcessor.err("uid is not an unsigned 64-bit integer")

    /// An unsigned decimal within 64 bits: digits only, no sign, no leading zero.
    static func parseUID(_ b: [UInt8]) -> UInt64? {
        guard !b.isEmpty, b.count <= 20, b.allSatisfy({ $0 >= 48 && $0 <= 57 }) else { return nil }
        if b[0] == 48 && b.count > 1 { return nil }
        return UInt64(String(decoding: b, as: UTF8.self))
    }

    /// A number as a RESP integer; above 2^63-1 (which RESP integers cannot carry) as a decimal
    /// bulk string.
    static func number(_ v: UInt64) -> RESPValue {
        v <= UInt64(Int64.max) ? .integer(Int64(v)) : .bulkString(Array(String(v).utf8))
    }

    static func error(_ why: SeqFailure) -> RESPValue {
        switch why {
        case .overflow: CommandProcessor.err("sequence would overflow 2^64-1")
        case .contended: .error("UNAVAILABLE the section kept moving between nodes; retry")
        case .unavailable:
            .error("NOQUORUM sequence not allocated: its section could not be read or written")
        }
    }
}

/// Big-endian byte writer/reader for the seq peer messages.
private struct Writer {
    var bytes: [UInt8] = []
    mutating func u8(_ v: UInt8) { bytes.append(v) }
    mutating func u64(_ v: UInt64) {
        for s in stride(from: 56, through: 0, by: -8) {
            bytes.append(UInt8(truncatingIfNeeded: v >> UInt64(s)))
        }
    }
}

private struct Reader {
    let bytes: [UInt8]
    var i = 0
    init(_ b: [UInt8]) { bytes = b }
    mutating func u8() -> UInt8? {
        guard i < bytes.count else { return nil }
        i += 1
        return bytes[i - 1]
    }
    mutating func u64() -> UInt64? {
        guard i + 8 <= bytes.count else { return nil }
        var v: UInt64 = 0
        for k in 0..<8 { v = v << 8 | UInt64(bytes[i + k]) }
        i += 8
        return v
    }
}
