"""eth_getLogs over a wide range: split across limited providers against one unsplit call.

A simulated fleet (own process, ``lasso sim``; the chain keeps 20,000 blocks built, so no
contender pays for building them) of three providers with the same latency:
``limit100`` (``max_block_range`` 100), ``limit1000`` (1,000) and ``nolimit``. One Lasso
node serves three profiles over them: ``public`` (``limit100`` and ``limit1000``, their
limits in the profile), ``learned`` (the same two, limits not configured: Lasso learns
them from the providers' errors on the first request) and ``direct`` (``nolimit``). Each
round asks every contender for the logs of the same ``--blocks`` blocks (default 10,000)
ending ``--depth`` blocks below the head:

* ``direct-unsplit``: one call straight to ``nolimit``, no proxy: the reference;
* ``lasso-unsplit``: through Lasso to ``nolimit`` (``/rpc/profile/direct/ethereum``): one
  request, the answer's bytes passed through;
* ``lasso-limited``: ``/rpc/ethereum``: split to the largest limit among the providers
  (1,000-block chunks, ``routing.get_logs.max_parallel`` 4 at a time) on ``limit1000``;
* ``lasso-100``: pinned to ``limit100``: 100-block chunks on it;
* ``lasso-learned``: ``/rpc/profile/learned/ethereum``; its first round (reactive splits, the limits
  learned) is reported apart as ``lasso-learned-cold``.

Every answer is checked against the reference: the same logs, in block order (block
number, then log index, ascending). Reported per contender: wall time (median and best of
the rounds), chunks (``include_meta``), the proxy's CPU per request.

    .venv/bin/python -m bench.get_logs               # 10,000 blocks, 5 rounds, 20 ms latency
    .venv/bin/python -m bench.get_logs --quick       # 2 rounds
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
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
    cpu_delta,
    env_meta,
    fmt,
    log,
    markdown_table,
    run_loop,
    save_report,
    timestamp,
    tree_cpu_ticks,
)

NAME = "get_logs"
CONTENDERS = ("direct-unsplit", "lasso-unsplit", "lasso-limited", "lasso-100", "lasso-learned")
LIMITS = {"limit100": 100, "limit1000": 1000}
CACHE_BLOCKS = 20_000

# ---------------------------------------------------------------------------------------
# Pure helpers (tested in tests/test_bench_suite.py)
# ---------------------------------------------------------------------------------------


def fleet(latency_ms: float) -> dict[str, dict[str, Any]]:
    """The simulated providers: ``lasso.sim.Behavior`` fields by id."""
    out: dict[str, dict[str, Any]] = {
        pid: {"latency_ms": latency_ms, "max_block_range": n} for pid, n in LIMITS.items()
    }
    out["nolimit"] = {"latency_ms": latency_ms}
    return out


def profiles(urls: Mapping[str, str]) -> dict[str, str]:
    """The node's profiles by slug, one chain ``ethereum`` each: ``public`` (``limit100``
    and ``limit1000``, their limits configured), ``learned`` (the same, not configured:
    Lasso learns them from the providers' errors) and ``direct`` (``nolimit``); no
    response cache."""
    out = {}
    for slug, pids, configured in (
        ("public", tuple(LIMITS), True),
        ("learned", tuple(LIMITS), False),
        ("direct", ("nolimit",), False),
    ):
        lines = ["---", f"name: {slug}", f"slug: {slug}", "---", "chains:"]
        # The response cache is off: every round measures the split, never a stored answer.
        lines += ["  ethereum:", "    chain_id: 1", "    cache: {enabled: false}", "    providers:"]
        for pid in pids:
            lines += [f"      - id: {pid}", f"        url: {urls[pid]}"]
            if configured:
                limit = LIMITS[pid]
                lines.append(f"        capabilities: {{limits: {{max_block_range: {limit}}}}}")
        out[slug] = "\n".join(lines) + "\n"
    return out


def in_block_order(logs: Sequence[Mapping[str, Any]]) -> bool:
    """Whether ``logs`` are sorted by (block number, log index), as a node answers."""
    keys = [(int(x["blockNumber"], 16), int(x["logIndex"], 16)) for x in logs]
    return all(a <= b for a, b in zip(keys, keys[1:], strict=False))


def summarize(times_ms: Sequence[float]) -> dict[str, float | None]:
    """Median and best of the rounds' wall times, in ms."""
    if not times_ms:
        return {"median_ms": None, "best_ms": None}
    return {"median_ms": statistics.median(times_ms), "best_ms": min(times_ms)}


# ---------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------


def _request(lo: int, hi: int) -> bytes:
    flt = {"fromBlock": hex(lo), "toBlock": hex(hi)}
    return json.dumps(
        {"jsonrpc": "2.0", "id": 1, "method": "eth_getLogs", "params": [flt]}
    ).encode()


async def _head(client: RpcClient, url: str) -> int:
    body = b'{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber","params":[]}'
    out = await client.call(url, body)
    return int(json.loads(out.body)["result"], 16)


async def measure(args: argparse.Namespace, sim: SimProcess, node: LassoProcess) -> dict[str, Any]:
    client = RpcClient(timeout_s=120.0)
    base = node.base_url
    urls = {
        "direct-unsplit": sim.url("nolimit"),
        "lasso-unsplit": f"{base}/rpc/profile/direct/ethereum?include_meta=headers",
        "lasso-limited": f"{base}/rpc/ethereum?include_meta=headers",
        "lasso-100": f"{base}/rpc/provider/limit100/ethereum?include_meta=headers",
        "lasso-learned": f"{base}/rpc/profile/learned/ethereum?include_meta=headers",
    }
    times: dict[str, list[float]] = {c: [] for c in [*CONTENDERS, "lasso-learned-cold"]}
    cpu: dict[str, list[float]] = {c: [] for c in times}
    chunks: dict[str, int | None] = {}
    errors: list[str] = []
    try:
        hi = await _head(client, sim.url("nolimit")) - args.depth
        lo = hi - args.blocks + 1
        body = _request(lo, hi)
        log(f"warming the simulator's blocks {lo}..{hi}")
        reference = await client.call(urls["direct-unsplit"], body)
        if not reference.ok:
            raise RuntimeError(f"reference call failed: {reference.error}")
        truth = json.loads(reference.body)["result"]
        log(f"{len(truth)} logs, {len(reference.body) / 1e6:.1f} MB")
        for rnd in range(args.rounds):
            order = list(CONTENDERS[rnd % len(CONTENDERS) :] + CONTENDERS[: rnd % len(CONTENDERS)])
            for name in order:
                label = "lasso-learned-cold" if name == "lasso-learned" and rnd == 0 else name
                before = tree_cpu_ticks(node.pid)
                out = await client.call(urls[name], body)
                used = cpu_delta(before, tree_cpu_ticks(node.pid))
                if not out.ok:
                    errors.append(f"{label}: {out.error}")
                    continue
                logs = json.loads(out.body)["result"]
                if logs != truth or not in_block_order(logs):
                    errors.append(f"{label}: wrong answer ({len(logs)} logs)")
                    continue
                times[label].append(out.latency_ms)
                if name != "direct-unsplit":
                    cpu[label].append(used / CLK_TCK * 1000.0)
                meta = out.meta or {}
                chunks[label] = (meta.get("get_logs") or {}).get("chunks", 1)
            log(f"round {rnd + 1}/{args.rounds} done")
    finally:
        await client.close()
    return {
        "range": [lo, hi],
        "logs": len(truth),
        "answer_mb": round(len(reference.body) / 1e6, 2),
        "contenders": {
            name: {
                **summarize(t),
                "rounds": len(t),
                "chunks": chunks.get(name),
                "proxy_cpu_ms": statistics.median(cpu[name]) if cpu[name] else None,
            }
            for name, t in times.items()
        },
        "errors": errors,
    }


def render(result: Mapping[str, Any], args: argparse.Namespace) -> str:
    rows = []
    ref = result["contenders"]["direct-unsplit"]["median_ms"]
    for name, c in result["contenders"].items():
        ratio = c["median_ms"] / ref if ref and c["median_ms"] else None
        rows.append(
            [
                name,
                fmt(c["median_ms"], 0),
                fmt(c["best_ms"], 0),
                fmt(ratio, 2),
                str(c["chunks"] if c["chunks"] is not None else "-"),
                fmt(c["proxy_cpu_ms"], 0),
                str(c["rounds"]),
            ]
        )
    lo, hi = result["range"]
    head = (
        f"# eth_getLogs over {hi - lo + 1:,} blocks ({result['logs']:,} logs, "
        f"{result['answer_mb']} MB)\n\n"
        f"Providers: latency {args.latency_ms:g} ms; limits 100 and 1,000 blocks, and none. "
        f"{args.rounds} round(s), contenders rotated. Every answer checked against the "
        f"unsplit reference: the same logs, in block order.\n\n"
    )
    table = "\n".join(
        markdown_table(
            ["contender", "median ms", "best ms", "× direct", "chunks", "proxy CPU ms", "rounds"],
            rows,
        )
    )
    errors = result["errors"]
    tail = "\n\nErrors: " + ("none" if not errors else "; ".join(errors)) + "\n"
    return head + table + tail


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.get_logs",
        description="eth_getLogs over a wide range: split across limits vs one unsplit call.",
    )
    p.add_argument("--quick", action="store_true", help="2 rounds")
    p.add_argument("--blocks", type=int, default=10_000, help="blocks asked (10,000)")
    p.add_argument("--depth", type=int, default=20, help="blocks below the head it ends (20)")
    p.add_argument("--rounds", type=int, default=5, help="rounds per contender (5)")
    p.add_argument("--latency-ms", type=float, default=20.0, help="providers' latency (20)")
    p.add_argument("--seed", default="lasso-bench")
    p.add_argument("--out-dir", default=str(RESULTS))
    args = p.parse_args(argv)
    if args.quick:
        args.rounds = 2
    if not 0 < args.blocks <= CACHE_BLOCKS // 2:
        p.error(f"--blocks must be 1..{CACHE_BLOCKS // 2}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    stamp, iso = timestamp()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="lasso-bench-logs-") as tmp:
        workdir = Path(tmp)
        sim = SimProcess(fleet(args.latency_ms), workdir, seed=args.seed, cache_size=CACHE_BLOCKS)
        try:
            sim.start()
        except Unavailable as exc:
            log(f"simulator unavailable: {exc.reason}\n{exc.log_tail}")
            return 2
        texts = profiles({p: sim.url(p) for p in sim.ports})
        node = LassoProcess(texts["public"], workdir)
        pdir = workdir / "profiles-lasso"  # LassoProcess writes public.yml there
        pdir.mkdir(parents=True, exist_ok=True)
        for slug in ("learned", "direct"):
            (pdir / f"{slug}.yml").write_text(texts[slug])
        try:
            node.start()
            result = run_loop(measure(args, sim, node))
        except Unavailable as exc:
            log(f"lasso unavailable: {exc.reason}\n{exc.log_tail}")
            return 2
        finally:
            node.stop()
            sim.stop()
    result["meta"] = {**env_meta(iso), "args": vars(args), "wall_s": time.monotonic() - started}
    markdown = render(result, args)
    print(markdown)
    paths = save_report(NAME, stamp, result, markdown, None, Path(args.out_dir))
    log(f"wrote {paths['md']}")
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
