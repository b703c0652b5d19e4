import NIOCore
import TernConsensus
import TernRESP

/// Redis's string writes across keys: `MSETNX` and `BITOP`. Like the set algebra
/// (CrossKeyCommands.swift) they read each key linearizably, then write per key: **not atomic**
/// (docs/DATA.md, "Across keys", says exactly what holds).
extension KeyspaceService {
    static let crossKeyWriteSpecs: [CommandSpec] = [
        CommandSpec(
            "msetnx", arity: -3, flags: ["write", "denyoom"], keys: (1, -1, 2),
            categories: ["@write", "@string", "@slow"], keySpec: ["OW", "insert"],
            summary:
                "Sets the values of keys only when none of them exists (not atomic in Tern, docs/DATA.md).",
            since: "1.0.1", group: "string"),
        CommandSpec(
            "bitop", arity: -4, flags: ["write", "denyoom"], keys: (2, -1, 1),
            categories: ["@write", "@bitmap", "@slow"], keySpec: ["OW", "update"],
            summary: "Performs bitwise operations on strings (not atomic across keys in Tern, docs/DATA.md).",
            since: "2.6.0", group: "bitmap"),
    ]

    func crossKeyWritePlan(_ name: String, _ args: [[UInt8]]) -> CommandPlan? {
        guard let spec = Self.crossKeyWriteSpecs.first(where: { $0.name == name }) else { return nil }
        guard spec.accepts(args.count) else { return .reply(CommandProcessor.arity(name)) }
        switch name {
        case "msetnx":
            guard args.count % 2 == 1 else { return .reply(CommandProcessor.arity(name)) }
            // The last value of a key named twice wins, as in Redis.
            var order: [[UInt8]] = []
            var values: [[UInt8]: [UInt8]] = [:]
            var k = 1
            while k + 1 < args.count {
                if values[args[k]] == nil { order.append(args[k]) }
                values[args[k]] = args[k + 1]
                k += 2
            }
            let (keys, pairs) = (order, values)
            return barrier { self.msetnx(keys, pairs) }
        default:
            let op = CommandProcessor.word(args[1])
            guard ["and", "or", "xor", "not"].contains(op) else { return .reply(CommandProcessor.syntax) }
            let dest = args[2]
            let sources = Array(args[3...])
            if op == "not" && sources.count != 1 {
                return .reply(CommandProcessor.err("BITOP NOT must be called with a single source key."))
            }
            return barrier {
                self.readAll(sources).flatMap { values -> EventLoopFuture<RESPValue> in
                    var inputs: [[UInt8]] = []
                    for v in values {
                        if let v, v.kind != .string {
                            return self.node.eventLoop.makeSucceededFuture(CommandProcessor.wrongType)
                        }
                        inputs.append(v?.bytes ?? [])
                    }
                    let out = DataModel.bitop(op, inputs)
                    return self.store(dest, .string, out.isEmpty ? nil : out, event: "set").map {
                        .integer(Int64(out.count))
                    }
                }
            }
        }
    }

    /// MSETNX: read every key; if none exists, `SET k v NX` each. What holds: no existing key is
    /// ever overwritten (each write is conditional on its key), and without a concurrent writer
    /// of these keys it is all or none. If another client creates one of the keys between the
    /// reads and the writes, that key keeps the other client's value, the keys this MSETNX did
    /// set are deleted again (each only if it still holds the value written, `delifeq`) and the
    /// answer is 0; a failure of the node between the writes and that undo can leave some keys
    /// set with the answer lost.
    func msetnx(_ keys: [[UInt8]], _ values: [[UInt8]: [UInt8]]) -> EventLoopFuture<RESPValue> {
        let loop = node.eventLoop
        return readAll(keys).flatMap { found -> EventLoopFuture<RESPValue> in
            if found.contains(where: { $0 != nil }) { return loop.makeSucceededFuture(.integer(0)) }
            let writes = keys.map { k in
                self.node.execute(
                    key: k, .write(.data([Array("set".utf8), k, values[k]!, Array("nx".utf8)])))
            }
            return EventLoopFuture.whenAllComplete(writes, on: loop).flatMap { results in
                var written: [[UInt8]] = []
                var failure: RESPValue?
                var raced = false
                for (k, r) in zip(keys, results) {
                    let reply = (try? r.get()) ?? .unavailable("node stopped")
                    switch reply {
                    case .done(.data(.ok)): written.append(k)
                    case .done(.data(.bulk(nil))): raced = true
                    default: failure = failure ?? CommandProcessor.failure(reply, write: true)
                    }
                }
                if failure == nil && !raced { return loop.makeSucceededFuture(.integer(1)) }
                let undo = written.map { k in
                    self.node.execute(key: k, .write(.data([Array("delifeq".utf8), k, values[k]!])))
                }
                return EventLoopFuture.whenAllComplete(undo, on: loop).map { _ in failure ?? .integer(0) }
            }
        }
    }
}
