import TernConsensus
import TernSim
import Testing

/// Hand-driven scenarios over the simulator: the availability and recovery claims, one by one.
@Suite struct ScenarioTests {
    func cluster(seed: UInt64 = 1) -> Simulation {
        var c = SimConfig(seed: seed)
        c.scenario = true
        c.faults = .none
        c.deriveFaults = false
        return Simulation(c)
    }

    @Test("One campus cut off: the other two keep writing and reading, with no election pause")
    func campusCutOff() {
        let sim = cluster()
        #expect(sim.await(sim.write("k", .put(Array("1".utf8)), at: 0)) == .done(.ok))
        sim.isolate(0)
        let started = sim.now
        #expect(sim.await(sim.write("k", .incr(1), at: 1)) == .done(.number(2)))
        #expect(sim.now - started < 40, "a write at B needs only B and C")
        #expect(sim.await(sim.read("k", at: 2)) == .value(Array("2".utf8)))
        sim.isolate(nil)
        // A's next linearizable read catches up instead of answering its stale "1".
        #expect(sim.await(sim.read("k", at: 0)) == .value(Array("2".utf8)))
        #expect(sim.currentViolations.isEmpty)
    }

    @Test("Steady writer: after the first write, each write is one round trip (fast path)")
    func fastPathLatency() {
        let sim = cluster()
        _ = sim.await(sim.write("k", .incr(1), at: 1))
        let t0 = sim.now
        for _ in 0..<10 { _ = sim.await(sim.write("k", .incr(1), at: 1)) }
        // Delay is 1 tick each way; a reply costs one more tick: ≤ 4 ticks per write.
        #expect(sim.now - t0 <= 40)
        #expect(sim.inspect("k", at: 1)?.state.value.bytes == Array("11".utf8))
    }

    @Test("A crashed node catches up key by key on demand after restart")
    func crashAndCatchUp() {
        let sim = cluster()
        _ = sim.await(sim.write("k", .put(Array("a".utf8)), at: 0))
        sim.crash(node: 2, downTicks: 50)
        _ = sim.await(sim.write("k", .put(Array("b".utf8)), at: 0))
        sim.run(ticks: 60)
        #expect(sim.await(sim.read("k", at: 2)) == .value(Array("b".utf8)))
        #expect(sim.inspect("k", at: 2)?.state.chosen == 2)
        #expect(sim.currentViolations.isEmpty)
    }

    @Test("A corrupted record: the node refuses to vote on the key until both peers re-taught it")
    func corruptedKeyRecovers() {
        let sim = cluster()
        _ = sim.await(sim.write("k", .put(Array("a".utf8)), at: 1))
        sim.crash(node: 1, downTicks: 5, corrupt: "k")
        sim.run(ticks: 10)
        // Touch the key at the damaged node: it must first recover, then serve.
        let tag = sim.read("k", at: 1)
        #expect(sim.inspect("k", at: 1)?.damaged == true)
        #expect(sim.await(tag) == .value(Array("a".utf8)))
        #expect(sim.inspect("k", at: 1)?.damaged == false)
        #expect(sim.await(sim.write("k", .put(Array("b".utf8)), at: 1)) == .done(.ok))
        #expect(sim.currentViolations.isEmpty)
    }

    @Test("A corrupted record with one peer cut off stays damaged (both peers are required)")
    func corruptedNeedsBothPeers() {
        let sim = cluster()
        _ = sim.await(sim.write("k", .put(Array("a".utf8)), at: 1))
        sim.crash(node: 1, downTicks: 5, corrupt: "k")
        sim.run(ticks: 10)
        // n1's link to n3 is down; n1 and n2 still reach each other.
        sim.isolate(2)
        let tag = sim.read("k", at: 1)
        sim.run(ticks: 300)
        #expect(sim.inspect("k", at: 1)?.damaged == true)
        sim.isolate(nil)
        #expect(
            sim.await(tag) == .value(Array("a".utf8))
                || sim.await(sim.read("k", at: 1)) == .value(Array("a".utf8)))
        #expect(sim.inspect("k", at: 1)?.damaged == false)
    }
}
