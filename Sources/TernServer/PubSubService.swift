import NIOConcurrencyHelpers
import TernConsensus
import TernCore
import TernPlacement
import TernRESP

/// One node's pub/sub subscriptions: channels and patterns, by connection. Delivery is local;
/// `PubSubService` carries a PUBLISH to every other node (docs/PUBSUB.md). Thread-safe (one
/// lock); pushes run outside it.
public final class PubSubHub: Sendable {
    struct State {
        var channels: [[UInt8]: [UInt64: ConnectionOutlet]] = [:]
        var patterns: [[UInt8]: [UInt64: ConnectionOutlet]] = [:]
        /// Outlet id → its channels and patterns (the connection's counts, and the clean-up).
        var byOutlet: [UInt64: (channels: Set<[UInt8]>, patterns: Set<[UInt8]>)] = [:]
    }
    let state = NIOLockedValueBox(State())

    public init() {}

    /// Subscribes `outlet` to `name` (a channel, or a pattern when `pattern`); the connection's
    /// count of channels and patterns after it.
    @discardableResult
    public func subscribe(_ outlet: ConnectionOutlet, _ name: [UInt8], pattern: Bool) -> Int {
        let (first, count) = state.withLockedValue { s -> (Bool, Int) in
            let isNew = s.byOutlet[outlet.id] == nil
            var mine = s.byOutlet[outlet.id] ?? ([], [])
            if pattern {
                s.patterns[name, default: [:]][outlet.id] = outlet
                mine.patterns.insert(name)
            } else {
                s.channels[name, default: [:]][outlet.id] = outlet
                mine.channels.insert(name)
            }
            s.byOutlet[outlet.id] = mine
            return (isNew, mine.channels.count + mine.patterns.count)
        }
        if first { outlet.whenClosed { [self] in self.removeAll(outlet.id) } }
        return count
    }

    /// Ends `outlet`'s subscription to `name`; the connection's count after it.
    @discardableResult
    public func unsubscribe(_ outlet: ConnectionOutlet, _ name: [UInt8], pattern: Bool) -> Int {
        state.withLockedValue { s in
            if pattern {
                s.patterns[name]?[outlet.id] = nil
                if s.patterns[name]?.isEmpty == true { s.patterns[name] = nil }
                s.byOutlet[outlet.id]?.patterns.remove(name)
            } else {
                s.channels[name]?[outlet.id] = nil
                if s.channels[name]?.isEmpty == true { s.channels[name] = nil }
                s.byOutlet[outlet.id]?.channels.remove(name)
            }
            let mine = s.byOutlet[outlet.id]
            return (mine?.channels.count ?? 0) + (mine?.patterns.count ?? 0)
        }
    }

    /// The channels (or patterns) `outlet` subscribed to, in byte order.
    public func names(_ outlet: ConnectionOutlet, pattern: Bool) -> [[UInt8]] {
        state.withLockedValue { s in
            let mine = s.byOutlet[outlet.id]
            return Array((pattern ? mine?.patterns : mine?.channels) ?? []).sorted {
                $0.lexicographicallyPrecedes($1)
            }
        }
    }

    func removeAll(_ outletID: UInt64) {
        state.withLockedValue { s in
            guard let mine = s.byOutlet.removeValue(forKey: outletID) else { return }
            for c in mine.channels {
                s.channels[c]?[outletID] = nil
                if s.channels[c]?.isEmpty == true { s.channels[c] = nil }
            }
            for p in mine.patterns {
                s.patterns[p]?[outletID] = nil
                if s.patterns[p]?.isEmpty == true { s.patterns[p] = nil }
            }
        }
    }

    /// Delivers `message` on `channel` to this node's subscribers (channel and matching patterns);
    /// how many connections got it.
    @discardableResult
    public func deliver(channel: [UInt8], message: [UInt8]) -> Int {
        let (direct, patterned) = state.withLockedValue { s in
            (
                Array((s.channels[channel] ?? [:]).values),
                s.patterns.filter { Glob.matches($0.key, channel) }.flatMap { p in
                    p.value.values.map { (p.key, $0) }
                }
            )
        }
        for o in direct {
            o.push(.push([.bulkString(Array("message".utf8)), .bulkString(channel), .bulkString(message)]))
        }
        for (p, o) in patterned {
            o.push(
                .push([
                    .bulkString(Array("pmessage".utf8)), .bulkString(p), .bulkString(channel),
                    .bulkString(message),
                ]))
        }
        return direct.count + patterned.count
    }

