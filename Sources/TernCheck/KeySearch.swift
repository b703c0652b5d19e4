/// The Wing–Gong–Lowe search over one key's sub-history, with Lowe's memoisation.
///
/// The history becomes a doubly linked list of call and return events in real-time order. The
/// search walks the list: at a call it tries to linearise that operation now (apply it to the
/// model; if the observed output matches, remove the call and its return from the list and start
/// again from the front); at a return it has met an operation that should already have been
/// linearised, so it backtracks. `(set of linearised ops, model state)` pairs already explored are
/// remembered, which turns the exponential search into one that is fast on realistic histories.
///
///     head -> call(a) -> call(b) -> ret(a) -> call(c) -> ret(b) -> ret(c) -> tail
///
/// Unknown operations get no return event: they never force a backtrack, so the search may
/// linearise them anywhere after their call or leave them out. The search succeeds when every
/// operation with a known outcome is linearised.

/// What one key's search concluded.
enum SearchOutcome: Sendable, Hashable {
    case linearizable
    case violation
    case budgetExhausted
}

/// A search's outcome and the steps it took (shrinking charges them to its own budget).
struct SearchReport: Sendable {
    var outcome: SearchOutcome
    var steps: Int
}

/// One operation compiled to interned value ids, so the model's state is a small integer.
struct CompiledOp: Sendable {
    enum Effect: Sendable, Hashable {
        /// A get that observed `expected`.
        case read(expected: Int32)
        /// A put (or delete, with the id of `nil`).
        case write(Int32)
        /// A cas; `swapped == nil` when the outcome is unknown.
        case cas(expected: Int32, new: Int32, swapped: Bool?)
        /// An incr; `result` (and its interned id) is `nil` when the outcome is unknown.
        case incr(delta: Int64, result: Int64?, resultID: Int32)
        /// An output that does not fit its input (e.g. a put that answered `.number`): no
        /// sequential execution produces it.
        case impossible
    }

    var effect: Effect
    /// Whether the outcome was observed; unknown operations may be left out of a linearization.
    var known: Bool
}

/// Interned register values: the model state is an index into `values`; `ints` caches each
/// value read as an incr operand (absent = 0, non-integer = nil).
struct ValueTable: Sendable {
    private(set) var values: [String?] = []
    private(set) var ints: [Int64?] = []
    private var ids: [String?: Int32] = [:]

    init() { _ = intern(nil) }

    /// The id of the absent value, which is also the initial state of every key.
    static let absent: Int32 = 0

    mutating func intern(_ value: String?) -> Int32 {
        if let id = ids[value] { return id }
        let id = Int32(values.count)
        values.append(value)
        ints.append(value.map { Int64($0) } ?? 0)
        ids[value] = id
        return id
    }
}

/// A memoised configuration: which operations are linearised, and the register's state.
struct Configuration: Hashable {
    var linearised: [UInt64]
    var state: Int32
}

/// Compiles `ops` (one key, no failed ops) and searches for a linearization.
///
/// - Parameters:
///   - ops: the key's operations; `.failed` ones must already be removed.
///   - stepsMax: events visited before giving up with `.budgetExhausted`.
///   - deadline: optional wall-clock bound.
func searchKey(_ ops: [HistoryOperation], stepsMax: Int, deadline: Deadline?) -> SearchReport {
    var table = ValueTable()
    // A get that may never have happened has no effect and need not be explained: drop it.
    let relevant = ops.filter { !($0.input == .get && !isKnown($0)) }
    let compiled = relevant.map { compile($0, &table) }
    var search = KeySearch(ops: relevant, compiled: compiled, table: table)
    return search.run(stepsMax: stepsMax, deadline: deadline)
}

/// Whether the operation must be linearised: its outcome was observed and it returned. Without
/// a return time (even with an output) it may have taken effect any time after its call, or never.
func isKnown(_ op: HistoryOperation) -> Bool {
    op.output != .unknown && op.ret != nil
}

