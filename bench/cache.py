"""Response cache and coalescing on a realistic mixed trace, every answer checked.

The simulator (``lasso.sim``, in this process) serves one chain (``--block-time``, 12 s
by default as on Ethereum; finality 64 blocks) from three providers (lognormal latency,
median 40 ms; ``newHeads`` over WebSocket announced within a few ms). ``lasso serve``
runs in its own process in front of them. The same trace is replayed once per mode:

* ``off``: ``cache.enabled: false`` and ``routing.coalesce: false`` (every request goes
  upstream);
* ``coalesce``: coalescing only;
* ``cache``: the defaults (cache and coalescing).

The trace (``--duration`` seconds):

* two **indexer** replicas walking finalized blocks from 2,000 below the head, each block
  fetched with its transactions (``eth_getBlockByNumber(n, true)``) and its logs
  (``eth_getLogs`` over that block), as fast as they are answered; the second replica
  starts a few seconds after the first, over the same range (a re-index, or a second
  service reading the same chain);
* **100 dApp clients** (browser tabs of 30 distinct users), polling as viem and wagmi do
  by default: ``eth_blockNumber`` every 4 s; on each new block the page's reads at
  ``latest``: the user's ``eth_getBalance``, the user's token ``balanceOf`` and a token
  figure every page shows (``totalSupply()`` or ``decimals()``) by ``eth_call``, the
  latest block (one tab in five), ``eth_feeHistory`` and ``eth_gasPrice`` (one in three);
  and, for a user who sent a transaction (one in ten polls starts one: a transaction of
  the next block), ``eth_getTransactionReceipt`` every poll until it is mined (``null``
  until then);
* a **reorg** of depth 1-3 every 15 s.

Each answer is compared with the simulator's truth: the chain (with the reorgs replayed)
answering the same call at the moment the request was sent, at the moment its answer
arrived, and at every block or reorg in between. An answer equal to one of those is on
time; one equal to the truth at most ``--allowance-ms`` before the request was sent is
*late* (a head the providers had not announced yet: the simulator announces new heads
and reorgs a few ms after they happen); anything else is *wrong*. Upstream calls are
every JSON-RPC call the providers received during the trace, Lasso's own (probes,
subscriptions, the cache's head polls) included.

    .venv/bin/python -m bench.cache                # 60 s per mode
    .venv/bin/python -m bench.cache --quick        # 15 s per mode

Writes bench/results/cache-<stamp>.json and .md and prints the Markdown report.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # pragma: no cover - run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson  # noqa: E402

from bench.common import (  # noqa: E402
    CLK_TCK,
    RESULTS,
    LassoProcess,
    chain_profile,
    cpu_delta,
    env_meta,
    fmt,
    latency_summary,
    log,
    markdown_table,
    run_loop,
    save_report,
    timestamp,
    tree_cpu_ticks,
)
from lasso.sim.behavior import Behavior  # noqa: E402
from lasso.sim.chain import TOKEN_ADDRESSES, SyntheticChain  # noqa: E402
from lasso.sim.fleet import ProviderSpec, SimFleet  # noqa: E402
from lasso.sim.node import NodeView, RpcError, call_method  # noqa: E402

MODES = {
    "off": "    cache:\n      enabled: false\n    routing:\n      coalesce: false\n",
    "coalesce": "    cache:\n      enabled: false\n",
    "cache": "",
}
CHAIN_ID = 1
POLL_S = 4.0  # viem's and wagmi's default polling interval
START_HEIGHT = 2_000_000
PROVIDERS = ("alpha", "bravo", "charlie")
USERS = 30
CLIENTS = 100
REORG_EVERY_S = 15.0
INDEX_BACK = 2000
_BALANCE_OF = "0x70a08231000000000000000000000000"
HOT_CALLS = ("0x18160ddd", "0x313ce567")  # totalSupply(), decimals()


# -- truth ------------------------------------------------------------------------------


class Truth:
    """The simulator's chain at any past instant: versions rebuilt by replaying reorgs."""

    def __init__(self, chain: SyntheticChain) -> None:
        self.live = chain
        self.reorgs: list[tuple[float, int]] = []  # (when, depth), in order
        self._versions: dict[int, SyntheticChain] = {}

    def reorg(self, fleet: SimFleet, depth: int) -> None:
        now = fleet.clock()
        fleet.reorg(depth)
        self.reorgs.append((now, depth))

    def version(self, t: float) -> SyntheticChain:
        """The chain as it was at ``t`` (after the reorgs made before ``t``)."""
        count = sum(1 for when, _ in self.reorgs if when <= t)
        chain = self._versions.get(count)
        if chain is None:
            live = self.live
            chain = SyntheticChain(
                live.chain_id,
                live.block_time_s,
                live.seed,
                start_height=live.start_height,
                start_time=live.start_time,
            )
            for when, depth in self.reorgs[:count]:
                chain.reorg(depth, when)
            self._versions[count] = chain
        return chain

    def answer(self, t: float, method: str, params: list[Any]) -> Any:
        """What the chain answered at ``t`` (an RpcError's dict for errors)."""
        chain = self.version(t)
        try:
            return call_method(NodeView(chain=chain, head=chain.height(t)), method, params)
        except RpcError as exc:
            return {"__error__": exc.code}

    def instants(self, start: float, end: float) -> list[float]:
        """``start``, ``end`` and every block or reorg in between."""
        points = [start, end]
        chain = self.live
        n = chain.height(start) + 1
        while chain.block_time_at(n) < end:
            points.append(chain.block_time_at(n))
            n += 1
        points += [when for when, _ in self.reorgs if start < when < end]
        return points


