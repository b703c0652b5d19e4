import Testing

@testable import TernCheck

/// Large histories from a sequential model: accepted as generated, rejected once one read is made
/// stale. These are the tests that show the checker is fast enough for the simulator.
@Suite struct GeneratedHistoryTests {
    @Test(arguments: [1, 2, 3] as [UInt64])
    func largeLinearizableHistoryIsAccepted(seed: UInt64) {
        var generator = HistoryGenerator(seed: seed, ops: 10_000, keys: 100, clients: 8)
        let history = generator.generate()
        #expect(history.count == 10_000)
        #expect(Set(history.map(\.key)).count == 100)
        let clock = ContinuousClock()
        var result: CheckResult = .linearizable
        let elapsed = clock.measure { result = checkLinearizable(history) }
        #expect(result == .linearizable, "seed \(seed)")
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        print(
            "seed \(seed): checked \(history.count) ops in \(elapsed) (\(Int(Double(history.count) / seconds)) ops/s)"
        )
    }

    @Test(arguments: [4, 5] as [UInt64])
    func hotKeysWithManyClientsAreAccepted(seed: UInt64) {
        // Few keys, many clients: far more overlap per key than the 100-key history.
        var generator = HistoryGenerator(seed: seed, ops: 3_000, keys: 3, clients: 10)
        #expect(checkLinearizable(generator.generate()) == .linearizable, "seed \(seed)")
    }

    @Test(arguments: [1, 2, 3] as [UInt64])
    func largeHistoryWithOneStaleReadIsRejected(seed: UInt64) throws {
        var generator = HistoryGenerator(seed: seed, ops: 10_000, keys: 100, clients: 8)
        var history = generator.generate()
        let index = try #require(injectStaleRead(&history))
        guard case .violation(let v) = checkLinearizable(history) else {
            Issue.record("seed \(seed): stale read at \(history[index]) accepted")
            return
        }
        #expect(v.key == history[index].key)
        #expect(v.history.contains(history[index]))
        #expect(v.history.count < v.originalCount)
        #expect(isViolation(checkLinearizable(v.history), key: v.key))
    }

    @Test func mutatedIncrementResultIsRejected() throws {
        var generator = HistoryGenerator(seed: 9, ops: 2_000, keys: 4, clients: 6)
        var history = generator.generate()
        // The tenth known incr answers far more than it could have. An early one: proving a
        // violation explores every way to place the unknown incrs before it (exponential in
        // their number; see docs/CHECKER.md), while a linearizable history is found directly.
        let incrs = history.indices.filter { if case .number = history[$0].output { true } else { false } }
        let index = incrs[9]
        guard case .number(let n) = history[index].output else { return }
        history[index].output = .number(n + 1_000_000)
        #expect(isViolation(checkLinearizable(history), key: history[index].key))
    }
}
