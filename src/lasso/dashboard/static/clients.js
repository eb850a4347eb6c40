// Clients panel (lasso.auth): per-key requests, errors, limited and refused for the
// profile on screen, from GET /api/clients?profile=. Self-contained: it reads the profile
// from the URL or the profile selector, polls every 2 s, and stays hidden for profiles
// without auth or limits. Keys appear by their id only; the API never holds a secret.
"use strict";
(() => {
  const POLL_MS = 2000;
  const panel = () => document.getElementById("clients-panel");

  function currentProfile() {
    const sel = document.getElementById("profile-select");
    if (sel && sel.value) return sel.value;
    const m = location.pathname.match(/^\/dashboard\/([^/]+)/);
    return m ? decodeURIComponent(m[1]) : "";
  }

  function cell(text, cls) {
    const td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    return td;
  }

  function limitText(row) {
    if (row.rps_limit == null) return "unlimited";
    return `${row.rps_limit}/s · burst ${row.burst_limit}`;
  }

  function render(doc) {
    const host = panel();
    if (!host) return;
    host.hidden = !doc.gated;
    if (!doc.gated) return;
    const lim = doc.limiter || {};
    const mode = lim.mode === "redis" ? `shared through Redis (${lim.participants ?? "?"} processes)`
      : lim.mode === "fallback" ? `Redis unreachable: this process enforces ${Math.round((lim.share || 1) * 100)}%`
      : "per node";
    document.getElementById("clients-mode").textContent =
      `${doc.auth_required ? "keys required" : "keys optional"} · limits ${mode}`;
    const body = document.querySelector("#clients-table tbody");
    const rows = doc.clients.map((r) => {
      const tr = document.createElement("tr");
      tr.append(
        cell(r.key, "mono"),
        cell(r.kind),
        cell(limitText(r)),
        cell(String(r.requests), "num"),
        cell(String(r.errors), r.errors ? "num clients-bad" : "num"),
        cell(String(r.limited), r.limited ? "num clients-warn" : "num"),
        cell(String(r.refused), r.refused ? "num clients-warn" : "num"),
        cell(String(r.subscriptions), "num"),
      );
      return tr;
    });
    body.replaceChildren(...rows);
  }

  async function poll() {
    try {
      const q = new URLSearchParams();
      const profile = currentProfile();
      if (profile) q.set("profile", profile);
      const resp = await fetch("/api/clients?" + q.toString(), { cache: "no-store" });
      if (resp.ok) render(await resp.json());
      else if (panel()) panel().hidden = true;
    } catch (_) {
      // the node is restarting or unreachable: keep the last view until the next poll
    }
  }

  function start() {
    poll();
    setInterval(poll, POLL_MS);
    const sel = document.getElementById("profile-select");
    if (sel) sel.addEventListener("change", () => setTimeout(poll, 0));
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
