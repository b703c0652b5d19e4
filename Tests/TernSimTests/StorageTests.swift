import TernConsensus
import TernCore
import TernSim
import TernStorage
import Testing

/// The simulator's storage: the real Bitcask engine on a simulated disk. These pin down the fault
/// semantics the simulator relies on (crash, torn tail, bit flip, merge cut short).
@Suite struct BitcaskReplicaStorageTests {
    func bytes(_ s: String) -> [UInt8] { Array(s.utf8) }

    func storage(fileSizeBytes: UInt64 = 64 << 10) throws -> BitcaskReplicaStorage {
        var o = SimStorageOptions()
        o.fileSizeBytesMax = fileSizeBytes
        return try BitcaskReplicaStorage(options: o, writeBufferBytes: 0)
    }

    @Test("A crash keeps synced writes and loses the others")
    func crashLosesUnsynced() throws {
        let s = try storage()
        try s.write([(bytes("a"), bytes("1"))])
        try s.sync()
        try s.write([(bytes("a"), bytes("2")), (bytes("b"), bytes("1"))])
        var rng = SplitMix64(seed: 1)
        try s.crash(rng: &rng, tornWrites: false)
        #expect(try s.load(bytes("a")) == .state(bytes("1")))
        #expect(try s.load(bytes("b")) == .absent)
    }

    @Test("A torn tail is cut back to whole batches: both records of a batch, or neither")
    func tornBatchIsAtomic() throws {
        var torn = 0
        for seed in UInt64(1)...40 {
            let s = try storage()
            try s.write([(bytes("x"), bytes("0"))])
            try s.sync()
            try s.write([(bytes("a"), Array(repeating: 7, count: 300)), (bytes("b"), bytes("1"))])
            var rng = SplitMix64(seed: seed)
            try s.crash(rng: &rng, tornWrites: true)
            if s.stats.truncatedBytes > 0 { torn += 1 }
            let a = try s.load(bytes("a"))
            let b = try s.load(bytes("b"))
            #expect((a == .absent) == (b == .absent), "seed \(seed): \(a) \(b)")
            #expect(try s.load(bytes("x")) == .state(bytes("0")))
        }
        #expect(torn > 5, "the crash must actually tear the tail")
    }

    @Test("A flipped bit in the latest record: the engine reports the key damaged until rewritten")
    func corruptionIsReported() throws {
        let s = try storage()
        for v in 0..<5 { try s.write([(bytes("k"), bytes("value \(v)")), (bytes("j"), bytes("\(v)"))]) }
        try s.sync()
        var rng = SplitMix64(seed: 3)
        try s.crash(rng: &rng, tornWrites: false)
        #expect(try s.corrupt(bytes("k"), rng: &rng) == .corrupted)
        #expect(try s.load(bytes("k")) == .damaged)
        #expect(try s.load(bytes("j")) == .state(bytes("4")))
        #expect(try s.corrupt(bytes("nothing"), rng: &rng) == .notFound)
        try s.write([(bytes("k"), bytes("repaired"))])
        #expect(try s.load(bytes("k")) == .state(bytes("repaired")))
    }

    /// Several keys, many versions each, over small files (so there is something to merge).
    func filled() throws -> (BitcaskReplicaStorage, [String: String]) {
        let s = try storage(fileSizeBytes: 1 << 10)
        var last: [String: String] = [:]
        for round in 0..<40 {
            var batch: [(key: [UInt8], value: [UInt8])] = []
            for k in 0..<4 {
                let v = "round \(round) key \(k) " + String(repeating: "x", count: round % 7 * 9)
                batch.append((bytes("k\(k)"), bytes(v)))
                last["k\(k)"] = v
            }
            try s.write(batch)
            try s.sync()
        }
        return (s, last)
    }

    @Test(
        "A merge cut short at any step, then a crash: every synced record survives",
        arguments: MergeStep.allCases)
    func mergeCutShort(step: MergeStep) throws {
        let (s, last) = try filled()
        let filesBefore = s.stats.files
        if [.keydirSwapped, .firstInputRemoved, .finished].contains(step) {
            #expect(try s.startMerge())
            #expect(s.mergeCopied)
            _ = try s.finishMerge(stopAt: step)
        } else {
            #expect(try s.startMerge(stopAt: step) == false)
        }
        #expect(s.mergesInterrupted == 1)
        var rng = SplitMix64(seed: 5)
        try s.crash(rng: &rng, tornWrites: true)
        for (k, v) in last { #expect(try s.load(bytes(k)) == .state(bytes(v)), "\(k) after \(step)") }
        // And the next merge completes and compacts.
        #expect(try s.startMerge())
        #expect(try s.finishMerge())
        #expect(s.stats.files < filesBefore)
        for (k, v) in last { #expect(try s.load(bytes(k)) == .state(bytes(v))) }
    }

    @Test("Writes between a merge's copy and its swap win over the copies")
    func writesDuringMergeWin() throws {
        let (s, last) = try filled()
        #expect(try s.startMerge())
        try s.write([(bytes("k1"), bytes("newer"))])
        try s.sync()
        #expect(try s.finishMerge())
        #expect(s.mergesFinished == 1)
        #expect(try s.load(bytes("k1")) == .state(bytes("newer")))
        #expect(try s.load(bytes("k2")) == .state(bytes(last["k2"]!)))
        var rng = SplitMix64(seed: 9)
        try s.crash(rng: &rng, tornWrites: false)
        #expect(try s.load(bytes("k1")) == .state(bytes("newer")))
    }
}
