import TernCheck
import TernCore

/// Shorthand for hand-written histories: `op(1, .put("a"), .ok, 0, 1)`.
func op(
    _ client: Int, _ input: OperationInput, _ output: OperationOutput, _ call: UInt64, _ ret: UInt64?,
    key: String = "k"
) -> HistoryOperation {
    HistoryOperation(client: client, key: key, input: input, output: output, call: call, ret: ret)
}

/// Whether `result` is a violation (on `key`, if given).
func isViolation(_ result: CheckResult, key: String? = nil) -> Bool {
    guard case .violation(let v) = result else { return false }
    return key == nil || v.key == key
}

/// Generates a linearizable history by running a sequential model: each operation takes effect
/// at one instant strictly inside its [call, ret] interval, and clients are scheduled at random,
/// so intervals overlap the way a real cluster's do. Even-numbered keys are registers
/// (get/put/delete/cas, every written value unique), odd ones counters (get/incr).
///
/// Some operations fail (no effect), some time out before taking effect, and some take effect
/// but their answer is lost (`.unknown`): the checker must explain all of them.
struct HistoryGenerator {
    var rng: SplitMix64
    var opsCount: Int
    var keysCount: Int
    var clientsCount: Int

    private enum Fate { case apply, applyButLose, failBeforeEffect, timeOutBeforeEffect }

    private struct Pending {
        var key: String
        var input: OperationInput
        var call: UInt64
        var fate: Fate
        var output: OperationOutput?
    }

    init(seed: UInt64, ops: Int, keys: Int, clients: Int) {
        rng = SplitMix64(seed: seed)
        opsCount = ops
        keysCount = keys
        clientsCount = clients
    }

    mutating func generate() -> [HistoryOperation] {
        var state: [String: String] = [:]
        var pending: [Pending?] = Array(repeating: nil, count: clientsCount)
        var history: [HistoryOperation] = []
        var issued = 0
        var written = 0
        var time: UInt64 = 0
        while history.count < opsCount {
            time += 1
            let client = Int.random(in: 0..<clientsCount, using: &rng)
            guard var p = pending[client] else {
                if issued < opsCount {
                    pending[client] = invoke(&written, state: state, time: time)
                    issued += 1
                }
                continue
            }
            switch (p.fate, p.output) {
            case (.apply, nil), (.applyButLose, nil):
                p.output = apply(p.input, key: p.key, state: &state)
                pending[client] = p
                continue
            case (.apply, let output?):
                history.append(
                    HistoryOperation(
                        client: client, key: p.key, input: p.input, output: output, call: p.call, ret: time))
            case (.applyButLose, _), (.timeOutBeforeEffect, _):
                history.append(
                    HistoryOperation(
                        client: client, key: p.key, input: p.input, output: .unknown, call: p.call, ret: nil))
            case (.failBeforeEffect, _):
                history.append(
                    HistoryOperation(
                        client: client, key: p.key, input: p.input, output: .failed, call: p.call, ret: time))
            }
            pending[client] = nil
        }
        return history
    }

    private mutating func invoke(_ written: inout Int, state: [String: String], time: UInt64) -> Pending {
        let k = Int.random(in: 0..<keysCount, using: &rng)
        let key = "key\(k)"
        let roll = Int.random(in: 0..<100, using: &rng)
        let input: OperationInput
        if k % 2 == 1 {
            input = roll < 40 ? .get : .incr(Int64.random(in: -3...10, using: &rng))
        } else if roll < 40 {
            input = .get
        } else if roll < 70 {
            written += 1
            input = .put("v\(written)")
        } else if roll < 78 {
            input = .delete
        } else {
            written += 1
            // Half the time expect the current value, so that swaps do happen.
            let old = "v\(Int.random(in: 1...written, using: &rng))"
            let expected = Bool.random(using: &rng) ? state[key] : old
            input = .cas(expected: expected, new: "v\(written)")
        }
        let fateRoll = Int.random(in: 0..<100, using: &rng)
        let fate: Fate =
            fateRoll < 3
            ? .failBeforeEffect
            : fateRoll < 6 ? .timeOutBeforeEffect : fateRoll < 9 ? .applyButLose : .apply
        return Pending(key: key, input: input, call: time, fate: fate, output: nil)
    }

    private func apply(_ input: OperationInput, key: String, state: inout [String: String]) -> OperationOutput
    {
        switch input {
        case .get:
            return .value(state[key])
        case .put(let v):
            state[key] = v
            return .ok
        case .delete:
            state[key] = nil
            return .ok
        case .cas(let expected, let new):
            guard state[key] == expected else { return .swapped(false) }
            state[key] = new
            return .swapped(true)
        case .incr(let d):
            let sum = Int64(state[key] ?? "0")! + d
            state[key] = String(sum)
            return .number(sum)
        }
    }
}

/// Makes a generated history non-linearizable: a get that follows two non-overlapping puts
/// (w1 entirely before w2, w2 entirely before the get) now returns w1's value. Written values are
/// unique, so that read can only be linearised before w2, which real time forbids.
/// Returns the index of the mutated get, or nil if the history has no such pattern.
func injectStaleRead(_ history: inout [HistoryOperation]) -> Int? {
    var putsByKey: [String: [HistoryOperation]] = [:]
    for op in history.sorted(by: { $0.call < $1.call }) {
        if case .put = op.input, op.output == .ok { putsByKey[op.key, default: []].append(op) }
    }
    for (index, get) in history.enumerated() {
        guard get.input == .get, case .value = get.output, let puts = putsByKey[get.key] else { continue }
        let before = puts.filter { $0.ret! < get.call }
        for w2 in before.reversed() {
            if let w1 = before.last(where: { $0.ret! < w2.call }), case .put(let stale) = w1.input {
                history[index].output = .value(stale)
                return index
            }
        }
    }
    return nil
}
