// Lasso live dashboard. Plain JS, no dependencies, no build step.
//
// Data arrives over one server-sent event stream (/api/stream?profile=&node=):
//   hello     once: node, version, latency history, recent events
//   snapshot  every second: chains, providers, cluster (computed once per tick on the node)
//   events    every ~200 ms when there are some: sampled routing decisions and transitions
"use strict";

(() => {
  const HISTORY_S = 120;
  const FEED_MAX = 300;
  const FEED_ROWS = 150;
  // Provider statuses, most severe first: the router's words (ChainRouter.provider_status,
  // the same as /api/chains), then "unknown" (cluster data without a status). The page
  // only maps them to colours and labels; it never derives a status of its own.
  const STATUS_ORDER = [
    "misconfigured", "circuit_open", "rate_limited", "recovering", "degraded", "lagging", "healthy",
    "unknown",
  ];
  const STATUS_LABEL = {
    misconfigured: "misconfigured",
    circuit_open: "circuit open",
    rate_limited: "rate-limited",
    recovering: "recovering",
    degraded: "degraded",
    lagging: "lagging",
    healthy: "healthy",
    unknown: "unknown",
  };
  const PALETTE = ["#4cc2ff", "#f472b6", "#a3e635", "#fbbf24", "#c084fc", "#2dd4bf", "#fb923c", "#94a3b8"];

  const $ = (sel, root = document) => root.querySelector(sel);
  const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));
  const ESC = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
  const esc = (v) => String(v ?? "").replace(/[&<>"']/g, (c) => ESC[c]);
  const isNum = (v) => typeof v === "number" && Number.isFinite(v);
  const fmtMs = (v) => (isNum(v) ? (v >= 100 ? v.toFixed(0) : v.toFixed(1)) + " ms" : "—");
  const fmtPct = (v) => (isNum(v) ? (v * 100).toFixed(v >= 0.9995 ? 0 : 1) + "%" : "—");
  const fmtRate = (v) => (isNum(v) ? (v >= 100 ? v.toFixed(0) : v.toFixed(1)) : "—");
  const fmtInt = (v) => (isNum(v) ? v.toLocaleString("en-US") : "—");
  // Lag is blocks behind the consensus head (0 at or above it), as the API reports it.
  const fmtLag = (v) => (isNum(v) ? String(v) : "—");
  const statusLabel = (s) => STATUS_LABEL[s] || s;
  const clockTime = (ts) => {
    const d = new Date(ts * 1000);
    const p = (n, w = 2) => String(n).padStart(w, "0");
    return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}`;
  };

  // -- state -----------------------------------------------------------------------------
  const state = {
    profile: null, // null: the node's default profile
    node: null, // null: the default view (cluster aggregate when clustered)
    hello: null,
    snap: null,
    history: {}, // chain -> provider -> [[ts, ms|null], ...]
    events: [],
    feedFilter: "all",
    paused: false,
    sort: { key: "chain", dir: 1 },
    tab: "overview",
    heatMetric: "p50_ms",
    es: null,
    lastMessage: 0,
    reconnectTimer: null,
    profilesKey: "",
    regionsKey: "",
    chainsKey: "",
    colors: {},
  };

  function readLocation() {
    const m = location.pathname.match(/^\/dashboard\/([^/]+)\/?$/);
    state.profile = m ? decodeURIComponent(m[1]) : null;
    state.node = new URLSearchParams(location.search).get("node") || null;
  }

  function pageUrl() {
    const path = state.profile ? "/dashboard/" + encodeURIComponent(state.profile) : "/dashboard";
    return state.node ? path + "?node=" + encodeURIComponent(state.node) : path;
  }

  // -- stream ------------------------------------------------------------------------------
  function connect() {
    if (state.es) state.es.close();
    clearTimeout(state.reconnectTimer);
    const q = new URLSearchParams();
    if (state.profile) q.set("profile", state.profile);
    if (state.node) q.set("node", state.node);
    const es = new EventSource("/api/stream?" + q.toString());
    state.es = es;
    setConn("connecting");
    es.addEventListener("hello", (e) => onHello(JSON.parse(e.data)));
    es.addEventListener("snapshot", (e) => onSnapshot(JSON.parse(e.data)));
    es.addEventListener("events", (e) => onEvents(JSON.parse(e.data)));
    es.onopen = () => setConn("live");
    es.onerror = () => {
      if (es !== state.es) return;
      if (es.readyState === EventSource.CLOSED) {
        setConn("offline");
        explainFailure();
        state.reconnectTimer = setTimeout(connect, 4000);
      } else {
        setConn("reconnecting");
      }
    };
  }

  async function explainFailure() {
    // EventSource hides the status; ask once with fetch to show the server's reason.
    const q = new URLSearchParams();
    if (state.profile) q.set("profile", state.profile);
    if (state.node) q.set("node", state.node);
    try {
      const ctl = new AbortController();
      const r = await fetch("/api/stream?" + q.toString(), { signal: ctl.signal });
      if (r.ok) ctl.abort(); // a stream: the headers were all we wanted
      if (!r.ok) {
        const doc = await r.json();
        showBanner(`Stream refused (${r.status}): ${doc.error || ""}` +
          (doc.available_profiles ? ` — available profiles: ${doc.available_profiles.join(", ")}` : "") +
          (doc.available_nodes ? ` — available nodes: ${doc.available_nodes.join(", ")}` : ""));
      } else {
        showBanner("Live stream interrupted; reconnecting…");
      }
    } catch (_) {
      showBanner("Node unreachable; reconnecting…");
    }
  }

  function showBanner(text) {
    const b = $("#banner");
    b.textContent = text;
    b.hidden = !text;
  }

  function setConn(kind) {
    const el = $("#conn");
    el.className = "conn conn-" + kind;
    el.textContent = kind;
  }

  setInterval(() => {
    if (state.lastMessage && Date.now() - state.lastMessage > 5000 && state.es &&
        state.es.readyState === EventSource.OPEN) {
      setConn("stale");
    }
  }, 1000);

  function onHello(h) {
    state.hello = h;
    state.helloAt = Date.now();
    state.lastMessage = Date.now();
    state.history = {};
    for (const [chain, byProvider] of Object.entries(h.history || {})) {
      state.history[chain] = {};
      for (const [pid, points] of Object.entries(byProvider)) state.history[chain][pid] = points.slice();
    }
    state.events = (h.events || []).slice().reverse();
    renderFeed(true);
  }

  function onSnapshot(s) {
    state.lastMessage = Date.now();
    if (state.es && state.es.readyState === EventSource.OPEN) setConn("live");
    showBanner(s.error || (s.cluster_error ? `Cluster data unavailable, showing this node: ${s.cluster_error}` : ""));
    const first = !state.snap;
    state.snap = s;
    if (first && !state.events.length) renderFeed();
    const cutoff = s.ts - HISTORY_S;
    for (const chain of s.chains) {
      const byProvider = (state.history[chain.chain] ||= {});
      for (const p of chain.providers) {
        const pts = (byProvider[p.id] ||= []);
        if (!pts.length || pts[pts.length - 1][0] < s.ts) pts.push([s.ts, p.lat_ms]);
        while (pts.length && pts[0][0] < cutoff) pts.shift();
      }
    }
    if (!document.hidden) render(); // a background tab only keeps the data
  }

  function onEvents(batch) {
    state.lastMessage = Date.now();
    const evs = batch.events || [];
    for (const e of evs) state.events.unshift(e);
    if (state.events.length > FEED_MAX) state.events.length = FEED_MAX;
    if (batch.dropped) state.feedDropped = (state.feedDropped || 0) + batch.dropped;
    if (!state.paused && state.tab === "overview" && !document.hidden) prependFeed(evs);
  }

  // -- rendering -------------------------------------------------------------------------------
  function render() {
    const s = state.snap;
    if (!s) return;
    renderTop(s);
    if (state.tab === "overview") {
      renderChains(s);
      renderProviderTable(s);
      renderCharts(s);
      renderFeedFoot(s);
    } else if (state.tab === "methods") {
      renderHeat(s);
    } else if (state.tab === "cluster") {
      renderCluster(s);
    }
    renderLoadgenChains(s);
  }

  function renderTop(s) {
    const profilesKey = JSON.stringify(s.profiles.map((p) => [p.slug, p.name]));
    const sel = $("#profile-select");
    if (profilesKey !== state.profilesKey) {
      state.profilesKey = profilesKey;
      sel.innerHTML = s.profiles
        .map((p) => `<option value="${esc(p.slug)}">${esc(p.name || p.slug)} (${esc(p.slug)})</option>`)
        .join("");
    }
    sel.value = s.profile;

    const cluster = s.cluster || {};
    const nodes = cluster.nodes || [];
    const clustered = !!cluster.enabled;
    $("#region-field").hidden = !clustered;
    if (clustered) {
      const regionsKey = JSON.stringify(nodes.map((n) => [n.node_id, n.region, n.status]));
      const rs = $("#region-select");
      if (regionsKey !== state.regionsKey) {
        state.regionsKey = regionsKey;
        rs.innerHTML = `<option value="">All regions (aggregate)</option>` + nodes
          .map((n) => {
            const label = n.region && n.region !== n.node_id ? `${n.node_id} (${n.region})` : n.node_id;
            const note = n.status === "responding" ? "" : ` · ${n.status}`;
            return `<option value="${esc(n.node_id)}">${esc(label)}${esc(note)}</option>`;
          })
          .join("");
      }
      rs.value = state.node || "";
    }
    const badge = $("#cluster-badge");
    badge.textContent = clustered ? `${cluster.nodes_responding ?? "?"}/${cluster.nodes_total ?? "?"}` : "";
    const up = state.hello ? state.hello.uptime_s + Math.round((Date.now() - state.helloAt) / 1000) : null;
    $("#node-info").textContent = `node ${s.node_id}` + (state.hello ? ` · v${state.hello.version}` : "") +
      (up != null ? ` · up ${fmtDuration(up)}` : "");
    $("#foot-left").textContent = `profile ${s.profile} · ${s.scope === "cluster" ? "cluster aggregate" :
      "node " + (s.node || s.node_id)} · updated ${clockTime(s.ts)}`;
    $("#foot-right").textContent = `${s.viewers} dashboard stream${s.viewers === 1 ? "" : "s"} on this node`;
    if (!state.legendDone) {
      state.legendDone = true;
      $("#legend").innerHTML = STATUS_ORDER.filter((st) => st !== "unknown").reverse()
        .map((st) => `<span class="st-${st}"><span class="dot"></span>${statusLabel(st)}</span>`)
        .join("");
    }
  }

  function fmtDuration(s) {
    if (s < 60) return s + "s";
    if (s < 3600) return Math.floor(s / 60) + "m";
    if (s < 86400) return Math.floor(s / 3600) + "h" + String(Math.floor((s % 3600) / 60)).padStart(2, "0");
    return Math.floor(s / 86400) + "d";
  }

  function endpointUrls(chain) {
    const wsProto = location.protocol === "https:" ? "wss:" : "ws:";
    return {
      http: location.origin + chain.endpoints.http,
      ws: wsProto + "//" + location.host + chain.endpoints.ws,
    };
  }

  function renderChains(s) {
    const host = $("#chains");
    const html = s.chains.map((c) => chainCard(c)).join("");
    host.dataset.count = String(Math.min(s.chains.length, 3)); // 1, 2 or "3 and more": see app.css
    host.innerHTML = html || `<div class="panel empty-note">This profile has no chains.</div>`;
  }

  function chainCard(c) {
    const sum = c.summary || {};
    const urls = endpointUrls(c);
    const counts = STATUS_ORDER.filter((st) => c.status_counts[st])
      .map((st) => `<span class="pill st-${st}">${c.status_counts[st]} ${statusLabel(st)}</span>`)
      .join("");
    const kv = (k, v) => `<dt>${k}</dt><dd title="${esc(v)}">${esc(v)}</dd>`;
    return `<article class="chain-card" data-chain="${esc(c.chain)}">
      <h3><span class="chain-name">${esc(c.name)}</span> <small>chain ${esc(c.chain_id)} · ${esc(c.chain)}</small></h3>
      <div class="chain-body">
        <div class="topo-box">${topology(c)}</div>
        <div class="chain-side">
          <dl class="kv">
            ${kv("head", fmtInt(c.consensus_height))}
            ${kv("block time", isNum(c.block_time_ms) ? (c.block_time_ms / 1000).toFixed(1) + " s" : "—")}
            ${kv("calls/s", fmtRate(sum.calls_s))}
            ${kv("success (60 s)", fmtPct(sum.window_success_rate))}
            ${kv("client p50", fmtMs(sum.p50_latency_ms))}
            ${kv("client p95", fmtMs(sum.p95_latency_ms))}
            ${kv("requests", fmtInt(sum.total_calls))}
            ${kv("failovers", fmtInt(sum.failovers))}
            ${kv("strategy", c.default_strategy || "load-balanced")}
          </dl>
          <div class="status-mini">${counts}</div>
        </div>
      </div>
      <div class="endpoints">
        <div class="endpoint"><span class="tag">HTTP</span><code title="${esc(urls.http)}">${esc(urls.http)}</code>
          <button type="button" class="copy" data-copy="${esc(urls.http)}">copy</button></div>
        <div class="endpoint"><span class="tag">WS</span><code title="${esc(urls.ws)}">${esc(urls.ws)}</code>
          <button type="button" class="copy" data-copy="${esc(urls.ws)}">copy</button></div>
      </div>
    </article>`;
  }

  // The topology's geometry follows the number of providers: the ring grows so that
  // circles never overlap, circles shrink and labels thin out past 10 and 16 providers
  // (the table below has every figure), and the SVG is scaled to fit a bounded box.
  function topoGeometry(n) {
    const r = n <= 8 ? 21 : n <= 14 ? 17 : n <= 20 ? 14 : 11;
    const labels = n <= 10 ? "full" : n <= 16 ? "id" : "none";
    const spacing = 2 * r + (labels === "full" ? 64 : labels === "id" ? 44 : 8);
    const rx = Math.max(150, ((n * spacing) / (2 * Math.PI)) * 1.25);
    const ry = Math.max(42 + r + 40, rx * 0.62);
    const padX = r + (labels === "none" ? 6 : 58), padY = r + (labels === "full" ? 32 : labels === "id" ? 20 : 6);
    const W = Math.round(2 * (rx + padX)), H = Math.round(2 * (ry + padY));
    return { r, labels, rx, ry, padX, padY, W, H, cx: W / 2, cy: H / 2 };
  }

  const clip = (text, max) => (text.length > max ? text.slice(0, max - 1) + "…" : text);

  function topology(c) {
    const n = c.providers.length || 1;
    const g = topoGeometry(n);
    const { r, cx, cy } = g;
    let links = "", nodes = "";
    // The drawing's extent, to crop the view box to what is drawn (the hub and its ring
    // first): few providers leave part of the ellipse empty.
    let minX = cx - 56, maxX = cx + 56, minY = cy - 56, maxY = cy + 56;
    c.providers.forEach((p, i) => {
      const a = -Math.PI / 2 + (i * 2 * Math.PI) / n;
      const x = cx + g.rx * Math.cos(a), y = cy + g.ry * Math.sin(a);
      minX = Math.min(minX, x - g.padX); maxX = Math.max(maxX, x + g.padX);
      minY = Math.min(minY, y - g.padY); maxY = Math.max(maxY, y + g.padY);
      const share = isNum(p.share) ? p.share : 0;
      const w = (1.2 + share * 9).toFixed(1);
      const flow = isNum(p.calls_s) && p.calls_s > 0.05 ? " flow" : "";
      const st = esc(p.status);
      links += `<line class="link st-${st}${flow}" x1="${cx}" y1="${cy}" x2="${x.toFixed(1)}" y2="${y.toFixed(1)}" stroke-width="${w}"/>`;
      const lag = isNum(p.lag) && p.lag !== 0 ? ` · lag ${fmtLag(p.lag)}` : "";
      const height = isNum(p.height) ? "#" + p.height : "no height";
      const lat = isNum(p.p50_ms) ? Math.round(p.p50_ms) + (g.labels === "none" ? "" : "ms") : "—";
      const err = p.last_error ? `\nlast error (${p.last_error.transport}): ${p.last_error.message}` : "";
      const title = `${p.name} (${p.id}): ${statusLabel(p.status)}\nheight ${p.height ?? "?"}, lag ${p.lag ?? "?"}\n` +
        `p50 ${fmtMs(p.p50_ms)}, success ${fmtPct(p.window_success_rate ?? p.success_rate)}, share ${fmtPct(p.share)}${err}`;
      const above = Math.sin(a) < -0.5; // labels of the top nodes go above, clear of the hub
      let text = "";
      if (g.labels !== "none") {
        text += `<text class="pid" y="${above ? -(r + 19) : r + 14}">${esc(clip(p.id, 14))}</text>`;
      }
      if (g.labels === "full") {
        text += `<text class="sub" y="${above ? -(r + 7) : r + 26}">${esc(height + lag)}</text>`;
      }
      nodes += `<g class="prov st-${st}" data-provider="${esc(p.id)}" data-status="${st}" transform="translate(${x.toFixed(1)},${y.toFixed(1)})">
        <title>${esc(title)}</title>
        <circle r="${r}"/>
        <text class="lat${g.labels === "none" ? " small" : ""}" y="${g.labels === "none" ? 3 : 4}">${esc(lat)}</text>
        ${text}
      </g>`;
    });
    const name = clip(c.chain, 12);
    const hub = `<g class="hub" transform="translate(${cx},${cy})">
        <circle class="ring" r="50"/><circle r="42"/>
        <text class="name" y="-2"${name.length > 8 ? ' textLength="74" lengthAdjust="spacingAndGlyphs"' : ""}>${esc(name)}</text>
        <text class="h" y="14">${isNum(c.consensus_height) ? "#" + c.consensus_height : "—"}</text>
      </g>`;
    const [x0, y0, w, h] = [minX, minY, maxX - minX, maxY - minY].map((v) => Math.round(v));
    // width/height are the drawing's own size: the page may shrink it, never enlarge it.
    return `<svg class="topology" viewBox="${x0} ${y0} ${w} ${h}" width="${w}" height="${h}" data-providers="${n}" role="img" aria-label="${esc(c.name)} providers">${links}${hub}${nodes}</svg>`;
  }

  // -- provider table --------------------------------------------------------------------------
  function providerRows(s) {
    const rows = [];
    for (const c of s.chains) {
      for (const p of c.providers) {
        const http = p.transports.http, ws = p.transports.ws;
        const rl = Math.max(...Object.values(p.transports).map((t) => (t.rate_limited ? t.rate_limit_s : 0)), 0);
        rows.push({
          ...p,
          chain: c.chain,
          success: p.window_success_rate ?? p.success_rate,
          http: http ? http.circuit : "",
          ws: ws ? (ws.connected ? "up " : "down ") + ws.circuit : "",
          rate_limit: rl,
          // Sorting by last error puts the most recent first (ascending age).
          last_error_age: p.last_error && isNum(p.last_error.age_s) ? p.last_error.age_s : null,
          _http: http,
          _ws: ws,
        });
      }
    }
    const { key, dir } = state.sort;
    const val = (r) => (key === "status" ? STATUS_ORDER.indexOf(r.status) : r[key]);
    rows.sort((a, b) => {
      const va = val(a), vb = val(b);
      const na = va === null || va === undefined || va === "", nb = vb === null || vb === undefined || vb === "";
      if (na !== nb) return na ? 1 : -1; // missing values last, either direction
      if (va < vb) return -dir;
      if (va > vb) return dir;
      return a.chain < b.chain ? -1 : a.chain > b.chain ? 1 : (a.priority ?? 0) - (b.priority ?? 0);
    });
    return rows;
  }

  function breakerPill(t) {
    if (!t) return `<span class="muted">—</span>`;
    const retry = t.circuit !== "closed" && isNum(t.retry_after_s) ? ` ${t.retry_after_s.toFixed(0)}s` : "";
    return `<span class="pill ${esc(t.circuit)}">${esc(t.circuit.replace("_", "-"))}${retry}</span>`;
  }

  // An HTTP channel whose last attempts could not connect: said beside its breaker.
  function unreachablePill(t) {
    if (!t || t.connection !== "down") return "";
    const why = t.last_error ? ` title="${esc(t.last_error.message)}"` : "";
    return ` <span class="pill down"${why}>unreachable</span>`;
  }

  function fmtAge(s) {
    if (!isNum(s)) return "";
    return s < 60 ? Math.round(s) + "s ago" : s < 3600 ? Math.round(s / 60) + "m ago" : Math.round(s / 3600) + "h ago";
  }

  function lastErrorCell(e) {
    if (!e) return `<span class="muted">—</span>`;
    const what = e.status ? `HTTP ${e.status}` : e.cause.replace(/_/g, " ");
    const tip = `${e.transport}: ${e.message}\n(${e.category}, ${fmtAge(e.age_s)})`;
    return `<span class="last-error" title="${esc(tip)}">${esc(what)} <span class="muted">${esc(fmtAge(e.age_s))}</span></span>`;
  }

  function renderProviderTable(s) {
    const rows = providerRows(s);
    const body = rows.map((r) => {
      const lagCls = isNum(r.lag) && r.lag > 0 ? " neg" : "";
      const succCls = isNum(r.success) ? (r.success < 0.9 ? " bad" : r.success < 0.99 ? " warn" : "") : "";
      const share = isNum(r.share) ? r.share : 0;
      const wsConn = !r._ws || r._ws.connected === null ? ""
        : `<span class="pill ${r._ws.connected ? "up" : "down"}">${r._ws.connected ? "connected" : "disconnected"}</span> `;
      const ws = r._ws ? wsConn + breakerPill(r._ws) : `<span class="muted">—</span>`;
      const rl = r.rate_limit > 0 ? `<span class="pill limited">${r.rate_limit.toFixed(1)}s</span>` : `<span class="muted">—</span>`;
      return `<tr data-provider="${esc(r.id)}" data-chain="${esc(r.chain)}" data-status="${esc(r.status)}">
        <td class="st-${esc(r.status)}"><span class="dot"></span>${esc(statusLabel(r.status))}</td>
        <td>${esc(r.name)}${r.name !== r.id ? `<span class="id">${esc(r.id)}</span>` : ""}</td>
        <td>${esc(r.chain)}</td>
        <td class="num">${fmtInt(r.height)}</td>
        <td class="num${lagCls}">${fmtLag(r.lag)}</td>
        <td class="num" data-col="p50">${fmtMs(r.p50_ms)}</td>
        <td class="num">${fmtMs(r.p95_ms)}</td>
        <td class="num">${fmtMs(r.p99_ms)}</td>
        <td class="num${succCls}">${fmtPct(r.success)}</td>
        <td class="num"><span class="share"><svg viewBox="0 0 100 6" preserveAspectRatio="none"><rect class="track" width="100" height="6" rx="3"/><rect class="bar" width="${(share * 100).toFixed(1)}" height="6" rx="3"/></svg>${fmtPct(r.share)}</span></td>
        <td class="num" data-col="calls_s">${fmtRate(r.calls_s)}</td>
        <td class="num" data-col="calls">${fmtInt(r.calls)}</td>
        <td>${breakerPill(r._http)}${unreachablePill(r._http)}</td>
        <td>${ws}</td>
        <td class="num">${rl}</td>
        <td data-col="last_error">${lastErrorCell(r.last_error)}</td>
      </tr>`;
    }).join("");
    $("#provider-table tbody").innerHTML = body;
    for (const th of $$("#provider-table th")) {
      const on = th.dataset.key === state.sort.key;
      th.classList.toggle("sorted", on);
      th.classList.toggle("asc", on && state.sort.dir > 0);
    }
  }

  // -- latency charts -----------------------------------------------------------------------
  function colorIndex(chain, pid) {
    const key = chain + "/" + pid;
    if (!(key in state.colors)) {
      const used = Object.keys(state.colors).filter((k) => k.startsWith(chain + "/")).length;
      state.colors[key] = used % PALETTE.length;
    }
    return state.colors[key];
  }

  function renderCharts(s) {
    const host = $("#charts");
    const key = s.chains.map((c) => c.chain + ":" + c.providers.map((p) => p.id).join(",")).join("|");
    if (key !== state.chainsKey) {
      state.chainsKey = key;
      host.dataset.many = s.chains.length > 4 ? "1" : "";
      host.innerHTML = s.chains.map((c) => `<div class="chart" data-chain="${esc(c.chain)}">
          <h3>${esc(c.name)}</h3><canvas></canvas><div class="keys"></div></div>`).join("");
    }
    for (const c of s.chains) {
      const box = host.querySelector(`.chart[data-chain="${CSS.escape(c.chain)}"]`);
      if (!box) continue;
      const series = c.providers.map((p) => ({
        id: p.id,
        color: PALETTE[colorIndex(c.chain, p.id)],
        points: ((state.history[c.chain] || {})[p.id]) || [],
      }));
      drawChart(box.querySelector("canvas"), series, s.ts);
      box.querySelector(".keys").innerHTML = c.providers.map((p) =>
        `<span class="k${colorIndex(c.chain, p.id)}">${esc(p.id)}<b>${fmtMs(p.lat_ms ?? p.avg_ms)}</b></span>`).join("");
    }
  }

  function niceMax(v) {
    if (!(v > 0)) return 10;
    const exp = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * exp >= v) return m * exp;
    return 10 * exp;
  }

  function drawChart(canvas, series, now) {
    const dpr = window.devicePixelRatio || 1;
    const w = canvas.clientWidth || 400, h = canvas.clientHeight || 190;
    if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
      canvas.width = Math.round(w * dpr);
      canvas.height = Math.round(h * dpr);
    }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    const L = 44, R = 8, T = 8, B = 20;
    const pw = w - L - R, ph = h - T - B;
    const t0 = now - HISTORY_S;
    const values = [];
    for (const s of series) for (const [t, v] of s.points) if (t >= t0 && isNum(v)) values.push(v);
    values.sort((a, b) => a - b);
    // Scale to the 98th percentile so one spike does not flatten every line.
    const top = niceMax(values.length ? values[Math.min(values.length - 1, Math.floor(values.length * 0.98))] * 1.15 : 10);
    const X = (t) => L + ((t - t0) / HISTORY_S) * pw;
    const Y = (v) => T + ph - (Math.min(v, top) / top) * ph;

    ctx.font = "10px ui-monospace, Menlo, monospace";
    ctx.strokeStyle = "#1c2632";
    ctx.fillStyle = "#6b7888";
    ctx.lineWidth = 1;
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    for (let i = 0; i <= 4; i++) {
      const v = (top * i) / 4, y = Math.round(Y(v)) + 0.5;
      ctx.beginPath(); ctx.moveTo(L, y); ctx.lineTo(w - R, y); ctx.stroke();
      ctx.fillText(Number.isInteger(v) ? String(v) : v.toFixed(1), L - 6, y);
    }
    ctx.textAlign = "center";
    ctx.textBaseline = "top";
    for (let s = 0; s <= HISTORY_S; s += 30) {
      const x = Math.round(X(now - s)) + 0.5;
      ctx.beginPath(); ctx.moveTo(x, T); ctx.lineTo(x, T + ph); ctx.stroke();
      ctx.fillText(s === 0 ? "now" : `-${s}s`, Math.min(Math.max(x, L + 12), w - R - 12), T + ph + 5);
    }
    ctx.save();
    ctx.translate(10, T + ph / 2);
    ctx.rotate(-Math.PI / 2);
    ctx.fillText("ms", 0, -4);
    ctx.restore();

    ctx.lineWidth = 1.6;
    ctx.lineJoin = "round";
    for (const s of series) {
      ctx.strokeStyle = s.color;
      ctx.beginPath();
      let pen = false, prevT = null, last = null;
      for (const [t, v] of s.points) {
        if (t < t0) continue;
        if (!isNum(v) || (prevT !== null && t - prevT > 3.5)) pen = false;
        if (isNum(v)) {
          const x = X(t), y = Y(v);
          if (pen) ctx.lineTo(x, y); else ctx.moveTo(x, y);
          pen = true;
          last = [x, y];
        }
        prevT = t;
      }
      ctx.stroke();
      if (last) {
        ctx.fillStyle = s.color;
        ctx.beginPath(); ctx.arc(last[0], last[1], 2.5, 0, Math.PI * 2); ctx.fill();
      }
    }
  }

  // -- live feed ------------------------------------------------------------------------------
  function eventVisible(e) {
    if (state.feedFilter === "state") return e.type !== "decision";
    if (state.feedFilter === "failover") {
      return e.type !== "decision" || e.status === "error" || (e.retries || 0) > 0;
    }
    return true;
  }

  const cause = (e) => (e.status ? `HTTP ${e.status}` : String(e.cause || "").replace(/_/g, " "));
  const STATE_TEXT = {
    "provider.unreachable": (e) => `unreachable (${cause(e)}): ${e.error || ""}`,
    "provider.reachable": (e) => `reachable again${isNum(e.down_s) ? ` after ${e.down_s.toFixed(0)} s` : ""}`,
    "provider.error": (e) => `error (${cause(e)}): ${e.error || ""}${e.repeats ? ` (+${e.repeats} since)` : ""}`,
    "provider.rate_limited": (e) => `rate-limited${isNum(e.remaining_s) ? ` for ${e.remaining_s.toFixed(0)} s` : ""}`,
    "provider.rate_limit_cleared": () => "rate limit cleared",
    "provider.lagging": (e) => `lagging: ${fmtLag(e.lag)} blocks behind`,
    "provider.caught_up": () => "caught up",
  };

  function stateText(e) {
    if (e.type === "ws_upstream") return `WebSocket ${e.connected ? "connected" : "disconnected"}`;
    const name = String(e.event || e.type);
    const f = STATE_TEXT[name];
    return f ? f(e) : name.replace(/^provider\./, "").replace(/_/g, " ") + (e.detail ? ` (${e.detail})` : "");
  }

  function eventRow(e, fresh) {
    const f = fresh ? " fresh" : "";
    if (e.type === "circuit") {
      const toOpen = e.to === "open" ? " to-open" : "";
      return `<div class="ev circuit${toOpen}${f}" data-type="circuit" data-provider="${esc(e.provider)}"><time>${clockTime(e.ts)}</time>
        <span>⚡ ${esc(e.chain)} · <b>${esc(e.provider)}</b>/${esc(e.transport)} circuit ${esc(e.from)} → <b>${esc(e.to)}</b> <span class="muted">${esc(e.reason || "")}</span></span></div>`;
    }
    if (e.type !== "decision") {
      const bad = /rate_limited|lagging|unreachable|provider\.error/.test(e.event || "") || e.connected === false ? " to-warn" : "";
      const where = [e.chain, e.provider].filter(Boolean).map(esc).join(" · ");
      return `<div class="ev circuit${bad}${f}" data-type="${esc(e.type)}" data-provider="${esc(e.provider || "")}"><time>${clockTime(e.ts || 0)}</time>
        <span>● ${where}${e.transport ? "/" + esc(e.transport) : ""} ${esc(stateText(e))}</span></div>`;
    }
    const cls = e.status === "error" ? " error" : (e.retries || 0) > 0 ? " failover" : "";
    const err = e.error ? ` title="${esc(`${e.error.code}: ${e.error.message}`)}"` : "";
    return `<div class="ev decision${cls}${f}" data-type="decision" data-provider="${esc(e.provider || "")}"${err}>
      <time>${clockTime(e.ts)}</time><span class="chain">${esc(e.chain)}</span>
      <span class="method">${esc(e.method)}</span><span class="strat">${esc(e.strategy)}</span>
      <span class="arrow">→</span><span class="prov">${esc(e.provider || (e.status === "error" ? "none" : "—"))}</span>
      <span class="retries">${e.retries ? "↻" + e.retries : ""}</span>
      <span class="lat">${e.status === "error" ? "error" : fmtMs(e.latency_ms)}</span></div>`;
  }

  function renderFeed() {
    const rows = [];
    for (const e of state.events) {
      if (rows.length >= FEED_ROWS) break;
      if (eventVisible(e)) rows.push(eventRow(e, false));
    }
    const remote = state.node && state.snap && state.node !== state.snap.node_id;
    const empty = remote
      ? `routing decisions are streamed by each node: open ${esc(state.node)}'s own dashboard to see them`
      : "no routing decisions yet — send some traffic (load generator)";
    $("#feed").innerHTML = rows.join("") || `<div class="ev muted placeholder">${empty}</div>`;
  }

  function prependFeed(evs) {
    const feed = $("#feed");
    if (!evs.length) return;
    if (feed.firstElementChild && feed.firstElementChild.classList.contains("placeholder")) feed.innerHTML = "";
    const html = evs.filter(eventVisible).slice(-40).reverse().map((e) => eventRow(e, true)).join("");
    if (!html) return;
    feed.insertAdjacentHTML("afterbegin", html);
    while (feed.childElementCount > FEED_ROWS) feed.lastElementChild.remove();
  }

  function renderFeedFoot(s) {
    const dropped = state.feedDropped ? ` · ${state.feedDropped} dropped in transit` : "";
    $("#feed-foot").textContent = `sampled: successes up to 50/s, failovers and errors always · ` +
      `${fmtInt(s.sampled_out)} sampled out on this node${dropped}`;
  }

  // -- heat table --------------------------------------------------------------------------
  function heatClass(metric, v, lo, hi) {
    if (!isNum(v)) return "empty";
    if (metric === "success_rate") {
      const t = Math.min(1, Math.max(0, (1 - v) / 0.2)); // 100% green .. <=80% red
      return "h" + Math.round(t * 9);
    }
    if (metric === "calls") {
      const t = hi > lo ? (Math.log1p(v) - Math.log1p(lo)) / (Math.log1p(hi) - Math.log1p(lo)) : 0;
      return "h" + Math.round((1 - t) * 4); // busy = darker green: traffic, not quality
    }
    const t = hi > lo ? (Math.log(v) - Math.log(lo)) / (Math.log(hi) - Math.log(lo)) : 0;
    return "h" + Math.round(Math.min(1, Math.max(0, t)) * 9);
  }

  function renderHeat(s) {
    const metric = state.heatMetric;
    const fmt = metric === "success_rate" ? fmtPct : metric === "calls" ? fmtInt : fmtMs;
    const parts = s.chains.map((c) => {
      const methods = c.methods;
      if (!methods.length) {
        return `<div class="heat"><h3>${esc(c.name)}</h3><div class="empty-note">No calls yet on this chain.</div></div>`;
      }
      const vals = [];
      for (const p of c.providers) for (const m of methods) {
        const v = p.methods[m] ? p.methods[m][metric] : null;
        if (isNum(v) && v > 0) vals.push(v);
      }
      const lo = vals.length ? Math.min(...vals) : 0, hi = vals.length ? Math.max(...vals) : 0;
      const head = `<tr><th></th>${methods.map((m) => `<th class="m">${esc(m)}</th>`).join("")}</tr>`;
      const rows = c.providers.map((p) => {
        const cells = methods.map((m) => {
          const row = p.methods[m];
          const v = row ? row[metric] : null;
          if (!row) return `<td class="empty">·</td>`;
          const cls = heatClass(metric, v, lo, hi);
          const tip = `${p.id} · ${m}\ncalls ${row.calls}, success ${fmtPct(row.success_rate)}\np50 ${fmtMs(row.p50_ms)}, p95 ${fmtMs(row.p95_ms)}, ewma ${fmtMs(row.ewma_ms)}`;
          const sub = metric === "calls" ? fmtPct(row.success_rate) : `${fmtInt(row.calls)}`;
          return `<td class="${cls}" title="${esc(tip)}">${fmt(v)}<small>${esc(sub)}</small></td>`;
        }).join("");
        return `<tr data-provider="${esc(p.id)}"><th class="st-${esc(p.status)}"><span class="dot"></span>${esc(p.id)}</th>${cells}</tr>`;
      }).join("");
      return `<div class="heat" data-chain="${esc(c.chain)}"><h3>${esc(c.name)}</h3><table class="heat-table">${head}${rows}</table></div>`;
    });
    $("#heat").innerHTML = parts.join("");
  }

  // -- cluster ------------------------------------------------------------------------------
  function renderCluster(s) {
    const cluster = s.cluster || {};
    const nodes = cluster.nodes || [];
    const stat = (v, label) => `<div class="stat"><b>${esc(v)}</b><span>${esc(label)}</span></div>`;
    $("#cluster-summary").innerHTML =
      stat(cluster.status || "standalone", "cluster") +
      stat(`${cluster.nodes_responding ?? 1}/${cluster.nodes_total ?? 1}`, "responding") +
      stat((cluster.regions || []).length || 1, "regions") +
      stat(s.scope === "cluster" ? "aggregate" : (s.node || s.node_id), "viewing");
    $("#node-table tbody").innerHTML = nodes.map((n) => {
      const self = n.self || n.node_id === s.node_id;
      const seen = isNum(n.last_seen_s) ? n.last_seen_s.toFixed(1) + " s ago" : "—";
      const canView = cluster.enabled && n.status === "responding";
      return `<tr data-node="${esc(n.node_id)}" data-status="${esc(n.status)}">
        <td>${esc(n.node_id)}${self ? ` <span class="pill node-status self">this node</span>` : ""}</td>
        <td>${esc(n.region || n.node_id)}</td>
        <td class="node-status ${esc(n.status)}"><span class="dot"></span>${esc(n.status)}</td>
        <td class="num">${seen}</td>
        <td>${canView ? `<button type="button" class="small" data-view-node="${esc(n.node_id)}">view</button>` : ""}</td>
      </tr>`;
    }).join("");

    const host = $("#regions");
    if (!cluster.enabled) {
      host.innerHTML = `<div class="empty-note">This node runs standalone: every figure on this page is its own.
        Start nodes with <code>LASSO_CLUSTER_URL=nats://…</code> (or try <code>lasso demo --nodes 3</code>)
        to compare providers across regions here.</div>`;
      return;
    }
    const regions = s.regions || [];
    host.innerHTML = regions.map((r) => {
      const head = `<tr><th>Provider</th>${r.nodes.map((n) =>
        `<th class="num${n === state.node ? " selected-node" : ""}">${esc(n)}</th>`).join("")}</tr>`;
      const fastestRow = `<tr class="muted"><td>fastest</td>${r.nodes.map((n) =>
        `<td class="num">${esc(r.fastest[n] || "—")}</td>`).join("")}</tr>`;
      const rows = r.providers.map((p) => `<tr data-provider="${esc(p.id)}"><td>${esc(p.id)}</td>${r.nodes.map((n) => {
        const v = p.by_node[n];
        const st = (p.status || {})[n] || "unknown";
        const cls = (r.fastest[n] === p.id ? " fastest" : "") + (n === state.node ? " selected-node" : "");
        // A provider its region does not route to shows that region's status, not a latency.
        const text = v == null && (st === "circuit_open" || st === "misconfigured")
          ? `<span class="st-${esc(st)}"><span class="dot"></span>${esc(statusLabel(st))}</span>` : fmtMs(v);
        return `<td class="num${cls}" data-node="${esc(n)}" data-status="${esc(st)}">${text}</td>`;
      }).join("")}</tr>`).join("");
      return `<h3>${esc(r.chain)}</h3><table class="grid region-table" data-chain="${esc(r.chain)}"><thead>${head}</thead><tbody>${rows}${fastestRow}</tbody></table>`;
    }).join("") || `<div class="empty-note">Waiting for the first measurements from the regions…</div>`;
  }

  // -- load generator ------------------------------------------------------------------------
  const ADDRESS = "0x00000000000000000000000000000000000000a1";
  const TOKEN = "0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48";
  const METHODS = {
    eth_blockNumber: () => [],
    eth_getBlockByNumber: () => ["latest", false],
    eth_getBalance: () => [ADDRESS, "latest"],
    eth_call: () => [{ to: TOKEN, data: "0x70a08231000000000000000000000000" + ADDRESS.slice(2) }, "latest"],
    eth_gasPrice: () => [],
    eth_getLogs: () => [{ address: TOKEN, fromBlock: "latest", toBlock: "latest" }],
  };
  const MIX = Object.keys(METHODS);
  const lg = { running: false, timer: null };
  const LG_MAX_INFLIGHT = 5;
  const LG_KEEP = 2000; // round trips kept for the percentiles (the latest ones)

  function renderLoadgenChains(s) {
    const sel = $("#lg-chain");
    const key = s.profile + ":" + s.chains.map((c) => c.chain).join(",");
    if (sel.dataset.key === key) return;
    const prev = sel.value;
    sel.dataset.key = key;
    sel.innerHTML = s.chains.map((c) => `<option value="${esc(c.chain)}">${esc(c.name)}</option>`).join("");
    if (prev && s.chains.some((c) => c.chain === prev)) sel.value = prev;
  }

  function lgStart() {
    const s = state.snap;
    if (!s) return;
    const chain = $("#lg-chain").value;
    const strategy = $("#lg-strategy").value;
    const method = $("#lg-method").value;
    const rate = Math.min(500, Math.max(1, Number($("#lg-rate").value) || 1));
    const duration = Math.min(600, Math.max(1, Number($("#lg-duration").value) || 1));
    const path = "/rpc/profile/" + encodeURIComponent(s.profile) + "/" +
      (strategy ? encodeURIComponent(strategy) + "/" : "") + encodeURIComponent(chain);
    Object.assign(lg, {
      running: true, path, method, rate, duration, started: performance.now(),
      sent: 0, ok: 0, err: 0, inflight: 0, lat: [], seq: 0, lastError: "",
    });
    $("#lg-start").textContent = "Stop";
    $("#lg-start").classList.add("running");
    lg.timer = setInterval(lgTick, 50);
    lgTick();
  }

  function lgStop() {
    lg.running = false;
    lg.stoppedAt = performance.now();
    clearInterval(lg.timer);
    $("#lg-start").textContent = "Start";
    $("#lg-start").classList.remove("running");
    lgRender();
  }

  function lgTick() {
    if (!lg.running) return;
    const elapsed = (performance.now() - lg.started) / 1000;
    if (elapsed >= lg.duration) {
      lgStop();
      return;
    }
    const due = Math.floor(elapsed * lg.rate) + 1 - lg.sent;
    // Browsers open ~6 HTTP/1.1 connections per host and the live stream holds one: more
    // requests in flight would only queue inside the browser and inflate the latency shown.
    for (let i = 0; i < due && lg.inflight < LG_MAX_INFLIGHT; i++) lgSend();
    lg.capped = due > 0 && lg.inflight >= LG_MAX_INFLIGHT;
    lgRender();
  }

  async function lgSend() {
    const m = lg.method === "mix" ? MIX[lg.seq % MIX.length] : lg.method;
    const body = JSON.stringify({ jsonrpc: "2.0", id: ++lg.seq, method: m, params: METHODS[m]() });
    lg.sent++;
    lg.inflight++;
    const t0 = performance.now();
    try {
      const r = await fetch(lg.path, { method: "POST", headers: { "content-type": "application/json" }, body });
      const doc = await r.json();
      const ms = performance.now() - t0;
      if (doc && doc.error) {
        lg.err++;
        lg.lastError = `${m}: ${doc.error.code} ${doc.error.message}`;
      } else if (r.ok) {
        lg.ok++;
        lg.lat.push(ms);
        if (lg.lat.length > LG_KEEP) lg.lat.shift();
      } else {
        lg.err++;
        lg.lastError = `${m}: HTTP ${r.status}`;
      }
    } catch (e) {
      lg.err++;
      lg.lastError = `${m}: ${e.message || e}`;
    } finally {
      lg.inflight--;
    }
  }

  function lgRender() {
    if (lg.sent === undefined) return;
    const elapsed = Math.max(0.001, ((lg.running ? performance.now() : lg.stoppedAt || performance.now()) - lg.started) / 1000);
    $("#lg-sent").textContent = fmtInt(lg.sent);
    $("#lg-ok").textContent = fmtInt(lg.ok);
    $("#lg-err").textContent = fmtInt(lg.err);
    const sorted = lg.lat.slice().sort((a, b) => a - b);
    const q = (p) => (sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] : null);
    $("#lg-p50").textContent = fmtMs(q(0.5));
    $("#lg-p95").textContent = fmtMs(q(0.95));
    $("#lg-inflight").textContent = fmtInt(lg.inflight);
    $("#lg-actual").textContent = fmtRate(lg.sent / Math.min(elapsed, lg.duration)) + "/s";
    $("#lg-last").textContent = lg.lastError ? "last error: " + lg.lastError
      : lg.running && lg.capped ? `rate capped: ${LG_MAX_INFLIGHT} requests in flight (browser connection limit)` : "";
    $("#lg-bar").style.width = Math.min(100, (elapsed / lg.duration) * 100).toFixed(1) + "%";
  }

  // -- interactions ---------------------------------------------------------------------------
  function copyText(text, button) {
    const done = () => {
      button.textContent = "copied";
      button.classList.add("copied");
      setTimeout(() => { button.textContent = "copy"; button.classList.remove("copied"); }, 1200);
    };
    const fallback = () => {
      const ta = document.createElement("textarea");
      ta.value = text;
      document.body.appendChild(ta);
      ta.select();
      try { document.execCommand("copy"); done(); } catch (_) { /* nothing else to try */ }
      ta.remove();
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done, fallback);
    } else {
      fallback();
    }
  }

  function switchView(push = true) {
    if (push) history.pushState(null, "", pageUrl());
    state.hello = null;
    state.snap = null;
    state.history = {};
    state.events = [];
    state.chainsKey = "";
    state.colors = {};
    state.feedDropped = 0;
    renderFeed();
    connect();
  }

  function bind() {
    document.addEventListener("click", (e) => {
      const copy = e.target.closest("button.copy");
      if (copy) { copyText(copy.dataset.copy, copy); return; }
      const view = e.target.closest("[data-view-node]");
      if (view) { state.node = view.dataset.viewNode; switchView(); return; }
    });
    $("#tabs").addEventListener("click", (e) => {
      const b = e.target.closest("button[data-tab]");
      if (!b) return;
      state.tab = b.dataset.tab;
      for (const x of $$("#tabs button")) x.classList.toggle("active", x === b);
      for (const sec of $$(".tab")) sec.classList.toggle("active", sec.id === "tab-" + state.tab);
      state.chainsKey = "";
      if (state.tab === "overview") renderFeed();
      render();
    });
    $("#provider-table thead").addEventListener("click", (e) => {
      const th = e.target.closest("th[data-key]");
      if (!th) return;
      const key = th.dataset.key;
      state.sort = { key, dir: state.sort.key === key ? -state.sort.dir : key === "id" || key === "chain" || key === "status" ? 1 : -1 };
      if (state.snap) renderProviderTable(state.snap);
    });
    $("#feed-filter").addEventListener("click", (e) => {
      const b = e.target.closest("button[data-filter]");
      if (!b) return;
      state.feedFilter = b.dataset.filter;
      for (const x of $$("#feed-filter button")) x.classList.toggle("active", x === b);
      renderFeed();
    });
    $("#feed-pause").addEventListener("click", (e) => {
      state.paused = !state.paused;
      e.target.textContent = state.paused ? "resume" : "pause";
      if (!state.paused) renderFeed();
    });
    $("#heat-metric").addEventListener("click", (e) => {
      const b = e.target.closest("button[data-metric]");
      if (!b) return;
      state.heatMetric = b.dataset.metric;
      for (const x of $$("#heat-metric button")) x.classList.toggle("active", x === b);
      if (state.snap) renderHeat(state.snap);
    });
    $("#profile-select").addEventListener("change", (e) => {
      state.profile = e.target.value;
      state.node = null;
      state.regionsKey = "";
      switchView();
    });
    $("#region-select").addEventListener("change", (e) => {
      state.node = e.target.value || null;
      switchView();
    });
    $("#lg-form").addEventListener("submit", (e) => {
      e.preventDefault();
      if (lg.running) lgStop(); else lgStart();
    });
    window.addEventListener("popstate", () => { readLocation(); switchView(false); });
    document.addEventListener("visibilitychange", () => {
      if (document.hidden) return;
      if (state.tab === "overview") renderFeed();
      render();
    });
    window.addEventListener("resize", () => { if (state.snap && state.tab === "overview") renderCharts(state.snap); });
  }

  readLocation();
  bind();
  renderFeed();
  connect();
})();
