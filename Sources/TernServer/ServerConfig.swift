import Foundation
import TOMLKit

/// The node settings that are not part of the cluster map: `server.toml`, beside the map.
///
/// ```toml
/// [server]
/// secret = "5f1c…"            # cluster secret, hex (≥ 16 bytes); peers authenticate with it
/// password = ""               # optional: clients must AUTH with it (the `default` ACL user's)
/// aclfile = "/etc/tern/users.acl"  # optional: ACL users, Redis's aclfile format (docs/ACL.md)
/// test_faults = false         # POST /fault on the admin port (tests only)
/// max_value_bytes = 1048576   # largest value (and argument) a client may send
/// tick_ms = 5                 # consensus tick
/// request_timeout_ms = 3000   # internal retries before a client gets an error
/// forward_timeout_ms = 300    # a forwarded attempt waits this long before another replica
/// keys_loaded_max = 1000000   # idle keys kept in memory
/// max_clients = 10000         # client connections at once (Redis's maxclients)
/// stream_max_entries = 10000  # a stream's backlog bound: XADD beyond it is refused (docs/QUEUE.md)
/// client_output_buffer_limit = 67108864  # reply bytes a client may leave unread, then it is closed
/// maxmemory_clients = 1073741824         # all clients' query + reply buffers, then the growing one is closed
/// maxmemory = 0               # bytes ("4gb" and Redis's other units too); over it, writes that
///                             # grow memory get -OOM (noeviction; 0: no limit; docs/SERVER.md)
/// fsync = "thread"            # "thread": one fsync thread hands back per group; "inline": the loop fsyncs
/// repair = true               # the anti-entropy scanner (docs/REPAIR.md); false only in tests
/// repair_keys_per_second = 1000   # its default pace: records read per second ...
/// repair_mb_per_second = 4        # ... and megabytes of records per second
/// repair_pass_interval_s = 60     # pause between the end of a pass and the next
/// clock_skew_bound_ms = 50        # bound on any node's clock error: keys expire this early (docs/DATA.md)
/// flushall = false            # FLUSHALL/FLUSHDB allowed (they delete every key; on in tern dev)
///
/// # Security (docs/SECURITY.md)
/// protected_mode = true       # refuse a non-loopback client address without password/aclfile
/// aclfile = ""                # ACL users file (a non-empty path counts as "users configured")
/// admin_token = "…"           # bearer token for the admin port (or admin_token_file = "path")
/// port = 0                    # only 0: no plain client port (the map's port is the plain one)
/// tls_port = 7679             # TLS client port, on the map's client host
/// tls_cert_file = "node.crt"  # PEM certificate (chain) the TLS port presents
/// tls_key_file = "node.key"   # its PEM private key
/// tls_ca_cert_file = "ca.crt" # CA that client certificates must chain to
/// tls_auth_clients = "yes"    # "no" | "optional" | "yes" (Redis's names; Redis's default)
/// tls_peer_cert_file = "…"    # peer mutual TLS: this node's certificate, signed by the
/// tls_peer_key_file = "…"     #   cluster CA, its key,
/// tls_peer_ca_cert_file = "…" #   and the cluster CA (all three, or none: no peer TLS)
/// ```
/// Relative paths are relative to the directory of the file they are read from.
/// Every key but `secret` is optional; unknown keys are refused (likely typos).
public struct ServerConfig: Sendable, Hashable {
    public var secret: [UInt8]
    public var password: String?
    /// The ACL users' file (Redis's `aclfile`), loaded at start; nil: only `default`.
    public var aclFile: String?
    public var testFaults = false
    public var maxValueBytes = 1 << 20
    public var tickMilliseconds = 5
    public var requestTimeoutMilliseconds = 3000
    public var forwardTimeoutMilliseconds = 300
    public var keysLoadedMax = 1_000_000
    public var maxClients = 10_000
    /// A stream's backlog bound: XADD that would leave more entries is refused (docs/QUEUE.md).
    public var streamMaxEntries = Self.streamMaxEntriesDefault
    /// Every XADD rewrites the whole stream (it is one value): 10 000 entries of ~100 bytes is
    /// ~1 MiB per write, the most a hot key should carry.
    public static let streamMaxEntriesDefault = 10_000
    public var clientOutputBufferLimit = 64 << 20
    public var maxMemoryClients = 1 << 30
    /// Redis's `maxmemory` (noeviction): 0, no limit (MaxMemory.swift).
    public var maxmemoryBytes: UInt64 = 0
    /// Where the store's fsyncs run (docs/SERVER.md, "One loop per process").
    public var fsyncInline = false
    /// The anti-entropy scanner runs (docs/REPAIR.md).
    public var repair = true
    public var repairKeysPerSecond = 1_000
    public var repairMegabytesPerSecond = 4
    public var repairPassIntervalSeconds = 60
    /// The clock assumption of expiry (docs/DATA.md).
    public var clockSkewBoundMilliseconds = 50
    /// FLUSHALL/FLUSHDB run; refused otherwise (docs/SERVER.md, "Keyspace").
    public var flushall = false
    /// Refuse to serve clients or the admin port on a non-loopback address without credentials.
    public var protectedMode = true
    /// The admin port's bearer token, given inline.
    public var adminToken: String?
    /// A file holding the admin port's bearer token (its first line, trimmed).
    public var adminTokenFile: String?
    /// `port = 0`: no plain client listener (only the TLS one).
    public var plainPortDisabled = false
    /// TLS for clients (docs/SECURITY.md).
    public var tlsPort: Int?
    public var tlsCertFile: String?
    public var tlsKeyFile: String?
    public var tlsCACertFile: String?
    public var tlsAuthClients = TLSAuthClients.yes
    /// Mutual TLS between peers: this node's certificate and key, and the cluster CA.
    public var tlsPeerCertFile: String?
    public var tlsPeerKeyFile: String?
    public var tlsPeerCACertFile: String?

