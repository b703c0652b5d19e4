public import TernConsensus
import TernCore

/// Deliberately broken task completion, to prove the stream workload's checks fire.
public enum StreamMutant: String, Sendable, Hashable, CaseIterable {
    case none
    /// XACKADD sent as a MULTI of XACK and XADD: one instance, but the follow-up entries are added
    /// whether or not the id was still pending, so a completion retried after a lost reply, or
    /// raced by a worker that claimed the task, spawns its sub-tasks a second time.
    case ackAddUnconditional = "ackadd-unconditional"
    /// XADD's idempotency key dropped on the way (the server ignores IDMP): an add retried as a new
    /// request after a lost reply adds its task again.
    case idmpIgnored = "idmp-ignored"
    /// XREADGROUP delivers without recording the entries as pending (as if NOACK): a worker that
    /// dies holding them loses them.
    case deliverUnrecorded = "deliver-unrecorded"
    /// A run of pipelined XADDs (one instance, as the front end sends a connection's pipelined
    /// stream writes) answered with its replies handed out in the wrong order
    /// (`DataModel.streamRunReplies`): a producer is told another task's id.
    case runRepliesReversed = "run-replies-reversed"
    /// XCLAIM sent with FORCE: an entry already acknowledged is made pending and delivered again.
    case claimForced = "claim-forced"
    /// XDEL of entries delivered and not yet acknowledged (a cleanup that runs ahead of the
    /// workers): a task added and answered is gone before anyone completed it.
    case deleteUnacked = "delete-unacked"
}

/// One call of the stream workload as a simulated client saw it (after its fresh retries).
public struct StreamCall: Sendable, Hashable, CustomStringConvertible {
    public enum Kind: String, Sendable, Hashable {
        case create, add, read, ack, ackAdd = "ackadd", claim
        /// XCLAIM of ids seen delivered; XDEL of an id seen acknowledged (a worker's cleanup).
        case xclaim, del = "xdel"
        /// Two or three XADDs pipelined on one connection: one run (`DataModel.streamRun`).
        case addRun = "addrun"
        /// Its reply delivers entries (`streamDelivered`).
        var delivers: Bool { self == .read || self == .claim || self == .xclaim }
    }
    public var client: Int
    public var stream: Int
    public var kind: Kind
    /// The normalised command of the last attempt.
    public var args: [[UInt8]] = []
    /// The arguments after the key (the clock and backlog bound are added at each attempt).
    var rest: [[UInt8]] = []
    /// nil: no answer (the outcome is unknown).
    public var reply: DataReply?
    public var call: UInt64
    public var ret: UInt64?
    /// The entry an ack or ackadd completes, or an XDEL removes.
    public var target: StreamID?
    /// An add's token (field `t`), unique per add call.
    public var token: String?
    /// A run's adds' tokens, in the order sent (its reply: their ids, in that order).
    public var tokens: [String] = []
    /// Attempts under a fresh request id after an unknown outcome (a client's own retry).
    public var freshRetries = 0
    public var description: String {
        let cmd = args.map { String(decoding: $0, as: UTF8.self) }.joined(separator: " ")
        let out = reply.map(DataOperation.render) ?? "unknown"
        return "client \(client) \(cmd) -> \(out) [\(call), \(ret.map(String.init) ?? "?")]"
            + (freshRetries > 0 ? " (\(freshRetries) fresh retries)" : "")
    }
}

/// The stream workload's numbers for one seed.
public struct StreamStats: Sendable {
    public var calls: [StreamCall] = []
    /// Entries in the streams at the end, follow-ups among them, and entries still pending.
    public var entries = 0
    public var followUps = 0
    public var pending = 0
    /// Entries delivered again (claimed from another consumer).
    public var claimed = 0
}

