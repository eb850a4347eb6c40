"""What open dashboards cost the node: throughput and CPU with and without 10 live streams.

Two identical ``lasso serve`` nodes in front of one real ``anvil`` (five provider entries
point at it, so the dashboard has a realistic table to build) are loaded **at the same
time** by two ``wrk -t1 -c32`` (``eth_blockNumber``), so whatever else runs on the host
hits both alike; one node has N viewers (real ``GET /api/stream`` connections, read by a
thread in this process), and the viewers move to the other node every window. The drop is
the median over windows of ``1 - rps(with viewers) / rps(without)``; the proxies' CPU per
request (process tree utime+stime from /proc) is reported too.

Also measured: the node's idle CPU with 0 and N viewers, and in-process the hub's own work
per snapshot tick and per event flush.

    .venv/bin/python -m bench.dashboard_cost               # 8 windows of 5 s, ~1.5 min
    .venv/bin/python -m bench.dashboard_cost --quick       # 2 windows of 3 s

Writes ``bench/results/dashboard_cost-<timestamp>.{json,md}`` and prints the Markdown.
The budget (issue #6): with ten dashboards open the throughput drops by at most 5 %.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import selectors
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # pragma: no cover - run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.overhead import (  # noqa: E402 - after the script-mode path fix
    CLK_TCK,
    NO_CACHE,
    Proc,
    Unavailable,
    cpu_delta,
    default_anvil,
    free_port,
    host_cpu,
    median,
    parse_wrk_output,
    per_request_us,
    request_body,
    spawn,
    tree_cpu_ticks,
    validate,
    wait_ready,
    wrk_lua_script,
)

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
BUDGET_PCT = 5.0
PROVIDERS = ("alpha", "bravo", "charlie", "delta", "echo")
PROFILE = """\
---
name: Dashboard cost
slug: public
---
chains:
  anvil:
    chain_id: 31337
    providers:
{providers}
"""


def profile_text(anvil_url: str) -> str:
    """Five providers on one anvil (distinct URLs: separate breakers, pools and rows)."""
    lines = []
    for i, pid in enumerate(PROVIDERS):
        lines += [
            f"      - id: {pid}",
            f"        url: {anvil_url}/?p={pid}",
            f"        priority: {(i + 1) * 10}",
        ]
    return PROFILE.format(providers="\n".join(lines))


def drop_pct(base: float, with_viewers: float) -> float:
    """Throughput lost with viewers, in percent of the baseline (negative: a gain)."""
    return (base - with_viewers) / base * 100.0 if base > 0 else 0.0


class Viewers:
    """``n`` dashboard streams held open and read (and discarded) by one thread."""

    def __init__(self, port: int, n: int, query: str = "profile=public") -> None:
        self.port = port
        self.n = n
        self.query = query
        self.bytes = 0
        self.snapshots = 0
        self._socks: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, timeout: float = 5.0) -> None:
        request = f"GET /api/stream?{self.query} HTTP/1.1\r\nHost: bench\r\n\r\n".encode()
        for _ in range(self.n):
            s = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
            s.sendall(request)
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = s.recv(4096)
                if not chunk:
                    raise Unavailable("stream closed before its headers")
                head += chunk
            if not head.startswith(b"HTTP/1.1 200"):
                raise Unavailable(f"stream refused: {head[:120]!r}")
            s.setblocking(False)
            self._socks.append(s)
        self._thread = threading.Thread(target=self._run, name="viewers", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        sel = selectors.DefaultSelector()
        for s in self._socks:
            sel.register(s, selectors.EVENT_READ)
        while not self._stop.is_set():
            for key, _ in sel.select(timeout=0.2):
                sock: socket.socket = key.fileobj  # type: ignore[assignment]
                try:
                    data = sock.recv(65536)
                except BlockingIOError:
                    continue
                if not data:
                    sel.unregister(sock)
                    continue
                self.bytes += len(data)
                self.snapshots += data.count(b"event: snapshot")
        sel.close()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        for s in self._socks:
            s.close()
        self._socks.clear()


def wrk_argv(
    wrk: str, script: Path, port: int, path: str, connections: int, duration: float
) -> list[str]:
    return [
        wrk,
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(duration))}s",
        "--timeout",
        "5s",
        "-s",
        str(script),
        f"http://127.0.0.1:{port}{path}",
    ]


def run_wrks(argvs: list[list[str]], duration: float) -> list[dict[str, Any]]:
    """Run several wrk processes at the same time; their parsed summaries, in order."""
    import subprocess

    procs = [
        subprocess.Popen(a, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for a in argvs
    ]
    out = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=duration + 60)
        if proc.returncode != 0:
            raise RuntimeError(f"wrk failed ({proc.returncode}): {stderr.strip()[:500]}")
        out.append(parse_wrk_output(stdout))
    return out


def paired_window(
    args: argparse.Namespace,
    script: Path,
    nodes: list[tuple[Proc, int]],
    watched: int,
) -> dict[str, Any]:
    """Load both nodes at once (same host noise for both), viewers on ``nodes[watched]``."""
    proc, port = nodes[watched]
    v = Viewers(port, args.viewers)
    v.start()
    try:
        c0 = [tree_cpu_ticks(p.pid) for p, _ in nodes]
        h0 = host_cpu()
        argvs = [
            wrk_argv(args.wrk, script, pt, "/rpc/anvil", args.connections, args.duration)
            for _, pt in nodes
        ]
        results = run_wrks(argvs, args.duration)
        h1 = host_cpu()
        c1 = [tree_cpu_ticks(p.pid) for p, _ in nodes]
    finally:
        v.stop()
    sides = []
    for i, wrk in enumerate(results):
        ticks = cpu_delta(c0[i], c1[i])
        sides.append(
            {
                "node": i,
                "viewers": args.viewers if i == watched else 0,
                "rps": wrk["rps"],
                "requests": wrk["requests"],
                "errors": wrk["non2xx"] + wrk["socket_errors"],
                "p50_us": wrk["latency_us"]["p50"],
                "p99_us": wrk["latency_us"]["p99"],
                "proxy_cpu_us": per_request_us(ticks, wrk["requests"], CLK_TCK),
            }
        )
    with_v, without = sides[watched], sides[1 - watched]
    return {
        "watched": watched,
        "with": with_v,
        "without": without,
        "ratio": with_v["rps"] / without["rps"] if without["rps"] else None,
        "host_busy_pct": (h1[0] - h0[0]) / (h1[1] - h0[1]) * 100 if h1[1] > h0[1] else None,
        "stream_bytes": v.bytes,
        "stream_snapshots": v.snapshots,
    }


def idle_cpu(lasso: Proc, port: int, viewers: int, seconds: float) -> dict[str, Any]:
    """The node's CPU with no traffic and ``viewers`` streams, in ms of CPU per second."""
    v = Viewers(port, viewers) if viewers else None
    if v is not None:
        v.start()
    try:
        c0, t0 = tree_cpu_ticks(lasso.pid), time.monotonic()
        time.sleep(seconds)  # a measurement window, not a wait for a condition
        c1, t1 = tree_cpu_ticks(lasso.pid), time.monotonic()
    finally:
        if v is not None:
            v.stop()
    ms = cpu_delta(c0, c1) * 1000.0 / CLK_TCK
    return {
        "viewers": viewers,
        "cpu_ms_per_s": ms / (t1 - t0),
        "stream_bytes_per_s": (v.bytes / (t1 - t0)) if v else 0.0,
    }


