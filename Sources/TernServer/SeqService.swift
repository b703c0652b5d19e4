import NIOCore
import TernConsensus
import TernCore
import TernPlacement
import TernRESP
import TernSeq

/// The sequence service (docs/SEQ.md): `SEQ.NEXT uid [COUNT n]` and `SEQ.CUR uid`.
///
/// A thin shell over `SeqHost` (TernSeq, pure): it feeds the host its clients' requests, the
/// peers' service messages, the node's replies to the section-key requests and the time, and
/// carries out what the host returns — key requests through `Node.execute`, peer messages
/// through `Node.sendService`, answers to the waiting promises. Routing, forwarding, the forward
/// timeout and the allocators are the host's (its doc says how a section finds its node).
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

    typealias Answer = SeqAnswer

    /// The peer service kind of the sequence allocator.
    static let serviceKind = SeqHost.serviceKind

    let node: Node
    let loop: any EventLoop
    let options: Options
    var host: SeqHost
    var waiting: [UInt64: EventLoopPromise<Answer>] = [:]
    var nextTag: UInt64 = 0
    /// The deadline the forward-timeout timer is set for, if one is set.
    var timerAt: UInt64?

    /// Creates the service on `node` and registers its peer handler.
    public init(node: Node, options: Options = Options()) {
        self.node = node
        self.loop = node.eventLoop
        self.options = options
        var o = SeqHost.Options()
        o.sectionUIDs = options.sectionUIDs
        o.allocator = options.allocator
        o.forwardTimeoutNanos = UInt64(max(0, options.forwardTimeout.nanoseconds))
        o.suspectForNanos = UInt64(max(0, options.suspectFor.nanoseconds))
        host = SeqHost(me: node.id, options: o, tagBase: UInt64.random(in: 1...(UInt64.max >> 2)))
        node.setServiceHandler(Self.serviceKind) { [weak self] from, payload in
            self?.receive(from: from, payload)
        }
    }

    static func now() -> UInt64 { NIODeadline.now().uptimeNanoseconds }

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
            request(current: current, uid: uid, count: count, promise)
        } else {
            loop.execute { self.request(current: current, uid: uid, count: count, promise) }
        }
        return promise.futureResult
    }

    // MARK: - Feeding the host and carrying out its output (on the loop)

    func request(current: Bool, uid: UInt64, count: UInt64, _ promise: EventLoopPromise<Answer>) {
        nextTag += 1
        waiting[nextTag] = promise
        let replicas = node.replicas(of: SeqKeys.sectionKey(host.section(of: uid)))
        host.request(
            tag: nextTag, current: current, uid: uid, count: count,
            replicas: Campus.allCases.map { replicas[$0] }, now: Self.now())
        drive()
    }

    func receive(from peer: NodeID, _ payload: [UInt8]) {
        host.receive(from: peer, payload)
        drive()
    }

    func drive() {
        let r = host.ready()
        for k in r.keyRequests {
            let request: KeyRequest
            switch k.request {
            case .read: request = .read
            case .cas(let e, let n): request = .write(.cas(expected: e, new: n))
            }
            node.execute(key: SeqKeys.sectionKey(k.section), request).whenComplete { result in
                self.loop.assertInEventLoop()
                switch result {
                case .success(let reply): self.host.keyResult(tag: k.tag, reply)
                case .failure: self.host.keyResult(tag: k.tag, .unavailable("node stopped"))
                }
                self.drive()
            }
        }
        for m in r.messages { node.sendService(Self.serviceKind, m.bytes, to: m.to) }
        for a in r.answers { waiting.removeValue(forKey: a.tag)?.succeed(a.answer) }
        armTimer()
    }

    /// One timer, at the earliest forward deadline.
    func armTimer() {
        guard let at = host.nextDeadline, timerAt.map({ at < $0 }) ?? true else { return }
        timerAt = at
        let delay = Int64(at) - Int64(Self.now())
        loop.scheduleTask(in: .nanoseconds(max(0, delay))) {
            self.timerAt = nil
            self.host.tick(now: Self.now())
            self.drive()
        }
    }

    /// Counters and memory, for tests and docs: (active uids, sections served here).
    public func stats() async -> (activeUIDs: Int, sections: Int, forwardTimeouts: Int) {
        let p = loop.makePromise(of: (Int, Int, Int).self)
        loop.execute {
            p.succeed(
                (
                    self.host.allocators.values.reduce(0) { $0 + $1.activeUIDs }, self.host.allocators.count,
                    self.host.forwardTimeouts
                ))
        }
        let s = (try? await p.futureResult.get()) ?? (0, 0, 0)
        return (s.0, s.1, s.2)
    }

    // MARK: - CommandModule

    public var commandSpecs: [CommandSpec] {
        [
            CommandSpec(
                "seq.next", arity: -2, flags: ["write", "denyoom", "fast"], keys: (1, 1, 1),
                categories: ["@write", "@fast", "@seq"], keySpec: ["RW", "update"],
                summary:
                    "Returns the next sequence number(s) of a uid (SEQ.NEXT uid [COUNT n]; docs/SEQ.md).",
                since: "0.1.0", group: "module"),
            CommandSpec(
                "seq.cur", arity: 2, flags: ["readonly", "fast"], keys: (1, 1, 1),
                categories: ["@read", "@fast", "@seq"], keySpec: ["RO", "access"],
                summary: "Returns the last sequence number handed out for a uid (docs/SEQ.md).",
                since: "0.1.0",
                group: "module"),
        ]
    }

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
