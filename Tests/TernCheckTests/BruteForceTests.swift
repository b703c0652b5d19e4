import TernCore
import Testing

@testable import TernCheck

/// Cross-checks the memoised search against the definition itself: on small random histories
/// (random intervals, random and mostly wrong outputs), try every order consistent with real
/// time and every subset of unknown operations. Any disagreement is a checker bug.
@Suite struct BruteForceTests {
    @Test(arguments: 0..<8 as Range<UInt64>)
    func memoisedSearchAgreesWithExhaustiveSearch(batch: UInt64) {
        var rng = SplitMix64(seed: 1_000 + batch)
        var verdicts = (linearizable: 0, violation: 0)
        for _ in 0..<250 {
            let history = randomSmallHistory(&rng)
            let expected = bruteForceLinearizable(history)
            let actual = checkLinearizable(history)
            #expect(actual == .linearizable ? expected : !expected, "\(history)")
            if expected { verdicts.linearizable += 1 } else { verdicts.violation += 1 }
            if case .violation(let v) = actual {
                #expect(!bruteForceLinearizable(v.history), "shrunk witness is linearizable: \(v)")
            }
        }
        // Both verdicts must be exercised, or the comparison proves little.
        #expect(verdicts.linearizable > 20 && verdicts.violation > 20, "\(verdicts)")
    }
}

private func randomSmallHistory(_ rng: inout SplitMix64) -> [HistoryOperation] {
    let values: [String?] = [nil, "a", "b", "1", "2"]
    func value(_ rng: inout SplitMix64) -> String? { values.randomElement(using: &rng)! }
    let count = Int.random(in: 1...6, using: &rng)
    return (0..<count).map { client in
        let call = UInt64.random(in: 0...10, using: &rng)
        let ret = call + UInt64.random(in: 0...4, using: &rng)
        let input: OperationInput
        let output: OperationOutput
        switch Int.random(in: 0..<5, using: &rng) {
        case 0:
            input = .get
            output = .value(value(&rng))
        case 1:
            input = .put(value(&rng) ?? "a")
            output = .ok
        case 2:
            input = .delete
            output = .ok
        case 3:
            input = .cas(expected: value(&rng), new: value(&rng) ?? "b")
            output = .swapped(Bool.random(using: &rng))
        default:
            input = .incr(Int64.random(in: -1...2, using: &rng))
            output = .number(Int64.random(in: -1...3, using: &rng))
        }
        let fate = Int.random(in: 0..<10, using: &rng)
        return HistoryOperation(
            client: client, key: "k", input: input,
            output: fate == 0 ? .unknown : fate == 1 ? .failed : output,
            call: call, ret: fate == 0 ? nil : ret)
    }
}

/// The definition, with no cleverness: some order of a subset of the operations, containing every
/// known one and respecting real time (a before b if a returned strictly before b was called),
/// that the register model accepts. One key only.
func bruteForceLinearizable(_ history: [HistoryOperation]) -> Bool {
    let ops = history.filter { $0.output != .failed }
    func known(_ op: HistoryOperation) -> Bool { op.output != .unknown && op.ret != nil }
    func step(_ op: HistoryOperation, _ state: String?) -> (ok: Bool, state: String?) {
        let mustMatch = known(op)
        switch op.input {
        case .get:
            if case .value(let v) = op.output, mustMatch { return (v == state, state) }
            return (true, state)
        case .put(let v):
            return (true, v)
        case .delete:
            return (true, nil)
        case .cas(let e, let n):
            let swaps = state == e
            if case .swapped(let s) = op.output, mustMatch { return (s == swaps, swaps ? n : state) }
            return (true, swaps ? n : state)
        case .incr(let d):
            guard let old = state == nil ? 0 : Int64(state!) else { return (false, state) }
            let sum = old + d
            if case .number(let r) = op.output, mustMatch { return (r == sum, String(sum)) }
            return (true, String(sum))
        }
    }
    func search(_ done: Set<Int>, _ state: String?) -> Bool {
        if ops.indices.allSatisfy({ done.contains($0) || !known(ops[$0]) }) { return true }
        for i in ops.indices where !done.contains(i) {
            // i may go next only if no other pending known op returned before i was called.
            let blocked = ops.indices.contains { j in
                j != i && !done.contains(j) && known(ops[j]) && ops[j].ret! < ops[i].call
            }
            if blocked { continue }
            let (ok, next) = step(ops[i], state)
            if ok && search(done.union([i]), next) { return true }
        }
        return false
    }
    return search([], nil)
}
