/// The synchronous file layer the engine does all its IO through.
///
/// `PosixFileSystem` is the real one; `MemoryFileSystem` simulates a disk that can crash, so the
/// engine and the cluster simulator run without touching the OS. Implementations must be safe to
/// call from two threads at once on different files: a background merge reads and writes its own
/// files while the owner of the `Bitcask` appends to the active one.
public protocol FileSystem: AnyObject {
    /// Opens `path` for reading and writing; creates it empty if `create` and it does not exist.
    func open(_ path: String, create: Bool) throws(StorageError) -> any StorageFile
    /// The names (not paths) of the files in `directory`, in no particular order.
    func list(_ directory: String) throws(StorageError) -> [String]
    /// Atomically replaces `to` with `from`; durable only after `syncDirectory`.
    func rename(_ from: String, _ to: String) throws(StorageError)
    /// Removes a file; durable only after `syncDirectory`.
    func remove(_ path: String) throws(StorageError)
    /// Creates a directory and its parents (`mkdir -p`).
    func makeDirectory(_ path: String) throws(StorageError)
    /// Makes creations, renames and removals in `path` durable (fsync of the directory).
    func syncDirectory(_ path: String) throws(StorageError)
    /// Whether a file or directory exists at `path`.
    func exists(_ path: String) -> Bool
}

/// One open file. Offsets are absolute (pread/pwrite style), so a file has no cursor to share.
public protocol StorageFile: AnyObject {
    /// The current size in bytes, including writes not yet synced.
    var size: UInt64 { get }
    /// Reads up to `count` bytes at `offset`; fewer only at the end of the file.
    func read(at offset: UInt64, count: Int) throws(StorageError) -> [UInt8]
    /// Writes `bytes` at `offset`, extending the file if needed; durable only after `sync`.
    func write(_ bytes: [UInt8], at offset: UInt64) throws(StorageError)
    /// Makes every write before it durable (fsync).
    func sync() throws(StorageError)
    /// Cuts or extends the file to `size` bytes.
    func truncate(to size: UInt64) throws(StorageError)
    /// Releases the handle; later calls fail with `.closed`.
    func close()
    /// The file's first `count` bytes mapped read-only (the mapping may reach `reserve` bytes, past
    /// the end, so a growing file needs no new one), or nil where this file layer does not map
    /// (the caller reads instead). The caller reads only bytes the file holds (touching a mapped
    /// page past the end of the file is a SIGBUS), and only until its next call on this handle.
    func mapped(count: Int, reserve: Int) -> UnsafeRawBufferPointer?
}

extension StorageFile {
    /// No mapping: the caller reads.
    public func mapped(count: Int, reserve: Int) -> UnsafeRawBufferPointer? { nil }
}
