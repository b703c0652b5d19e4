import NIOConcurrencyHelpers
import TernConsensus
import TernCore
import TernPlacement

/// Redis's keyspace notifications (docs/PUBSUB.md, "Keyspace notifications"): the
/// `notify-keyspace-events` setting, shared by every node, and the publishing of the events the
/// proposers raise (`KeyspaceEvents`) as `__keyspace@0__:<key>` and `__keyevent@0__:<event>`
/// messages through pub/sub, cluster-wide.
public final class KeyspaceNotifier: Sendable {
    /// Peer service kind of a `notify-keyspace-events` change (`Node.setServiceHandler`).
    public static let serviceKind: UInt8 = 8

    // Redis's flag bits (server.h).
    static let keyspace = 1 << 0
    static let keyevent = 1 << 1
    static let generic = 1 << 2
    static let string = 1 << 3
    static let list = 1 << 4
    static let set = 1 << 5
    static let hash = 1 << 6
    static let zset = 1 << 7
    static let expired = 1 << 8
    static let evicted = 1 << 9
    static let stream = 1 << 10
    static let keyMiss = 1 << 11
    static let module = 1 << 12
    static let new = 1 << 13
    /// `A`: every class but key-miss and new.
    static let all = generic | string | list | set | hash | zset | expired | evicted | stream | module

    /// The flags (Redis's bits); 0: off.
    let flags = NIOLockedValueBox(0)
    let node: Node?
    let pubsub: PubSubService?

    /// A notifier that only keeps the setting (a processor without a node: tests).
    public init() {
        node = nil
        pubsub = nil
    }

    /// The node's notifier: takes the setting from the other nodes and publishes the node's
    /// events through `pubsub`.
    public init(node: Node, pubsub: PubSubService) {
        self.node = node
        self.pubsub = pubsub
        node.setServiceHandler(Self.serviceKind) { [weak self] _, payload in
            var r = ByteReader(payload)
            guard let f = r.u32(), r.atEnd else { return }
            self?.apply(Int(f))
        }
    }

    /// The setting as CONFIG GET shows it.
    public var text: String { Self.format(flags.withLockedValue { $0 }) }

    /// Sets the flags here and sends them to every other node (best effort: a node that is down
    /// keeps its own until it restarts with the default, off).
    public func set(_ f: Int) {
        apply(f)
        guard let node else { return }
        var w = ByteWriter()
        w.u32(UInt32(f))
        for n in node.map.nodes where n.id != node.id {
            node.sendService(Self.serviceKind, w.bytes, to: n.id)
        }
    }

    func apply(_ f: Int) {
        flags.withLockedValue { $0 = f }
        guard let node else { return }
        // Proposers compute events only while some class and K or E are on.
        let on = f & (Self.keyspace | Self.keyevent) != 0 && f & ~(Self.keyspace | Self.keyevent) != 0
        var sink: (@Sendable ([KeyEvent]) -> Void)?
        if on { sink = { [weak self] events in self?.publish(events) } }
        node.keyEventSink.withLockedValue { [sink] in $0 = sink }
    }

    /// Publishes `events` (of instances this node got chosen) as the flags say.
    public func publish(_ events: [KeyEvent]) {
        guard let pubsub else { return }
        for (channel, message) in Self.messages(events, flags: flags.withLockedValue { $0 }) {
            _ = pubsub.publish(channel: channel, message: message)
        }
    }

    /// The (channel, message) pairs Redis publishes for `events` under `flags`: keyspace before
    /// keyevent, event by event.
    static func messages(_ events: [KeyEvent], flags f: Int) -> [([UInt8], [UInt8])] {
        var out: [([UInt8], [UInt8])] = []
        for e in events where f & eventClass(e.event) != 0 {
            let name = Array(e.event.utf8)
            if f & keyspace != 0 { out.append((Array("__keyspace@0__:".utf8) + e.key, name)) }
            if f & keyevent != 0 { out.append((Array("__keyevent@0__:".utf8) + name, e.key)) }
        }
        return out
    }

    /// The class of a Redis event name.
    static func eventClass(_ event: String) -> Int {
        switch event {
        case "set", "setrange", "incrby", "incrbyfloat", "append": return string
        case "lpush", "rpush", "lpop", "rpop", "linsert", "lset", "lrem", "ltrim", "sortstore": return list
        case "sadd", "srem", "spop", "sinterstore", "sunionstore", "sdiffstore": return set
        case "hset", "hincrby", "hincrbyfloat", "hdel": return hash
        case "zadd", "zincr", "zrem", "zrembyscore", "zrembyrank", "zrembylex", "zpopmin", "zpopmax",
            "zunionstore", "zinterstore", "zdiffstore", "zrangestore", "georadiusstore", "geosearchstore":
            return zset
        case "expired": return expired
        case "evicted": return evicted
        case "new": return new
        case "keymiss": return keyMiss
        default:
            // Streams' events (`xadd`, `xgroup-create`, …) and the generic ones (`del`, `expire`,
            // `rename_from`, `persist`, `copy_to`, `restore`).
            return event.hasPrefix("x") ? stream : generic
        }
    }

    /// Redis's `keyspaceEventsStringToFlags`: nil for a character that names no class.
    static func parse(_ text: [UInt8]) -> Int? {
        var f = 0
        for c in text {
            switch c {
            case UInt8(ascii: "A"): f |= all
            case UInt8(ascii: "g"): f |= generic
            case UInt8(ascii: "$"): f |= string
            case UInt8(ascii: "l"): f |= list
            case UInt8(ascii: "s"): f |= set
            case UInt8(ascii: "h"): f |= hash
            case UInt8(ascii: "z"): f |= zset
            case UInt8(ascii: "x"): f |= expired
            case UInt8(ascii: "e"): f |= evicted
            case UInt8(ascii: "K"): f |= keyspace
            case UInt8(ascii: "E"): f |= keyevent
            case UInt8(ascii: "t"): f |= stream
            case UInt8(ascii: "m"): f |= keyMiss
            case UInt8(ascii: "d"): f |= module
            case UInt8(ascii: "n"): f |= new
            default: return nil
            }
        }
        return f
    }

    /// Redis's `keyspaceEventsFlagsToString`.
    static func format(_ f: Int) -> String {
        var s = ""
        if f & all == all {
            s = "A"
        } else {
            for (bit, c) in [
                (generic, "g"), (string, "$"), (list, "l"), (set, "s"), (hash, "h"), (zset, "z"),
                (expired, "x"),
                (evicted, "e"), (stream, "t"), (module, "d"), (new, "n"),
            ] where f & bit != 0 {
                s += c
            }
        }
        if f & keyspace != 0 { s += "K" }
        if f & keyevent != 0 { s += "E" }
        if f & keyMiss != 0 { s += "m" }
        return s
    }

    static let invalidFlags = "Invalid event class character. Use 'Ag$lshzxeKEtmdn'."
}
