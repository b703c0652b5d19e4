public import TernConsensus
import TernCore

/// Deliberately broken envelope opens, to prove the envelope checks fire.
public enum EnvelopeMutant: String, Sendable, Hashable, CaseIterable {
    case none
    /// The amount is drawn on the proposer, from its own RNG and its own view of the envelope
    /// (`EnvelopeOp.openDrawn`), instead of when the chosen instance applies the open: opens
    /// merged into one instance (or proposed from a stale view) each draw from the same remaining.
    case proposerDraws = "proposer-draws"
}

/// One envelope call as a simulated client saw it.
public struct EnvelopeCall: Sendable, Hashable, CustomStringConvertible {
    public var client: Int
    public var envelope: Int
    public var op: EnvelopeOp
    public var call: UInt64
    /// nil: no answer (timeouts, unknown outcome).
    public var result: EnvelopeResult?
    public var ret: UInt64?
    public var description: String {
        "client \(client) e\(envelope) \(op) -> \(result.map { "\($0)" } ?? "no answer") [\(call), \(ret.map(String.init) ?? "?")]"
    }
}

/// The envelope workload inside a `Simulation`: a few envelopes (some with a deadline that
/// passes mid-run), clients that open them for a small pool of uids (so users open twice and
/// more users than shares try), retry on failure with the same request id and, after an unknown
/// outcome, as a NEW request (only the uid de-duplication keeps that from paying twice), and
/// sometimes ask for expiry. Checked: at every tick, every replica's chosen value keeps the bank
/// invariant; at the end, every answer agrees with the final value.
struct EnvelopeWorkload {
    struct Client {
        var nextAt: UInt64
        var counter: UInt64 = 0
        var inFlight: Flight?
    }
    struct Flight {
        var call: Int
        var rid: RequestID
        var node: Int
        var tag: UInt64
        var deadline: UInt64
        var attempts: Int
        /// Client-level retries (fresh request id) left after an unknown outcome.
        var freshRetries: Int
    }
    var clients: [Client] = []
    var calls: [EnvelopeCall] = []
    var tags: [UInt64: Int] = [:]
    var issued = 0
    /// After the heal: the envelopes still to read (linearizably) for the final check, and their
    /// values once read.
    var finalPending: [Int] = []
    var finalTag: (tag: UInt64, envelope: Int, node: Int, deadline: UInt64)?
    var finalValues: [Int: EnvelopeState?] = [:]
    var started = false

    var idle: Bool { clients.allSatisfy { $0.inFlight == nil } }
}

extension Simulation {
    static let envelopeCount = 3
    static let envelopeUIDs: UInt64 = 10
    /// Wall-clock milliseconds as the nodes' clocks give it: a tick stands for 5 ms.
    var envelopeNowMs: UInt64 { now * 5 }
    func envelopeKey(_ e: Int) -> [UInt8] { Array("e\(e)".utf8) }

    func envelopeSetUp() {
        guard config.envelopeOps > 0 else { return }
        for _ in 0..<4 { envelope.clients.append(.init(nextAt: rng.below(5))) }
    }

    /// All calls made and answered (or given up); the heal may come.
    var envelopeDone: Bool {
        config.envelopeOps == 0 || (envelope.issued >= config.envelopeOps && envelope.idle)
    }
    /// The final reads are done too.
    var envelopeFinished: Bool {
        config.envelopeOps == 0
            || (envelopeDone && envelope.started && envelope.finalPending.isEmpty
                && envelope.finalTag == nil)
    }

    /// Step 4: clients call, time out, retry; after the heal, the final reads.
    func envelopeAct() {
        guard config.envelopeOps > 0 else { return }
        if healed {
            envelopeFinalReads()
            return
        }
        for c in envelope.clients.indices {
            if let f = envelope.clients[c].inFlight {
                if now >= f.deadline { envelopeAttemptFailed(c, unknown: true) }
                continue
            }
            guard now >= envelope.clients[c].nextAt, envelope.issued < config.envelopeOps else { continue }
            envelope.issued += 1
            let e: Int
            let op: EnvelopeOp
            if envelope.issued <= Self.envelopeCount {
                // The first calls create the envelopes: 2–7 shares of 1–40 cents more than that,
                // half of them with a deadline 0.25–1.75 s (50–350 ticks) away.
                e = envelope.issued - 1
                let count = UInt32(2 + rng.below(6))
                let total = UInt64(count) + rng.below(40)
                let deadline = rng.chance(0.5) ? envelopeNowMs + 250 + rng.below(1500) : 0
                op = .create(totalCents: total, count: count, deadlineMs: deadline, seed: rng.next())
            } else {
                e = Int(rng.below(UInt64(Self.envelopeCount)))
                op =
                    rng.chance(0.1)
                    ? .expire(nowMs: envelopeNowMs)
                    : .open(uid: rng.below(Self.envelopeUIDs), nowMs: envelopeNowMs)
            }
            envelope.calls.append(EnvelopeCall(client: c, envelope: e, op: op, call: callTime))
            envelope.clients[c].counter += 1
            let rid = RequestID(client: UInt32(5_000 + c), counter: envelope.clients[c].counter)
            envelope.clients[c].inFlight = .init(
                call: envelope.calls.count - 1, rid: rid, node: Int(rng.below(3)), tag: 0, deadline: 0,
                attempts: 0,
                freshRetries: 2)
            mix(0xE7 &+ UInt64(e) << 8 &+ UInt64(c))
            envelopeSend(c)
        }
    }

