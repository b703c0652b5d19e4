/// The operator's dashboard, `GET /` on every node's admin port (docs/OPERATIONS.md): one page of
/// plain HTML, CSS and a little JavaScript, shipped in the binary (no build step, no CDN). It asks
/// its own node's `GET /cluster` once a second, which gathers every node's `/status`, so it works
/// from any node and needs no cross-origin requests. A `#token=…` in the page's address is sent
/// as `Authorization: Bearer …`.
///
/// Each node's card carries `data-node`, `data-campus` and `data-state` (`up`, `learner`,
/// `unhealthy`, `down`) and each figure a `data-field`, which the browser test reads.
enum Dashboard {
    static let html = #"""
        <!doctype html>
        <html lang="en">
        <head>
        <meta charset="utf-8">
        <meta name="viewport" content="width=device-width, initial-scale=1">
        <title>Tern dashboard</title>
        <style>
        :root { --bg:#f6f7f9; --card:#fff; --ink:#1d2330; --dim:#6b7385; --line:#dde1e8;
                --up:#1f9d55; --warn:#d9822b; --down:#d64545; --bar:#3b82f6; }
        * { box-sizing: border-box; }
        body { margin:0; font:14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; background:var(--bg); color:var(--ink); }
        header { display:flex; align-items:baseline; gap:16px; padding:14px 20px; background:#1d2330; color:#fff; }
        header h1 { font-size:18px; margin:0; }
        header .dim { color:#aab2c5; }
        #banner { display:none; padding:8px 20px; background:var(--down); color:#fff; }
        main { padding:16px 20px; }
        .summary { display:flex; gap:12px; margin-bottom:14px; flex-wrap:wrap; }
        .campus-sum { background:var(--card); border:1px solid var(--line); border-radius:6px; padding:8px 12px; }
        .campus-sum b { font-size:16px; }
        .campus-sum.ok { border-left:5px solid var(--up); }
        .campus-sum.degraded { border-left:5px solid var(--warn); }
        .campus-sum.lost { border-left:5px solid var(--down); }
        .campuses { display:grid; grid-template-columns:repeat(auto-fit, minmax(300px, 1fr)); gap:14px; }
        .campus h2 { font-size:15px; margin:0 0 8px; text-transform:uppercase; letter-spacing:.05em; color:var(--dim); }
        .node { background:var(--card); border:1px solid var(--line); border-radius:6px; padding:10px 12px; margin-bottom:10px; }
        .node .title { display:flex; justify-content:space-between; align-items:center; margin-bottom:6px; }
        .node .title b { font-size:15px; }
        .badge { font-size:12px; font-weight:600; padding:2px 8px; border-radius:10px; color:#fff; }
        .node[data-state=up] .badge { background:var(--up); }
        .node[data-state=learner] .badge, .node[data-state=unhealthy] .badge { background:var(--warn); }
        .node[data-state=down] { opacity:.75; }
        .node[data-state=down] .badge { background:var(--down); }
        .figs { display:grid; grid-template-columns:repeat(3, 1fr); gap:4px 10px; }
        .fig span { display:block; font-size:11px; color:var(--dim); }
        .fig b { font-variant-numeric:tabular-nums; font-size:15px; }
        .bar { height:6px; background:var(--line); border-radius:3px; margin-top:8px; overflow:hidden; }
        .bar i { display:block; height:100%; background:var(--bar); width:0; }
        .repair { font-size:12px; color:var(--dim); margin-top:3px; }
        .why { font-size:12px; color:var(--down); margin-top:4px; word-break:break-word; }
        .addr { font-size:11px; color:var(--dim); }
        table { width:100%; border-collapse:collapse; background:var(--card); border:1px solid var(--line); }
        th, td { text-align:left; padding:5px 8px; border-bottom:1px solid var(--line); font-size:12px; vertical-align:top; }
        th { color:var(--dim); font-weight:600; }
        td.text { font-family:ui-monospace, monospace; word-break:break-word; }
        h3 { font-size:14px; margin:18px 0 8px; }
        </style>
        </head>
        <body>
        <header><h1>Tern</h1><span id="cluster" class="dim">cluster …</span>
        <span id="asked" class="dim"></span><span id="updated" class="dim" style="margin-left:auto"></span></header>
        <div id="banner"></div>
        <main>
        <div class="summary" id="summary"></div>
        <div class="campuses" id="campuses"></div>
        <h3>Last errors</h3>
        <table><thead><tr><th>when</th><th>node</th><th>kind</th><th>count</th><th>text</th></tr></thead>
        <tbody id="errors"><tr><td colspan="5">none yet</td></tr></tbody></table>
        </main>
        <script>
        "use strict";
        const token = (location.hash.match(/token=([^&]+)/) || [])[1];
        const headers = token ? { Authorization: "Bearer " + decodeURIComponent(token) } : {};
        const $ = (id) => document.getElementById(id);
        function esc(s) { return String(s).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]); }
        function num(v, digits) {
          if (v === null || v === undefined) return "–";
          if (digits !== undefined) return Number(v).toFixed(digits);
          return Number(v).toLocaleString("en-US");
        }
        function state(n) {
          if (!n.reachable) return "down";
          if (n.healthy) return "up";
          if (n.status && n.status.learner_only) return "learner";
          return "unhealthy";
        }
        const labels = { up: "up", learner: "rebuilding", unhealthy: "unhealthy", down: "down" };
        function fig(label, field, value) {
          return `<div class="fig"><span>${label}</span><b data-field="${field}">${value}</b></div>`;
        }
        function card(n) {
          const s = n.status, st = state(n);
          let body = "";
          if (s) {
            const peers = s.peers ? s.peers.length : 0;
            body += `<div class="figs">
              ${fig("requests/s", "ops", num(s.ops_per_sec))}
              ${fig("p50 ms", "p50", num(s.latency_p50_ms, 2))}
              ${fig("p99 ms", "p99", num(s.latency_p99_ms, 2))}
              ${fig("fsyncs/s", "fsyncs", num(s.fsyncs_per_sec, 1))}
              ${fig("keys in memory", "keys", num(s.keys_loaded))}
              ${fig("peers", "peers", num(s.peers_connected) + "/" + peers)}
              ${fig("clients", "clients", num(s.connected_clients))}
              ${fig("requests", "requests", num(s.requests))}
              ${fig("failed", "failed", num(s.requests_failed))}
            </div>`;
            const r = s.repair;
            if (r) {
              const pct = r.bucketsTotal ? Math.floor(100 * r.bucketsDone / r.bucketsTotal) : 0;
              const last = r.lastPassAgoSeconds === null || r.lastPassAgoSeconds === undefined
                ? "no full pass yet" : `last pass ${Math.round(r.lastPassAgoSeconds)} s ago`;
              body += `<div class="bar"><i style="width:${r.running ? pct : 100}%"></i></div>
                <div class="repair" data-field="repair">repair ${r.running ? "pass " + r.pass + " " + pct + "%" + (r.fullPace ? " (full pace)" : "") : "idle"} · ${last} · repaired ${num(r.repairedBehind + r.repairedTaught + r.repairedMissing + r.repairedDamaged + r.rebuilt)}${r.safetyAlarms ? " · ALARMS " + r.safetyAlarms : ""}</div>`;
            } else {
              body += `<div class="repair" data-field="repair">repair scanner off</div>`;
            }
            if (s.learner_only) body += `<div class="why">learner-only: ${esc(s.learner_only_reason || "rebuilding")} (${num(s.damaged_keys)} keys damaged)</div>`;
          } else {
            body += `<div class="why" data-field="error">${esc(n.error || "no answer")}</div>`;
          }
          return `<div class="node" data-node="${n.id}" data-campus="${esc(n.campus)}" data-state="${st}">
            <div class="title"><b>n${n.id}${n.self ? " ·&nbsp;this node" : ""}</b><span class="badge">${labels[st]}</span></div>
            <div class="addr">client ${esc(n.client)} · admin ${esc(n.admin)}</div>${body}</div>`;
        }
        function render(c) {
          $("cluster").textContent = "cluster " + c.cluster;
          $("asked").textContent = "via n" + c.asked;
          $("updated").textContent = "updated " + new Date(c.at * 1000).toLocaleTimeString();
          $("banner").style.display = "none";
          const campuses = {};
          for (const n of c.nodes) (campuses[n.campus] = campuses[n.campus] || []).push(n);
          let sum = "", cols = "";
          for (const name of Object.keys(campuses).sort()) {
            const nodes = campuses[name];
            const up = nodes.filter((n) => state(n) === "up").length;
            const cls = up === nodes.length ? "ok" : up === 0 ? "lost" : "degraded";
            sum += `<div class="campus-sum ${cls}" data-campus-summary="${esc(name)}" data-up="${up}">campus <b>${esc(name)}</b> · ${up}/${nodes.length} up${cls === "lost" ? " · DOWN" : ""}</div>`;
            cols += `<div class="campus"><h2>campus ${esc(name)}</h2>${nodes.map(card).join("")}</div>`;
          }
          $("summary").innerHTML = sum;
          $("campuses").innerHTML = cols;
          const errs = [];
          for (const n of c.nodes) for (const e of (n.status && n.status.last_errors) || []) errs.push({ node: n.id, ...e });
          errs.sort((a, b) => b.at - a.at);
          $("errors").innerHTML = errs.length === 0 ? `<tr><td colspan="5">none</td></tr>` : errs.slice(0, 15).map((e) =>
            `<tr><td>${new Date(e.at * 1000).toLocaleTimeString()}</td><td>n${e.node}</td><td>${esc(e.source)}</td><td>${e.count}</td><td class="text">${esc(e.text)}</td></tr>`).join("");
          document.body.dataset.loaded = "yes";
        }
        async function refresh() {
          const ctl = new AbortController();
          const timer = setTimeout(() => ctl.abort(), 2500);
          try {
            const r = await fetch("cluster", { headers, signal: ctl.signal, cache: "no-store" });
            if (!r.ok) throw new Error("HTTP " + r.status + (r.status === 401 ? " (add #token=… to the address)" : ""));
            render(await r.json());
          } catch (e) {
            $("banner").textContent = "This node's admin port is not answering: " + e.message + ". Open the dashboard of another node.";
            $("banner").style.display = "block";
          } finally {
            clearTimeout(timer);
            setTimeout(refresh, 1000);
          }
        }
        refresh();
        </script>
        </body>
        </html>

        """#
}