/// The task queue under the simulator's faults (docs/QUEUE.md, "Simulator workload"): clients
/// that produce (XADD, with IDMP half of the time), consume through group `g` (XREADGROUP `>`),
/// complete what they hold (XACK, or XACKADD with a follow-up entry for tasks that spawn work),
/// forget what they hold (a worker that dies) and take over idle entries (XAUTOCLAIM). After an
/// unknown outcome, an IDMP XADD, an XACK and an XACKADD are sent again as NEW requests, as a
/// client library does; nothing else is. Checked at the end against a linearizable read of each
/// stream: QUEUE.md's guarantees.
struct StreamWorkload {
    struct Held {
        var stream: Int
        var id: StreamID
        var spawns: Bool
    }
    struct Flight {
        var call: Int
        var rid: RequestID
        var node: Int
        var tag: UInt64 = 0
        var deadline: UInt64 = 0
        var attempts = 0
        var freshLeft: Int
        var maybeApplied = false
        var delivered = false
    }
    struct Client {
        var nextAt: UInt64
        var counter: UInt64 = 0
        var holds: [Held] = []
        var inFlight: Flight?
    }
    var clients: [Client] = []
    var calls: [StreamCall] = []
    var tags: [UInt64: Int] = [:]
    var issued = 0
    var finalPending: [Int] = []
    var finalTag: (tag: UInt64, stream: Int, node: Int, deadline: UInt64)?
    var finalValues: [Int: StreamValue?] = [:]
    var started = false
    /// Per stream: ids some client was delivered (XCLAIM's candidates), and ids an XACK or
    /// XACKADD answered as removed from the pending list (XDEL's).
    var seenDelivered: [Int: [StreamID]] = [:]
    var seenAcked: [Int: [StreamID]] = [:]
    var idle: Bool { clients.allSatisfy { $0.inFlight == nil } }
}

extension Simulation {
    static let streamCount = 2
    static let streamGroup: [UInt8] = Array("g".utf8)
    /// XAUTOCLAIM's min-idle: 100 ms (20 ticks).
    static let streamClaimIdleMs = 100
    func streamKey(_ s: Int) -> [UInt8] { Array("q\(s)".utf8) }
    private static func b(_ s: String) -> [UInt8] { Array(s.utf8) }

    func streamSetUp() {
        guard config.streamOps > 0 else { return }
        for _ in 0..<4 { streams.clients.append(.init(nextAt: rng.below(5))) }
    }

    var streamDone: Bool { config.streamOps == 0 || (streams.issued >= config.streamOps && streams.idle) }
    var streamFinished: Bool {
        config.streamOps == 0
            || (streamDone && streams.started && streams.finalPending.isEmpty && streams.finalTag == nil)
    }

    /// Step 4: clients call, time out, retry; after the heal, the final reads.
    func streamAct() {
        guard config.streamOps > 0 else { return }
        if healed {
            streamFinalReads()
            return
        }
        for c in streams.clients.indices {
            if let f = streams.clients[c].inFlight {
                if now >= f.deadline { streamAttemptFailed(c, unknown: f.delivered) }
                continue
            }
            guard now >= streams.clients[c].nextAt, streams.issued < config.streamOps else { continue }
            streamIssue(c)
        }
    }

