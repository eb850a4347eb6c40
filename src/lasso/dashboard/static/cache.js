/* Lasso dashboard: the response cache panel (self-contained).
   Polls GET /api/cache?profile=... every 2 s and fills #cache-panel: per chain and per
   method, requests, hit ratio, hits, misses, bypasses, coalesced requests and the upstream
   calls they saved, with the saved calls per second since the last poll. */
(() => {
  "use strict";
  const POLL_MS = 2000;
  const MAX_METHODS = 12;
  let last = null; // {t, saved: {chain: n}}

  function profile() {
    const sel = document.getElementById("profile-select");
    if (sel && sel.value) return sel.value;
    const m = location.pathname.match(/^\/dashboard\/([^/]+)/);
    return m ? decodeURIComponent(m[1]) : "";
  }

  const pct = (v) => (v === null || v === undefined ? "–" : (100 * v).toFixed(1) + " %");
  const int = (v) => (v === null || v === undefined ? "–" : Number(v).toLocaleString("en-US"));
  const mib = (b) => (b / 1048576).toFixed(1) + " MiB";

  function cell(text, cls) {
    const td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    return td;
  }

  function row(chain, label, r, rate, cls) {
    const tr = document.createElement("tr");
    tr.dataset.chain = chain;
    tr.dataset.method = label;
    if (cls) tr.className = cls;
    tr.append(
      cell(chain), cell(label),
      cell(int(r.requests), "num"), cell(pct(r.hit_ratio), "num"),
      cell(int(r.hit), "num"), cell(int(r.miss), "num"), cell(int(r.bypass), "num"),
      cell(int(r.coalesced), "num"), cell(int(r.saved), "num"),
      cell(rate === null ? "" : rate.toFixed(1), "num"),
    );
    return tr;
  }

  function render(doc) {
    const body = document.querySelector("#cache-table tbody");
    if (!body) return;
    const now = performance.now();
    const saved = {};
    const rows = [];
    for (const c of doc.chains) {
      saved[c.chain] = c.saved;
      let rate = null;
      if (last && last.saved[c.chain] !== undefined && now > last.t) {
        rate = Math.max(0, (c.saved - last.saved[c.chain]) / ((now - last.t) / 1000));
      }
      rows.push(row(c.chain, c.enabled ? "all methods" : "all methods (cache off)", c, rate, "cache-total"));
      const methods = [...c.methods].sort((a, b) => b.requests + b.coalesced - a.requests - a.coalesced);
      for (const m of methods.slice(0, MAX_METHODS)) rows.push(row(c.chain, m.method, m, null, ""));
    }
    body.replaceChildren(...rows);
    last = { t: now, saved };
    const mem = doc.chains.reduce((a, c) => a + c.bytes, 0);
    const cap = doc.chains.reduce((a, c) => a + c.max_bytes, 0);
    const entries = doc.chains.reduce((a, c) => a + c.entries, 0);
    let text = doc.chains.length
      ? `memory ${mib(mem)} of ${mib(cap)}, ${int(entries)} answers`
      : "no cacheable request yet";
    if (doc.redis) text += ` · Redis ${doc.redis.up ? "up" : "DOWN"} (${int(doc.redis.hits)} hits)`;
    document.getElementById("cache-summary").textContent = text;
  }

  async function poll() {
    try {
      const q = profile() ? "?profile=" + encodeURIComponent(profile()) : "";
      const resp = await fetch("/api/cache" + q, { cache: "no-store" });
      if (resp.ok) render(await resp.json());
    } catch (_) {
      /* the next poll tries again */
    }
  }

  function start() {
    if (!document.getElementById("cache-panel")) return;
    const sel = document.getElementById("profile-select");
    if (sel) sel.addEventListener("change", () => { last = null; poll(); });
    poll();
    setInterval(poll, POLL_MS);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
