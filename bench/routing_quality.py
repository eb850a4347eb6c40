"""Routing quality: client-observed latency per strategy vs an oracle and random picks.

A simulated fleet of five providers with lognormal latency (medians 15/25/40/60/90 ms,
sigmas 0.2-0.8, so long tails) and occasional faults (small error rates, and the fastest
provider going down for a while in the middle of the window) runs in its own process
(``lasso sim``). For each contender the same closed-loop load (``--concurrency`` workers,
the same request sequence of ``eth_blockNumber`` / ``eth_getBalance`` / ``eth_call``) runs
for a warm-up (excluded) and a measured window:

* ``fastest``, ``latency-weighted``, ``load-balanced``, ``priority``: through a fresh Lasso
  node (``lasso serve``, the route ``/rpc/<strategy>/ethereum``);
* ``oracle``: straight to the provider with the lowest median latency among those that are
  up at that instant (it follows the outage as it is switched);
* ``random``: straight to a uniformly random provider (no health knowledge).

Reported per contender: p50/p95/p99 of successful calls, error rate, share of calls per
provider, per phase (before / during / after the outage); the ratios ``fastest/oracle`` and
``latency-weighted/oracle`` of p50 (targets 1.10 and 1.25). Plot: latency CDFs and p50 over
time.

    .venv/bin/python -m bench.routing_quality            # 8 s warm-up + 40 s window each
    .venv/bin/python -m bench.routing_quality --quick    # 4 s + 15 s each (~2 min)
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import random
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
    bucket_series,
    cdf_points,
    chain_profile,
    cpu_delta,
    env_meta,
    fmt,
    host_busy_pct,
    host_sample,
    latency_summary,
    log,
    markdown_table,
    percentile,
    pyplot,
    request_for,
    run_loop,
    save_report,
    timestamp,
    tree_cpu_ticks,
)

NAME = "routing_quality"
STRATEGIES = ("fastest", "latency-weighted", "load-balanced", "priority")
BASELINES = ("oracle", "random")
ALL = (*STRATEGIES, *BASELINES)

#: The fleet: behaviour fields of ``lasso.sim.Behavior`` per provider.
FLEET: dict[str, dict[str, Any]] = {
    "alpha": {"latency_ms": 15, "jitter": 0.3, "error_rate": 0.005, "error_mode": "http500"},
    "bravo": {"latency_ms": 25, "jitter": 0.2},
    "charlie": {"latency_ms": 40, "jitter": 0.5, "error_rate": 0.01, "error_mode": "http500"},
    "delta": {"latency_ms": 60, "jitter": 0.8},
    "echo": {"latency_ms": 90, "jitter": 0.4, "error_rate": 0.02, "error_mode": "jsonrpc"},
}
#: Priorities as an operator might list them: not in latency order (a paid mid-speed
#: provider first), so ``priority`` shows what static ordering costs.
PRIORITY = {"charlie": 10, "alpha": 20, "echo": 30, "bravo": 40, "delta": 50}
OUTAGE_PROVIDER = "alpha"
TARGETS = {"fastest": 1.10, "latency-weighted": 1.25}

# ---------------------------------------------------------------------------------------
# Pure helpers
# ---------------------------------------------------------------------------------------


def oracle_pick(medians: Mapping[str, float], down: set[str] | frozenset[str]) -> str | None:
    """The provider with the lowest median latency among those not down (ties: id)."""
    live = [(m, pid) for pid, m in medians.items() if pid not in down]
    return min(live)[1] if live else None


def phase_of(t: float, outage: tuple[float, float] | None) -> str:
    """``before``/``outage``/``after`` for a request sent ``t`` s into the window."""
    if outage is None or t < outage[0]:
        return "before"
    return "outage" if t < outage[1] else "after"


def ratio(num: float | None, den: float | None) -> float | None:
    """``num / den``, ``None`` when either is missing or ``den`` is 0."""
    if num is None or not den:
        return None
    return num / den


# ---------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------


@dataclass
class Sample:
    t: float  # send time, seconds since the measured window started (negative: warm-up)
    latency_ms: float
    ok: bool
    error: str | None
    provider: str | None
    retries: int | None


@dataclass
class Run:
    contender: str
    samples: list[Sample] = field(default_factory=list)
    outage: tuple[float, float] | None = None  # window-relative seconds, as switched
    proxy_cpu_us: float | None = None
    host_busy_pct: float | None = None
    reason: str = ""


async def run_contender(
    args: argparse.Namespace, sim: SimProcess, contender: str, workdir: Path, round_no: int
) -> Run:
    run = Run(contender)
    client = RpcClient(timeout_s=15.0)
    lasso: LassoProcess | None = None
    try:
        # Reset the fleet: every provider up with its base behaviour, counters zeroed.
        for pid, behavior in FLEET.items():
            await admin_update(client, sim, pid, down=False, hang=False, **behavior)
        if contender in STRATEGIES:
            providers = [(pid, sim.url(pid), PRIORITY[pid]) for pid in FLEET]
            lasso = LassoProcess(
                chain_profile(providers, cache=False), workdir, f"lasso-{contender}"
            )
            try:
                await asyncio.to_thread(lasso.start)
            except Unavailable as exc:
                run.reason = exc.reason
                log(f"  {contender}: UNAVAILABLE ({exc.reason})\n{exc.log_tail}")
                return run
        await _drive(args, sim, client, run, lasso, round_no)
    finally:
        await client.close()
        if lasso is not None:
            if not lasso.alive() and not run.reason:
                run.reason = "lasso died during the run"
            lasso.stop()
    return run


async def _drive(
    args: argparse.Namespace,
    sim: SimProcess,
    client: RpcClient,
    run: Run,
    lasso: LassoProcess | None,
    round_no: int,
) -> None:
    loop = asyncio.get_running_loop()
    medians = {pid: float(b["latency_ms"]) for pid, b in FLEET.items()}
    down: set[str] = set()
    rng = random.Random(f"{args.seed}:random:{round_no}")
    ids = list(FLEET)
    contender = run.contender
    lasso_url = f"{lasso.base_url}/rpc/{contender}/ethereum?include_meta=headers" if lasso else ""
    start = loop.time() + args.warmup  # the measured window starts here
    end = start + args.duration
    counter = itertools.count()

    async def worker() -> None:
        while True:
            now = loop.time()
            if now >= end:
                return
            k = next(counter)
            _, body = request_for(k)
            if lasso is not None:
                url, target = lasso_url, None
            else:
                target = oracle_pick(medians, down) if contender == "oracle" else rng.choice(ids)
                if target is None:
                    target = ids[0]
                url = sim.url(target)
            out = await client.call(url, body, expect_id=k)
            provider = target
            retries = None
            if out.meta is not None:
                sel = out.meta.get("selected_provider")
                provider = sel.get("id") if isinstance(sel, dict) else None
                retries = out.meta.get("retries")
            run.samples.append(
                Sample(now - start, out.latency_ms, out.ok, out.error, provider, retries)
            )

    async def outage() -> None:
        if args.no_outage:
            return
        t_down = start + args.outage_at * args.duration
        await asyncio.sleep(max(0.0, t_down - loop.time()))
        await admin_update(client, sim, OUTAGE_PROVIDER, down=True)
        down.add(OUTAGE_PROVIDER)
        began = loop.time() - start
        await asyncio.sleep(max(0.0, t_down + args.outage_s - loop.time()))
        await admin_update(client, sim, OUTAGE_PROVIDER, down=False)
        down.discard(OUTAGE_PROVIDER)
        run.outage = (began, loop.time() - start)

    measured: dict[str, Any] = {}

    async def meter() -> None:
        # CPU of the proxy and of the host over the measured window only.
        await asyncio.sleep(max(0.0, start - loop.time()))
        h0 = host_sample()
        c0 = tree_cpu_ticks(lasso.pid) if lasso is not None else None
        n0 = len(run.samples)
        await asyncio.sleep(max(0.0, end - loop.time()))
        h1 = host_sample()
        measured["busy"] = host_busy_pct(h0, h1)
        if c0 is not None and lasso is not None:
            ticks = cpu_delta(c0, tree_cpu_ticks(lasso.pid))
            n = len(run.samples) - n0
            measured["cpu_us"] = ticks * 1e6 / CLK_TCK / n if n else None

    await asyncio.gather(meter(), outage(), *(worker() for _ in range(args.concurrency)))
    run.host_busy_pct = measured.get("busy")
    run.proxy_cpu_us = measured.get("cpu_us")


# ---------------------------------------------------------------------------------------
# Summary and report
# ---------------------------------------------------------------------------------------


def summarize_run(samples: Sequence[Sample], outage: tuple[float, float] | None) -> dict[str, Any]:
    """Window statistics of one contender (warm-up samples excluded)."""
    window = [s for s in samples if s.t >= 0]
    ok = [s.latency_ms for s in window if s.ok]
    errors = Counter(s.error for s in window if not s.ok)
    shares = Counter(s.provider for s in window if s.ok and s.provider)
    phases = {}
    for name in ("before", "outage", "after"):
        sel = [s for s in window if phase_of(s.t, outage) == name]
        if sel:
            phases[name] = {
                **latency_summary(s.latency_ms for s in sel if s.ok),
                "errors": sum(not s.ok for s in sel),
                "requests": len(sel),
            }
    retried = sum(1 for s in window if s.retries)
    return {
        "requests": len(window),
        "latency_ms": latency_summary(ok),
        "errors": sum(errors.values()),
        "error_rate": sum(errors.values()) / len(window) if window else None,
        "error_kinds": dict(errors),
        "retried": retried,
        "provider_share": {
            pid: n / max(1, sum(shares.values())) for pid, n in shares.most_common()
        },
        "phases": phases,
    }


def ratios_of(summaries: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """p50/p95/p99 ratios of every strategy to the oracle, overall and per phase."""
    oracle = summaries.get("oracle")
    out: dict[str, Any] = {}
    if oracle is None:
        return out
    for name, s in summaries.items():
        if name == "oracle":
            continue
        row = {q: ratio(s["latency_ms"][q], oracle["latency_ms"][q]) for q in ("p50", "p95", "p99")}
        for phase, stats in s["phases"].items():
            base = oracle["phases"].get(phase)
            row[f"p50_{phase}"] = ratio(stats["p50"], base["p50"] if base else None)
        out[name] = row
    return out


def render_markdown(result: Mapping[str, Any]) -> str:
    meta = result["meta"]
    summaries = result["summary"]
    ratios = result["ratios"]
    order = [c for c in meta["contenders"] if c in summaries]
    lines = [
        f"# Routing quality — {meta['timestamp']}",
        "",
        f"{len(FLEET)} simulated providers (own process), closed loop c={meta['concurrency']}, "
        f"warm-up {meta['warmup_s']} s (excluded) + {meta['duration_s']} s measured per "
        f"contender, {meta['rounds']} round(s); mix "
        f"`eth_blockNumber`/`eth_getBalance`/`eth_call` in turn; git {meta['git']}; "
        f"{meta['cpus']} CPUs; load average at start {meta['loadavg_start']}.",
        "",
        "Fleet (median ms / lognormal sigma / faults): "
        + "; ".join(
            f"{pid} {b['latency_ms']}/{b['jitter']}"
            + (f"/{b['error_rate'] * 100:g}% {b['error_mode']}" if b.get("error_rate") else "")
            + f" (priority {PRIORITY[pid]})"
            for pid, b in FLEET.items()
        )
        + (
            f". Outage: `{OUTAGE_PROVIDER}` down (connections refused) from "
            f"{meta['outage_at'] * 100:.0f}% of the window for {meta['outage_s']} s."
            if not meta["no_outage"]
            else ". No outage."
        ),
        "",
    ]
    rows = []
    for name in order:
        s = summaries[name]
        lat = s["latency_ms"]
        share = ", ".join(f"{p} {v * 100:.0f}%" for p, v in list(s["provider_share"].items())[:3])
        rows.append(
            [
                name,
                s["requests"],
                fmt(lat["p50"]),
                fmt(lat["p95"]),
                fmt(lat["p99"]),
                fmt(lat["mean"]),
                f"{s['errors']} ({fmt((s['error_rate'] or 0) * 100, 2)}%)",
                s["retried"] if name in STRATEGIES else "–",
                share,
                fmt(s.get("proxy_cpu_us"), 0),
                fmt(s.get("host_busy_pct"), 0),
            ]
        )
    lines += markdown_table(
        [
            "contender",
            "requests",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "mean ms",
            "errors",
            "retried",
            "top providers",
            "proxy CPU µs/req",
            "host busy %",
        ],
        rows,
        "lrrrrrrrlrr",
    )
    lines.append("")
    for name, target in TARGETS.items():
        r = ratios.get(name, {}).get("p50")
        if r is None:
            continue
        verdict = "meets" if r <= target else "misses"
        lines.append(
            f"- **{name}/oracle p50 = {r:.2f}** (target ≤ {target:.2f}: {verdict}); "
            f"p95 {fmt(ratios[name]['p95'], 2)}, p99 {fmt(ratios[name]['p99'], 2)}"
        )
    lines += ["", "p50 by phase (ms) and ratio to the oracle in the same phase:", ""]
    phases = [
        p for p in ("before", "outage", "after") if any(p in summaries[n]["phases"] for n in order)
    ]
    prow = []
    for name in order:
        cells: list[object] = [name]
        for p in phases:
            st = summaries[name]["phases"].get(p)
            r = ratios.get(name, {}).get(f"p50_{p}")
            cells.append(
                "–"
                if st is None
                else f"{fmt(st['p50'])} ({fmt(r, 2)}×) err {st['errors']}"
                if name != "oracle"
                else f"{fmt(st['p50'])} err {st['errors']}"
            )
        prow.append(cells)
    lines += markdown_table(["contender", *phases], prow, "l" + "r" * len(phases))
    unavailable = {n: r for n, r in result.get("unavailable", {}).items()}
    if unavailable:
        lines += ["", "Unavailable: " + "; ".join(f"{n}: {r}" for n, r in unavailable.items())]
    lines += [
        "",
        "Latency percentiles are of successful calls as the client saw them (errors are "
        "counted, not timed). `retried`: calls Lasso answered after failing over (from "
        "`X-Lasso-Meta`). `top providers`: share of successful calls by the provider that "
        "answered. Baselines call the simulator directly and skip the proxy hop "
        "(~0.1-0.3 ms). Compare ratios within one run.",
        "",
    ]
    return "\n".join(lines)


def make_figure(result: Mapping[str, Any], runs: Mapping[str, list[Sample]]) -> Any | None:
    plt = pyplot()
    if plt is None:
        return None
    from matplotlib.ticker import FuncFormatter

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5))
    for name in result["meta"]["contenders"]:
        samples = runs.get(name)
        if not samples:
            continue
        ok = [s.latency_ms for s in samples if s.ok and s.t >= 0]
        xs, ys = cdf_points(ok)
        style = "--" if name in BASELINES else "-"
        ax1.plot(xs, ys, style, label=name, linewidth=1.4)
        bx, by = bucket_series(
            ((s.t, s.latency_ms) for s in samples if s.ok and s.t >= 0),
            1.0,
            lambda v: percentile(v, 50),
        )
        ax2.plot(bx, by, style, label=name, linewidth=1.2)
    ax1.set_xscale("log")
    ax1.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax1.set_xlabel("latency (ms, log)")
    ax1.set_ylabel("fraction of successful calls")
    ax1.set_title("Client-observed latency CDF")
    ax1.grid(True, which="both", alpha=0.3)
    ax1.legend()
    outage = result["meta"].get("outage_window")
    if outage:
        ax2.axvspan(outage[0], outage[1], color="red", alpha=0.1, label=f"{OUTAGE_PROVIDER} down")
    ax2.set_xlabel("time in window (s)")
    ax2.set_ylabel("p50 per 1 s (ms)")
    ax2.set_title("Median latency over time")
    ax2.grid(True, alpha=0.3)
    ax2.legend(fontsize=8)
    fig.tight_layout()
    return fig


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.routing_quality",
        description="Client-observed latency per routing strategy vs oracle and random.",
    )
    p.add_argument("--quick", action="store_true", help="4 s warm-up + 15 s window each")
    p.add_argument("--warmup", type=float, default=8.0, help="excluded warm-up, s (default 8)")
    p.add_argument("--duration", type=float, default=40.0, help="measured window, s (default 40)")
    p.add_argument("--concurrency", type=int, default=16, help="closed-loop workers (16)")
    p.add_argument("--rounds", type=int, default=1, help="rounds, order rotated (default 1)")
    p.add_argument("--contenders", default=",".join(ALL), help=f"subset/order of {','.join(ALL)}")
    p.add_argument(
        "--outage-at", type=float, default=0.35, help="outage start, fraction of the window"
    )
    p.add_argument("--outage-s", type=float, default=None, help="outage length, s (20%% default)")
    p.add_argument("--no-outage", action="store_true", help="no outage (steady state only)")
    p.add_argument("--seed", default="lasso-bench")
    p.add_argument("--out-dir", default=str(RESULTS))
    args = p.parse_args(argv)
    if args.quick:
        args.warmup, args.duration = 4.0, 15.0
    if args.outage_s is None:
        args.outage_s = round(0.2 * args.duration, 1)
    names = [n.strip() for n in args.contenders.split(",") if n.strip()]
    unknown = [n for n in names if n not in ALL]
    if unknown:
        p.error(f"unknown contender(s): {', '.join(unknown)}")
    if args.concurrency < 1 or args.duration <= 0 or args.warmup < 0 or args.rounds < 1:
        p.error("--concurrency and --rounds must be >= 1, --duration > 0, --warmup >= 0")
    if not 0 <= args.outage_at < 1:
        p.error("--outage-at must be within [0, 1)")
    args.contenders = names
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    stamp, iso = timestamp()
    host0 = host_sample()
    runs: dict[str, list[Sample]] = {n: [] for n in args.contenders}
    extra: dict[str, dict[str, Any]] = {n: {} for n in args.contenders}
    outage_window: tuple[float, float] | None = None
    unavailable: dict[str, str] = {}
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="lasso-bench-rq-") as tmp:
        workdir = Path(tmp)
        sim = SimProcess(FLEET, workdir, seed=args.seed)
        try:
            sim.start()
        except Unavailable as exc:
            log(f"simulator unavailable: {exc.reason}\n{exc.log_tail}")
            return 2
        try:
            for r in range(args.rounds):
                k = r % len(args.contenders)
                order = args.contenders[k:] + args.contenders[:k]
                log(f"round {r + 1}/{args.rounds}: {', '.join(order)}")
                for name in order:
                    if name in unavailable:
                        continue
                    run = run_loop(run_contender(args, sim, name, workdir, r))
                    if run.reason:
                        unavailable[name] = run.reason
                        continue
                    runs[name].extend(run.samples)
                    outage_window = run.outage or outage_window
                    extra[name].setdefault("proxy_cpu_us", []).append(run.proxy_cpu_us)
                    extra[name].setdefault("host_busy_pct", []).append(run.host_busy_pct)
                    window = [s for s in run.samples if s.t >= 0]
                    ok = sorted(s.latency_ms for s in window if s.ok)
                    log(
                        f"  {name}: {len(window)} calls, p50 {fmt(percentile(ok, 50))} ms, "
                        f"p99 {fmt(percentile(ok, 99))} ms, errors "
                        f"{sum(not s.ok for s in window)}"
                    )
        finally:
            sim.stop()
    summaries: dict[str, Any] = {}
    for name, samples in runs.items():
        if not samples:
            continue
        s = summarize_run(samples, outage_window)
        cpu = [v for v in extra[name].get("proxy_cpu_us", []) if v is not None]
        busy = [v for v in extra[name].get("host_busy_pct", []) if v is not None]
        s["proxy_cpu_us"] = sum(cpu) / len(cpu) if cpu else None
        s["host_busy_pct"] = sum(busy) / len(busy) if busy else None
        summaries[name] = s
    ratios = ratios_of(summaries)
    result: dict[str, Any] = {
        "meta": {
            **env_meta(iso),
            "benchmark": NAME,
            "contenders": args.contenders,
            "concurrency": args.concurrency,
            "warmup_s": args.warmup,
            "duration_s": args.duration,
            "rounds": args.rounds,
            "outage_at": args.outage_at,
            "outage_s": args.outage_s,
            "no_outage": args.no_outage,
            "outage_window": outage_window,
            "fleet": FLEET,
            "priority": PRIORITY,
            "seed": args.seed,
            "loadavg_start": host0["loadavg"],
            "wall_s": round(time.monotonic() - started, 1),
        },
        "summary": summaries,
        "ratios": ratios,
        "unavailable": unavailable,
        "headline": {f"{name}/oracle p50": ratios.get(name, {}).get("p50") for name in TARGETS},
    }
    report = render_markdown(result)
    paths = save_report(NAME, stamp, result, report, make_figure(result, runs), Path(args.out_dir))
    print(report)
    log("wrote " + ", ".join(paths.values()))
    return 0 if summaries else 1


if __name__ == "__main__":
    sys.exit(main())
