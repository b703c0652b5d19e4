import TernConsensus
import TernCore
import TernServer
import Testing

@Suite struct ServerConfigTests {
    let secret = "[server]\nsecret = \"" + String(repeating: "ab", count: 16) + "\"\n"

    @Test("max_value_bytes is refused above 16 MiB, with a message naming the key and the range")
    func valueLimitIsChecked() throws {
        let ok = try ServerConfig(toml: secret + "max_value_bytes = \(16 << 20)\n")
        #expect(ok.maxValueBytes == 16 << 20)
        #expect(throws: ServerConfigError.self) {
            try ServerConfig(toml: secret + "max_value_bytes = \((16 << 20) + 1)\n")
        }
        do {
            _ = try ServerConfig(toml: secret + "max_value_bytes = 536870912\n")
        } catch {
            #expect(error.message == "max_value_bytes must be an integer in 1...16777216")
        }
    }

    /// The worst record one key can have at the largest value: its value, an accepted value, and
    /// a full de-dup window whose last entries carry old values of that size (GETSETs merged into
    /// one instance). It must fit the storage engine's bound, or a write would fence the node.
    @Test("fsync is \"thread\" (the default) or \"inline\"; anything else is refused; toml() keeps it")
    func fsyncPlacement() throws {
        #expect(try ServerConfig(toml: secret).fsyncInline == false)
        let inline = try ServerConfig(toml: secret + "fsync = \"inline\"\n")
        #expect(inline.fsyncInline)
        #expect(try ServerConfig(toml: inline.toml()).fsyncInline)
        #expect(try ServerConfig(toml: secret + "fsync = \"thread\"\n").fsyncInline == false)
        #expect(throws: ServerConfigError.self) { try ServerConfig(toml: secret + "fsync = \"never\"\n") }
    }

    @Test("flushall is off unless server.toml says true; a non-boolean is refused; toml() keeps it")
    func flushall() throws {
        #expect(try ServerConfig(toml: secret).flushall == false)
        let on = try ServerConfig(toml: secret + "flushall = true\n")
        #expect(on.flushall)
        #expect(try ServerConfig(toml: on.toml()).flushall)
        #expect(throws: ServerConfigError.self) { try ServerConfig(toml: secret + "flushall = \"yes\"\n") }
    }

    @Test("The largest record a key can have at max_value_bytes fits the storage engine's record bound")
    func largestRecordFitsStorage() {
        let v = ServerConfig.maxValueBytesLimit
        // The open slot shares nothing with the chosen value (other bytes, other requests), so it
        // is written whole (record version 4 writes a slot that shares bytes as a change).
        func value(_ fill: UInt8, client: UInt32) -> KeyValue {
            let big = [UInt8](repeating: fill, count: v)
            var recent = (0..<31).map {
                AppliedRequest(
                    id: RequestID(client: client, counter: UInt64($0)), result: .number(1), instance: 9)
            }
            recent.append(
                AppliedRequest(
                    id: RequestID(client: client + 1, counter: 1), result: .previous(big), instance: 10))
            return KeyValue(bytes: big, recent: recent, floor: 3)
        }
        var state = KeyState()
        state.chosen = 10
        state.value = value(7, client: 1)
        state.promised = Ballot(round: 5, node: NodeID(1))
        state.accepted = AcceptedSlot(
            instance: 11, ballot: Ballot(round: 5, node: NodeID(1)), value: value(8, client: 3))
        let record = PaxosCodec.encode(state)
        #expect(record.count > 4 * v, "the record holds four values")
        #expect(record.count <= ServerConfig.storageRecordBytesMax(maxValueBytes: v))
    }

    @Test("Protected mode: a non-loopback client address needs a password or aclfile, an admin one a token")
    func protectedMode() throws {
        let plain = try ServerConfig(toml: secret)
        #expect(plain.protectedMode)
        #expect(
            plain.exposureProblems(clientHost: "127.0.0.1", adminHost: "127.0.0.1", hasAdminToken: false)
                .isEmpty)
        #expect(
            plain.exposureProblems(clientHost: "::1", adminHost: "localhost", hasAdminToken: false).isEmpty)
        let open = plain.exposureProblems(clientHost: "0.0.0.0", adminHost: "127.0.0.1", hasAdminToken: false)
        #expect(open.count == 1)
        #expect(open.first?.contains("password") == true && open.first?.contains("aclfile") == true)
        #expect(open.first?.contains("protected_mode = false") == true)
        let admin = plain.exposureProblems(
            clientHost: "127.0.0.1", adminHost: "10.0.0.5", hasAdminToken: false)
        #expect(admin.count == 1 && admin[0].contains("admin_token"))
        #expect(
            plain.exposureProblems(clientHost: "127.0.0.1", adminHost: "10.0.0.5", hasAdminToken: true)
                .isEmpty)
        let withPassword = try ServerConfig(toml: secret + "password = \"pw\"\n")
        #expect(
            withPassword.exposureProblems(clientHost: "10.0.0.5", adminHost: "::1", hasAdminToken: false)
                .isEmpty)
        let withUsers = try ServerConfig(toml: secret + "aclfile = \"users.acl\"\n")
        #expect(
            withUsers.exposureProblems(clientHost: "10.0.0.5", adminHost: "::1", hasAdminToken: false).isEmpty
        )
        let off = try ServerConfig(toml: secret + "protected_mode = false\n")
        #expect(
            off.exposureProblems(clientHost: "0.0.0.0", adminHost: "0.0.0.0", hasAdminToken: false).isEmpty)
        #expect(try ServerConfig(toml: off.toml()).protectedMode == false)
    }

    @Test("Security keys: admin token (inline or file, not both), TLS ports and files, auth-clients names")
    func securityKeys() throws {
        let both = secret + "admin_token = \"a\"\nadmin_token_file = \"f\"\n"
        #expect(throws: ServerConfigError.self) { try ServerConfig(toml: both) }
        let tls = try ServerConfig(
            toml: secret
                + "tls_port = 7679\ntls_cert_file = \"n.crt\"\ntls_key_file = \"n.key\"\ntls_auth_clients = \"no\"\n"
                + "admin_token = \"tok\"\n")
        #expect(tls.tlsPort == 7679 && tls.tlsAuthClients == .no)
        #expect(try tls.resolvedAdminToken() == "tok")
        #expect(try ServerConfig(toml: tls.toml()) == tls)
        // Redis's default is yes: client certificates, so a CA to check them is needed.
        #expect(throws: ServerConfigError.self) {
            try ServerConfig(
                toml: secret + "tls_port = 7679\ntls_cert_file = \"n.crt\"\ntls_key_file = \"n.key\"\n")
        }
        #expect(throws: ServerConfigError.self) { try ServerConfig(toml: secret + "tls_port = 7679\n") }
        #expect(throws: ServerConfigError.self) {
            try ServerConfig(toml: secret + "tls_auth_clients = \"maybe\"\n")
        }
        #expect(throws: ServerConfigError.self) { try ServerConfig(toml: secret + "port = 7379\n") }
        #expect(throws: ServerConfigError.self) { try ServerConfig(toml: secret + "port = 0\n") }
        #expect(throws: ServerConfigError.self) {
            try ServerConfig(toml: secret + "tls_peer_cert_file = \"a\"\n")
        }
        let peers = try ServerConfig(
            toml: secret
                + "tls_peer_cert_file = \"a\"\ntls_peer_key_file = \"b\"\ntls_peer_ca_cert_file = \"c\"\n")
        #expect(peers.peerTLS)
        #expect(try ServerConfig(toml: peers.toml()) == peers)
    }
}
