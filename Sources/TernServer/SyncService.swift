import Foundation
import NIOCore
import TernConsensus
import TernCore
import TernPlacement
import TernRESP

/// Tunables of the sync inboxes.
public struct SyncOptions: Sendable {
    /// How long inboxes keep messages (trimmed by whole buckets when an inbox seals one).
    public var retention = InboxRetention()
    /// Largest MSG.SEND / MSG.FANOUT payload.
    public var payloadBytesMax = 64 << 10
    /// Messages a SYNC returns without COUNT, and the largest COUNT.
    public var countDefault = 100
    public var countMax = 1_000
    /// Longest SYNC … BLOCK.
    public var blockMsMax: Int64 = 300_000
    /// Fresh sequences MSG.SEND tries when its append is refused as out of order.
    public var sendAttemptsMax = 8
    /// Recipients of one MSG.FANOUT.
    public var fanoutMax = 1_000
    public init() {}
}

/// Messages with sequence > a sync key, as SYNC returns them.
public struct SyncBatch: Sendable, Hashable {
    /// The key to pass to the next SYNC: the last message's sequence, or the old key.
    public var syncKey: UInt64
    public var messages: [InboxMessage]
    /// Messages after the old key may have been dropped by retention.
    public var gap: Bool
}

/// Why a sync call failed: the RESP error to answer.
public struct SyncError: Error, Sendable, Hashable {
    public var reply: RESPValue
    init(_ reply: RESPValue) { self.reply = reply }
}

/// Inboxes with push: `MSG.SEND`, `MSG.FANOUT`, `SYNC`, `SYNC.SUBSCRIBE`/`SYNC.UNSUBSCRIBE` and
/// `SUBSCRIBE`/`UNSUBSCRIBE sync:<uid>` (docs/SYNC.md).
///
/// ```
///  MSG.SEND uid p ─► SequenceSource.next(uid) = s ─► inboxAppend(s) on \0inbox:<uid>
///                       ▲ refused (s ≤ last): fresh s      │ applied (needsSeal → seal a bucket)
///                       └──────────────────────────────────┤
///                                          hub.notify here + service kind 2 to the other nodes
///                                          → SYNC BLOCK waiters wake, subscribers get a notice
/// ```
public final class SyncService: CommandModule, Sendable {
    /// Peer service kind of sync notices (`Node.setServiceHandler`).
    public static let serviceKind: UInt8 = 2

    public let node: Node
    public let hub: SyncHub
    /// Where `sync:<uid>` channel notices go (this node's pub/sub subscribers).
    let pubsub: PubSubHub?
    let sequences: any SequenceSource
    let options: SyncOptions
    /// Wall-clock milliseconds (injected: retention tests move it).
    let clock: @Sendable () -> UInt64

    /// Registers the node's sync notice handler (service kind 2).
    public init(
        node: Node, sequences: any SequenceSource, options: SyncOptions = SyncOptions(),
        pubsub: PubSubHub? = nil,
        clock: @escaping @Sendable () -> UInt64 = { UInt64(Date().timeIntervalSince1970 * 1000) }
    ) {
        self.node = node
        self.pubsub = pubsub
        self.sequences = sequences
        self.options = options
        self.clock = clock
        let hub = SyncHub(eventLoop: node.eventLoop)
        self.hub = hub
        node.setServiceHandler(Self.serviceKind) { _, payload in
            var r = ByteReader(payload)
            guard let uid = r.u64(), let seq = r.u64(), r.atEnd else { return }
            hub.notify(uid: uid, seq: seq)
            Self.publish(pubsub, uid: uid, seq: seq)
        }
        // Orphaned buckets (a crash between a retention trim and the bucket's delete), found by
        // the repair scan (docs/REPAIR.md, docs/SYNC.md).
        node.setGarbageCollector(prefix: Array("\0inbox:".utf8)) { [node] key in
            Task { await Self.collect(key, node: node) }
        }
    }

