import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import ServiceLifecycle
import TernConsensus
import TernCore
import TernPlacement
import TernRepair
import TernStorage
import TernTransport

/// An event loop as a store's executor: the node's store runs on the node's loop.
public struct LoopExecutor: StoreExecutor {
    public let loop: any EventLoop
    public init(loop: any EventLoop) { self.loop = loop }
    public var inExecutor: Bool { loop.inEventLoop }
    public func execute(_ body: @escaping @Sendable () -> Void) { loop.execute(body) }
    public func execute(afterMilliseconds milliseconds: Int, _ body: @escaping @Sendable () -> Void) {
        loop.scheduleTask(in: .milliseconds(Int64(milliseconds))) { body() }
    }
}

/// The transport as the node's peer link.
struct TransportLink: PeerLink {
    let transport: PeerTransport
    func send(_ message: ByteBuffer, to peer: NodeID) { transport.send(message, to: peer) }
}

/// A whole `tern server` process: storage, the node, the peer transport, the RESP listener and the
/// admin endpoint. A ServiceLifecycle `Service`: `run()` returns after a graceful shutdown
/// (SIGTERM/SIGINT): stop accepting clients, finish requests in flight, last batch durable and the
/// store closed (final fsync), then the transport and the admin endpoint stop.
public final class TernServerProcess: Service, AdminBackend {
    public let node: Node
    let tls: TLSContexts
    let transport: PeerTransport
    let resp: RESPFrontend
    let config: ServerConfig
    let logger: Logger
    let group: any EventLoopGroup
    /// The last warnings and errors this process logged.
    let errors: ErrorRing

    /// Ports actually bound (the map's, or random ones when the map says port 0 in tests).
    public var clientPort: Int { resp.port }
    public var adminPort: Int { admin.port }
    /// The TLS client port (0: none).
    public var tlsClientPort: Int { resp.tlsPort }

    /// Reads the certificate and key files again (SIGHUP): connections opened from now on use
    /// them; open ones keep theirs. On any error every old context stays and the error is thrown
    /// (and logged): a half-renewed set is never used.
    public func reloadCertificates() throws {
        guard tls.client != nil || tls.peer != nil else {
            logger.info("SIGHUP: no TLS configured, nothing to reload")
            return
        }
        do {
            try tls.reload()
        } catch {
            logger.error(
                "certificate reload failed; the old certificates stay in use", metadata: ["error": "\(error)"]
            )
            throw error
        }
        logger.notice("certificates reloaded: new connections use the new files")
    }

