import TernRESP

extension CommandProcessor {
    /// Redis 7.0's `processCommand`: inside MULTI, a command flagged `no_multi` (SAVE; Redis's
    /// SHUTDOWN, SYNC and PSYNC, which Tern does not serve) is refused with Redis's text, before
    /// the ACL and maxmemory checks, and the transaction is aborted (EXEC answers EXECABORT).
    func noMultiRefusal(_ name: String, _ args: [[UInt8]], _ session: inout Session) -> RESPValue? {
        guard session.transaction != nil, let spec = commandTable.spec(for: args),
            spec.flags.contains("no_multi")
        else { return nil }
        session.transactionAborted = true
        return Self.err("Command not allowed inside a transaction")
    }
}
