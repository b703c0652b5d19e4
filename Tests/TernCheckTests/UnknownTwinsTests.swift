import TernCore
import Testing

@testable import TernCheck

/// Unknown operations with the same effect ("twins") are interchangeable; the search uses them in
/// call order (KeySearch.run). These histories are the simulator's hard case — a hot counter with
/// many increments of unknown outcome — shrunk to its essence.
@Suite struct UnknownTwinsTests {
    /// `count` concurrent `incr(+1)` of unknown outcome, then a read of `observed`.
    func unknownIncrements(_ count: Int, thenRead observed: Int64) -> [HistoryOperation] {
        var history = (0..<count).map { c in op(c, .incr(1), .unknown, UInt64(c), nil) }
        history.append(op(count, .get, .value(String(observed)), 1_000, 1_001))
        return history
    }

    @Test("Half of 40 unknown increments applied: decided in a small budget")
    func manyUnknownIncrementsLinearizable() {
        // Without the twin rule the search tries the C(40, k) subsets one by one and runs out.
        let report = searchKey(unknownIncrements(40, thenRead: 20), stepsMax: 10_000, deadline: nil)
        #expect(report.outcome == .linearizable)
    }

    @Test("More applied than there were increments: a violation, proved in a small budget")
    func manyUnknownIncrementsViolation() {
        let report = searchKey(unknownIncrements(40, thenRead: 41), stepsMax: 10_000, deadline: nil)
        #expect(report.outcome == .violation)
    }

    @Test("Twins are used in call order, but an earlier twin that is not callable yet never blocks")
    func laterTwinCalledBeforeAReturn() {
        // Twin a (called at 20) is later than twin b (called at 0); the read at [10, 11] can only
        // be explained by b. The read at [30, 31] needs both.
        let history = [
            op(1, .incr(1), .unknown, 0, nil),
            op(2, .get, .value("1"), 10, 11),
            op(3, .incr(1), .unknown, 20, nil),
            op(2, .get, .value("2"), 30, 31),
        ]
        #expect(checkLinearizable(history) == .linearizable)
        var tooEarly = history
        tooEarly[1].output = .value("2")  // both increments before 11: the second was called at 20
        #expect(isViolation(checkLinearizable(tooEarly)))
    }

    @Test("Twin-heavy random histories agree with the exhaustive search", arguments: 0..<4 as Range<UInt64>)
    func agreesWithBruteForce(batch: UInt64) {
        var rng = SplitMix64(seed: 7_000 + batch)
        var verdicts = (linearizable: 0, violation: 0)
        for _ in 0..<250 {
            let history = randomTwinHistory(&rng)
            let expected = bruteForceLinearizable(history)
            let actual = checkLinearizable(history)
            #expect(actual == .linearizable ? expected : !expected, "\(history)")
            if expected { verdicts.linearizable += 1 } else { verdicts.violation += 1 }
        }
        #expect(verdicts.linearizable > 20 && verdicts.violation > 20, "\(verdicts)")
    }
}

/// Small histories where many operations are unknown and drawn from a tiny set of inputs, so that
/// twins (unknown, same effect) are common: incr by 1 or 2, put "a"/"b", cas a→b.
private func randomTwinHistory(_ rng: inout SplitMix64) -> [HistoryOperation] {
    let count = Int.random(in: 2...7, using: &rng)
    let counter = Bool.random(using: &rng)
    return (0..<count).map { client in
        let call = UInt64.random(in: 0...8, using: &rng)
        let ret = call + UInt64.random(in: 0...3, using: &rng)
        let input: OperationInput
        let output: OperationOutput
        switch (counter, Int.random(in: 0..<3, using: &rng)) {
        case (true, 0):
            input = .get
            output = .value(String(Int.random(in: 0...4, using: &rng)))
        case (true, _):
            input = .incr(Int64.random(in: 1...2, using: &rng))
            output = .number(Int64.random(in: 1...4, using: &rng))
        case (false, 0):
            input = .get
            output = .value(["a", "b", nil].randomElement(using: &rng)!)
        case (false, 1):
            input = .put(Bool.random(using: &rng) ? "a" : "b")
            output = .ok
        default:
            input = .cas(expected: "a", new: "b")
            output = .swapped(Bool.random(using: &rng))
        }
        let unknown = Int.random(in: 0..<2, using: &rng) == 0 && input != .get
        return HistoryOperation(
            client: client, key: "k", input: input, output: unknown ? .unknown : output,
            call: call, ret: unknown ? nil : ret)
    }
}
