/// Every way a storage operation can fail.
///
/// Corruption (`damaged`) is an operating condition the replication layer repairs from peers;
/// `io` is the operating system refusing; the size cases are caller errors the server maps to
/// client replies. Broken internal invariants are not errors: they trap (`precondition`).
public enum StorageError: Error, Equatable, Sendable {
    /// A system call failed: the operation and the `errno` text.
    case io(String)
    /// The latest record of `key` failed its checksum: its value is not served until repaired.
    case damaged(key: [UInt8])
    /// The value exceeds `BitcaskOptions.maxValueSizeBytes`.
    case valueTooLarge
    /// The key exceeds `BitcaskOptions.maxKeySizeBytes` (at most 65535: the length is 16 bits on disk).
    case keyTooLarge
    /// The store was closed.
    case closed
    /// The data directory holds something the engine cannot interpret (e.g. an unknown file name).
    case corruptDirectory(String)
    /// A merge is already running; only one runs at a time.
    case mergeInProgress
    /// A test-only fault hook (`BitcaskOptions.mergeFaultHook`) stopped a merge at this step.
    case injectedFault(String)
    /// Bytes that were fsynced are gone (a data file shorter than its durable mark or its hint
    /// file says, or the newest file missing): this replica may have forgotten acknowledged
    /// writes and its promises, so it must not serve or vote from this directory as it is
    /// (docs/STORAGE.md, "Lost durable bytes").
    case lostDurableBytes(String)
}