    /// Whether the TLS client port asks for client certificates (Redis's `tls-auth-clients`).
    public enum TLSAuthClients: String, Sendable, Hashable {
        /// No client certificate is asked for.
        case no
        /// A client certificate is asked for; if one is sent it must chain to `tls_ca_cert_file`.
        case optional
        /// A client certificate chaining to `tls_ca_cert_file` is required.
        case yes
    }

    public init(secret: [UInt8]) { self.secret = secret }

    /// Peer mutual TLS is configured.
    public var peerTLS: Bool { tlsPeerCertFile != nil }

    /// Largest `max_value_bytes`: a key's record holds its value, an accepted value and the old
    /// values the last instance returned (about 4 × the value), and must fit one storage record
    /// (`storageRecordBytesMax`) and one peer frame.
    public static let maxValueBytesLimit = 16 << 20

    /// The storage engine's record bound for values up to `maxValueBytes`.
    public static func storageRecordBytesMax(maxValueBytes: Int) -> Int {
        max(64 << 20, 4 * maxValueBytes + (4 << 20))
    }

    /// The peer frame bound for values up to `maxValueBytes`: the largest message carries one op
    /// with its value and the value it returns (GETSET); merged ops stop at `mergeBytesMax`
    /// (1 MiB). 4 MiB unless values are larger.
    public static func peerFrameBytesMax(maxValueBytes: Int) -> Int {
        max(4 << 20, 2 * maxValueBytes + (1 << 20))
    }

    static let keys: Set<String> = [
        "secret", "password", "aclfile", "test_faults", "max_value_bytes", "tick_ms", "request_timeout_ms",
        "forward_timeout_ms", "keys_loaded_max", "max_clients", "stream_max_entries",
        "client_output_buffer_limit", "maxmemory_clients", "maxmemory", "fsync", "repair",
        "repair_keys_per_second",
        "repair_mb_per_second", "repair_pass_interval_s", "clock_skew_bound_ms", "flushall", "protected_mode",
        "admin_token",
        "admin_token_file", "port", "tls_port", "tls_cert_file", "tls_key_file", "tls_ca_cert_file",
        "tls_auth_clients", "tls_peer_cert_file", "tls_peer_key_file", "tls_peer_ca_cert_file",
    ]

