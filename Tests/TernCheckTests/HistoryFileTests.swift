import Foundation
import Testing

@testable import TernCheck

/// The JSON-lines format: round trips, and errors that name the bad line.
@Suite struct HistoryFileTests {
    static let everyShape: [HistoryOperation] = [
        op(1, .put("v"), .ok, 10, 12),
        op(2, .get, .value(nil), 11, 13),
        op(2, .get, .value("quote\" back\\ nl\n tab\t ctl\u{1} é"), 14, 15, key: "k\"ey"),
        op(3, .cas(expected: nil, new: "v"), .swapped(true), 16, 18),
        op(3, .cas(expected: "a", new: "b"), .swapped(false), 19, 20),
        op(4, .incr(-5), .number(-9_223_372_036_854_775_807), 21, 22),
        op(4, .incr(Int64.max), .number(Int64.max), 23, 24),
        op(5, .delete, .ok, 25, 26),
        op(6, .put("x"), .unknown, 27, nil),
        op(6, .put("y"), .failed, 28, 29),
        op(7, .get, .unknown, 30, nil),
    ]

    @Test func roundTripsEveryShape() throws {
        let text = HistoryFile.encode(Self.everyShape)
        #expect(try HistoryFile.parse(text) == Self.everyShape)
    }

    @Test func encodingIsStable() {
        #expect(
            HistoryFile.encodeLine(op(1, .put("v"), .ok, 10, 12))
                == #"{"client":1,"key":"k","op":"put","value":"v","call":10,"ret":12,"out":"ok"}"#)
        #expect(
            HistoryFile.encodeLine(op(2, .cas(expected: nil, new: "v"), .swapped(true), 1, 2))
                == #"{"client":2,"key":"k","op":"cas","expected":null,"value":"v","call":1,"ret":2,"out":"swapped","result":true}"#
        )
    }

    @Test func readsWhatItWrites() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent(
            "tern-check-\(getpid()).jsonl"
        ).path
        defer { try? FileManager.default.removeItem(atPath: path) }
        try HistoryFile.write(Self.everyShape, to: path)
        #expect(try HistoryFile.read(path) == Self.everyShape)
    }

    @Test func acceptsOmittedRetBlankLinesAndExtraFields() throws {
        let text = """
            {"client":1,"key":"k","op":"put","value":"v","call":1,"out":"unknown","note":"timeout"}

            {"client":1,"key":"k","op":"incr","delta":5,"call":2,"ret":3,"out":"number","result":7}
            """
        let ops = try HistoryFile.parse(text)
        #expect(ops == [op(1, .put("v"), .unknown, 1, nil), op(1, .incr(5), .number(7), 2, 3)])
    }

    @Test func missingFileIsAnError() {
        #expect(throws: HistoryFileError.self) { try HistoryFile.read("/nonexistent/tern/history.jsonl") }
    }

    static let good = #"{"client":1,"key":"k","op":"get","call":1,"ret":2,"out":"value","result":"v"}"#

    @Test(arguments: [
        ("{not json", "invalid JSON"),
        ("[1,2]", "not a JSON object"),
        (#"{"key":"k","op":"get","call":1,"ret":2,"out":"value","result":null}"#, "missing \"client\""),
        (#"{"client":1,"key":"k","op":"frob","call":1,"ret":2,"out":"ok"}"#, "unknown \"op\""),
        (#"{"client":1,"key":"k","op":"get","call":1,"ret":2,"out":"maybe"}"#, "unknown \"out\""),
        (
            #"{"client":1,"key":"k","op":"put","value":"v","call":1,"ret":2,"out":"number","result":1}"#,
            "does not fit"
        ),
        (
            #"{"client":1,"key":"k","op":"get","call":5,"ret":2,"out":"value","result":null}"#,
            "before \"call\""
        ),
        (#"{"client":1,"key":"k","op":"get","call":1,"ret":2,"out":"value"}"#, "missing \"result\""),
        (#"{"client":1,"key":"k","op":"get","call":1,"out":"value","result":null}"#, "\"ret\" is missing"),
        (
            #"{"client":1,"key":"k","op":"cas","expected":null,"value":"v","call":1,"ret":2,"out":"swapped","result":1}"#,
            "true or false"
        ),
        (
            #"{"client":1,"key":"k","op":"incr","delta":true,"call":1,"ret":2,"out":"unknown"}"#,
            "\"delta\" must be an integer"
        ),
        (
            #"{"client":1,"key":"k","op":"incr","delta":1.5,"call":1,"ret":2,"out":"unknown"}"#,
            "\"delta\" must be an integer"
        ),
        (
            #"{"client":"1","key":"k","op":"get","call":1,"ret":2,"out":"unknown"}"#,
            "\"client\" must be an integer"
        ),
        (#"{"client":1,"key":7,"op":"get","call":1,"ret":2,"out":"unknown"}"#, "\"key\" must be a string"),
    ])
    func badLineIsNamed(line: String, expected: String) {
        do {
            _ = try HistoryFile.parse(lines: [Self.good, "", line, Self.good])
            Issue.record("accepted \(line)")
        } catch let error as HistoryFileError {
            #expect(error.line == 3)
            #expect(error.message.contains(expected), "\(error)")
            #expect(error.description.hasPrefix("line 3: "))
        } catch {
            Issue.record("unexpected \(error)")
        }
    }
}
