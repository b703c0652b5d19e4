import Foundation

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// The real file layer: POSIX `open`/`pread`/`pwrite`/`fsync`. Stateless, so it is safe to share
/// between threads; each `PosixFile` is a file descriptor whose offset is never used.
public final class PosixFileSystem: FileSystem, Sendable {
    /// Creates the file layer; it has no state of its own.
    public init() {}

    public func open(_ path: String, create: Bool) throws(StorageError) -> any StorageFile {
        let flags = O_RDWR | O_CLOEXEC | (create ? O_CREAT : 0)
        // Owner only: the data is the users' (a shared machine's other accounts must not read it).
        let fd = Glibc.open(path, flags, 0o600)
        guard fd >= 0 else { throw posixError("open \(path)") }
        return PosixFile(fd: fd, path: path)
    }

    public func list(_ directory: String) throws(StorageError) -> [String] {
        guard let dir = opendir(directory) else { throw posixError("opendir \(directory)") }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafePointer(to: entry.pointee.d_name) {
                $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    public func rename(_ from: String, _ to: String) throws(StorageError) {
        guard Glibc.rename(from, to) == 0 else { throw posixError("rename \(from) \(to)") }
    }

    public func remove(_ path: String) throws(StorageError) {
        guard unlink(path) == 0 else { throw posixError("unlink \(path)") }
    }

    public func makeDirectory(_ path: String) throws(StorageError) {
        do {
            try FileManager.default.createDirectory(
                atPath: path, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        } catch {
            throw .io("mkdir \(path): \(error)")
        }
    }

    public func syncDirectory(_ path: String) throws(StorageError) {
        let fd = Glibc.open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw posixError("open directory \(path)") }
        defer { Glibc.close(fd) }
        guard fsync(fd) == 0 else { throw posixError("fsync directory \(path)") }
    }

    public func exists(_ path: String) -> Bool {
        access(path, F_OK) == 0
    }
}

/// The `errno` of the failed call as a `StorageError`.
func posixError(_ operation: String) -> StorageError {
    .io("\(operation): \(String(cString: strerror(errno)))")
}

/// A file descriptor used only with positional reads and writes.
///
/// Not `Sendable` by declaration, but pread/pwrite/fsync on one descriptor are thread-safe, and
/// the engine never closes a file another thread is still using (merge opens its own handles).
final class PosixFile: StorageFile {
    private var fd: Int32
    let path: String

    init(fd: Int32, path: String) {
        self.fd = fd
        self.path = path
    }

    deinit { close() }

    var size: UInt64 {
        var st = stat()
        guard fd >= 0, fstat(fd, &st) == 0 else { return 0 }
        return UInt64(st.st_size)
    }

    func read(at offset: UInt64, count: Int) throws(StorageError) -> [UInt8] {
        guard fd >= 0 else { throw .closed }
        var result = [UInt8](repeating: 0, count: count)
        var done = 0
        while done < count {
            let n = result.withUnsafeMutableBytes { buf in
                pread(fd, buf.baseAddress! + done, count - done, off_t(offset) + off_t(done))
            }
            if n < 0 {
                if errno == EINTR { continue }
                throw posixError("pread \(path)")
            }
            if n == 0 { break }
            done += n
        }
        if done < count { result.removeLast(count - done) }
        return result
    }

    func write(_ bytes: [UInt8], at offset: UInt64) throws(StorageError) {
        guard fd >= 0 else { throw .closed }
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeBytes { buf in
                pwrite(fd, buf.baseAddress! + done, bytes.count - done, off_t(offset) + off_t(done))
            }
            if n < 0 {
                if errno == EINTR { continue }
                throw posixError("pwrite \(path)")
            }
            done += n
        }
    }

    func sync() throws(StorageError) {
        guard fd >= 0 else { throw .closed }
        // fdatasync: the size change of an append is data for this purpose, and it skips mtime.
        guard fdatasync(fd) == 0 else { throw posixError("fdatasync \(path)") }
    }

    func truncate(to size: UInt64) throws(StorageError) {
        guard fd >= 0 else { throw .closed }
        guard ftruncate(fd, off_t(size)) == 0 else { throw posixError("ftruncate \(path)") }
    }

    /// The read-only shared mapping of the file (nil: none yet), and its length.
    private var map: UnsafeMutableRawPointer?
    private var mapLength = 0

    func mapped(count: Int, reserve: Int) -> UnsafeRawBufferPointer? {
        guard fd >= 0, count > 0 else { return nil }
        if let map, mapLength >= count { return UnsafeRawBufferPointer(start: map, count: count) }
        unmap()
        // Mapped beyond the end of the file, so that appends do not need a new mapping: the pages
        // past the end are never touched (the caller reads only bytes the file holds).
        let length = max(count, reserve)
        guard let p = mmap(nil, length, PROT_READ, MAP_SHARED, fd, 0), p != MAP_FAILED else { return nil }
        map = p
        mapLength = length
        return UnsafeRawBufferPointer(start: p, count: count)
    }

    private func unmap() {
        if let map { munmap(map, mapLength) }
        map = nil
        mapLength = 0
    }

    func close() {
        unmap()
        if fd >= 0 {
            Glibc.close(fd)
            fd = -1
        }
    }
}
