#if canImport(Glibc)
    import Glibc
#endif

/// Lua 5.1 (the version Redis embeds), loaded at run time from Debian's `liblua5.1-0`
/// (`liblua5.1.so.0`): Tern builds without it, and EVAL answers a clear error where it is not
/// installed (docs/SCRIPTING.md). Only the C API calls scripting needs, declared here from the
/// Lua 5.1 reference manual's signatures.
struct LuaAPI: @unchecked Sendable {
    typealias State = OpaquePointer
    typealias CFunction = @convention(c) (State?) -> Int32
    typealias Hook = @convention(c) (State?, OpaquePointer?) -> Void

    // lua.h (5.1) constants.
    static let registryIndex: Int32 = -10000
    static let globalsIndex: Int32 = -10002
    static let tNil: Int32 = 0
    static let tBoolean: Int32 = 1
    static let tNumber: Int32 = 3
    static let tString: Int32 = 4
    static let tTable: Int32 = 5
    static let maskCount: Int32 = 8

    let newstate: @convention(c) () -> State?
    let close: @convention(c) (State?) -> Void
    let loadbuffer: @convention(c) (State?, UnsafePointer<CChar>?, Int, UnsafePointer<CChar>?) -> Int32
    let pcall: @convention(c) (State?, Int32, Int32, Int32) -> Int32
    let call: @convention(c) (State?, Int32, Int32) -> Void
    let gettop: @convention(c) (State?) -> Int32
    let settop: @convention(c) (State?, Int32) -> Void
    let type: @convention(c) (State?, Int32) -> Int32
    let tolstring: @convention(c) (State?, Int32, UnsafeMutablePointer<Int>?) -> UnsafePointer<CChar>?
    let tonumber: @convention(c) (State?, Int32) -> Double
    let toboolean: @convention(c) (State?, Int32) -> Int32
    let pushlstring: @convention(c) (State?, UnsafePointer<CChar>?, Int) -> Void
    let pushnumber: @convention(c) (State?, Double) -> Void
    let pushboolean: @convention(c) (State?, Int32) -> Void
    let pushnil: @convention(c) (State?) -> Void
    let pushvalue: @convention(c) (State?, Int32) -> Void
    let createtable: @convention(c) (State?, Int32, Int32) -> Void
    let rawseti: @convention(c) (State?, Int32, Int32) -> Void
    let rawgeti: @convention(c) (State?, Int32, Int32) -> Void
    let setfield: @convention(c) (State?, Int32, UnsafePointer<CChar>?) -> Void
    let getfield: @convention(c) (State?, Int32, UnsafePointer<CChar>?) -> Void
    let pushcclosure: @convention(c) (State?, CFunction?, Int32) -> Void
    let pushlightuserdata: @convention(c) (State?, UnsafeMutableRawPointer?) -> Void
    let touserdata: @convention(c) (State?, Int32) -> UnsafeMutableRawPointer?
    let sethook: @convention(c) (State?, Hook?, Int32, Int32) -> Int32
    let error: @convention(c) (State?) -> Int32
    let checkstack: @convention(c) (State?, Int32) -> Int32
    let openBase: CFunction
    let openTable: CFunction
    let openString: CFunction
    let openMath: CFunction

    /// The library, or why it is not there (loaded once per process).
    static let shared: Result<LuaAPI, LuaUnavailable> = load()

    struct LuaUnavailable: Error {
        let reason: String
    }

