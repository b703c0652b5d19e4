import Foundation

/// An in-memory file system that models what a crash does to a real disk.
///
/// Each file keeps its bytes as of its last `sync` besides its current bytes; `crash(using:)`
/// rolls every file back to the synced bytes, optionally keeping a torn prefix of the unsynced
/// appended bytes, and undoes a random suffix of the creations, renames and removals made since
/// the last `syncDirectory` (a journaling file system applies metadata in order). All randomness
/// comes from the caller's generator, so a seed replays exactly. No clocks, no threads.
///
/// One instance models one machine's disk: `crash` and `syncDirectory` act on all of its files,
/// so a simulator gives every node its own instance.
///
/// Paths are treated as flat strings: `makeDirectory` records a directory, and a file belongs to
/// the directory that is its path's prefix up to the last `/`.
public final class MemoryFileSystem: FileSystem, @unchecked Sendable {
    // @unchecked Sendable: every stored property is read and written only under `lock`.

    /// One file's contents, shared by every handle and directory entry that refers to it.
    final class Node {
        var data: [UInt8] = []
        var synced: [UInt8] = []
    }

    /// A directory change not yet made durable by `syncDirectory`.
    enum DirectoryOp {
        case create(String, Node)
        case remove(String)
        case rename(String, String)
    }

    private let lock = NSLock()
    private var files: [String: Node] = [:]
    private var durableFiles: [String: Node] = [:]
    private var pending: [DirectoryOp] = []
    private var directories: Set<String> = []
    /// Bumped by every crash so handles opened before it fail instead of writing into the past.
    private var generation = 0
    /// How many `sync` calls (file or directory) were made: lets tests check group commit.
    public private(set) var syncCount = 0

    /// Creates an empty file system.
    public init() {}

    private func locked<T>(_ body: () throws(StorageError) -> T) throws(StorageError) -> T {
        lock.lock()
        defer { lock.unlock() }
        return try body()
    }

    public func open(_ path: String, create: Bool) throws(StorageError) -> any StorageFile {
        try locked { () throws(StorageError) -> any StorageFile in
            if let node = files[path] {
                return MemoryFile(fs: self, node: node, generation: generation, path: path)
            }
            guard create else { throw .io("open \(path): No such file or directory") }
            let node = Node()
            files[path] = node
            pending.append(.create(path, node))
            return MemoryFile(fs: self, node: node, generation: generation, path: path)
        }
    }

    public func list(_ directory: String) throws(StorageError) -> [String] {
        try locked { () throws(StorageError) -> [String] in
            let prefix = directory.hasSuffix("/") ? directory : directory + "/"
            return files.keys.compactMap { path -> String? in
                guard path.hasPrefix(prefix) else { return nil }
                let rest = path.dropFirst(prefix.count)
                return rest.contains("/") ? nil : String(rest)
            }
        }
    }

    public func rename(_ from: String, _ to: String) throws(StorageError) {
        try locked { () throws(StorageError) in
            guard let node = files.removeValue(forKey: from) else {
                throw .io("rename \(from): No such file or directory")
            }
            files[to] = node
            pending.append(.rename(from, to))
        }
    }

    public func remove(_ path: String) throws(StorageError) {
        try locked { () throws(StorageError) in
            guard files.removeValue(forKey: path) != nil else {
                throw .io("unlink \(path): No such file or directory")
            }
            pending.append(.remove(path))
        }
    }

    public func makeDirectory(_ path: String) throws(StorageError) {
        try locked { () throws(StorageError) in _ = directories.insert(path) }
    }

    public func syncDirectory(_ path: String) throws(StorageError) {
        // Durability is tracked for the whole file system, not per directory: the engine uses one.
        try locked { () throws(StorageError) in
            durableFiles = files
            pending.removeAll()
            syncCount += 1
        }
    }

    public func exists(_ path: String) -> Bool {
        lock.lock()
        defer { lock.unlock() }
        return files[path] != nil || directories.contains(path)
    }

    /// A copy of the disk as it would be after a power loss that tore nothing: every file's synced
    /// bytes, the directory as last synced. The simulator's backups (a directory copied while its
    /// node is down, restored later over a newer one).
    public func snapshot() -> MemoryFileSystem {
        lock.lock()
        defer { lock.unlock() }
        let copy = MemoryFileSystem()
        var copies: [ObjectIdentifier: Node] = [:]
        for path in durableFiles.keys.sorted() {
            let node = durableFiles[path]!
            let n: Node
            if let done = copies[ObjectIdentifier(node)] {
                n = done
            } else {
                n = Node()
                n.data = node.synced
                n.synced = node.synced
                copies[ObjectIdentifier(node)] = n
            }
            copy.files[path] = n
            copy.durableFiles[path] = n
        }
        copy.directories = directories
        return copy
    }