    /// Parses the `[server]` table of `text`.
    /// - Throws: `ServerConfigError` naming the key that is wrong.
    public init(toml text: String) throws(ServerConfigError) {
        let root: TOMLTable
        do {
            root = try TOMLTable(string: text)
        } catch {
            throw ServerConfigError("not valid TOML: \(error)")
        }
        if let other = root.keys.sorted().first(where: { $0 != "server" }) {
            throw ServerConfigError("unknown top-level key \"\(other)\" (settings go under [server])")
        }
        guard let t = root["server"]?.table else { throw ServerConfigError("no [server] table") }
        if let k = t.keys.sorted().first(where: { !Self.keys.contains($0) }) {
            throw ServerConfigError("[server] has an unknown key \"\(k)\"")
        }
        guard let hex = t["secret"]?.string else {
            throw ServerConfigError("[server] needs secret = \"<hex>\" (the cluster secret)")
        }
        guard let secret = Self.parseHex(hex), secret.count >= 16 else {
            throw ServerConfigError("secret must be at least 32 hexadecimal digits")
        }
        self.init(secret: secret)
        if let v = t["password"] {
            guard let s = v.string else { throw ServerConfigError("password must be a string") }
            password = s.isEmpty ? nil : s
        }
        if let v = t["aclfile"] {
            guard let s = v.string, !s.isEmpty else { throw ServerConfigError("aclfile must be a file path") }
            aclFile = s
        }
        if let v = t["test_faults"] {
            guard let b = v.bool else { throw ServerConfigError("test_faults must be true or false") }
            testFaults = b
        }
        func int(_ key: String, _ range: ClosedRange<Int>) throws(ServerConfigError) -> Int? {
            guard let v = t[key] else { return nil }
            guard let i = v.int, range.contains(i) else {
                throw ServerConfigError(
                    "\(key) must be an integer in \(range.lowerBound)...\(range.upperBound)")
            }
            return i
        }
        maxValueBytes = try int("max_value_bytes", 1...Self.maxValueBytesLimit) ?? maxValueBytes
        tickMilliseconds = try int("tick_ms", 1...1000) ?? tickMilliseconds
        requestTimeoutMilliseconds = try int("request_timeout_ms", 10...600_000) ?? requestTimeoutMilliseconds
        forwardTimeoutMilliseconds = try int("forward_timeout_ms", 5...60_000) ?? forwardTimeoutMilliseconds
        keysLoadedMax = try int("keys_loaded_max", 16...(1 << 40)) ?? keysLoadedMax
        maxClients = try int("max_clients", 1...1_000_000) ?? maxClients
        streamMaxEntries = try int("stream_max_entries", 1...10_000_000) ?? streamMaxEntries
        clientOutputBufferLimit =
            try int("client_output_buffer_limit", (1 << 20)...(1 << 40)) ?? clientOutputBufferLimit
        maxMemoryClients = try int("maxmemory_clients", (16 << 20)...(1 << 44)) ?? maxMemoryClients
        if let v = t["maxmemory"] {
            let bytes =
                v.int.flatMap { $0 >= 0 ? UInt64($0) : nil }
                ?? v.string.flatMap { MemoryLimit.parseBytes(Array($0.utf8)) }
            guard let bytes else {
                throw ServerConfigError(
                    "maxmemory must be a number of bytes, or a string with Redis's units (\"4gb\", \"512mb\"); 0: no limit"
                )
            }
            maxmemoryBytes = bytes
        }
        if let v = t["repair"] {
            guard let b = v.bool else { throw ServerConfigError("repair must be true or false") }
            repair = b
        }
        repairKeysPerSecond = try int("repair_keys_per_second", 1...10_000_000) ?? repairKeysPerSecond
        repairMegabytesPerSecond = try int("repair_mb_per_second", 1...100_000) ?? repairMegabytesPerSecond
        repairPassIntervalSeconds = try int("repair_pass_interval_s", 0...86_400) ?? repairPassIntervalSeconds
        clockSkewBoundMilliseconds =
            try int("clock_skew_bound_ms", 0...60_000) ?? clockSkewBoundMilliseconds
        if let v = t["flushall"] {
            guard let b = v.bool else { throw ServerConfigError("flushall must be true or false") }
            flushall = b
        }
        if let v = t["fsync"] {
            switch v.string {
            case "thread": fsyncInline = false
            case "inline": fsyncInline = true
            default: throw ServerConfigError("fsync must be \"thread\" or \"inline\"")
            }
        }
        try parseSecurity(t)
    }

