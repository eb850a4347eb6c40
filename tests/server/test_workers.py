"""`lasso serve --workers N`: node-wide breaker, rate-limit and latency state, merged metrics."""

from __future__ import annotations

import asyncio
import os
import random
import re
import signal
import sys
from pathlib import Path
from time import monotonic
from typing import Any

import aiohttp
import orjson

from lasso.kernel.breaker import BreakerConfig, BreakerState
from lasso.kernel.classify import Category
from lasso.kernel.router import BreakerRegistry
from lasso.profiles import parse_profile
from lasso.server.runtime import PoolRegistry, Runtime
from lasso.server.shared_state import RECORD, SharedTable, key_hash

from support import eventually, fleet_chain_yaml, free_port, profile_yaml

PROFILE = """---
name: T
slug: public
---
chains:
  ethereum:
    chain_id: 1
    providers:
      - id: a
        url: http://127.0.0.1:1
        priority: 10
      - id: b
        url: http://127.0.0.1:2
        priority: 20
"""


def _runtime() -> Runtime:
    profiles = {"public": parse_profile(PROFILE, "public.yml", {})}
    rng = random.Random(1)
    return Runtime(
        profiles, pools=PoolRegistry(), breakers=BreakerRegistry(BreakerConfig(), rng), rng=rng
    )


def _chan(rt: Runtime, pid: str) -> Any:
    chain = rt.profiles["public"].chains["ethereum"]
    return chain, chain.router.channel(pid, "http")


def test_record_layout_is_fixed_and_keys_are_stable() -> None:
    """Records have a fixed size and channel key hashes are deterministic and non-zero."""
    assert RECORD.size == 80
    assert key_hash("public", "ethereum", "a", "http") == key_hash(
        "public", "ethereum", "a", "http"
    )
    assert key_hash("public", "ethereum", "a", "http") != key_hash("public", "ethereum", "a", "ws")


async def test_evidence_and_breaker_flow_between_workers() -> None:
    """A publish in one runtime reaches another's evidence and breaker through the table."""
    table = SharedTable(capacity=16)
    try:
        w1, w2 = _runtime(), _runtime()
        table.attach(w1)
        table.attach(w2)
        c1, a1 = _chan(w1, "a")
        c2, a2 = _chan(w2, "a")
        now = monotonic()
        for i in range(3):
            c1.router.record_success(a1, "eth_blockNumber", 0.010 + i * 0.001, now)
            c1.shared.publish(a1, None, now)
        c2.shared.refresh(now)
        assert a2.evidence.usable_successes == 3
        assert a2.evidence.ewma_ms == a1.evidence.ewma_ms
        assert a2.evidence.last_observed == now

        # Failures alternate between workers: the node-wide count trips the breaker at 5.
        for i in range(5):
            c, ch = (c1, a1) if i % 2 == 0 else (c2, a2)
            c.shared.refresh(now)
            c.router.record_failure(ch, "eth_blockNumber", Category.SERVER_ERROR, 0.01, now)
            c.shared.publish(ch, Category.SERVER_ERROR, now)
        assert a1.breaker.state(now) is BreakerState.OPEN  # tripped by the 5th (worker 1)
        c2.shared.refresh(now)
        assert a2.breaker.state(now) is BreakerState.OPEN
        assert a2.breaker.retry_after(now) is not None

        # Rate-limit expiry travels too.
        _, b1 = _chan(w1, "b")
        _, b2 = _chan(w2, "b")
        c1.router.record_failure(b1, "eth_call", Category.RATE_LIMIT, 0.01, now, 5.0)
        c1.shared.publish(b1, Category.RATE_LIMIT, now)
        c2.shared.refresh(now)
        assert b2.evidence.rate_limited(now)

        # A close in worker 1 closes worker 2's open breaker.
        a1.breaker.force_close(now)
        c1.shared.publish(a1, None, now)
        c2.shared.refresh(now)
        assert a2.breaker.state(now) is BreakerState.CLOSED
    finally:
        table.close()


