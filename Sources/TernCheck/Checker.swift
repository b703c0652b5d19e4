/// Entry point of the linearizability checker: per-key partitioning, budgets, and the result type.
///
/// Linearizability is P-compositional (Herlihy & Wing): a history is linearizable iff each key's
/// sub-history is. So each key is searched on its own, which keeps every search small enough to
/// memoise.

/// Bounds on the checker's effort, so that a pathological history yields `.unknown` instead of a
/// hang. Step budgets make the result deterministic (same history, same answer, on any machine);
/// the optional wall-clock bound is for interactive use only.
public struct CheckOptions: Sendable, Hashable {
    /// Search steps (one per event visited, including backtracking) allowed for one key.
    public var stepsPerKeyMax: Int
    /// Search steps allowed for shrinking a violation, summed over every re-check.
    public var shrinkStepsMax: Int
    /// Optional wall-clock bound on the whole check, in seconds; `nil` = steps bound it alone.
    /// When it fires the answer depends on machine speed: keep it out of deterministic tests.
    public var timeoutSeconds: Double?

    /// - Parameters:
    ///   - stepsPerKeyMax: search steps per key before the key is reported `.unknown`.
    ///   - shrinkStepsMax: total steps spent on shrinking a violation; shrinking stops early
    ///     (with a smaller but maybe not minimal history) when they run out.
    ///   - timeoutSeconds: optional wall-clock bound on the whole check.
    public init(
        stepsPerKeyMax: Int = 2_000_000, shrinkStepsMax: Int = 2_000_000, timeoutSeconds: Double? = nil
    ) {
        self.stepsPerKeyMax = stepsPerKeyMax
        self.shrinkStepsMax = shrinkStepsMax
        self.timeoutSeconds = timeoutSeconds
    }
}

/// A key whose sub-history no sequential register execution explains.
public struct Violation: Sendable, Hashable {
    /// The key whose sub-history is not linearizable.
    public var key: String
    /// A small sub-history of that key that is still not linearizable, sorted by call time.
    /// Shrinking only removes operations whose removal cannot create a violation that the full
    /// history did not have (see docs/CHECKER.md), so this is a faithful witness.
    public var history: [HistoryOperation]
    /// How many operations the key had before shrinking (failed ones excluded).
    public var originalCount: Int

    /// - Parameters:
    ///   - key: the key whose sub-history is not linearizable.
    ///   - history: the (shrunk) failing sub-history.
    ///   - originalCount: the number of operations on the key before shrinking.
    public init(key: String, history: [HistoryOperation], originalCount: Int) {
        self.key = key
        self.history = history
        self.originalCount = originalCount
    }
}

/// The checker's verdict on a whole history.
public enum CheckResult: Sendable, Hashable {
    /// Every key's sub-history has a linearization.
    case linearizable
    /// At least one key has none; the first such key (in key order) is reported.
    case violation(Violation)
    /// No violation was found, but the search budget ran out on `key` (the first such key),
    /// so the checker cannot say the history is linearizable.
    case unknown(key: String)
}

/// Decides whether `history` is linearizable with respect to a single-register-per-key model
/// (get / put / delete / cas / incr, see `OperationInput`).
///
/// Deterministic: keys are checked in sorted order, and with `timeoutSeconds == nil` the result
/// depends only on the history and the step budgets. A violation on any key wins over an
/// `.unknown` on another, because a violation is a definite answer.
///
/// - Parameters:
///   - history: the operations, in any order. `.failed` operations are ignored; `.unknown` ones
///     may have taken effect at any time after their call, or never.
///   - options: effort bounds.
/// - Returns: `.linearizable`, a shrunk `.violation`, or `.unknown(key:)` if a budget ran out.
public func checkLinearizable(_ history: [HistoryOperation], options: CheckOptions = CheckOptions())
    -> CheckResult
{
    let deadline = options.timeoutSeconds.map { Deadline(seconds: $0) }
    var firstUnknown: String? = nil
    for (key, ops) in partitionByKey(history) {
        switch searchKey(ops, stepsMax: options.stepsPerKeyMax, deadline: deadline).outcome {
        case .linearizable:
            continue
        case .budgetExhausted:
            if firstUnknown == nil { firstUnknown = key }
        case .violation:
            let shrunk = shrinkViolation(ops, stepsMax: options.shrinkStepsMax)
            return .violation(Violation(key: key, history: shrunk, originalCount: ops.count))
        }
    }
    if let firstUnknown { return .unknown(key: firstUnknown) }
    return .linearizable
}

/// Convenience for a single step budget: `budget` steps per key, and as many again for shrinking.
///
/// - Parameters:
///   - history: the operations, in any order.
///   - budget: search steps per key (and total shrink steps).
public func checkLinearizable(_ history: [HistoryOperation], budget: Int) -> CheckResult {
    checkLinearizable(history, options: CheckOptions(stepsPerKeyMax: budget, shrinkStepsMax: budget))
}

/// Operations grouped by key, keys sorted, failed operations dropped (they certainly did not take
/// effect and observed nothing), each group sorted by call time for stable output.
func partitionByKey(_ history: [HistoryOperation]) -> [(key: String, ops: [HistoryOperation])] {
    var byKey: [String: [HistoryOperation]] = [:]
    for op in history where op.output != .failed {
        byKey[op.key, default: []].append(op)
    }
    return byKey.keys.sorted().map { key in
        (key, byKey[key]!.sorted(by: historyOrder))
    }
}

/// Call time, then return time (unknown last), then client: a total order for stable output.
func historyOrder(_ a: HistoryOperation, _ b: HistoryOperation) -> Bool {
    if a.call != b.call { return a.call < b.call }
    let ar = a.ret ?? .max
    let br = b.ret ?? .max
    if ar != br { return ar < br }
    return a.client < b.client
}

/// A wall-clock bound; only consulted every few thousand steps so that it costs nothing.
struct Deadline: Sendable {
    let end: ContinuousClock.Instant

    init(seconds: Double) {
        // Clamped so that an absurd bound cannot trap converting to Int64 (about 31 years).
        let milliseconds = Int64(max(0, min(seconds, 1e9)) * 1000)
        end = ContinuousClock.now.advanced(by: .milliseconds(milliseconds))
    }

    var hasPassed: Bool { ContinuousClock.now >= end }
}
