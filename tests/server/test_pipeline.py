"""The pipeline driver over in-memory transports, one attempt at a time: failover, writes,
errors and height samples, without sockets (tests/integration has them over real ones)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
import pytest

from lasso.config import HedgeConfig
from lasso.kernel.classify import MAX_RETRY_AFTER_S
from lasso.net.errors import PoolTimeout, UpstreamConnectError, UpstreamDisconnected
from lasso.net.http_conn import UpstreamResponse
from lasso.server.pipeline import Outcome, execute, run
from lasso.server.rpc_envelope import LARGE_RESULT
from lasso.server.runtime import ChainRuntime
from server_pipeline_support import (
    BALANCE,
    budgeted,
    call,
    hang,
    ok,
    outcomes,
    raises,
    result_of,
    rpc_error,
    runtime,
    settled,
    status,
    transport,
)

# -- one attempt, failover, errors --------------------------------------------------------


async def test_answer_bytes_pass_through() -> None:
    """A result comes back as the provider's bytes, carrying our transport id."""
    rt = runtime(a=ok("0x2a"))
    out = await call(rt)
    assert out.status == "success" and out.provider_id == "a" and out.retries == 0
    assert out.tid.startswith(b'"lasso-') and out.tid in (out.body or b"")
    assert result_of(out) == "0x2a"
    assert not out.hedged and out.hedge_winner is None
    assert [c.provider_id for c in out.candidates] == ["a"]
    assert outcomes(rt, "a") == {"success": 1}
    sent = transport(rt, "a").requests[0]
    assert sent.doc["method"] == "eth_getBalance" and sent.replay_safe
    assert sent.timeout == pytest.approx(0.6 * 2.0, rel=0.01)  # 60 % of eth_getBalance's 2 s


async def test_read_fails_over_and_records_the_failure() -> None:
    """A 500, a reset and a refused connection move on; the failures count against them."""
    rt = runtime(
        a=status(500),
        b=raises(UpstreamDisconnected("reset")),
        c=ok(),
    )
    out = await call(rt)
    assert out.provider_id == "c" and out.retries == 2
    assert outcomes(rt, "a") == {"failure": 1} and outcomes(rt, "b") == {"failure": 1}
    assert out.upstream_latency > 0


async def test_three_sends_at_most() -> None:
    """A read reaches at most three providers, then fails with the last reason."""
    rt = runtime(a=status(500), b=status(502), c=status(503), d=ok())
    out = await call(rt)
    assert out.status == "error" and out.error is not None
    assert out.error["message"] == "All providers failed: Provider infrastructure error (HTTP 503)"
    assert out.error["data"]["providers_tried"] == ["a", "b", "c"]
    assert out.error["data"]["last_error"]["code"] == -32002
    assert transport(rt, "d").calls == 0


async def test_quota_and_capability_do_not_use_up_sends() -> None:
    """Rate limits and capability refusals move on without counting as sends."""
    rt = runtime(
        a=rpc_error(-32005, "rate limited"),
        b=rpc_error(-32000, "missing trie node abc"),
        c=status(429),
        d=status(500),
        e=ok(),
    )
    out = await call(rt)
    assert out.provider_id == "e"
    assert outcomes(rt, "a") == {"rate_limited": 1} and outcomes(rt, "b") == {"capability": 1}


async def test_caller_errors_come_back_as_the_providers_bytes() -> None:
    """A revert is the answer, untouched, and never retried."""
    rt = runtime(a=rpc_error(3, "execution reverted", "0x08c379a0"), b=ok())
    out = await call(rt, "eth_call", [{"to": "0x" + "00" * 20}, "latest"])
    assert out.status == "rpc_error" and out.body is not None
    doc = orjson.loads(out.body.replace(out.tid, b"7", 1))
    error = {"code": 3, "message": "execution reverted", "data": "0x08c379a0"}
    assert doc == {"jsonrpc": "2.0", "id": 7, "error": error}
    assert transport(rt, "b").calls == 0


async def test_caller_error_without_our_id_is_re_encoded() -> None:
    """An error answer that lost our id goes back as its error object."""
    lost = b'{"jsonrpc":"2.0","id":null,"error":{"code":-32602,"message":"bad"}}'
    rt = runtime(a=lambda req: UpstreamResponse(200, lost, {}))
    out = await call(rt)
    assert out.status == "rpc_error" and out.body is None
    assert out.error == {"code": -32602, "message": "bad"}


