import TernCore

@testable import TernStorage

func b(_ s: String) -> [UInt8] { Array(s.utf8) }

func randomBytes(_ n: Int, _ rng: inout SplitMix64) -> [UInt8] {
    (0..<n).map { _ in UInt8.random(in: 0...255, using: &rng) }
}

let dir = "/db"

/// Reads every key of `model` and of the store and checks they agree exactly.
func contents(_ db: Bitcask) throws -> [[UInt8]: [UInt8]] {
    var keys: [[UInt8]] = []
    db.forEachLive { keys.append($0) }
    var result: [[UInt8]: [UInt8]] = [:]
    for k in keys { result[k] = try db.get(k) }
    return result
}

/// A copy of `fs` holding only the bytes each file has now (all synced), for cut/flip variants.
func copyFiles(_ fs: MemoryFileSystem, _ directory: String) throws -> MemoryFileSystem {
    let copy = MemoryFileSystem()
    try copy.makeDirectory(directory)
    for name in try fs.list(directory) {
        let src = try fs.open(directory + "/" + name, create: false)
        let dst = try copy.open(directory + "/" + name, create: true)
        try dst.write(try src.read(at: 0, count: Int(src.size)), at: 0)
        try dst.sync()
        src.close()
        dst.close()
    }
    try copy.syncDirectory(directory)
    return copy
}

/// Options with small files so tests rotate and merge often.
func smallOptions(fileBytes: UInt64 = 2048) -> BitcaskOptions {
    var o = BitcaskOptions()
    o.maxFileSizeBytes = fileBytes
    o.writeBufferBytes = 512
    return o
}