    /// Opens the store under `dataDirectory`, starts the node, the transport, the RESP listener and
    /// the admin endpoint at the addresses the map gives node `id`.
    /// `newCluster`: this is the first start of a cluster just planned, so a data directory with no
    /// epoch record is a new node's (it votes at once) rather than a wiped or replaced disk's (which
    /// rebuilds learner-only first). Pass it only when bootstrapping (`tern server --new-cluster`,
    /// which `tern dev` passes on the run that planned the cluster), as etcd's
    /// `--initial-cluster-state new`.
    public static func start(
        map: ClusterMap, id: NodeID, dataDirectory: String, config: ServerConfig, group: any EventLoopGroup,
        logger: Logger, newCluster: Bool = false
    ) async throws -> TernServerProcess {
        guard let me = map.node(id) else {
            throw NodeError("node \(id.rawValue) is not in the cluster map \"\(map.name)\"")
        }
        // The last warnings and errors, kept for /status and the dashboard beside the caller's
        // own log handler.
        let errors = ErrorRing()
        let redisLogLevel = Self.redisLogLevel(logger.logLevel)
        let logger: Logger = {
            let handler = logger.handler
            var l = Logger(label: logger.label) { _ in
                MultiplexLogHandler([handler, ErrorRingLogHandler(ring: errors)])
            }
            l.logLevel = logger.logLevel
            return l
        }()
        // Protected mode (docs/SECURITY.md): checked before anything is opened or bound.
        let adminToken: String?
        do {
            adminToken = try config.resolvedAdminToken()
        } catch {
            throw NodeError("\(error)")
        }
        let exposure = config.exposureProblems(
            clientHost: try address(me.clientAddress).host, adminHost: try address(me.adminAddress).host,
            hasAdminToken: adminToken != nil)
        guard exposure.isEmpty else {
            throw NodeError("refusing to start: " + exposure.joined(separator: "; "))
        }
        // TLS files are read now: a bad file stops the start before anything is opened.
        let tls: TLSContexts
        do {
            tls = try TLSContexts(config: config)
        } catch {
            throw NodeError("refusing to start: \(error)")
        }
        // One loop runs this node: its core, its store's appends and reads, its client and peer
        // connections (run to completion, docs/SERVER.md); only fsyncs leave it.
        let loop = group.next()
        let store: Store
        do {
            var engine = BitcaskOptions()
            engine.maxValueSizeBytes = ServerConfig.storageRecordBytesMax(maxValueBytes: config.maxValueBytes)
            // With the scanner on, a directory that lost fsynced bytes is opened and the node
            // rebuilds learner-only (docs/REPAIR.md); without it, such a directory is refused.
            engine.acceptLostDurableBytes = config.repair
            if config.repair {
                // The scanner's listings read the keys of a few ring buckets (docs/REPAIR.md).
                let repair = RepairOptions()
                engine.partitioning = KeyPartitioning(count: repair.bucketCount) {
                    repair.bucket(ofRecordKey: $0)
                }
            }
            store = try Store(
                directory: dataDirectory, options: engine, durability: .always,
                executor: LoopExecutor(loop: loop), fsync: config.fsyncInline ? .inline : .thread)
        } catch .lostDurableBytes(let why) {
            // Serving from here would answer older values as if nothing happened, and vote with
            // forgotten promises: refuse (docs/STORAGE.md, "Lost durable bytes").
            throw NodeError(
                "refusing to start: the data directory \(dataDirectory) lost bytes that were fsynced: \(why). "
                    + "This replica may have forgotten acknowledged writes and its promises, so it must "
                    + "not serve or vote from this data. The file is left as found. With repair = true "
                    + "(the default) the node would start learner-only and rebuild from the other "
                    + "campuses by itself (docs/REPAIR.md).")
        } catch {
            throw NodeError("cannot open the data directory \(dataDirectory): \(error)")
        }
        var options = NodeOptions()
        options.tick = .milliseconds(Int64(config.tickMilliseconds))
        options.requestTimeout = .milliseconds(Int64(config.requestTimeoutMilliseconds))
        options.forwardTimeout = .milliseconds(Int64(config.forwardTimeoutMilliseconds))
        options.keysLoadedMax = config.keysLoadedMax
        options.clockSkewBoundMs = UInt64(config.clockSkewBoundMilliseconds)
        options.trustEmptyDirectory = newCluster
        options.groupBytesMax = config.maxValueBytes
        if config.repair {
            var repair = RepairOptions()
            repair.keysPerSecond = Double(config.repairKeysPerSecond)
            repair.bytesPerSecond = Double(config.repairMegabytesPerSecond) * 1_048_576
            repair.passIntervalNanos = UInt64(config.repairPassIntervalSeconds) * 1_000_000_000
            options.repair = repair
        } else {
            options.repair = nil
        }
        let node = try await Node.start(
            id: id, map: map, store: store, link: nil, eventLoop: loop, options: options,
            logger: logger)
        var peers: [NodeID: PeerAddress] = [:]
        for n in map.nodes where n.id != id { peers[n.id] = try address(n.peerAddress) }
        var transportConfig = TransportConfig(
            clusterName: map.transportName, me: id, listen: try address(me.peerAddress), peers: peers,
            secret: config.secret,
            maxFrameBytes: ServerConfig.peerFrameBytesMax(maxValueBytes: config.maxValueBytes))
        transportConfig.tls = tls.peer
        let transport = PeerTransport(config: transportConfig, group: loop, logger: logger) {
            from, messages in
            node.receive(from: from, messages)
        }
        node.setLink(TransportLink(transport: transport))
        try await transport.start()
        let client = try address(me.clientAddress)
        var processor = CommandProcessor(password: config.password, maxValueBytes: config.maxValueBytes) {
            "tern_node:\(id.rawValue)\r\ntern_campus:\(me.campus)\r\ntern_cluster:\(map.name)\r\n"
        }
        processor.maxClients = config.maxClients
        processor.streamMaxEntries = config.streamMaxEntries
        processor.bind = client.host
        processor.dataDirectory = dataDirectory
        processor.keyLayout = map.keyLayout
        processor.hz = max(1, 1000 / config.tickMilliseconds)
        processor.logLevel = redisLogLevel
        processor.clientOutputBytesMax = config.clientOutputBufferLimit
        processor.clientMemoryBytesMax = config.maxMemoryClients
        processor.memory = MemoryLimit(limitBytes: config.maxmemoryBytes)
        // seq: the sequence service (SEQ.NEXT / SEQ.CUR, docs/SEQ.md), also this node's
        // SequenceSource.
        let sequences = SeqService(node: node)
        processor.modules.append(sequences)
        // Sync inboxes and push (docs/SYNC.md); MSG.SEND takes its sequences from SeqService.
        // Pub/sub for any channel, delivered on every node (docs/PUBSUB.md); the sync notices'
        // `sync:<uid>` channels are published there too.
        let pubsub = PubSubService(node: node)
        processor.modules.append(pubsub)
        processor.notifier = KeyspaceNotifier(node: node, pubsub: pubsub)
        processor.modules.append(SyncService(node: node, sequences: sequences, pubsub: pubsub.hub))
        // SCAN, KEYS, DBSIZE, FLUSHALL, … (cluster-wide key enumeration, docs/SERVER.md).
        var keyspace = KeyspaceOptions()
        keyspace.flushAllowed = config.flushall
        processor.modules.append(KeyspaceService(node: node, options: keyspace))
        // ACL users (ACL.swift, docs/ACL.md): the file, then the cluster's `\0acl`.
        let access = AccessControl(password: config.password, file: config.aclFile, logger: logger)
        if config.aclFile != nil {
            do throws(ACLError) {
                try access.loadFile(table: processor.commandTable)
            } catch {
                await node.shutdown()
                await transport.shutdown()
                throw NodeError("cannot load the aclfile: \(error.message)")
            }
        }
        processor.access = access
        let aclGossip = AccessControl.startSharing(access, node: node, table: processor.commandTable)
        // Red envelopes (docs/ENVELOPE.md).
        processor.modules.append(EnvelopeService(node: node))
        // Lua scripting (docs/SCRIPTING.md): EVAL on the keys a script declares, one Paxos key.
        processor.modules.append(ScriptService(node: node, planner: processor))
        // CLUSTER SLOTS/SHARDS/NODES for cluster-mode clients: one shard, this node its master.
        processor.modules.append(ClusterCommands(me: me, nodes: map.nodes, clusterName: map.name))
        let resp = try await RESPFrontend.start(
            host: client.host, port: config.plainPortDisabled ? nil : client.port,
            tls: tls.client.map { (port: config.tlsPort!, context: $0) }, node: node, processor: processor,
            group: loop,
            logger: logger)
        let adminAddress = try address(me.adminAddress)
        let process = TernServerProcess(
            node: node, transport: transport, resp: resp, admin: nil, config: config, tls: tls,
            logger: logger,
            group: group, errors: errors)
        process.aclBox.withLockedValue { $0 = (access, aclGossip) }
        let admin = try await AdminServer.start(
            host: adminAddress.host, port: adminAddress.port, backend: process.backendProxy,
            access: AdminAccess(token: adminToken), group: group, logger: logger)
        process.adminBox.withLockedValue { $0 = admin }
        process.startSampler()
        processor.memory.startSampling(on: loop)
        process.memoryBox.withLockedValue { $0 = processor.memory }
        return process
    }