async def test_method_missing_everywhere_is_32601() -> None:
    """anvil's HTTP and WebSocket wordings for an unknown method give the client -32601."""
    ws_wording = "data did not match any variant of untagged enum EthRpcCall"
    rt = runtime(a=rpc_error(-32601, "Method not found"), b=rpc_error(-32602, ws_wording))
    out = await call(rt, "eth_madeUp", [])
    assert out.error == {
        "code": -32601,
        "message": "Method not found",
        "data": {"providers_tried": ["a", "b"]},
    }
    known = runtime(b=rpc_error(-32602, ws_wording))  # a known method: the caller's params
    assert (await call(known)).status == "rpc_error"


async def test_absurd_retry_after_is_bounded() -> None:
    """Retry-After: 1e308 and retry_after 1e306 end in a clean -32000, rate-limited an hour."""
    rt = runtime(
        a=status(429, b"slow down", {b"retry-after": b"1e308"}),
        b=rpc_error(-32005, "limit", {"retry_after": 1e306}),
    )
    out = await call(rt)
    assert out.error is not None and out.error["data"]["retry_after_ms"] == 3_600_000
    ch = rt.router.channel("a", "http")
    assert ch is not None
    assert ch.evidence.rate_limit_remaining(0.0) <= 10**9  # finite
    now = time.monotonic()
    assert ch.evidence.rate_limit_remaining(now) <= MAX_RETRY_AFTER_S


async def test_no_candidates() -> None:
    """An unknown provider override leaves no channel: -32000 without an upstream call."""
    rt = runtime(a=ok())
    out = await execute(rt, "eth_getBalance", BALANCE, "priority", "zzz")
    assert out.error == {"code": -32000, "message": "No available providers for eth_getBalance"}
    assert transport(rt, "a").calls == 0


async def test_open_circuit_is_skipped_and_reported() -> None:
    """An open circuit is never dispatched to; with nothing else, retry_after_ms is given."""
    rt = runtime(a=ok())
    ch = rt.router.channel("a", "http")
    assert ch is not None
    ch.breaker.force_open(time.monotonic())
    out = await call(rt)
    assert out.error is not None and out.error["data"]["retry_after_ms"] > 0
    assert transport(rt, "a").calls == 0


async def test_block_number_answers_are_height_samples() -> None:
    """An eth_blockNumber result feeds the chain's height tracking."""
    rt = runtime(a=ok("0x10"))
    await call(rt, "eth_blockNumber", [])
    assert rt.router.state.height("a") == 16


async def test_pool_exhaustion_is_neutral() -> None:
    """A full pool is our condition, not the provider's: no failure recorded, next one."""
    rt = runtime(a=raises(PoolTimeout("full")), b=ok())
    out = await call(rt)
    assert out.provider_id == "b" and outcomes(rt, "a") == {}
    ch = rt.router.channel("a", "http")
    assert ch is not None and ch.evidence.total_failures == 0


# -- writes -----------------------------------------------------------------------------------

POLL = ["0x1"]  # eth_getFilterChanges consumes what it returns: one send, never replayed


async def poll(rt: ChainRuntime, **kw: Any) -> Outcome:
    """A filter poll through the driver itself (the filter flow would answer an unknown id)."""
    return await run(rt, "eth_getFilterChanges", POLL, "priority", None, **kw)


async def test_write_failing_after_dispatch_is_indeterminate() -> None:
    """A filter poll reset mid-flight is never resent; the error says why."""
    rt = runtime(a=raises(UpstreamDisconnected("reset")), b=ok([]))
    out = await poll(rt)
    assert out.error is not None
    assert out.error["message"] == "Upstream dispatch outcome is indeterminate"
    assert out.error["data"]["provider"] == "a" and out.provider_id == "a"
    assert transport(rt, "b").calls == 0
    assert not transport(rt, "a").requests[0].replay_safe


async def test_write_moves_on_when_nothing_was_sent() -> None:
    """A refused connection sent nothing: the write goes to the next provider."""
    rt = runtime(a=raises(UpstreamConnectError("refused")), b=ok([]))
    out = await poll(rt)
    assert out.provider_id == "b" and result_of(out) == []