    func streamIssue(_ c: Int) {
        streams.issued += 1
        streams.clients[c].counter += 1
        let n = streams.clients[c].counter
        var stream = Int(rng.below(UInt64(Self.streamCount)))
        var call = StreamCall(client: c, stream: stream, kind: .read, call: callTime)
        var fresh = 0
        let roll = rng.below(100)
        // A worker that dies: what it held waits, pending, for another to claim it.
        if rng.chance(0.03) { streams.clients[c].holds = [] }
        if streams.issued <= Self.streamCount {
            stream = streams.issued - 1
            call.stream = stream
            call.kind = .create
            fresh = 2
        } else if roll < 10 {
            // A producer's pipelined adds on one stream: one run, answered id by id. Not retried
            // as a new request (no idempotency key): an unknown outcome is given up.
            call.kind = .addRun
            call.tokens = (0..<(2 + Int(rng.below(2)))).map { "p\(c).\(n).\($0)" }
        } else if roll < 35 {
            call.kind = .add
            call.token = "p\(c).\(n)"
            // Half the adds carry an idempotency key, and are retried as new requests.
            if rng.chance(0.5) { fresh = 2 }
            call.rest = fresh > 0 ? [Self.b("idmp"), Self.b("p\(c)"), Self.b(call.token!)] : []
            call.rest += [
                Self.b("*"), Self.b("t"), Self.b(call.token!), Self.b("k"),
                Self.b(rng.chance(0.4) ? "s" : "a"),
            ]
        } else if roll >= 60 && roll < 88 && !streams.clients[c].holds.isEmpty {
            let k = Int(rng.below(UInt64(streams.clients[c].holds.count)))
            let h = streams.clients[c].holds.remove(at: k)
            stream = h.stream
            call.stream = stream
            call.target = h.id
            fresh = 2
            let id = Self.b(h.id.description)
            if h.spawns {
                call.kind = .ackAdd
                call.rest = [
                    Self.streamGroup, id, Self.b("FIELDS"), Self.b("2"), Self.b("t"), Self.b("\(h.id)/sub"),
                    Self.b("parent"), id,
                ]
            } else {
                call.kind = .ack
                call.rest = [Self.streamGroup, id]
            }
        } else if roll >= 88 && roll < 90, let ids = streams.seenDelivered[stream], !ids.isEmpty {
            // XCLAIM of one or two ids some worker was delivered (idle 100 ms: a stuck worker's).
            call.kind = .xclaim
            let pick = (0..<(1 + Int(rng.below(2)))).map { _ in ids[Int(rng.below(UInt64(ids.count)))] }
            call.rest =
                [Self.streamGroup, Self.b("c\(c)"), Self.b(String(Self.streamClaimIdleMs))]
                + pick.map { Self.b($0.description) }
            if config.streamMutant == .claimForced { call.rest.append(Self.b("FORCE")) }
        } else if roll >= 90 && roll < 92,
            let ids = config.streamMutant == .deleteUnacked
                ? streams.seenDelivered[stream] : streams.seenAcked[stream],
            !ids.isEmpty
        {
            // A worker's cleanup: XDEL of an entry acknowledged (what `tern demo queue` does).
            call.kind = .del
            let id = ids[Int(rng.below(UInt64(ids.count)))]
            call.target = id
            fresh = 2
            call.rest = [Self.b(id.description)]
        } else if roll >= 92 {
            call.kind = .claim
            call.rest = [
                Self.streamGroup, Self.b("c\(c)"), Self.b(String(Self.streamClaimIdleMs)), Self.b("0-0"),
                Self.b("COUNT"), Self.b("3"),
            ]
        } else {
            call.rest = [
                Self.streamGroup, Self.b("c\(c)"), Self.b(String(1 + rng.below(3))), Self.b("0"), Self.b(">"),
            ]
        }
        if call.kind == .create {
            call.rest = [Self.b("create"), Self.streamGroup, Self.b("0"), Self.b("mkstream")]
        }
        streams.calls.append(call)
        streams.clients[c].inFlight = .init(
            call: streams.calls.count - 1, rid: RequestID(client: UInt32(6_000 + c), counter: n),
            node: Int(rng.below(3)), freshLeft: fresh)
        mix(0x57AE &+ UInt64(c) << 8 &+ UInt64(call.kind.rawValue.count))
        streamSend(c)
    }

