import TernConsensus
import TernRESP

/// The blocking list pops (BLPOP, BRPOP) on `CommandPlan.blocking` (Blocking.swift): an attempt
/// reads the keys (a linearizable read each), pops from the first non-empty list in the order the
/// keys were given, and waits when every list is empty — no Paxos write while there is nothing to
/// take. A pop that finds its list emptied meanwhile (another client took the element) waits again.
extension CommandProcessor {
    /// BLPOP / BRPOP key [key ...] timeout.
    func blockingPopPlan(_ name: String, _ args: [[UInt8]], _ session: Session) -> CommandPlan {
        let ms: Int64
        switch BlockingCall.seconds(args[args.count - 1]) {
        case .invalid(let e): return .reply(e)
        case .ms(let m): ms = m
        }
        let keys = Array(args[1..<(args.count - 1)])
        let pop: [UInt8] = Array((name == "blpop" ? "lpop" : "rpop").utf8)
        let clock = self.clock
        let v3 = session.version == .v3
        let timeout: RESPValue = v3 ? .null : .array(nil)
        // An attempt: read every key; the first non-empty list is popped (a write), none waits.
        @Sendable func readAll() -> BlockingCall {
            BlockingCall(keys: keys, timeoutMs: ms, timeout: timeout, requests: keys.map { ($0, .read) }) {
                look($0)
            }
        }
        @Sendable func look(_ replies: [NodeReply]) -> BlockingStep {
            let nowMs = UInt64(max(0, clock() / 1000))
            for (key, r) in zip(keys, replies) {
                guard let v = Self.stored(r) else { return .answer(Self.failure(r, write: false)) }
                guard let v else { continue }
                switch DataModel.read([Array("llen".utf8), key], v, nowMs: nowMs) {
                case .integer(let n) where n > 0:
                    return .again(
                        readAll().next([(key, .write(.data([pop, key])))]) { replies in
                            switch replies[0] {
                            case .done(.data(.bulk(let element?))):
                                return .answer(.array([.bulkString(key), .bulkString(element)]))
                            case .done(.data(.bulk(nil))), .done(.data(.array(nil))):
                                return .wait(readAll())  // taken by another client meanwhile
                            case .done(.data(let other)): return .answer(Self.resp(other, v3))
                            case .done(.previousForgotten): return .answer(Self.forgotten)
                            default: return .answer(Self.failure(replies[0], write: true))
                            }
                        })
                case .error(let e): return .answer(.error(e))
                default: continue
                }
            }
            return .wait(readAll())
        }
        return .blocking(readAll())
    }
}
