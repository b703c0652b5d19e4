import ArgumentParser
import Foundation
import TernCheck

/// `tern check FILE`: decides whether a recorded history is linearizable.
///
/// Exit status: 0 linearizable, 1 violation, 2 unknown (budget exhausted) or unusable input, so
/// that scripts can tell "the store is wrong" from "the check could not decide".
struct CheckCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check",
        abstract: "Check a JSON-lines history for linearizability (format: docs/CHECKER.md).",
        discussion: "Exits 0 if linearizable, 1 on a violation, 2 if undecided or the file is bad."
    )

    @Argument(help: "The history file: one JSON operation per line.")
    var file: String

    @Option(help: "Search steps allowed per key (and for shrinking a violation).")
    var budget: Int = CheckOptions().stepsPerKeyMax

    @Option(help: "Optional wall-clock bound on the whole check, in seconds.")
    var timeoutSeconds: Double?

    @Flag(help: "Print only the verdict, not the per-key counts.")
    var quiet = false

    func run() throws {
        let history: [HistoryOperation]
        do {
            history = try HistoryFile.read(file)
        } catch {
            printError("tern check: \(file): \(error)")
            throw ExitCode(2)
        }
        let counts = KeyCounts.of(history)
        print(
            "\(history.count) operations on \(counts.count) keys"
                + " (\(counts.map(\.unknown).reduce(0, +)) unknown,"
                + " \(counts.map(\.failed).reduce(0, +)) failed)")
        if !quiet {
            for c in counts {
                print("  \(c.key): \(c.total) ops, \(c.unknown) unknown, \(c.failed) failed")
            }
        }
        let options = CheckOptions(
            stepsPerKeyMax: budget, shrinkStepsMax: budget, timeoutSeconds: timeoutSeconds)
        switch checkLinearizable(history, options: options) {
        case .linearizable:
            print("linearizable")
        case .violation(let violation):
            print("NOT linearizable")
            print(violation)
            throw ExitCode(1)
        case .unknown(let key):
            print(
                "unknown: the search budget ran out on key \"\(key)\" (no violation found; try a larger --budget)"
            )
            throw ExitCode(2)
        }
    }
}

private func printError(_ message: String) {
    FileHandle.standardError.write(Data((message + "\n").utf8))
}