@dataclass(slots=True)
class Record:
    who: str
    method: str
    params: list[Any]
    sent: float
    received: float
    status: int
    answer: Any  # the parsed result, {"__error__": code}, or FAILED
    cache: str | None


FAILED: Any = object()  # no JSON-RPC answer at all (a transport failure)


def judge(truth: Truth, rec: Record, allowance_s: float) -> str:
    """``on_time``, ``late``, ``wrong`` or ``failed`` (no JSON-RPC answer at all)."""
    if rec.answer is FAILED:
        return "failed"
    for t in truth.instants(rec.sent, rec.received):
        if truth.answer(t, rec.method, rec.params) == rec.answer:
            return "on_time"
    for t in truth.instants(rec.sent - allowance_s, rec.sent):
        if truth.answer(t, rec.method, rec.params) == rec.answer:
            return "late"
    return "wrong"


# -- the trace --------------------------------------------------------------------------


class Driver:
    """Sends the trace to one Lasso node and records every answer."""

    def __init__(self, url: str, truth: Truth, seed: int) -> None:
        import aiohttp

        self.url = url
        self.truth = truth
        self.rng = random.Random(seed)
        self.records: list[Record] = []
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0),
            timeout=aiohttp.ClientTimeout(total=15.0),
        )
        self.stop = asyncio.Event()

    async def call(self, who: str, method: str, params: list[Any]) -> Any:
        body = orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
        sent = time.time()
        status, answer, cache = 0, FAILED, None
        try:
            async with self.session.post(self.url, data=body) as resp:
                raw = await resp.read()
                status = resp.status
                cache = resp.headers.get("X-Lasso-Cache")
            doc = orjson.loads(raw)
            if "result" in doc:
                answer = doc["result"]
            elif "error" in doc:
                answer = {"__error__": doc["error"].get("code")}
        except Exception:  # a transport failure is recorded as such
            answer = FAILED
        received = time.time()
        self.records.append(Record(who, method, params, sent, received, status, answer, cache))
        return answer

    async def indexer(self, name: str, first: int, delay: float) -> None:
        try:
            await asyncio.wait_for(self.stop.wait(), delay)
            return
        except TimeoutError:
            pass
        n = first
        while not self.stop.is_set():
            await self.call(name, "eth_getBlockByNumber", [hex(n), True])
            await self.call(name, "eth_getLogs", [{"fromBlock": hex(n), "toBlock": hex(n)}])
            n += 1

    async def dapp(self, k: int) -> None:
        """One browser tab of a dApp, polling as viem/wagmi do by default: the block
        number every 4 s; on a new block, the page's reads at ``latest``; the receipt of
        a pending transaction every poll until it is mined."""
        rng = random.Random(k)
        user = "0x" + f"{(k % USERS) + 1:040x}"
        token = TOKEN_ADDRESSES[k % len(TOKEN_ADDRESSES)]
        chain = self.truth.live
        pending: str | None = None
        seen = -1
        await asyncio.sleep(rng.random() * POLL_S)
        while not self.stop.is_set():
            number = await self.call("dapp", "eth_blockNumber", [])
            head = int(number, 16) if isinstance(number, str) else seen
            if head != seen:
                seen = head
                await self.call("dapp", "eth_getBalance", [user, "latest"])
                mine = {"to": token, "data": _BALANCE_OF + user[2:]}
                await self.call("dapp", "eth_call", [mine, "latest"])
                shared = {"to": token, "data": HOT_CALLS[k % len(HOT_CALLS)]}
                await self.call("dapp", "eth_call", [shared, "latest"])
                if k % 5 == 0:  # pages that show the latest block
                    await self.call("dapp", "eth_getBlockByNumber", ["latest", False])
                if k % 3 == 0:  # a send form estimating fees
                    await self.call("dapp", "eth_feeHistory", ["0x4", "latest", [25, 75]])
                    await self.call("dapp", "eth_gasPrice", [])
            if pending is None and rng.random() < 0.1:  # the user sends a transaction
                pending = chain.tx_hash(chain.height(time.time()) + 1, rng.randrange(3))
            if pending is not None:
                receipt = await self.call("dapp", "eth_getTransactionReceipt", [pending])
                if isinstance(receipt, dict) and "blockHash" in receipt:
                    pending = None
            await asyncio.sleep(POLL_S * (0.9 + 0.2 * rng.random()))

    async def reorgs(self, fleet: SimFleet) -> None:
        while True:
            try:
                await asyncio.wait_for(self.stop.wait(), REORG_EVERY_S)
                return
            except TimeoutError:
                self.truth.reorg(fleet, 1 + self.rng.randrange(3))

    async def run(self, fleet: SimFleet, duration: float) -> None:
        head = self.truth.live.height(time.time())
        first = head - 64 - INDEX_BACK
        tasks = [
            asyncio.create_task(self.indexer("indexer", first, 0.0)),
            asyncio.create_task(self.indexer("indexer", first, 4.0)),
            asyncio.create_task(self.reorgs(fleet)),
            *(asyncio.create_task(self.dapp(k)) for k in range(CLIENTS)),
        ]
        await asyncio.sleep(duration)
        self.stop.set()
        await asyncio.gather(*tasks)
        await self.session.close()