def micro_cost(viewers: int, iterations: int = 300) -> dict[str, Any]:
    """The hub's own work, timed in-process: one snapshot tick and one event flush with
    ``viewers`` streams of one profile, over a router with 5 providers x 8 methods filled.

    Returns CPU microseconds per tick and per flush, and the resulting CPU per second of
    dashboard work at 1 tick and 5 flushes per second, 10 events each (the event bus
    samples successful decisions at 50/s).
    """
    import asyncio

    async def run() -> dict[str, Any]:
        from lasso.app import LassoApp, Settings
        from lasso.profiles import parse_profile

        prof = parse_profile(profile_text("http://127.0.0.1:9"), "public.yml", {})
        app = LassoApp({prof.slug: prof}, Settings(node_id="bench", probes=False))
        rt = app.runtime.profile("public").chains["anvil"]  # type: ignore[union-attr]
        now = time.monotonic()
        methods = [f"eth_m{i}" for i in range(8)]
        for n, ch in enumerate(rt.router.channels):
            for i in range(150):
                rt.router.record_success(ch, methods[i % 8], 0.005 + 0.001 * n, now)
        hub = app.dashboard.hub
        streams = [hub.open("public", None) for _ in range(viewers)]
        assert hub._task is not None
        hub._task.cancel()
        event = {
            "type": "decision",
            "ts": time.time(),
            "node_id": "bench",
            "profile": "public",
            "chain": "anvil",
            "method": "eth_blockNumber",
            "strategy": "load-balanced",
            "provider": "alpha",
            "transport": "http",
            "retries": 0,
            "status": "success",
            "latency_ms": 0.4,
            "upstream_ms": 0.3,
        }
        t0 = time.process_time()
        for _ in range(iterations):
            hub.tick()
            for v in streams:
                v.queue.clear()
        tick_us = (time.process_time() - t0) / iterations * 1e6
        t0 = time.process_time()
        for _ in range(iterations):
            for _ in range(10):
                hub._on_event(dict(event))
            hub.flush_events()
            for v in streams:
                v.queue.clear()
        flush_us = (time.process_time() - t0) / iterations * 1e6
        for v in streams:
            hub.close(v)
        return {
            "viewers": viewers,
            "tick_us": tick_us,
            "flush_us": flush_us,
            "cpu_ms_per_s": (tick_us + 5 * flush_us) / 1000.0,
        }

    return asyncio.run(run())


