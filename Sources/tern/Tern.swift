import ArgumentParser

/// The `tern` command line: wiring only; every subcommand calls into a library module.
@main
struct Tern: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tern",
        abstract: "Tern: a strongly consistent key-value store replicated across three campuses.",
        subcommands: ternSubcommands
    )
}

/// Every subcommand, in the order `tern --help` lists them.
let ternSubcommands: [any ParsableCommand.Type] = [
    SimCommand.self, CheckCommand.self, RingCommand.self, BenchCommand.self, ServerCommand.self,
    DevCommand.self,
    // Sync inboxes demo (docs/SYNC.md).
    DemoCommand.self,
    // Anti-entropy (docs/REPAIR.md).
    RepairCommand.self,
    // The operator's view of a cluster (docs/OPERATIONS.md).
    StatusCommand.self,
]
