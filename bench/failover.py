"""Failover: how long clients keep feeling a provider's outage, and what errors they see.

Three simulated providers (own process): ``primary`` (10 ms median), ``secondary``
(20 ms) and ``tertiary`` (35 ms), no background faults. A fresh Lasso node per fault kind
routes with ``fastest`` (so the primary carries the traffic) under a closed-loop load with
``?include_meta=headers``, which attributes every answer to a provider and shows its
failed attempts (``retries``). After a warm-up and a steady baseline the primary gets one
fault for ``--fault-s`` seconds, then is healed:

* ``refuse``: ``down`` (listening socket closed, open connections reset);
* ``hang``: requests accepted and never answered;
* ``http500``: every call answered HTTP 500.

A request is *affected* when it was sent before the fault ended, completed after it
started, and either failed or was answered only after a failed attempt (``retries > 0``
in ``X-Lasso-Meta``: it waited for the faulted provider first). Reported per kind:

* **failover time**: from the fault (t=0, when the fault is switched on) to the
  completion of the last affected request: when clients stop seeing its latency;
* **reroute time**: the send time of the last affected request: when the router stopped
  trying the faulted provider for new requests;
* **client-visible errors** from the fault on (target 0), affected requests, worst latency;
* **return time**: after healing, when the primary answers again (``–`` when not within
  ``--after``). The prober probes an open circuit every 2 s (``recovery_probe_interval_ms``)
  and two good answers half-open it early, so a healed primary is back within seconds;
  without those probes it would wait for the breaker's 30 s recovery timeout.

With ``--fault-s`` below the breaker's recovery timeout no half-open probe falls inside
the fault, so every affected request belongs to the initial failover.

Plot: one latency timeline per fault kind, coloured by the answering provider.

    .venv/bin/python -m bench.failover           # 5 s warm-up, 3 s base, 15 s fault, 45 s after
    .venv/bin/python -m bench.failover --quick   # 3 s, 2 s, 6 s, 3 s (~50 s)
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
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
    RESULTS,
    LassoProcess,
    RpcClient,
    SimProcess,
    Unavailable,
    admin_update,
    chain_profile,
    env_meta,
    fmt,
    host_busy_pct,
    host_sample,
    latency_summary,
    log,
    markdown_table,
    pyplot,
    request_for,
    run_loop,
    save_report,
    timestamp,
)

NAME = "failover"
FLEET: dict[str, dict[str, Any]] = {
    "primary": {"latency_ms": 10, "jitter": 0.2},
    "secondary": {"latency_ms": 20, "jitter": 0.25},
    "tertiary": {"latency_ms": 35, "jitter": 0.3},
}
FAULTED = "primary"
#: fault kind -> (behaviour change to inject, change that heals it)
FAULTS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "refuse": ({"down": True}, {"down": False}),
    "hang": ({"hang": True}, {"hang": False}),
    "http500": ({"error_rate": 1.0, "error_mode": "http500"}, {"error_rate": 0.0}),
}
COLORS = {"primary": "tab:blue", "secondary": "tab:orange", "tertiary": "tab:green"}

# ---------------------------------------------------------------------------------------
# Pure helpers
# ---------------------------------------------------------------------------------------


@dataclass(slots=True)
class Sample:
    t_send: float  # seconds relative to the fault start (negative before it)
    t_done: float
    latency_ms: float
    ok: bool
    error: str | None
    provider: str | None
    retries: int | None


def is_affected(s: Sample, fault_end: float) -> bool:
    """Whether a request felt the fault: it completed after the fault started (t=0), was
    sent before it ended, and failed or was answered only after a failed attempt."""
    if s.t_done < 0 or s.t_send >= fault_end:
        return False
    return (not s.ok) or bool(s.retries)


def first_return(samples: Sequence[Sample], faulted: str, heal_at: float) -> float | None:
    """Seconds after healing until ``faulted`` answers a request sent after healing."""
    times = [s.t_done for s in samples if s.t_send >= heal_at and s.ok and s.provider == faulted]
    return min(times) - heal_at if times else None


def summarize_kind(samples: Sequence[Sample], fault_s: float) -> dict[str, Any]:
    """Statistics of one fault kind's run (times relative to the fault start)."""
    base = [s for s in samples if s.t_done < 0]
    during = [s for s in samples if s.t_done >= 0 and s.t_send < fault_s]
    affected = [s for s in samples if is_affected(s, fault_s)]
    base_ok = [s.latency_ms for s in base if s.ok]
    return {
        "baseline": {
            **latency_summary(base_ok),
            "share_faulted": (
                sum(1 for s in base if s.ok and s.provider == FAULTED) / len(base_ok)
                if base_ok
                else None
            ),
        },
        "during": {
            **latency_summary(s.latency_ms for s in during if s.ok),
            "requests": len(during),
            "errors": sum(not s.ok for s in during),
            "error_kinds": dict(Counter(s.error for s in during if not s.ok)),
            "providers": dict(Counter(s.provider for s in during if s.ok)),
        },
        "affected": len(affected),
        "failover_s": max((s.t_done for s in affected), default=None),
        "reroute_s": max((s.t_send for s in affected), default=None),
        "worst_affected_ms": max((s.latency_ms for s in affected), default=None),
        "errors": sum(not s.ok for s in samples if s.t_done >= 0),
        "return_s": first_return(samples, FAULTED, fault_s),
    }