    /// The uid and first sequence of a bucket key `\0inbox:<uid>:<first>` (nil for a head key or
    /// anything else).
    static func parseBucketKey(_ key: [UInt8]) -> (uid: UInt64, first: UInt64)? {
        let prefix = Array("\0inbox:".utf8)
        guard key.starts(with: prefix) else { return nil }
        let parts = key.dropFirst(prefix.count).split(
            separator: UInt8(ascii: ":"), omittingEmptySubsequences: false)
        guard parts.count == 2, let uid = UInt64(String(decoding: parts[0], as: UTF8.self)),
            let first = UInt64(String(decoding: parts[1], as: UTF8.self)), bucketKey(uid, first) == key
        else { return nil }
        return (uid, first)
    }

    /// Deletes bucket `key` if its inbox's head (read linearizably) says retention dropped it.
    static func collect(_ key: [UInt8], node: Node) async {
        guard let (uid, first) = parseBucketKey(key) else { return }
        guard case .value(let bytes?) = await node.execute(key: headKey(uid), .read),
            let head = InboxHead.decode(bytes), head.isOrphan(bucketFirst: first)
        else { return }
        if case .done = await node.execute(key: key, .write(.delete)) { node.countGarbageCollected() }
    }

    static func headKey(_ uid: UInt64) -> [UInt8] { Array("\0inbox:\(uid)".utf8) }
    static func bucketKey(_ uid: UInt64, _ first: UInt64) -> [UInt8] { Array("\0inbox:\(uid):\(first)".utf8) }

    // MARK: - Operations

    /// The request id of attempt `attempt` of a send to `uid` under client message id `clientID`.
    /// Every attempt has its own id (a refused attempt's result is remembered too), and the ids
    /// follow one fixed sequence, so a retry replays the first call's attempts: those that were
    /// refused are refused again from the de-dup window, the one that appended answers its
    /// sequence, and none appends a second time.
    static func requestID(clientID: [UInt8], uid: UInt64, attempt: Int) -> RequestID {
        RequestID.clientSupplied(Array("msg:\(uid):\(attempt):".utf8) + clientID)
    }

    /// Longest client message id (`ID` option).
    static let clientIDBytesMax = 128

    /// Appends `payload` to `uid`'s inbox; its sequence. Notifies every node's subscribers.
    ///
    /// With `clientID` (MSG.SEND … ID), the append's request ids derive from it, so a retry of
    /// the same call, through this node or another, answers the sequence of the first append
    /// instead of appending again, while `uid`'s inbox head remembers it (its de-dup window: the
    /// last 32 writes to that head; docs/SYNC.md, "Retries"). A retry still takes fresh sequence
    /// numbers before finding that out: they are skipped, never used.
    public func send(uid: UInt64, payload: [UInt8], clientID: [UInt8]? = nil) async -> Result<
        UInt64, SyncError
    > {
        guard payload.count <= options.payloadBytesMax else {
            return .failure(
                SyncError(
                    .error("ERR message too large (the largest accepted is \(options.payloadBytesMax) bytes)")
                ))
        }
        let head = Self.headKey(uid)
        for attempt in 0..<options.sendAttemptsMax {
            let seq: UInt64
            switch await sequences.nextSequence(uid: uid, count: 1) {
            case .allocated(let first, _): seq = first
            case .failed(let r): return .failure(SyncError(CommandProcessor.failure(r, write: true)))
            }
            let r = await node.execute(
                key: head, .write(.inboxAppend(seq: seq, timeMs: clock(), payload: payload)),
                id: clientID.map { Self.requestID(clientID: $0, uid: uid, attempt: attempt) })
            switch r {
            case .done(.inboxAppendedAt(let appended, let needsSeal)):
                // `appended` differs from `seq` when a retry was answered from the de-dup window.
                if needsSeal { await seal(uid: uid) }
                announce(uid: uid, seq: appended)
                return .success(appended)
            case .done(.inboxAppended(let needsSeal)):
                if needsSeal { await seal(uid: uid) }
                announce(uid: uid, seq: seq)
                return .success(seq)
            case .done(.inboxRefused):
                // A later sequence reached the inbox first: this one may never land (the ordering
                // rule), so take a fresh one.
                continue
            case .done(.inboxFull):
                await seal(uid: uid)
                continue
            case .done(.notANumber):
                return .failure(SyncError(Self.wrongType))
            default:
                return .failure(SyncError(CommandProcessor.failure(r, write: true)))
            }
        }
        return .failure(
            SyncError(
                .error(
                    "ERR MSG.SEND gave up after \(options.sendAttemptsMax) attempts: "
                        + "sequences kept reaching the inbox out of order")))
    }