    /// The normalised command of `call` for an attempt at `node` (its clock, no backlog bound).
    func streamArgs(_ call: StreamCall, node: Int) -> [[UInt8]] {
        let key = streamKey(call.stream)
        let now = Self.b(String(nodeClockMs(node)))
        let name: String =
            switch call.kind {
            case .create: "xgroup"
            case .add: "xadd"
            case .read: "xreadgroup"
            case .ack: "xack"
            case .ackAdd: "xackadd"
            case .claim: "xautoclaim"
            case .xclaim: "xclaim"
            case .del: "xdel"
            case .addRun: "multi"
            }
        if call.kind == .addRun {
            return DataModel.streamRun(
                call.tokens.map { t in
                    [
                        Self.b("xadd"), key, now, Self.b("0"), Self.b("*"), Self.b("t"), Self.b(t),
                        Self.b("k"), Self.b("a"),
                    ]
                })
        }
        var rest = call.rest
        if call.kind == .add && config.streamMutant == .idmpIgnored && rest.first == Self.b("idmp") {
            rest.removeFirst(3)
        }
        if call.kind == .read && config.streamMutant == .deliverUnrecorded { rest[3] = Self.b("1") }
        if call.kind == .ackAdd && config.streamMutant == .ackAddUnconditional, let target = call.target {
            // The mutant: XACK and XADD of the follow-up in one transaction, unconditionally.
            let ack = [Self.b("xack"), key, now, Self.b("0"), Self.streamGroup, Self.b(target.description)]
            let add = [Self.b("xadd"), key, now, Self.b("0"), Self.b("*")] + Array(rest.suffix(4))
            return [Self.b("multi"), key, now, Self.b("-"), Self.b("w"), Self.b(String(ack.count))] + ack
                + [Self.b("w"), Self.b(String(add.count))] + add
        }
        return [Self.b(name), key, now, Self.b("0")] + rest
    }

    func streamSend(_ c: Int) {
        guard var f = streams.clients[c].inFlight else { return }
        let tag = nextTag
        nextTag += 1
        streams.tags[tag] = c
        f.tag = tag
        f.attempts += 1
        f.deadline = now + config.clientTimeoutTicks
        f.delivered = nodes[f.node] != nil
        streams.clients[c].inFlight = f
        let call = streams.calls[f.call]
        let args = streamArgs(call, node: f.node)
        guard let n = nodes[f.node] else { return }  // down: lost, the client times out
        let key = streamKey(call.stream)
        let rid = f.rid
        whenRunning(f.node) { n.propose(key: key, .data(args), id: rid, tag: tag) }
    }

    /// The attempt failed. Certainly not applied: the next node, same request id (three attempts
    /// at most). May have been applied: a NEW request (what a client library does) for the calls
    /// whose retry is safe — an add with an idempotency key, an ack, an ackadd — else give up.
    func streamAttemptFailed(_ c: Int, unknown: Bool) {
        guard var f = streams.clients[c].inFlight else { return }
        streams.tags[f.tag] = nil
        if unknown { f.maybeApplied = true }
        if !f.maybeApplied && f.attempts < 3 {
            f.node = (f.node + 1) % 3
            streams.clients[c].inFlight = f
            streamSend(c)
            return
        }
        if f.freshLeft > 0 {
            f.freshLeft -= 1
            streams.clients[c].counter += 1
            f.rid = RequestID(client: UInt32(6_000 + c), counter: streams.clients[c].counter)
            f.attempts = 0
            f.maybeApplied = false
            f.node = (f.node + 1) % 3
            streams.calls[f.call].freshRetries += 1
            streams.clients[c].inFlight = f
            streamSend(c)
            return
        }
        streamFinish(c, nil)
    }

    /// A core reply, if it is the stream workload's (true = consumed).
    func streamReply(_ r: ClientReply) -> Bool {
        if let ft = streams.finalTag, ft.tag == r.tag {
            streams.finalTag = nil
            switch r.outcome {
            case .typed(let v):
                streams.finalValues[ft.stream] = .some(StreamValue(v.bytes))
                streams.finalPending.removeFirst()
            case .value(nil):
                streams.finalValues[ft.stream] = .some(nil)
                streams.finalPending.removeFirst()
            default: break
            }
            return true
        }
        guard let c = streams.tags.removeValue(forKey: r.tag) else { return false }
        guard let f = streams.clients[c].inFlight, f.tag == r.tag else { return true }
        switch r.outcome {
        case .retryable: streamAttemptFailed(c, unknown: false)
        case .unknown: streamAttemptFailed(c, unknown: true)
        case .done(.data(let d)): streamAnswered(c, d)
        case .done(.previousForgotten): streamFinish(c, nil)  // applied; its answer was forgotten
        default:
            violations.append(
                violation(
                    check: "workload", key: "q*",
                    detail: "unexpected \(r.outcome) for \(streams.calls[f.call])"))
            streamFinish(c, nil)
        }
        return true
    }

