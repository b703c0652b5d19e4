// Hash-tag groups (docs/DATA.md, "Hash-tag groups"): with the cluster's key layout
// `hash-tag-groups`, every Redis key with a Redis Cluster hash tag (`{user}:inbox`, `blist{t}`) is
// kept as a member of ONE Paxos key for its tag, `\0grp:<tag>`, so that commands and transactions
// on keys that share a tag run as one Paxos instance: atomic and linearizable together.
//
// The seam is one pure mapping: (user key, request) → (group key, request on the member), and the
// group's reply → the member's reply (`route`, `memberReply`). Command code never sees a group: a
// member reads, expires, counts in SCAN and raises its keyspace events as an ordinary key.
//
// A group's value (`GroupValue`) is its members, sorted by key, each with its own kind, deadline
// and bytes: `u32 n | (blob key, u8 kind, u64 deadline, blob bytes)…`. Expiry stays per member and
// is decided through the protocol, as for a key of its own: every instance of the group first
// removes the members whose deadline is at or below the proposer's horizon.
import TernCore

extension KeyLayout {
    /// `request` on `key`, as it runs: on the group key, applied to the member, or unchanged.
    /// `groupBytesMax` bounds a group's encoded size (the server's `max_value_bytes`).
    public func route(_ key: [UInt8], _ request: KeyRequest, groupBytesMax: Int) -> (
        key: [UInt8], request: KeyRequest
    ) {
        guard let g = groupKey(of: key) else { return (key, request) }
        switch request {
        case .read, .readData: return (g, .read)
        case .write(let op):
            return (g, .write(.group(GroupOperation(.member(key, op), bytesMax: groupBytesMax))))
        }
    }

    /// The reply a request on `key` gets, from the reply its routed request got: a read of the
    /// group answers the member's value, as a read of a key of its own would.
    public func reply(_ key: [UInt8], _ reply: NodeReply) -> NodeReply {
        guard groupKey(of: key) != nil else { return reply }
        switch reply {
        case .value(let bytes): return GroupValue(bytes).member(key).map(Self.outcome) ?? .value(nil)
        case .typed(let v): return GroupValue(v.bytes).member(key).map(Self.outcome) ?? .value(nil)
        default: return reply
        }
    }

    /// A member's value as a read of a key of its own answers it.
    static func outcome(_ v: StoredValue) -> NodeReply {
        v.kind == .string && v.deadlineMs == 0 ? .value(v.bytes) : .typed(v)
    }
}

/// An operation on a group key (`Operation.group`).
public struct GroupOperation: Sendable, Hashable {
    public enum Kind: Sendable, Hashable {
        /// `op` applied to member `key` as if the member were a Paxos key of its own.
        case member([UInt8], Operation)
        /// A transaction over members (MULTI … EXEC on keys of one tag): `nowMs guards steps…`,
        /// see `GroupValue.applyTransaction`.
        case transaction([[UInt8]])
        /// Nothing but what every instance of a group does first: remove the members past the
        /// proposer's horizon (the paced expiry sweep); answers how many members remain.
        case sweep
    }
    public var kind: Kind
    /// The group's encoded size may not pass this (0: no bound): a write that would make it
    /// larger is refused and changes nothing.
    public var bytesMax: Int
    public init(_ kind: Kind, bytesMax: Int) {
        self.kind = kind
        self.bytesMax = bytesMax
    }
}

/// The members of a group, sorted by key.
public struct GroupValue: Sendable, Hashable {
    public var members: [(key: [UInt8], value: StoredValue)] = []

    public static func == (a: GroupValue, b: GroupValue) -> Bool {
        a.members.count == b.members.count
            && zip(a.members, b.members).allSatisfy { $0.key == $1.key && $0.value == $1.value }
    }
    public func hash(into h: inout Hasher) {
        for m in members {
            h.combine(m.key)
            h.combine(m.value)
        }
    }

    public init() {}

    /// Decodes a group key's bytes (nil or malformed: no members).
    public init(_ bytes: [UInt8]?) {
        guard let bytes else { return }
        var r = ByteReader(bytes)
        guard let n = r.u32() else { return }
        members.reserveCapacity(Int(min(n, 1 << 16)))
        for _ in 0..<n {
            guard let k = r.blob(), let kind = r.u8().flatMap(ValueKind.init(rawValue:)), let d = r.u64(),
                let b = r.blob()
            else { break }
            members.append((k, StoredValue(kind: kind, deadlineMs: d, bytes: b)))
        }
    }

    public var encoded: [UInt8] {
        var w = ByteWriter()
        w.u32(UInt32(members.count))
        for m in members {
            w.blob(m.key)
            w.u8(m.value.kind.rawValue)
            w.u64(m.value.deadlineMs)
            w.blob(m.value.bytes)
        }
        return w.bytes
    }

