import TernConsensus
import TernCore
public import TernSeq

/// One SEQ.NEXT as a simulated client saw it. Times are half-ticks, like `HistoryOperation`.
public struct SeqOperation: Sendable, Hashable, CustomStringConvertible {
    public var client: Int
    public var node: Int
    public var uid: UInt64
    public var count: UInt64
    public var call: UInt64
    /// nil: no answer (timeout, error).
    public var ret: UInt64?
    public var first: UInt64 = 0
    public var last: UInt64 = 0
    public var description: String {
        "client \(client) SEQ.NEXT uid=\(uid) count=\(count) at n\(node + 1) -> "
            + (ret.map { "\(first)...\(last) [\(call), \($0)]" } ?? "no answer [\(call), ?]")
    }
}

/// The sequence workload's state inside a `Simulation`: one `SeqHost` per simulated node (the
/// server's own sequence logic: routing, forwarding, forward timeouts, allocators; lost at a
/// crash), its peer messages on the simulated network, the seq clients and their history.
struct SeqWorkload {
    struct Client {
        var nextAt: UInt64
        var inFlight: (history: Int, tag: UInt64, deadline: UInt64)?
    }
    struct KeyTag {
        var node: Int
        var incarnation: UInt64
        /// The host's tag for this key request.
        var hostTag: UInt64
    }
    var hosts: [SeqHost?] = [nil, nil, nil]
    var keyTags: [UInt64: KeyTag] = [:]
    /// Host answer tag → client.
    var replyTags: [UInt64: Int] = [:]
    /// Replies released this tick, delivered to the clients at the next tick's reply step (so a
    /// reply's time is never equal to a call made in the same tick).
    var deferred: [(tag: UInt64, first: UInt64, last: UInt64)] = []
    /// Seq peer messages in flight, by arrival tick (like the Paxos frames).
    var inTransit: [(at: UInt64, from: Int, to: Int, bytes: [UInt8])] = []
    var clients: [Client] = []
    var history: [SeqOperation] = []
    var issued = 0
    var requestCounter: UInt64 = 0
    /// Seq peer messages sent (forwards and their replies).
    var messagesSent = 0

    var idle: Bool { clients.allSatisfy { $0.inFlight == nil } }
}

extension Simulation {
    /// Simulated nanoseconds: a tick stands for the server's 5 ms tick, so the host's forward
    /// timeout (300 ms) is 60 ticks.
    static let seqNanosPerTick: UInt64 = 5_000_000
    var seqNow: UInt64 { now * Self.seqNanosPerTick }

    func seqSetUp() {
        guard config.seqOps > 0 else { return }
        for _ in 0..<config.seqClients { seq.clients.append(.init(nextAt: rng.below(5))) }
    }

    var seqDone: Bool { seq.issued >= config.seqOps && seq.idle }

    /// Step 2: replies released during the previous tick reach their clients; seq peer messages
    /// due now reach their nodes; forward timeouts fire.
    func seqDeliver() {
        let due = seq.deferred
        seq.deferred = []
        for d in due {
            guard let c = seq.replyTags.removeValue(forKey: d.tag), let f = seq.clients[c].inFlight,
                f.tag == d.tag
            else { continue }
            seq.history[f.history].ret = returnTime
            seq.history[f.history].first = d.first
            seq.history[f.history].last = d.last
            seq.clients[c].inFlight = nil
            seq.clients[c].nextAt = now + rng.below(4)
            mix(d.first &* 31 &+ d.last)
        }
        var k = 0
        while k < seq.inTransit.count {
            guard seq.inTransit[k].at <= now else {
                k += 1
                continue
            }
            let m = seq.inTransit.remove(at: k)
            guard nodes[m.to] != nil else { continue }
            let incarnation = incarnation[m.to]
            whenRunning(m.to) { [self] in
                guard self.incarnation[m.to] == incarnation, seq.hosts[m.to] != nil else { return }
                seq.hosts[m.to]!.receive(from: ids[m.from], m.bytes)
                seqDrive(m.to)
            }
        }
        for i in 0..<3 where nodes[i] != nil && pausedUntil[i] == nil {
            if let d = seq.hosts[i]?.nextDeadline, d <= seqNow {
                seq.hosts[i]!.tick(now: seqNow)
                seqDrive(i)
            }
        }
    }

    /// Step 4: seq clients time out or call SEQ.NEXT on a random node.
    func seqAct() {
        for c in seq.clients.indices {
            if let f = seq.clients[c].inFlight {
                if now >= f.deadline {
                    seq.replyTags[f.tag] = nil
                    seq.clients[c].inFlight = nil
                    seq.clients[c].nextAt = now + rng.below(4)
                }
                continue
            }
            guard now >= seq.clients[c].nextAt, seq.issued < config.seqOps else { continue }
            seq.issued += 1
            let node = Int(rng.below(3))
            let uid = rng.below(UInt64(config.seqUIDs))
            let count = 1 + rng.below(3)
            let tag = nextTag
            nextTag += 1
            seq.history.append(
                SeqOperation(client: c, node: node, uid: uid, count: count, call: callTime, ret: nil))
            seq.clients[c].inFlight = (seq.history.count - 1, tag, now + config.clientTimeoutTicks)
            seq.replyTags[tag] = c
            mix(0x5E9 &+ uid << 8 &+ UInt64(node))
            guard nodes[node] != nil else { continue }  // down: lost, the client times out
            let incarnation = incarnation[node]
            whenRunning(node) { [self] in
                guard self.incarnation[node] == incarnation, seq.hosts[node] != nil else { return }
                // One node per campus, in campus order: every node replicates every key.
                seq.hosts[node]!.request(
                    tag: tag, current: false, uid: uid, count: count, replicas: ids, now: seqNow)
                seqDrive(node)
            }
        }
    }