    /// Once a second: the fsync rate for /status (the counters are read, nothing is added to the
    /// write path).
    func startSampler() {
        let node = self.node
        let rates = self.rates
        let task = node.eventLoop.scheduleRepeatedAsyncTask(initialDelay: .seconds(1), delay: .seconds(1)) {
            _ in
            let promise = node.eventLoop.makePromise(of: Void.self)
            promise.completeWithTask {
                let s = await node.status()
                let now = NIODeadline.now()
                rates.withLockedValue { r in
                    if let last = r.last {
                        let seconds = Double((now - last.at).nanoseconds) / 1e9
                        if seconds > 0 { r.fsyncsPerSecond = Double(s.fsyncs - last.fsyncs) / seconds }
                    }
                    r.last = (now, s.fsyncs)
                }
            }
            return promise.futureResult
        }
        samplerBox.withLockedValue { $0 = task }
    }

    /// The rates the sampler measured.
    struct Rates {
        var last: (at: NIODeadline, fsyncs: Int)?
        var fsyncsPerSecond = 0.0
    }
    let rates = NIOLockedValueBox(Rates())
    let samplerBox = NIOLockedValueBox<RepeatedTask?>(nil)
    /// `maxmemory` and its used-memory sampler (MaxMemory.swift).
    let memoryBox = NIOLockedValueBox<MemoryLimit?>(nil)
    let started = NIODeadline.now()

