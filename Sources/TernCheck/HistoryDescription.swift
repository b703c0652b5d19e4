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