/// Translates an operation into the model's terms; outputs that cannot match the input become
/// `.impossible` rather than a crash, because histories come from files and buggy recorders.
func compile(_ op: HistoryOperation, _ table: inout ValueTable) -> CompiledOp {
    let known = isKnown(op)
    let effect: CompiledOp.Effect
    switch (op.input, op.output) {
    case (.get, .value(let v)):
        effect = .read(expected: table.intern(v))
    case (.put(let v), .ok), (.put(let v), .unknown):
        effect = .write(table.intern(v))
    case (.delete, .ok), (.delete, .unknown):
        effect = .write(ValueTable.absent)
    case (.cas(let e, let n), .swapped(let s)):
        effect = .cas(expected: table.intern(e), new: table.intern(n), swapped: s)
    case (.cas(let e, let n), .unknown):
        effect = .cas(expected: table.intern(e), new: table.intern(n), swapped: nil)
    case (.incr(let d), .number(let r)):
        effect = .incr(delta: d, result: r, resultID: table.intern(String(r)))
    case (.incr(let d), .unknown):
        effect = .incr(delta: d, result: nil, resultID: -1)
    default:
        effect = .impossible
    }
    return CompiledOp(effect: effect, known: known)
}

/// The search state of one key. Entries are numbered 1...2n in real-time order; 0 is the head
/// sentinel and `tail` the tail sentinel, so linking never needs an optional.
struct KeySearch {
    let ops: [HistoryOperation]
    let compiled: [CompiledOp]
    var table: ValueTable

    /// For each entry: its operation, and whether it is the call (true) or the return.
    var entryOp: [Int32] = []
    var entryIsCall: [Bool] = []
    var next: [Int32] = []
    var prev: [Int32] = []
    /// The return entry of each operation, or -1 for unknown ones (they have none).
    var returnEntry: [Int32] = []
    /// For an unknown operation: the previous unknown operation (in call order) with the same
    /// effect, or -1. The search linearises it only after that one (see `run`).
    var twinBefore: [Int32] = []
    let tail: Int32

    init(ops: [HistoryOperation], compiled: [CompiledOp], table: ValueTable) {
        self.ops = ops
        self.compiled = compiled
        self.table = table
        // Ties: calls before returns, so that operations touching at one instant count as
        // concurrent; coarse clocks then cause no false alarms.
        var events: [(time: UInt64, isReturn: Bool, op: Int32)] = []
        for (i, op) in ops.enumerated() {
            events.append((op.call, false, Int32(i)))
            if compiled[i].known, let ret = op.ret {  // known implies ret != nil
                events.append((ret, true, Int32(i)))
            }
        }
        events.sort { a, b in
            if a.time != b.time { return a.time < b.time }
            if a.isReturn != b.isReturn { return !a.isReturn }
            return a.op < b.op
        }
        let count = Int32(events.count)
        tail = count + 1
        entryOp = [-1] + events.map(\.op) + [-1]
        entryIsCall = [false] + events.map { !$0.isReturn } + [false]
        next = (0...Int(count + 1)).map { Int32($0 + 1) }
        prev = (0...Int(count + 1)).map { Int32($0 - 1) }
        returnEntry = Array(repeating: -1, count: ops.count)
        twinBefore = Array(repeating: -1, count: ops.count)
        var lastTwin: [CompiledOp.Effect: Int32] = [:]
        for (index, event) in events.enumerated() {
            if event.isReturn {
                returnEntry[Int(event.op)] = Int32(index + 1)
            } else if !compiled[Int(event.op)].known {
                let effect = compiled[Int(event.op)].effect
                twinBefore[Int(event.op)] = lastTwin[effect] ?? -1
                lastTwin[effect] = event.op
            }
        }
    }