    private func position(_ key: [UInt8]) -> (index: Int, found: Bool) {
        let i = members.partitionPoint { $0.key.lexicographicallyPrecedes(key) }
        return (i, i < members.count && members[i].key == key)
    }

    /// The member `key`'s value, nil when absent.
    public func member(_ key: [UInt8]) -> StoredValue? {
        let p = position(key)
        return p.found ? members[p.index].value : nil
    }

    /// Sets (or with nil removes) member `key`.
    public mutating func set(_ key: [UInt8], _ value: StoredValue?) {
        let p = position(key)
        switch (p.found, value) {
        case (true, let v?): members[p.index].value = v
        case (true, nil): members.remove(at: p.index)
        case (false, let v?): members.insert((key, v), at: p.index)
        case (false, nil): break
        }
    }

    /// The member as a key's own value (no request window: the group's holds the ids).
    func keyValue(_ key: [UInt8]) -> KeyValue {
        guard let v = member(key) else { return KeyValue() }
        return KeyValue(bytes: v.bytes, kind: v.kind, deadlineMs: v.deadlineMs)
    }

    mutating func store(_ key: [UInt8], _ v: KeyValue) {
        set(key, v.bytes.map { StoredValue(kind: v.kind, deadlineMs: v.deadlineMs, bytes: $0) })
    }

    /// Removes every member whose deadline is at or below `horizonMs`; their keys.
    mutating func removeExpired(horizonMs: UInt64) -> [[UInt8]] {
        guard horizonMs != 0 else { return [] }
        var gone: [[UInt8]] = []
        members.removeAll { m in
            let due = m.value.deadlineMs != 0 && m.value.deadlineMs <= horizonMs
            if due { gone.append(m.key) }
            return due
        }
        return gone
    }

    /// True when a member's deadline is at or below `horizonMs` (the sweep's question).
    public func hasExpired(horizonMs: UInt64) -> Bool {
        horizonMs != 0 && members.contains { $0.value.deadlineMs != 0 && $0.value.deadlineMs <= horizonMs }
    }

    /// The members a read at `horizonMs` may list (SCAN, KEYS, DBSIZE): those not yet due.
    public func live(horizonMs: UInt64) -> [(key: [UInt8], value: StoredValue)] {
        members.filter { $0.value.deadlineMs == 0 || horizonMs == 0 || $0.value.deadlineMs > horizonMs }
    }

    /// Applies `op` to the group key's value `v` (the proposer, building an instance). Members past
    /// the horizon are removed first (each raises `expired`), then the operation runs on its
    /// member(s); a result that would pass `bytesMax` is refused and leaves the group unchanged.
    static func apply(
        _ op: GroupOperation, to v: inout KeyValue, id: RequestID, instance: UInt64, horizonMs: UInt64,
        events: inout [String]?
    ) -> OperationResult {
        var group = GroupValue(v.bytes)
        var raised: [String] = []
        for k in group.removeExpired(horizonMs: horizonMs) {
            raised.append(KeyspaceEvents.memberEvent(k, KeyspaceEvents.expired))
        }
        let before = group
        let result: OperationResult
        switch op.kind {
        case .member(let key, let inner):
            var sub: [String]? = events == nil ? nil : []
            let after = group.keyValue(key).applying(
                [(inner, id)], window: 1, instance: instance, horizonMs: horizonMs, events: &sub)
            group.store(key, after)
            result = after.recent.last?.result ?? .ok
            for e in sub ?? [] { raised.append(KeyspaceEvents.memberEvent(key, e)) }
        case .transaction(let args):
            var sub: [([UInt8], String)]? = events == nil ? nil : []
            result = .data(
                group.applyTransaction(args, id: id, instance: instance, horizonMs: horizonMs, events: &sub))
            for (k, e) in sub ?? [] { raised.append(KeyspaceEvents.memberEvent(k, e)) }
        case .sweep:
            result = .data(.integer(Int64(group.members.count)))
        }
        var encoded = group.encoded
        if op.bytesMax > 0 && encoded.count > op.bytesMax && encoded.count > before.encoded.count {
            // Too large: nothing of this operation happens (the expired members stay removed).
            encoded = before.encoded
            group = before
            raised.removeAll { !$0.hasSuffix("\0" + KeyspaceEvents.expired) }
            events?.append(contentsOf: raised)
            v.bytes = before.members.isEmpty ? nil : encoded
            return .data(
                .error(
                    "ERR the hash-tag group would pass max_value_bytes (\(op.bytesMax) bytes): a group is "
                        + "one value (docs/DATA.md)"))
        }
        events?.append(contentsOf: raised)
        v.kind = .string
        v.deadlineMs = 0
        v.bytes = group.members.isEmpty ? nil : encoded
        return result
    }

