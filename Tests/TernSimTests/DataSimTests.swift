import TernConsensus
import TernSim
import Testing

/// The data workload (DataWorkload.swift): hash, sorted-set, set, list, expiring-string commands
/// and one-key transactions under
/// the simulator's faults, every node's clock skewed within the bound, each key's history checked
/// against the data model with the expiry rule (docs/DATA.md, "Simulator workload").
@Suite struct DataSimTests {
    static func config(_ seed: UInt64, mutant: DataMutant = .none) -> SimConfig {
        var c = SimConfig(seed: seed)
        c.ops = 0
        c.seqOps = 0
        c.dataOps = 300
        c.dataMutant = mutant
        return c
    }

    @Test("Seeds of the data workload pass, and keys expire through reads' expirechecks")
    func cleanSeedsPass() {
        var checks = 0
        var expiredReads = 0
        // Seed 143: a SET … PXAT whose deadline was already below the proposer's horizon, revived
        // by a PEXPIREAT merged into the same instance (fixed in `KeyValue.applying`).
        for seed in [1, 2, 3, 143] as [UInt64] {
            let r = simulate(Self.config(seed))
            #expect(r.violations.isEmpty, "seed \(seed): \(r.violations.map(\.description))")
            #expect(r.uncheckedKeys.isEmpty, "seed \(seed): undecided keys \(r.uncheckedKeys)")
            #expect(
                r.data.history.filter { $0.ret != nil }.count > 250, "seed \(seed): most commands answered")
            checks += r.data.expireChecks
            expiredReads += r.data.expiredReads
        }
        #expect(checks > 0 && expiredReads > 0, "reads met expired values and removed them")
    }

    @Test("A read answered from a value past the horizon, without removing it, is caught at seed 1")
    func readsSkipExpiryIsCaught() {
        let r = simulate(Self.config(1, mutant: .readsSkipExpiry))
        #expect(
            r.violations.contains { $0.check == "data-linearizability" }, "reads-skip-expiry survived seed 1")
    }

    @Test("A horizon without the skew bound (a node trusting its clock) is caught within a few seeds")
    func horizonOwnClockIsCaught() {
        let caught = (1...5 as ClosedRange<UInt64>).contains { seed in
            simulate(Self.config(seed, mutant: .horizonOwnClock)).violations.contains {
                $0.check == "data-linearizability"
            }
        }
        #expect(caught, "horizon-own-clock survived seeds 1–5")
    }

    @Test("The workload runs sets, lists and one-key transactions, and all their answers are checked")
    func setsListsTransactions() {
        let r = simulate(Self.config(2))
        #expect(r.violations.isEmpty, "\(r.violations.map(\.description))")
        let answered = r.data.history.filter { $0.ret != nil }
        for name in ["multi", "sadd", "smembers", "rpush", "lrange", "llen"] {
            #expect(answered.contains { $0.args[0] == Array(name.utf8) }, "no answered \(name)")
        }
    }

    /// Seed 1 caught it until the Commit message (2026-12-08) changed every seed's schedule; since,
    /// seeds 2–7 do.
    @Test("A transaction applied command by command (one instance each) is caught within seeds 1–3")
    func multiPiecemealIsCaught() {
        let caught = (1...3 as ClosedRange<UInt64>).contains { seed in
            simulate(Self.config(seed, mutant: .multiPiecemeal)).violations.contains {
                $0.check == "data-linearizability"
            }
        }
        #expect(caught, "multi-piecemeal survived seeds 1–3")
    }
}

/// The data workload with hash-tag groups (`--data-groups`): its ten keys are members of one
/// group key, each member's history checked as a key of its own (docs/DATA.md, "Hash-tag groups").
@Suite struct DataGroupSimTests {
    @Test("Members of one group keep every key's guarantees under faults, expiry included")
    func groupSeedsPass() {
        for seed in [2] as [UInt64] {
            var c = DataSimTests.config(seed)
            c.dataGroups = true
            let r = simulate(c)
            #expect(r.violations.isEmpty, "seed \(seed): \(r.violations.map(\.description))")
            #expect(r.uncheckedKeys.isEmpty, "seed \(seed): undecided keys \(r.uncheckedKeys)")
            #expect(
                r.data.history.filter { $0.ret != nil }.count > 250, "seed \(seed): most commands answered")
            #expect(r.data.history.allSatisfy { $0.key.hasSuffix("{g}") })
        }
    }

    @Test("A transaction applied piecemeal is still caught when its key is a group member")
    func piecemealCaught() {
        var c = DataSimTests.config(1, mutant: .multiPiecemeal)
        c.dataGroups = true
        #expect(simulate(c).violations.contains { $0.check == "data-linearizability" })
    }
}

