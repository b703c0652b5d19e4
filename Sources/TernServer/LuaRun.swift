import NIOCore
import TernConsensus
import TernRESP

/// One run of a Lua script (EVAL): a fresh Lua state with Redis's `redis` table, `KEYS` and
/// `ARGV`, globals protected as Redis protects them, and an instruction hook that stops the script
/// at its time limit. `call` answers `redis.call`/`redis.pcall` (synchronously: the caller runs
/// the commands on its local copy of the script's keys, ScriptService.swift).
final class LuaRun {
    let api: LuaAPI
    let call: ([[UInt8]]) -> RESPValue
    let deadline: NIODeadline
    let kill: ScriptKillSwitch
    var timedOut = false
    var killed = false

    private init(
        api: LuaAPI, deadline: NIODeadline, kill: ScriptKillSwitch, call: @escaping ([[UInt8]]) -> RESPValue
    ) {
        self.api = api
        self.deadline = deadline
        self.kill = kill
        self.call = call
    }

    /// Runs `body` and converts what it returns to a reply, Redis's rules (RESP2); `stopped`: the
    /// time limit or SCRIPT KILL ended it.
    static func run(
        api: LuaAPI, body: [UInt8], sha: String, keys: [[UInt8]], argv: [[UInt8]], stopAfterMs: Int,
        kill: ScriptKillSwitch, call: @escaping ([[UInt8]]) -> RESPValue
    ) -> (reply: RESPValue, stopped: Bool) {
        let run = LuaRun(
            api: api, deadline: .now() + .milliseconds(Int64(stopAfterMs)), kill: kill, call: call)
        guard let L = api.newstate() else {
            return (.error("ERR cannot create a Lua state (out of memory)"), false)
        }
        defer { api.close(L) }
        let reply = withExtendedLifetime(run) { run.execute(L, body: body, sha: sha, keys: keys, argv: argv) }
        return (reply, run.timedOut || run.killed)
    }

    private func execute(_ L: LuaAPI.State, body: [UInt8], sha: String, keys: [[UInt8]], argv: [[UInt8]])
        -> RESPValue
    {
        for open in [api.openBase, api.openTable, api.openString, api.openMath] {
            api.pushcclosure(L, open, 0)
            api.push(L, "")
            api.call(L, 1, 0)
        }
        api.pushlightuserdata(L, Unmanaged.passUnretained(self).toOpaque())
        api.setfield(L, LuaAPI.registryIndex, "tern_run")
        api.pushcclosure(L, luaTernCall, 0)
        api.setGlobal(L, "__tern_call")
        api.pushcclosure(L, luaTernSha1, 0)
        api.setGlobal(L, "__tern_sha1hex")
        for (name, items) in [("KEYS", keys), ("ARGV", argv)] {
            api.createtable(L, Int32(clamping: items.count), 0)
            for (i, item) in items.enumerated() {
                api.push(L, item)
                api.rawseti(L, -2, Int32(clamping: i + 1))
            }
            api.setGlobal(L, name)
        }
        guard load(L, Self.prelude, name: "@tern_prelude"), api.pcall(L, 0, 0, 0) == 0 else {
            let why = api.bytes(L, -1).map { String(decoding: $0, as: UTF8.self) } ?? "?"
            return .error("ERR Tern's Lua prelude failed: \(why)")
        }
        guard load(L, body, name: "@user_script") else {
            let why = api.bytes(L, -1).map { String(decoding: $0, as: UTF8.self) } ?? "?"
            return .error("ERR Error compiling script (new function): \(why)")
        }
        _ = api.sethook(L, luaTernHook, LuaAPI.maskCount, 10_000)
        let status = api.pcall(L, 0, 1, 0)
        _ = api.sethook(L, nil, 0, 0)
        if killed {
            return .error("ERR Script killed by user with SCRIPT KILL... script: \(sha)")
        }
        if timedOut {
            return .error(
                "ERR Tern stopped the script: it ran past Tern's script time cap (docs/SCRIPTING.md) script: \(sha)"
            )
        }
        if status != 0 { return errorReply(L, sha: sha) }
        api.settop(L, 1)
        return reply(L, depth: 0)
    }

