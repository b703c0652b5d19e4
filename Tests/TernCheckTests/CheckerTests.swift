import Testing

@testable import TernCheck

/// Hand-written histories whose verdict is known: each classic anomaly must be rejected, and each
/// tricky-but-legal pattern accepted.
@Suite struct KnownViolationTests {
    @Test func staleReadAfterAcknowledgedWrite() {
        let history = [
            op(1, .put("a"), .ok, 0, 1),
            op(1, .put("b"), .ok, 2, 3),
            op(2, .get, .value("a"), 4, 5),
        ]
        #expect(isViolation(checkLinearizable(history), key: "k"))
    }

    @Test func twoReadsSeeNewThenOld() {
        // The put of "b" is still in flight, so either value alone is fine; but once one read has
        // seen "b", a later read must not see "a" again.
        let history = [
            op(1, .put("a"), .ok, 0, 1),
            op(1, .put("b"), .ok, 2, 10),
            op(2, .get, .value("b"), 3, 4),
            op(3, .get, .value("a"), 5, 6),
        ]
        #expect(isViolation(checkLinearizable(history)))
    }

    @Test func lostIncrement() {
        let sequential = [
            op(1, .incr(1), .number(1), 0, 1),
            op(2, .incr(1), .number(1), 2, 3),
        ]
        #expect(isViolation(checkLinearizable(sequential)))
        // Even fully concurrent, two increments by one cannot both answer 1.
        let concurrent = [
            op(1, .incr(1), .number(1), 0, 5),
            op(2, .incr(1), .number(1), 1, 6),
            op(3, .get, .value("2"), 7, 8),
        ]
        #expect(isViolation(checkLinearizable(concurrent)))
    }

    @Test func casSucceedsTwiceFromSameExpected() {
        let history = [
            op(1, .put("a"), .ok, 0, 1),
            op(1, .cas(expected: "a", new: "b"), .swapped(true), 2, 5),
            op(2, .cas(expected: "a", new: "c"), .swapped(true), 3, 6),
        ]
        #expect(isViolation(checkLinearizable(history)))
    }

    @Test func readOfValueNeverWritten() {
        let history = [
            op(1, .put("a"), .ok, 0, 1),
            op(2, .get, .value("x"), 2, 3),
        ]
        #expect(isViolation(checkLinearizable(history)))
    }

    @Test func readOfDeletedKey() {
        let history = [
            op(1, .put("a"), .ok, 0, 1),
            op(1, .delete, .ok, 2, 3),
            op(2, .get, .value("a"), 4, 5),
        ]
        #expect(isViolation(checkLinearizable(history)))
    }

    @Test func unknownOperationCannotTakeEffectBeforeItsCall() {
        let history = [
            op(2, .get, .value("a"), 0, 1),
            op(1, .put("a"), .unknown, 2, nil),
        ]
        #expect(isViolation(checkLinearizable(history)))
    }

    @Test func incrementOfNonInteger() {
        let history = [
            op(1, .put("x"), .ok, 0, 1),
            op(2, .incr(1), .number(1), 2, 3),
        ]
        #expect(isViolation(checkLinearizable(history)))
    }

    @Test func outputThatDoesNotFitItsInput() {
        #expect(isViolation(checkLinearizable([op(1, .put("a"), .number(3), 0, 1)])))
    }

    @Test func violationOnOneKeyAmongManyNamesThatKey() {
        var history: [HistoryOperation] = []
        for k in 0..<20 {
            history.append(op(1, .put("v\(k)"), .ok, UInt64(4 * k), UInt64(4 * k + 1), key: "key\(k)"))
            history.append(op(2, .get, .value("v\(k)"), UInt64(4 * k + 2), UInt64(4 * k + 3), key: "key\(k)"))
        }
        history[27].output = .value("wrong")  // a get on key13
        #expect(isViolation(checkLinearizable(history), key: "key13"))
    }
}