    func envelopeSend(_ c: Int) {
        guard var f = envelope.clients[c].inFlight else { return }
        let tag = nextTag
        nextTag += 1
        envelope.tags[tag] = c
        f.tag = tag
        f.attempts += 1
        f.deadline = now + config.clientTimeoutTicks
        envelope.clients[c].inFlight = f
        guard let n = nodes[f.node] else { return }  // down: lost, the client times out
        let call = envelope.calls[f.call]
        let key = envelopeKey(call.envelope)
        var op = call.op
        if config.envelopeMutant == .proposerDraws, case .open(let uid, let nowMs) = op {
            // The bug: the proposer draws from its own view (possibly stale, and blind to the
            // opens merged before this one) with its own RNG.
            var amount: UInt64 = 1
            if let v = n.inspect(key)?.state.value.bytes, let s = EnvelopeState.decode(v),
                s.openers.count < Int(s.count), s.remaining > 0
            {
                let left = UInt64(Int(s.count) - s.openers.count)
                let hi = max(1, min(2 * s.remaining / left, s.remaining))
                amount = left == 1 ? s.remaining : 1 + rng.below(hi)
            }
            op = .openDrawn(uid: uid, nowMs: nowMs, amount: amount)
        }
        let rid = f.rid
        whenRunning(f.node) { n.propose(key: key, .envelope(op), id: rid, tag: tag) }
    }

    /// The attempt failed: `.retryable` → the next node, same request id (twice at most);
    /// unknown or silent → an open is called again as a NEW request (the uid de-duplicates it),
    /// anything else gives up.
    func envelopeAttemptFailed(_ c: Int, unknown: Bool) {
        guard var f = envelope.clients[c].inFlight else { return }
        envelope.tags[f.tag] = nil
        let isOpen: Bool
        if case .open = envelope.calls[f.call].op { isOpen = true } else { isOpen = false }
        if !unknown && f.attempts < 3 {
            f.node = (f.node + 1) % 3
            envelope.clients[c].inFlight = f
            envelopeSend(c)
            return
        }
        if isOpen && f.freshRetries > 0 {
            f.freshRetries -= 1
            envelope.clients[c].counter += 1
            f.rid = RequestID(client: UInt32(5_000 + c), counter: envelope.clients[c].counter)
            f.attempts = 0
            f.node = (f.node + 1) % 3
            envelope.clients[c].inFlight = f
            envelopeSend(c)
            return
        }
        envelope.clients[c].inFlight = nil
        envelope.clients[c].nextAt = now + rng.below(16)
    }

    /// A core reply, if it is the envelope workload's (true = consumed).
    func envelopeReply(_ r: ClientReply) -> Bool {
        if let ft = envelope.finalTag, ft.tag == r.tag {
            envelope.finalTag = nil
            if case .value(let b) = r.outcome {
                envelope.finalValues[ft.envelope] = b.flatMap(EnvelopeState.decode)
                envelope.finalPending.removeFirst()
            }
            return true
        }
        guard let c = envelope.tags.removeValue(forKey: r.tag) else { return false }
        guard let f = envelope.clients[c].inFlight, f.tag == r.tag else { return true }
        switch r.outcome {
        case .retryable: envelopeAttemptFailed(c, unknown: false)
        case .unknown: envelopeAttemptFailed(c, unknown: true)
        case .value, .typed: break
        case .done(let res):
            guard case .envelope(let e) = res else {
                violations.append(
                    violation(
                        check: "envelope", key: "e*",
                        detail: "unexpected result \(res) for \(envelope.calls[f.call])"))
                return true
            }
            envelope.calls[f.call].result = e
            envelope.calls[f.call].ret = returnTime
            envelope.clients[c].inFlight = nil
            envelope.clients[c].nextAt = now + rng.below(16)
            if case .opened(let a, _) = e { mix(a) }
        }
        return true
    }