# ---------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------


@dataclass
class KindRun:
    kind: str
    samples: list[Sample] = field(default_factory=list)
    reason: str = ""
    host_busy_pct: float | None = None


async def run_kind(args: argparse.Namespace, sim: SimProcess, kind: str, workdir: Path) -> KindRun:
    run = KindRun(kind)
    client = RpcClient(timeout_s=30.0)
    inject, heal = FAULTS[kind]
    providers = [(pid, sim.url(pid), 10 * (i + 1)) for i, pid in enumerate(FLEET)]
    lasso = LassoProcess(chain_profile(providers, cache=False), workdir, f"lasso-{kind}")
    try:
        for pid, behavior in FLEET.items():
            await admin_update(client, sim, pid, down=False, hang=False, error_rate=0.0, **behavior)
        try:
            await asyncio.to_thread(lasso.start)
        except Unavailable as exc:
            run.reason = exc.reason
            log(f"  {kind}: UNAVAILABLE ({exc.reason})\n{exc.log_tail}")
            return run
        loop = asyncio.get_running_loop()
        url = f"{lasso.base_url}/rpc/{args.strategy}/ethereum?include_meta=headers"
        t_fault = loop.time() + args.warmup + args.baseline
        t_heal = t_fault + args.fault_s
        end = t_heal + args.after
        counter = itertools.count()
        actual: dict[str, float] = {}

        async def worker() -> None:
            while True:
                t0 = loop.time()
                if t0 >= end:
                    return
                k = next(counter)
                _, body = request_for(k)
                out = await client.call(url, body, expect_id=k)
                t1 = loop.time()
                sel = out.meta.get("selected_provider") if out.meta else None
                provider = sel.get("id") if isinstance(sel, dict) else None
                retries = out.meta.get("retries") if out.meta else None
                if t1 >= t_fault - args.baseline:  # warm-up requests are not kept
                    run.samples.append(
                        Sample(
                            t0 - t_fault,
                            t1 - t_fault,
                            out.latency_ms,
                            out.ok,
                            out.error,
                            provider,
                            retries,
                        )
                    )

        async def fault() -> None:
            await asyncio.sleep(max(0.0, t_fault - loop.time()))
            h0 = host_sample()
            actual["inject_lag"] = loop.time() - t_fault
            await admin_update(client, sim, FAULTED, **inject)
            await asyncio.sleep(max(0.0, t_heal - loop.time()))
            await admin_update(client, sim, FAULTED, **heal)
            run.host_busy_pct = host_busy_pct(h0, host_sample())

        await asyncio.gather(fault(), *(worker() for _ in range(args.concurrency)))
        if not lasso.alive():
            run.reason = "lasso died during the run"
    finally:
        await client.close()
        lasso.stop()
    return run


# ---------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------


