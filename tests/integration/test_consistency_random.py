"""Consistent reads under load, randomized, checked against the simulator's truth (CONTRACT §8).

Four simulated providers 0-10 blocks apart, their lags changed at random while thousands of
requests go through every route (each strategy, the default, a provider override) over
HTTP (single calls and batches) and WebSocket. Every answer is checked:

* a head (``eth_blockNumber``, the ``latest`` block) is never below one answered before the
  request was sent;
* a block the client has been told exists (at or below such a head) is never ``null``, and
  is the simulator's block;
* ``eth_getLogs`` over explicit ranges (split by configured 50- and 100-block limits, a
  learned 250-block one, or not at all) equals the simulator's logs exactly; a range up to
  ``latest`` is the simulator's logs up to some block at or above the head seen.

Only a route pinned to one provider may answer an error, and only "behind": its provider
lacks a block the others have (never a ``null`` or a short answer instead).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from typing import Any

import aiohttp
import orjson
import pytest

from lasso.sim.behavior import Behavior

from support import fleet_chain_yaml, profile_yaml

pytestmark = pytest.mark.integration

ROUTES = [
    "/rpc/ethereum",
    "/rpc/fastest/ethereum",
    "/rpc/load-balanced/ethereum",
    "/rpc/round-robin/ethereum",
    "/rpc/latency-weighted/ethereum",
    "/rpc/priority/ethereum",
    "/rpc/provider/p2/ethereum",
    "/rpc/provider/p4/ethereum",
]
PINNED = "/rpc/provider/"
CHAIN = """\
    block_time_ms: 250
    monitoring: {probe_interval_ms: 200}
    routing:
      hedge: {delay_ms: 15, budget_percent: 30}"""
LIMITS = {
    "p1": "capabilities: {limits: {max_block_range: 100}}",
    "p4": "capabilities: {limits: {max_block_range: 50}}",
}
SIM_LIMITS = {"p1": 100, "p2": 250, "p4": 50}  # p2's limit is not in the profile: learned
REQUESTS = 2400
WINDOW = 400  # blocks back from the head the checks look at (kept in the simulator's cache)


class Checker:
    """The client side: what has been answered so far, and every check."""

    def __init__(self, chain: Any) -> None:
        self.chain = chain
        self.served = 0  # the highest head answered so far
        self.kinds: Counter[str] = Counter()
        self.routes: Counter[str] = Counter()
        self.failures: list[str] = []
        self.pinned_behind = 0
        self.done = 0

    def truth_logs(self, lo: int, hi: int) -> list[Any]:
        return [log for n in range(lo, hi + 1) for log in self.chain.logs(n)]

    def request(self, rng: random.Random, rid: int) -> tuple[str, dict[str, Any], Any]:
        """A random request and what its answer is checked against."""
        floor = self.served
        roll = rng.random()
        if roll < 0.25:
            return "head", _req(rid, "eth_blockNumber", []), floor
        if roll < 0.4:
            return "latest", _req(rid, "eth_getBlockByNumber", ["latest", False]), floor
        if roll < 0.65:
            n = rng.randint(max(0, floor - WINDOW), floor)
            return "block", _req(rid, "eth_getBlockByNumber", [hex(n), False]), n
        if roll < 0.9:
            hi = rng.randint(max(0, floor - WINDOW), floor)
            lo = max(0, hi - rng.randint(0, 320))
            flt = {"fromBlock": hex(lo), "toBlock": hex(hi)}
            return "logs", _req(rid, "eth_getLogs", [flt]), (lo, hi)
        lo = max(0, floor - rng.randint(0, 60))
        flt = {"fromBlock": hex(lo), "toBlock": "latest"}
        return "logs_latest", _req(rid, "eth_getLogs", [flt]), (lo, floor)

    def check(self, kind: str, route: str, want: Any, doc: Any) -> None:
        self.done += 1
        self.kinds[kind] += 1
        self.routes[route] += 1
        if not isinstance(doc, dict) or "result" not in doc:
            error = doc.get("error", {}) if isinstance(doc, dict) else {}
            if route.startswith(PINNED) and "behind" in str(error.get("message", "")):
                self.pinned_behind += 1
                return
            self.failures.append(f"{kind} via {route}: {doc}")
            return
        result = doc["result"]
        if kind == "head":
            self._head(kind, route, int(result, 16), want)
        elif kind == "latest":
            if result is None:
                self.failures.append(f"null latest block via {route}")
                return
            self._head(kind, route, int(result["number"], 16), want)
            if result["hash"] != self.chain.block_hash(int(result["number"], 16)):
                self.failures.append(f"latest block {result['number']} has the wrong hash")
        elif kind == "block":
            if result is None:
                self.failures.append(f"null for existing block {want} via {route}")
            elif result["hash"] != self.chain.block_hash(want):
                self.failures.append(f"block {want} has the wrong hash via {route}")
        elif kind == "logs":
            lo, hi = want
            if result != self.truth_logs(lo, hi):
                self.failures.append(f"wrong or partial logs {lo}..{hi} via {route}")
        else:
            lo, floor = want
            top = self.chain.height(time.time())
            full = self.truth_logs(lo, top)
            if result != full[: len(result)] or len(result) < len(self.truth_logs(lo, floor)):
                self.failures.append(f"wrong logs {lo}..latest (head {floor}) via {route}")

    def _head(self, kind: str, route: str, value: int, floor: int) -> None:
        if value < floor:
            self.failures.append(f"{kind} went backwards via {route}: {value} < {floor}")
        self.served = max(self.served, value)


def _req(rid: int, method: str, params: list[Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rid, "method": method, "params": params}


async def test_random_load_with_moving_lags_keeps_every_answer_consistent(
    sim_fleet: Any, lasso_node: Any
) -> None:
    """Thousands of requests through every route, lags moving: zero backwards heads, zero
    nulls for existing blocks, zero wrong or partial getLogs answers."""
    rng = random.Random(13)
    behaviors = {
        pid: Behavior(lag_blocks=rng.randint(0, 10), max_block_range=SIM_LIMITS.get(pid))
        for pid in ("p1", "p2", "p3", "p4")
    }
    fleet = await sim_fleet(behaviors, block_time_s=0.25)
    chain = fleet.chain()
    yaml = profile_yaml(fleet_chain_yaml(fleet, extra=CHAIN, providers=LIMITS))
    app = await lasso_node(yaml, probes=True)
    checker = Checker(chain)
    checker.served = chain.height(time.time()) - 12  # warm the simulator's block cache
    checker.truth_logs(checker.served - WINDOW - 320, checker.served)
    stop = asyncio.Event()

    async def move_lags() -> None:
        while not stop.is_set():
            await fleet[rng.choice(list(behaviors))].update(lag_blocks=rng.randint(0, 10))
            try:
                await asyncio.wait_for(stop.wait(), rng.uniform(0.05, 0.15))
            except TimeoutError:
                pass

    async def http_client(seed: int, session: aiohttp.ClientSession) -> None:
        crng = random.Random(seed)
        rid = seed * 1_000_000
        while checker.done < REQUESTS:
            route = crng.choice(ROUTES)
            rid += 1
            if crng.random() < 0.15:  # a batch of three
                items = [checker.request(crng, rid + i) for i in range(3)]
                rid += 3
                body = [req for _, req, _ in items]
                async with session.post(app.base_url + route, data=orjson.dumps(body)) as r:
                    docs = orjson.loads(await r.read())
                by_id = {d["id"]: d for d in docs}
                for kind, req, want in items:
                    checker.check(kind, route, want, by_id.get(req["id"]))
                continue
            kind, req, want = checker.request(crng, rid)
            async with session.post(app.base_url + route, data=orjson.dumps(req)) as r:
                checker.check(kind, route, want, orjson.loads(await r.read()))

    async def ws_client(seed: int, session: aiohttp.ClientSession) -> None:
        crng = random.Random(seed)
        route = "/ws" + crng.choice(ROUTES)
        async with session.ws_connect(app.base_url.replace("http", "ws") + route) as ws:
            rid = seed * 1_000_000
            while checker.done < REQUESTS:
                rid += 1
                kind, req, want = checker.request(crng, rid)
                await ws.send_bytes(orjson.dumps(req))
                doc = orjson.loads((await ws.receive()).data)
                checker.check(kind, route, want, doc)

    mover = asyncio.get_running_loop().create_task(move_lags())
    try:
        async with aiohttp.ClientSession() as session:
            clients = [http_client(s, session) for s in range(1, 7)]
            clients += [ws_client(s, session) for s in (7, 8)]
            await asyncio.gather(*clients)
    finally:
        stop.set()
        await mover
    assert checker.failures == [], checker.failures[:10]
    assert checker.done >= REQUESTS
    assert set(checker.routes) >= set(ROUTES)
    assert min(checker.kinds.values()) >= 100, checker.kinds
    rt = app.runtime.profile(None).resolve("ethereum")
    counts = rt.consistency.counts
    assert counts.get(("splits", ""), 0) > 0  # getLogs were split
    assert rt.router.logs_range_limit("p2") == 250  # and p2's limit learned
    cache = Counter[str]()  # the response cache answers in front of it all (issue 14)
    for cc in app.cache.chains.values():
        for (_, result), n in cc.requests.items():
            cache[result] += n
    print(  # the figures for the record (pytest -s)
        f"\n{checker.done} requests, {dict(checker.kinds)}, pinned behind {checker.pinned_behind},"
        f" consistency counters {dict(counts)}, cache {dict(cache)}"
    )