    private func load(_ L: LuaAPI.State, _ code: [UInt8], name: String) -> Bool {
        let text = code.isEmpty ? [UInt8(ascii: " ")] : code
        return text.withUnsafeBytes { raw in
            api.loadbuffer(L, raw.baseAddress?.assumingMemoryBound(to: CChar.self), raw.count, name) == 0
        }
    }

    /// The reply for the error value on top of the stack: a `{err=…}` table's text as it is (a
    /// `redis.call` that failed), a message with Redis's ` script: sha` suffix otherwise.
    private func errorReply(_ L: LuaAPI.State, sha: String) -> RESPValue {
        if api.type(L, -1) == LuaAPI.tTable {
            api.getfield(L, -1, "err")
            if let e = api.bytes(L, -1) {
                let text = String(decoding: e, as: UTF8.self)
                return .error(text.contains(" script: ") ? text : "\(text) script: \(sha)")
            }
            api.pop(L, 1)
        }
        let text = api.bytes(L, -1).map { String(decoding: $0, as: UTF8.self) } ?? "unknown error"
        return .error("ERR \(text) script: \(sha)")
    }

    /// The Lua value at the top of the stack as a reply (Redis 7.0's `luaReplyToRedisReply`).
    private func reply(_ L: LuaAPI.State, depth: Int) -> RESPValue {
        switch api.type(L, -1) {
        case LuaAPI.tString:
            return .bulkString(api.bytes(L, -1) ?? [])
        case LuaAPI.tBoolean:
            return api.toboolean(L, -1) != 0 ? .integer(1) : .bulkString(nil)
        case LuaAPI.tNumber:
            let d = api.tonumber(L, -1)
            return .integer(d.isFinite ? Int64(clamping: Int(exactly: d.rounded(.towardZero)) ?? 0) : 0)
        case LuaAPI.tTable:
            guard depth < 64 else { return .error("ERR reached lua stack limit") }
            api.getfield(L, -1, "err")
            if let e = api.bytes(L, -1) {
                api.pop(L, 1)
                return .error(String(decoding: e, as: UTF8.self))
            }
            api.pop(L, 1)
            api.getfield(L, -1, "ok")
            if let s = api.bytes(L, -1) {
                api.pop(L, 1)
                return .simpleString(String(decoding: s, as: UTF8.self))
            }
            api.pop(L, 1)
            var items: [RESPValue] = []
            var i: Int32 = 1
            while true {
                api.rawgeti(L, -1, i)
                if api.type(L, -1) == LuaAPI.tNil {
                    api.pop(L, 1)
                    break
                }
                items.append(reply(L, depth: depth + 1))
                api.pop(L, 1)
                i += 1
            }
            return .array(items)
        default:
            return .bulkString(nil)
        }
    }

    /// Pushes a command's reply as Lua sees it (Redis 7.0's RESP2 `redisProtocolToLuaType`).
    func push(_ L: LuaAPI.State, _ r: RESPValue, depth: Int = 0) {
        _ = api.checkstack(L, 4)
        switch r {
        case .integer(let i): api.pushnumber(L, Double(i))
        case .boolean(let b): api.pushnumber(L, b ? 1 : 0)
        case .bulkString(let b?): api.push(L, b)
        case .verbatim(let s): api.push(L, s)
        case .double(let d): api.push(L, DataModel.formatScore(d))
        case .bulkString(nil), .array(nil), .null: api.pushboolean(L, 0)
        case .simpleString(let s):
            api.createtable(L, 0, 1)
            api.push(L, s)
            api.setfield(L, -2, "ok")
        case .error(let e):
            api.createtable(L, 0, 1)
            api.push(L, e)
            api.setfield(L, -2, "err")
        case .array(let items?), .set(let items), .map(let items), .push(let items):
            api.createtable(L, Int32(clamping: items.count), 0)
            for (i, item) in items.enumerated() {
                push(L, item, depth: depth + 1)
                api.rawseti(L, -2, Int32(clamping: i + 1))
            }
        }
    }