def summarize(windows: list[dict[str, Any]], idle: list[dict[str, Any]]) -> dict[str, Any]:
    ratios = [w["ratio"] for w in windows if w["ratio"]]
    ratio = median(ratios) or 0.0
    cpu0 = median([w["without"]["proxy_cpu_us"] for w in windows])
    cpu1 = median([w["with"]["proxy_cpu_us"] for w in windows])
    cpu_ratios = [
        w["without"]["proxy_cpu_us"] / w["with"]["proxy_cpu_us"]
        for w in windows
        if w["without"]["proxy_cpu_us"] and w["with"]["proxy_cpu_us"]
    ]
    drop = (1.0 - ratio) * 100.0
    return {
        "rps_without": median([w["without"]["rps"] for w in windows]),
        "rps_with": median([w["with"]["rps"] for w in windows]),
        "drop_pct": drop,
        "window_drops_pct": [(1.0 - r) * 100.0 for r in ratios],
        "cpu_us_without": cpu0,
        "cpu_us_with": cpu1,
        "cpu_drop_pct": (1.0 - (median(cpu_ratios) or 1.0)) * 100.0,
        "errors": sum(w["with"]["errors"] + w["without"]["errors"] for w in windows),
        "idle": idle,
        "budget_pct": BUDGET_PCT,
        "within_budget": drop <= BUDGET_PCT,
    }


