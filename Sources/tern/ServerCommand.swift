import ArgumentParser
import Foundation
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import TernCore
import TernPlacement
import TernServer
import UnixSignals

/// `tern server`: one node of a cluster, until SIGTERM/SIGINT (then a graceful stop, exit 0).
struct ServerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "server",
        abstract: "Run one Tern node: Redis protocol for clients, Paxos with its peers (docs/SERVER.md).",
        discussion: """
            Reads the cluster map (--config) and the node settings (server.toml beside the map, or \
            --server-config), opens the data directory and serves until SIGTERM or SIGINT. SIGHUP \
            reloads the TLS certificates (docs/SECURITY.md).
            """
    )

    @Option(help: "The cluster map (TOML, as written by `tern ring plan` or `tern dev`).")
    var config: String

    @Option(help: "This node's id in the map.")
    var node: UInt32

    @Option(help: "The node's data directory (created if missing).")
    var data: String

    @Option(help: "Node settings; default: server.toml in the map's directory.")
    var serverConfig: String?

    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: String = "info"

    @Flag(help: "Allow FLUSHALL/FLUSHDB whatever server.toml says (tern dev passes it).")
    var allowFlushall = false

    @Flag(
        help: ArgumentHelp(
            "First start of a cluster just planned: an empty data directory is a new node's, which votes at once.",
            discussion:
                "Without it, a directory with no epoch record is treated as a wiped or replaced disk and the node "
                + "rebuilds learner-only from its peers first. Pass it only when bootstrapping (tern dev does, on the "
                + "run that planned the cluster); on a later start a wiped disk would vote with forgotten promises."
        ))
    var newCluster = false

    func run() async throws {
        guard let level = Logger.Level(rawValue: logLevel) else {
            throw ValidationError("unknown log level \(logLevel)")
        }
        LoggingSystem.bootstrap { label in
            var h = StreamLogHandler.standardError(label: label)
            h.logLevel = level
            return h
        }
        var logger = Logger(label: "tern.server")
        logger[metadataKey: "node"] = "n\(node)"
        let map: ClusterMap
        var settings: ServerConfig
        do {
            map = try ClusterMap(contentsOfFile: config)
            let path =
                serverConfig
                ?? URL(fileURLWithPath: config).deletingLastPathComponent()
                .appendingPathComponent("server.toml").path
            settings = try ServerConfig(contentsOfFile: path)
        } catch {
            stderrLine("tern server: \(error)")
            throw ExitCode(2)
        }
        if allowFlushall { settings.flushall = true }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: max(2, System.coreCount))
        let process: TernServerProcess
        do {
            process = try await TernServerProcess.start(
                map: map, id: NodeID(node), dataDirectory: data, config: settings, group: group,
                logger: logger, newCluster: newCluster)
        } catch {
            stderrLine("tern server: \(error)")
            try? await group.shutdownGracefully()
            throw ExitCode(1)
        }
        let services = ServiceGroup(
            services: [process], gracefulShutdownSignals: [.sigterm, .sigint], cancellationSignals: [],
            logger: logger)
        // SIGHUP: read the TLS certificate and key files again (docs/SECURITY.md); connections
        // opened afterwards use them. The handler is in place before the first one can arrive.
        let hangups = await UnixSignalsSequence(trapping: .sighup)
        let reloadLogger = logger
        let reloader = Task {
            for await _ in hangups {
                reloadLogger.notice("SIGHUP: reloading certificates")
                try? process.reloadCertificates()
            }
        }
        try await services.run()
        reloader.cancel()
        try? await group.shutdownGracefully()
    }
}

/// Writes one line to standard error.
func stderrLine(_ message: String) {
    FileHandle.standardError.write(Data((message + "\n").utf8))
}