/// Big lists kept in buckets under the simulator (`--data-lists`, ListBucketSim.swift): the lists
/// are bucketed with buckets of 3, the clients do the upkeep racing each other's commands, and
/// every key's history is still checked against the data model (docs/DATA.md, "Big lists").
@Suite struct DataListSimTests {
    static func config(_ seed: UInt64, mutant: DataMutant = .none) -> SimConfig {
        var c = DataSimTests.config(seed, mutant: mutant)
        c.dataLists = true
        return c
    }

    @Test("Seeds pass with the lists bucketed, sealed, unsealed and joined under faults")
    func cleanSeedsPass() {
        var upkeeps = 0
        for seed in [1, 2, 3] as [UInt64] {
            let r = simulate(Self.config(seed))
            #expect(r.violations.isEmpty, "seed \(seed): \(r.violations.map(\.description))")
            #expect(r.uncheckedKeys.isEmpty, "seed \(seed): undecided keys \(r.uncheckedKeys)")
            #expect(
                r.data.history.filter { $0.ret != nil }.count > 250, "seed \(seed): most commands answered")
            upkeeps += r.data.listUpkeeps
        }
        #expect(upkeeps > 20, "the clients ran upkeep rounds")
    }

    @Test("A seal proposed before its buckets are written is caught within a few seeds")
    func sealUnwrittenIsCaught() {
        let caught = (1...5 as ClosedRange<UInt64>).contains { seed in
            !simulate(Self.config(seed, mutant: .listSealUnwritten)).violations.isEmpty
        }
        #expect(caught, "list-seal-unwritten survived seeds 1–5")
    }

    @Test("A read that ignores the trims a partial unseal left is caught within a few seeds")
    func readsIgnoreTrimsIsCaught() {
        let caught = (1...8 as ClosedRange<UInt64>).contains { seed in
            !simulate(Self.config(seed, mutant: .listReadsIgnoreTrims)).violations.isEmpty
        }
        #expect(caught, "list-reads-ignore-trims survived seeds 1–8")
    }

    @Test("A read of a bucketed list answered from its head alone is caught within a few seeds")
    func readsSkipBucketsIsCaught() {
        let caught = (1...5 as ClosedRange<UInt64>).contains { seed in
            simulate(Self.config(seed, mutant: .listReadsSkipBuckets)).violations.contains {
                $0.check == "data-linearizability"
            }
        }
        #expect(caught, "list-reads-skip-buckets survived seeds 1–5")
    }
}

/// Big sets and hashes kept in buckets under the simulator (`--data-keyed`, KeyedBucketSim.swift):
/// the sets and hashes are bucketed with buckets of one or two members, the clients read facts,
/// flush and join racing each other's commands, and every key's history is still checked against
/// the data model (docs/DATA.md, "Big sets, hashes and sorted sets").
@Suite struct DataKeyedSimTests {
    static func config(_ seed: UInt64, mutant: DataMutant = .none) -> SimConfig {
        var c = DataSimTests.config(seed, mutant: mutant)
        c.dataKeyed = true
        return c
    }

    @Test("Seeds pass with the sets and hashes bucketed, flushed and joined under faults")
    func cleanSeedsPass() {
        var upkeeps = 0
        for seed in [1, 2, 3] as [UInt64] {
            let r = simulate(Self.config(seed))
            #expect(r.violations.isEmpty, "seed \(seed): \(r.violations.map(\.description))")
            #expect(r.uncheckedKeys.isEmpty, "seed \(seed): undecided keys \(r.uncheckedKeys)")
            #expect(
                r.data.history.filter { $0.ret != nil }.count > 250, "seed \(seed): most commands answered")
            upkeeps += r.data.listUpkeeps
        }
        #expect(upkeeps > 20, "the clients ran upkeep rounds")
    }

    @Test("A flush proposed before its buckets are written is caught within a few seeds")
    func flushUnwrittenIsCaught() {
        let caught = (1...6 as ClosedRange<UInt64>).contains { seed in
            !simulate(Self.config(seed, mutant: .keyedFlushUnwritten)).violations.isEmpty
        }
        #expect(caught, "keyed-flush-unwritten survived seeds 1–6")
    }

    @Test("A read of a bucketed set or hash that ignores its overlay is caught within a few seeds")
    func readsSkipOverlayIsCaught() {
        let caught = (1...6 as ClosedRange<UInt64>).contains { seed in
            !simulate(Self.config(seed, mutant: .keyedReadsSkipOverlay)).violations.isEmpty
        }
        #expect(caught, "keyed-reads-skip-overlay survived seeds 1–6")
    }
}
