import Foundation
import TernCore
import TernRESP
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// The operator's dashboard (`GET /` on the admin port) in a real browser, Debian's headless
/// Chromium, against three `tern server` processes; and `tern status --map`'s exit code
/// (issue 14, docs/OPERATIONS.md).
@Suite(.serialized, .timeLimit(.minutes(3))) struct DashboardProcessTests {
    let n1 = NodeID(1)
    let n2 = NodeID(2)
    let n3 = NodeID(3)

    static let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"].first {
        FileManager.default.isExecutableFile(atPath: $0)
    }

    /// Where the screenshots go: `TERN_ARTIFACTS` if set (CI keeps that folder), else /tmp.
    static var artifacts: String {
        let dir = ProcessInfo.processInfo.environment["TERN_ARTIFACTS"] ?? NSTemporaryDirectory()
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return dir.hasSuffix("/") ? dir : dir + "/"
    }

    /// Runs headless Chromium on `url` with `mode` (`--dump-dom` or `--screenshot=PATH`), letting
    /// the page's timers run for 4 s of virtual time; its output (the DOM for `--dump-dom`).
    func browse(_ url: String, _ mode: String, in dir: String) async throws -> String {
        guard let exe = Self.chromium else {
            throw ClusterTestError("chromium is not installed (scripts/test installs Debian's chromium)")
        }
        let out = dir + "/chromium-\(UInt32.random(in: 0...UInt32.max)).out"
        let pid = spawnProcess(
            exe,
            [
                "--headless", "--disable-gpu", "--no-sandbox", "--disable-dev-shm-usage", "--no-first-run",
                "--user-data-dir=\(dir)/chromium-profile", "--window-size=1280,900",
                "--virtual-time-budget=4000", mode, url,
            ], log: out)
        guard let status = await waitExit(pid, seconds: 45) else {
            kill(pid, SIGKILL)
            _ = await waitExit(pid, seconds: 5)
            throw ClusterTestError("chromium did not finish in 45 s")
        }
        let text = (try? String(contentsOfFile: out, encoding: .utf8)) ?? ""
        guard status == 0 else { throw ClusterTestError("chromium exited \(status):\n\(text.suffix(2000))") }
        return text
    }

    /// The nodes' cards in a dumped DOM: node id → (state, the card's HTML).
    func cards(_ dom: String) -> [UInt32: (state: String, html: String)] {
        var out: [UInt32: (String, String)] = [:]
        let parts = dom.components(separatedBy: "<div class=\"node\" data-node=\"").dropFirst()
        for part in parts {
            guard let id = UInt32(part.prefix { $0.isNumber }),
                let s = part.range(of: "data-state=\"")
            else { continue }
            let state = String(part[s.upperBound...].prefix { $0 != "\"" })
            out[id] = (state, part)
        }
        return out
    }

    /// The text of `data-field="name"` in a card's HTML.
    func field(_ html: String, _ name: String) -> String? {
        guard let r = html.range(of: "data-field=\"\(name)\">") else { return nil }
        return String(html[r.upperBound...].prefix { $0 != "<" })
    }

    @Test(
        "The dashboard of any node shows every node's figures under load; a killed node is marked down, its campus lost, and tern status --map exits 1"
    )
    func dashboardInChromium() async throws {
        let cluster = try ProcessCluster()
        defer { cluster.killAll() }
        try await cluster.startAll()
        // Status says the page's fields exist before a browser is involved.
        let page = try await cluster.http("GET", "/", node: n1)
        #expect(page.status == 200 && page.body.contains("<title>Tern dashboard</title>"))

        // A steady load on n1 while the browser looks, so requests/s and latencies are live.
        let stop = NIOLockedFlag()
        let client = try await cluster.client(n1)
        let load = Task {
            var i = 0
            while !stop.value {
                _ = try? await client.send(["SET", "dash:\(i % 50)", "v\(i)"])
                i += 1
            }
            return i
        }
        try await Task.sleep(nanoseconds: 1_500_000_000)
        let url1 = "http://127.0.0.1:\(cluster.adminPort(n1))/"
        let dom = try await browse(url1, "--dump-dom", in: cluster.dir)
        #expect(dom.contains("data-loaded=\"yes\""), "the page never rendered /cluster:\n\(dom.suffix(3000))")
        let up = cards(dom)
        #expect(up.count == 3)
        for id: UInt32 in [1, 2, 3] {
            #expect(up[id]?.state == "up", "n\(id): \(up[id]?.html.prefix(600) ?? "no card")")
            // Every node: keys and peers filled in with numbers.
            let peers = up[id].flatMap { field($0.html, "peers") }
            #expect(peers == "2/2", "n\(id) peers \(String(describing: peers))")
            #expect(up[id].flatMap { field($0.html, "keys") }.flatMap { Int($0) } != nil)
            #expect(up[id].flatMap { field($0.html, "repair") }?.hasPrefix("repair ") == true)
        }
        // n1 serves the load: requests/s, p50, p99 and fsyncs/s are numbers above zero.
        let n1card = up[1]?.html ?? ""
        for name in ["ops", "p50", "p99", "fsyncs"] {
            let v = field(n1card, name).flatMap { Double($0.replacingOccurrences(of: ",", with: "")) }
            #expect((v ?? 0) > 0, "n1 \(name) = \(String(describing: field(n1card, name)))")
        }
        let shotUp = Self.artifacts + "dashboard.png"
        _ = try await browse(url1, "--screenshot=\(shotUp)", in: cluster.dir)
        #expect(FileManager.default.fileExists(atPath: shotUp))
        print("dashboard screenshot (all up): \(shotUp)")

        // tern status --map: every campus up, exit 0.
        let (ok, okText) = try await ternStatus(cluster)
        #expect(ok == 0, "tern status: \(okText)")
        #expect(okText.contains("campus C: 1/1 up"), "\(okText)")

        // Kill n3 (campus c's only node): the page, now from n2, marks it down and campus c lost.
        await cluster.signal(n3, SIGKILL)
        let url2 = "http://127.0.0.1:\(cluster.adminPort(n2))/"
        let domDown = try await browse(url2, "--dump-dom", in: cluster.dir)
        let down = cards(domDown)
        #expect(down[3]?.state == "down", "n3: \(down[3]?.html.prefix(600) ?? "no card")")
        #expect(down[1]?.state == "up" && down[2]?.state == "up")
        #expect(domDown.contains("data-campus-summary=\"C\" data-up=\"0\""))
        let shotDown = Self.artifacts + "dashboard-node-down.png"
        _ = try await browse(url2, "--screenshot=\(shotDown)", in: cluster.dir)
        print("dashboard screenshot (n3 down): \(shotDown)")
        stop.set()
        let sent = await load.value
        await client.close()
        #expect(sent > 0)

        // tern status --map: campus c is down, exit 1.
        let (bad, badText) = try await ternStatus(cluster)
        #expect(bad == 1, "tern status: \(badText)")
        #expect(badText.contains("campus C: 0/1 up"), "\(badText)")
    }

    /// `tern status --map` against the cluster: exit status and output.
    func ternStatus(_ cluster: ProcessCluster) async throws -> (Int32, String) {
        let out = cluster.dir + "/status-\(UInt32.random(in: 0...UInt32.max)).out"
        let pid = spawnProcess(cluster.exe, ["status", "--map", cluster.dir + "/cluster.toml"], log: out)
        guard let status = await waitExit(pid, seconds: 30) else {
            kill(pid, SIGKILL)
            throw ClusterTestError("tern status did not finish")
        }
        return (status, (try? String(contentsOfFile: out, encoding: .utf8)) ?? "")
    }
}

/// A flag set once from one task and read from another.
final class NIOLockedFlag: @unchecked Sendable {
    // @unchecked Sendable: `flag` is guarded by `lock`.
    private let lock = NSLock()
    private var flag = false
    var value: Bool { lock.withLock { flag } }
    func set() { lock.withLock { flag = true } }
}