    /// Applies `op` to `state`: the new state, or nil if the observed output cannot happen here
    /// (or, for an unknown op, if taking effect here would change nothing: skipping is the same).
    mutating func apply(_ op: CompiledOp, to state: Int32) -> Int32? {
        switch op.effect {
        case .read(let expected):
            return state == expected ? state : nil
        case .write(let value):
            return value
        case .cas(let expected, let new, let swapped):
            if state == expected { return swapped == false ? nil : new }
            return swapped == false ? state : nil
        case .incr(let delta, let result, let resultID):
            guard let current = table.ints[Int(state)] else { return nil }
            let (sum, overflow) = current.addingReportingOverflow(delta)
            if overflow { return nil }
            if let result { return result == sum ? resultID : nil }
            return table.intern(String(sum))
        case .impossible:
            return nil
        }
    }

    mutating func unlink(_ e: Int32) {
        next[Int(prev[Int(e)])] = next[Int(e)]
        prev[Int(next[Int(e)])] = prev[Int(e)]
    }

    mutating func relink(_ e: Int32) {
        next[Int(prev[Int(e)])] = e
        prev[Int(next[Int(e)])] = e
    }

    /// The search. One pruning beyond Lowe's: unknown operations with the same effect ("twins",
    /// e.g. every unknown `incr(+2)`) are used in call order — an unknown twin is linearised
    /// only after every earlier-called one. Sound: in any linearization, give the j-th use of a
    /// twin class to the j-th earliest-called twin instead; the j ops really used there were all
    /// callable by then, so the j-th earliest is too, and the states are unchanged (same effect;
    /// unknown operations have no return that could constrain anyone). Without it, a counter
    /// with k unknown increments explores up to 2^k subsets that differ only in which twin was
    /// used; with it, only how many of each.
    mutating func run(stepsMax: Int, deadline: Deadline?) -> SearchReport {
        var knownRemaining = compiled.lazy.filter(\.known).count
        var linearised = [UInt64](repeating: 0, count: (ops.count + 63) / 64)
        var state = ValueTable.absent
        var seen = Set<Configuration>()
        // Each frame: the call entry linearised, and the state before it.
        var stack: [(entry: Int32, state: Int32)] = []
        var entry = next[0]
        var steps = 0
        while true {
            if knownRemaining == 0 { return SearchReport(outcome: .linearizable, steps: steps) }
            steps += 1
            if steps > stepsMax { return SearchReport(outcome: .budgetExhausted, steps: steps) }
            if steps & 4095 == 0, let deadline, deadline.hasPassed {
                return SearchReport(outcome: .budgetExhausted, steps: steps)
            }
            if entry != tail && entryIsCall[Int(entry)] {
                let op = Int(entryOp[Int(entry)])
                let twin = Int(twinBefore[op])
                if twin >= 0 && linearised[twin >> 6] & (UInt64(1) << UInt64(twin & 63)) == 0 {
                    // Symmetry: an earlier unknown twin is still unused; using it instead is the
                    // same step (see `run`'s comment), so this one waits for it.
                    entry = next[Int(entry)]
                    continue
                }
                if let newState = apply(compiled[op], to: state) {
                    var candidate = linearised
                    candidate[op >> 6] |= UInt64(1) << UInt64(op & 63)
                    if seen.insert(Configuration(linearised: candidate, state: newState)).inserted {
                        stack.append((entry, state))
                        state = newState
                        linearised = candidate
                        unlink(entry)
                        if returnEntry[op] >= 0 { unlink(returnEntry[op]) }
                        if compiled[op].known { knownRemaining -= 1 }
                        entry = next[0]
                        continue
                    }
                }
                entry = next[Int(entry)]
            } else {
                // A return (or the end) reached before its operation was linearised: undo the
                // most recent choice and try the next candidate after it.
                guard let frame = stack.popLast() else {
                    return SearchReport(outcome: .violation, steps: steps)
                }
                let op = Int(entryOp[Int(frame.entry)])
                state = frame.state
                linearised[op >> 6] &= ~(UInt64(1) << UInt64(op & 63))
                if returnEntry[op] >= 0 { relink(returnEntry[op]) }
                relink(frame.entry)
                if compiled[op].known { knownRemaining += 1 }
                entry = next[Int(frame.entry)]
            }
        }
    }
}