    static let wrongType = RESPValue.error("WRONGTYPE the inbox key holds a value that is not an inbox")

    /// The answer to a sync key above every sequence the inbox ever had.
    static func beyondEnd(_ key: UInt64, last: UInt64) -> RESPValue {
        .error(
            "ERR sync key \(key) is beyond the end of the inbox (its last sequence is \(last)); "
                + "sync from 0 to read it again from its oldest kept message")
    }

    /// Moves the head's oldest full bucket out (bucket key first, then the head), then deletes
    /// the buckets retention dropped. Best effort: a failure leaves the head as it was.
    func seal(uid: UInt64) async {
        let headKey = Self.headKey(uid)
        guard case .value(let bytes?) = await node.execute(key: headKey, .read),
            let head = InboxHead.decode(bytes), let prefix = head.sealPrefix,
            let first = prefix.first?.seq, let last = prefix.last?.seq
        else { return }
        let bucket = InboxHead.encodeBucket(prefix)
        guard case .done = await node.execute(key: Self.bucketKey(uid, first), .write(.put(bucket))) else {
            return
        }
        let r = await node.execute(
            key: headKey,
            .write(.inboxSeal(first: first, last: last, retention: options.retention, nowMs: clock())))
        guard case .done(.inboxSealed(true, let dropped)) = r else { return }
        for d in dropped { _ = await node.execute(key: Self.bucketKey(uid, d), .write(.delete)) }
    }

    /// Tells this node's hub and every other node's that `uid`'s inbox reached `seq`.
    func announce(uid: UInt64, seq: UInt64) {
        hub.notify(uid: uid, seq: seq)
        Self.publish(pubsub, uid: uid, seq: seq)
        var w = ByteWriter()
        w.u64(uid)
        w.u64(seq)
        for n in node.map.nodes where n.id != node.id {
            node.sendService(Self.serviceKind, w.bytes, to: n.id)
        }
    }

    /// The messages of `uid`'s inbox after `after`, at most `count`; with `blockMs` > 0, waits up
    /// to that long for at least one.
    public func sync(uid: UInt64, after: UInt64, count: Int, blockMs: Int64 = 0) async -> Result<
        SyncBatch, SyncError
    > {
        let deadline = NIODeadline.now() + .milliseconds(blockMs)
        while true {
            let waiter = blockMs > 0 ? hub.arm(uid: uid) : nil
            let batch = await read(uid: uid, after: after, count: count)
            guard case .success(let b) = batch, b.messages.isEmpty, let waiter, NIODeadline.now() < deadline
            else {
                waiter?.cancel()
                return batch
            }
            await waiter.wait(until: deadline)
            if NIODeadline.now() >= deadline {
                return await read(uid: uid, after: after, count: count)
            }
        }
    }

