"""``lasso probe``: discovery against the simulator, the report, the snippet and the CLI."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import pytest
from aiohttp import web

from lasso.cli import main
from lasso.probe_cli import render_snippet, render_table
from lasso.probes.discovery import (
    LEVELS,
    probe_endpoint,
    recommendation,
    verdict,
)
from lasso.profiles import parse_profile
from lasso.sim.behavior import Behavior

from support import UNIT, free_port

pytestmark = pytest.mark.integration

THIN = Behavior(
    max_block_range=1000,
    archival=False,
    unsupported_methods=frozenset({"eth_getProof", "eth_feeHistory", "eth_maxPriorityFeePerGas"}),
    max_batch_size=10,
)


@contextlib.asynccontextmanager
async def rpc_server(answer: Callable[[dict[str, Any]], dict[str, Any]]) -> AsyncIterator[str]:
    """A real JSON-RPC endpoint whose single-call answers come from ``answer``."""

    async def handle(request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        if isinstance(body, list):
            return web.json_response([{"jsonrpc": "2.0", "id": c["id"], **answer(c)} for c in body])
        return web.json_response({"jsonrpc": "2.0", "id": body["id"], **answer(body)})

    app = web.Application()
    app.router.add_post("/", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{site.port}/"
    finally:
        await runner.cleanup()


def by_method(report: dict[str, Any]) -> dict[str, str]:
    return {row["method"]: row["status"] for row in report["methods"]}


async def test_probe_finds_what_a_thin_provider_supports(sim_fleet: Any) -> None:
    """Methods, the getLogs range limit, batch size, archive access and WS subscriptions of
    a restricted simulated provider, and the settings they call for."""
    fleet = await sim_fleet({"thin": THIN}, block_time_s=0.2)
    p = fleet["thin"]
    report = await probe_endpoint(
        p.url, ws_url=p.ws_url, chain_id=1, timeout=5, subscription_wait=5 * UNIT
    )
    assert report["reachable"] and report["chain_id"] == 1 and report["chain_id_ok"] is True
    assert report["head"] >= 1_000_000 and report["client_version"].endswith("/thin")
    methods = by_method(report)
    assert {row["category"] for row in report["methods"]} == set(LEVELS["standard"])
    assert methods["eth_getBalance"] == "supported"
    assert methods["eth_sendRawTransaction"] == "supported"  # exists; our bytes were refused
    assert methods["eth_getProof"] == "unsupported"
    assert methods["eth_feeHistory"] == "unsupported"
    assert report["logs"]["max_block_range"] == 1000
    assert [t["range"] for t in report["logs"]["tested"]] == [500, 1000, 2000]
    assert report["batch"] == {
        "supported": True,
        "max_size": 10,
        "tested": [
            {"size": 2, "ok": True, "detail": ""},
            {"size": 10, "ok": True, "detail": ""},
            {"size": 50, "ok": False, "detail": "batch too large: 50 calls, max 10"},
        ],
    }
    assert report["archive"]["archival"] is False
    subs = report["websocket"]["subscriptions"]
    assert {k: v["status"] for k, v in subs.items()} == {
        "newHeads": "supported",
        "logs": "supported",
        "newPendingTransactions": "supported",
    }
    rec = recommendation(report)
    assert rec["unsupported_categories"] == ["eip1559"]
    assert "eth_getProof" in rec["unsupported_methods"]
    assert "eth_feeHistory" not in rec["unsupported_methods"]  # covered by the category
    assert rec["max_block_range"] == 1000 and rec["archival"] is False
    assert rec["ws_url"] == p.ws_url


async def test_snippet_is_a_valid_provider_entry(sim_fleet: Any) -> None:
    """The printed snippet pastes into a profile that the strict loader accepts as is."""
    fleet = await sim_fleet({"thin": THIN}, block_time_s=0.2)
    p = fleet["thin"]
    report = await probe_endpoint(p.url, ws_url=p.ws_url, timeout=5, subscription_wait=0)
    snippet = render_snippet(report, "thin")
    text = (
        "---\nname: T\nslug: public\n---\nchains:\n  ethereum:\n    chain_id: 1\n"
        "    providers:\n" + snippet
    )
    profile = parse_profile(text, "public.yml", {})
    provider = profile.chains["ethereum"].providers[0]
    assert provider.id == "thin" and provider.url == p.url and provider.ws_url == p.ws_url
    assert provider.archival is False
    caps = provider.capabilities
    assert caps.limits.max_block_range == 1000
    assert "eip1559" in caps.unsupported_categories
    assert "eth_getProof" in caps.unsupported_methods


async def test_range_limit_below_100_is_found(sim_fleet: Any) -> None:
    """A provider refusing even 100 blocks is bisected further down."""
    fleet = await sim_fleet({"tiny": Behavior(max_block_range=50)})
    report = await probe_endpoint(fleet["tiny"].url, timeout=5, level="critical")
    assert report["logs"]["max_block_range"] == 50
    assert "between 50 and 100" in report["logs"]["verdict"]


async def test_result_size_errors_are_not_range_limits() -> None:
    """'query returned more than N results' means the range was accepted."""

    def answer(call: dict[str, Any]) -> dict[str, Any]:
        method = call["method"]
        if method == "eth_chainId":
            return {"result": "0x1"}
        if method == "eth_blockNumber":
            return {"result": hex(2_000_000)}
        if method == "eth_getLogs":
            return {"error": {"code": -32005, "message": "query returned more than 10000 results"}}
        return {"error": {"code": -32601, "message": f"method {method} not found"}}

    async with rpc_server(answer) as url:
        report = await probe_endpoint(url, timeout=5, level="critical")
    assert report["logs"]["max_block_range"] is None
    assert report["logs"]["verdict"] == "no range limit up to 50000 blocks"
    assert report["batch"]["max_size"] == 100
    assert report["archive"]["archival"] is None  # method not found says nothing on state
    assert "max_block_range" not in recommendation(report)


async def test_timeouts_are_reported_not_counted_as_limits() -> None:
    """A slow getLogs answer is a timeout in the report, never a range limit."""

    async def handle(request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        if isinstance(body, dict) and body["method"] == "eth_getLogs":
            await asyncio.sleep(10)  # the endpoint hangs; the probe's timeout ends it
        result = {"eth_chainId": "0x1", "eth_blockNumber": "0x1000"}.get(body.get("method"))
        return web.json_response({"jsonrpc": "2.0", "id": body.get("id"), "result": result})

    app = web.Application()
    app.router.add_post("/", handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        url = f"http://127.0.0.1:{site.port}/"
        report = await probe_endpoint(url, timeout=0.3, level="critical")
    finally:
        await runner.cleanup()
    assert report["logs"]["max_block_range"] is None
    assert all(t["accepted"] is None for t in report["logs"]["tested"])
    assert by_method(report)["eth_blockNumber"] == "supported"


async def test_websocket_failures_are_reported(sim_fleet: Any) -> None:
    """A provider without WebSocket: the report says so and the snippet has no ws_url."""
    fleet = await sim_fleet({"nows": Behavior(websocket=False, max_block_range=100)})
    p = fleet["nows"]
    report = await probe_endpoint(
        p.url, ws_url=p.ws_url, timeout=5, subscription_wait=0, level="critical"
    )
    assert report["websocket"]["connected"] is False and report["websocket"]["error"]
    assert "ws_url" not in recommendation(report)
    assert "ws_url" not in render_snippet(report)
    report["recommendation"] = recommendation(report)
    report["snippet"] = render_snippet(report)
    text = render_table(report)
    assert "connect                 failed" in text


@pytest.mark.parametrize(
    ("status", "doc", "error", "expected"),
    [
        (200, {"result": None}, None, "supported"),
        (200, {"error": {"code": -32602, "message": "invalid argument 0"}}, None, "supported"),
        (200, {"error": {"code": 3, "message": "execution reverted"}}, None, "supported"),
        (200, {"error": {"code": -32601, "message": "no such method"}}, None, "unsupported"),
        (200, {"error": {"code": -32000, "message": "tracing not enabled"}}, None, "unsupported"),
        (200, {"error": {"code": 4200, "message": "x"}}, None, "unsupported"),
        (200, {"error": {"code": -32005, "message": "rate limit"}}, None, "rate_limited"),
        (200, {"error": {"code": -32000, "message": "invalid api key"}}, None, "unauthorized"),
        (200, {"error": {"code": -32603, "message": "boom"}}, None, "error"),
        (401, None, "HTTP 401: not JSON", "unauthorized"),
        (429, None, "HTTP 429: not JSON", "rate_limited"),
        (502, None, "HTTP 502: not JSON", "error"),
        (None, None, "timeout", "timeout"),
        (None, None, "ClientConnectorError: refused", "error"),
        (200, {"jsonrpc": "2.0"}, None, "error"),
    ],
)
def test_method_verdicts(status: int | None, doc: Any, error: str | None, expected: str) -> None:
    """Each kind of answer maps to one support verdict."""
    assert verdict(status, doc, error)[0] == expected


async def test_cli_prints_json_and_exits_by_chain_id(sim_fleet: Any) -> None:
    """`lasso probe URL --output json` prints the report; a chain id mismatch exits 1."""
    fleet = await sim_fleet({"thin": THIN})
    url = fleet["thin"].url

    async def run_cli(*args: str) -> tuple[int, bytes, bytes]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "lasso",
            "probe",
            url,
            "--level",
            "critical",
            "--timeout",
            "5",
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60 * UNIT)
        assert proc.returncode is not None
        return proc.returncode, out, err

    code, out, err = await run_cli("--output", "json", "--chain-id", "1", "--id", "thin")
    assert code == 0, err
    report = orjson.loads(out)
    assert report["chain_id_ok"] is True
    assert report["recommendation"]["max_block_range"] == 1000
    assert report["snippet"].startswith("      - id: thin\n")
    code, out, err = await run_cli("--chain-id", "8453")
    assert code == 1
    assert b"MISMATCH" in out and b"Profile snippet" not in out and b"- id:" not in out
    assert b"No profile snippet: this endpoint serves chain 1, not the --chain-id" in out
    code, out, err = await run_cli("--chain-id", "8453", "--output", "json")
    assert code == 1 and orjson.loads(out)["snippet"] is None


def test_cli_unreachable_endpoint_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    """A closed port: 'unreachable', the cause in plain words (no aiohttp internals such
    as 'ssl:default'), no snippet, and exit status 1."""
    port = free_port()
    code = main(["probe", f"http://127.0.0.1:{port}", "--timeout", "2"])
    assert code == 1
    out = capsys.readouterr().out
    assert f"unreachable: connection refused by 127.0.0.1:{port}" in out
    assert "ssl" not in out and "snippet" not in out


def test_cli_names_a_name_that_does_not_resolve(capsys: pytest.CaptureFixture[str]) -> None:
    """A host that cannot be resolved is reported as such."""
    assert main(["probe", "http://lasso-test.invalid:8545", "--timeout", "5"]) == 1
    assert "unreachable: cannot resolve lasso-test.invalid" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv",
    [
        ["ftp://example.com"],
        ["http://"],
        ["http://127.0.0.1:99999999"],
        ["http://127.0.0.1:1", "--ws", "http://127.0.0.1:1"],
        ["http://127.0.0.1:1", "--timeout", "0"],
    ],
)
def test_cli_rejects_bad_arguments(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """Bad URLs and timeouts exit 2 with a one-line reason, before any request."""
    assert main(["probe", *argv]) == 2
    assert capsys.readouterr().err.startswith("lasso probe:")