    /// `__tern_call(...)`: the command's reply, or an `{err=…}` table (the prelude's `redis.call`
    /// raises it, `redis.pcall` returns it).
    fileprivate func redisCall(_ L: LuaAPI.State) -> Int32 {
        let n = api.gettop(L)
        guard n >= 1 else {
            push(L, .error("ERR Please specify at least one argument for this redis lib call"))
            return 1
        }
        var args: [[UInt8]] = []
        for i in 1...n {
            guard let b = api.bytes(L, i) else {
                push(L, .error("ERR Lua redis lib command arguments must be strings or integers"))
                return 1
            }
            args.append(b)
        }
        push(L, call(args))
        return 1
    }

    static func current(_ L: LuaAPI.State, _ api: LuaAPI) -> LuaRun? {
        api.getfield(L, LuaAPI.registryIndex, "tern_run")
        let p = api.touserdata(L, -1)
        api.pop(L, 1)
        return p.map { Unmanaged<LuaRun>.fromOpaque($0).takeUnretainedValue() }
    }

    /// Redis's `redis` table and its global protection, in Lua.
    static let prelude = Array(
        """
        local call = __tern_call
        local sha1hex = __tern_sha1hex
        __tern_call = nil
        __tern_sha1hex = nil
        loadfile = nil
        dofile = nil
        redis = {}
        redis.call = function(...)
          local r = call(...)
          if type(r) == 'table' and r.err ~= nil then error(r, 0) end
          return r
        end
        redis.pcall = function(...) return call(...) end
        redis.error_reply = function(e)
          if type(e) ~= 'string' then error('wrong number or type of arguments', 2) end
          return {err = e}
        end
        redis.status_reply = function(s)
          if type(s) ~= 'string' then error('wrong number or type of arguments', 2) end
          return {ok = s}
        end
        redis.sha1hex = sha1hex
        redis.log = function(level, ...) end
        redis.LOG_DEBUG = 0
        redis.LOG_VERBOSE = 1
        redis.LOG_NOTICE = 2
        redis.LOG_WARNING = 3
        redis.REPL_NONE = 0
        redis.REPL_AOF = 1
        redis.REPL_SLAVE = 2
        redis.REPL_REPLICA = 2
        redis.REPL_ALL = 3
        redis.set_repl = function(flags) end
        redis.replicate_commands = function() return true end
        redis.setresp = function(v)
          if v ~= 2 then error({err = 'ERR Tern scripts speak RESP2 (docs/SCRIPTING.md)'}, 0) end
        end
        setmetatable(_G, {
          __index = function(t, k)
            error("Script attempted to access nonexistent global variable '" .. tostring(k) .. "'", 2)
          end,
          __newindex = function(t, k, v)
            error("Attempt to modify a readonly table", 2)
          end,
        })
        """.utf8)
}

private let luaTernCall: LuaAPI.CFunction = { L in
    guard let L, case .success(let api) = LuaAPI.shared, let run = LuaRun.current(L, api) else { return 0 }
    return run.redisCall(L)
}

private let luaTernSha1: LuaAPI.CFunction = { L in
    guard let L, case .success(let api) = LuaAPI.shared else { return 0 }
    guard api.gettop(L) == 1, let b = api.bytes(L, 1) else {
        api.push(L, "wrong number of arguments")
        return api.error(L)
    }
    api.push(L, ScriptCache.sha1(b))
    return 1
}

/// Every 10 000 instructions: killed (SCRIPT KILL) or past its time cap, the script stops with an
/// error. Nothing reference-counted is alive in this frame when `lua_error` jumps out of it.
private let luaTernHook: LuaAPI.Hook = { L, _ in
    guard let L, case .success(let api) = LuaAPI.shared else { return }
    let stop: Bool = {
        guard let run = LuaRun.current(L, api) else { return false }
        if run.kill.isKilled {
            run.killed = true
            return true
        }
        guard NIODeadline.now() > run.deadline else { return false }
        run.timedOut = true
        return true
    }()
    if stop {
        api.push(L, "Script stopped")
        _ = api.error(L)
    }
}