    /// Channels with at least one subscriber here, matching `pattern` if given (PUBSUB CHANNELS).
    public func activeChannels(matching pattern: [UInt8]?) -> [[UInt8]] {
        state.withLockedValue { s in
            s.channels.keys.filter { c in pattern.map { Glob.matches($0, c) } ?? true }
        }.sorted { $0.lexicographicallyPrecedes($1) }
    }

    /// Subscribers of `channel` here (PUBSUB NUMSUB).
    public func subscriberCount(_ channel: [UInt8]) -> Int {
        state.withLockedValue { $0.channels[channel]?.count ?? 0 }
    }

    /// Patterns with at least one subscriber here (PUBSUB NUMPAT).
    public var patternCount: Int { state.withLockedValue { $0.patterns.count } }
}

/// Redis's pub/sub for any channel: `SUBSCRIBE`, `UNSUBSCRIBE`, `PSUBSCRIBE`, `PUNSUBSCRIBE`,
/// `PUBLISH`, `PUBSUB CHANNELS|NUMSUB|NUMPAT`. A PUBLISH on any node reaches subscribers on every
/// node: delivered here and sent to every other node (peer service kind 6), best effort as in
/// Redis — not stored, not retried; a node that is down or partitioned misses it. The sync
/// notices (`sync:<uid>` channels, docs/SYNC.md) are published the same way, locally on each
/// node. docs/PUBSUB.md.
public struct PubSubService: CommandModule {
    /// Peer service kind of published messages (`Node.setServiceHandler`).
    public static let serviceKind: UInt8 = 6

    public let node: Node
    public let hub: PubSubHub

    /// Registers the node's handler for messages published elsewhere.
    public init(node: Node, hub: PubSubHub = PubSubHub()) {
        self.node = node
        self.hub = hub
        node.setServiceHandler(Self.serviceKind) { _, payload in
            var r = ByteReader(payload)
            guard let channel = r.blob(), let message = r.blob(), r.atEnd else { return }
            hub.deliver(channel: channel, message: message)
        }
    }

    /// Delivers here and sends to every other node; the number of this node's receivers (what
    /// PUBLISH answers: the count is this node's, as in Redis Cluster).
    public func publish(channel: [UInt8], message: [UInt8]) -> Int {
        var w = ByteWriter()
        w.blob(channel)
        w.blob(message)
        for n in node.map.nodes where n.id != node.id {
            node.sendService(Self.serviceKind, w.bytes, to: n.id)
        }
        return hub.deliver(channel: channel, message: message)
    }