    let adminBox = NIOLockedValueBox<AdminServer?>(nil)
    var backendProxy: BackendProxy { BackendProxy(process: self) }

    init(
        node: Node, transport: PeerTransport, resp: RESPFrontend, admin: AdminServer?, config: ServerConfig,
        tls: TLSContexts, logger: Logger, group: any EventLoopGroup, errors: ErrorRing
    ) {
        self.tls = tls
        self.group = group
        self.errors = errors
        self.node = node
        self.transport = transport
        self.resp = resp
        self.config = config
        self.logger = logger
        adminBox.withLockedValue { $0 = admin }
    }

    var admin: AdminServer { adminBox.withLockedValue { $0! } }

    /// The ACL users and the task that passes them on (set once, before the process is shared).
    let aclBox = NIOLockedValueBox<(AccessControl, RepeatedTask)?>(nil)
    var acl: (AccessControl, RepeatedTask)? { aclBox.withLockedValue { $0 } }

    /// swift-log's level in Redis's loglevel words (CONFIG GET loglevel).
    static func redisLogLevel(_ level: Logger.Level) -> String {
        switch level {
        case .trace, .debug: "debug"
        case .info: "verbose"
        case .notice: "notice"
        default: "warning"
        }
    }

    static func address(_ text: String) throws -> PeerAddress {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]) else {
            throw NodeError("bad address \(text)")
        }
        var host = String(text[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        return PeerAddress(host: host, port: port)
    }

    /// Runs until a graceful shutdown is requested, then stops in order.
    public func run() async throws {
        try? await gracefulShutdown()
        await stop()
    }

    /// Stops everything in order (idempotent enough for one call).
    public func stop() async {
        logger.info("shutting down")
        samplerBox.withLockedValue { $0?.cancel() }
        memoryBox.withLockedValue { $0?.stopSampling() }
        await resp.close()
        acl?.1.cancel()
        await node.shutdown()
        await transport.shutdown()
        await admin.close()
        logger.info("stopped")
    }

    // MARK: - AdminBackend

    /// Serving, and not rebuilding (a learner-only node answers nothing from its own state).
    public func healthy() async -> Bool {
        let s = await node.status()
        return s.serving && !s.learnerOnly
    }

    public func statusJSON() async -> String {
        let s = await node.status()
        let t = transport.metrics()
        let peers = t.peers.sorted { $0.key < $1.key }.map { id, p in
            "{\"node\":\(id.rawValue),\"connected\":\(p.connected),\"fault\":\"\(p.outgoingFault)\"}"
        }
        let c = s.consensus
        let messagesPerWrite = c.writes == 0 ? 0 : Double(c.messages) / Double(c.writes)
        let opsPerInstance = c.instancesProposed == 0 ? 0 : Double(c.opsMerged) / Double(c.instancesProposed)
        return """
            {"node":\(s.node.rawValue),"campus":"\(s.campus)","epoch":\(s.epoch),"peers":[\(peers.joined(separator: ","))],\
            "peers_connected":\(t.peers.values.filter(\.connected).count),"keys_loaded":\(s.keysLoaded),\
            "keys_evicted":\(c.keysEvicted),"key_loads":\(c.keyLoads),"flushes":\(c.flushes),"writes":\(c.writes),\
            "fsyncs":\(s.fsyncs),"records_written":\(c.records),"record_bytes_written":\(c.recordBytes),"peer_messages_sent":\(c.messages),\
            "peer_frames_sent":\(c.frames),"messages_per_write":\(messagesPerWrite),\
            "instances_proposed":\(c.instancesProposed),"ops_merged":\(c.opsMerged),"ops_per_instance":\(opsPerInstance),\
            "requests":\(s.requests),"requests_failed":\(s.requestsFailed),"forwarded_out":\(s.forwardedOut),\
            "forwarded_in":\(s.forwardedIn),"routed":\(s.routed),"routes_taken_back":\(s.routesTakenBack),"relayed":\(s.relayed),"retries":\(s.retries),"in_flight":\(s.inFlight),\
            "bad_peer_messages":\(s.badPeerMessages),"misrouted":\(c.misrouted),\
            "damaged_key_loads":\(s.damagedKeyLoads),"expired_keys_swept":\(s.expiredSwept),"storage_damaged_records":\(s.storageDamagedRecords),\
            "storage_unattributed_damage":\(s.storageUnattributedDamage),"handshakes_evicted":\(t.handshakesEvicted),\
            "peer_tls_failures":\(t.tlsFailures),\
            "transport_messages_per_write":\(t.messagesPerWriteMean),"learner_only":\(s.learnerOnly),\
            "learner_only_reason":\(Self.jsonString(s.learnerOnlyReason)),"damaged_keys":\(s.damagedKeys),\
            "incarnation":\(Self.jsonString(s.incarnation)),"incarnation_check":\(Self.jsonString(s.incarnationCheck)),\
            "repair":\(Self.json(s.repair)),\(await dashboardFields(s))}

            """
    }

    /// What the dashboard adds to /status: health, rates, recent latency, the last errors.
    func dashboardFields(_ s: NodeStatus) async -> String {
        let f =
            (try? await resp.registry.facts(on: node.eventLoop, withClients: false).get()) ?? ServerFacts()
        let fsyncRate = rates.withLockedValue { $0.fsyncsPerSecond }
        func ms(_ v: Double?) -> String { v.map { String(format: "%.3f", $0) } ?? "null" }
        let errors = RecentError.merge([self.errors.recent, f.recentErrors], max: 10)
        let uptime = Double((NIODeadline.now() - started).nanoseconds) / 1e9
        return "\"healthy\":\(s.serving && !s.learnerOnly),\"serving\":\(s.serving),"
            + "\"uptime_seconds\":\(String(format: "%.1f", uptime)),\"ops_per_sec\":\(f.opsPerSecond),"
            + "\"commands_processed\":\(f.totalCommands),\"connected_clients\":\(f.connectedClients),"
            + "\"latency_p50_ms\":\(ms(LatencyBuckets.quantileMilliseconds(f.recentLatency, 0.5))),"
            + "\"latency_p99_ms\":\(ms(LatencyBuckets.quantileMilliseconds(f.recentLatency, 0.99))),"
            + "\"fsyncs_per_sec\":\(String(format: "%.1f", fsyncRate)),\"last_errors\":\(Self.json(errors))"
    }

    public func clusterJSON(authorization: String?) async -> String {
        await ClusterView.json(
            map: node.map, me: node.id,
            myStatus: await statusJSON().trimmingCharacters(in: .whitespacesAndNewlines),
            myHealthy: await healthy(), authorization: authorization, group: group)
    }

    /// `value` as JSON (`null` for nil).
    static func json<T: Encodable>(_ value: T?) -> String {
        guard let value, let data = try? JSONEncoder().encode(value) else { return "null" }
        return String(decoding: data, as: UTF8.self)
    }

    static func jsonString(_ s: String?) -> String { json(s) }

    public func metricsText() async -> String {
        let s = await node.status()
        let t = transport.metrics()
        let c = s.consensus
        let labels = "node=\"\(s.node.rawValue)\",campus=\"\(s.campus)\""
        var out = ""
        func metric(_ name: String, _ type: String, _ help: String, _ value: Double) {
            out += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n\(name){\(labels)} \(value)\n"
        }
        metric("tern_requests_total", "counter", "Client requests served by this node.", Double(s.requests))
        metric(
            "tern_requests_failed_total", "counter", "Client requests that ended in an error.",
            Double(s.requestsFailed))
        metric("tern_requests_in_flight", "gauge", "Client requests waiting.", Double(s.inFlight))
        metric(
            "tern_forwarded_out_total", "counter", "Requests forwarded to another replica.",
            Double(s.forwardedOut))
        metric(
            "tern_forwarded_in_total", "counter", "Requests served for another node.", Double(s.forwardedIn))
        metric("tern_retries_total", "counter", "Internal retries of client requests.", Double(s.retries))
        if let access = acl?.0 {
            let n = access.counts
            metric(
                "tern_acl_auth_failures_total", "counter", "AUTH and HELLO AUTH with a wrong password.",
                Double(n.authFailures))
            metric(
                "tern_acl_denied_commands_total", "counter", "Commands refused by the user's ACL rules.",
                Double(n.deniedCommands))
            metric(
                "tern_acl_denied_keys_total", "counter",
                "Commands refused for a key outside the user's patterns.",
                Double(n.deniedKeys))
            metric(
                "tern_acl_users", "gauge", "ACL users in force on this node.",
                Double(access.table.users.count))
        }
        metric("tern_keys_loaded", "gauge", "Keys in memory.", Double(s.keysLoaded))
        metric("tern_keys_evicted_total", "counter", "Idle keys evicted.", Double(c.keysEvicted))
        metric("tern_flushes_total", "counter", "Group-commit batches.", Double(c.flushes))
        metric("tern_storage_writes_total", "counter", "Batches written to storage.", Double(c.writes))
        metric("tern_fsyncs_total", "counter", "Storage fsyncs.", Double(s.fsyncs))
        metric("tern_records_written_total", "counter", "Paxos records written.", Double(c.records))
        metric(
            "tern_record_bytes_written_total", "counter",
            "Bytes of the Paxos records written (keys and values).", Double(c.recordBytes))
        metric(
            "tern_peer_messages_sent_total", "counter", "Paxos messages sent to peers.", Double(c.messages))
        metric(
            "tern_instances_proposed_total", "counter", "Instances proposed with client writes.",
            Double(c.instancesProposed))
        metric(
            "tern_ops_merged_total", "counter", "Client writes merged into proposed instances.",
            Double(c.opsMerged))
        metric(
            "tern_bad_peer_messages_total", "counter", "Peer messages that failed to decode.",
            Double(s.badPeerMessages))
        let clients = resp.clients.counts
        metric("tern_connected_clients", "gauge", "Client connections open now.", Double(clients.connected))
        metric("tern_maxclients", "gauge", "Client connections allowed at once.", Double(resp.clients.max))
        metric(
            "tern_rejected_clients_total", "counter", "Client connections refused at maxclients.",
            Double(clients.refused))
        metric(
            "tern_client_buffer_bytes", "gauge",
            "Bytes held by client query and reply buffers (as accounted).",
            Double(clients.memory))
        metric(
            "tern_maxmemory_clients_bytes", "gauge", "Bound on all client buffers together.",
            Double(resp.clients.memoryBytesMax))
        metric(
            "tern_client_output_buffer_limit_bytes", "gauge", "Reply bytes one client may leave unread.",
            Double(resp.clients.outputBytesMax))
        metric(
            "tern_evicted_clients_output_total", "counter",
            "Clients disconnected for leaving more than client_output_buffer_limit unread.",
            Double(clients.evictedOutput))
        metric(
            "tern_evicted_clients_memory_total", "counter",
            "Clients disconnected because all clients' buffers passed maxmemory_clients.",
            Double(clients.evictedMemory))
        if let memory = memoryBox.withLockedValue({ $0 }) {
            metric(
                "tern_used_memory_bytes", "gauge",
                "Resident bytes of the node (INFO's used_memory), last sample.",
                Double(memory.usedBytes))
            metric("tern_maxmemory_bytes", "gauge", "maxmemory (0: no limit).", Double(memory.limitBytes))
            metric(
                "tern_oom_rejected_total", "counter", "Commands refused with -OOM over maxmemory.",
                Double(memory.refusals))
        }
        metric(
            "tern_expired_keys_swept_total", "counter",
            "Expired keys the paced sweep found and removed through the protocol.", Double(s.expiredSwept))
        metric(
            "tern_damaged_key_loads_total", "counter",
            "Key records found damaged or unreadable when loaded (the key waits for its peers).",
            Double(s.damagedKeyLoads))
        metric(
            "tern_storage_damaged_records", "gauge",
            "Records with a bad checksum found since the store opened.",
            Double(s.storageDamagedRecords))
        metric(
            "tern_storage_unattributed_damage", "gauge",
            "Damaged regions whose key could not be read (only a full scan can repair them).",
            Double(s.storageUnattributedDamage))
        metric(
            "tern_peer_handshakes_evicted_total", "counter",
            "Peer connections closed in their handshake to make room (a flood on the peer port).",
            Double(t.handshakesEvicted))
        metric(
            "tern_peer_tls_failures_total", "counter",
            "Peer connections refused by mutual TLS (another CA's certificate, none, or no TLS).",
            Double(t.tlsFailures))
        metric("tern_transport_bytes_sent_total", "counter", "Bytes sent to peers.", Double(t.bytesSent))
        metric(
            "tern_transport_bytes_received_total", "counter", "Bytes received from peers.",
            Double(t.bytesReceived))
        metric(
            "tern_peers_connected", "gauge", "Peers connected.",
            Double(t.peers.values.filter(\.connected).count))
        metric(
            "tern_learner_only", "gauge", "1 while the node rebuilds (serves and votes nothing of its own).",
            s.learnerOnly ? 1 : 0)
        metric(
            "tern_damaged_keys", "gauge", "Keys waiting for both peers to re-teach them.",
            Double(s.damagedKeys))
        if let r = s.repair {
            metric(
                "tern_repair_pass", "gauge", "The repair pass under way (or the last one).", Double(r.pass))
            metric(
                "tern_repair_buckets_done", "gauge", "Buckets of the ring done in this pass.",
                Double(r.bucketsDone))
            metric("tern_repair_buckets", "gauge", "Buckets of the ring.", Double(r.bucketsTotal))
            metric(
                "tern_repair_passes_completed_total", "counter", "Repair passes finished.",
                Double(r.passesCompleted))
            metric(
                "tern_repair_last_pass_complete", "gauge",
                "1 if the last pass compared every bucket with every peer.", r.lastPassComplete ? 1 : 0)
            metric(
                "tern_repair_last_pass_age_seconds", "gauge", "Seconds since the last pass ended (-1: none).",
                r.lastPassAgoSeconds ?? -1)
            metric(
                "tern_repair_last_pass_duration_seconds", "gauge", "How long the last pass took.",
                r.lastPassSeconds)
            metric(
                "tern_repair_keys_read_total", "counter", "Records read by the scanner.", Double(r.keysRead))
            metric(
                "tern_repair_bytes_read_total", "counter", "Record bytes read by the scanner.",
                Double(r.bytesRead))
            metric(
                "tern_repair_keys_compared_total", "counter", "Keys compared with a peer's list.",
                Double(r.keysCompared))
            metric(
                "tern_repair_buckets_matched_total", "counter", "Bucket digests equal to a peer's.",
                Double(r.bucketsMatched))
            metric(
                "tern_repair_buckets_differed_total", "counter", "Bucket digests that needed key lists.",
                Double(r.bucketsDiffered))
            out += "# HELP tern_repairs_total Repairs by cause.\n# TYPE tern_repairs_total counter\n"
            for (cause, n) in [
                ("behind", r.repairedBehind), ("taught", r.repairedTaught), ("missing", r.repairedMissing),
                ("peer_missing", r.peerMissing), ("damaged", r.repairedDamaged), ("rebuilt", r.rebuilt),
                ("copied", r.copied),
                ("orphan", r.orphansCollected),
            ] {
                out += "tern_repairs_total{\(labels),cause=\"\(cause)\"} \(Double(n))\n"
            }
            metric(
                "tern_repair_fences_raised_total", "counter",
                "Fences (node-wide promise floors) raised here for a rebuilding peer.", Double(r.fencesRaised)
            )
            metric(
                "tern_repair_copied_bytes_total", "counter",
                "Record bytes a bulk rebuild installed from the peers' merged records.", Double(r.copiedBytes)
            )
            metric(
                "tern_repair_safety_alarms_total", "counter",
                "Two values chosen at one instance (must be 0).",
                Double(r.safetyAlarms))
            metric(
                "tern_repair_peer_timeouts_total", "counter",
                "Bucket summaries a peer did not answer in time.",
                Double(r.peerTimeouts))
        }
        out += await StreamMetrics.text(node: node, labels: labels)
        metric(
            "tern_uptime_seconds", "gauge", "Seconds since this process started.",
            Double((NIODeadline.now() - started).nanoseconds) / 1e9)
        // Histograms (cumulative buckets, Prometheus's text format): fsync latency, and client
        // request latency per command as the front end measured it (reply ready minus command read).
        out += Self.histogram(
            "tern_fsync_duration_seconds", help: "Storage fsync latency.", labels: labels,
            buckets: s.fsyncLatency, sumMicros: s.fsyncMicros)
        let f =
            (try? await resp.registry.facts(on: node.eventLoop, withClients: false).get()) ?? ServerFacts()
        var first = true
        for c in f.commands where c.latency.contains(where: { $0 > 0 }) {
            out += Self.histogram(
                "tern_request_duration_seconds",
                help: first
                    ? "Client request latency by command (lowercase name, container|sub for a subcommand)."
                    : nil,
                labels: labels + ",command=\"\(c.name)\"", buckets: c.latency, sumMicros: c.latencyMicrosEver)
            first = false
        }
        return out
    }

    /// One Prometheus histogram (`help` nil: the HELP and TYPE lines were written already).
    static func histogram(_ name: String, help: String?, labels: String, buckets: [Int], sumMicros: Int)
        -> String
    {
        var out = help.map { "# HELP \(name) \($0)\n# TYPE \(name) histogram\n" } ?? ""
        var cumulative = 0
        for (i, n) in buckets.enumerated() {
            cumulative += n
            let le =
                i < LatencyBuckets.boundsMicros.count
                ? "\(Double(LatencyBuckets.boundsMicros[i]) / 1e6)" : "+Inf"
            out += "\(name)_bucket{\(labels),le=\"\(le)\"} \(cumulative)\n"
        }
        out += "\(name)_sum{\(labels)} \(Double(sumMicros) / 1e6)\n\(name)_count{\(labels)} \(cumulative)\n"
        return out
    }

    public func repairNow() async -> Bool {
        guard config.repair else { return false }
        node.repairNow()
        return true
    }

    public func setFault(peer: String?, mode: String?, milliseconds: String?) async -> AdminFaultResult {
        guard config.testFaults else { return .disabled }
        guard let raw = peer.flatMap({ UInt32($0) }), node.map.node(NodeID(raw)) != nil,
            NodeID(raw) != node.id
        else {
            return .badRequest("peer must be the id of another node of the map")
        }
        let p = NodeID(raw)
        let fault: PeerFault
        switch mode {
        case "drop": fault = .drop
        case "none": fault = .none
        case "delay":
            guard let ms = milliseconds.flatMap({ Int64($0) }), ms >= 0, ms <= 60_000 else {
                return .badRequest("delay needs ms=N (0...60000)")
            }
            fault = .delay(.milliseconds(ms))
        default: return .badRequest("mode must be drop, delay or none")
        }
        transport.setFault(fault, for: p, direction: .both)
        return .applied("fault \(fault) for traffic with \(p)")
    }
}