# -- one mode ---------------------------------------------------------------------------


@dataclass
class ModeResult:
    mode: str
    requests: int = 0
    upstream_calls: int = 0
    upstream_by_method: dict[str, int] = field(default_factory=dict)
    verdicts: dict[str, int] = field(default_factory=dict)
    cache: dict[str, int] = field(default_factory=dict)
    latency: dict[str, dict[str, Any]] = field(default_factory=dict)
    lasso_cpu_us_per_request: float | None = None
    examples: list[dict[str, Any]] = field(default_factory=list)


async def run_mode(mode: str, args: argparse.Namespace, workdir: Path) -> ModeResult:
    start = float(int(time.time()))  # whole seconds: block timestamps are exact
    chain = SyntheticChain(
        CHAIN_ID, args.block_time, "bench-cache", start_height=START_HEIGHT, start_time=start
    )
    behavior = Behavior(latency_ms=40.0, jitter=0.3, method_latency_ms={"eth_subscription": 2.0})
    specs = [ProviderSpec(id=pid, behavior=behavior) for pid in PROVIDERS]
    fleet = SimFleet(chain, specs, seed=f"bench-cache-{mode}")
    await fleet.start()
    urls, ws = fleet.urls(), fleet.ws_urls()
    profile = chain_profile(
        [(pid, urls[pid], 10 * (i + 1)) for i, pid in enumerate(PROVIDERS)],
        block_time_ms=int(args.block_time * 1000),
        ws_urls=ws,
    )
    bt_line = f"    block_time_ms: {int(args.block_time * 1000)}\n"
    profile = profile.replace(bt_line, bt_line + MODES[mode])
    lasso = LassoProcess(profile, workdir, name=f"lasso-{mode}")
    truth = Truth(chain)
    result = ModeResult(mode)
    try:
        await asyncio.get_running_loop().run_in_executor(None, lasso.start)
        driver = Driver(lasso.base_url + "/rpc/ethereum", truth, seed=7)
        await asyncio.sleep(args.warmup)  # upstream sockets, newHeads, first probes
        fleet.reset_stats()
        cpu0 = tree_cpu_ticks(lasso.pid)
        await driver.run(fleet, args.duration)
        cpu = cpu_delta(cpu0, tree_cpu_ticks(lasso.pid))
        result.upstream_calls = sum(p.stats.calls for p in fleet)
        by_method: Counter[str] = Counter()
        for p in fleet:
            by_method.update(p.stats.methods)
        result.upstream_by_method = dict(by_method.most_common())
    finally:
        lasso.stop()
        await fleet.stop()
    records = driver.records
    result.requests = len(records)
    if records:
        result.lasso_cpu_us_per_request = round(cpu / CLK_TCK / len(records) * 1e6, 1)
    verdicts: Counter[str] = Counter()
    for rec in records:
        verdict = judge(truth, rec, args.allowance_ms / 1000.0)
        verdicts[verdict] += 1
        if verdict in ("wrong", "late") and len(result.examples) < 10:
            result.examples.append(
                {
                    "verdict": verdict,
                    "method": rec.method,
                    "params": rec.params,
                    "cache": rec.cache,
                    "answer": str(rec.answer)[:200],
                    "truth_at_send": str(truth.answer(rec.sent, rec.method, rec.params))[:200],
                    "sent_into_block_ms": round(
                        1000 * (rec.sent - chain.block_time_at(chain.height(rec.sent))), 1
                    ),
                    "reorgs": [round(rec.sent - w, 3) for w, _ in truth.reorgs if w <= rec.sent][
                        -1:
                    ],
                }
            )
    result.verdicts = dict(verdicts)
    result.cache = dict(Counter(rec.cache or "none" for rec in records))
    for who in ("dapp", "indexer"):
        lat = [(r.received - r.sent) * 1000 for r in records if r.who == who]
        result.latency[who] = latency_summary(lat)
    result.latency["all"] = latency_summary([(r.received - r.sent) * 1000 for r in records])
    return result