async def test_write_is_never_hedged() -> None:
    """A write under a hedging chain still goes out once."""
    rt = runtime(HedgeConfig(delay_ms=1), a=ok([]), b=ok(["0x1"]))
    for _ in range(30):
        out = await poll(rt)
        assert not out.hedged
    assert transport(rt, "b").calls == 0


async def test_run_leaves_excluded_providers_out() -> None:
    """run(exclude=...) never sends to the providers it names."""
    rt = runtime(a=ok("0x1"), b=ok("0x2"))
    out = await run(rt, "eth_getBalance", BALANCE, "priority", None, exclude=("a",))
    assert out.provider_id == "b" and transport(rt, "a").calls == 0


# -- cancellation -------------------------------------------------------------------------------


@pytest.mark.parametrize("hedge", [None, HedgeConfig(delay_ms=5000)], ids=["inline", "raced"])
async def test_client_going_away_cancels_the_attempt(hedge: HedgeConfig | None) -> None:
    """Cancelling execute cancels the exchange in flight and records it neutral."""
    rt = budgeted(runtime(hedge, a=hang(), b=ok())) if hedge else runtime(a=hang(), b=ok())
    a = transport(rt, "a")
    task = asyncio.get_running_loop().create_task(call(rt))
    await settled(lambda: a.in_flight == 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await settled(lambda: a.cancelled == 1 and a.in_flight == 0)
    ch = rt.router.channel("a", "http")
    assert ch is not None and ch.evidence.total_failures == 0


async def test_failures_leave_the_channel_a_last_error() -> None:
    """A provider's failure is described on its channel (cause, message); a revert is not."""
    rt = runtime(
        a=status(502, b"<html>bad gateway</html>"),
        b=raises(UpstreamConnectError("cannot connect to http://b.example:80")),
        c=rpc_error(3, "execution reverted"),
    )
    out = await call(rt, "eth_call", [{"to": "0x" + "00" * 20}, "latest"])
    assert out.status == "rpc_error" and out.provider_id == "c"
    faults = {pid: rt.router.channel(pid, "http").health.last for pid in ("a", "b", "c")}
    assert faults["a"] is not None and faults["a"].cause == "http_status"
    assert faults["a"].status == 502
    assert faults["b"] is not None and "cannot connect" in faults["b"].message
    assert faults["c"] is None


@pytest.mark.parametrize("hedge", [None, HedgeConfig(delay_ms=5000)], ids=["inline", "raced"])
async def test_keep_result_hands_back_the_parsed_result(hedge: HedgeConfig | None) -> None:
    """run(keep_result=True) gives the winning answer's result as parsed to judge it."""
    rt = runtime(hedge, a=ok(["0x1", "0x2"]), b=ok("0x3"))
    out = await run(rt, "eth_getBalance", BALANCE, "priority", None, keep_result=True)
    assert out.result == ["0x1", "0x2"] and result_of(out) == out.result
    out = await run(rt, "eth_getBalance", BALANCE, "priority", None)
    assert out.result is None


@pytest.mark.parametrize("hedge", [None, HedgeConfig(delay_ms=5000)], ids=["inline", "raced"])
async def test_the_judged_document_is_handed_on(hedge: HedgeConfig | None) -> None:
    """Outcome.doc is the winning answer as parsed to judge it (the response cache reads
    it instead of parsing the body again); a large answer's is its envelope."""
    rt = runtime(hedge, a=ok(["0x1", "0x2"]))
    out = await run(rt, "eth_getBalance", BALANCE, "priority", None)
    assert out.doc == orjson.loads(out.body or b"") and out.doc["result"] == ["0x1", "0x2"]
    big = ["0x" + "ab" * 32] * 100
    rt = runtime(hedge, a=ok(big))
    out = await run(rt, "eth_getBalance", BALANCE, "priority", None)
    assert len(out.body or b"") > 4096 and out.doc["result"] is LARGE_RESULT
    out = await run(rt, "eth_getBalance", BALANCE, "priority", None, keep_result=True)
    assert out.doc["result"] == big == out.result
    rt = runtime(hedge, a=rpc_error(3, "execution reverted"))
    out = await run(rt, "eth_getBalance", BALANCE, "priority", None)
    assert out.status == "rpc_error" and out.doc is None
