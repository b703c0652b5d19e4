import TernConsensus
import TernSim
import Testing

/// The stream workload (StreamWorkload.swift): the task queue's commands under the simulator's
/// faults, checked against QUEUE.md's guarantees (docs/QUEUE.md, "Simulator workload").
@Suite struct StreamSimTests {
    static func config(_ seed: UInt64, mutant: StreamMutant = .none) -> SimConfig {
        var c = SimConfig(seed: seed)
        c.ops = 0
        c.seqOps = 0
        c.streamOps = 200
        c.streamMutant = mutant
        return c
    }

    @Test("Seeds of the stream workload pass, with follow-ups, claims, deletes and fresh retries")
    func cleanSeedsPass() {
        var fresh = 0
        var xclaims = 0
        var deletes = 0
        for seed in [1, 2] as [UInt64] {
            let r = simulate(Self.config(seed))
            #expect(r.violations.isEmpty, "seed \(seed): \(r.violations.map(\.description))")
            let answered = r.streams.calls.filter { $0.ret != nil }
            #expect(answered.count > 150, "seed \(seed): most calls answered")
            for kind in [StreamCall.Kind.add, .read, .ack, .ackAdd, .claim, .addRun] {
                #expect(answered.contains { $0.kind == kind }, "seed \(seed): no answered \(kind)")
            }
            #expect(
                r.streams.followUps > 0 && r.streams.claimed > 0,
                "seed \(seed): \(r.streams.followUps) follow-ups, \(r.streams.claimed) claimed")
            fresh += r.streams.calls.filter { $0.freshRetries > 0 }.count
            xclaims += answered.filter { $0.kind == .xclaim }.count
            deletes += answered.filter { $0.kind == .del && $0.reply == .integer(1) }.count
        }
        #expect(fresh > 0, "no fresh retry in seeds 1 and 2")
        #expect(xclaims > 0 && deletes > 0, "seeds 1 and 2: \(xclaims) XCLAIMs, \(deletes) entries deleted")
    }

    @Test(
        "Each broken completion, delivery or idempotency key is caught within seeds 1–3",
        arguments: StreamMutant.allCases.dropFirst())
    func mutantIsCaught(_ mutant: StreamMutant) {
        let caught = (1...3 as ClosedRange<UInt64>).contains { seed in
            simulate(Self.config(seed, mutant: mutant)).violations.contains { $0.check == "stream" }
        }
        #expect(caught, "\(mutant) survived seeds 1–3")
    }
}
