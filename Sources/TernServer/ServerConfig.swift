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
/// client_output_buffer_limit = 67108864  # reply bytes a client may leave unread, then it is closed
/// maxmemory_clients = 1073741824         # all clients' query + reply buffers, then the growing one is closed
/// fsync = "thread"            # "thread": one fsync thread hands back per group; "inline": the loop fsyncs
/// repair = true               # the anti-entropy scanner (docs/REPAIR.md); false only in tests
/// repair_keys_per_second = 1000   # its default pace: records read per second ...
/// repair_mb_per_second = 4        # ... and megabytes of records per second
/// repair_pass_interval_s = 60     # pause between the end of a pass and the next
/// clock_skew_bound_ms = 50        # bound on any node's clock error: keys expire this early (docs/DATA.md)
/// flushall = false            # FLUSHALL/FLUSHDB allowed (they delete every key; on in tern dev)
/// ```
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
    public var clientOutputBufferLimit = 64 << 20
    public var maxMemoryClients = 1 << 30
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

    public init(secret: [UInt8]) { self.secret = secret }

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
        "forward_timeout_ms", "keys_loaded_max", "max_clients",
        "client_output_buffer_limit", "maxmemory_clients", "fsync", "repair", "repair_keys_per_second",
        "repair_mb_per_second", "repair_pass_interval_s", "clock_skew_bound_ms", "flushall",
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
        clientOutputBufferLimit =
            try int("client_output_buffer_limit", (1 << 20)...(1 << 40)) ?? clientOutputBufferLimit
        maxMemoryClients = try int("maxmemory_clients", (16 << 20)...(1 << 44)) ?? maxMemoryClients
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
        if let aclFile {
            let escaped = aclFile.replacingOccurrences(of: "\\", with: "\\\\")
                .replacingOccurrences(of: "\"", with: "\\\"")
            out += "aclfile = \"\(escaped)\"\n"
        }
        out += "test_faults = \(testFaults)\n"
        out += "max_value_bytes = \(maxValueBytes)\n"
        out += "tick_ms = \(tickMilliseconds)\n"
        out += "request_timeout_ms = \(requestTimeoutMilliseconds)\n"
        out += "forward_timeout_ms = \(forwardTimeoutMilliseconds)\n"
        out += "keys_loaded_max = \(keysLoadedMax)\n"
        out += "max_clients = \(maxClients)\n"
        out += "client_output_buffer_limit = \(clientOutputBufferLimit)\n"
        out += "maxmemory_clients = \(maxMemoryClients)\n"
        if fsyncInline { out += "fsync = \"inline\"\n" }  // the default is left out
        out += "repair = \(repair)\n"
        out += "repair_keys_per_second = \(repairKeysPerSecond)\n"
        out += "repair_mb_per_second = \(repairMegabytesPerSecond)\n"
        out += "repair_pass_interval_s = \(repairPassIntervalSeconds)\n"
        out += "clock_skew_bound_ms = \(clockSkewBoundMilliseconds)\n"
        out += "flushall = \(flushall)\n"
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