def render_markdown(result: Mapping[str, Any]) -> str:
    meta = result["meta"]
    lines = [
        f"# Failover — {meta['timestamp']}",
        "",
        "Providers (median ms / sigma): "
        + ", ".join(f"{p} {b['latency_ms']}/{b['jitter']}" for p, b in FLEET.items())
        + f"; strategy `{meta['strategy']}`; closed loop c={meta['concurrency']}; "
        f"warm-up {meta['warmup_s']} s, baseline {meta['baseline_s']} s, fault "
        f"{meta['fault_s']} s on `{FAULTED}`, {meta['after_s']} s after healing; mix "
        f"`eth_blockNumber`/`eth_getBalance`/`eth_call` (attempt timeouts 0.6/1.2/3 s); "
        f"git {meta['git']}; {meta['cpus']} CPUs; load average at start "
        f"{meta['loadavg_start']}.",
        "",
    ]
    rows = []
    for kind in meta["kinds"]:
        s = result["kinds"].get(kind)
        if s is None:
            reason = result["unavailable"].get(kind, "not run")
            rows.append([kind, f"unavailable: {reason}", *["–"] * 8])
            continue
        base, dur = s["baseline"], s["during"]
        rows.append(
            [
                kind,
                fmt(s["failover_s"], 2),
                fmt(s["reroute_s"], 2),
                s["affected"],
                f"**{s['errors']}**",
                fmt(s["worst_affected_ms"], 0),
                f"{fmt(base['p50'])} / {fmt(base['p99'])}",
                f"{fmt(dur['p50'])} / {fmt(dur['p99'])}",
                ", ".join(f"{p} {n}" for p, n in dur["providers"].items()),
                fmt(s["return_s"], 2),
            ]
        )
    lines += markdown_table(
        [
            "fault",
            "failover s",
            "reroute s",
            "affected",
            "client errors",
            "worst ms",
            "baseline p50/p99 ms",
            "fault p50/p99 ms",
            "answered by (during fault)",
            "return s",
        ],
        rows,
        "lrrrrrrrlr",
    )
    lines += [
        "",
        "`failover s`: fault start → completion of the last affected request (clients stop "
        "seeing the fault). `reroute s`: send time of the last affected request (new requests "
        "stop trying the faulted provider). `affected`: requests that failed or were answered "
        "only after a failed attempt. `client errors`: failed calls from the fault start to "
        "the end (target 0). "
        "`return s`: after healing, until the primary answers again (– = not within "
        f"{meta['after_s']} s).",
        "",
    ]
    return "\n".join(lines)