    /// After the heal: one linearizable read per envelope (retried until answered).
    func envelopeFinalReads() {
        if !envelope.started {
            envelope.started = true
            envelope.finalPending = Array(0..<Self.envelopeCount)
        }
        if let ft = envelope.finalTag, now < ft.deadline { return }
        guard let e = envelope.finalPending.first else { return }
        let node = ((envelope.finalTag?.node ?? -1) + 1) % 3
        let tag = nextTag
        nextTag += 1
        envelope.finalTag = (tag, e, node, now + config.clientTimeoutTicks)
        guard let n = nodes[node] else { return }
        let key = envelopeKey(e)
        whenRunning(node) { n.read(key: key, tag: tag) }
    }

    /// Every tick: each replica's chosen envelope values keep the bank invariant (shares + remaining
    /// + refunded = total), give each uid at most one share of at least a cent, and at most `count`.
    func envelopeCheckStates() {
        guard config.envelopeOps > 0, violations.isEmpty else { return }
        for i in 0..<3 {
            guard let n = nodes[i] else { continue }
            for e in 0..<Self.envelopeCount {
                guard let r = n.inspect(envelopeKey(e)), !r.damaged, let b = r.state.value.bytes else {
                    continue
                }
                guard let s = EnvelopeState.decode(b) else {
                    violations.append(
                        violation(
                            check: "envelope", key: "e\(e)", detail: "n\(i + 1): the value is not an envelope"
                        ))
                    return
                }
                if let why = Self.envelopeBroken(s) {
                    violations.append(
                        violation(
                            check: "envelope", key: "e\(e)",
                            detail: "n\(i + 1) chosen instance \(r.state.chosen): \(why)"
                                + envelopeCallsText(e)))
                    return
                }
            }
        }
    }

    /// What is wrong with an envelope value, if anything.
    static func envelopeBroken(_ s: EnvelopeState) -> String? {
        let shares = s.sharesTotal
        if shares + s.remaining + s.refunded != s.totalCents {
            return
                "bank: shares \(shares) + remaining \(s.remaining) + refunded \(s.refunded) != total \(s.totalCents)"
        }
        if s.openers.count > Int(s.count) { return "\(s.openers.count) shares of an envelope of \(s.count)" }
        if let z = s.openers.first(where: { $0.amount == 0 }) { return "uid \(z.uid) got 0 cents" }
        if Set(s.openers.map(\.uid)).count != s.openers.count { return "a uid was paid twice: \(s.openers)" }
        if s.openers.count == Int(s.count) && s.remaining != 0 {
            return "every share is taken but \(s.remaining) cents remain"
        }
        return nil
    }

    func envelopeCallsText(_ e: Int) -> String {
        "\n" + envelope.calls.filter { $0.envelope == e }.suffix(16).map { "  \($0)" }.joined(separator: "\n")
    }

    /// At the end: every answer agrees with the final value of its envelope — an opener's amount
    /// is its share (the same at every answer), an expired answer means the value is expired.
    func checkEnvelopes() {
        guard config.envelopeOps > 0 else { return }
        for e in 0..<Self.envelopeCount {
            guard let final = envelope.finalValues[e] else {
                violations.append(
                    violation(check: "envelope", key: "e\(e)", detail: "never read after the heal"))
                return
            }
            guard let s = final else { continue }
            if let why = Self.envelopeBroken(s) {
                violations.append(violation(check: "envelope", key: "e\(e)", detail: "final: \(why)"))
                return
            }
            for call in envelope.calls where call.envelope == e {
                switch (call.op, call.result) {
                case (.open(let uid, _), .opened(let a, _)), (.openDrawn(let uid, _, _), .opened(let a, _)):
                    if s.share(of: uid) != a {
                        violations.append(
                            violation(
                                check: "envelope", key: "e\(e)",
                                detail:
                                    "uid \(uid) was answered \(a) cents, the envelope says \(String(describing: s.share(of: uid)))"
                                    + envelopeCallsText(e)))
                        return
                    }
                case (_, .expired):
                    if !s.expired {
                        violations.append(
                            violation(
                                check: "envelope", key: "e\(e)", detail: "answered expired, but it is not"))
                        return
                    }
                default: break
                }
            }
        }
    }
}