    /// The security keys (docs/SECURITY.md).
    mutating func parseSecurity(_ t: TOMLTable) throws(ServerConfigError) {
        func string(_ key: String) throws(ServerConfigError) -> String? {
            guard let v = t[key] else { return nil }
            guard let s = v.string else { throw ServerConfigError("\(key) must be a string") }
            return s.isEmpty ? nil : s
        }
        if let v = t["protected_mode"] {
            guard let b = v.bool else { throw ServerConfigError("protected_mode must be true or false") }
            protectedMode = b
        }
        adminToken = try string("admin_token")
        adminTokenFile = try string("admin_token_file")
        if adminToken != nil && adminTokenFile != nil {
            throw ServerConfigError("set admin_token or admin_token_file, not both")
        }
        if let v = t["port"] {
            guard v.int == 0 else {
                throw ServerConfigError(
                    "port may only be 0 (no plain client port); the client port is the cluster map's")
            }
            plainPortDisabled = true
        }
        if let v = t["tls_port"] {
            guard let p = v.int, (1...65535).contains(p) else {
                throw ServerConfigError("tls_port must be an integer in 1...65535")
            }
            tlsPort = p
        }
        tlsCertFile = try string("tls_cert_file")
        tlsKeyFile = try string("tls_key_file")
        tlsCACertFile = try string("tls_ca_cert_file")
        if let s = try string("tls_auth_clients") {
            guard let a = TLSAuthClients(rawValue: s) else {
                throw ServerConfigError("tls_auth_clients must be \"no\", \"optional\" or \"yes\"")
            }
            tlsAuthClients = a
        }
        if tlsPort != nil {
            guard tlsCertFile != nil, tlsKeyFile != nil else {
                throw ServerConfigError("tls_port needs tls_cert_file and tls_key_file")
            }
            if tlsAuthClients != .no && tlsCACertFile == nil {
                throw ServerConfigError(
                    "tls_auth_clients = \"\(tlsAuthClients.rawValue)\" needs tls_ca_cert_file (the CA client "
                        + "certificates chain to); or set tls_auth_clients = \"no\"")
            }
        }
        if plainPortDisabled && tlsPort == nil {
            throw ServerConfigError("port = 0 turns the plain client port off; then tls_port is needed")
        }
        tlsPeerCertFile = try string("tls_peer_cert_file")
        tlsPeerKeyFile = try string("tls_peer_key_file")
        tlsPeerCACertFile = try string("tls_peer_ca_cert_file")
        let peer = [tlsPeerCertFile, tlsPeerKeyFile, tlsPeerCACertFile].filter { $0 != nil }.count
        if peer != 0 && peer != 3 {
            throw ServerConfigError(
                "peer TLS needs all three of tls_peer_cert_file, tls_peer_key_file, tls_peer_ca_cert_file")
        }
    }

    /// Relative file paths made relative to `directory` (the directory of server.toml).
    mutating func resolvePaths(relativeTo directory: String) {
        func fix(_ p: inout String?) {
            guard let path = p, !path.hasPrefix("/") else { return }
            p = directory + "/" + path
        }
        fix(&aclFile)
        fix(&adminTokenFile)
        fix(&tlsCertFile)
        fix(&tlsKeyFile)
        fix(&tlsCACertFile)
        fix(&tlsPeerCertFile)
        fix(&tlsPeerKeyFile)
        fix(&tlsPeerCACertFile)
    }

    /// The admin token: `admin_token`, or the first line of `admin_token_file`; nil if neither.
    public func resolvedAdminToken() throws(ServerConfigError) -> String? {
        if let adminToken { return adminToken }
        guard let adminTokenFile else { return nil }
        let text: String
        do {
            text = try String(contentsOfFile: adminTokenFile, encoding: .utf8)
        } catch {
            throw ServerConfigError(
                "cannot read admin_token_file \(adminTokenFile): \(error.localizedDescription)")
        }
        let token = text.split(separator: "\n").first.map { $0.trimmingCharacters(in: .whitespaces) } ?? ""
        guard !token.isEmpty else { throw ServerConfigError("admin_token_file \(adminTokenFile) is empty") }
        return token
    }

    /// Whether `host` is a loopback address (127.0.0.0/8, ::1, localhost): only this machine
    /// can reach it. `0.0.0.0` and `::` (every interface) are not.
    public static func isLoopback(_ host: String) -> Bool {
        let h = host.hasPrefix("[") && host.hasSuffix("]") ? String(host.dropFirst().dropLast()) : host
        return h == "localhost" || h == "::1" || h.hasPrefix("127.")
    }

    /// Why this node must not start on these addresses (protected mode, docs/SECURITY.md), as
    /// sentences; empty when it may.
    /// - Parameters:
    ///   - clientHost: where clients connect (the map's client address host; the TLS port too).
    ///   - adminHost: where the admin port listens.
    ///   - hasAdminToken: `admin_token` or `admin_token_file` is set.
    public func exposureProblems(clientHost: String, adminHost: String, hasAdminToken: Bool) -> [String] {
        guard protectedMode else { return [] }
        var out: [String] = []
        if !Self.isLoopback(clientHost) && password == nil && aclFile == nil {
            out.append(
                "protected mode: the client address \(clientHost) is not loopback and no client "
                    + "authentication is configured, so anyone who can reach it could read and change "
                    + "every key. Set password = \"…\" or aclfile = \"…\" in server.toml, listen on "
                    + "127.0.0.1, or (behind a firewall you trust) set protected_mode = false")
        }
        if !Self.isLoopback(adminHost) && !hasAdminToken {
            out.append(
                "protected mode: the admin address \(adminHost) is not loopback and no admin token is "
                    + "configured, so anyone who can reach it could read the node's status and start "
                    + "repairs. Set admin_token = \"…\" or admin_token_file = \"path\" in server.toml, "
                    + "listen on 127.0.0.1, or set protected_mode = false")
        }
        return out
    }