    /// One linearizable look at the inbox: the head, then the sealed buckets it needs.
    func read(uid: UInt64, after: UInt64, count: Int) async -> Result<SyncBatch, SyncError> {
        let r = await node.execute(key: Self.headKey(uid), .read)
        guard case .value(let bytes) = r else {
            return .failure(SyncError(CommandProcessor.failure(r, write: false)))
        }
        guard let bytes else {
            guard after == 0 else { return .failure(SyncError(Self.beyondEnd(after, last: 0))) }
            return .success(SyncBatch(syncKey: after, messages: [], gap: false))
        }
        guard let head = InboxHead.decode(bytes) else { return .failure(SyncError(Self.wrongType)) }
        // A key no SYNC or MSG.SEND ever gave out: a corrupt or foreign key would otherwise skip
        // every message up to it, silently.
        guard after <= head.last else { return .failure(SyncError(Self.beyondEnd(after, last: head.last))) }
        var out: [InboxMessage] = []
        var gap = after < head.trimmedThrough
        for b in head.buckets where b.last > after {
            if out.count >= count { break }
            let br = await node.execute(key: Self.bucketKey(uid, b.first), .read)
            guard case .value(let v) = br else {
                return .failure(SyncError(CommandProcessor.failure(br, write: false)))
            }
            // Absent: retention dropped it since the head was read.
            guard let v, let ms = InboxHead.decodeBucket(v) else {
                gap = true
                continue
            }
            for m in ms where m.seq > after && out.count < count { out.append(m) }
        }
        for m in head.messages where m.seq > after && out.count < count { out.append(m) }
        let key = out.last?.seq ?? max(after, gap ? head.trimmedThrough : after)
        return .success(SyncBatch(syncKey: key, messages: out, gap: gap))
    }

    // MARK: - Commands

    public var commandSpecs: [CommandSpec] {
        let pubsub = ["pubsub", "noscript", "loading", "stale"]
        return [
            CommandSpec(
                "msg.send", arity: -3, flags: ["write", "denyoom"], keys: (1, 1, 1),
                categories: ["@write", "@slow", "@sync"], keySpec: ["RW", "insert"],
                summary:
                    "Appends a message to a uid's inbox (MSG.SEND uid payload [ID client-msg-id]; docs/SYNC.md).",
                since: "0.1.0",
                group: "module"),
            CommandSpec(
                "msg.fanout", arity: -3, flags: ["write", "denyoom"], keys: (2, -1, 1),
                categories: ["@write", "@slow", "@sync"], keySpec: ["RW", "insert"],
                summary:
                    "Appends a message to several inboxes (MSG.FANOUT payload uid [uid ...] [ID client-msg-id]).",
                since: "0.1.0",
                group: "module"),
            CommandSpec(
                "sync", arity: -3, flags: ["readonly", "blocking"], keys: (1, 1, 1),
                categories: ["@read", "@slow", "@blocking", "@sync"], keySpec: ["RO", "access"],
                summary:
                    "Returns an inbox's messages after a sync key (SYNC uid synckey [COUNT n] [BLOCK ms]).",
                since: "0.1.0", group: "module"),
            CommandSpec(
                "msg.sync", arity: -3, flags: ["readonly", "blocking"], keys: (1, 1, 1),
                categories: ["@read", "@slow", "@blocking", "@sync"], keySpec: ["RO", "access"],
                summary: "SYNC under a name redis-cli does not take for replication.", since: "0.1.0",
                group: "module"),
            CommandSpec(
                "sync.subscribe", arity: -2, flags: pubsub, keys: (1, -1, 1),
                categories: ["@pubsub", "@slow", "@sync"], keySpec: ["RO"],
                summary: "Pushes a notice for each new message of these uids (RESP3).", since: "0.1.0",
                group: "module"),
            CommandSpec(
                "sync.unsubscribe", arity: -1, flags: pubsub, categories: ["@pubsub", "@slow", "@sync"],
                summary: "Stops SYNC.SUBSCRIBE's notices.", since: "0.1.0", group: "module"),
        ]
    }

    /// RESET: every subscription of the connection ends (both styles).
    public func reset(_ outlet: ConnectionOutlet) {
        for u in hub.uids(outlet, style: .push) { hub.unsubscribe(outlet, uid: u, style: .push) }
    }

    static func err(_ text: String) -> RESPValue { .error("ERR " + text) }
    static func arity(_ name: String) -> RESPValue { err("wrong number of arguments for '\(name)' command") }
    static let badUID = err("uid must be an integer from 0 to 2^64-1")

