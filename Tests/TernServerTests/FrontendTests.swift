import Foundation
import NIOCore
import TernRESP
import TernServer
import Testing

/// The front end's registry and counters on real connections (in-process nodes; the listener's
/// group has two loops, so connections land on both shards).
@Suite(.timeLimit(.minutes(2))) struct FrontendTests {
    func text(_ v: RESPValue) -> String {
        switch v {
        case .bulkString(let b?): String(decoding: b, as: UTF8.self)
        case .verbatim(let s), .simpleString(let s), .error(let s): s
        default: "\(v)"
        }
    }

    /// `field:value` of an INFO text.
    func field(_ info: String, _ name: String) -> String? {
        info.split(whereSeparator: \.isNewline).first { $0.hasPrefix(name + ":") }.map {
            String($0.dropFirst(name.count + 1))
        }
    }

    @Test("INFO counts each command's calls, rejected and failed calls, the totals and the clients")
    func infoCounts() async throws {
        let c = try await SyncCluster.start()
        let a = try await c.client(0)
        let b = try await c.client(0)
        _ = try await a.send(["SET", "k", "v"])
        _ = try await a.send(["GET", "k"])
        _ = try await b.send(["GET", "k"])
        _ = try await a.send(["GET"])  // rejected: arity
        _ = try await a.send(["INCR", "k"])  // failed: not an integer
        _ = try await a.send(["NOSUCH"])  // unknown: an error reply, no cmdstat line
        let info = text(try await b.send(["INFO", "everything"]))
        #expect(field(info, "cmdstat_get")?.hasPrefix("calls=2,") == true)
        #expect(field(info, "cmdstat_get")?.hasSuffix(",rejected_calls=1,failed_calls=0") == true)
        #expect(field(info, "cmdstat_incr")?.hasSuffix(",rejected_calls=0,failed_calls=1") == true)
        #expect(field(info, "cmdstat_set")?.hasPrefix("calls=1,") == true)
        #expect(field(info, "cmdstat_nosuch") == nil)
        #expect(field(info, "total_commands_processed") == "4")
        #expect(field(info, "total_error_replies") == "3")
        #expect(field(info, "errorstat_ERR") == "count=3")
        #expect(field(info, "keyspace_hits") == "2")  // the two GETs of k; the INCR is a write
        #expect(field(info, "keyspace_misses") == "0")
        #expect(field(info, "connected_clients") == "2")
        #expect(field(info, "total_connections_received") == "2")
        #expect(Int(field(info, "used_memory") ?? "") ?? 0 > 1 << 20)
        #expect(Double(field(info, "used_cpu_user") ?? "") ?? 0 > 0)
        // RESETSTAT: counters back to zero (INFO itself is the only call after it).
        #expect(try await b.send(["CONFIG", "RESETSTAT"]) == .ok)
        let after = text(try await b.send(["INFO", "commandstats", "stats"]))
        #expect(field(after, "cmdstat_get") == nil)
        #expect(field(after, "total_commands_processed") == "1")  // CONFIG RESETSTAT
        await a.close()
        await b.close()
        await c.stop()
    }

    @Test("CLIENT LIST shows every connection; CLIENT KILL closes another at once, the asker after its reply")
    func clientListAndKill() async throws {
        let c = try await SyncCluster.start()
        let clients = [try await c.client(0), try await c.client(0), try await c.client(0)]
        _ = try await clients[1].send(["CLIENT", "SETNAME", "second"])
        var ids: [Int64] = []
        for cl in clients {
            guard case .integer(let id) = try await cl.send(["CLIENT", "ID"]) else {
                Issue.record("CLIENT ID")
                return
            }
            ids.append(id)
        }
        #expect(Set(ids).count == 3)
        let list = text(try await clients[0].send(["CLIENT", "LIST"]))
        let lines = list.split(separator: "\n")
        #expect(lines.count == 3)
        #expect(lines.contains { $0.hasPrefix("id=\(ids[1]) ") && $0.contains(" name=second ") })
        #expect(lines.contains { $0.hasPrefix("id=\(ids[0]) ") && $0.contains(" cmd=client|list ") })
        #expect(try await clients[0].send(["CLIENT", "KILL", "ID", "\(ids[1])"]) == .integer(1))
        #expect(await eventually { !clients[1].isActive })
        // The asker's own id is skipped unless SKIPME no; then it gets its reply, then is closed.
        #expect(try await clients[2].send(["CLIENT", "KILL", "ID", "\(ids[2])"]) == .integer(0))
        #expect(
            try await clients[2].send(["CLIENT", "KILL", "ID", "\(ids[2])", "SKIPME", "no"]) == .integer(1))
        #expect(await eventually { !clients[2].isActive })
        let left = text(try await clients[0].send(["CLIENT", "LIST"]))
        #expect(left.split(separator: "\n").count == 1)
        for cl in clients { await cl.close() }
        await c.stop()
    }

    @Test("CONFIG SET maxclients takes effect for the next connection; open ones stay")
    func maxClientsLive() async throws {
        let c = try await SyncCluster.start()
        let a = try await c.client(0)
        #expect(try await a.send(["CONFIG", "SET", "maxclients", "1"]) == .ok)
        // Refused as at max_clients: Redis's error line, then closed.
        let b = try await c.client(0)
        #expect(await nextPush(b) == .error("ERR max number of clients reached"))  // unasked: a "push"
        #expect(await eventually { !b.isActive })
        #expect(try await a.send(["PING"]) == .simpleString("PONG"))
        let info = text(try await a.send(["INFO", "clients", "stats"]))
        #expect(field(info, "maxclients") == "1")
        #expect(field(info, "rejected_connections") == "1")
        #expect(try await a.send(["CONFIG", "SET", "maxclients", "10"]) == .ok)
        let d = try await c.client(0)
        #expect(try await d.send(["PING"]) == .simpleString("PONG"))
        for cl in [a, b, d] { await cl.close() }
        await c.stop()
    }

    /// Sends `request` on a plain socket to `port` and returns what arrives within `seconds`.
    func exchange(_ port: Int, _ request: String, seconds: Double = 0.5) -> String {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard connected == 0 else { return "connect failed" }
        var timeout = timeval(tv_sec: 0, tv_usec: 100_000)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        _ = request.withCString { send(fd, $0, strlen($0), 0) }
        var out: [UInt8] = []
        let end = Date().addingTimeInterval(seconds)
        var buffer = [UInt8](repeating: 0, count: 4096)
        while Date() < end {
            let n = recv(fd, &buffer, buffer.count, 0)
            if n > 0 { out += buffer[0..<n] } else if n == 0 { break }
        }
        return String(decoding: out, as: UTF8.self)
    }

    @Test("CLIENT REPLY OFF, SKIP and ON: the dropped replies never reach the client, the others in order")
    func clientReply() async throws {
        let c = try await SyncCluster.start()
        let got = exchange(
            c.fronts[0].port,
            "CLIENT REPLY SKIP\r\nPING a\r\nPING b\r\nCLIENT REPLY OFF\r\nPING c\r\nSET k v\r\n"
                + "CLIENT REPLY ON\r\nPING d\r\n", seconds: 1)
        #expect(got == "$1\r\nb\r\n+OK\r\n$1\r\nd\r\n")
        let a = try await c.client(0)
        // OFF drops replies, not commands.
        #expect(try await a.send(["GET", "k"]) == .bulkString(Array("v".utf8)))
        await a.close()
        await c.stop()
    }

    @Test("CLIENT REPLY OFF keeps pub/sub frames: SUBSCRIBE's confirmation and the messages still arrive")
    func replyOffKeepsSubscriptions() async throws {
        let c = try await SyncCluster.start()
        // Redis's pubsub suite waited forever here: the confirmation was dropped as a reply.
        let got = exchange(c.fronts[0].port, "CLIENT REPLY OFF\r\nSUBSCRIBE news\r\n", seconds: 1)
        #expect(got == "*3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n")
        await c.stop()
    }

    @Test("RESET leaves subscribed mode: the connection takes commands again and gets no more notices")
    func resetLeavesSubscribedMode() async throws {
        let c = try await SyncCluster.start()
        let sub = try await c.client(0)
        let sender = try await c.client(0)
        _ = try await sub.send(["SUBSCRIBE", "sync:5"])
        #expect(text(try await sub.send(["GET", "k"])).hasPrefix("ERR Can't execute 'get'"))
        #expect(try await sub.send(["RESET"]) == .simpleString("RESET"))
        #expect(try await sub.send(["GET", "k"]) == .bulkString(nil))
        _ = try await sender.send(["MSG.SEND", "5", "hi"])
        #expect(await nextPush(sub, seconds: 0.5) == nil)
        let list = text(try await sender.send(["CLIENT", "LIST"]))
        #expect(!list.contains("flags=P"))
        await sub.close()
        await sender.close()
        await c.stop()
    }
}
