"""What an operator sees when upstreams fail: one warning per kind with its cause, the
last error and an honest connection state in the API and metrics (real sockets)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import orjson
import pytest

from lasso.probes.health import ProbePolicy
from lasso.probes.heights import HeightProber
from lasso.server.health_log import HealthLog
from lasso.sim.behavior import Behavior

from support import eventually, free_port, profile_yaml, status_server

pytestmark = pytest.mark.integration

FAST = ProbePolicy(
    backoff_base_s=0.05,
    backoff_max_s=0.2,
    rate_limit_backoff_s=0.2,
    auth_backoff_s=0.3,
    timeout_s=0.5,
)


@pytest.fixture
async def run_prober() -> AsyncIterator[Callable[..., HeightProber]]:
    """Factory: run a prober with a fast policy on an app started without probes."""
    tasks: list[asyncio.Task[None]] = []

    def start(app: Any) -> HeightProber:
        prober = HeightProber(
            runtime=app.current_runtime, metrics=app.metrics, rng=app.rng, policy=FAST
        )
        tasks.append(asyncio.get_running_loop().create_task(prober.run()))
        return prober

    yield start
    for task in tasks:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def chain_yaml(urls: dict[str, str]) -> str:
    lines = ["  ethereum:", "    chain_id: 1", "    monitoring:", "      probe_interval_ms: 50"]
    lines.append("    providers:")
    for pid, url in urls.items():
        lines += [f"      - id: {pid}", f"        url: {url}"]
    return "\n".join(lines) + "\n"


def provider_lines(caplog: pytest.LogCaptureFixture, pid: str) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if getattr(r, "provider", None) == pid
        and str(getattr(r, "event", "")).startswith("provider.")
        and r.levelno >= logging.WARNING
    ]


async def get_json(url: str) -> Any:
    async with aiohttp.ClientSession() as s, s.get(url) as r:
        return orjson.loads(await r.read())


async def test_each_failure_kind_is_logged_once_at_warning_with_its_cause(
    sim_fleet: Any, lasso_node: Any, run_prober: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """DNS, refused, TLS, timeout, HTTP 5xx, 401 and 429 each give one warning line naming
    the cause, however many times they recur; the API and metrics carry the last error."""
    caplog.set_level(logging.INFO, logger="lasso.events")
    fleet = await sim_fleet({"plain": Behavior(), "hang": Behavior(hang=True)})
    async with (
        status_server(503, b"upstream overloaded") as (url_503, _),
        status_server(401, b'{"error":"invalid api key"}') as (url_401, _),
        status_server(429, b"Too Many Requests", {"Retry-After": "1"}) as (url_429, _),
    ):
        plain_port = fleet["plain"].url.rsplit(":", 1)[1]
        urls = {
            "dns": "http://lasso-test.invalid:8545",
            "refused": f"http://127.0.0.1:{free_port()}",
            "tls": f"https://127.0.0.1:{plain_port}",
            "hang": fleet["hang"].url,
            "e503": url_503,
            "e401": url_401,
            "e429": url_429,
        }
        app = await lasso_node(profile_yaml(chain_yaml(urls)))
        run_prober(app)
        router = app.runtime.profile(None).resolve("ethereum").router
        await eventually(
            lambda: all(
                ch.health.failures >= 3 for ch in router.channels if ch.provider_id != "e429"
            ),
            timeout=15,
        )
        await eventually(lambda: provider_lines(caplog, "e429"))
        expected = {
            "dns": ("provider.unreachable", "dns", None),
            "refused": ("provider.unreachable", "refused", None),
            "tls": ("provider.unreachable", "tls", None),
            "hang": ("provider.error", "timeout", None),
            "e503": ("provider.error", "http_status", 503),
        }
        for pid, (event, cause, status) in expected.items():
            lines = provider_lines(caplog, pid)
            assert len(lines) == 1, (pid, [r.getMessage() for r in lines])
            (line,) = lines
            assert (line.event, line.cause, getattr(line, "status", None)) == (  # type: ignore[attr-defined]
                event,
                cause,
                status,
            )
            assert line.levelno == logging.WARNING and cause in line.getMessage()
        # A bad key: the first 401 as an error, and the prober's verdict.
        events_401 = sorted(r.event for r in provider_lines(caplog, "e401"))  # type: ignore[attr-defined]
        assert events_401 == ["provider.error", "provider.misconfigured"]
        # A rate limit: the rate-limit line, carrying the answer.
        (limited,) = provider_lines(caplog, "e429")
        assert limited.event == "provider.rate_limited"  # type: ignore[attr-defined]
        assert limited.error == "HTTP 429"  # type: ignore[attr-defined]
        # The API: last error and connection state per channel.
        doc = await get_json(f"{app.base_url}/api/chains")
        by_id = {p["id"]: p for p in doc["chains"][0]["providers"]}
        for pid in ("dns", "refused", "tls"):
            http = by_id[pid]["channels"]["http"]
            assert (http["connected"], http["connection"]) == (False, "down"), pid
            assert http["last_error"]["cause"] == pid
            assert by_id[pid]["last_error"]["transport"] == "http"
        assert "lasso-test.invalid" in by_id["dns"]["last_error"]["message"]
        for pid in ("hang", "e503", "e401"):
            assert by_id[pid]["channels"]["http"]["connection"] == "up", pid
        assert by_id["e503"]["last_error"]["status"] == 503
        metrics = await get_json(f"{app.base_url}/api/metrics/ethereum")
        assert {p["id"]: p["last_error"]["cause"] for p in metrics["providers"]}["tls"] == "tls"
        async with aiohttp.ClientSession() as s, s.get(f"{app.base_url}/metrics") as r:
            text = (await r.read()).decode()
        assert (
            'lasso_provider_connected{chain="ethereum",node_id="test",profile="public",'
            'provider="refused",transport="http"} 0.0' in text
        )
        assert 'cause="dns"' in text and "lasso_provider_last_error_timestamp_seconds{" in text


async def test_a_provider_that_comes_back_is_reported_reachable(
    sim_fleet: Any, lasso_node: Any, run_prober: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Down (refused) then up again: one unreachable warning, one reachable info line."""
    caplog.set_level(logging.INFO, logger="lasso.events")
    fleet = await sim_fleet({"flaky": Behavior(down=True)})
    app = await lasso_node(profile_yaml(chain_yaml({"flaky": fleet["flaky"].url})))
    run_prober(app)
    await eventually(lambda: provider_lines(caplog, "flaky"))
    await fleet["flaky"].update(down=False)

    def reachable() -> list[logging.LogRecord]:
        return [r for r in caplog.records if getattr(r, "event", "") == "provider.reachable"]

    (back,) = await eventually(reachable)
    assert back.levelno == logging.INFO and back.down_s > 0  # type: ignore[attr-defined]
    (down,) = provider_lines(caplog, "flaky")
    assert (down.event, down.cause) == ("provider.unreachable", "refused")  # type: ignore[attr-defined]