    func streamAnswered(_ c: Int, _ reply: DataReply) {
        guard let f = streams.clients[c].inFlight else { return }
        var d = reply
        let call = streams.calls[f.call]
        if call.kind == .ackAdd && config.streamMutant == .ackAddUnconditional,
            case .array(let parts?) = d, parts.count == 2
        {
            // The mutant's transaction answered [acked, new id]: XACKADD's shape.
            d = .array([parts[0], .array([parts[1]])])
        }
        if call.kind == .addRun {
            // Each add's reply, as the front end hands them out (a reply that is not one per add
            // is the run's outcome, kept whole).
            if let each = DataModel.streamRunReplies(
                d, count: call.tokens.count, reversed: config.streamMutant == .runRepliesReversed)
            {
                d = .array(each)
            }
        }
        if call.kind.delivers {
            for (id, fields) in Self.streamDelivered(d, claim: call.kind == .claim) {
                let spawns = fields.count >= 4 && fields[2] == Self.b("k") && fields[3] == Self.b("s")
                streams.clients[c].holds.append(.init(stream: call.stream, id: id, spawns: spawns))
                if call.kind == .read { streams.seenDelivered[call.stream, default: []].append(id) }
            }
        }
        if let t = call.target, Self.streamRemoved(call.kind, d) {
            streams.seenAcked[call.stream, default: []].append(t)
        }
        streamFinish(c, d)
    }

    func streamFinish(_ c: Int, _ reply: DataReply?) {
        guard let f = streams.clients[c].inFlight else { return }
        streams.calls[f.call].reply = reply
        streams.calls[f.call].ret = reply == nil ? nil : returnTime
        streams.calls[f.call].args = streamArgs(streams.calls[f.call], node: f.node)
        streams.clients[c].inFlight = nil
        streams.clients[c].nextAt = now + rng.below(8)
        mix(UInt64(f.call) << 4 | UInt64(c) | 0x5713_0000_0000)
    }

    /// Whether an XACK's or XACKADD's reply says it removed its id from the pending list.
    static func streamRemoved(_ kind: StreamCall.Kind, _ d: DataReply) -> Bool {
        if kind == .ack, case .integer(1) = d { return true }
        if kind == .ackAdd, case .array(let p?) = d, p.first == .integer(1) { return true }
        return false
    }

    /// The entries an XREADGROUP or XCLAIM (or XAUTOCLAIM's claimed list) answered: (id, fields).
    static func streamDelivered(_ d: DataReply, claim: Bool) -> [(StreamID, [[UInt8]])] {
        var list: [DataReply] = []
        if claim {
            guard case .array(let parts?) = d, parts.count == 3, case .array(let claimed?) = parts[1] else {
                return []
            }
            list = claimed
        } else {
            guard case .array(let entries?) = d else { return [] }
            list = entries
        }
        return list.compactMap { e in
            guard case .array(let pair?) = e, pair.count == 2, case .bulk(let idBytes?) = pair[0],
                let id = StreamID.parse(idBytes, strict: true), case .array(let fs?) = pair[1]
            else { return nil }
            return (id, fs.compactMap { if case .bulk(let x?) = $0 { return x } else { return nil } })
        }
    }

    /// After the heal: one linearizable read per stream (retried until answered).
    func streamFinalReads() {
        if !streams.started {
            streams.started = true
            streams.finalPending = Array(0..<Self.streamCount)
        }
        if let ft = streams.finalTag, now < ft.deadline { return }
        guard let s = streams.finalPending.first else { return }
        let node = ((streams.finalTag?.node ?? -1) + 1) % 3
        let tag = nextTag
        nextTag += 1
        streams.finalTag = (tag, s, node, now + config.clientTimeoutTicks)
        guard let n = nodes[node] else { return }
        let key = streamKey(s)
        whenRunning(node) { n.read(key: key, tag: tag) }
    }

