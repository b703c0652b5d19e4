import Foundation

/// The JSON-lines history format (docs/CHECKER.md): one operation per line, so that the simulator
/// and real-cluster tests can append as they go and a truncated file still parses up to its
/// last complete line.
///
///     {"client":1,"key":"k","op":"put","value":"v","call":10,"ret":12,"out":"ok"}
///     {"client":2,"key":"k","op":"get","call":11,"ret":13,"out":"value","result":"v"}
///
/// Unknown fields are ignored so that recorders may add notes; blank lines are skipped.
public enum HistoryFile {
    /// Reads and parses a history file.
    ///
    /// - Parameter path: the file to read.
    /// - Throws: `HistoryFileError` naming the file problem or the first bad line.
    public static func read(_ path: String) throws -> [HistoryOperation] {
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw HistoryFileError(line: nil, message: "cannot read \(path): \(error.localizedDescription)")
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw HistoryFileError(line: nil, message: "\(path) is not UTF-8")
        }
        return try parse(text)
    }

    /// Parses the text of a history file.
    ///
    /// - Parameter text: JSON lines, one operation each.
    /// - Throws: `HistoryFileError` with the 1-based number of the first bad line.
    public static func parse(_ text: String) throws -> [HistoryOperation] {
        try parse(lines: text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init))
    }

    /// Parses lines of a history file (line numbers in errors count from 1).
    ///
    /// - Parameter lines: the lines, without their newlines.
    /// - Throws: `HistoryFileError` with the 1-based number of the first bad line.
    public static func parse(lines: [String]) throws -> [HistoryOperation] {
        var ops: [HistoryOperation] = []
        for (index, line) in lines.enumerated() {
            if line.allSatisfy(\.isWhitespace) { continue }
            do {
                ops.append(try parseLine(line))
            } catch {
                let text = (error as? LineProblem)?.text ?? "\(error)"
                throw HistoryFileError(line: index + 1, message: text)
            }
        }
        return ops
    }

    /// Encodes operations as JSON lines (each line ends with a newline), fields in a fixed order
    /// so that the same history always produces the same bytes.
    ///
    /// - Parameter history: the operations, written in the order given.
    public static func encode(_ history: [HistoryOperation]) -> String {
        var out = ""
        for op in history {
            out += encodeLine(op)
            out += "\n"
        }
        return out
    }

    /// Writes `history` to `path` as JSON lines, replacing the file.
    ///
    /// - Parameters:
    ///   - history: the operations.
    ///   - path: the file to write.
    /// - Throws: `HistoryFileError` if the file cannot be written.
    public static func write(_ history: [HistoryOperation], to path: String) throws {
        do {
            try Data(encode(history).utf8).write(to: URL(fileURLWithPath: path), options: .atomic)
        } catch {
            throw HistoryFileError(line: nil, message: "cannot write \(path): \(error.localizedDescription)")
        }
    }

    /// One operation as a single JSON object (no newline).
    ///
    /// - Parameter op: the operation.
    public static func encodeLine(_ op: HistoryOperation) -> String {
        var fields = ["\"client\":\(op.client)", "\"key\":\(jsonString(op.key))"]
        switch op.input {
        case .get:
            fields.append("\"op\":\"get\"")
        case .put(let v):
            fields += ["\"op\":\"put\"", "\"value\":\(jsonString(v))"]
        case .delete:
            fields.append("\"op\":\"delete\"")
        case .cas(let e, let n):
            fields += ["\"op\":\"cas\"", "\"expected\":\(jsonOptional(e))", "\"value\":\(jsonString(n))"]
        case .incr(let d):
            fields += ["\"op\":\"incr\"", "\"delta\":\(d)"]
        }
        fields.append("\"call\":\(op.call)")
        fields.append("\"ret\":\(op.ret.map(String.init) ?? "null")")
        switch op.output {
        case .value(let v): fields += ["\"out\":\"value\"", "\"result\":\(jsonOptional(v))"]
        case .ok: fields.append("\"out\":\"ok\"")
        case .swapped(let s): fields += ["\"out\":\"swapped\"", "\"result\":\(s)"]
        case .number(let n): fields += ["\"out\":\"number\"", "\"result\":\(n)"]
        case .failed: fields.append("\"out\":\"failed\"")
        case .unknown: fields.append("\"out\":\"unknown\"")
        }
        return "{" + fields.joined(separator: ",") + "}"
    }
}

/// A history file that cannot be used, and where.
public struct HistoryFileError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The 1-based line at fault, or `nil` for a problem with the file as a whole.
    public var line: Int?
    /// What is wrong, for a human.
    public var message: String

    /// - Parameters:
    ///   - line: the 1-based line at fault, or nil.
    ///   - message: what is wrong.
    public init(line: Int?, message: String) {
        self.line = line
        self.message = message
    }

    /// "line N: message", or the message alone.
    public var description: String {
        line.map { "line \($0): \(message)" } ?? message
    }
}

/// A problem inside one line; `parse(lines:)` adds the line number.
private struct LineProblem: Error {
    var text: String
}