def make_figure(result: Mapping[str, Any], runs: Mapping[str, list[Sample]]) -> Any | None:
    plt = pyplot()
    if plt is None:
        return None
    kinds = [k for k in result["meta"]["kinds"] if runs.get(k)]
    if not kinds:
        return None
    from matplotlib.ticker import FuncFormatter, NullFormatter

    meta = result["meta"]
    fig, axes = plt.subplots(len(kinds), 1, figsize=(12, 3.2 * len(kinds)), squeeze=False)
    for ax, kind in zip(axes[:, 0], kinds, strict=True):
        samples = runs[kind]
        for pid, color in COLORS.items():
            pts = [(s.t_done, s.latency_ms) for s in samples if s.ok and s.provider == pid]
            if pts:
                ax.scatter(*zip(*pts, strict=True), s=4, color=color, label=pid, alpha=0.6)
        retried = [(s.t_done, s.latency_ms) for s in samples if s.ok and s.retries]
        if retried:
            ax.scatter(
                *zip(*retried, strict=True),
                s=18,
                facecolors="none",
                edgecolors="black",
                linewidths=0.6,
                label="after a failed attempt",
            )
        errs = [(s.t_done, s.latency_ms) for s in samples if not s.ok]
        if errs:
            ax.scatter(*zip(*errs, strict=True), s=30, marker="x", color="red", label="error")
        ax.axvspan(0, meta["fault_s"], color="red", alpha=0.08, label=f"{FAULTED} {kind}")
        fo = result["kinds"][kind]["failover_s"]
        if fo is not None:
            ax.axvline(
                fo, color="black", linestyle="--", linewidth=0.8, label=f"failover {fo:.2f} s"
            )
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_ylabel("latency ms (log)")
        ax.set_title(f"{kind}: latency by completion time (t=0: fault)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="upper right", markerscale=2)
    axes[-1, 0].set_xlabel("seconds since the fault")
    fig.tight_layout()
    return fig


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.failover",
        description="Time for clients to stop feeling a provider outage, per fault kind.",
    )
    p.add_argument("--quick", action="store_true", help="3 s warm-up, 2 s baseline, 6 s fault")
    p.add_argument("--kinds", default=",".join(FAULTS), help=f"subset of {','.join(FAULTS)}")
    p.add_argument("--warmup", type=float, default=5.0, help="warm-up, s (not kept)")
    p.add_argument("--baseline", type=float, default=3.0, help="steady state before, s")
    p.add_argument("--fault-s", type=float, default=15.0, help="fault duration, s")
    p.add_argument(
        "--after",
        type=float,
        default=45.0,
        help="observation after healing, s (default 45: past the 30 s breaker recovery)",
    )
    p.add_argument("--concurrency", type=int, default=8, help="closed-loop workers (8)")
    p.add_argument(
        "--strategy",
        default="fastest",
        choices=("fastest", "latency-weighted", "load-balanced", "priority"),
    )
    p.add_argument("--seed", default="lasso-bench")
    p.add_argument("--out-dir", default=str(RESULTS))
    args = p.parse_args(argv)
    if args.quick:
        args.warmup, args.baseline, args.fault_s, args.after = 3.0, 2.0, 6.0, 3.0
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in FAULTS]
    if unknown:
        p.error(f"unknown fault kind(s): {', '.join(unknown)}")
    if args.concurrency < 1 or args.fault_s <= 0:
        p.error("--concurrency must be >= 1 and --fault-s > 0")
    args.kinds = kinds
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    stamp, iso = timestamp()
    host0 = host_sample()
    started = time.monotonic()
    runs: dict[str, list[Sample]] = {}
    kinds: dict[str, Any] = {}
    unavailable: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="lasso-bench-fo-") as tmp:
        workdir = Path(tmp)
        sim = SimProcess(FLEET, workdir, seed=args.seed)
        try:
            sim.start()
        except Unavailable as exc:
            log(f"simulator unavailable: {exc.reason}\n{exc.log_tail}")
            return 2
        try:
            for kind in args.kinds:
                log(f"fault {kind} ...")
                run = run_loop(run_kind(args, sim, kind, workdir))
                if run.reason:
                    unavailable[kind] = run.reason
                    continue
                runs[kind] = run.samples
                s = summarize_kind(run.samples, args.fault_s)
                s["host_busy_pct"] = run.host_busy_pct
                kinds[kind] = s
                log(
                    f"  {kind}: failover {fmt(s['failover_s'], 2)} s, affected {s['affected']}, "
                    f"errors {s['errors']}, return {fmt(s['return_s'], 2)} s"
                )
        finally:
            sim.stop()
    result: dict[str, Any] = {
        "meta": {
            **env_meta(iso),
            "benchmark": NAME,
            "kinds": args.kinds,
            "strategy": args.strategy,
            "concurrency": args.concurrency,
            "warmup_s": args.warmup,
            "baseline_s": args.baseline,
            "fault_s": args.fault_s,
            "after_s": args.after,
            "fleet": FLEET,
            "loadavg_start": host0["loadavg"],
            "wall_s": round(time.monotonic() - started, 1),
        },
        "kinds": kinds,
        "unavailable": unavailable,
        "headline": {
            **{f"{k} failover s": v["failover_s"] for k, v in kinds.items()},
            **{f"{k} client errors": v["errors"] for k, v in kinds.items()},
        },
    }
    report = render_markdown(result)
    paths = save_report(NAME, stamp, result, report, make_figure(result, runs), Path(args.out_dir))
    print(report)
    log("wrote " + ", ".join(paths.values()))
    return 0 if kinds else 1


if __name__ == "__main__":
    sys.exit(main())