/// The node's TLS contexts, built from the files server.toml names (docs/SECURITY.md).
struct TLSContexts: Sendable {
    /// The client TLS port's (tls_cert_file, tls_key_file, tls_ca_cert_file, tls_auth_clients).
    var client: ReloadableTLSContext?
    /// Mutual TLS between peers (tls_peer_*).
    var peer: PeerTLS?

    init(config: ServerConfig) throws {
        if config.tlsPort != nil, let cert = config.tlsCertFile, let key = config.tlsKeyFile {
            let ca = config.tlsCACertFile
            let policy: ClientCertificatePolicy =
                switch config.tlsAuthClients {
                case .no: .none
                case .optional: .optional
                case .yes: .required
                }
            client = try ReloadableTLSContext {
                try TLSFiles.serverContext(cert: cert, key: key, ca: ca, clients: policy)
            }
        }
        if let cert = config.tlsPeerCertFile, let key = config.tlsPeerKeyFile,
            let ca = config.tlsPeerCACertFile
        {
            peer = try PeerTLS(certFile: cert, keyFile: key, caFile: ca)
        }
    }

    /// Builds every context again; all or nothing.
    func reload() throws {
        // Build first, swap after: a bad file leaves every context as it was.
        let fresh = try client?.build()
        try peer?.reload()
        if let client, let fresh { client.install(fresh) }
    }
}

/// Breaks the cycle process → admin server → backend.
struct BackendProxy: AdminBackend {
    let process: TernServerProcess
    func healthy() async -> Bool { await process.healthy() }
    func statusJSON() async -> String { await process.statusJSON() }
    func metricsText() async -> String { await process.metricsText() }
    func repairNow() async -> Bool { await process.repairNow() }
    func clusterJSON(authorization: String?) async -> String {
        await process.clusterJSON(authorization: authorization)
    }
    func setFault(peer: String?, mode: String?, milliseconds: String?) async -> AdminFaultResult {
        await process.setFault(peer: peer, mode: mode, milliseconds: milliseconds)
    }
}
