"""Abuse: each known attack on a Lasso node while well-behaved clients keep calling.

One simulator process serves a healthy provider ``good`` and one provider per upstream
attack (``hostile_<attack>``), healthy until its attack switches it to a hostile mode
through the admin API (``lasso.sim.hostile``). One ``lasso serve`` process sits in front,
started with a soft open-file limit of ``--nofile`` (1,024, as in the original finding;
Lasso raises it to the hard limit); ``slowloris_over_cap`` gets a node of its own whose
connection cap (800) is below the attacker's 1,100 sockets.
For each attack, in turn:

* the attacker runs in its own process (``bench/abuse_attacks.py``) for its window;
* meanwhile 4 keep-alive clients and 4 clients opening a fresh connection per call each
  send ``eth_blockNumber`` pinned to ``good`` every 25 ms, and check every answer (HTTP
  200, JSON-RPC 2.0, a result, their own id);
* the proxy's RSS is sampled every 50 ms.

Reported per attack: inputs tried, the other clients' p99 (and worst) latency and failed
calls during the window, the proxy's peak RSS (and its rise over the RSS when the attack
began), and the outcome as the attacker saw it. Targets (issue 11): no attack raises the
others' p99 above 100 ms or the proxy's RSS by more than 150 MB, and every request gets
an answer with its id. A ``none`` row gives the same clients without an attack.

    .venv/bin/python -m bench.abuse               # every attack (~4 min)
    .venv/bin/python -m bench.abuse --quick       # shorter windows, 300 slowloris sockets
    .venv/bin/python -m bench.abuse --attacks slowloris,ws_ping_flood
    .venv/bin/python -m bench.abuse --lasso-cmd \
        'env PYTHONPATH=/tmp/main/src {python} -m lasso serve --profiles {profiles} --port {port}'
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
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
    LASSO,
    RESULTS,
    ROOT,
    SimProcess,
    Unavailable,
    _wait_http,  # noqa: E402
    env_meta,
    fmt,
    free_port,
    log,
    markdown_table,
    percentile,
    run_loop,
    save_report,
    timestamp,
    tree_rss_kb,
)
from bench.overhead import spawn  # noqa: E402

P99_TARGET_MS = 100.0
RSS_TARGET_MB = 150.0


@dataclass(frozen=True)
class Attack:
    """One row of the report: which attacker, for how long, with which hostile mode."""

    name: str
    attacker: str
    seconds: float
    quick_seconds: float
    hostile: Mapping[str, Any] | None = None
    args: tuple[str, ...] = ()
    node_args: tuple[str, ...] = ()  # set: a node of its own, started with these flags


ATTACKS: tuple[Attack, ...] = (
    Attack("slowloris", "slowloris", 25, 12),
    # 1,100 tricklers against a cap of 800 (what a hard open-file limit of ~1,070 gives),
    # one byte every 0.5 s: eviction, not the head deadline, has to make room.
    Attack(
        "slowloris_over_cap",
        "slowloris",
        15,
        8,
        args=("--interval", "0.5"),
        node_args=("--limit", "max_connections=800"),
    ),
    Attack("huge_header", "huge_header", 8, 4),
    Attack("header_repetition", "header_repetition", 8, 4),
    Attack("pipelining_flood", "pipelining_flood", 8, 4),
    Attack("ws_ping_flood", "ws_ping_flood", 8, 4),
    Attack("huge_body", "huge_body", 8, 4),
    Attack(
        "oversize_upstream",
        "upstream",
        12,
        6,
        {"hostile": "huge", "huge_bytes": 160 * 1024 * 1024},
        ("--concurrency", "1"),
    ),
    Attack(
        "large_upstream",
        "upstream",
        12,
        6,
        {"hostile": "huge", "huge_bytes": 100_000_000},
        ("--concurrency", "1"),
    ),
    Attack("slow_upstream", "upstream", 8, 4, {"hostile": "slow_drip"}, ("--concurrency", "50")),
    Attack(
        "truncated_upstream", "upstream", 8, 4, {"hostile": "truncated"}, ("--concurrency", "8")
    ),
    Attack("wrong_id_upstream", "upstream", 8, 4, {"hostile": "wrong_id"}, ("--concurrency", "8")),
    Attack(
        "id_in_result_upstream",
        "upstream",
        8,
        4,
        {"hostile": "id_in_result"},
        ("--concurrency", "8"),
    ),
    Attack(
        "absurd_retry_after_upstream",
        "upstream",
        8,
        4,
        {"hostile": "absurd_retry_after"},
        ("--concurrency", "8"),
    ),
    Attack("html_upstream", "upstream", 8, 4, {"hostile": "html_200"}, ("--concurrency", "8")),
)


@dataclass
class Window:
    """What the well-behaved clients and the RSS sampler saw during one attack."""

    attack: str
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    direct_ms: list[float] = field(default_factory=list)
    rss_start_kb: int = 0
    rss_peak_kb: int = 0
    attacker: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.latencies_ms)
        p99 = percentile(lat, 99, presorted=True)
        rise = (self.rss_peak_kb - self.rss_start_kb) / 1024
        answered_ok = self.attacker.get("bad", 0) == 0
        return {
            "attack": self.attack,
            "seconds": round(self.seconds, 1),
            "inputs": self.attacker.get("inputs"),
            "unit": self.attacker.get("unit", ""),
            "outcome": self.attacker.get("outcome", ""),
            "calls": len(lat),
            "p50_ms": percentile(lat, 50, presorted=True),
            "p99_ms": p99,
            "max_ms": lat[-1] if lat else None,
            "direct_p99_ms": percentile(sorted(self.direct_ms), 99, presorted=True),
            "failed": len(self.failures),
            "failures": sorted(set(self.failures))[:5],
            "rss_start_mb": self.rss_start_kb / 1024,
            "rss_peak_mb": self.rss_peak_kb / 1024,
            "rss_rise_mb": rise,
            "meets_targets": verdict(p99, rise, len(self.failures), answered_ok),
        }


def verdict(p99_ms: float | None, rss_rise_mb: float, failed: int, attacker_ok: bool) -> bool:
    """The issue's targets: others' p99 <= 100 ms, RSS rise <= 150 MB, no failed call,
    every attack request answered with its id."""
    return (
        p99_ms is not None
        and p99_ms <= P99_TARGET_MS
        and rss_rise_mb <= RSS_TARGET_MB
        and failed == 0
        and attacker_ok
    )


def profile_text(sim: SimProcess) -> str:
    lines = ["---", "name: Abuse", "slug: public", "---", "chains:", "  ethereum:"]
    lines += ["    chain_id: 1", "    block_time_ms: 2000", "    monitoring:"]
    lines += ["      probe_interval_ms: 600000"]  # the attacks alone hit the hostile providers
    lines.append("    providers:")
    for pid in sim.ports:
        lines += [f"      - id: {pid}", f"        url: {sim.url(pid)}"]
    return "\n".join(lines) + "\n"


class Node:
    """``lasso serve`` under an open-file limit (the soft one, or both with ``hard``), from
    a command template."""

    def __init__(
        self,
        template: str,
        profile: str,
        workdir: Path,
        nofile: int,
        hard: bool,
        extra: Sequence[str] = (),
        name: str = "lasso",
    ) -> None:
        self.port = free_port()
        pdir = workdir / "profiles"
        pdir.mkdir(parents=True, exist_ok=True)
        (pdir / "public.yml").write_text(profile)
        cmd = template.format(
            root=ROOT, python=sys.executable, profiles=pdir, port=self.port, lasso=LASSO
        )
        limit = f"ulimit -n {nofile}" if hard else f"ulimit -S -n {nofile}"
        argv = ["sh", "-c", f'{limit} && exec "$@"', "lasso", *shlex.split(cmd), *extra]
        self.proc = spawn(name, argv, workdir)
        _wait_http(self.proc, self.port, "/api/health", 30)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.popen.poll() is None

    def stop(self) -> None:
        self.proc.stop()


async def good_clients(port: int, direct_url: str, stop: asyncio.Event, window: Window) -> None:
    """4 keep-alive clients and 4 that connect per call, each calling every 25 ms, through
    the proxy; and 2 keep-alive clients calling the provider directly (the reference:
    what the machine itself does to latency meanwhile)."""
    import aiohttp

    url = f"http://127.0.0.1:{port}/rpc/provider/good/ethereum"
    timeout = aiohttp.ClientTimeout(total=30)
    seq = iter(range(10**9))

    async def client(fresh: bool, target: str, sink: list[float], failures: list[str]) -> None:
        connector = aiohttp.TCPConnector(force_close=fresh, limit=1)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            while not stop.is_set():
                rid = next(seq)
                body = b'{"jsonrpc":"2.0","id":%d,"method":"eth_blockNumber","params":[]}' % rid
                t0 = time.perf_counter()
                try:
                    async with session.post(target, data=body) as resp:
                        raw = await resp.read()
                        status = resp.status
                except Exception as exc:  # noqa: BLE001 - a failure to report
                    failures.append(type(exc).__name__)
                    sink.append((time.perf_counter() - t0) * 1000)
                    continue
                ms = (time.perf_counter() - t0) * 1000
                sink.append(ms)
                try:
                    doc = json.loads(raw)
                    ok = status == 200 and doc.get("id") == rid and "result" in doc
                except ValueError:
                    ok = False
                if not ok:
                    failures.append(f"HTTP {status}: {raw[:80]!r}")
                await asyncio.sleep(max(0.0, 0.025 - ms / 1000))

    lat, fails = window.latencies_ms, window.failures
    ref: list[str] = []
    await asyncio.gather(
        *(client(fresh, url, lat, fails) for fresh in (False, True) for _ in range(4)),
        *(client(False, direct_url, window.direct_ms, ref) for _ in range(2)),
    )


async def sample_rss(pid: int, stop: asyncio.Event, window: Window) -> None:
    while not stop.is_set():
        window.rss_peak_kb = max(window.rss_peak_kb, tree_rss_kb(pid))
        await asyncio.sleep(0.05)


async def start_attacker(
    args: argparse.Namespace, attack: Attack, port: int, seconds: float
) -> asyncio.subprocess.Process:
    """Spawn the attacker and wait until it is ready to attack."""
    extra = list(attack.args)
    if attack.attacker == "slowloris":  # the attack's own --interval (later) wins
        extra = ["--conns", str(args.slowloris_conns), "--interval", str(args.interval), *extra]
    if attack.hostile:
        extra += ["--provider", f"hostile_{attack.name}"]
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.abuse_attacks",
        attack.attacker,
        str(port),
        str(seconds),
        *extra,
        cwd=ROOT,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 60)
    if line.strip() != b"ready":
        raise RuntimeError(f"attacker {attack.attacker} did not start: {line!r}")
    return proc


async def run_window(
    args: argparse.Namespace, node: Node, sim: SimProcess, attack: Attack | None
) -> Window:
    name = attack.name if attack else "none"
    window = Window(name)
    seconds = (attack.quick_seconds if args.quick else attack.seconds) if attack else args.baseline
    if args.duration is not None and attack is not None:
        seconds = args.duration
    import aiohttp

    async with aiohttp.ClientSession() as admin:
        proc = None
        if attack is not None:
            proc = await start_attacker(args, attack, node.port, seconds)
        if attack and attack.hostile:
            url = f"{sim.admin_url}/providers/hostile_{attack.name}"
            async with admin.post(url, data=json.dumps(dict(attack.hostile))) as r:
                if r.status != 200:
                    raise RuntimeError(f"sim admin refused {attack.hostile}: {await r.text()}")
        stop = asyncio.Event()
        window.rss_start_kb = window.rss_peak_kb = tree_rss_kb(node.pid)
        sampler = asyncio.create_task(sample_rss(node.pid, stop, window))
        clients = asyncio.create_task(good_clients(node.port, sim.url("good"), stop, window))
        t0 = time.monotonic()
        if proc is None:
            await asyncio.sleep(seconds)
        else:
            out, _ = await proc.communicate(b"go\n")
            try:
                window.attacker = json.loads(out.decode().strip().splitlines()[-1])
            except (ValueError, IndexError):
                window.attacker = {"outcome": f"attacker failed (exit {proc.returncode})", "bad": 1}
        window.seconds = time.monotonic() - t0
        stop.set()
        await clients
        await sampler
        if attack and attack.hostile:
            url = f"{sim.admin_url}/providers/hostile_{attack.name}"
            async with admin.post(url, data=json.dumps({"hostile": None})) as r:
                await r.read()
    return window


def report(rows: Sequence[Mapping[str, Any]], meta: Mapping[str, Any]) -> str:
    table = markdown_table(
        [
            "attack",
            "inputs tried",
            "others' p99 / max ms",
            "direct p99 ms",
            "others failed",
            "proxy peak RSS MB (rise)",
            "outcome",
            "targets",
        ],
        [
            [
                r["attack"],
                f"{r['inputs']:,} {r['unit']}" if r["inputs"] is not None else "–",
                f"{fmt(r['p99_ms'])} / {fmt(r['max_ms'])}",
                fmt(r["direct_p99_ms"]),
                f"{r['failed']}/{r['calls']}",
                f"{fmt(r['rss_peak_mb'])} ({fmt(r['rss_rise_mb'], signed=True)})",
                r["outcome"] or "–",
                "met" if r["meets_targets"] else "**missed**",
            ]
            for r in rows
        ],
    )
    lines = [
        "# Abuse: attacks against one Lasso node",
        "",
        f"{meta['timestamp']}, {meta['cpus']} CPUs, Python {meta['python']}, git {meta['git']};"
        f" proxy open-file limit at start {meta['nofile']}, 8 well-behaved clients (4 keep-alive,"
        " 4 connecting per call) each calling every 25 ms.",
        " *direct p99*: clients calling the provider itself at the same time, without the"
        " proxy: the machine's own latency noise (2 shared cores).",
        "",
        *table,
        "",
        f"Targets: others' p99 <= {P99_TARGET_MS:.0f} ms, RSS rise <= {RSS_TARGET_MB:.0f} MB,"
        " no failed call, every attack request answered with its id.",
        f"Proxy log: {meta['log_problems']} error lines (tracebacks, unhandled errors).",
    ]
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Attacks against a Lasso node while well-behaved clients keep calling."
    )
    p.add_argument("--quick", action="store_true", help="shorter windows, 300 slowloris sockets")
    p.add_argument("--attacks", default=",".join(a.name for a in ATTACKS))
    p.add_argument("--duration", type=float, default=None, help="override every attack window")
    p.add_argument("--baseline", type=float, default=5.0, help="seconds without an attack")
    p.add_argument("--slowloris-conns", type=int, default=None, help="default 1100 (quick: 300)")
    p.add_argument("--interval", type=float, default=10.0, help="slowloris seconds per byte")
    p.add_argument(
        "--nofile", type=int, default=1024, help="the proxy's soft open-file limit at start"
    )
    p.add_argument(
        "--nofile-hard",
        action="store_true",
        help="make --nofile the hard limit too (the proxy cannot raise it)",
    )
    p.add_argument(
        "--lasso-cmd",
        default="{lasso} serve --profiles {profiles} --port {port} --log-level warning",
        help="command template ({root} {python} {lasso} {profiles} {port})",
    )
    p.add_argument(
        "--fresh-node",
        action="store_true",
        help="a new proxy for every attack (default: one node takes them all, in turn)",
    )
    p.add_argument("--out-dir", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    if args.slowloris_conns is None:
        args.slowloris_conns = 300 if args.quick else 1100
    known = {a.name for a in ATTACKS}
    chosen = [a.strip() for a in args.attacks.split(",") if a.strip()]
    unknown = sorted(set(chosen) - known)
    if unknown:
        p.error(f"unknown attack(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    args.chosen = [a for a in ATTACKS if a.name in chosen]
    return args


async def run(args: argparse.Namespace, workdir: Path) -> list[dict[str, Any]]:
    providers: dict[str, dict[str, Any]] = {"good": {}}
    for attack in args.chosen:
        if attack.hostile:
            providers[f"hostile_{attack.name}"] = {}
    sim = SimProcess(providers, workdir)
    sim.start()
    node: Node | None = None
    rows: list[dict[str, Any]] = []
    try:
        profile = profile_text(sim)
        node = Node(args.lasso_cmd, profile, workdir, args.nofile, args.nofile_hard)
        log(f"lasso pid {node.pid} on port {node.port}; warming up")
        await run_window(args, node, sim, None)  # warm-up, not reported
        for attack in [None, *args.chosen]:
            log(f"-- {attack.name if attack else 'baseline'}")
            target = node
            if attack is not None and (attack.node_args or args.fresh_node):  # its own node
                target = Node(
                    args.lasso_cmd,
                    profile,
                    workdir,
                    args.nofile,
                    args.nofile_hard,
                    attack.node_args,
                    f"lasso-{attack.name}",
                )
                await run_window(args, target, sim, None)  # its warm-up
            try:
                window = await run_window(args, target, sim, attack)
            finally:
                if target is not node:
                    target.stop()
            rows.append(window.summary())
            log(f"   {json.dumps(rows[-1])}")
            if not node.alive():
                log("the proxy died: stopping")
                break
            await asyncio.sleep(1.0)  # let the node settle
    finally:
        if node is not None:
            node.stop()
        sim.stop()
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    stamp, iso = timestamp()
    with tempfile.TemporaryDirectory(prefix="lasso-abuse-") as tmp:
        workdir = Path(tmp)
        try:
            rows = run_loop(run(args, workdir))
        except Unavailable as exc:
            log(f"unavailable: {exc}")
            return 1
        text = "\n".join(
            path.read_text(errors="replace") for path in sorted(workdir.glob("lasso*.log"))
        )
    problems = [
        line for line in text.splitlines() if "Traceback" in line or '"level": "error"' in line
    ]
    nofile = f"{args.nofile} (soft and hard)" if args.nofile_hard else f"{args.nofile} (soft)"
    meta = {**env_meta(iso), "nofile": nofile, "log_problems": len(problems)}
    markdown = report(rows, meta)
    result = {"meta": meta, "rows": rows, "log_problems": problems[:20]}
    paths = save_report("abuse", stamp, result, markdown, None, args.out_dir)
    print(markdown)
    log(f"wrote {paths['md']}")
    return 0 if rows and all(r["meets_targets"] for r in rows) else 2


if __name__ == "__main__":
    raise SystemExit(main())