async def test_stale_writer_does_not_reopen_traffic() -> None:
    """A worker that missed an OPEN adopts it when it publishes, instead of writing CLOSED."""
    table = SharedTable(capacity=16)
    try:
        w1, w2 = _runtime(), _runtime()
        table.attach(w1)
        table.attach(w2)
        c1, a1 = _chan(w1, "a")
        c2, a2 = _chan(w2, "a")
        now = monotonic()
        a1.breaker.force_open(now, retry_after_s=30.0)
        c1.shared.publish(a1, None, now)
        # Worker 2 has not refreshed; its own attempt lands and it writes through.
        c2.router.record_success(a2, "eth_blockNumber", 0.01, now)
        c2.shared.publish(a2, None, now)
        assert a2.breaker.state(now) is BreakerState.OPEN
        c1.shared.refresh(now)
        assert a1.breaker.state(now) is BreakerState.OPEN
    finally:
        table.close()


async def test_reloaded_layout_ignores_foreign_records() -> None:
    """A record written for another channel key (a worker mid-reload) is not applied."""
    table = SharedTable(capacity=16)
    try:
        w1, w2 = _runtime(), _runtime()
        table.attach(w1)
        table.attach(w2)
        c1, a1 = _chan(w1, "a")
        c2, a2 = _chan(w2, "a")
        c2.shared.hashes[0] = 12345  # as if worker 2's slot 0 held a different channel
        now = monotonic()
        c1.router.record_success(a1, "eth_blockNumber", 0.01, now)
        c1.shared.publish(a1, None, now)
        c2.shared.refresh(now)
        assert a2.evidence.usable_successes == 0
    finally:
        table.close()


# -- a real `lasso serve --workers 2` ---------------------------------------------------


async def _get(session: aiohttp.ClientSession, url: str) -> tuple[int, bytes]:
    async with session.get(url) as resp:
        return resp.status, await resp.read()


async def _rpc(session: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    body = {"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []}
    async with session.post(url, json=body) as resp:
        doc: dict[str, Any] = await resp.json()
        return doc


def _requests_total(text: str) -> float:
    return sum(
        float(m.group(1))
        for m in re.finditer(r"^lasso_rpc_requests_total\{[^}]*\} (\S+)$", text, re.M)
    )


async def test_serve_workers_share_breaker_and_metrics(tmp_path: Path, sim_fleet: Any) -> None:
    """Two workers both serve; a failing provider trips node-wide; metrics sum; SIGTERM exits 0."""
    fleet = await sim_fleet(["a", "b"])
    extra = "    monitoring:\n      probe_interval_ms: 600000"
    (tmp_path / "public.yml").write_text(profile_yaml(fleet_chain_yaml(fleet, extra=extra)))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "lasso", "serve", "--profiles", str(tmp_path),
        "--port", str(port), "--workers", "2", "--log-level", "warning",
        env={**os.environ, "LASSO_WORKERS": "1"},
    )  # fmt: skip
    # A fresh connection per request, so that SO_REUSEPORT spreads them over the workers.
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))
    try:
        pids: set[int] = set()

        async def both_workers_answer() -> bool:
            try:
                status, body = await _get(session, base + "/api/health")
            except aiohttp.ClientError:
                return False
            if status == 200:
                doc = orjson.loads(body)
                assert doc["worker"] in (0, 1)
                pids.add(doc["pid"])
            return len(pids) == 2

        await eventually(both_workers_answer, timeout=30, message="two workers")

        await fleet["a"].update(error_rate=1.0, error_mode="http500")
        fleet.reset_stats()
        sent = 0
        for _ in range(24):
            doc = await _rpc(session, base + "/rpc/priority/ethereum")
            assert "result" in doc, doc
            sent += 1
        # Threshold 5 for server errors; per-worker breakers would let about 10 through.
        assert fleet["a"].stats.requests <= 6, fleet["a"].stats.requests

        async def scrapes_agree() -> bool:
            for _ in range(6):
                _, text = await _get(session, base + "/metrics")
                if _requests_total(text.decode()) != sent:
                    return False
            return True

        await eventually(scrapes_agree, timeout=10, message="node-wide request counts")
    finally:
        await session.close()
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 20)
    assert proc.returncode == 0
