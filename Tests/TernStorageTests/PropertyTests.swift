import TernCore
import Testing

@testable import TernStorage

/// Bitcask against a Dictionary over random operation sequences with syncs, reopens, merges and
/// simulated crashes. Synced operations must never be lost; after a crash the store must equal
/// the model after some prefix of the unsynced operations (a torn batch vanishes whole).
@Suite struct PropertyTests {
    typealias Model = [[UInt8]: [UInt8]]

    @Test(arguments: 0..<16 as Range<UInt64>)
    func matchesDictionary(seed: UInt64) throws {
        var rng = SplitMix64(seed: seed)
        let fs = MemoryFileSystem()
        let options = smallOptions(fileBytes: 1024)
        var db = try Bitcask(directory: dir, fileSystem: fs, options: options)
        var model: Model = [:]
        var durable: Model = [:]
        var unsynced: [[BatchEntry]] = []
        func key() -> [UInt8] { b("k\(Int.random(in: 0..<12, using: &rng))") }
        for step in 0..<250 {
            let context = "seed \(seed) step \(step); replay: swift test --filter PropertyTests"
            let roll = Int.random(in: 0..<100, using: &rng)
            var op: [BatchEntry]? = nil
            switch roll {
            case 0..<40: op = [.put(key(), randomBytes(Int.random(in: 0..<80, using: &rng), &rng))]
            case 40..<50: op = [.delete(key())]
            case 50..<60:
                op = (0..<Int.random(in: 2...4, using: &rng)).map { _ in
                    Bool.random(using: &rng) ? .put(key(), randomBytes(5, &rng)) : .delete(key())
                }
            case 60..<70:
                try db.sync()
                durable = model
                unsynced.removeAll()
            case 70..<78:
                let k = key()
                #expect(try db.get(k) == model[k], "\(context)")
            case 78..<84:
                db.close()
                durable = model
                unsynced.removeAll()
                db = try Bitcask(directory: dir, fileSystem: fs, options: options)
                #expect(try contents(db) == model, "\(context): reopen")
            case 84..<92:
                fs.crash(using: &rng)
                db = try Bitcask(directory: dir, fileSystem: fs, options: options)
                var candidate = durable
                var candidates = [candidate]
                for op in unsynced {
                    CrashTests.apply(op, to: &candidate)
                    candidates.append(candidate)
                }
                let got = try contents(db)
                #expect(candidates.contains(got), "\(context): crash lost a synced write or broke order")
                model = got
                durable = got
                unsynced.removeAll()
            default:
                try db.merge()
                // Merge seals and syncs everything it copies.
                durable = model
                unsynced.removeAll()
                #expect(try contents(db) == model, "\(context): merge")
            }
            if let op {
                try db.write(op)
                CrashTests.apply(op, to: &model)
                unsynced.append(op)
            }
        }
        #expect(try contents(db) == model)
        #expect(db.stats.keys == model.count)
    }
}
