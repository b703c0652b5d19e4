import NIOConcurrencyHelpers
import NIOCore
import TernRESP

/// Redis's `maxmemory` with the `noeviction` policy, per node: while the node's used memory is
/// above the limit, the commands that may grow memory (Redis's `denyoom` flag) are refused with
/// Redis's `-OOM` error; reads, deletes and the other commands go on. Tern never evicts
/// acknowledged data, so `noeviction` is the only policy (docs/SERVER.md, "maxmemory").
///
/// Used memory is what INFO's `used_memory` shows: the process's resident set (`/proc/self/statm`),
/// sampled every `samplePeriod` by the shell and when the limit is set, never read on the command
/// path. The limit and the last sample are read by every connection's loop.
public final class MemoryLimit: Sendable {
    struct State {
        var limitBytes: UInt64
        var usedBytes: UInt64 = 0
        var refusals: UInt64 = 0
    }
    private let state: NIOLockedValueBox<State>
    /// The node's used memory now, in bytes (injected so tests fix it).
    let measure: @Sendable () -> UInt64
    private let sampler = NIOLockedValueBox<RepeatedTask?>(nil)

    /// How often `startSampling` refreshes the used-memory figure: a command can pass the limit by
    /// what the node grows in this time.
    public static let samplePeriod = TimeAmount.milliseconds(100)

    /// A limit of `limitBytes` (0: none), measured now when there is one (a processor made for
    /// one command's parse, as ZRANGESTORE's, reads no file).
    public init(limitBytes: UInt64 = 0, measure: @escaping @Sendable () -> UInt64 = MemoryLimit.residentBytes)
    {
        self.measure = measure
        state = NIOLockedValueBox(State(limitBytes: limitBytes, usedBytes: limitBytes == 0 ? 0 : measure()))
    }

    /// INFO memory's `used_memory`: the process's resident bytes.
    public static func residentBytes() -> UInt64 { UInt64(max(0, FrontendRegistry.usage().rss)) }

    /// The limit in bytes; 0: no limit (Redis's default).
    public var limitBytes: UInt64 { state.withLockedValue { $0.limitBytes } }

    /// The used memory the last sample found.
    public var usedBytes: UInt64 { state.withLockedValue { $0.usedBytes } }

    /// Commands refused with `-OOM` since start (`/metrics`' `tern_oom_rejected_total`).
    public var refusals: UInt64 { state.withLockedValue { $0.refusals } }

    func noteRefusal() { state.withLockedValue { $0.refusals += 1 } }

    /// Sets the limit (CONFIG SET maxmemory) and samples, so the next command sees both.
    public func setLimit(_ bytes: UInt64) {
        let used = measure()
        state.withLockedValue {
            $0.limitBytes = bytes
            $0.usedBytes = used
        }
    }

    /// Takes a sample of the used memory.
    public func sample() {
        let used = measure()
        state.withLockedValue { $0.usedBytes = used }
    }

    /// Whether a limit is set and the used memory is above it (Redis's `performEvictions` failing
    /// under noeviction).
    public var exceeded: Bool {
        state.withLockedValue { $0.limitBytes != 0 && $0.usedBytes > $0.limitBytes }
    }

    /// Samples every `samplePeriod` on `loop` until `stopSampling`.
    public func startSampling(on loop: any EventLoop) {
        let task = loop.scheduleRepeatedTask(initialDelay: Self.samplePeriod, delay: Self.samplePeriod) {
            [self] _ in sample()
        }
        sampler.withLockedValue {
            $0?.cancel()
            $0 = task
        }
    }

    public func stopSampling() { sampler.withLockedValue { $0?.cancel() } }

    /// Redis's `memtoull` (CONFIG SET maxmemory, server.toml's `maxmemory`): digits, then an
    /// optional unit, case-insensitive: `b` (1), `k` (1000), `kb` (1024), `m`, `mb`, `g`, `gb`.
    /// No sign, space, fraction or other unit. As Redis 7.0, digits past `UInt64.max` read as
    /// `UInt64.max` and no digits before a unit read as 0; unlike it, a product past `UInt64.max`
    /// is refused (7.0 wraps it, so `17179869184gb` would turn the limit off).
    public static func parseBytes(_ text: [UInt8]) -> UInt64? {
        let digits = text.prefix { $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }
        let unit = String(decoding: text[digits.count...], as: UTF8.self).lowercased()
        let multiplier: UInt64
        switch unit {
        case "", "b": multiplier = 1
        case "k": multiplier = 1000
        case "kb": multiplier = 1024
        case "m": multiplier = 1_000_000
        case "mb": multiplier = 1 << 20
        case "g": multiplier = 1_000_000_000
        case "gb": multiplier = 1 << 30
        default: return nil
        }
        // Redis copies the digits into a 128-byte buffer first.
        guard digits.count < 128 else { return nil }
        var value: UInt64 = 0
        for d in digits {
            let (times, o1) = value.multipliedReportingOverflow(by: 10)
            let (plus, o2) = times.addingReportingOverflow(UInt64(d - UInt8(ascii: "0")))
            if o1 || o2 {
                value = .max  // strtoull saturates
                break
            }
            value = plus
        }
        let (bytes, overflow) = value.multipliedReportingOverflow(by: multiplier)
        return overflow ? nil : bytes
    }
}