    /// A uid: a decimal unsigned 64-bit integer.
    static func uid(_ b: [UInt8]) -> UInt64? {
        guard !b.isEmpty, b.count <= 20, b.allSatisfy({ $0 >= 48 && $0 <= 57 }), b.count == 1 || b[0] != 48
        else {
            return nil
        }
        return UInt64(String(decoding: b, as: UTF8.self))
    }

    static let channelPrefix = Array("sync:".utf8)

    /// A notice as a pub/sub message on channel `sync:<uid>` (this node's subscribers).
    static func publish(_ pubsub: PubSubHub?, uid: UInt64, seq: UInt64) {
        pubsub?.deliver(channel: channelPrefix + Array(String(uid).utf8), message: Array(String(seq).utf8))
    }

    /// `ID <client-msg-id>`: 1 to 128 bytes.
    static func clientIDOption(_ name: [UInt8], _ value: [UInt8]) -> Result<[UInt8], SyncError> {
        guard String(decoding: name, as: UTF8.self).uppercased() == "ID" else {
            return .failure(SyncError(.error("ERR syntax error")))
        }
        guard !value.isEmpty, value.count <= clientIDBytesMax else {
            return .failure(SyncError(err("client message id must be 1 to \(clientIDBytesMax) bytes")))
        }
        return .success(value)
    }

    public func plan(name: String, args: [[UInt8]], session: inout Session) -> CommandPlan? {
        let n = args.count
        switch name {
        case "msg.send":
            guard n == 3 || n == 5 else { return .reply(Self.arity(name)) }
            guard let uid = Self.uid(args[1]) else { return .reply(Self.badUID) }
            let payload = args[2]
            var clientID: [UInt8]?
            if n == 5 {
                switch Self.clientIDOption(args[3], args[4]) {
                case .success(let c): clientID = c
                case .failure(let e): return .reply(e.reply)
                }
            }
            let cid = clientID
            return .run {
                switch await self.send(uid: uid, payload: payload, clientID: cid) {
                case .success(let seq): .integer(Int64(bitPattern: seq))
                case .failure(let e): e.reply
                }
            }
        case "msg.fanout":
            guard n >= 3 else { return .reply(Self.arity(name)) }
            var clientID: [UInt8]?
            var uidArgs = args.dropFirst(2)
            if n >= 5, String(decoding: args[n - 2], as: UTF8.self).uppercased() == "ID" {
                switch Self.clientIDOption(args[n - 2], args[n - 1]) {
                case .success(let c): clientID = c
                case .failure(let e): return .reply(e.reply)
                }
                uidArgs = uidArgs.dropLast(2)
            }
            guard uidArgs.count <= options.fanoutMax else {
                return .reply(Self.err("too many recipients (at most \(options.fanoutMax))"))
            }
            var uids: [UInt64] = []
            for a in uidArgs {
                guard let u = Self.uid(a) else { return .reply(Self.badUID) }
                uids.append(u)
            }
            let payload = args[1]
            let cid = clientID
            let recipients = uids
            guard payload.count <= options.payloadBytesMax else {
                return .reply(
                    Self.err("message too large (the largest accepted is \(options.payloadBytesMax) bytes)"))
            }
            return .run {
                await withTaskGroup(of: (Int, RESPValue).self) { group in
                    for (i, uid) in recipients.enumerated() {
                        group.addTask {
                            switch await self.send(uid: uid, payload: payload, clientID: cid) {
                            case .success(let seq): (i, .integer(Int64(bitPattern: seq)))
                            case .failure(let e): (i, e.reply)
                            }
                        }
                    }
                    var out = [RESPValue](repeating: .null, count: recipients.count)
                    for await (i, v) in group { out[i] = v }
                    return .array(out)
                }
            }
        case "sync", "msg.sync":
            // MSG.SYNC: the same command under a name redis-cli does not take for replication
            // (redis-cli turns any `SYNC …` into a replica stream).
            return planSync(args)
        case "sync.subscribe", "sync.unsubscribe":
            guard session.version == .v3 else {
                return .reply(
                    Self.err("\(name.uppercased()) needs RESP3 (HELLO 3); on RESP2 use SUBSCRIBE sync:<uid>"))
            }
            if name == "sync.subscribe" && n < 2 { return .reply(Self.arity(name)) }
            var uids: [UInt64] = []
            for a in args.dropFirst() {
                guard let u = Self.uid(a) else { return .reply(Self.badUID) }
                uids.append(u)
            }
            let hub = self.hub
            let subscribe = name == "sync.subscribe"
            let given = uids
            return .connection { outlet in
                var count = hub.count(outlet, style: .push)
                let targets = subscribe || !given.isEmpty ? given : hub.uids(outlet, style: .push)
                for u in targets {
                    count =
                        subscribe
                        ? hub.subscribe(outlet, uid: u, style: .push)
                        : hub.unsubscribe(outlet, uid: u, style: .push)
                }
                return [.integer(Int64(count))]
            }
        default:
            return nil
        }
    }