    public func plan(name: String, args: [[UInt8]], session: inout Session) -> CommandPlan? {
        let n = args.count
        switch name {
        case "publish":
            guard n == 3 else { return .reply(CommandProcessor.arity(name)) }
            return .reply(.integer(Int64(publish(channel: args[1], message: args[2]))))
        case "subscribe", "psubscribe", "unsubscribe", "punsubscribe":
            let pattern = name.hasPrefix("p")
            let subscribe = name.hasSuffix("subscribe") && !name.contains("unsub")
            if subscribe && n < 2 { return .reply(CommandProcessor.arity(name)) }
            var targets = Array(args.dropFirst())
            let mine = pattern ? session.patterns : session.channels
            if !subscribe && targets.isEmpty { targets = mine.sorted { $0.lexicographicallyPrecedes($1) } }
            // Counts as Redis reports them: the connection's channels and patterns after each one.
            var frames: [RESPValue] = []
            for t in targets {
                if subscribe {
                    if pattern { session.patterns.insert(t) } else { session.channels.insert(t) }
                } else {
                    if pattern { session.patterns.remove(t) } else { session.channels.remove(t) }
                }
                frames.append(
                    .push([
                        .bulkString(Array(name.utf8)), .bulkString(t),
                        .integer(Int64(session.channels.count + session.patterns.count)),
                    ]))
            }
            if frames.isEmpty {
                frames = [
                    .push([
                        .bulkString(Array(name.utf8)), .null,
                        .integer(Int64(session.channels.count + session.patterns.count)),
                    ])
                ]
            }
            let hub = self.hub
            let replies = frames
            let names = targets
            return .connection { outlet in
                for t in names {
                    if subscribe {
                        hub.subscribe(outlet, t, pattern: pattern)
                    } else {
                        hub.unsubscribe(outlet, t, pattern: pattern)
                    }
                }
                return replies
            }
        case "pubsub":
            guard n >= 2 else { return .reply(CommandProcessor.arity(name)) }
            let sub = String(decoding: args[1], as: UTF8.self).lowercased()
            switch sub {
            case "channels":
                guard n <= 3 else { return .reply(CommandProcessor.arity("pubsub|channels")) }
                return .reply(
                    .array(hub.activeChannels(matching: n == 3 ? args[2] : nil).map { .bulkString($0) }))
            case "numsub":
                return .reply(
                    .array(
                        args.dropFirst(2).flatMap { c -> [RESPValue] in
                            [.bulkString(c), .integer(Int64(hub.subscriberCount(c)))]
                        }))
            case "numpat":
                guard n == 2 else { return .reply(CommandProcessor.arity("pubsub|numpat")) }
                return .reply(.integer(Int64(hub.patternCount)))
            case "help":
                return .reply(
                    .array(
                        [
                            "PUBSUB <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                            "CHANNELS [<pattern>]", "NUMPAT", "NUMSUB [<channel> ...]",
                        ].map { .simpleString($0) }))
            default:
                return .reply(
                    CommandProcessor.err(
                        "unknown subcommand '\(String(decoding: args[1].prefix(128), as: UTF8.self))'. Try PUBSUB HELP."
                    ))
            }
        default:
            return nil
        }
    }

    /// RESET: every subscription of the connection ends.
    public func reset(_ outlet: ConnectionOutlet) { hub.removeAll(outlet.id) }

    public var commandSpecs: [CommandSpec] {
        let pubsub = ["pubsub", "noscript", "loading", "stale"]
        return [
            CommandSpec(
                "subscribe", arity: -2, flags: pubsub, categories: ["@pubsub", "@slow"],
                summary: "Listens for messages published to channels (every node's publishers).",
                since: "2.0.0", group: "pubsub"),
            CommandSpec(
                "unsubscribe", arity: -1, flags: pubsub, categories: ["@pubsub", "@slow"],
                summary: "Stops listening to messages posted to channels.", since: "2.0.0", group: "pubsub"),
            CommandSpec(
                "psubscribe", arity: -2, flags: pubsub, categories: ["@pubsub", "@slow"],
                summary: "Listens for messages published to channels that match one or more patterns.",
                since: "2.0.0", group: "pubsub"),
            CommandSpec(
                "punsubscribe", arity: -1, flags: pubsub, categories: ["@pubsub", "@slow"],
                summary: "Stops listening to messages published to channels that match one or more patterns.",
                since: "2.0.0", group: "pubsub"),
            CommandSpec(
                "publish", arity: 3, flags: ["pubsub", "loading", "stale", "fast"],
                categories: ["@pubsub", "@fast"],
                summary: "Posts a message to a channel (delivered on every node; the count is this node's).",
                since: "2.0.0", group: "pubsub"),
            CommandSpec(
                "pubsub", arity: -2, flags: [], categories: ["@slow"],
                summary: "A container for Pub/Sub commands.", since: "2.8.0", group: "pubsub",
                subcommands: [
                    CommandSpec(
                        "pubsub|channels", arity: -2, flags: ["pubsub", "loading", "stale"],
                        categories: ["@pubsub", "@slow"],
                        summary: "Returns the active channels (this node's).",
                        since: "2.8.0", group: "pubsub"),
                    CommandSpec(
                        "pubsub|numsub", arity: -2, flags: ["pubsub", "loading", "stale"],
                        categories: ["@pubsub", "@slow"],
                        summary: "Returns a count of subscribers to channels (this node's).", since: "2.8.0",
                        group: "pubsub"),
                    CommandSpec(
                        "pubsub|numpat", arity: 2, flags: ["pubsub", "loading", "stale"],
                        categories: ["@pubsub", "@slow"],
                        summary: "Returns a count of unique pattern subscriptions (this node's).",
                        since: "2.8.0", group: "pubsub"),
                ]),
        ]
    }
}
