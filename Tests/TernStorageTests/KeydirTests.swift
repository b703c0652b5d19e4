import TernCore
import Testing

@testable import TernStorage

@Suite struct KeydirTests {
    /// Random upserts and removals against a Dictionary: exercises probing, backward-shift
    /// deletion, slot moves and arena compaction.
    @Test(arguments: [1, 2, 3] as [UInt64])
    func matchesDictionary(seed: UInt64) {
        var rng = SplitMix64(seed: seed)
        var keydir = Keydir()
        var model: [[UInt8]: RecordLocation] = [:]
        for step in 0..<20_000 {
            let key = b("k\(Int.random(in: 0..<3000, using: &rng))")
            if Int.random(in: 0..<3, using: &rng) == 0 {
                #expect(keydir.remove(key) == model.removeValue(forKey: key))
            } else {
                let loc = RecordLocation(
                    file: UInt32(step % 7), offset: UInt32(step), length: 40, timestamp: UInt64(step))
                #expect(keydir.upsert(key, loc) == model.updateValue(loc, forKey: key))
            }
        }
        #expect(keydir.count == model.count)
        for (k, v) in model { #expect(keydir.lookup(k) == v) }
        #expect(keydir.lookup(b("absent")) == nil)
        var seen = Set<[UInt8]>()
        for slot in keydir.slots { seen.insert(keydir.key(of: slot)) }
        #expect(seen == Set(model.keys))
    }

    /// The published figure: overhead per key beyond the key bytes, computed from capacities.
    @Test func overheadPerKeyIsSmall() {
        var keydir = Keydir()
        let n = 200_000
        for i in 0..<n {
            keydir.upsert(
                b("key-\(i)"), RecordLocation(file: 1, offset: UInt32(i), length: 128, timestamp: 0))
        }
        let perKey = Double(keydir.overheadBytes) / Double(n)
        print("keydir overhead: \(perKey) bytes/key for \(n) keys")
        #expect(perKey <= 80)
    }
}
