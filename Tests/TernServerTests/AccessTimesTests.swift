import NIOConcurrencyHelpers
import TernRESP
import TernServer
import Testing

/// OBJECT IDLETIME is tracked per node (it was always 0: Redis's introspection-2 "TTL, TYPE and
/// EXISTS do not alter the last access time of a key").
@Suite struct AccessTimesTests {
    @Test("A command's keys are used at its time; TTL, TYPE, EXISTS and OBJECT leave it; a read sets it")
    func idleTime() {
        let now = NIOLockedValueBox<Int64>(1_000_000_000)
        var p = CommandProcessor(password: nil, maxValueBytes: 1 << 20)
        p.clock = { now.withLockedValue { $0 } * 1000 }
        var s = Session(authenticated: true)
        func run(_ args: String...) {
            _ = p.plan(RESPCommand(args: args.map { Array($0.utf8) }), session: &s)
        }
        func idle(_ key: String) -> Int64 {
            p.accessTimes.idleSeconds(Array(key.utf8), nowMs: now.withLockedValue { $0 })
        }

        run("SET", "foo", "bar")
        run("MSET", "a", "1", "b", "2")
        now.withLockedValue { $0 += 3_000 }
        #expect(idle("foo") == 3)
        run("TTL", "foo")
        run("TYPE", "foo")
        run("EXISTS", "foo")
        run("OBJECT", "IDLETIME", "foo")
        #expect(idle("foo") == 3)
        run("GET", "foo")
        #expect(idle("foo") == 0)
        run("MGET", "a", "b")  // (TOUCH is the keyspace module's: the same rule, by its key spec)
        #expect(idle("a") == 0 && idle("b") == 0)
        // Queued in MULTI: not used until EXEC runs it.
        now.withLockedValue { $0 += 5_000 }
        run("MULTI")
        run("GET", "a")
        #expect(idle("a") == 5)
    }

    @Test("A bounded map: past its capacity it starts again, and a forgotten key is idle since then")
    func bounded() {
        let t = AccessTimes(nowMs: 0, capacity: 2)
        t.touch([[1]], nowMs: 1_000)
        t.touch([[2]], nowMs: 2_000)
        t.touch([[3]], nowMs: 5_000)  // over capacity: emptied at 5 s
        #expect(t.idleSeconds([3], nowMs: 9_000) == 4)
        #expect(t.idleSeconds([1], nowMs: 9_000) == 4)  // forgotten: idle since 5 s (it was 8)
        #expect(t.idleSeconds([9], nowMs: 9_000) == 4)
    }
}
