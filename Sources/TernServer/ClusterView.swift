import Foundation
import NIOCore
import NIOPosix
import TernCore
import TernPlacement
import TernTransport

/// `GET /cluster`: every node's `/status`, gathered by the node asked, so the dashboard works
/// from any node's admin port without cross-origin requests. Each peer is asked at once, each
/// with its own deadline; a peer that does not answer in time is reported unreachable, and
/// nothing waits on the event loops.
enum ClusterView {
    /// One peer's answer: its /status body, or why there is none.
    struct Answer: Sendable {
        var status: Int?
        var body: String
    }

    /// The JSON of `/cluster`: the map's nodes in campus order, each with `reachable`, `healthy`
    /// and its `status` object (null when unreachable) or the `error` met.
    static func json(
        map: ClusterMap, me: NodeID, myStatus: String, myHealthy: Bool, authorization: String?,
        group: any EventLoopGroup, timeoutMilliseconds: Int64 = 800
    ) async -> String {
        let others = map.nodes.filter { $0.id != me }
        let answers = await withTaskGroup(of: (NodeID, Result<Answer, any Error>).self) { tasks in
            for n in others {
                tasks.addTask {
                    do {
                        let a = try await get(
                            "/status", at: n.adminAddress, authorization: authorization, group: group,
                            timeoutMilliseconds: timeoutMilliseconds)
                        return (n.id, .success(a))
                    } catch {
                        return (n.id, .failure(error))
                    }
                }
            }
            var out: [NodeID: Result<Answer, any Error>] = [:]
            for await (id, r) in tasks { out[id] = r }
            return out
        }
        var entries: [String] = []
        for n in map.nodes.sorted(by: {
            ($0.campus.rawValue, $0.id.rawValue) < ($1.campus.rawValue, $1.id.rawValue)
        }) {
            var head =
                "{\"id\":\(n.id.rawValue),\"campus\":\"\(n.campus)\",\"client\":\(jsonText(n.clientAddress)),"
                + "\"admin\":\(jsonText(n.adminAddress)),"
            if n.id == me {
                head += "\"self\":true,\"reachable\":true,\"healthy\":\(myHealthy),\"status\":\(myStatus)}"
            } else {
                switch answers[n.id] {
                case .success(let a) where a.status == 200 && a.body.hasPrefix("{"):
                    // Decoded, not searched: an error text in the body may quote anything.
                    let healthy =
                        (try? JSONDecoder().decode(Health.self, from: Data(a.body.utf8)))?.healthy ?? false
                    head +=
                        "\"reachable\":true,\"healthy\":\(healthy),\"status\":\(a.body.trimmingCharacters(in: .whitespacesAndNewlines))}"
                case .success(let a):
                    let why = "HTTP \(a.status ?? 0): \(a.body.prefix(200))"
                    head += "\"reachable\":true,\"healthy\":false,\"status\":null,\"error\":\(jsonText(why))}"
                case .failure(let e):
                    head +=
                        "\"reachable\":false,\"healthy\":false,\"status\":null,\"error\":\(jsonText("\(e)"))}"
                case nil:
                    head += "\"reachable\":false,\"healthy\":false,\"status\":null,\"error\":\"not asked\"}"
                }
            }
            entries.append(head)
        }
        let now = Date().timeIntervalSince1970
        return "{\"cluster\":\(jsonText(map.name)),\"asked\":\(me.rawValue),\"at\":\(now),\"nodes\":["
            + entries.joined(separator: ",") + "]}\n"
    }

    /// The one field of a peer's /status that /cluster reads.
    struct Health: Decodable { var healthy: Bool? }

    static func jsonText(_ s: String) -> String {
        guard let data = try? JSONEncoder().encode(s) else { return "\"\"" }
        return String(decoding: data, as: UTF8.self)
    }

    struct ClusterViewError: Error, CustomStringConvertible {
        var description: String
    }

    /// One `GET path` to `address` (HTTP/1.0, the connection closes after the reply), failing
    /// after `timeoutMilliseconds` in all (connect included).
    static func get(
        _ path: String, at address: String, authorization: String?, group: any EventLoopGroup,
        timeoutMilliseconds: Int64
    ) async throws -> Answer {
        let a = try TernServerProcess.address(address)
        let loop = group.next()
        let done = loop.makePromise(of: Answer.self)
        let timeout = TimeAmount.milliseconds(timeoutMilliseconds)
        let channel: any Channel
        do {
            channel = try await ClientBootstrap(group: loop)
                .connectTimeout(timeout)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(ReplyCollector(done: done))
                    }
                }
                .connect(host: a.host, port: a.port).get()
        } catch {
            // Every promise must be completed (a dropped one stops the process in debug builds):
            // a peer that refuses the connection crashed n2 this way before this line existed.
            done.fail(error)
            throw error
        }
        let deadline = loop.scheduleTask(in: timeout) {
            done.fail(ClusterViewError(description: "no answer in \(timeoutMilliseconds) ms"))
            channel.close(promise: nil)
        }
        var request = "GET \(path) HTTP/1.0\r\nHost: \(address)\r\n"
        if let authorization { request += "Authorization: \(authorization)\r\n" }
        request += "\r\n"
        var buffer = channel.allocator.buffer(capacity: request.utf8.count)
        buffer.writeString(request)
        channel.writeAndFlush(buffer, promise: nil)
        defer {
            deadline.cancel()
            channel.close(promise: nil)
        }
        return try await done.futureResult.get()
    }

    /// Gathers the reply bytes until the peer closes (bounded at 1 MiB), then parses status and body.
    final class ReplyCollector: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        let done: EventLoopPromise<Answer>
        var bytes: [UInt8] = []
        init(done: EventLoopPromise<Answer>) { self.done = done }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            var b = unwrapInboundIn(data)
            if bytes.count < 1 << 20, let chunk = b.readBytes(length: b.readableBytes) { bytes += chunk }
        }

        func channelInactive(context: ChannelHandlerContext) {
            let text = String(decoding: bytes, as: UTF8.self)
            let code = text.hasPrefix("HTTP/1.") ? Int(text.dropFirst(9).prefix(3)) : nil
            let body = text.range(of: "\r\n\r\n").map { String(text[$0.upperBound...]) } ?? ""
            if code == nil {
                done.fail(ClusterViewError(description: "no HTTP reply"))
            } else {
                done.succeed(Answer(status: code, body: body))
            }
            context.fireChannelInactive()
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            done.fail(error)
            context.close(promise: nil)
        }
    }
}
