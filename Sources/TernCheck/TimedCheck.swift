/// Linearizability against any sequential specification whose answers may depend on time (values
/// that expire): the checker for the data workload (docs/CHECKER.md, "Timed models";
/// docs/DATA.md, "Simulator workload").
///
/// The register checker (`checkLinearizable`) interns register values and never needs a clock.
/// Here the model is the caller's (`TimedSpec`), and a configuration of the search also carries
/// a time: the earliest true time at which the last linearised operation can have taken effect.
/// Given an order, each operation takes effect no earlier than every call before it, so the
/// earliest times are the running maximum of the calls, and of the moments the model itself moved
/// time to (an expiry that can only happen from some moment on). An operation whose return comes
/// before the time reached cannot be placed there.
///
/// Checking the model's rules at the earliest times gives no wrong verdict when each rule that
/// reads the time only forbids something *from* a moment on ("a value is not seen at or after
/// its deadline": forbidden at the earliest time means forbidden at every later one, and allowed
/// at the earliest time means a placement at that time exists), and every move that needs a
/// *later* moment moves the time itself. `DataSpec` in TernSim follows both rules.

/// A sequential specification with time: `successors` lists the states an operation can leave,
/// given the state before it and the earliest time it can take effect.
public protocol TimedSpec {
    associatedtype State: Hashable
    associatedtype Op
    /// The key's state before any operation.
    var initial: State { get }
    /// Every way `op` can take effect on `state` no earlier than `time` (true milliseconds): the
    /// state after it and the earliest time it then stands at (at least `time`; a model that
    /// first lets a value expire moves time to when that can happen). Empty when the operation's
    /// observed answer cannot happen here. `known` is false for an operation whose outcome was not
    /// observed (its answer must not be compared).
    func successors(of state: State, _ op: Op, at time: Int64, known: Bool, returnTime: Int64) -> [(
        State, Int64
    )]
}

/// One operation of a timed history.
public struct TimedOperation<Op> {
    public var op: Op
    /// Order of events: call and return instants in one monotonic unit (ties: concurrent).
    public var call: UInt64
    /// nil: the outcome is unknown (it may have taken effect any time after its call, or never).
    public var ret: UInt64?
    /// True time (milliseconds) at the call and at the return (`Int64.max` when unknown).
    public var callTime: Int64
    public var returnTime: Int64
    public init(op: Op, call: UInt64, ret: UInt64?, callTime: Int64, returnTime: Int64) {
        self.op = op
        self.call = call
        self.ret = ret
        self.callTime = callTime
        self.returnTime = ret == nil ? .max : returnTime
    }
}

/// The verdict on one key's timed history.
public enum TimedVerdict: Sendable, Hashable {
    case linearizable
    /// No order and times explain it; `deepest` are the indices of the operations linearised on
    /// the deepest path the search reached, then one it could not place there (for the report).
    case violation(deepest: [Int])
    /// The step budget ran out (neither proved nor refuted).
    case unknown
}

/// Searches for a linearization of `ops` (one key) under `spec`: Wing–Gong–Lowe's search with
/// Lowe's memoisation of (linearised set, state, time), bounded by `stepsMax` configurations.
/// Operations with unknown outcomes may be linearised anywhere after their call, or never.
public func checkTimedLinearizable<S: TimedSpec>(_ ops: [TimedOperation<S.Op>], spec: S, stepsMax: Int)
    -> TimedVerdict
{
    var search = TimedSearch(ops: ops, spec: spec)
    return search.run(stepsMax: stepsMax)
}

struct TimedSearch<S: TimedSpec> {
    let ops: [TimedOperation<S.Op>]
    let spec: S
    var states: [S.State] = []
    var stateIDs: [S.State: Int32] = [:]
    /// Operations by call order.
    let byCall: [Int]
    /// Known operations by return order.
    let byReturn: [Int]
    struct Config: Hashable {
        var done: [UInt64]
        var state: Int32
        var time: Int64
    }
    var seen = Set<Config>()
    var steps = 0
    var deepest: [Int] = []

    init(ops: [TimedOperation<S.Op>], spec: S) {
        self.ops = ops
        self.spec = spec
        byCall = ops.indices.sorted { (ops[$0].call, $0) < (ops[$1].call, $1) }
        byReturn = ops.indices.filter { ops[$0].ret != nil }.sorted {
            (ops[$0].ret!, $0) < (ops[$1].ret!, $1)
        }
    }

    mutating func intern(_ s: S.State) -> Int32 {
        if let id = stateIDs[s] { return id }
        let id = Int32(states.count)
        states.append(s)
        stateIDs[s] = id
        return id
    }

    mutating func run(stepsMax: Int) -> TimedVerdict {
        var done = [UInt64](repeating: 0, count: (ops.count + 63) / 64)
        let start = intern(spec.initial)
        var path: [Int] = []
        switch dfs(&done, start, Int64.min, &path, stepsMax) {
        case true?: return .linearizable
        case false?: return .violation(deepest: deepest)
        case nil: return .unknown
        }
    }

    func isDone(_ done: [UInt64], _ i: Int) -> Bool { done[i >> 6] & (1 << UInt64(i & 63)) != 0 }

    /// true: linearizable from here; false: not; nil: out of budget.
    mutating func dfs(
        _ done: inout [UInt64], _ state: Int32, _ time: Int64, _ path: inout [Int], _ stepsMax: Int
    )
        -> Bool?
    {
        // The earliest return among known operations not yet linearised: only operations called
        // before it can come next (ties count as concurrent).
        guard let first = byReturn.first(where: { !isDone(done, $0) }) else { return true }
        let bound = ops[first].ret!
        if path.count >= deepest.count { deepest = path }
        for i in byCall {
            if ops[i].call > bound { break }
            if isDone(done, i) { continue }
            steps += 1
            if steps > stepsMax { return nil }
            let t = max(time, ops[i].callTime)
            for (next, t2) in spec.successors(
                of: states[Int(state)], ops[i].op, at: t, known: ops[i].ret != nil,
                returnTime: ops[i].returnTime)
            where t2 <= ops[i].returnTime {
                let id = intern(next)
                done[i >> 6] |= 1 << UInt64(i & 63)
                defer { done[i >> 6] &= ~(1 << UInt64(i & 63)) }
                guard seen.insert(Config(done: done, state: id, time: t2)).inserted else { continue }
                path.append(i)
                defer { path.removeLast() }
                switch dfs(&done, id, t2, &path, stepsMax) {
                case true?: return true
                case nil: return nil
                case false?: continue
                }
            }
        }
        if path.count >= deepest.count { deepest = path + [first] }
        return false
    }
}