    // MARK: Checks

    /// QUEUE.md's guarantees, against each stream's final value (the workload never trims, and
    /// deletes only entries whose acknowledgement was answered, so every entry ever added is still
    /// there unless so deleted):
    /// 1. every XADD that answered an id has that entry, with its fields, or the entry was
    ///    deleted by an XDEL sent after an acknowledgement of it was answered (none lost);
    /// 2. no task twice: each add's token, and each parent's follow-up, appears at most once
    ///    (an IDMP XADD retried as a new request added once; an XACKADD's follow-ups once);
    /// 3. a delivered task that spawns work is either still pending or has its follow-up, never
    ///    both, never neither (XACKADD acknowledged iff it added);
    /// 4. every delivered entry is still pending unless an XACK/XACKADD of it was sent (no
    ///    delivered entry leaves the PEL otherwise);
    /// 5. no entry is delivered (read, XCLAIMed or XAUTOCLAIMed) after an acknowledgement of it was
    ///    answered, and `>` delivers each entry once; what is delivered is what was added.
    func checkStreams() {
        guard config.streamOps > 0 else { return }
        for s in 0..<Self.streamCount {
            let name = "q\(s)"
            func fail(_ why: String, _ related: [StreamCall] = []) {
                let shown =
                    related.isEmpty ? streams.calls.filter { $0.stream == s }.suffix(12) : related.suffix(12)
                violations.append(
                    violation(
                        check: "stream", key: name,
                        detail: why + "\n" + shown.map { "    \($0)" }.joined(separator: "\n")))
            }
            guard let final = streams.finalValues[s] else {
                fail("never read after the heal")
                return
            }
            let calls = streams.calls.filter { $0.stream == s }
            let v = final ?? StreamValue()
            var byID: [StreamID: [[UInt8]]] = [:]
            var tokens: [String: StreamID] = [:]
            for e in v.entries {
                byID[e.id] = e.fields
                guard e.fields.count >= 2 else { continue }
                let t = String(decoding: e.fields[1], as: UTF8.self)
                if let other = tokens[t] {
                    fail(
                        "task \(t) is in the stream twice (\(other) and \(e.id))",
                        calls.filter { $0.token == t || $0.target.map { "\($0)/sub" } == t })
                    return
                }
                tokens[t] = e.id
            }
            let group = v.groups.first { $0.name == Self.streamGroup }
            let pel = Set(group?.pending.map(\.id) ?? [])
            let lastID = group?.lastID ?? .zero
            // When each entry's first acknowledgement was answered, and which entries an XDEL
            // was sent for after that (the only way an added entry may leave the stream).
            var acked: [StreamID: UInt64] = [:]
            for call in calls {
                guard let ret = call.ret, let t = call.target, let r = call.reply else { continue }
                if Self.streamRemoved(call.kind, r) { acked[t] = min(acked[t] ?? .max, ret) }
            }
            var deleted: Set<StreamID> = []
            for call in calls where call.kind == .del {
                if let t = call.target, let at = acked[t], at < call.call { deleted.insert(t) }
            }
            // 1. Acknowledged adds.
            for call in calls where call.kind == .add {
                guard case .bulk(let idBytes?)? = call.reply else { continue }
                let parsed = StreamID.parse(idBytes, strict: true)
                if let id = parsed, deleted.contains(id) { continue }
                guard let id = parsed, let fields = byID[id] else {
                    fail(
                        "XADD answered \(String(decoding: idBytes, as: UTF8.self)), the stream lacks it",
                        [call])
                    return
                }
                if fields.count < 2 || String(decoding: fields[1], as: UTF8.self) != call.token {
                    fail("XADD answered \(id), which holds another task", [call])
                    return
                }
            }
            // 1, for the adds of runs: each answered id holds that add's task.
            for call in calls where call.kind == .addRun {
                guard case .array(let each?)? = call.reply, each.count == call.tokens.count else { continue }
                for (t, r) in zip(call.tokens, each) {
                    guard case .bulk(let idBytes?) = r else { continue }
                    let parsed = StreamID.parse(idBytes, strict: true)
                    if let id = parsed, deleted.contains(id) { continue }
                    guard let id = parsed, let fields = byID[id] else {
                        fail(
                            "a run's XADD answered \(String(decoding: idBytes, as: UTF8.self)), the stream lacks it",
                            [call])
                        return
                    }
                    if fields.count < 2 || String(decoding: fields[1], as: UTF8.self) != t {
                        fail("a run's XADD of \(t) answered \(id), which holds another task", [call])
                        return
                    }
                }
            }
            // The tasks of deleted entries, as their deliveries showed them (an entry is deleted
            // only once acknowledged, so someone was delivered it).
            var deletedTokens: Set<String> = []
            for call in calls where call.kind.delivers {
                guard let reply = call.reply else { continue }
                for (id, fields) in Self.streamDelivered(reply, claim: call.kind == .claim)
                where deleted.contains(id) && fields.count >= 2 {
                    deletedTokens.insert(String(decoding: fields[1], as: UTF8.self))
                }
            }
            // 2–4, per entry.
            var sent: Set<StreamID> = []
            for call in calls where call.kind == .ack || call.kind == .ackAdd {
                if let t = call.target { sent.insert(t) }
            }
            for e in v.entries {
                let delivered = e.id <= lastID
                let pending = pel.contains(e.id)
                let spawns = e.fields.count >= 4 && e.fields[2] == Self.b("k") && e.fields[3] == Self.b("s")
                // Its follow-up is in the stream, or was, and was deleted once acknowledged.
                let followUp = tokens["\(e.id)/sub"] != nil || deletedTokens.contains("\(e.id)/sub")
                let related = calls.filter { $0.target == e.id }
                if followUp && !spawns {
                    fail("\(e.id) does not spawn work, yet has a follow-up", related)
                    return
                }
                if spawns && delivered && pending == followUp {
                    fail(
                        pending
                            ? "\(e.id) is still pending and its follow-up was added"
                            : "\(e.id) left the pending list without its follow-up (no XACKADD removed it)",
                        related)
                    return
                }
                if !delivered && (pending || followUp) {
                    fail("\(e.id) was never delivered, yet it is pending or completed", related)
                    return
                }
                if delivered && !pending && !sent.contains(e.id) {
                    fail("\(e.id) was delivered and left the pending list without an XACK", related)
                    return
                }
            }
            // 5. Deliveries.
            var once: Set<StreamID> = []
            for call in calls where call.kind.delivers && call.ret != nil {
                guard let reply = call.reply else { continue }
                for (id, fields) in Self.streamDelivered(reply, claim: call.kind == .claim) {
                    if let at = acked[id], at < call.call {
                        fail(
                            "\(id) was delivered after its acknowledgement was answered",
                            calls.filter { $0.target == id } + [call])
                        return
                    }
                    if byID[id] != fields && !deleted.contains(id) {
                        fail("\(id) was delivered with fields the stream does not hold", [call])
                        return
                    }
                    if call.kind == .read {
                        if once.contains(id) {
                            fail("\(id) was delivered twice by XREADGROUP >", [call])
                            return
                        }
                        once.insert(id)
                    }
                }
            }
        }
    }

    func streamResult() -> StreamStats {
        var s = StreamStats(calls: streams.calls)
        for case let v?? in (0..<Self.streamCount).map({ streams.finalValues[$0] }) {
            s.entries += v.entries.count
            s.followUps += v.entries.filter { $0.fields.count >= 4 && $0.fields[2] == Self.b("parent") }.count
            s.pending += v.groups.reduce(0) { $0 + $1.pending.count }
        }
        for call in streams.calls where call.kind == .claim || call.kind == .xclaim {
            if let r = call.reply { s.claimed += Self.streamDelivered(r, claim: call.kind == .claim).count }
        }
        return s
    }
}