    private static func load() -> Result<LuaAPI, LuaUnavailable> {
        var handle: UnsafeMutableRawPointer?
        for name in ["liblua5.1.so.0", "liblua5.1.so", "liblua.so.5.1"] {
            handle = dlopen(name, RTLD_NOW | RTLD_LOCAL)
            if handle != nil { break }
        }
        guard let handle else {
            return .failure(LuaUnavailable(reason: "liblua5.1.so.0 not found (apt-get install liblua5.1-0)"))
        }
        var missing: [String] = []
        func sym<T>(_ name: String, _: T.Type) -> T? {
            guard let p = dlsym(handle, name) else {
                missing.append(name)
                return nil
            }
            return unsafeBitCast(p, to: T.self)
        }
        let api = (
            sym("luaL_newstate", (@convention(c) () -> State?).self),
            sym("lua_close", (@convention(c) (State?) -> Void).self),
            sym(
                "luaL_loadbuffer",
                (@convention(c) (State?, UnsafePointer<CChar>?, Int, UnsafePointer<CChar>?) -> Int32).self),
            sym("lua_pcall", (@convention(c) (State?, Int32, Int32, Int32) -> Int32).self),
            sym("lua_call", (@convention(c) (State?, Int32, Int32) -> Void).self),
            sym("lua_gettop", (@convention(c) (State?) -> Int32).self),
            sym("lua_settop", (@convention(c) (State?, Int32) -> Void).self),
            sym("lua_type", (@convention(c) (State?, Int32) -> Int32).self),
            sym(
                "lua_tolstring",
                (@convention(c) (State?, Int32, UnsafeMutablePointer<Int>?) -> UnsafePointer<CChar>?).self),
            sym("lua_tonumber", (@convention(c) (State?, Int32) -> Double).self),
            sym("lua_toboolean", (@convention(c) (State?, Int32) -> Int32).self)
        )
        let api2 = (
            sym("lua_pushlstring", (@convention(c) (State?, UnsafePointer<CChar>?, Int) -> Void).self),
            sym("lua_pushnumber", (@convention(c) (State?, Double) -> Void).self),
            sym("lua_pushboolean", (@convention(c) (State?, Int32) -> Void).self),
            sym("lua_pushnil", (@convention(c) (State?) -> Void).self),
            sym("lua_pushvalue", (@convention(c) (State?, Int32) -> Void).self),
            sym("lua_createtable", (@convention(c) (State?, Int32, Int32) -> Void).self),
            sym("lua_rawseti", (@convention(c) (State?, Int32, Int32) -> Void).self),
            sym("lua_rawgeti", (@convention(c) (State?, Int32, Int32) -> Void).self),
            sym("lua_setfield", (@convention(c) (State?, Int32, UnsafePointer<CChar>?) -> Void).self),
            sym("lua_getfield", (@convention(c) (State?, Int32, UnsafePointer<CChar>?) -> Void).self),
            sym("lua_pushcclosure", (@convention(c) (State?, CFunction?, Int32) -> Void).self)
        )
        let api3 = (
            sym("lua_pushlightuserdata", (@convention(c) (State?, UnsafeMutableRawPointer?) -> Void).self),
            sym("lua_touserdata", (@convention(c) (State?, Int32) -> UnsafeMutableRawPointer?).self),
            sym("lua_sethook", (@convention(c) (State?, Hook?, Int32, Int32) -> Int32).self),
            sym("lua_error", (@convention(c) (State?) -> Int32).self),
            sym("lua_checkstack", (@convention(c) (State?, Int32) -> Int32).self),
            sym("luaopen_base", CFunction.self),
            sym("luaopen_table", CFunction.self),
            sym("luaopen_string", CFunction.self),
            sym("luaopen_math", CFunction.self)
        )
        guard missing.isEmpty, let a0 = api.0, let a1 = api.1, let a2 = api.2, let a3 = api.3, let a4 = api.4,
            let a5 = api.5, let a6 = api.6, let a7 = api.7, let a8 = api.8, let a9 = api.9, let a10 = api.10,
            let b0 = api2.0, let b1 = api2.1, let b2 = api2.2, let b3 = api2.3, let b4 = api2.4,
            let b5 = api2.5,
            let b6 = api2.6, let b7 = api2.7, let b8 = api2.8, let b9 = api2.9, let b10 = api2.10,
            let c0 = api3.0, let c1 = api3.1, let c2 = api3.2, let c3 = api3.3, let c4 = api3.4,
            let c5 = api3.5,
            let c6 = api3.6, let c7 = api3.7, let c8 = api3.8
        else {
            return .failure(LuaUnavailable(reason: "liblua5.1 lacks \(missing.joined(separator: ", "))"))
        }
        return .success(
            LuaAPI(
                newstate: a0, close: a1, loadbuffer: a2, pcall: a3, call: a4, gettop: a5, settop: a6,
                type: a7,
                tolstring: a8, tonumber: a9, toboolean: a10, pushlstring: b0, pushnumber: b1, pushboolean: b2,
                pushnil: b3, pushvalue: b4, createtable: b5, rawseti: b6, rawgeti: b7, setfield: b8,
                getfield: b9,
                pushcclosure: b10, pushlightuserdata: c0, touserdata: c1, sethook: c2, error: c3,
                checkstack: c4,
                openBase: c5, openTable: c6, openString: c7, openMath: c8))
    }

    // MARK: - Helpers

    func pop(_ L: State, _ n: Int32) { settop(L, -n - 1) }

    func push(_ L: State, _ bytes: [UInt8]) {
        bytes.withUnsafeBytes { raw in
            pushlstring(L, raw.baseAddress?.assumingMemoryBound(to: CChar.self), raw.count)
        }
    }

    func push(_ L: State, _ s: String) { push(L, Array(s.utf8)) }

    /// The string (or number, as Lua converts it) at `index`; nil for other types.
    func bytes(_ L: State, _ index: Int32) -> [UInt8]? {
        let t = type(L, index)
        guard t == Self.tString || t == Self.tNumber else { return nil }
        var n = 0
        guard let p = tolstring(L, index, &n) else { return nil }
        return p.withMemoryRebound(to: UInt8.self, capacity: max(1, n)) {
            Array(UnsafeBufferPointer(start: $0, count: n))
        }
    }

    func setGlobal(_ L: State, _ name: String) { setfield(L, Self.globalsIndex, name) }
    func getGlobal(_ L: State, _ name: String) { getfield(L, Self.globalsIndex, name) }
}