async def test_client_failures_record_their_cause_without_the_prober(
    lasso_node: Any,
) -> None:
    """A client request to a refused port leaves that cause as the last error, and an
    HTTP channel that was never tried is not reported connected."""
    url = f"http://127.0.0.1:{free_port()}"
    app = await lasso_node(
        profile_yaml(chain_yaml({"gone": url, "idle": f"http://127.0.0.1:{free_port()}"}))
    )
    body = orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_getBalance", "params": []})
    async with (
        aiohttp.ClientSession() as s,
        s.post(f"{app.base_url}/rpc/provider/gone/ethereum", data=body) as r,
    ):
        doc = orjson.loads(await r.read())
    assert doc["error"]["code"] == -32000
    chains = await get_json(f"{app.base_url}/api/chains")
    by_id = {p["id"]: p for p in chains["chains"][0]["providers"]}
    gone = by_id["gone"]["channels"]["http"]
    assert (gone["connected"], gone["connection"]) == (False, "down")
    assert gone["last_error"]["cause"] == "refused"
    assert "127.0.0.1" in gone["last_error"]["message"]
    idle = by_id["idle"]["channels"]["http"]
    assert (idle["connected"], idle["connection"], idle["last_error"]) == (False, "unknown", None)


def test_repr() -> None:
    """repr counts the lines written."""
    assert repr(HealthLog()) == "<HealthLog lines=0>"
