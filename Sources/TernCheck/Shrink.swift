/// Shrinking a violation to a small witness, delta-debugging style: drop chunks of operations
/// (halves, quarters, … single ones) while the remainder is still not linearizable.
///
/// Dropping just any operation is unsound: without the put that wrote "v", a perfectly legal
/// read of "v" becomes "a read of a value never written", and the shrinker would happily report
/// that one-op "witness" for a history whose real fault was, say, a stale read. So an operation is
/// only dropped when no linearization of the larger history could depend on it:
///
/// - operations with no effect on the register (get, cas that answered false, outputs that do not
///   fit their input) can always go: any linearization of the larger history minus them is one
///   of the smaller;
/// - an operation that may have written value x can go only if no remaining operation observes
///   x (a get returning x, a cas expecting x), no remaining cas answered false (it observes "not
///   e", which the removal could falsify) and, if x is absent or an integer, no incr remains (it
///   reads x as a number). Then every remaining operation that followed the write in a
///   linearization of the larger history observes nothing that changed, so removing the write
///   from that linearization leaves a linearization of the smaller history.
///
/// Before that, the history is cut in time (`cutAfterViolation`): everything called after some
/// instant T goes, provided no remaining operation with a known outcome returns after T. This
/// reaches what the rules above cannot — a counter's later increments, which all read integers.
///
/// Each step keeps "smaller not linearizable ⇒ larger not linearizable", so the final witness is a
/// genuine explanation of the original violation.

/// What an operation may have written, for the soundness guard above.
enum Written: Hashable {
    /// No effect on the register.
    case nothing
    /// Possibly wrote this value (`nil` = deleted).
    case value(String?)
    /// An incr of unknown outcome: possibly wrote some integer.
    case someInteger
}

func written(by op: HistoryOperation) -> Written {
    switch (op.input, op.output) {
    case (.put(let v), .ok), (.put(let v), .unknown): return .value(v)
    case (.delete, .ok), (.delete, .unknown): return .value(nil)
    case (.cas(_, let n), .swapped(true)), (.cas(_, let n), .unknown): return .value(n)
    case (.incr, .number(let r)): return .value(String(r))
    case (.incr, .unknown): return .someInteger
    default: return .nothing
    }
}

/// What the remaining operations observe, summarised so that each drop test is cheap.
struct Observations {
    var values: Set<String?> = []
    var observesInteger = false
    var hasCasFalse = false
    var hasIncr = false

    init(_ ops: some Sequence<HistoryOperation>) {
        for op in ops {
            switch (op.input, op.output) {
            case (.get, .value(let v)):
                note(v)
            case (.cas(let e, _), .swapped(true)), (.cas(let e, _), .unknown):
                note(e)
            case (.cas, .swapped(false)):
                hasCasFalse = true
            case (.incr, _):
                hasIncr = true
            default:
                break
            }
        }
    }

    private mutating func note(_ v: String?) {
        values.insert(v)
        if let v, Int64(v) != nil { observesInteger = true }
    }

    /// Whether removing an operation that wrote `w` cannot change what any remaining op observes.
    func allowsDropping(_ w: Written) -> Bool {
        switch w {
        case .nothing:
            return true
        case .value(let x):
            let isNumber = x.map { Int64($0) != nil } ?? true
            return !values.contains(x) && !hasCasFalse && !(hasIncr && isNumber)
        case .someInteger:
            return !observesInteger && !hasCasFalse && !hasIncr
        }
    }
}

/// Shrinks one key's non-linearizable sub-history; returns a (locally) minimal sub-history that is
/// still not linearizable, or a larger one if `stepsMax` runs out first.
///
/// - Parameters:
///   - ops: the key's operations (failed ones already removed), known not linearizable.
///   - stepsMax: search steps allowed over all the re-checks.
func shrinkViolation(_ ops: [HistoryOperation], stepsMax: Int) -> [HistoryOperation] {
    // Gets that may never have happened constrain nothing and are ignored by the search.
    var current = ops.filter { !($0.input == .get && !isKnown($0)) }
    var stepsLeft = stepsMax
    current = cutAfterViolation(current, stepsLeft: &stepsLeft)
    var chunk = max(1, current.count / 2)
    while true {
        var removedAny = false
        var start = 0
        while start < current.count {
            let end = min(start + chunk, current.count)
            let remainder = Array(current[..<start] + current[end...])
            let observations = Observations(remainder)
            let droppable = current[start..<end].allSatisfy { observations.allowsDropping(written(by: $0)) }
            if droppable {
                if stepsLeft <= 0 { return current }
                let report = searchKey(remainder, stepsMax: stepsLeft, deadline: nil)
                stepsLeft -= report.steps
                if report.outcome == .violation {
                    current = remainder
                    removedAny = true
                    continue  // the next chunk now starts at `start`
                }
            }
            start = end
        }
        if chunk == 1 && !removedAny { return current }
        chunk = max(1, chunk / 2)
    }
}

/// The shortest time prefix of `ops` that is still not linearizable: the operations called at or
/// before some instant T, where T is chosen so that every kept operation with a known outcome
/// has returned by T.
///
/// Sound: in a linearization of the whole history, every kept known operation (returned by T)
/// precedes every dropped one (called after T), so cutting that linearization after the last kept
/// known operation, and leaving out kept unknown ones placed later, linearises the prefix. So a
/// prefix that is not linearizable proves the whole is not — and, for the same reason, every
/// longer valid prefix is not linearizable either, which allows a binary search over the cuts.
///
/// - Parameters:
///   - ops: one key's operations, sorted by call time, known not linearizable.
///   - stepsLeft: the shrink budget; searches are charged to it.
func cutAfterViolation(_ ops: [HistoryOperation], stepsLeft: inout Int) -> [HistoryOperation] {
    // Valid cut instants: the return times T of known operations such that no known operation
    // called by T returns after T.
    var cuts: [UInt64] = []
    for t in Set(ops.compactMap { isKnown($0) ? $0.ret : nil }).sorted() {
        let spanning = ops.contains { isKnown($0) && $0.call <= t && $0.ret! > t }
        if !spanning { cuts.append(t) }
    }
    // The last valid cut keeps everything; search below it.
    var low = 0
    var high = cuts.count - 1
    var best = ops
    while low < high {
        let mid = (low + high) / 2
        let prefix = ops.filter { $0.call <= cuts[mid] }
        if stepsLeft <= 0 { break }
        let report = searchKey(prefix, stepsMax: stepsLeft, deadline: nil)
        stepsLeft -= report.steps
        if report.outcome == .violation {
            best = prefix
            high = mid
        } else {
            low = mid + 1
        }
    }
    return best
}