def render_markdown(result: dict[str, Any]) -> str:
    s = result["summary"]
    c = result["config"]
    n = c["viewers"]

    def f(v: float | None, d: int = 1) -> str:
        return "—" if v is None else f"{v:,.{d}f}"

    ws = result["windows"]
    lines = [
        f"# Dashboard cost ({result['started']})",
        "",
        "Two identical `lasso serve` nodes → one anvil (5 provider entries each), loaded at the"
        f" same time by two `wrk -t1 -c{c['connections']}` (eth_blockNumber), {c['windows']}"
        f" windows of {c['duration']:g} s; {n} SSE viewers on one node, swapped every window.",
        "",
        "| | req/s (median) | proxy CPU µs/req | p50 µs | p99 µs |",
        "|---|---|---|---|---|",
    ]
    for label, side in (("no dashboard", "without"), (f"{n} dashboards", "with")):
        lines.append(
            f"| {label} | {f(median([w[side]['rps'] for w in ws]), 0)} "
            f"| {f(median([w[side]['proxy_cpu_us'] for w in ws]))} "
            f"| {f(median([w[side]['p50_us'] for w in ws]), 0)} "
            f"| {f(median([w[side]['p99_us'] for w in ws]), 0)} |"
        )
    verdict = "within" if s["within_budget"] else "OVER"
    lines += [
        "",
        f"Throughput drop with {n} dashboards (median of the per-window ratios):"
        f" **{s['drop_pct']:+.1f} %** (budget {s['budget_pct']:.0f} %: {verdict}); per window: "
        + ", ".join(f"{d:+.1f}" for d in s["window_drops_pct"]),
        f"At equal CPU (CPU per request): {s['cpu_drop_pct']:+.1f} %. Errors: {s['errors']}.",
        "",
        "Idle node (no traffic):",
        "",
        "| viewers | node CPU ms/s | stream bytes/s |",
        "|---|---|---|",
    ]
    for row in s["idle"]:
        cpu, rate = f(row["cpu_ms_per_s"], 2), f(row["stream_bytes_per_s"], 0)
        lines.append(f"| {row['viewers']} | {cpu} | {rate} |")
    m = result.get("micro")
    if m:
        lines += [
            "",
            f"In-process, the hub's own work with {m['viewers']} viewers: one snapshot tick"
            f" {m['tick_us']:.0f} µs, one event flush (10 events) {m['flush_us']:.0f} µs:"
            f" **{m['cpu_ms_per_s']:.2f} ms of CPU per second** at 1 tick and 5 flushes per"
            f" second ({m['cpu_ms_per_s'] / 10:.2f} % of one core).",
        ]
    if ws:
        per = median([w["stream_bytes"] / max(1, n) for w in ws]) or 0
        snaps = median([w["stream_snapshots"] / max(1, n) for w in ws]) or 0
        lines += [
            "",
            f"Each viewer received {per / 1024:.0f} KiB and {snaps:.0f} snapshots per"
            f" {c['duration']:g} s window under load.",
        ]
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--viewers", type=int, default=10)
    p.add_argument("--windows", type=int, default=8, help="paired windows (viewers swap)")
    p.add_argument("--duration", type=float, default=5.0, help="seconds per window")
    p.add_argument("--idle", type=float, default=10.0, help="seconds per idle window")
    p.add_argument("--connections", type=int, default=32, help="per node")
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--quick", action="store_true", help="2 windows of 3 s")
    p.add_argument("--anvil", default=None, help="anvil binary")
    p.add_argument("--wrk", default=shutil.which("wrk") or "wrk")
    p.add_argument("--out-dir", default=str(RESULTS))
    args = p.parse_args(argv)
    if args.quick:
        args.windows, args.duration, args.idle, args.warmup = 2, 3.0, 3.0, 1.0
    return args


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def start_node(work: Path, name: str, profiles: Path) -> tuple[Proc, int]:
    port = free_port()
    proc = spawn(
        name,
        [
            str(ROOT / ".venv" / "bin" / "lasso"),
            "serve",
            "--profiles",
            str(profiles),
            "--port",
            str(port),
            "--node-id",
            name,
            "--log-level",
            "warning",
        ],
        work,
    )
    try:
        wait_ready(proc, port, "/api/health", 30, b"")
        validate(port, "/rpc/anvil", "eth_blockNumber")
    except BaseException:
        proc.stop()
        raise
    return proc, port


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    anvil_bin = args.anvil or default_anvil()
    with tempfile.TemporaryDirectory(prefix="lasso-dash-cost-") as tmp:
        work = Path(tmp)
        anvil_port = free_port()
        anvil = spawn(
            "anvil", [anvil_bin, "--port", str(anvil_port), "--host", "127.0.0.1", "--silent"], work
        )
        nodes: list[tuple[Proc, int]] = []
        try:
            wait_ready(anvil, anvil_port, "rpc:/", 30, request_body("eth_blockNumber"))
            profiles = work / "profiles"
            profiles.mkdir()
            (profiles / "public.yml").write_text(profile_text(f"http://127.0.0.1:{anvil_port}"))
            nodes = [start_node(work, name, profiles) for name in ("node-a", "node-b")]
            script = work / "bench.lua"
            script.write_text(wrk_lua_script(request_body("eth_blockNumber"), NO_CACHE))
            log(f"warm-up {args.warmup:g} s")
            run_wrks(
                [
                    wrk_argv(args.wrk, script, port, "/rpc/anvil", args.connections, args.warmup)
                    for _, port in nodes
                ],
                args.warmup,
            )
            windows: list[dict[str, Any]] = []
            for i in range(args.windows):
                w = paired_window(args, script, nodes, i % 2)
                log(
                    f"window {i + 1}/{args.windows}: with {args.viewers} viewers "
                    f"{w['with']['rps']:,.0f} req/s ({w['with']['proxy_cpu_us'] or 0:.1f} µs), "
                    f"without {w['without']['rps']:,.0f} req/s "
                    f"({w['without']['proxy_cpu_us'] or 0:.1f} µs): ratio {w['ratio']:.3f}"
                )
                windows.append(w)
            idle = [idle_cpu(nodes[0][0], nodes[0][1], n, args.idle) for n in (0, args.viewers)]
            for proc, _ in nodes:
                if proc.popen.poll() is not None:
                    raise Unavailable(f"{proc.name} died during the run", proc.log_tail())
        except Unavailable as exc:
            log(f"unavailable: {exc.reason}\n{exc.log_tail}")
            return 2
        finally:
            for proc, _ in nodes:
                proc.stop()
            anvil.stop()
    result: dict[str, Any] = {
        "started": started,
        "config": {
            "viewers": args.viewers,
            "windows": args.windows,
            "duration": args.duration,
            "connections": args.connections,
        },
        "windows": windows,
        "summary": summarize(windows, idle),
        "micro": micro_cost(args.viewers),
    }
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"dashboard_cost-{started}.json").write_text(json.dumps(result, indent=2))
    md = render_markdown(result)
    (out / f"dashboard_cost-{started}.md").write_text(md)
    print(md)
    return 0 if result["summary"]["within_budget"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
