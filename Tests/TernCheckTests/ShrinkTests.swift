import Testing

@testable import TernCheck

/// Shrinking must make witnesses small and keep them faithful to the original fault.
@Suite struct ShrinkTests {
    @Test func staleReadShrinksToItsThreeOperations() {
        // A long sequential history with one stale read in the middle.
        var history: [HistoryOperation] = []
        var t: UInt64 = 0
        for i in 0..<40 {
            history.append(op(1, .put("v\(i)"), .ok, t, t + 1))
            history.append(op(2, .get, .value("v\(i)"), t + 2, t + 3))
            t += 4
        }
        history[41].output = .value("v19")  // the get after put("v20") sees v19
        guard case .violation(let v) = checkLinearizable(history) else {
            Issue.record("stale read not detected")
            return
        }
        #expect(v.originalCount == 80)
        // Faithful: the witness keeps the write of the stale value, so it reads as a stale read
        // rather than as "a read of a value never written".
        #expect(v.history == [history[38], history[40], history[41]])
    }

    @Test func shrunkHistoryIsSmallerAndStillRejected() {
        var generator = HistoryGenerator(seed: 11, ops: 600, keys: 2, clients: 8)
        var history = generator.generate()
        #expect(injectStaleRead(&history) != nil)
        guard case .violation(let v) = checkLinearizable(history) else {
            Issue.record("mutated history accepted")
            return
        }
        #expect(v.history.count < v.originalCount)
        #expect(v.history.count <= 10)
        #expect(isViolation(checkLinearizable(v.history), key: v.key))
    }

    @Test("A stale counter read shrinks to the operations before it (later increments go)")
    func staleCounterReadDropsWhatFollows() {
        // Sequential increments by one; the get after the 10th reads "9". No rule may drop an
        // increment while others remain (each reads an integer), so only the cut in time removes
        // the 20 increments after the read.
        var history: [HistoryOperation] = []
        var t: UInt64 = 0
        for i in 1...30 {
            history.append(op(1, .incr(1), .number(Int64(i)), t, t + 1))
            t += 2
            if i == 10 {
                history.append(op(2, .get, .value("9"), t, t + 1))
                t += 2
            }
        }
        guard case .violation(let v) = checkLinearizable(history) else {
            Issue.record("stale counter read not detected")
            return
        }
        #expect(v.originalCount == 31)
        #expect(v.history == Array(history[0...10]))
        #expect(isViolation(checkLinearizable(v.history)))
    }

    @Test("The cut never splits an operation that returns after it")
    func cutKeepsOverlappingKnownOperations() {
        // The fault is the last read (of a value never written). The long read [0, 21] sees "x",
        // written by a put of unknown outcome called at 5: cutting at 2 would keep the read but
        // drop the put, and "prove" a violation that is not the history's. The read spans every
        // instant before 21, so the only valid cut keeps everything.
        let history = [
            op(1, .get, .value("x"), 0, 21),
            op(2, .put("z"), .ok, 1, 2),
            op(3, .put("x"), .unknown, 5, nil),
            op(2, .get, .value("q"), 20, 21),
        ]
        var steps = 1_000_000
        #expect(cutAfterViolation(history, stepsLeft: &steps) == history)
    }

    @Test func lostIncrementKeepsBothIncrements() {
        let history = [
            op(3, .get, .value(nil), 0, 1),
            op(1, .incr(1), .number(1), 2, 3),
            op(3, .get, .value("1"), 4, 5),
            op(2, .incr(1), .number(1), 6, 7),
            op(3, .get, .value("1"), 8, 9),
        ]
        guard case .violation(let v) = checkLinearizable(history) else {
            Issue.record("lost increment not detected")
            return
        }
        #expect(v.history == [history[1], history[3]])
    }

    @Test func exhaustedShrinkBudgetStillReturnsAViolation() {
        var history: [HistoryOperation] = []
        for i in 0..<50 {
            history.append(op(1, .put("v\(i)"), .ok, UInt64(2 * i), UInt64(2 * i + 1)))
        }
        history.append(op(2, .get, .value("v0"), 200, 201))
        let result = checkLinearizable(history, options: CheckOptions(shrinkStepsMax: 1))
        guard case .violation(let v) = result else {
            Issue.record("not a violation")
            return
        }
        #expect(v.history.count == 51)
    }
}

/// The readable forms that `tern check` and the simulator print.
@Suite struct DescriptionTests {
    @Test func violationReadsTopToBottom() {
        var history: [HistoryOperation] = []
        var t: UInt64 = 0
        for i in 0..<40 {
            history.append(op(1, .put("v\(i)"), .ok, t, t + 1))
            history.append(op(2, .get, .value("v\(i)"), t + 2, t + 3))
            t += 4
        }
        history[41].output = .value("v19")
        guard case .violation(let v) = checkLinearizable(history) else {
            Issue.record("stale read not detected")
            return
        }
        #expect(
            v.description == """
                key "k": no linearization of these 3 operations (shrunk from 80):
                  [76, 77] client 1: put("v19") -> ok
                  [80, 81] client 1: put("v20") -> ok
                  [82, 83] client 2: get -> "v19"
                """)
    }

    @Test func operationForms() {
        #expect(
            "\(op(1, .cas(expected: nil, new: "a\"b"), .swapped(false), 1, 2))"
                == #"[1, 2] client 1: cas(nil -> "a\"b") -> not swapped"#)
        #expect("\(op(2, .incr(-3), .unknown, 5, nil))" == "[5, ...) client 2: incr(-3) -> unknown")
        #expect("\(op(3, .get, .value(nil), 1, 2))" == "[1, 2] client 3: get -> nil")
    }

    @Test func keyCountsPerKey() {
        let history = [
            op(1, .put("a"), .ok, 0, 1, key: "b"),
            op(1, .put("a"), .unknown, 2, nil, key: "a"),
            op(1, .put("a"), .failed, 3, 4, key: "a"),
            op(1, .get, .value("a"), 5, 6, key: "a"),
        ]
        let counts = KeyCounts.of(history)
        #expect(counts.map(\.key) == ["a", "b"])
        #expect(counts.map(\.total) == [3, 1])
        #expect(counts.map(\.unknown) == [1, 0])
        #expect(counts.map(\.failed) == [1, 0])
    }
}