    /// Simulates a power loss and restart.
    ///
    /// - Every file loses the bytes written after its last `sync`. When the unsynced change was an
    ///   append and `tornWrites` is true, a random prefix of the appended bytes survives (a torn write).
    /// - A random suffix of the directory changes since the last `syncDirectory` is undone.
    /// - Handles opened before the crash fail with `.io` from now on.
    public func crash<R: RandomNumberGenerator>(using rng: inout R, tornWrites: Bool = true) {
        lock.lock()
        defer { lock.unlock() }
        let keep = pending.isEmpty ? 0 : Int.random(in: 0...pending.count, using: &rng)
        var dir = durableFiles
        for op in pending.prefix(keep) {
            switch op {
            case .create(let path, let node): dir[path] = node
            case .remove(let path): dir.removeValue(forKey: path)
            case .rename(let from, let to):
                if let node = dir.removeValue(forKey: from) { dir[to] = node }
            }
        }
        // Visit nodes in path order so the random choices do not depend on hash order.
        var seen = Set<ObjectIdentifier>()
        for path in (Array(dir.keys) + Array(files.keys)).sorted() {
            guard let node = dir[path] ?? files[path], seen.insert(ObjectIdentifier(node)).inserted
            else { continue }
            let synced = node.synced
            if tornWrites, node.data.count > synced.count, node.data.starts(with: synced) {
                let extra = Int.random(in: 0...(node.data.count - synced.count), using: &rng)
                node.data = synced + node.data[synced.count..<synced.count + extra]
            } else {
                node.data = synced
            }
            node.synced = node.data
        }
        files = dir
        durableFiles = dir
        pending.removeAll()
        generation += 1
    }

    /// Flips one bit of a file, in its current and its synced bytes: models media corruption.
    public func flipBit(path: String, offset: UInt64, bit: Int) {
        lock.lock()
        defer { lock.unlock() }
        precondition((0..<8).contains(bit), "a byte has 8 bits")
        guard let node = files[path] else { preconditionFailure("flipBit: no file \(path)") }
        let i = Int(offset)
        let mask = UInt8(1) << UInt8(bit)
        if i < node.data.count { node.data[i] ^= mask }
        if i < node.synced.count { node.synced[i] ^= mask }
    }

    /// The current size of a file, or nil if it does not exist (for tests).
    public func fileSize(_ path: String) -> UInt64? {
        lock.lock()
        defer { lock.unlock() }
        return files[path].map { UInt64($0.data.count) }
    }

    // MARK: handle operations, called by MemoryFile under the lock

    fileprivate func withNode<T>(
        _ file: MemoryFile, _ body: (Node) throws(StorageError) -> T
    ) throws(StorageError) -> T {
        lock.lock()
        defer { lock.unlock() }
        guard !file.isClosed else { throw .closed }
        guard file.generation == generation else { throw .io("\(file.path): handle from before a crash") }
        return try body(file.node)
    }

    fileprivate func countSync() { syncCount += 1 }

    fileprivate func close(_ file: MemoryFile) {
        lock.lock()
        defer { lock.unlock() }
        file.isClosed = true
    }
}

/// A handle on a `MemoryFileSystem` node.
final class MemoryFile: StorageFile {
    unowned let fs: MemoryFileSystem
    let node: MemoryFileSystem.Node
    let generation: Int
    let path: String
    var isClosed = false

    init(fs: MemoryFileSystem, node: MemoryFileSystem.Node, generation: Int, path: String) {
        self.fs = fs
        self.node = node
        self.generation = generation
        self.path = path
    }

    var size: UInt64 {
        (try? fs.withNode(self) { node in UInt64(node.data.count) }) ?? 0
    }

    func read(at offset: UInt64, count: Int) throws(StorageError) -> [UInt8] {
        try fs.withNode(self) { node in
            let start = min(Int(offset), node.data.count)
            let end = min(start + count, node.data.count)
            return Array(node.data[start..<end])
        }
    }

    func write(_ bytes: [UInt8], at offset: UInt64) throws(StorageError) {
        try fs.withNode(self) { node in
            let start = Int(offset)
            if node.data.count < start { node.data += [UInt8](repeating: 0, count: start - node.data.count) }
            let overlap = min(bytes.count, node.data.count - start)
            node.data.replaceSubrange(start..<start + overlap, with: bytes)
        }
    }

    func sync() throws(StorageError) {
        try fs.withNode(self) { node in
            node.synced = node.data
        }
        try fs.withNode(self) { _ in fs.countSync() }
    }

    func truncate(to size: UInt64) throws(StorageError) {
        try fs.withNode(self) { node in
            let n = Int(size)
            if n < node.data.count {
                node.data.removeLast(node.data.count - n)
            } else {
                node.data += [UInt8](repeating: 0, count: n - node.data.count)
            }
        }
    }

    /// Under the file system's lock: another thread may be using the handle.
    func close() { fs.close(self) }
}