private func parseLine(_ line: String) throws -> HistoryOperation {
    let object: [String: Any]
    do {
        guard let parsed = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else {
            throw LineProblem(text: "not a JSON object")
        }
        object = parsed
    } catch let problem as LineProblem {
        throw problem
    } catch {
        throw LineProblem(text: "invalid JSON")
    }
    let fields = Fields(object: object)
    let client = try fields.integer("client")
    let key = try fields.string("key")
    let call = try fields.integer("call")
    let ret = try fields.optionalInteger("ret")
    guard client >= 0, client <= Int64(Int.max) else { throw LineProblem(text: "\"client\" out of range") }
    guard call >= 0 else { throw LineProblem(text: "\"call\" must not be negative") }
    if let ret, ret < call { throw LineProblem(text: "\"ret\" (\(ret)) is before \"call\" (\(call))") }

    let input: OperationInput
    let opName = try fields.string("op")
    switch opName {
    case "get": input = .get
    case "put": input = .put(try fields.string("value"))
    case "delete": input = .delete
    case "cas": input = .cas(expected: try fields.optionalString("expected"), new: try fields.string("value"))
    case "incr": input = .incr(try fields.integer("delta"))
    default: throw LineProblem(text: "unknown \"op\" \"\(opName)\" (get, put, delete, cas, incr)")
    }

    let output: OperationOutput
    let outName = try fields.string("out")
    switch outName {
    case "value": output = .value(try fields.optionalString("result"))
    case "ok": output = .ok
    case "swapped": output = .swapped(try fields.bool("result"))
    case "number": output = .number(try fields.integer("result"))
    case "failed": output = .failed
    case "unknown": output = .unknown
    default:
        throw LineProblem(
            text: "unknown \"out\" \"\(outName)\" (value, ok, swapped, number, failed, unknown)")
    }
    let fits: Bool
    switch (input, output) {
    case (_, .failed), (_, .unknown), (.get, .value), (.put, .ok), (.delete, .ok), (.cas, .swapped),
        (.incr, .number):
        fits = true
    default:
        fits = false
    }
    guard fits else { throw LineProblem(text: "\"out\" \"\(outName)\" does not fit \"op\" \"\(opName)\"") }
    if ret == nil && output != .unknown && output != .failed {
        throw LineProblem(
            text: "\"ret\" is missing but \"out\" is \"\(outName)\" (only unknown/failed may omit it)")
    }
    return HistoryOperation(
        client: Int(client), key: key, input: input, output: output, call: UInt64(call),
        ret: ret.map(UInt64.init))
}

/// Typed access to one line's fields. JSONSerialization gives `Any`, and on Linux a JSON `1`
/// and `true` can both arrive as NSNumber, so numbers and booleans are told apart explicitly.
private struct Fields {
    var object: [String: Any]

    func raw(_ name: String) throws -> Any {
        guard let value = object[name] else { throw LineProblem(text: "missing \"\(name)\"") }
        return value
    }

    func string(_ name: String) throws -> String {
        guard let s = try raw(name) as? String else {
            throw LineProblem(text: "\"\(name)\" must be a string")
        }
        return s
    }

    func optionalString(_ name: String) throws -> String? {
        let value = try raw(name)
        if value is NSNull { return nil }
        guard let s = value as? String else {
            throw LineProblem(text: "\"\(name)\" must be a string or null")
        }
        return s
    }

    func integer(_ name: String) throws -> Int64 {
        let value = try raw(name)
        guard let n = asInteger(value) else { throw LineProblem(text: "\"\(name)\" must be an integer") }
        return n
    }

    func optionalInteger(_ name: String) throws -> Int64? {
        guard let value = object[name], !(value is NSNull) else { return nil }
        guard let n = asInteger(value) else {
            throw LineProblem(text: "\"\(name)\" must be an integer or null")
        }
        return n
    }

    func bool(_ name: String) throws -> Bool {
        let value = try raw(name)
        if isBoolean(value), let b = value as? Bool { return b }
        throw LineProblem(text: "\"\(name)\" must be true or false")
    }

    private func isBoolean(_ value: Any) -> Bool {
        if value is Bool && !(value is Int) { return true }
        if let n = value as? NSNumber { return String(cString: n.objCType) == "c" }
        return false
    }

    private func asInteger(_ value: Any) -> Int64? {
        if value is String || value is NSNull || isBoolean(value) { return nil }
        if let n = value as? Int64 { return n }
        if let n = value as? Int { return Int64(n) }
        if let n = value as? NSNumber, let exact = Int64(exactly: n.doubleValue) { return exact }
        return nil
    }
}

private func jsonOptional(_ s: String?) -> String {
    s.map(jsonString) ?? "null"
}

/// A JSON string literal: quotes, backslashes and control characters escaped.
private func jsonString(_ s: String) -> String {
    var out = "\""
    for scalar in s.unicodeScalars {
        switch scalar {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        case _ where scalar.value < 0x20:
            let hex = String(scalar.value, radix: 16)
            out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
        default: out.unicodeScalars.append(scalar)
        }
    }
    return out + "\""
}
