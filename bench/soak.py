"""Soak: minutes of mixed load against one Lasso node; its memory must stay flat.

A simulated fleet of five providers (own process; 2-8 ms medians, one with 1 % HTTP 500s,
one rate-limited, one a block behind) sits behind one ``lasso serve``. The load driver
paces ``--rate`` requests per second over ``--concurrency`` connections, cycling through
a fixed mix of 20 request shapes:

* single calls of seven read methods (``eth_blockNumber``, ``eth_getBalance``,
  ``eth_call``, ``eth_getBlockByNumber``, ``eth_getTransactionCount``, ``eth_getLogs``,
  ``eth_chainId``), some with ``?include_meta=headers``, some through other routes
  (``/rpc/load-balanced/…``, ``/rpc/provider/<id>/…``);
* batches of 2-10 calls;
* a notification (answered 204);
* one bad request in turn (malformed JSON, unknown method, ``eth_subscribe`` over HTTP,
  unknown chain, empty batch, a string as the request): each must get a JSON-RPC error,
  never a 5xx or a dropped connection.

Every ``--chaos-every`` seconds one provider is faulted for 10 s (refused connections and
HTTP 500s in turn), so breakers open and close and failover runs all along. When the node
serves WebSocket (``/ws/rpc/ethereum``, detected at start) ``--ws-clients`` clients also
subscribe to ``newHeads``, send unary calls and reconnect every 30 s.

Every ``--sample-s`` seconds: the node's RSS (VmRSS of its process tree), open file
descriptors, CPU %, request rate and errors. The verdict on RSS after the warm-up
(``--warmup``): least-squares slope in MB/min and the first-vs-last-quartile medians;
``growing`` only when both exceed the tolerance (max 2 MB, 2 %), else ``flat``.

    .venv/bin/python -m bench.soak                 # 10 minutes
    .venv/bin/python -m bench.soak --minutes 30
    .venv/bin/python -m bench.soak --quick         # 1 minute
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # pragma: no cover - run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    CLK_TCK,
    RESULTS,
    LassoProcess,
    RpcClient,
    SimProcess,
    Unavailable,
    admin_update,
    chain_profile,
    cpu_delta,
    env_meta,
    fmt,
    host_busy_pct,
    host_sample,
    log,
    lstsq_slope,
    markdown_table,
    open_fds,
    percentile,
    pyplot,
    quartile_medians,
    run_loop,
    save_report,
    timestamp,
    tree_cpu_ticks,
    tree_rss_kb,
    trend_verdict,
)

NAME = "soak"
FLEET: dict[str, dict[str, Any]] = {
    "alpha": {"latency_ms": 2, "jitter": 0.3},
    "bravo": {"latency_ms": 3, "jitter": 0.3, "error_rate": 0.01, "error_mode": "http500"},
    "charlie": {
        "latency_ms": 4,
        "jitter": 0.4,
        "rate_limit_rps": 150,
        "rate_limit_mode": "jsonrpc",
    },
    "delta": {"latency_ms": 6, "jitter": 0.5, "lag_blocks": 1},
    "echo": {"latency_ms": 8, "jitter": 0.3},
}
CHAOS = ({"down": True}, {"error_rate": 1.0, "error_mode": "http500"})
CHAOS_S = 10.0
_ACCOUNT = "0x" + "ab" * 20
_TOKEN = "0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48"

# ---------------------------------------------------------------------------------------
# The request mix (pure)
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Shape:
    """One request of the mix: where it goes, what it carries, what a good answer is."""

    kind: str  # single | batch | meta | route | notification | bad
    path: str  # relative to /rpc/
    body: bytes
    batch: bool = False
    expect: str = "ok"  # ok | error (a JSON-RPC error, HTTP < 500) | empty (HTTP 204)


def _call(method: str, params: list[Any], request_id: int | None) -> dict[str, Any]:
    doc: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "params": params}
    if request_id is not None:
        doc["id"] = request_id
    return doc


def read_call(k: int, request_id: int | None) -> dict[str, Any]:
    """The ``k``-th read call of the soak mix (seven methods in turn)."""
    account = f"0x{k % 64 + 1:040x}"
    match k % 7:
        case 0:
            return _call("eth_blockNumber", [], request_id)
        case 1:
            return _call("eth_getBalance", [account, "latest"], request_id)
        case 2:
            data = "0x70a08231" + account[2:].rjust(64, "0")
            return _call("eth_call", [{"to": _TOKEN, "data": data}, "latest"], request_id)
        case 3:
            return _call("eth_getBlockByNumber", ["latest", k % 2 == 0], request_id)
        case 4:
            return _call("eth_getTransactionCount", [account, "latest"], request_id)
        case 5:
            return _call(
                "eth_getLogs",
                [{"fromBlock": "latest", "toBlock": "latest", "address": _TOKEN}],
                request_id,
            )
        case _:
            return _call("eth_chainId", [], request_id)


BAD_BODIES: tuple[tuple[str, bytes], ...] = (
    ("ethereum", b'{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber"'),  # malformed JSON
    ("ethereum", b'{"jsonrpc":"2.0","id":2,"method":"eth_notAMethod","params":[]}'),
    ("ethereum", b'{"jsonrpc":"2.0","id":3,"method":"eth_subscribe","params":["newHeads"]}'),
    ("no-such-chain", b'{"jsonrpc":"2.0","id":4,"method":"eth_blockNumber","params":[]}'),
    ("ethereum", b"[]"),
    ("ethereum", b'"eth_blockNumber"'),
)


def shape_for(k: int, provider_ids: Sequence[str]) -> Shape:
    """The ``k``-th request of the soak: a cycle of 20 shapes (see the module docstring)."""
    slot = k % 20
    n = k // 20

    def dumps(doc: Any) -> bytes:
        return json.dumps(doc, separators=(",", ":")).encode()

    if slot < 10:
        return Shape("single", "ethereum", dumps(read_call(k, k)))
    if slot < 14:
        size = 2 + (n + slot) % 9
        items = [read_call(k + i, k * 100 + i) for i in range(size)]
        return Shape("batch", "ethereum", dumps(items), batch=True)
    if slot < 16:
        return Shape("meta", "ethereum?include_meta=headers", dumps(read_call(k, k)))
    if slot == 16:
        return Shape("route", "load-balanced/ethereum", dumps(read_call(k, k)))
    if slot == 17:
        pid = provider_ids[n % len(provider_ids)]
        return Shape("route", f"provider/{pid}/ethereum", dumps(read_call(k, k)))
    if slot == 18:
        return Shape("notification", "ethereum", dumps(read_call(k, None)), expect="empty")
    path, body = BAD_BODIES[n % len(BAD_BODIES)]
    return Shape("bad", path, body, expect="error")


def judge_expected(shape: Shape, status: int, body: bytes, error: str | None) -> bool:
    """Whether a bad or notification request got what the contract promises."""
    if shape.expect == "empty":
        return status == 204 or (status == 200 and not body.strip())
    if status == 0 or status >= 500:  # dropped connection, timeout or a server error
        return False
    try:
        doc = json.loads(body)
    except ValueError:
        return False
    items = doc if isinstance(doc, list) else [doc]
    return bool(items) and all(isinstance(i, dict) and "error" in i for i in items)


def rss_trend(times_s: Sequence[float], rss_mb: Sequence[float], warmup_s: float) -> dict[str, Any]:
    """Trend of an RSS series after ``warmup_s``: slope MB/min, quartile medians, verdict."""
    pts = [(t, v) for t, v in zip(times_s, rss_mb, strict=True) if t >= warmup_s]
    if len(pts) < 2:
        return {"samples": len(pts), "verdict": "inconclusive"}
    xs = [t / 60 for t, _ in pts]
    ys = [v for _, v in pts]
    fit = lstsq_slope(xs, ys)
    quart = quartile_medians(ys)
    assert quart is not None
    minutes = xs[-1] - xs[0]
    slope = fit[0] if fit else None
    return {
        "samples": len(pts),
        "from_s": pts[0][0],
        "to_s": pts[-1][0],
        "slope_mb_per_min": slope,
        "intercept_mb": fit[1] if fit else None,
        "first_quartile_median_mb": quart[0],
        "last_quartile_median_mb": quart[1],
        "delta_mb": quart[1] - quart[0],
        "min_mb": min(ys),
        "max_mb": max(ys),
        "verdict": trend_verdict(slope, quart[0], quart[1], minutes),
    }


def attribute_growth(
    times_s: Sequence[float],
    values: Sequence[float],
    windows: Sequence[tuple[float, float]],
    from_s: float = 0.0,
) -> dict[str, float]:
    """Split the change of a series between intervals that touch a fault window and the rest.

    Each step between consecutive samples (both at or after ``from_s``) is counted as
    ``faults`` when the interval overlaps one of ``windows`` (``(start, end)`` seconds),
    else as ``steady``. Growth that sits in ``faults`` points at per-fault allocations
    (breaker transitions, reconnects); growth in ``steady`` at per-request ones.
    """
    out = {"faults": 0.0, "steady": 0.0}
    pts = [(t, v) for t, v in zip(times_s, values, strict=True) if t >= from_s]
    for (t0, v0), (t1, v1) in itertools.pairwise(pts):
        touched = any(t0 < end and t1 > start for start, end in windows)
        out["faults" if touched else "steady"] += v1 - v0
    return out


# ---------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------


@dataclass
class Totals:
    requests: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)  # kind:reason
    latencies: list[float] = field(default_factory=list)  # ms of good calls, last interval
    ws: Counter[str] = field(default_factory=Counter)
    ws_error: str | None = None  # the first JSON-RPC error seen over WebSocket
    interval_requests: int = 0
    interval_failures: int = 0


async def _load(args: argparse.Namespace, lasso: LassoProcess, totals: Totals, end: float) -> None:
    loop = asyncio.get_running_loop()
    client = RpcClient(timeout_s=15.0)
    ids = list(FLEET)
    counter = itertools.count()
    start = loop.time()
    interval = 1.0 / args.rate if args.rate > 0 else 0.0

    async def worker() -> None:
        while True:
            k = next(counter)
            due = start + k * interval
            now = loop.time()
            if now >= end or due >= end:
                return
            if due > now:
                await asyncio.sleep(due - now)  # pacing to --rate, not a condition wait
            shape = shape_for(k, ids)
            out = await client.call(
                f"{lasso.base_url}/rpc/{shape.path}",
                shape.body,
                batch=shape.batch,
            )
            totals.requests[shape.kind] += 1
            totals.interval_requests += 1
            good = (
                out.ok
                if shape.expect == "ok"
                else judge_expected(shape, out.status, out.body, out.error)
            )
            if good:
                if shape.expect == "ok":
                    totals.latencies.append(out.latency_ms)
            else:
                totals.failures[f"{shape.kind}:{out.error or out.status}"] += 1
                totals.interval_failures += 1

    try:
        await asyncio.gather(*(worker() for _ in range(args.concurrency)))
    finally:
        await client.close()


async def _ws_supported(url: str) -> str | None:
    """``None`` when the node speaks JSON-RPC over WebSocket at ``url``, else the reason."""
    try:
        from websockets.asyncio.client import connect
    except ImportError:
        return "websockets is not installed"
    try:
        async with asyncio.timeout(3.0):
            async with connect(url) as ws:
                await ws.send('{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber","params":[]}')
                doc = json.loads(await ws.recv())
                if not isinstance(doc, dict) or "result" not in doc:
                    return f"unexpected answer {doc!r:.100}"
    except Exception as exc:  # any failure means: not served (yet)
        return f"{type(exc).__name__}: {exc}"[:200]
    return None


async def _ws_client(url: str, totals: Totals, end: float, idx: int) -> None:
    from websockets.asyncio.client import connect

    loop = asyncio.get_running_loop()
    rid = itertools.count(1)
    while loop.time() < end:
        session_end = min(end, loop.time() + 30.0)
        try:
            async with connect(url) as ws:
                totals.ws["connects"] += 1
                sub = {
                    "jsonrpc": "2.0",
                    "id": 0,
                    "method": "eth_subscribe",
                    "params": ["newHeads"],
                }
                await ws.send(json.dumps(sub))
                while loop.time() < session_end:
                    call = read_call(next(rid) + idx, None)
                    call["id"] = next(rid)
                    await ws.send(json.dumps(call))
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(0.5):
                            while True:
                                doc = json.loads(await ws.recv())
                                if doc.get("method") == "eth_subscription":
                                    totals.ws["notifications"] += 1
                                    continue
                                subscribe = doc.get("id") == 0
                                if "result" in doc:
                                    totals.ws["subscribed" if subscribe else "results"] += 1
                                    continue
                                totals.ws["subscribe_errors" if subscribe else "errors"] += 1
                                if totals.ws_error is None:
                                    totals.ws_error = json.dumps(doc.get("error"))[:200]
        except Exception as exc:  # count and reconnect
            totals.ws[f"failure:{type(exc).__name__}"] += 1


async def _chaos(
    args: argparse.Namespace, sim: SimProcess, end: float, events: list[dict[str, Any]]
) -> None:
    if args.chaos_every <= 0:
        return
    loop = asyncio.get_running_loop()
    client = RpcClient(timeout_s=10.0)
    ids = list(FLEET)
    start = loop.time()
    try:
        for n in itertools.count(1):
            at = start + n * args.chaos_every
            if at + CHAOS_S >= end:
                return
            await asyncio.sleep(at - loop.time())
            pid = ids[n % len(ids)]
            change = CHAOS[n % len(CHAOS)]
            await admin_update(client, sim, pid, **change)
            events.append({"t": loop.time() - start, "provider": pid, "fault": change})
            await asyncio.sleep(CHAOS_S)
            await admin_update(client, sim, pid, **{"down": False, "error_rate": 0.0, **FLEET[pid]})
    finally:
        await client.close()


async def soak(args: argparse.Namespace, sim: SimProcess, lasso: LassoProcess) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    totals = Totals()
    start = loop.time()
    end = start + args.minutes * 60
    ws_url = f"ws://127.0.0.1:{lasso.port}/ws/rpc/ethereum"
    ws_reason = await _ws_supported(ws_url) if args.ws_clients > 0 else "disabled"
    log(f"websocket: {'on' if ws_reason is None else 'off (' + ws_reason + ')'}")
    samples: list[dict[str, Any]] = []
    chaos: list[dict[str, Any]] = []

    async def sampler() -> None:
        c0, h0, t0 = tree_cpu_ticks(lasso.pid), host_sample(), loop.time()
        while True:
            now = loop.time()
            c1, h1 = tree_cpu_ticks(lasso.pid), host_sample()
            dt = now - t0
            lat = sorted(totals.latencies)
            samples.append(
                {
                    "t": round(now - start, 2),
                    "rss_mb": tree_rss_kb(lasso.pid) / 1024,
                    "hwm_mb": tree_rss_kb(lasso.pid, "VmHWM") / 1024,
                    "fds": open_fds(lasso.pid),
                    "cpu_pct": cpu_delta(c0, c1) / CLK_TCK / dt * 100 if dt > 0 else None,
                    "host_busy_pct": host_busy_pct(h0, h1),
                    "rps": totals.interval_requests / dt if dt > 0 else None,
                    "failures": totals.interval_failures,
                    "p50_ms": percentile(lat, 50, presorted=True),
                    "p99_ms": percentile(lat, 99, presorted=True),
                }
            )
            totals.latencies.clear()
            totals.interval_requests = totals.interval_failures = 0
            c0, h0, t0 = c1, h1, now
            if now >= end or not lasso.alive():
                return
            await asyncio.sleep(min(args.sample_s, max(0.0, end - now)))

    tasks = [sampler(), _load(args, lasso, totals, end), _chaos(args, sim, end, chaos)]
    if ws_reason is None:
        tasks += [_ws_client(ws_url, totals, end, i) for i in range(args.ws_clients)]
    await asyncio.gather(*tasks)
    return {
        "samples": samples,
        "chaos": chaos,
        "requests": dict(totals.requests),
        "failures": dict(totals.failures),
        "ws": {
            "enabled": ws_reason is None,
            "reason": ws_reason,
            "first_error": totals.ws_error,
            **totals.ws,
        },
    }


# ---------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------


def render_markdown(result: Mapping[str, Any]) -> str:
    meta, trend, data = result["meta"], result["trend"], result["run"]
    samples = data["samples"]
    total = sum(data["requests"].values())
    failures = sum(data["failures"].values())
    rps = [s["rps"] for s in samples[1:] if s["rps"] is not None]
    cpu = [s["cpu_pct"] for s in samples[1:] if s["cpu_pct"] is not None]
    busy = [s["host_busy_pct"] for s in samples[1:] if s["host_busy_pct"] is not None]
    fds = [s["fds"] for s in samples if s["fds"] is not None]
    lines = [
        f"# Soak — {meta['timestamp']}",
        "",
        f"{meta['minutes']} min of mixed load at {meta['rate']} req/s target over "
        f"{meta['concurrency']} connections; chaos every {meta['chaos_every_s']} s; RSS "
        f"sampled every {meta['sample_s']} s; trend after {meta['warmup_s']} s of warm-up; "
        f"git {meta['git']}; {meta['cpus']} CPUs; load average at start "
        f"{meta['loadavg_start']}.",
        "",
        f"**RSS verdict: {trend['verdict']}** — slope "
        f"{fmt(trend.get('slope_mb_per_min'), 3, signed=True)} MB/min, first-quartile median "
        f"{fmt(trend.get('first_quartile_median_mb'), 1)} MB → last-quartile median "
        f"{fmt(trend.get('last_quartile_median_mb'), 1)} MB "
        f"({fmt(trend.get('delta_mb'), 2, signed=True)} MB); range "
        f"{fmt(trend.get('min_mb'), 1)}-{fmt(trend.get('max_mb'), 1)} MB; peak (VmHWM) "
        f"{fmt(samples[-1]['hwm_mb'] if samples else None, 1)} MB.",
        "",
    ]
    growth = trend.get("growth_mb")
    if growth:
        lines += [
            f"RSS change after the warm-up in sampling intervals touching a provider fault: "
            f"{fmt(growth['faults'], 2, signed=True)} MB; in the others: "
            f"{fmt(growth['steady'], 2, signed=True)} MB.",
            "",
        ]
    rows = [
        ["requests", f"{total} ({', '.join(f'{k} {v}' for k, v in data['requests'].items())})"],
        ["throughput", f"{fmt(percentile(rps, 50), 0)} req/s median per interval"],
        ["failures", f"{failures} ({fmt(failures / total * 100 if total else None, 3)}%)"],
        ["failure kinds", ", ".join(f"{k} {v}" for k, v in data["failures"].items()) or "–"],
        ["node CPU", f"{fmt(percentile(cpu, 50), 0)}% median of one core"],
        ["host busy", f"{fmt(percentile(busy, 50), 0)}% median"],
        [
            "open fds",
            f"{fds[0] if fds else '–'} → {fds[-1] if fds else '–'} (max {max(fds, default='–')})",
        ],
        ["fd verdict", result.get("fd_verdict", "–")],
        [
            "websocket",
            (
                ", ".join(
                    f"{k} {v}"
                    for k, v in data["ws"].items()
                    if k not in ("enabled", "reason", "first_error")
                )
                + (
                    f"; first error {data['ws']['first_error']}"
                    if data["ws"]["first_error"]
                    else ""
                )
                if data["ws"]["enabled"]
                else f"off: {data['ws']['reason']}"
            ),
        ],
        ["chaos events", str(len(data["chaos"]))],
    ]
    lines += markdown_table(["", "value"], rows, "ll")
    lines += [
        "",
        "`failures` counts good requests that did not get a result (a rate-limited or "
        "faulted provider can leave a call without one when every retry fails) and bad "
        "requests that did not get a JSON-RPC error. Verdict `growing` needs both the "
        "least-squares slope over the window and the last-vs-first quartile medians to "
        "exceed max(2 MB, 2 %); `flat` otherwise.",
        "",
    ]
    return "\n".join(lines)


def make_figure(result: Mapping[str, Any]) -> Any | None:
    plt = pyplot()
    samples = result["run"]["samples"]
    if plt is None or not samples:
        return None
    trend = result["trend"]
    meta = result["meta"]
    ts = [s["t"] / 60 for s in samples]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(11, 6.5), sharex=True)
    ax1.plot(ts, [s["rss_mb"] for s in samples], ".-", label="RSS (VmRSS)", linewidth=1)
    if trend.get("slope_mb_per_min") is not None:
        x0, x1 = trend["from_s"] / 60, trend["to_s"] / 60
        a, b = trend["slope_mb_per_min"], trend["intercept_mb"]
        ax1.plot(
            [x0, x1],
            [a * x0 + b, a * x1 + b],
            "--",
            color="red",
            label=f"fit {a:+.3f} MB/min ({trend['verdict']})",
        )
    ax1.axvspan(0, meta["warmup_s"] / 60, color="grey", alpha=0.15, label="warm-up")
    for ev in result["run"]["chaos"]:
        ax1.axvspan(ev["t"] / 60, (ev["t"] + CHAOS_S) / 60, color="orange", alpha=0.12)
    ax1.set_ylabel("MB")
    ax1.set_title("Lasso node memory under mixed load (orange: provider faults)")
    ax1.grid(True, alpha=0.3)
    ax1.legend(fontsize=8)
    ax2.plot(ts[1:], [s["rps"] for s in samples[1:]], label="req/s", linewidth=1)
    ax2.set_ylabel("req/s")
    ax2.set_xlabel("minutes")
    ax2.grid(True, alpha=0.3)
    ax3 = ax2.twinx()
    ax3.plot(ts, [s["fds"] for s in samples], color="green", linewidth=1, label="open fds")
    ax3.set_ylabel("open fds", color="green")
    fig.tight_layout()
    return fig


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.soak", description="Mixed-load soak: is the node's RSS flat?"
    )
    p.add_argument("--minutes", type=float, default=10.0, help="duration (default 10)")
    p.add_argument("--quick", action="store_true", help="1 minute, 2 s samples, 15 s warm-up")
    p.add_argument("--rate", type=float, default=300.0, help="requests/s target (0 = unpaced)")
    p.add_argument("--concurrency", type=int, default=32, help="connections (32)")
    p.add_argument("--sample-s", type=float, default=5.0, help="sampling interval (5 s)")
    p.add_argument("--warmup", type=float, default=None, help="excluded from the trend, s")
    p.add_argument("--chaos-every", type=float, default=60.0, help="s between faults (0 = off)")
    p.add_argument("--ws-clients", type=int, default=8, help="WebSocket clients if served")
    p.add_argument("--seed", default="lasso-bench")
    p.add_argument("--out-dir", default=str(RESULTS))
    args = p.parse_args(argv)
    if args.quick:
        args.minutes, args.sample_s, args.chaos_every = 1.0, 2.0, 20.0
        if args.warmup is None:
            args.warmup = 15.0
    if args.warmup is None:
        args.warmup = min(60.0, args.minutes * 60 * 0.1)
    if args.minutes <= 0 or args.concurrency < 1 or args.sample_s <= 0:
        p.error("--minutes and --sample-s must be > 0, --concurrency >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    stamp, iso = timestamp()
    host0 = host_sample()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="lasso-bench-soak-") as tmp:
        workdir = Path(tmp)
        sim = SimProcess(FLEET, workdir, seed=args.seed, block_time_ms=1000)
        try:
            sim.start()
        except Unavailable as exc:
            log(f"simulator unavailable: {exc.reason}\n{exc.log_tail}")
            return 2
        providers = [(pid, sim.url(pid), 10 * (i + 1)) for i, pid in enumerate(FLEET)]
        ws_urls = {pid: sim.ws_url(pid) for pid in FLEET}
        profile = chain_profile(providers, block_time_ms=1000, ws_urls=ws_urls)
        lasso = LassoProcess(profile, workdir, "lasso-soak")
        try:
            try:
                lasso.start()
            except Unavailable as exc:
                log(f"lasso unavailable: {exc.reason}\n{exc.log_tail}")
                return 2
            log(f"soak: {args.minutes} min at {args.rate} req/s ...")
            data = run_loop(soak(args, sim, lasso))
            died = not lasso.alive()
            log_tail = lasso.proc.log_tail(3000) if lasso.proc else ""
        finally:
            lasso.stop()
            sim.stop()
    samples = data["samples"]
    trend = rss_trend([s["t"] for s in samples], [s["rss_mb"] for s in samples], args.warmup)
    # A fault's effects (breaker transitions, reconnects) can show one sample late.
    windows = [(ev["t"], ev["t"] + CHAOS_S + args.sample_s) for ev in data["chaos"]]
    trend["growth_mb"] = attribute_growth(
        [s["t"] for s in samples], [s["rss_mb"] for s in samples], windows, args.warmup
    )
    fd_pts = [(s["t"], s["fds"]) for s in samples if s["fds"] is not None and s["t"] >= args.warmup]
    fd_verdict = "–"
    if len(fd_pts) >= 2:
        fq = quartile_medians([float(v) for _, v in fd_pts])
        fit = lstsq_slope([t / 60 for t, _ in fd_pts], [float(v) for _, v in fd_pts])
        assert fq is not None
        fd_verdict = trend_verdict(
            fit[0] if fit else None,
            fq[0],
            fq[1],
            (fd_pts[-1][0] - fd_pts[0][0]) / 60,
            tolerance_abs=5.0,
            tolerance_pct=10.0,
        )
    result: dict[str, Any] = {
        "meta": {
            **env_meta(iso),
            "benchmark": NAME,
            "minutes": args.minutes,
            "rate": args.rate,
            "concurrency": args.concurrency,
            "sample_s": args.sample_s,
            "warmup_s": args.warmup,
            "chaos_every_s": args.chaos_every,
            "fleet": FLEET,
            "loadavg_start": host0["loadavg"],
            "wall_s": round(time.monotonic() - started, 1),
            "node_died": died,
            "node_log_tail": log_tail if died else "",
        },
        "trend": trend,
        "fd_verdict": fd_verdict,
        "run": data,
        "headline": {
            "rss verdict": trend["verdict"],
            "rss slope MB/min": trend.get("slope_mb_per_min"),
            "failures": sum(data["failures"].values()),
        },
    }
    report = render_markdown(result)
    if died:
        report += "\n**The node died during the soak.**\n"
    paths = save_report(NAME, stamp, result, report, make_figure(result), Path(args.out_dir))
    print(report)
    log("wrote " + ", ".join(paths.values()))
    return 1 if died else 0


if __name__ == "__main__":
    sys.exit(main())