@Suite struct KnownLinearizableTests {
    @Test func concurrentOverlappingOperations() {
        let history = [
            op(1, .put("a"), .ok, 0, 10),
            op(2, .get, .value(nil), 1, 2),
            op(3, .get, .value("a"), 3, 4),
            op(2, .put("b"), .ok, 5, 12),
            op(3, .get, .value("a"), 6, 7),
            op(4, .get, .value("b"), 8, 9),
            op(1, .get, .value("b"), 11, 13),
        ]
        #expect(checkLinearizable(history) == .linearizable)
    }

    @Test func concurrentIncrementsAndCas() {
        let history = [
            op(1, .incr(5), .number(8), 0, 10),
            op(2, .incr(3), .number(3), 1, 9),
            op(3, .cas(expected: "8", new: "x"), .swapped(true), 2, 11),
            op(4, .cas(expected: "8", new: "y"), .swapped(false), 3, 12),
            op(4, .get, .value("x"), 13, 14),
        ]
        #expect(checkLinearizable(history) == .linearizable)
    }

    @Test func unknownOperationThatTookEffect() {
        let history = [
            op(1, .put("a"), .unknown, 0, nil),
            op(2, .get, .value(nil), 1, 2),
            op(2, .get, .value("a"), 3, 4),
            op(3, .incr(2), .unknown, 5, nil),
            op(3, .cas(expected: "a", new: "b"), .unknown, 6, nil),
            op(2, .get, .value("b"), 100, 101),
        ]
        #expect(checkLinearizable(history) == .linearizable)
    }

    @Test func unknownOperationThatDidNotTakeEffect() {
        let history = [
            op(1, .put("a"), .ok, 0, 1),
            op(1, .put("b"), .unknown, 2, nil),
            op(2, .get, .value("a"), 5, 6),
            op(3, .incr(1), .unknown, 7, nil),
            op(2, .get, .value("a"), 8, 9),
        ]
        #expect(checkLinearizable(history) == .linearizable)
    }

    @Test func failedOperationsAreIgnored() {
        let history = [
            op(1, .put("a"), .failed, 0, 1),
            op(2, .get, .value(nil), 2, 3),
            op(1, .incr(1), .failed, 4, 5),
            op(2, .incr(2), .number(2), 6, 7),
        ]
        #expect(checkLinearizable(history) == .linearizable)
    }

    @Test func incrementTreatsAbsentAsZeroAndNegativeDeltas() {
        let history = [
            op(1, .incr(5), .number(5), 0, 1),
            op(1, .incr(-7), .number(-2), 2, 3),
            op(1, .delete, .ok, 4, 5),
            op(1, .incr(1), .number(1), 6, 7),
            op(2, .get, .value("1"), 8, 9),
        ]
        #expect(checkLinearizable(history) == .linearizable)
    }

    @Test func operationsTouchingAtOneInstantAreConcurrent() {
        // Coarse clocks: a return and a call with the same timestamp may be in either order.
        let history = [
            op(1, .put("a"), .ok, 0, 5),
            op(2, .get, .value(nil), 5, 6),
        ]
        #expect(checkLinearizable(history) == .linearizable)
    }

    @Test func emptyHistory() {
        #expect(checkLinearizable([]) == .linearizable)
    }
}

@Suite struct BudgetTests {
    @Test func exhaustedBudgetIsUnknownNotAVerdict() {
        var history: [HistoryOperation] = []
        for c in 0..<30 {
            history.append(op(c, .put("v\(c)"), .ok, 0, 100))
        }
        history.append(op(99, .get, .value("v29"), 101, 102))
        #expect(checkLinearizable(history, budget: 10) == .unknown(key: "k"))
        #expect(checkLinearizable(history) == .linearizable)
    }

    @Test func violationWinsOverUnknown() {
        var history: [HistoryOperation] = []
        for c in 0..<30 {
            history.append(op(c, .put("v\(c)"), .ok, 0, 100, key: "a"))
        }
        history.append(op(1, .get, .value("never"), 0, 1, key: "b"))
        #expect(isViolation(checkLinearizable(history, budget: 20), key: "b"))
    }

    @Test func resultIsDeterministic() {
        var generator = HistoryGenerator(seed: 7, ops: 2_000, keys: 3, clients: 10)
        var history = generator.generate()
        _ = injectStaleRead(&history)
        #expect(checkLinearizable(history) == checkLinearizable(history))
    }
}