extension CommandSpec {
    /// Redis 7.0.15's commands flagged `denyoom` (`COMMAND INFO` of redis-server 7.0.15): the ones
    /// refused while used memory is above `maxmemory`. Redis's other write commands (DEL, UNLINK,
    /// the pops, EXPIRE, PERSIST, SREM, ZREM, XDEL, XTRIM, XACK, FLUSHALL, RENAME, SMOVE, …) may
    /// run: they free memory or hold it level.
    static let redisDenyOOM: Set<String> = [
        "append", "bitfield", "bitop", "blmove", "brpoplpush", "copy", "decr", "decrby", "geoadd",
        "georadius", "georadiusbymember", "geosearchstore", "getset", "hincrby", "hincrbyfloat", "hmset",
        "hset", "hsetnx", "incr", "incrby", "incrbyfloat", "linsert", "lmove", "lpush", "lpushx", "lset",
        "mset", "msetnx", "pfadd", "pfdebug", "pfmerge", "psetex", "restore", "restore-asking", "rpoplpush",
        "rpush", "rpushx", "sadd", "sdiffstore", "set", "setbit", "setex", "setnx", "setrange",
        "sinterstore", "sort", "sunionstore", "xadd", "xsetid", "zadd", "zdiffstore", "zincrby",
        "zinterstore", "zrangestore", "zunionstore",
        // Tern's: XACKADD adds entries.
        "xackadd",
    ]

    /// Redis 7.0.15's subcommands flagged `denyoom`, for containers Tern's table keeps whole
    /// (XGROUP).
    static let redisDenyOOMSubcommands: Set<String> = ["xgroup|create", "xgroup|createconsumer"]

    /// The flags of write command `name`: `write`, and `denyoom` as Redis 7.0 has it.
    static func writeFlags(_ name: String) -> [String] {
        redisDenyOOM.contains(name) ? ["write", "denyoom"] : ["write"]
    }
}

extension CommandProcessor {
    /// Redis's reply to a command refused for memory.
    static let oom = RESPValue.error("OOM command not allowed when used memory > 'maxmemory'.")

    /// Whether `args` may grow memory (Redis's `denyoom`), nil when the command is unknown or its
    /// arity is wrong (those errors come first, as in Redis's `processCommand`).
    func usesMemory(_ args: [[UInt8]]) -> Bool? {
        guard let spec = commandTable.spec(for: args), spec.accepts(args.count) else { return nil }
        // A container whose subcommand is missing or unknown: its own error comes first.
        if !spec.subcommands.isEmpty { return nil }
        if spec.flags.contains("denyoom") { return true }
        guard args.count >= 2 else { return false }
        let sub = spec.name + "|" + String(decoding: args[1], as: UTF8.self).lowercased()
        return CommandSpec.redisDenyOOMSubcommands.contains(sub)
    }

    /// Redis 7.0's maxmemory rule in `processCommand`: while used memory is above `maxmemory`, a
    /// command is refused with `-OOM` when it may grow memory (`denyoom`; EXEC when one queued
    /// command is), or when it would be queued in a transaction (queueing takes memory; EXEC,
    /// DISCARD, QUIT and RESET always go on). A refusal inside MULTI makes EXEC answer
    /// EXECABORT; EXEC refused discards the transaction. Nil: the command goes on.
    func memoryRefusal(_ name: String, _ args: [[UInt8]], _ session: inout Session) -> RESPValue? {
        guard memory.exceeded else { return nil }
        let inside = session.transaction != nil
        let refuse: Bool
        switch name {
        case "exec":
            refuse = inside && (session.transaction ?? []).contains { usesMemory($0) == true }
        case "discard", "quit", "reset":
            refuse = false
        default:
            guard let uses = usesMemory(args) else { return nil }
            refuse = uses || inside
        }
        guard refuse else { return nil }
        memory.noteRefusal()
        if name == "exec" {
            session.transaction = nil
            session.transactionAborted = false
            session.watch = nil
            return .error(
                "EXECABORT Transaction discarded because of: OOM command not allowed when used memory > 'maxmemory'."
            )
        }
        if inside { session.transactionAborted = true }
        return Self.oom
    }

    /// CONFIG SET's `maxmemory` (bytes with Redis's units) and `maxmemory-policy` (noeviction
    /// only): the new limit (nil: nothing to change), or why the value is refused. Nil for the
    /// other parameters.
    static func memoryConfig(_ name: String, _ value: [UInt8]) -> Result<UInt64?, MemoryConfigError>? {
        switch name {
        case "maxmemory":
            guard let v = MemoryLimit.parseBytes(value) else {
                return .failure(MemoryConfigError("argument must be a memory value"))
            }
            return .success(v)
        case "maxmemory-policy":
            let policy = String(decoding: value, as: UTF8.self).lowercased()
            if policy == "noeviction" { return .success(nil) }
            guard redisPolicies.contains(policy) else {
                return .failure(
                    MemoryConfigError(
                        "argument(s) must be one of the following: " + redisPolicies.joined(separator: ", ")))
            }
            return .failure(
                MemoryConfigError(
                    "Tern never evicts acknowledged data: noeviction is the only maxmemory-policy (docs/SERVER.md)"
                ))
        default:
            return nil
        }
    }

    /// Redis 7.0's policies, in its error's order.
    static let redisPolicies = [
        "volatile-lru", "volatile-lfu", "volatile-random", "volatile-ttl", "allkeys-lru", "allkeys-lfu",
        "allkeys-random", "noeviction",
    ]

    /// INFO memory's `maxmemory_human` (the largest limits show as Int64.max's).
    var maxmemoryHuman: String { Self.human(Int(clamping: memory.limitBytes)) }
}

/// Why CONFIG SET refused a memory parameter's value (the text after Redis's "CONFIG SET failed … - ").
struct MemoryConfigError: Error {
    var text: String
    init(_ text: String) { self.text = text }
}
