import TernConsensus
import TernCore

let n1 = NodeID(1)
let n2 = NodeID(2)
let n3 = NodeID(3)
let key: [UInt8] = Array("k".utf8)

/// Three replicas of one key with a hand-driven network: tests choose what is delivered.
struct Trio {
    var replicas: [NodeID: KeyReplica] = [:]
    var ctx: [NodeID: NodeContext] = [:]
    /// Messages sent and not yet delivered, in send order.
    var inFlight: [(from: NodeID, to: NodeID, message: PaxosMessage)] = []
    var replies: [ClientReply] = []
    /// Every Effects produced, in order (for persistence assertions).
    var log: [(NodeID, Effects)] = []

    /// `owner`: the key's round-0 owner (`KeyReplica.owner`); nil, the default: every write runs
    /// Phase 1 first, as before round 0 existed.
    init(loaded: [NodeID: LoadedKey] = [:], config: PaxosConfig = PaxosConfig(), owner: NodeID? = nil) {
        for n in [n1, n2, n3] {
            replicas[n] = KeyReplica(
                key: key, me: n, peers: [n1, n2, n3].filter { $0 != n }, loaded: loaded[n] ?? .absent,
                owner: owner, mutant: config.mutant)
            ctx[n] = NodeContext(
                me: n, now: 0, ballots: BallotClock(epoch: 1), rng: SplitMix64(seed: UInt64(n.rawValue)),
                config: config)
        }
    }

    mutating func record(_ n: NodeID, _ fx: Effects) {
        log.append((n, fx))
        for m in fx.messages { inFlight.append((n, m.to, m.message)) }
        replies += fx.replies
    }

    mutating func propose(_ n: NodeID, _ op: Operation, id: RequestID, tag: UInt64) {
        let fx = replicas[n]!.propose(op, id: id, tag: tag, ctx: &ctx[n]!)
        record(n, fx)
    }

    mutating func read(_ n: NodeID, tag: UInt64, staleOK: Bool = false) {
        let fx = replicas[n]!.read(staleOK: staleOK, tag: tag, ctx: &ctx[n]!)
        record(n, fx)
    }

    mutating func deliver(_ m: (from: NodeID, to: NodeID, message: PaxosMessage)) {
        let fx = replicas[m.to]!.step(m.message, from: m.from, ctx: &ctx[m.to]!)
        record(m.to, fx)
    }

    /// Delivers everything (FIFO) except what `drop` rejects; bounded.
    mutating func run(drop: (NodeID, NodeID, PaxosMessage) -> Bool = { _, _, _ in false }) {
        var steps = 0
        while !inFlight.isEmpty && steps < 10_000 {
            let m = inFlight.removeFirst()
            steps += 1
            if drop(m.from, m.to, m.message) { continue }
            deliver(m)
        }
    }

    mutating func tick(_ n: NodeID, times: Int = 1) {
        for _ in 0..<times {
            ctx[n]!.now += 1
            let fx = replicas[n]!.tick(ctx: &ctx[n]!)
            record(n, fx)
        }
    }

    func state(_ n: NodeID) -> KeyState { replicas[n]!.state }
}

func rid(_ c: UInt64) -> RequestID { RequestID(client: 7, counter: c) }
func bytes(_ s: String) -> [UInt8] { Array(s.utf8) }

func isPrepare(_ m: PaxosMessage) -> Bool {
    if case .prepare = m { return true }
    return false
}
func isAccept(_ m: PaxosMessage) -> Bool {
    if case .accept = m { return true }
    return false
}
