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

/// The sequence workload's state inside a `Simulation`: allocators hosted on the simulated nodes
/// (one per section per node, lost at a crash), the seq clients and their history.
struct SeqWorkload {
    struct Client {
        var nextAt: UInt64
        var inFlight: (history: Int, tag: UInt64, deadline: UInt64)?
    }
    struct KeyTag {
        var node: Int
        var incarnation: UInt64
        var section: UInt64
        var id: UInt64
    }
    /// Per node: section → allocator.
    var allocators: [[UInt64: SectionAllocator]] = [[:], [:], [:]]
    var keyTags: [UInt64: KeyTag] = [:]
    /// Allocator reply tag → client.
    var replyTags: [UInt64: Int] = [:]
    /// Replies released this tick, delivered to the clients at the next tick's reply step (so a
    /// reply's time is never equal to a call made in the same tick).
    var deferred: [(tag: UInt64, first: UInt64, last: UInt64)] = []
    var clients: [Client] = []
    var history: [SeqOperation] = []
    var issued = 0
    var requestCounter: UInt64 = 0

    var idle: Bool { clients.allSatisfy { $0.inFlight == nil } }
}

extension Simulation {
    func seqSetUp() {
        guard config.seqOps > 0 else { return }
        for _ in 0..<config.seqClients { seq.clients.append(.init(nextAt: rng.below(5))) }
    }

    var seqDone: Bool { seq.issued >= config.seqOps && seq.idle }

    /// Step 2: replies released during the previous tick reach their clients.
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
            whenRunning(node) { [self] in
                let section = uid / config.seqSectionUIDs
                if seq.allocators[node][section] == nil {
                    seq.allocators[node][section] = SectionAllocator(
                        section: section, me: ids[node], config: seqAllocatorConfig)
                }
                let out = seq.allocators[node][section]!.allocate(uid: uid, count: count, tag: tag)
                seqCarryOut(node: node, section: section, out)
            }
        }
    }

    var seqAllocatorConfig: SeqConfig {
        var c = SeqConfig()
        c.step = config.seqStep
        c.mutant = config.seqMutant
        return c
    }

    /// A node (re)started: its allocators are gone with its memory.
    func seqNodeStarted(_ i: Int) {
        if i < seq.allocators.count { seq.allocators[i] = [:] }
    }

    /// A reply from a node's core to one of the allocators' key requests.
    func seqKeyReply(_ k: SeqWorkload.KeyTag, _ outcome: ClientOutcome) {
        if pausedUntil[k.node] != nil {
            whenRunning(k.node) { [self] in seqKeyReply(k, outcome) }
            return
        }
        guard nodes[k.node] != nil, incarnation[k.node] == k.incarnation,
            seq.allocators[k.node][k.section] != nil
        else { return }
        let result: SeqKeyResult
        switch outcome {
        case .value(let v): result = .value(v)
        case .done(.swapped(let b)): result = .swapped(b)
        case .done: result = .failed
        case .retryable: result = .failed
        case .unknown: result = .unknown
        }
        let out = seq.allocators[k.node][k.section]!.keyResult(id: k.id, result)
        seqCarryOut(node: k.node, section: k.section, out)
    }

    func seqCarryOut(node: Int, section: UInt64, _ outputs: [SeqOutput]) {
        for o in outputs {
            switch o {
            case .request(let id, let r):
                guard let n = nodes[node] else { continue }
                let tag = nextTag
                nextTag += 1
                seq.keyTags[tag] = .init(node: node, incarnation: incarnation[node], section: section, id: id)
                let key = SeqKeys.sectionKey(section)
                switch r {
                case .read: n.read(key: key, tag: tag)
                case .cas(let e, let v):
                    seq.requestCounter += 1
                    n.propose(
                        key: key, .cas(expected: e, new: v),
                        id: RequestID(client: 9000 + UInt32(node), counter: seq.requestCounter), tag: tag)
                }
            case .reply(let tag, let first, let last):
                seq.deferred.append((tag, first, last))
            case .fail(let tag, _):
                if let c = seq.replyTags.removeValue(forKey: tag), seq.clients[c].inFlight?.tag == tag {
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