    /// Reads `path`.
    public init(contentsOfFile path: String) throws(ServerConfigError) {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw ServerConfigError("cannot read \(path): \(error.localizedDescription)")
        }
        do {
            try self.init(toml: text)
        } catch {
            throw ServerConfigError("\(path): \(error.message)")
        }
        resolvePaths(relativeTo: URL(fileURLWithPath: path).deletingLastPathComponent().path)
    }

    /// The file form (what `tern dev` writes).
    public func toml() -> String {
        var out = "# Tern node settings (see docs/SERVER.md). Keep this file private: it holds the\n"
        out += "# cluster secret.\n[server]\n"
        out += "secret = \"\(secret.map { String(format: "%02x", $0) }.joined())\"\n"
        if let password {
            let escaped = password.replacingOccurrences(of: "\\", with: "\\\\")
                .replacingOccurrences(of: "\"", with: "\\\"")
            out += "password = \"\(escaped)\"\n"
        }
        out += "test_faults = \(testFaults)\n"
        out += "max_value_bytes = \(maxValueBytes)\n"
        out += "tick_ms = \(tickMilliseconds)\n"
        out += "request_timeout_ms = \(requestTimeoutMilliseconds)\n"
        out += "forward_timeout_ms = \(forwardTimeoutMilliseconds)\n"
        out += "keys_loaded_max = \(keysLoadedMax)\n"
        out += "max_clients = \(maxClients)\n"
        out += "stream_max_entries = \(streamMaxEntries)\n"
        out += "client_output_buffer_limit = \(clientOutputBufferLimit)\n"
        out += "maxmemory_clients = \(maxMemoryClients)\n"
        // Left out when 0 (no limit), so an older tern reads the file; TOML's integers stop at
        // Int64.max, a larger limit is written as a string.
        if maxmemoryBytes > UInt64(Int64.max) {
            out += "maxmemory = \"\(maxmemoryBytes)\"\n"
        } else if maxmemoryBytes != 0 {
            out += "maxmemory = \(maxmemoryBytes)\n"
        }
        if fsyncInline { out += "fsync = \"inline\"\n" }  // the default is left out
        out += "repair = \(repair)\n"
        out += "repair_keys_per_second = \(repairKeysPerSecond)\n"
        out += "repair_mb_per_second = \(repairMegabytesPerSecond)\n"
        out += "repair_pass_interval_s = \(repairPassIntervalSeconds)\n"
        out += "clock_skew_bound_ms = \(clockSkewBoundMilliseconds)\n"
        out += "flushall = \(flushall)\n"
        func quoted(_ s: String) -> String {
            "\"" + s.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
                + "\""
        }
        if !protectedMode { out += "protected_mode = false\n" }
        for (key, value) in [
            ("aclfile", aclFile), ("admin_token", adminToken), ("admin_token_file", adminTokenFile),
            ("tls_cert_file", tlsCertFile), ("tls_key_file", tlsKeyFile), ("tls_ca_cert_file", tlsCACertFile),
            ("tls_peer_cert_file", tlsPeerCertFile), ("tls_peer_key_file", tlsPeerKeyFile),
            ("tls_peer_ca_cert_file", tlsPeerCACertFile),
        ] {
            if let value { out += "\(key) = \(quoted(value))\n" }
        }
        if plainPortDisabled { out += "port = 0\n" }
        if let tlsPort {
            out += "tls_port = \(tlsPort)\n"
            out += "tls_auth_clients = \"\(tlsAuthClients.rawValue)\"\n"
        }
        return out
    }

    static func parseHex(_ s: String) -> [UInt8]? {
        let chars = Array(s.utf8)
        guard chars.count % 2 == 0 else { return nil }
        var out: [UInt8] = []
        var i = 0
        while i < chars.count {
            guard let hi = hexValue(chars[i]), let lo = hexValue(chars[i + 1]) else { return nil }
            out.append(hi << 4 | lo)
            i += 2
        }
        return out
    }

    static func hexValue(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): c - UInt8(ascii: "A") + 10
        default: nil
        }
    }

    /// A fresh random secret (32 bytes).
    public static func randomSecret() -> [UInt8] {
        var g = SystemRandomNumberGenerator()
        return (0..<32).map { _ in UInt8.random(in: 0...255, using: &g) }
    }
}

/// Why `server.toml` was refused.
public struct ServerConfigError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { "invalid server config: \(message)" }
}
