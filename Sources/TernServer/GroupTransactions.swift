import TernConsensus
import TernCore
import TernRESP

// Transactions on the keys of one hash-tag group (docs/DATA.md, "Hash-tag groups"): with the key
// layout `hash-tag-groups`, keys that share a `{tag}` are members of one Paxos key, so MULTI … EXEC
// on several of them runs as one instance of that key — atomic and linearizable — and WATCH may
// name any of them.
extension CommandProcessor {
    /// The refusal of a transaction that spans Paxos keys.
    var crossKeyError: RESPValue {
        guard keyLayout == .hashTagGroups else { return Self.crossKey }
        return .error(
            "CROSSSLOT Tern transactions take commands on one key, or on keys that share one {hash tag}: "
                + "each is one Paxos group (docs/DATA.md)")
    }

    /// EXEC's plan when its keys (commands and WATCHed keys) are several members of one group:
    /// one `transaction` write on the group key. Nil when they are not (one key, no group, or
    /// keys of several groups: the caller answers those).
    func groupExec(_ calls: [DataCall], watched: [[UInt8]: String?], inPlace: [Int: RESPValue])
        -> CommandPlan?
    {
        let keys = Set(calls.map(\.key) + watched.keys)
        guard keys.count > 1, let first = keys.first, let group = keyLayout.groupKey(of: first),
            keys.allSatisfy({ keyLayout.groupKey(of: $0) == group })
        else { return nil }
        var args: [[UInt8]] = [Array(String(max(0, clock() / 1000)).utf8), Array(String(watched.count).utf8)]
        for (k, digest) in watched.sorted(by: { $0.key.lexicographicallyPrecedes($1.key) }) {
            // WATCH's read had not answered when EXEC came: treat the key as changed.
            guard let d = digest else { return .reply(.array(nil)) }
            args += [k, Array(d.utf8)]
        }
        if calls.isEmpty { return .reply(.array([])) }
        for c in calls {
            args.append(c.write ? [UInt8(ascii: "w")] : [UInt8(ascii: "r")])
            args.append(c.key)
            args.append(Array(String(c.args.count).utf8))
            args += c.args
        }
        let op = Operation.group(GroupOperation(.transaction(args), bytesMax: maxValueBytes))
        return .requests([(group, .write(op))], Self.execAnswer(calls, inPlace))
    }
}