    /// SYNC uid synckey [COUNT n] [BLOCK ms].
    func planSync(_ args: [[UInt8]]) -> CommandPlan {
        guard args.count >= 3 else { return .reply(Self.arity("sync")) }
        guard let uid = Self.uid(args[1]) else { return .reply(Self.badUID) }
        guard let after = Self.uid(args[2]) else {
            return .reply(Self.err("synckey must be an integer from 0 to 2^64-1"))
        }
        var count = options.countDefault
        var block: Int64 = 0
        var i = 3
        while i < args.count {
            let opt = String(decoding: args[i], as: UTF8.self).uppercased()
            guard i + 1 < args.count, let v = KeyValue.strictInteger(args[i + 1]) else {
                return .reply(.error("ERR syntax error"))
            }
            switch opt {
            case "COUNT":
                guard v >= 1, v <= options.countMax else {
                    return .reply(Self.err("COUNT must be from 1 to \(options.countMax)"))
                }
                count = Int(v)
            case "BLOCK":
                guard v >= 0, v <= options.blockMsMax else {
                    return .reply(Self.err("BLOCK must be from 0 to \(options.blockMsMax) ms"))
                }
                block = v
            default:
                return .reply(.error("ERR syntax error"))
            }
            i += 2
        }
        let (limit, blockMs) = (count, block)
        return .run {
            switch await self.sync(uid: uid, after: after, count: limit, blockMs: blockMs) {
            case .failure(let e): return e.reply
            case .success(let b): return Self.reply(b)
            }
        }
    }

    /// `[synckey, [[seq, time-ms, payload] …], gap]`.
    static func reply(_ b: SyncBatch) -> RESPValue {
        .array([
            .integer(Int64(bitPattern: b.syncKey)),
            .array(
                b.messages.map {
                    .array([
                        .integer(Int64(bitPattern: $0.seq)), .integer(Int64(bitPattern: $0.timeMs)),
                        .bulkString($0.payload),
                    ])
                }),
            .integer(b.gap ? 1 : 0),
        ])
    }
}

/// A `SequenceSource` on a replicated counter per uid (`INCRBY \0seqk:<uid>`): correct, one Paxos
/// round per allocation. Stands in until the sequence allocator (SeqService) is wired.
public struct KeySequenceSource: SequenceSource {
    let node: Node
    public init(node: Node) { self.node = node }

    public func nextSequence(uid: UInt64, count: UInt32) async -> SequenceAllocation {
        let r = await node.execute(key: Array("\0seqk:\(uid)".utf8), .write(.incr(Int64(max(count, 1)))))
        guard case .done(.number(let last)) = r, last >= Int64(max(count, 1)) else {
            if case .done = r {
                return .failed(.unavailable("the sequence key of uid \(uid) is not a counter"))
            }
            return .failed(r)
        }
        return .allocated(first: UInt64(last) - UInt64(max(count, 1)) + 1, last: UInt64(last))
    }
}
