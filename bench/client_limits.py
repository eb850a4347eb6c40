"""How exact is a client limit shared through Redis? Two nodes, one key, driven hard.

```sh
.venv/bin/python -m bench.client_limits            # 60 s shared, 20 s Redis down, 20 s back
.venv/bin/python -m bench.client_limits --quick    # 12 s, 6 s, 6 s
```

Starts a ``redis-server`` (no persistence, loopback), the provider simulator with one
provider, and ``--nodes`` (2) ``lasso serve`` processes with ``LASSO_REDIS_URL`` set and a
profile whose key ``bench`` is limited to ``--rps`` (100) with ``--burst`` (50). The load
driver (aiohttp, ``--loops`` request loops per node) sends ``eth_blockNumber`` with the key
to every node as fast as the answers come back, far above the limit, through three phases:

1. **shared** (``--duration`` s): one bucket in Redis for every node; expected admitted
   ``rps * t + burst``, the claim being within ±10 %.
2. **redis down** (``--down`` s): the Redis process is stopped; each node enforces its
   share ``1 / nodes`` of the limit on its own (a fresh local bucket holding its share of
   the burst): expected ``rps * t + burst`` in total again, split evenly.
3. **redis back** (``--after`` s): Redis restarts empty; the nodes return to the shared
   bucket (a new, full one): expected ``rps * t + burst``.

Any answer other than 200 or 429 is an error and reported. The report gives admitted vs
expected per phase and per node, and a plot of admitted requests per second.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # pragma: no cover - run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp  # noqa: E402

from bench.common import (  # noqa: E402
    RESULTS,
    LassoProcess,
    SimProcess,
    Unavailable,
    env_meta,
    fmt,
    free_port,
    log,
    markdown_table,
    pyplot,
    run_loop,
    save_report,
    timestamp,
)

KEY = "lasso_bench-client-limits-key-000000"
BODY = b'{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber","params":[]}'
PHASES = ("shared", "redis down", "redis back")


def expected_admitted(rps: float, burst: float, seconds: float) -> float:
    """What one token bucket admits under overload in ``seconds``: its burst, then its rate."""
    return rps * seconds + burst


def deviation(admitted: float, expected: float) -> float:
    """Relative error of ``admitted`` against ``expected``."""
    return (admitted - expected) / expected if expected else 0.0


def profile_text(sim_url: str, rps: int, burst: int) -> str:
    return f"""---
name: Bench limits
slug: public
auth:
  keys:
    - id: bench
      key: {KEY}
      rps_limit: {rps}
      burst_limit: {burst}
---
chains:
  ethereum:
    chain_id: 1
    block_time_ms: 2000
    providers:
      - id: alpha
        url: {sim_url}