# -- report -----------------------------------------------------------------------------


def render(results: list[ModeResult], meta: dict[str, Any], args: argparse.Namespace) -> str:
    base = next((r for r in results if r.mode == "off"), None)
    rows = []
    for r in results:
        saved = (
            f"{100 * (1 - r.upstream_calls / base.upstream_calls):.1f} %"
            if base and base.upstream_calls
            else "—"
        )
        per_request = r.upstream_calls / r.requests if r.requests else None
        rows.append(
            [
                r.mode,
                str(r.requests),
                str(r.upstream_calls),
                fmt(per_request, 3),
                saved,
                fmt(r.latency["dapp"].get("p50"), 1),
                fmt(r.latency["dapp"].get("p99"), 1),
                fmt(r.latency["indexer"].get("p50"), 1),
                fmt(r.latency["indexer"].get("p99"), 1),
                str(r.verdicts.get("on_time", 0)),
                str(r.verdicts.get("late", 0)),
                str(r.verdicts.get("wrong", 0)),
                str(r.verdicts.get("failed", 0)),
                fmt(r.lasso_cpu_us_per_request, 0),
            ]
        )
    head = [
        "mode",
        "requests",
        "upstream calls",
        "per request",
        "fewer calls",
        "dApp p50 ms",
        "dApp p99 ms",
        "indexer p50 ms",
        "indexer p99 ms",
        "on time",
        "late",
        "wrong",
        "failed",
        "Lasso CPU µs/req",
    ]
    lines = [
        "# Cache and coalescing on a mixed trace",
        "",
        f"{meta['timestamp']}, git {meta['git']}, {meta['cpus']} CPUs; {args.duration:.0f} s per "
        f"mode after {args.warmup:.0f} s warm-up; blocks every {args.block_time:g} s; "
        f"{CLIENTS} dApp clients, 2 indexers, a reorg "
        f"every {REORG_EVERY_S:.0f} s; late = equal to the truth at most "
        f"{args.allowance_ms:.0f} ms before the request was sent.",
        "",
        *markdown_table(head, rows),
        "",
    ]
    for r in results:
        top = ", ".join(f"{m} {n}" for m, n in list(r.upstream_by_method.items())[:8])
        lines.append(f"- **{r.mode}**: upstream by method: {top}; X-Lasso-Cache: {r.cache}")
        for ex in r.examples:
            lines.append(
                f"  - {ex['verdict']}: {ex['method']} {ex['params']} ({ex['cache']}), sent "
                f"{ex['sent_into_block_ms']} ms into a block: {ex['answer'][:80]} vs "
                f"{ex['truth_at_send'][:80]}"
            )
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds per mode")
    parser.add_argument(
        "--block-time", type=float, default=12.0, help="simulated block time, seconds"
    )
    parser.add_argument("--warmup", type=float, default=4.0, help="seconds before the trace")
    parser.add_argument("--modes", default="off,coalesce,cache", help="comma-separated")
    parser.add_argument(
        "--allowance-ms", type=float, default=50.0, help="how late a head answer may be"
    )
    parser.add_argument("--quick", action="store_true", help="15 s per mode")
    parser.add_argument("--out-dir", default=str(RESULTS), help="where the report goes")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration = 15.0
    return args


async def amain(args: argparse.Namespace) -> int:
    stamp, iso = timestamp()
    meta = env_meta(iso)
    results = []
    with tempfile.TemporaryDirectory(prefix="lasso-bench-cache-") as tmp:
        for mode in args.modes.split(","):
            log(f"mode {mode}: {args.duration:.0f} s")
            results.append(await run_mode(mode, args, Path(tmp)))
    markdown = render(results, meta, args)
    doc = {"meta": meta, "args": vars(args), "modes": [r.__dict__ for r in results]}
    paths = save_report("cache", stamp, doc, markdown, None, Path(args.out_dir))
    print(markdown)
    log(f"wrote {paths['md']}")
    wrong = sum(r.verdicts.get("wrong", 0) for r in results)
    return 1 if wrong else 0


def main(argv: Sequence[str] | None = None) -> int:
    return int(run_loop(amain(parse_args(argv))))


if __name__ == "__main__":
    raise SystemExit(main())
