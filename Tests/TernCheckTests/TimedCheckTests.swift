import Testing

@testable import TernCheck

/// The register model written as a `TimedSpec` (time ignored): the timed search must agree with
/// the register checker on every history.
struct RegisterSpec: TimedSpec {
    var initial: String? { nil }
    func successors(of state: String?, _ op: HistoryOperation, at time: Int64, known: Bool, returnTime: Int64)
        -> [(String?, Int64)]
    {
        switch (op.input, known ? op.output : .unknown) {
        case (.get, .value(let v)): return v == state ? [(state, time)] : []
        case (.put(let v), _): return [(v, time)]
        case (.delete, _): return [(nil, time)]
        case (.cas(let e, let n), .swapped(let s)): return (state == e) == s ? [(s ? n : state, time)] : []
        case (.cas(let e, let n), _): return state == e ? [(n, time)] : [(state, time)]
        case (.incr(let d), let out):
            guard let cur = state.map({ Int64($0) }) ?? 0 else { return [] }
            let sum = cur + d
            if case .number(let r) = out, r != sum { return [] }
            return [(String(sum), time)]
        default: return []
        }
    }
}

/// A register whose value may carry a deadline, with the data workload's expiry rule (bound B):
/// the value may vanish from `deadline − 2B` on and is gone for a read that takes effect at or
/// after the deadline.
struct ExpiringSpec: TimedSpec {
    enum Op {
        case put(String, deadline: Int64)
        case get(String?)
    }
    struct Held: Hashable {
        var value: String
        var deadline: Int64
    }
    let bound: Int64
    var initial: Held? { nil }
    func successors(of state: Held?, _ op: Op, at time: Int64, known: Bool, returnTime: Int64)
        -> [(Held?, Int64)]
    {
        var starts: [(Held?, Int64)] = [(state, time)]
        if let s = state {
            if case .get = op, time >= s.deadline {
                starts = [(nil, time)]
            } else {
                starts.append((nil, max(time, s.deadline - 2 * bound)))
            }
        }
        var out: [(Held?, Int64)] = []
        for (s, t) in starts {
            switch op {
            case .put(let v, let d): out.append((Held(value: v, deadline: d), t))
            case .get(let v): if s?.value == v { out.append((s, t)) }
            }
        }
        return out
    }
}

@Suite struct TimedCheckTests {
    func timed(_ ops: [HistoryOperation]) -> [TimedOperation<HistoryOperation>] {
        ops.filter { $0.output != .failed && !($0.input == .get && !isKnown($0)) }.map {
            let ret = isKnown($0) ? $0.ret : nil
            return TimedOperation(op: $0, call: $0.call, ret: ret, callTime: 0, returnTime: 0)
        }
    }

    @Test("The timed search agrees with the register checker on generated histories, clean and stale")
    func agreesWithRegisterChecker() {
        for seed in 1...12 as ClosedRange<UInt64> {
            var generator = HistoryGenerator(seed: seed, ops: 240, keys: 4, clients: 5)
            var history = generator.generate()
            if seed % 2 == 0 { _ = injectStaleRead(&history) }
            for (key, ops) in partitionByKey(history) {
                let expected = searchKey(ops, stepsMax: 2_000_000, deadline: nil).outcome
                let got = checkTimedLinearizable(timed(ops), spec: RegisterSpec(), stepsMax: 2_000_000)
                switch (expected, got) {
                case (.linearizable, .linearizable), (.violation, .violation): break
                default: Issue.record("seed \(seed) key \(key): register checker \(expected), timed \(got)")
                }
            }
        }
    }

    func put(_ v: String, _ d: Int64, _ call: Int64, _ ret: Int64) -> TimedOperation<ExpiringSpec.Op> {
        TimedOperation(
            op: .put(v, deadline: d), call: UInt64(call), ret: UInt64(ret), callTime: call, returnTime: ret)
    }
    func get(_ v: String?, _ call: Int64, _ ret: Int64) -> TimedOperation<ExpiringSpec.Op> {
        TimedOperation(op: .get(v), call: UInt64(call), ret: UInt64(ret), callTime: call, returnTime: ret)
    }

    @Test("Expiry: a read after the deadline never sees the value; a key may vanish up to 2×bound early")
    func expiryRule() {
        let spec = ExpiringSpec(bound: 50)
        func verdict(_ ops: [TimedOperation<ExpiringSpec.Op>]) -> TimedVerdict {
            checkTimedLinearizable(ops, spec: spec, stepsMax: 100_000)
        }
        // Deadline 1000: seen before it, gone after it.
        #expect(verdict([put("a", 1000, 0, 10), get("a", 990, 995), get(nil, 1001, 1002)]) == .linearizable)
        // Seen by a read that began at the deadline: wrong.
        guard case .violation = verdict([put("a", 1000, 0, 10), get("a", 1000, 1005)]) else {
            Issue.record("a read at the deadline returned the value")
            return
        }
        // A read that overlaps the deadline may see it (it may have taken effect before).
        #expect(verdict([put("a", 1000, 0, 10), get("a", 995, 1005)]) == .linearizable)
        // Vanished 2×bound early: allowed; earlier: wrong.
        #expect(verdict([put("a", 1000, 0, 10), get(nil, 900, 905)]) == .linearizable)
        guard case .violation = verdict([put("a", 1000, 0, 10), get(nil, 898, 899)]) else {
            Issue.record("a key vanished more than 2×bound before its deadline")
            return
        }
        // Once gone it stays gone: absent, then present again without a write, is wrong.
        guard case .violation = verdict([put("a", 1000, 0, 10), get(nil, 950, 955), get("a", 960, 965)])
        else {
            Issue.record("an expired value came back")
            return
        }
        // An expiry moves time: a value seen absent early (vanished at ≥ 900) cannot precede an
        // operation that must take effect before 900.
        guard
            case .violation = verdict([
                put("a", 1000, 0, 10), put("b", 2000, 500, 899), get(nil, 20, 950), get("b", 951, 960),
            ])
        else {
            Issue.record("absent at 900 was placed before a write that finished at 899")
            return
        }
    }
}
