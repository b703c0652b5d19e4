import TernConsensus

/// The global observer: sees every replica's state after every flush and every message sent.
///
/// Checks: at most one value chosen per (key, instance) across replicas; within one incarnation a
/// replica's chosen instance and promise never decrease; across a crash, every promise a node
/// announced (Promise/Accepted sent) is still in its durable record, unless the record was
/// corrupted (then the key must come back damaged).
struct Observer {
    var chosen: [[UInt8]: [UInt64: KeyValue]] = [:]
    /// Per node: key → (chosen, promised) seen in this incarnation.
    var seen: [[[UInt8]: (UInt64, Ballot)]] = [[:], [:], [:]]
    /// Per node: key → highest ballot the node announced in a Promise or Accepted.
    var announced: [[[UInt8]: Ballot]] = [[:], [:], [:]]

    mutating func observe(node: Int, key: [UInt8], replica r: KeyReplica) -> String? {
        let st = r.state
        if st.chosen > 0 {
            if let prev = chosen[key]?[st.chosen] {
                if prev != st.value {
                    return
                        "two values chosen at instance \(st.chosen): \(prev.bytes.map { String(decoding: $0, as: UTF8.self) } ?? "nil") vs \(st.value.bytes.map { String(decoding: $0, as: UTF8.self) } ?? "nil") (node \(node + 1))"
                }
            } else {
                chosen[key, default: [:]][st.chosen] = st.value
            }
        }
        if let (c, p) = seen[node][key] {
            if st.chosen < c {
                return "chosen instance went back from \(c) to \(st.chosen) at node \(node + 1)"
            }
            if st.promised < p { return "promise went back from \(p) to \(st.promised) at node \(node + 1)" }
        }
        seen[node][key] = (st.chosen, st.promised)
        return nil
    }

    mutating func sent(node: Int, key: [UInt8], message: PaxosMessage) {
        switch message {
        case .promise(_, let b, _), .accepted(_, let b):
            if b > announced[node][key] ?? .zero { announced[node][key] = b }
        case .recovery(let b, let promised, _, _, _) where promised == b:
            // A granted recovery is a promise of b.
            if b > announced[node][key] ?? .zero { announced[node][key] = b }
        case .accept(_, let b, _) where b.round == 0:
            // A round-0 proposer's Accept stands for its own vote, cast in the same step (it sends
            // none to itself): that vote must be durable before the Accept left.
            if b > announced[node][key] ?? .zero { announced[node][key] = b }
        default: break
        }
    }

    mutating func corrupted(node: Int, key: [UInt8]) {
        announced[node][key] = nil
    }

    /// Node `node`'s whole disk is gone (the repair workload's wipe): nothing it announced is owed.
    mutating func lostEverything(node: Int) {
        announced[node] = [:]
    }

    /// Checks the durable state right after a crash.
    /// `load` reads the node's recovered storage.
    mutating func crashed(node: Int, load: ([UInt8]) -> LoadResult) -> (String, String)? {
        seen[node] = [:]
        let keys = announced[node].keys.sorted { $0.lexicographicallyPrecedes($1) }
        for k in keys {
            let want = announced[node][k]!
            switch load([1] + k) {
            case .damaged: continue
            case .absent:
                return (
                    String(decoding: k, as: UTF8.self),
                    "node \(node + 1) announced \(want) but its record is gone after the crash"
                )
            case .state(let b):
                guard let st = PaxosCodec.decode(b) else { continue }
                if st.promised < want {
                    return (
                        String(decoding: k, as: UTF8.self),
                        "node \(node + 1) announced \(want) but remembers only \(st.promised) after the crash"
                    )
                }
            }
        }
        return nil
    }

    mutating func restarted(node: Int) { seen[node] = [:] }
}