    var seqHostOptions: SeqHost.Options {
        var o = SeqHost.Options()
        o.sectionUIDs = config.seqSectionUIDs
        o.allocator.step = config.seqStep
        o.allocator.mutant = config.seqMutant
        return o
    }

    /// A node (re)started: its host and allocators are gone with its memory.
    func seqNodeStarted(_ i: Int) {
        if i < seq.hosts.count {
            let base = config.seqMutant == .seqRestartTags ? 0 : incarnation[i] << 40
            seq.hosts[i] = SeqHost(me: ids[i], options: seqHostOptions, tagBase: base)
        }
    }

    /// A reply from a node's core to one of the host's key requests.
    func seqKeyReply(_ k: SeqWorkload.KeyTag, _ outcome: ClientOutcome) {
        if pausedUntil[k.node] != nil {
            whenRunning(k.node) { [self] in seqKeyReply(k, outcome) }
            return
        }
        guard nodes[k.node] != nil, incarnation[k.node] == k.incarnation, seq.hosts[k.node] != nil else {
            return
        }
        // The replica-level outcome as the node core reports it to the server's host.
        let reply: NodeReply
        switch outcome {
        case .done(let r): reply = .done(r)
        case .value(let v): reply = .value(v)
        case .typed(let v): reply = .typed(v)
        case .retryable: reply = .notApplied("retryable")
        case .unknown: reply = .unknown("unknown")
        }
        seq.hosts[k.node]!.keyResult(tag: k.hostTag, reply)
        seqDrive(k.node)
    }

    /// Carries out node `node`'s host output: key requests to its replica node, peer messages to
    /// the simulated network (same loss, cuts and delays as the Paxos frames), answers to clients.
    func seqDrive(_ node: Int) {
        guard let n = nodes[node], seq.hosts[node] != nil else { return }
        let r = seq.hosts[node]!.ready()
        for k in r.keyRequests {
            let tag = nextTag
            nextTag += 1
            seq.keyTags[tag] = .init(node: node, incarnation: incarnation[node], hostTag: k.tag)
            let key = SeqKeys.sectionKey(k.section)
            switch k.request {
            case .read: n.read(key: key, tag: tag)
            case .cas(let e, let v):
                seq.requestCounter += 1
                n.propose(
                    key: key, .cas(expected: e, new: v),
                    id: RequestID(client: 9000 + UInt32(node), counter: seq.requestCounter), tag: tag)
            }
        }
        for m in r.messages {
            guard let j = ids.firstIndex(of: m.to) else { continue }
            seq.messagesSent += 1
            mix(0x5E0 &+ UInt64(node) << 4 &+ UInt64(j))
            if cut[node][j] || rng.chance(faults.loss) { continue }
            seq.inTransit.append((now + 1 + rng.below(faults.delayTicksMax), node, j, m.bytes))
        }
        for a in r.answers {
            switch a.answer {
            case .numbers(let first, let last):
                seq.deferred.append((a.tag, first, last))
            case .failed:
                if let c = seq.replyTags.removeValue(forKey: a.tag), seq.clients[c].inFlight?.tag == a.tag {
                    seq.clients[c].inFlight = nil
                    seq.clients[c].nextAt = now + rng.below(4)
                }
            }
        }
    }

    /// Per uid: no number handed out twice, and a call made after another call's reply got larger
    /// numbers than all of that reply's.
    func checkSeq() {
        var byUID: [UInt64: [Int]] = [:]
        for (i, op) in seq.history.enumerated() where op.ret != nil { byUID[op.uid, default: []].append(i) }
        for uid in byUID.keys.sorted() {
            let ops = byUID[uid]!
            let byFirst = ops.sorted { (seq.history[$0].first, $0) < (seq.history[$1].first, $1) }
            for (x, y) in zip(byFirst, byFirst.dropFirst()) where seq.history[y].first <= seq.history[x].last
            {
                seqViolation(uid, "numbers handed out twice", seq.history[x], seq.history[y])
                return
            }
            let byRet = ops.sorted { (seq.history[$0].ret!, $0) < (seq.history[$1].ret!, $1) }
            var p = 0
            var best: Int?
            for b in ops.sorted(by: { (seq.history[$0].call, $0) < (seq.history[$1].call, $1) }) {
                while p < byRet.count && seq.history[byRet[p]].ret! <= seq.history[b].call {
                    if best == nil || seq.history[byRet[p]].last > seq.history[best!].last { best = byRet[p] }
                    p += 1
                }
                if let best, seq.history[b].first <= seq.history[best].last {
                    seqViolation(
                        uid, "a later call got a number not above an earlier reply's", seq.history[best],
                        seq.history[b])
                    return
                }
            }
        }
    }

    func seqViolation(_ uid: UInt64, _ what: String, _ a: SeqOperation, _ b: SeqOperation) {
        violations.append(
            SimViolation(
                seed: config.seed, check: "seq", key: "uid \(uid)",
                detail: "\(what):\n  \(a)\n  \(b)", subHistory: [], replay: config.replayCommand))
    }
}
