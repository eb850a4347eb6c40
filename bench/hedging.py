"""Hedging: client tail latency and upstream cost on a heavy-tailed fleet, and the budget.

A simulated fleet of three providers (own process, ``lasso sim``) with lognormal latency,
medians 5/10/15 ms, where 8 % of answers are 500 ms late (``tail_rate``/``tail_ms``), runs
the same closed loop (``--concurrency`` workers cycling ``eth_blockNumber`` /
``eth_getBalance`` / ``eth_call``) for three contenders, one after the other:

* ``best-single``: straight to the best provider alone (``alpha``, 5 ms), no proxy;
* ``unhedged``: a fresh Lasso node, ``/rpc/fastest/ethereum``;
* ``hedged``: the same with ``routing.hedge`` (``--quantile`` of the first provider's
  latency for the method, clamped to ``--min-delay-ms``..``--max-delay-ms``, one hedge,
  ``--budget-percent`` of the chain's requests);
* ``hedged-priority``: the same hedged node on ``/rpc/priority/ethereum``, which keeps
  ``alpha`` first whatever its latency.

Each contender has a warm-up (excluded), a steady window, then a ``slow`` window in which
``alpha`` turns slow for most calls (``--slow-rate`` of its answers late). Under
``fastest`` routing moves away from it; under ``priority`` nearly every request then wants
a hedge: the test that the budget holds.

Reported per contender and window: p50/p95/p99 of successful calls, errors, upstream calls
per request (the simulator's counters over the window / client requests), the share of
hedged requests (``X-Lasso-Meta``), hedges skipped for budget (``/metrics``) and the worst
share of hedges over any trailing minute of requests. Targets: hedged p99 at most half the
best single provider's, at most 25 % extra upstream calls, and the budget held in the slow
window.

    .venv/bin/python -m bench.hedging            # 5 s warm-up, 30 s steady, 75 s slow each
    .venv/bin/python -m bench.hedging --quick    # 3 s, 12 s, 8 s (~1.5 min)
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
import tempfile
import time
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
    cdf_points,
    chain_profile,
    cpu_delta,
    env_meta,
    fmt,
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

NAME = "hedging"
CONTENDERS = ("best-single", "unhedged", "hedged", "hedged-priority")
HEDGED = ("hedged", "hedged-priority")
BUDGET_SLACK = 0.01
"""The client sees request send times, the node counts in one-second buckets (a window of
59-60 s) and counts a hedge when it is sent: the shares may differ by this much."""
WINDOWS = ("steady", "slow")
BEST = "alpha"

#: The fleet: ``lasso.sim.Behavior`` fields per provider.
FLEET: dict[str, dict[str, Any]] = {
    "alpha": {"latency_ms": 5, "jitter": 0.2, "tail_rate": 0.08, "tail_ms": 500},
    "bravo": {"latency_ms": 10, "jitter": 0.2, "tail_rate": 0.08, "tail_ms": 500},
    "charlie": {"latency_ms": 15, "jitter": 0.2, "tail_rate": 0.08, "tail_ms": 500},
}
PRIORITY = {"alpha": 10, "bravo": 20, "charlie": 30}
TARGETS = {"p99 ratio": 0.5, "extra calls": 0.25}

# ---------------------------------------------------------------------------------------
# Pure helpers
# ---------------------------------------------------------------------------------------


def hedge_yaml(quantile: float, min_ms: float, max_ms: float, budget: float) -> str:
    """The ``routing.hedge`` lines of the chain (indented for ``chain_profile``)."""
    return (
        "    routing:\n"
        f"      hedge: {{quantile: {quantile:g}, min_delay_ms: {min_ms:g}, "
        f"max_delay_ms: {max_ms:g}, budget_percent: {budget:g}}}\n"
    )


def with_routing(profile: str, routing: str) -> str:
    """``profile`` (from ``chain_profile``) with ``routing`` lines before its providers."""
    head, sep, tail = profile.partition("    providers:\n")
    return head + routing + sep + tail


BUDGET_WINDOW_S = 59.0
"""The trailing window the bench judges the budget over. The node counts in one-second
buckets, so its "minute" holds between 59 and 60 s of requests, aligned on its own clock;
after a burst of hedges the last second of an exact 60 s window can hold dozens of them
that the node no longer counts. 59 s is the part of the minute the node always counts."""

MIN_JUDGED = 200
"""Requests a trailing window must hold before its hedged share is judged. The node counts a
hedge against the requests it has received when the hedge falls due (a delay after the
request was sent); the client can only place it at the request's send time, so over the
first few dozen requests of a run its share reads high."""


def worst_trailing_share(
    events: Sequence[tuple[float, bool]],
    window_s: float = BUDGET_WINDOW_S,
    min_requests: int = MIN_JUDGED,
) -> float:
    """The largest share of hedged requests over the trailing ``window_s``, evaluated at
    every hedged request (when a hedge is sent, the moment the budget rules on);
    ``events`` are ``(send time, hedged)`` in time order. The hedge budget promises this
    stays at or below its percentage. Between hedges the share can rise above it as old
    requests leave the window (the budget then refuses hedges until it falls back), which
    is why other moments are not judged; nor are windows with fewer than
    ``min_requests``."""
    worst = 0.0
    start = 0
    hedged = 0
    for end, (t, h) in enumerate(events):
        hedged += h
        while events[start][0] <= t - window_s:
            hedged -= events[start][1]
            start += 1
        n = end - start + 1
        if h and n >= min_requests:
            worst = max(worst, hedged / n)
    return worst


def last_window_share(events: Sequence[tuple[float, bool]], window_s: float = 30.0) -> float | None:
    """The hedged share of the requests in the last ``window_s`` of ``events``."""
    if not events:
        return None
    since = events[-1][0] - window_s
    recent = [h for t, h in events if t > since]
    return sum(recent) / len(recent)


def calls_per_request(upstream_calls: int, requests: int) -> float | None:
    """Upstream calls per client request (1.0 = no extra cost)."""
    return upstream_calls / requests if requests else None


def metric_value(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels`` in Prometheus text."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        head, _, value = line.rpartition(" ")
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
    return total


# ---------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------


@dataclass
class Sample:
    t: float  # send time, seconds since the steady window started (negative: warm-up)
    window: str  # "warmup" | "steady" | "slow"
    latency_ms: float
    ok: bool
    hedged: bool
    provider: str | None


@dataclass
class Run:
    contender: str
    samples: list[Sample] = field(default_factory=list)
    upstream_calls: dict[str, int] = field(default_factory=dict)  # per window
    skipped: dict[str, float] = field(default_factory=dict)  # hedges skipped for budget
    proxy_cpu_us: float | None = None
    reason: str = ""


async def sim_calls(client: RpcClient, sim: SimProcess) -> int:
    """Calls the simulated fleet received since its counters were reset."""
    async with client.session.get(f"{sim.admin_url}/providers") as resp:
        doc = await resp.json()
    return sum(int(p["stats"]["calls"]) for p in doc["providers"])


async def reset_calls(client: RpcClient, sim: SimProcess) -> None:
    async with client.session.post(f"{sim.admin_url}/reset-stats") as resp:
        await resp.read()


async def skipped_hedges(client: RpcClient, lasso: LassoProcess | None) -> float:
    if lasso is None:
        return 0.0
    async with client.session.get(f"{lasso.base_url}/metrics") as resp:
        text = await resp.text()
    return metric_value(text, "lasso_hedges_total", outcome="skipped_budget")


async def run_contender(
    args: argparse.Namespace, sim: SimProcess, contender: str, workdir: Path
) -> Run:
    run = Run(contender)
    client = RpcClient(timeout_s=15.0)
    lasso: LassoProcess | None = None
    try:
        for pid, behavior in FLEET.items():
            await admin_update(client, sim, pid, down=False, hang=False, **behavior)
        if contender != "best-single":
            providers = [(pid, sim.url(pid), PRIORITY[pid]) for pid in FLEET]
            profile = chain_profile(providers)
            if contender in HEDGED:
                routing = hedge_yaml(
                    args.quantile, args.min_delay_ms, args.max_delay_ms, args.budget_percent
                )
                profile = with_routing(profile, routing)
            lasso = LassoProcess(profile, workdir, f"lasso-{contender}")
            try:
                await asyncio.to_thread(lasso.start)
            except Unavailable as exc:
                run.reason = exc.reason
                log(f"  {contender}: UNAVAILABLE ({exc.reason})\n{exc.log_tail}")
                return run
        await _drive(args, sim, client, run, lasso)
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
) -> None:
    loop = asyncio.get_running_loop()
    start = loop.time() + args.warmup
    slow_at = start + args.steady
    end = slow_at + args.slow
    strategy = "priority" if run.contender == "hedged-priority" else "fastest"
    url = (
        f"{lasso.base_url}/rpc/{strategy}/ethereum?include_meta=headers"
        if lasso is not None
        else sim.url(BEST)
    )
    counter = itertools.count()

    def window_of(now: float) -> str:
        return "warmup" if now < start else "steady" if now < slow_at else "slow"

    async def worker() -> None:
        while True:
            now = loop.time()
            if now >= end:
                return
            k = next(counter)
            _, body = request_for(k)
            out = await client.call(url, body, expect_id=k)
            meta = out.meta or {}
            sel = meta.get("selected_provider")
            provider = sel.get("id") if isinstance(sel, dict) else (None if lasso else BEST)
            run.samples.append(
                Sample(
                    now - start,
                    window_of(now),
                    out.latency_ms,
                    out.ok,
                    bool(meta.get("hedged")),
                    provider,
                )
            )

    async def conductor() -> None:
        # Counters over each window; alpha turns slow for the last one.
        await asyncio.sleep(max(0.0, start - loop.time()))
        await reset_calls(client, sim)
        skipped0 = await skipped_hedges(client, lasso)
        c0 = tree_cpu_ticks(lasso.pid) if lasso is not None else None
        n0 = len(run.samples)
        await asyncio.sleep(max(0.0, slow_at - loop.time()))
        run.upstream_calls["steady"] = await sim_calls(client, sim)
        skipped1 = await skipped_hedges(client, lasso)
        run.skipped["steady"] = skipped1 - skipped0
        if c0 is not None and lasso is not None:
            n = len(run.samples) - n0
            ticks = cpu_delta(c0, tree_cpu_ticks(lasso.pid))
            run.proxy_cpu_us = ticks * 1e6 / CLK_TCK / n if n else None
        await reset_calls(client, sim)
        await admin_update(client, sim, BEST, tail_rate=args.slow_rate)
        await asyncio.sleep(max(0.0, end - loop.time()))
        run.upstream_calls["slow"] = await sim_calls(client, sim)
        run.skipped["slow"] = await skipped_hedges(client, lasso) - skipped1

    await asyncio.gather(conductor(), *(worker() for _ in range(args.concurrency)))


# ---------------------------------------------------------------------------------------
# Summary and report
# ---------------------------------------------------------------------------------------


def summarize(run: Run) -> dict[str, Any]:
    """Per window: latency of successful calls, errors, cost, hedged share."""
    out: dict[str, Any] = {}
    timeline = sorted((s.t, s.hedged) for s in run.samples)  # the node counts warm-up too
    out["worst_minute_hedge_share"] = worst_trailing_share(timeline) if timeline else None
    slow = sorted((s.t, s.hedged) for s in run.samples if s.window == "slow")
    out["slow_last_30s_hedge_share"] = last_window_share(slow)
    per_second: dict[int, list[int]] = {}
    for t, hedged in timeline:
        cell = per_second.setdefault(int(t // 1), [0, 0])
        cell[0] += 1
        cell[1] += hedged
    out["per_second"] = [[t, n, h] for t, (n, h) in sorted(per_second.items())]
    for window in WINDOWS:
        sel = [s for s in run.samples if s.window == window]
        if not sel:
            continue
        hedged = sum(s.hedged for s in sel)
        out[window] = {
            "requests": len(sel),
            "latency_ms": latency_summary(s.latency_ms for s in sel if s.ok),
            "errors": sum(not s.ok for s in sel),
            "calls_per_request": calls_per_request(run.upstream_calls.get(window, 0), len(sel)),
            "hedged_share": hedged / len(sel),
            "skipped_budget": run.skipped.get(window, 0.0),
        }
    out["proxy_cpu_us"] = run.proxy_cpu_us
    return out


def verdicts(summary: Mapping[str, Mapping[str, Any]], budget: float) -> dict[str, Any]:
    """The three targets: p99 and cost from the steady window of ``hedged``, the budget
    from the worst trailing minute of every hedged contender."""
    best = summary.get("best-single", {}).get("steady", {}).get("latency_ms", {}).get("p99")
    hedged = summary.get("hedged", {})
    p99 = hedged.get("steady", {}).get("latency_ms", {}).get("p99")
    cpr = hedged.get("steady", {}).get("calls_per_request")
    shares = [
        summary[name]["worst_minute_hedge_share"]
        for name in HEDGED
        if summary.get(name, {}).get("worst_minute_hedge_share") is not None
    ]
    worst = max(shares) if shares else None
    return {
        "hedged/best p99": None if not best or p99 is None else p99 / best,
        "extra upstream calls": None if cpr is None else cpr - 1.0,
        "worst minute hedge share": worst,
        "budget held": None if worst is None else worst <= budget / 100 + BUDGET_SLACK,
    }


def render_markdown(result: Mapping[str, Any]) -> str:
    meta = result["meta"]
    summary = result["summary"]
    v = result["verdicts"]
    lines = [
        f"# Hedging — {meta['timestamp']}",
        "",
        f"{len(FLEET)} simulated providers (own process): "
        + "; ".join(
            f"{pid} {b['latency_ms']} ms (sigma {b['jitter']}), "
            f"{b['tail_rate'] * 100:g}% of answers {b['tail_ms']} ms late"
            for pid, b in FLEET.items()
        )
        + f". Closed loop c={meta['concurrency']}, warm-up {meta['warmup_s']} s (excluded), "
        f"steady {meta['steady_s']} s, then slow {meta['slow_s']} s with `{BEST}` "
        f"{meta['slow_rate'] * 100:g}% late. Hedge: quantile {meta['quantile']:g} of the first "
        f"provider's latency, clamped to {meta['min_delay_ms']:g}..{meta['max_delay_ms']:g} ms, "
        f"one hedge, budget {meta['budget_percent']:g}% of requests per minute. Route "
        "`/rpc/fastest/ethereum` (`hedged-priority`: `/rpc/priority/ethereum`); "
        f"git {meta['git']}; {meta['cpus']} CPUs; load average at start "
        f"{meta['loadavg_start']}.",
        "",
    ]
    rows = []
    for name in meta["contenders"]:
        s = summary.get(name)
        if s is None:
            continue
        for window in WINDOWS:
            w = s.get(window)
            if w is None:
                continue
            lat = w["latency_ms"]
            rows.append(
                [
                    name,
                    window,
                    w["requests"],
                    fmt(lat["p50"]),
                    fmt(lat["p95"]),
                    fmt(lat["p99"]),
                    w["errors"],
                    fmt(w["calls_per_request"], 3),
                    f"{w['hedged_share'] * 100:.1f}%" if name in HEDGED else "–",
                    fmt(w["skipped_budget"], 0) if name in HEDGED else "–",
                    fmt(s.get("proxy_cpu_us"), 0) if window == "steady" else "",
                ]
            )
    lines += markdown_table(
        [
            "contender",
            "window",
            "requests",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "errors",
            "upstream calls/req",
            "hedged",
            "skipped (budget)",
            "proxy CPU µs/req",
        ],
        rows,
        "llrrrrrrrrr",
    )
    ratio = v["hedged/best p99"]
    extra = v["extra upstream calls"]
    worst = v["worst minute hedge share"]
    lines += [
        "",
        f"- **hedged p99 / best single p99 = {fmt(ratio, 2)}** (target ≤ 0.50: "
        f"{'meets' if ratio is not None and ratio <= 0.5 else 'misses'})",
        f"- **extra upstream calls = {fmt(None if extra is None else extra * 100, 1)}%** "
        f"(target ≤ 25%: {'meets' if extra is not None and extra <= 0.25 else 'misses'})",
        f"- **worst hedged share over a trailing minute = "
        f"{fmt(None if worst is None else worst * 100, 1)}%** (budget "
        f"{meta['budget_percent']:g}%, ±{BUDGET_SLACK * 100:g} point for the client's view: "
        f"{'holds' if v['budget held'] else 'broken'})",
    ]
    for name in HEDGED:
        share = summary.get(name, {}).get("slow_last_30s_hedge_share")
        if share is not None:
            lines.append(
                f"- `{name}`: hedged share over the last 30 s of the slow window "
                f"{share * 100:.1f}% (sustained: the budget's minute no longer holds the "
                "steady traffic)"
            )
    unavailable = result.get("unavailable", {})
    if unavailable:
        lines += ["", "Unavailable: " + "; ".join(f"{n}: {r}" for n, r in unavailable.items())]
    lines += [
        "",
        "Latency percentiles are of successful calls as the client saw them. `upstream "
        "calls/req`: calls the simulator received in the window (hedges and cancelled losers "
        "included, plus the node's few health probes) per client request. `hedged`: requests "
        "whose `X-Lasso-Meta` says a hedge was sent. `skipped (budget)`: hedges that fell due "
        'while the budget was spent (`lasso_hedges_total{outcome="skipped_budget"}`). '
        "`best-single` calls the provider directly and skips the proxy hop (~0.1-0.3 ms).",
        "",
    ]
    return "\n".join(lines)


def make_figure(result: Mapping[str, Any], runs: Mapping[str, Run]) -> Any | None:
    plt = pyplot()
    if plt is None:
        return None
    from matplotlib.ticker import FuncFormatter

    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    for ax, window in zip(axes, WINDOWS, strict=True):
        for name in result["meta"]["contenders"]:
            run = runs.get(name)
            if run is None:
                continue
            xs, ys = cdf_points(s.latency_ms for s in run.samples if s.ok and s.window == window)
            ax.plot(xs, ys, "--" if name == "best-single" else "-", label=name, linewidth=1.4)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.set_xlabel("latency (ms, log)")
        ax.set_ylabel("fraction of successful calls")
        ax.set_title(f"{window} window")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.tight_layout()
    return fig


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.hedging",
        description="Hedging on a heavy-tailed simulated fleet: tail latency, cost, budget.",
    )
    p.add_argument("--quick", action="store_true", help="3 s warm-up, 12 s steady, 8 s slow")
    p.add_argument("--warmup", type=float, default=5.0, help="excluded warm-up, s (default 5)")
    p.add_argument("--steady", type=float, default=30.0, help="steady window, s (default 30)")
    p.add_argument("--slow", type=float, default=75.0, help="slow window, s (default 75)")
    p.add_argument("--slow-rate", type=float, default=0.9, help="alpha's late share when slow")
    p.add_argument("--concurrency", type=int, default=8, help="closed-loop workers (8)")
    p.add_argument("--quantile", type=float, default=0.9, help="hedge delay quantile (0.9)")
    p.add_argument("--min-delay-ms", type=float, default=5.0, help="hedge delay floor (5)")
    p.add_argument("--max-delay-ms", type=float, default=50.0, help="hedge delay cap (50)")
    p.add_argument("--budget-percent", type=float, default=15.0, help="hedge budget (15)")
    p.add_argument("--contenders", default=",".join(CONTENDERS), help="subset and order")
    p.add_argument("--seed", default="lasso-bench")
    p.add_argument("--out-dir", default=str(RESULTS))
    args = p.parse_args(argv)
    if args.quick:
        args.warmup, args.steady, args.slow = 3.0, 12.0, 8.0
    args.contenders = [c for c in args.contenders.split(",") if c]
    unknown = [c for c in args.contenders if c not in CONTENDERS]
    if unknown:
        p.error(f"unknown contender(s) {', '.join(unknown)}; expected {', '.join(CONTENDERS)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    stamp, iso = timestamp()
    host0 = host_sample()
    runs: dict[str, Run] = {}
    unavailable: dict[str, str] = {}
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="lasso-bench-hedge-") as tmp:
        workdir = Path(tmp)
        sim = SimProcess(FLEET, workdir, seed=args.seed)
        try:
            sim.start()
        except Unavailable as exc:
            log(f"simulator unavailable: {exc.reason}\n{exc.log_tail}")
            return 2
        try:
            for name in args.contenders:
                log(f"{name}: running")
                run = run_loop(run_contender(args, sim, name, workdir))
                if run.reason:
                    unavailable[name] = run.reason
                    continue
                runs[name] = run
                for window in WINDOWS:
                    ok = sorted(s.latency_ms for s in run.samples if s.ok and s.window == window)
                    log(
                        f"  {name} {window}: {len(ok)} ok, p50 {fmt(percentile(ok, 50))} ms, "
                        f"p99 {fmt(percentile(ok, 99))} ms"
                    )
        finally:
            sim.stop()
    summary = {name: summarize(run) for name, run in runs.items()}
    result: dict[str, Any] = {
        "meta": {
            **env_meta(iso),
            "benchmark": NAME,
            "contenders": args.contenders,
            "concurrency": args.concurrency,
            "warmup_s": args.warmup,
            "steady_s": args.steady,
            "slow_s": args.slow,
            "slow_rate": args.slow_rate,
            "quantile": args.quantile,
            "min_delay_ms": args.min_delay_ms,
            "max_delay_ms": args.max_delay_ms,
            "budget_percent": args.budget_percent,
            "fleet": FLEET,
            "seed": args.seed,
            "loadavg_start": host0["loadavg"],
            "wall_s": round(time.monotonic() - started, 1),
        },
        "summary": summary,
        "verdicts": verdicts(summary, args.budget_percent),
        "unavailable": unavailable,
    }
    result["headline"] = dict(result["verdicts"])
    report = render_markdown(result)
    paths = save_report(NAME, stamp, result, report, make_figure(result, runs), Path(args.out_dir))
    print(report)
    log("wrote " + ", ".join(paths.values()))
    return 0 if summary else 1


if __name__ == "__main__":
    sys.exit(main())