"""


class Redis:
    """A throw-away ``redis-server`` that can be stopped and started on the same port."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.binary = shutil.which("redis-server") or "/usr/bin/redis-server"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        argv = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        argv += ["--appendonly", "no", "--dir", str(self.workdir)]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)  # process start-up poll
        raise Unavailable("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(5)
        self.proc = None


class Tally:
    """Answers per node and per second since the start of the run."""

    def __init__(self, nodes: int) -> None:
        self.t0 = time.monotonic()
        self.admitted = [0] * nodes
        self.limited = [0] * nodes
        self.errors = [0] * nodes
        self.per_second: dict[int, int] = {}

    def snapshot(self) -> tuple[list[int], list[int], list[int]]:
        return list(self.admitted), list(self.limited), list(self.errors)


async def load(urls: list[str], tally: Tally, stop: asyncio.Event, loops: int) -> None:
    headers = {"X-Lasso-Api-Key": KEY, "Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=0)

    async def one(session: aiohttp.ClientSession, i: int, url: str) -> None:
        while not stop.is_set():
            try:
                async with session.post(url, data=BODY, headers=headers) as r:
                    await r.read()
                    status = r.status
            except (aiohttp.ClientError, OSError):
                status = 0
            if status == 200:
                tally.admitted[i] += 1
                sec = int(time.monotonic() - tally.t0)
                tally.per_second[sec] = tally.per_second.get(sec, 0) + 1
            elif status == 429:
                tally.limited[i] += 1
                await asyncio.sleep(0.002)  # pacing after a refusal (keeps the CPU for the nodes)
            else:
                tally.errors[i] += 1
                await asyncio.sleep(0.01)

    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(
            *(one(session, i, url) for i, url in enumerate(urls) for _ in range(loops))
        )


async def watch_modes(
    bases: list[str], tally: Tally, stop: asyncio.Event, changes: list[dict[str, Any]]
) -> None:
    """Record when each node's limiter changes mode (``redis`` / ``fallback``)."""
    last: dict[int, str] = {}
    async with aiohttp.ClientSession() as session:
        while not stop.is_set():
            for i, base in enumerate(bases):
                try:
                    async with session.get(base + "/api/clients") as r:
                        mode = (await r.json())["limiter"]["mode"]
                except (aiohttp.ClientError, OSError, KeyError, ValueError):
                    continue
                if last.get(i) != mode:
                    last[i] = mode
                    t_s = round(time.monotonic() - tally.t0, 2)
                    changes.append({"t_s": t_s, "node": i, "mode": mode})
            await asyncio.sleep(0.25)  # the sampling interval


async def run(args: argparse.Namespace, redis: Redis, urls: list[str]) -> dict[str, Any]:
    tally = Tally(len(urls))
    stop = asyncio.Event()
    driver = asyncio.create_task(load(urls, tally, stop, args.loops))
    changes: list[dict[str, Any]] = []
    bases = [u.rsplit("/rpc/", 1)[0] for u in urls]
    watcher = asyncio.create_task(watch_modes(bases, tally, stop, changes))
    phases: list[dict[str, Any]] = []
    plan = [("shared", args.duration), ("redis down", args.down), ("redis back", args.after)]
    for name, seconds in plan:
        if name == "redis down":
            redis.stop()
        elif name == "redis back":
            redis.start()
        before, t_start = tally.snapshot(), time.monotonic()
        await asyncio.sleep(seconds)  # the phase runs for this long under load
        after, t_end = tally.snapshot(), time.monotonic()
        elapsed = t_end - t_start
        admitted = [a - b for a, b in zip(after[0], before[0], strict=True)]
        expected = expected_admitted(args.rps, args.burst, elapsed)
        phases.append(
            {
                "phase": name,
                "seconds": round(elapsed, 3),
                "start_s": round(t_start - tally.t0, 3),
                "admitted": sum(admitted),
                "admitted_per_node": admitted,
                "limited": sum(a - b for a, b in zip(after[1], before[1], strict=True)),
                "errors": sum(a - b for a, b in zip(after[2], before[2], strict=True)),
                "expected": round(expected, 1),
                "deviation": round(deviation(sum(admitted), expected), 4),
            }
        )
        log(
            f"{name}: admitted {sum(admitted)} ({admitted}) vs expected {expected:.0f}"
            f" ({phases[-1]['deviation'] * 100:+.1f} %)"
        )
    stop.set()
    await driver
    await watcher
    return {
        "phases": phases,
        "mode_changes": changes,
        "per_second": sorted(tally.per_second.items()),
    }


def render(result: dict[str, Any]) -> str:
    meta = result["meta"]
    rows = [
        [
            p["phase"],
            fmt(p["seconds"], 1),
            str(p["admitted"]),
            " / ".join(str(n) for n in p["admitted_per_node"]),
            fmt(p["expected"], 0),
            fmt(p["deviation"] * 100, 1, signed=True) + " %",
            str(p["limited"]),
            str(p["errors"]),
        ]
        for p in result["phases"]
    ]
    table = markdown_table(
        [
            "phase",
            "s",
            "admitted",
            "per node",
            "expected (rps·t + burst)",
            "deviation",
            "429s",
            "errors",
        ],
        rows,
    )
    table_text = "\n".join(table)
    changes = ", ".join(
        f"node {c['node']} {c['mode']} at {c['t_s']} s" for c in result["mode_changes"]
    )
    return (
        f"# Shared client limit — {meta['timestamp']}\n\n"
        f"{meta['nodes']} nodes, one key at {meta['rps']} rps with a burst of {meta['burst']}, "
        f"{meta['loops']} request loops per node; {meta['cpus']} CPU(s); git {meta['git']}.\n\n"
        f"{table_text}\n\n"
        "While Redis is down each node enforces its share (1/nodes) of the limit alone; "
        "after Redis returns (empty) the nodes share a new, full bucket.\n\n"
        f"Limiter mode changes (t = seconds since the load started): {changes}.\n"
    )


def plot(result: dict[str, Any]) -> Any | None:
    plt = pyplot()
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(9, 3.5))
    xs = [s for s, _ in result["per_second"]]
    ys = [n for _, n in result["per_second"]]
    ax.step(xs, ys, where="post", label="admitted / s (all nodes)")
    ax.axhline(result["meta"]["rps"], color="grey", linestyle="--", label="limit")
    for p in result["phases"]:
        if p["phase"] == "redis down":
            ax.axvspan(p["start_s"], p["start_s"] + p["seconds"], color="red", alpha=0.1)
    ax.set_xlabel("seconds")
    ax.set_ylabel("admitted requests per second")
    ax.legend(loc="upper right")
    return fig


def wait_registered(nodes: list[LassoProcess], timeout: float = 15.0) -> None:
    """Until every node's ``/api/clients`` counts all nodes as rate-limit participants."""
    import json
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        counts = []
        for node in nodes:
            with urllib.request.urlopen(node.base_url + "/api/clients", timeout=2) as r:
                counts.append(json.loads(r.read())["limiter"].get("participants"))
        if all(c == len(nodes) for c in counts):
            return
        time.sleep(0.2)  # start-up poll
    raise Unavailable(f"nodes did not all register with Redis: {counts}")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.client_limits", description=__doc__)
    p.add_argument("--nodes", type=int, default=2)
    p.add_argument("--rps", type=int, default=100)
    p.add_argument("--burst", type=int, default=50)
    p.add_argument("--duration", type=float, default=60.0, help="shared phase, seconds")
    p.add_argument("--down", type=float, default=20.0, help="Redis-down phase, seconds")
    p.add_argument("--after", type=float, default=20.0, help="after Redis returns, seconds")
    p.add_argument("--loops", type=int, default=16, help="request loops per node")
    p.add_argument("--quick", action="store_true", help="12 s, 6 s, 6 s")
    p.add_argument("--out-dir", default=str(RESULTS))
    args = p.parse_args(argv)
    if args.quick:
        args.duration, args.down, args.after = 12.0, 6.0, 6.0
    if args.nodes < 1 or args.rps < 1 or args.burst < 1:
        p.error("--nodes, --rps and --burst must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    stamp, stamp_iso = timestamp()
    with tempfile.TemporaryDirectory(prefix="lasso-limits-") as tmp:
        workdir = Path(tmp)
        redis = Redis(workdir)
        sim = SimProcess({"alpha": {"latency_ms": 1}}, workdir)
        nodes: list[LassoProcess] = []
        try:
            redis.start()
            sim.start()
            os.environ["LASSO_REDIS_URL"] = redis.url  # inherited by the nodes started below
            text = profile_text(sim.url("alpha"), args.rps, args.burst)
            for i in range(args.nodes):
                node = LassoProcess(text, workdir, name=f"lasso-{i}")
                node.start()
                nodes.append(node)
            wait_registered(nodes)
            urls = [f"{n.base_url}/rpc/ethereum" for n in nodes]
            result = run_loop(run(args, redis, urls))
        except Unavailable as exc:
            log(f"unavailable: {exc.reason}\n{exc.log_tail}")
            return 2
        finally:
            for node in nodes:
                node.stop()
            sim.stop()
            redis.stop()
    result["meta"] = {
        **env_meta(stamp_iso),
        "nodes": args.nodes,
        "rps": args.rps,
        "burst": args.burst,
        "loops": args.loops,
    }
    report = render(result)
    paths = save_report("client_limits", stamp, result, report, plot(result), Path(args.out_dir))
    print(report)
    log(f"wrote {', '.join(paths.values())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
