/// Human-readable forms of history operations, as `tern check` prints a violation's witness.

extension OperationInput: CustomStringConvertible {
    /// For example `put("v")`, `cas(nil -> "v")`, `incr(+5)`.
    public var description: String {
        switch self {
        case .get: "get"
        case .put(let v): "put(\(quoted(v)))"
        case .delete: "delete"
        case .cas(let e, let n): "cas(\(quoted(e)) -> \(quoted(n)))"
        case .incr(let d): d < 0 ? "incr(\(d))" : "incr(+\(d))"
        }
    }
}

extension OperationOutput: CustomStringConvertible {
    /// For example `"v"`, `nil`, `ok`, `swapped`, `not swapped`, `7`, `failed`, `unknown`.
    public var description: String {
        switch self {
        case .value(let v): quoted(v)
        case .ok: "ok"
        case .swapped(let s): s ? "swapped" : "not swapped"
        case .number(let n): "\(n)"
        case .failed: "failed"
        case .unknown: "unknown"
        }
    }
}

extension HistoryOperation: CustomStringConvertible {
    /// For example `[10, 12] client 1: put("v") -> ok`; an open interval `[10, ...)` when the
    /// return time is unknown. Time first, so that a sorted witness reads top to bottom.
    public var description: String {
        let interval = ret.map { "[\(call), \($0)]" } ?? "[\(call), ...)"
        return "\(interval) client \(client): \(input) -> \(output)"
    }
}

private func quoted(_ s: String?) -> String {
    guard let s else { return "nil" }
    return "\"" + s.replacingAll("\\", with: "\\\\").replacingAll("\"", with: "\\\"") + "\""
}

extension String {
    /// `replacingOccurrences` without Foundation, so that the vocabulary stays Foundation-free.
    fileprivate func replacingAll(_ target: Character, with replacement: String) -> String {
        var out = ""
        for c in self {
            if c == target { out += replacement } else { out.append(c) }
        }
        return out
    }
}

extension Violation: CustomStringConvertible {
    /// The key and the witness, one operation per line, e.g.
    ///
    ///     key "k": no linearization of these 3 operations (shrunk from 80):
    ///       [76, 77] client 1: put("v19") -> ok
    ///       [80, 81] client 1: put("v20") -> ok
    ///       [82, 83] client 2: get -> "v19"
    public var description: String {
        var lines = [
            "key \(quoted(key)): no linearization of these \(history.count) operations"
                + " (shrunk from \(originalCount)):"
        ]
        lines += history.map { "  \($0)" }
        return lines.joined(separator: "\n")
    }
}

/// How many operations of each kind a key has: what `tern check` prints before its verdict, so
/// that an empty or lopsided history is noticed.
public struct KeyCounts: Sendable, Hashable {
    /// The key.
    public var key: String
    /// All operations on the key.
    public var total: Int = 0
    /// Operations whose outcome is unknown (or that never returned).
    public var unknown: Int = 0
    /// Operations that certainly failed (ignored by the checker).
    public var failed: Int = 0

    /// - Parameter key: the key; counts start at zero.
    public init(key: String) { self.key = key }

    /// Counts per key, keys in sorted order.
    ///
    /// - Parameter history: the operations, in any order.
    public static func of(_ history: [HistoryOperation]) -> [KeyCounts] {
        var byKey: [String: KeyCounts] = [:]
        for op in history {
            var counts = byKey[op.key] ?? KeyCounts(key: op.key)
            counts.total += 1
            if op.output == .failed {
                counts.failed += 1
            } else if op.output == .unknown || op.ret == nil {
                counts.unknown += 1
            }
            byKey[op.key] = counts
        }
        return byKey.keys.sorted().map { byKey[$0]! }
    }
}
