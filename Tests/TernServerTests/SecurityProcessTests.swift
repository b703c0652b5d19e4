import Foundation
import TernCore
import TernPlacement
import TernServer
import TernTransport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// `tern server` processes and the security settings (docs/SECURITY.md): protected mode, the
/// admin token, TLS for clients and mutual TLS between peers.
@Suite(.serialized, .timeLimit(.minutes(2))) struct SecurityProcessTests {
    /// A one-off map whose node 1 listens for clients on `clientHost` and for admin on `adminHost`,
    /// with `settings` beside it; runs `tern server` for node 1 and returns (exit status, log).
    /// Every refusal happens before anything is bound, so no socket is opened on a public address.
    func startRefused(clientHost: String, adminHost: String, settings: String) async throws -> (
        Int32?, String
    ) {
        let dir = NSTemporaryDirectory() + "tern-protected-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let planned = try TokenPlanner.plan(
            name: "pm", nodesPerCampus: [.a: 1, .b: 1, .c: 1], tokensPerNode: 4)
        var nodes: [NodeEntry] = []
        for n in planned.nodes {
            nodes.append(
                NodeEntry(
                    id: n.id, campus: n.campus, peerAddress: "127.0.0.1:\(freePort())",
                    clientAddress: "\(clientHost):\(freePort())", adminAddress: "\(adminHost):\(freePort())",
                    tokens: n.tokens))
        }
        try ClusterMap(name: "pm", version: 1, nodes: nodes).write(toFile: dir + "/cluster.toml")
        let secret = String(repeating: "ab", count: 16)
        try ("[server]\nsecret = \"\(secret)\"\n" + settings).write(
            toFile: dir + "/server.toml", atomically: true, encoding: .utf8)
        let pid = spawnProcess(
            ternExecutable(),
            ["server", "--config", dir + "/cluster.toml", "--node", "1", "--data", dir + "/n1"],
            log: dir + "/n1.log")
        let status = await waitExit(pid, seconds: 20)
        if status == nil {
            kill(pid, SIGKILL)
            var s: Int32 = 0
            waitpid(pid, &s, 0)
        }
        return (status, (try? String(contentsOfFile: dir + "/n1.log", encoding: .utf8)) ?? "")
    }

    @Test("Protected mode: tern server refuses a public client address without a password, saying how")
    func protectedModeRefusesToStart() async throws {
        let (status, log) = try await startRefused(
            clientHost: "0.0.0.0", adminHost: "127.0.0.1", settings: "")
        #expect(status == 1, "exit status; log:\n\(log)")
        #expect(log.contains("refusing to start: protected mode"), "\(log)")
        #expect(
            log.contains("password = ") && log.contains("aclfile") && log.contains("protected_mode = false"))
        #expect(!log.contains("RESP listening"), "nothing may be bound: \(log)")
    }

    @Test("Protected mode: a public admin address without admin_token is refused too")
    func protectedModeRefusesOpenAdmin() async throws {
        let (status, log) = try await startRefused(
            clientHost: "127.0.0.1", adminHost: "0.0.0.0", settings: "password = \"pw\"\n")
        #expect(status == 1, "exit status; log:\n\(log)")
        #expect(log.contains("admin_token"), "\(log)")
    }

    @Test(
        "TLS clients (redis-cli --tls), mutual TLS between nodes, the admin token, SIGHUP reloads certificates"
    )
    func tlsCluster() async throws {
        let dir = NSTemporaryDirectory() + "tern-tls-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        func write(_ text: String, _ name: String) throws -> String {
            try text.write(toFile: dir + "/" + name, atomically: true, encoding: .utf8)
            return dir + "/" + name
        }
        func issue(_ ca: ThrowawayCA, _ name: String) throws -> (cert: String, key: String) {
            let i = try ca.issue(commonName: name)
            return (try write(i.certificatePEM, name + ".crt"), try write(i.keyPEM, name + ".key"))
        }
        let ca = try ThrowawayCA(commonName: "cluster CA")
        let caFile = try write(ca.certificatePEM, "ca.crt")
        let other = try ThrowawayCA(commonName: "another CA")
        let otherFile = try write(other.certificatePEM, "other.crt")
        let client = try issue(ca, "client")
        let stranger = try issue(other, "stranger")
        var tlsPorts: [NodeID: Int] = [:]
        for i in 1...3 { tlsPorts[NodeID(UInt32(i))] = freePort() }
        var files: [NodeID: (client: (cert: String, key: String), peer: (cert: String, key: String))] = [:]
        for (id, _) in tlsPorts {
            files[id] = (try issue(ca, "n\(id.rawValue)-client"), try issue(ca, "n\(id.rawValue)-peer"))
        }
        let cluster = try ProcessCluster(
            settings: { $0.adminToken = "admin-token-1" },
            perNode: { id, s in
                s.tlsPort = tlsPorts[id]
                s.tlsCertFile = files[id]!.client.cert
                s.tlsKeyFile = files[id]!.client.key
                s.tlsCACertFile = caFile
                s.tlsAuthClients = .yes
                s.tlsPeerCertFile = files[id]!.peer.cert
                s.tlsPeerKeyFile = files[id]!.peer.key
                s.tlsPeerCACertFile = caFile
            })
        defer { cluster.killAll() }
        try await cluster.startAll()
        let n1 = NodeID(1)
        let n2 = NodeID(2)
        func cli(_ port: Int, _ tls: [String], _ args: [String]) throws -> (Int32, String) {
            try run("/usr/bin/redis-cli", tls + ["-h", "127.0.0.1", "-p", "\(port)"] + args)
        }
        let good = ["--tls", "--cacert", caFile, "--cert", client.cert, "--key", client.key]
        // A write through n1's TLS port is replicated over the nodes' mutual TLS; n2 reads it.
        #expect(try cli(tlsPorts[n1]!, good, ["SET", "tls:k", "v1"]).1.contains("OK"))
        #expect(try cli(tlsPorts[n2]!, good, ["GET", "tls:k"]).1 == "v1\n")
        // The plain port stays (port = 0 would turn it off).
        #expect(try cli(cluster.port(n1), [], ["GET", "tls:k"]).1 == "v1\n")
        // A client that does not trust the cluster CA refuses the server (system roots only).
        let noCA = try cli(tlsPorts[n1]!, ["--tls", "--cert", client.cert, "--key", client.key], ["PING"])
        #expect(!noCA.1.contains("PONG"), "\(noCA)")
        // tls_auth_clients = "yes": a client without a certificate, or with one from another CA, is refused.
        let noCert = try cli(tlsPorts[n1]!, ["--tls", "--cacert", caFile], ["PING"])
        #expect(!noCert.1.contains("PONG"), "\(noCert)")
        let strangerCert = try cli(
            tlsPorts[n1]!, ["--tls", "--cacert", caFile, "--cert", stranger.cert, "--key", stranger.key],
            ["PING"])
        #expect(!strangerCert.1.contains("PONG"), "\(strangerCert)")
        #expect(cluster.logTail(n1).contains("client TLS failed"))
        // The admin port: open paths without the token, the rest only with it.
        #expect(try await cluster.http("GET", "/health", node: n1, token: .some(nil)).status == 200)
        let refused = try await cluster.http("GET", "/status", node: n1, token: .some(nil))
        #expect(refused.status == 401 && refused.body.contains("admin_token"), "\(refused)")
        #expect(try await cluster.http("GET", "/status", node: n1, token: "wrong").status == 401)
        let status = try await cluster.http("GET", "/status", node: n1)
        #expect(status.status == 200 && status.body.contains("\"peers_connected\":2"), "\(status)")
        #expect(status.body.contains("\"peer_tls_failures\":0"), "\(status)")
        // POST /fault exists (test_faults = true in these clusters) and needs the token too.
        #expect(
            try await cluster.http("POST", "/fault?peer=2&mode=none", node: n1, token: .some(nil)).status
                == 401)
        #expect(try await cluster.http("POST", "/fault?peer=2&mode=none", node: n1).status == 200)

        // SIGHUP: n1's client certificate is replaced by one from another CA; new connections
        // present it, without a restart.
        let renewed = try other.issue(commonName: "n1-client renewed")
        try renewed.certificatePEM.write(toFile: files[n1]!.client.cert, atomically: true, encoding: .utf8)
        try renewed.keyPEM.write(toFile: files[n1]!.client.key, atomically: true, encoding: .utf8)
        cluster.signalNoWait(n1, SIGHUP)
        let deadline = Date().addingTimeInterval(10)
        while !((try? String(contentsOfFile: cluster.log(n1), encoding: .utf8)) ?? "").contains(
            "certificates reloaded"),
            Date() < deadline
        {
            try await Task.sleep(nanoseconds: 50_000_000)
        }
        #expect(cluster.logTail(n1).contains("certificates reloaded"), "\(cluster.logTail(n1))")
        let trustsOld = try cli(tlsPorts[n1]!, good, ["PING"])
        #expect(!trustsOld.1.contains("PONG"), "a client trusting only the old CA: \(trustsOld)")
        let trustsNew = try cli(
            tlsPorts[n1]!, ["--tls", "--cacert", otherFile, "--cert", client.cert, "--key", client.key],
            ["GET", "tls:k"])
        #expect(trustsNew.1 == "v1\n", "\(trustsNew)")
        // The peers were reloaded from unchanged files and still talk: a write through n1 works.
        #expect(try cli(cluster.port(n1), [], ["SET", "tls:k", "v2"]).1.contains("OK"))
        #expect(try cli(tlsPorts[n2]!, good, ["GET", "tls:k"]).1 == "v2\n")
    }

    @Test(
        "tern dev --tls: a throwaway CA, redis-cli --tls --cacert as the README shows, peers over mutual TLS")
    func devTLS() async throws {
        let dir = NSTemporaryDirectory() + "tern-dev-tls-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var base = 0
        for _ in 0..<20 {
            let b = freeDevBasePort()
            if b != 0 && (0..<3).allSatisfy({ portIsFree(b + 300 + $0) }) {
                base = b
                break
            }
        }
        try #require(base != 0)
        let log = dir + ".out"
        defer { try? FileManager.default.removeItem(atPath: log) }
        let pid = spawnProcess(
            ternExecutable(),
            ["dev", "--tls", "--dir", dir, "--base-port", "\(base)", "--start-timeout", "60"],
            log: log)
        var exited = false
        defer {
            // Only a child not yet reaped: a reaped pid may belong to another process by now.
            if !exited {
                kill(pid, SIGKILL)
                var s: Int32 = 0
                waitpid(pid, &s, 0)
            }
        }
        var text = ""
        for _ in 0..<600 {
            text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
            if text.contains("healthy") { break }
            try await Task.sleep(nanoseconds: 100_000_000)
        }
        let line = "redis-cli --tls --cacert \(dir)/tls/ca.crt -p \(base + 300)"
        #expect(text.contains(line), "\(text)")
        let tls = ["--tls", "--cacert", dir + "/tls/ca.crt", "-h", "127.0.0.1"]
        #expect(
            try run("/usr/bin/redis-cli", tls + ["-p", "\(base + 300)", "SET", "hello", "world"]).1 == "OK\n")
        #expect(try run("/usr/bin/redis-cli", tls + ["-p", "\(base + 302)", "GET", "hello"]).1 == "world\n")
        let status = try await adminRequest(port: base + 200, "GET", "/status").body
        #expect(
            status.contains("\"peers_connected\":2") && status.contains("\"peer_tls_failures\":0"),
            "\(status)")
        kill(pid, SIGTERM)
        let stopped = await waitExit(pid, seconds: 20)
        exited = stopped != nil
        #expect(stopped == 0)
    }
}
