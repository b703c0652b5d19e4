import ArgumentParser
import TernBench

/// The load knobs `tern bench resp` and `tern bench etcd` share, so runs against each compare.
struct LoadArguments: ParsableArguments {
    @Option(help: "TCP connections.")
    var connections = 64

    @Option(help: "Requests per batch on each connection (the next batch leaves when all are answered).")
    var pipeline = 1

    @Option(help: "Key space: keys are key:<12 digits below this>.")
    var keys = 100_000

    @Option(help: "Bytes per written value.")
    var valueBytes = 100

    @Option(help: "Share of reads in --command mixed (0 to 1).")
    var readRatio = 0.5

    @Option(help: "Measured seconds.")
    var duration = 10.0

    @Option(help: "Seconds of load before measuring.")
    var warmup = 1.0

    @Option(help: "set, get, incr, mixed, or seqnext (SEQ.NEXT <random uid below --uids>; Tern only).")
    var command = "set"

    @Option(help: "With --command seqnext: uids are random below this.")
    var uids: UInt64 = 1_000_000

    @Flag(help: "Every request uses one key.")
    var hotKey = false

    @Option(help: "Event-loop threads of the generator.")
    var threads = 2

    @Option(help: "Seed of the key choice.")
    var seed: UInt64 = 1

    @Flag(help: "Write every key once before the warm-up, so that reads find values.")
    var prefill = false

    @Option(help: "Also report the CPU used by these processes during the window (repeatable).")
    var serverPid: [Int32] = []

    @Flag(help: "Print one JSON object instead of the text report.")
    var json = false

    func options() throws -> LoadOptions {
        guard let command = LoadCommand(rawValue: command) else {
            throw ValidationError("--command must be one of set, get, incr, mixed, seqnext")
        }
        var options = LoadOptions()
        options.connections = connections
        options.pipeline = pipeline
        options.keys = keys
        options.valueBytes = valueBytes
        options.readRatio = readRatio
        options.durationSeconds = duration
        options.warmupSeconds = warmup
        options.command = command
        options.hotKey = hotKey
        options.threads = threads
        options.seed = seed
        options.prefill = prefill
        options.uids = uids
        if let problem = options.validationError() { throw ValidationError(problem) }
        return options
    }

    func describe(_ target: String, _ options: LoadOptions) -> String {
        "\(target): \(options.command.rawValue)\(options.hotKey ? " (one hot key)" : ""), "
            + "\(options.connections) connections x pipeline \(options.pipeline), "
            + (options.command == .seqnext ? "\(options.uids) uids, " : "\(options.keys) keys, ")
            + "\(options.valueBytes)-byte values, \(options.durationSeconds) s after \(options.warmupSeconds) s warm-up"
    }
}

/// `tern bench resp`: load on a RESP server (Tern or Redis) and its latency distribution.
struct BenchRESPCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "resp",
        abstract: "Load a RESP server (Tern, Redis): ops/s, p50/p99/p99.9 latency, errors, client CPU."
    )

    @Option(help: "Server address.")
    var host = "127.0.0.1"

    @Option(help: "Server port.")
    var port = 7379

    @Option(
        help:
            "More ports of the same system, e.g. the other nodes of a cluster (repeatable): connections are spread round robin over --port and these."
    )
    var alsoPort: [Int] = []

    @OptionGroup var load: LoadArguments

    func run() async throws {
        let options = try load.options()
        let target = "resp \(host):\(([port] + alsoPort).map(String.init).joined(separator: ","))"
        let progress = Progress(
            "tern bench resp", seconds: options.warmupSeconds + options.durationSeconds)
        progress.every()
        let result = try await RESPLoad.run(
            host: host, port: port, options: options, serverPIDs: load.serverPid, alsoPorts: alsoPort)
        progress.finish()
        print(
            load.json
                ? result.json(target: target, options: options)
                : result.report(title: load.describe(target, options)))
        if result.operations == 0 { throw ExitCode(1) }
    }
}

/// `tern bench etcd`: the same load on etcd v3 through its JSON gateway.
struct BenchEtcdCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "etcd",
        abstract: "Load etcd v3 (JSON gateway, HTTP/1.1 keep-alive) with the same knobs as `bench resp`.",
        discussion: "--command get is a linearizable range unless --serializable; etcd has no INCR: use "
            + "--command set --hot-key for a hot key."
    )

    @Option(help: "Comma-separated client URLs, e.g. http://127.0.0.1:2379,http://127.0.0.1:22379.")
    var endpoints = "http://127.0.0.1:2379"

    @Flag(help: "Serializable ranges (served by the member locally) instead of linearizable ones.")
    var serializable = false

    @OptionGroup var load: LoadArguments

    func run() async throws {
        let options = try load.options()
        var parsed: [EtcdLoad.Endpoint] = []
        for text in endpoints.split(separator: ",") {
            guard let endpoint = EtcdLoad.Endpoint(String(text)) else {
                throw ValidationError("cannot read endpoint '\(text)': expected http://HOST:PORT")
            }
            parsed.append(endpoint)
        }
        let target = "etcd \(endpoints)\(serializable ? " (serializable)" : "")"
        let progress = Progress(
            "tern bench etcd", seconds: options.warmupSeconds + options.durationSeconds)
        progress.every()
        let result = try await EtcdLoad.run(
            endpoints: parsed, options: options, serializable: serializable, serverPIDs: load.serverPid)
        progress.finish()
        print(
            load.json
                ? result.json(target: target, options: options)
                : result.report(title: load.describe(target, options)))
        if result.operations == 0 { throw ExitCode(1) }
    }
}