    /// One command of a script run on a local copy of its keys (`kind`: `w`, `r` or `x` as in a
    /// transaction), applied by the same steps a transaction's instance applies; its reply.
    public mutating func applyScriptStep(
        kind: [UInt8], key: [UInt8], _ args: [[UInt8]], nowMs: UInt64, seed: UInt64
    )
        -> DataReply
    {
        var events: [([UInt8], String)]? = nil
        let step: [[UInt8]] = [
            Array(String(nowMs).utf8), Array("0".utf8), kind, key, Array(String(args.count).utf8),
        ]
        let r = applyTransaction(
            step + args, id: RequestID(client: 0, counter: seed), instance: seed, horizonMs: nowMs,
            events: &events)
        guard case .array(let rs?) = r, rs.count == 1 else { return r }
        return rs[0]
    }

    /// A transaction over members, as one instance: `nowMs | guards n | (key digest)… | (w|r|x key
    /// n arg…)…` (`x`: a command across members, its keys in its arguments; `key` unused). A guard (WATCH) whose member's fingerprint (`DataModel.digest`) differs makes the
    /// whole transaction run nothing and answer a nil array; otherwise each step applies (w) or
    /// answers (r) on its member in order, each seeing the steps before it.
    mutating func applyTransaction(
        _ args: [[UInt8]], id: RequestID, instance: UInt64, horizonMs: UInt64,
        events: inout [([UInt8], String)]?
    ) -> DataReply {
        guard args.count >= 2, let now = DataModel.int(args[0]), let guards = DataModel.int(args[1]),
            guards >= 0, 2 + 2 * Int(guards) <= args.count
        else { return .syntax }
        var i = 2
        for _ in 0..<guards {
            if Array(DataModel.digest(member(args[i])).utf8) != args[i + 1] { return .array(nil) }
            i += 2
        }
        var replies: [DataReply] = []
        var k: UInt64 = 0
        while i + 2 < args.count {
            let write = args[i] == [UInt8(ascii: "w")]
            let cross = args[i] == [UInt8(ascii: "x")]
            let key = args[i + 1]
            guard let n = DataModel.int(args[i + 2]), n >= 1, i + 3 + Int(n) <= args.count else {
                return .syntax
            }
            let sub = Array(args[(i + 3)..<(i + 3 + Int(n))])
            i += 3 + Int(n)
            k += 1
            let seed = (instance &* 0x9E37_79B9_7F4A_7C15 ^ id.counter) &+ k
            if cross {
                // A command across members (LMOVE, SMOVE, RENAME, …): HashTagGroupCommands.swift.
                replies.append(applyCross(sub, seed: seed, horizonMs: horizonMs, events: &events))
                continue
            }
            var v = keyValue(key)
            // As between merged ops: an earlier step may have left a deadline at or below the horizon.
            if v.isExpired(horizonMs: horizonMs) {
                DataModel.clear(&v)
                events?.append((key, KeyspaceEvents.expired))
            }
            if write {
                let before = v
                let reply = DataModel.apply(sub, to: &v, seed: seed, horizonMs: horizonMs)
                if events != nil {
                    for e in KeyspaceEvents.events(sub, reply: reply, before: before, after: v, seed: seed) {
                        events?.append((key, e))
                    }
                }
                replies.append(reply)
            } else {
                let value = v.bytes.map { StoredValue(kind: v.kind, deadlineMs: v.deadlineMs, bytes: $0) }
                replies.append(DataModel.read(sub, value, nowMs: UInt64(max(0, now))))
            }
            store(key, v)
        }
        return .array(replies)
    }
}

extension KeyspaceEvents {
    /// The in-value form of event `event` of group member `key`: the proposer lists an instance's
    /// events as strings, and a group's instance raises them for its members, not for the group
    /// key. `KeyEvent.raised(by:_:)` reads it back. Event names never hold a zero byte.
    static func memberEvent(_ key: [UInt8], _ event: String) -> String {
        // Latin-1: one scalar per byte, so any key survives the trip through a String.
        var s = "\0"
        s.unicodeScalars.append(contentsOf: key.map { Unicode.Scalar($0) })
        return s + "\0" + event
    }
}

extension KeyEvent {
    /// The event `event` raised by an instance of Paxos key `key`: the key's own, or a group
    /// member's (`KeyspaceEvents.memberEvent`).
    public static func raised(by key: [UInt8], _ event: String) -> KeyEvent {
        let scalars = Array(event.unicodeScalars)
        guard scalars.first == "\0", let last = scalars.lastIndex(of: "\0"), last > 0 else {
            return KeyEvent(key: key, event: event)
        }
        let member = scalars[1..<last].map { UInt8(truncatingIfNeeded: $0.value) }
        var name = ""
        name.unicodeScalars.append(contentsOf: scalars[(last + 1)...])
        return KeyEvent(key: member, event: name)
    }
}
