/// Redis Cluster's hash tag rule (CLUSTER KEYSLOT; hash-tag groups, docs/DATA.md).
public enum HashTag {
    /// The bytes between the first `{` and the first `}` after it, when there are any; nil when
    /// the key has no tag (no `{`, no `}` after it, or `{}`), as Redis Cluster decides.
    public static func of(_ key: [UInt8]) -> ArraySlice<UInt8>? {
        guard let open = key.firstIndex(of: UInt8(ascii: "{")),
            let close = key[(open + 1)...].firstIndex(of: UInt8(ascii: "}")), close > open + 1
        else { return nil }
        return key[(open + 1)..<close]
    }
}

/// How Redis keys map onto Paxos keys: a cluster-wide setting fixed when the cluster is created
/// (the cluster map's `key_layout`, docs/PLACEMENT.md), because a node with the other layout
/// would not see the data written with this one (docs/DATA.md, "Hash-tag groups").
public enum KeyLayout: String, Sendable, Hashable, CaseIterable {
    /// Every key is its own Paxos key (the default).
    case perKey = "per-key"
    /// Keys with a hash tag are members of their tag's group key (`\0grp:<tag>`).
    case hashTagGroups = "hash-tag-groups"

    /// The prefix of group keys. The zero byte reserves it: Redis commands refuse keys that start
    /// with one, so no user key can collide with a group key.
    public static let groupPrefix: [UInt8] = [0] + Array("grp:".utf8)

    /// The group key of `key`; nil when `key` is its own Paxos key (this layout is `perKey`, the
    /// key has no tag, or it is a service's reserved key `\0…`).
    public func groupKey(of key: [UInt8]) -> [UInt8]? {
        guard self == .hashTagGroups, key.first != 0, let tag = HashTag.of(key) else { return nil }
        return Self.groupPrefix + tag
    }

    /// The Paxos key that holds `key`: its group key, or `key` itself.
    public func paxosKey(_ key: [UInt8]) -> [UInt8] { groupKey(of: key) ?? key }

    /// True for a group key (its value is a group's members).
    public static func isGroupKey(_ key: [UInt8]) -> Bool { key.starts(with: groupPrefix) }
}
