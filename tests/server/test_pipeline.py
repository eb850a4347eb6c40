"""The pipeline driver over in-memory transports: failover, writes, errors and hedging
end to end, without sockets (tests/integration has the same stories over real ones)."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from types import MappingProxyType
from typing import Any

import orjson
import pytest

from lasso.config import ChainConfig, HedgeConfig, MethodOverride, ProviderConfig
from lasso.kernel.breaker import BreakerConfig, BreakerState
from lasso.kernel.classify import MAX_RETRY_AFTER_S
from lasso.kernel.router import BreakerRegistry, ChainRouter
from lasso.net.errors import (
    PoolTimeout,
    UpstreamConnectError,
    UpstreamDisconnected,
    UpstreamError,
)
from lasso.net.http_conn import UpstreamResponse
from lasso.net.transport import MemoryRequest, MemoryTransport, error_answer, result_answer
from lasso.server.events import EventBus
from lasso.server.pipeline import Outcome, execute
from lasso.server.runtime import ChainRuntime

BALANCE = ["0x00000000000000000000000000000000000000aa", "latest"]
Handler = Callable[[MemoryRequest], UpstreamResponse | Awaitable[UpstreamResponse]]


def ok(result: Any = "0x1") -> Handler:
    return lambda req: result_answer(req, result)


def status(code: int, body: bytes = b"oops", headers: dict[bytes, bytes] | None = None) -> Handler:
    return lambda req: UpstreamResponse(code, body, headers or {})


def raises(exc: UpstreamError) -> Handler:
    def handler(req: MemoryRequest) -> UpstreamResponse:
        raise exc

    return handler


def rpc_error(code: int, message: str, data: Any = None) -> Handler:
    return lambda req: error_answer(req, code, message, data=data)


def hang() -> Handler:
    """Never answers (until cancelled or timed out)."""

    async def handler(req: MemoryRequest) -> UpstreamResponse:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    return handler


def runtime(
    hedge: HedgeConfig | None = None,
    overrides: dict[str, MethodOverride] | None = None,
    **handlers: Handler,
) -> ChainRuntime:
    """A chain whose providers (in priority order) answer with ``handlers``."""
    providers = tuple(
        ProviderConfig(id=pid, name=pid, url=f"http://{pid}.example", priority=i)
        for i, pid in enumerate(handlers)
    )
    chain = ChainConfig(
        key="eth",
        chain_id=1,
        name="eth",
        providers=providers,
        hedge=hedge,
        method_overrides=MappingProxyType(overrides or {}),
    )
    rng = random.Random(7)
    router = ChainRouter(chain, BreakerRegistry(BreakerConfig(), rng), rng, profile="t")
    transports = {pid: MemoryTransport(h) for pid, h in handlers.items()}
    return ChainRuntime("t", chain, router, transports, EventBus("n"))


def transport(rt: ChainRuntime, pid: str) -> MemoryTransport:
    t = rt.pools[pid]
    assert isinstance(t, MemoryTransport)
    return t


async def call(
    rt: ChainRuntime, method: str = "eth_getBalance", params: Any = None, **kw: Any
) -> Outcome:
    return await execute(rt, method, BALANCE if params is None else params, "priority", None, **kw)


def result_of(out: Outcome) -> Any:
    assert out.body is not None, out.error
    doc = orjson.loads(out.body.replace(out.tid, b"1", 1))
    return doc["result"]


async def settled(check: Callable[[], bool]) -> None:
    """Let the loop run until ``check()`` holds (a cancelled task finishes on its next turn)."""
    for _ in range(100):
        if check():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never held")


def outcomes(rt: ChainRuntime, pid: str, method: str = "eth_getBalance") -> dict[str, int]:
    ch = rt.router.channel(pid, "http")
    assert ch is not None
    row = ch.methods.get(method)
    return {} if row is None else {k: n for k, n in row.outcomes.items() if n}


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

RAW_TX = ["0x02f8"]


async def test_write_failing_after_dispatch_is_indeterminate() -> None:
    """eth_sendRawTransaction reset mid-flight is never resent; the error says why."""
    rt = runtime(a=raises(UpstreamDisconnected("reset")), b=ok("0xhash"))
    out = await call(rt, "eth_sendRawTransaction", RAW_TX)
    assert out.error is not None
    assert out.error["message"] == "Upstream dispatch outcome is indeterminate"
    assert out.error["data"]["provider"] == "a" and out.provider_id == "a"
    assert transport(rt, "b").calls == 0
    assert not transport(rt, "a").requests[0].replay_safe


async def test_write_moves_on_when_nothing_was_sent() -> None:
    """A refused connection sent nothing: the write goes to the next provider."""
    rt = runtime(a=raises(UpstreamConnectError("refused")), b=ok("0xhash"))
    out = await call(rt, "eth_sendRawTransaction", RAW_TX)
    assert out.provider_id == "b" and result_of(out) == "0xhash"


async def test_write_is_never_hedged() -> None:
    """A write under a hedging chain still goes out once."""
    rt = runtime(HedgeConfig(delay_ms=1), a=ok("0xhash"), b=ok("0xother"))
    for _ in range(30):
        out = await call(rt, "eth_sendRawTransaction", RAW_TX)
        assert not out.hedged
    assert transport(rt, "b").calls == 0


# -- hedging ----------------------------------------------------------------------------------


def budgeted(rt: ChainRuntime, requests: int = 100) -> ChainRuntime:
    assert rt.hedging is not None
    for _ in range(requests):
        rt.hedging.budget.note_request(time.monotonic())
    return rt


async def test_hedge_wins_against_a_hanging_primary() -> None:
    """The slow primary is raced after the delay; the hedge's answer wins, the primary's
    exchange is cancelled, and nothing counts against it."""
    rt = budgeted(runtime(HedgeConfig(delay_ms=20), a=hang(), b=ok("0xb")))
    out = await call(rt)
    assert result_of(out) == "0xb" and out.provider_id == "b"
    assert out.hedged and out.hedge_winner == "hedge" and out.retries == 0
    a, b = transport(rt, "a"), transport(rt, "b")
    await settled(lambda: a.cancelled == 1 and a.in_flight == 0)
    assert a.requests[0].tid != b.requests[0].tid  # each racer has its own id
    assert out.tid == b.requests[0].tid
    ch = rt.router.channel("a", "http")
    assert ch is not None
    assert ch.evidence.total_failures == 0 and ch.breaker.state(0.0) is BreakerState.CLOSED
    assert outcomes(rt, "a") == {}
    row = ch.methods["eth_getBalance"]
    assert len(row.recent_latencies()) == 1 and row.recent_latencies()[0] >= 20.0  # lower bound


async def test_fast_primary_is_not_hedged() -> None:
    """A primary answering before the delay leaves nothing to race."""
    rt = budgeted(runtime(HedgeConfig(delay_ms=5000), a=ok(), b=ok()))
    out = await call(rt)
    assert not out.hedged and transport(rt, "b").calls == 0


async def test_primary_wins_when_it_answers_first() -> None:
    """The hedge is cancelled when the primary answers while it is in flight."""
    gate = asyncio.Event()

    async def slow(req: MemoryRequest) -> UpstreamResponse:
        await gate.wait()
        return result_answer(req, "0xa")

    async def slower(req: MemoryRequest) -> UpstreamResponse:
        gate.set()  # the hedge is out: let the primary answer
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    rt = budgeted(runtime(HedgeConfig(delay_ms=10), a=slow, b=slower))
    out = await call(rt)
    assert result_of(out) == "0xa" and out.hedge_winner == "primary"
    await settled(lambda: transport(rt, "b").cancelled == 1)


async def test_spent_budget_skips_the_hedge() -> None:
    """With no budget left the request waits for its primary and reports the skip."""
    gate = asyncio.get_running_loop().call_later
    done = asyncio.Event()
    gate(0.05, done.set)

    async def slowish(req: MemoryRequest) -> UpstreamResponse:
        await done.wait()
        return result_answer(req, "0xa")

    rt = runtime(HedgeConfig(delay_ms=5), a=slowish, b=ok())
    out = await call(rt)
    assert result_of(out) == "0xa" and out.hedge_skipped and not out.hedged
    assert transport(rt, "b").calls == 0


def slow_ok(seconds: float, result: str) -> Handler:
    async def handler(req: MemoryRequest) -> UpstreamResponse:
        await asyncio.sleep(seconds)  # the simulated provider's latency
        return result_answer(req, result)

    return handler


async def test_hedge_off_for_one_method() -> None:
    """method_overrides.<m>.hedge: false keeps that method to one attempt at a time."""
    off = {"eth_getBalance": MethodOverride(hedge=False)}
    rt = budgeted(runtime(HedgeConfig(delay_ms=1), off, a=slow_ok(0.03, "0xa"), b=ok()))
    out = await call(rt)
    assert result_of(out) == "0xa" and not out.hedged and not out.hedge_skipped
    assert transport(rt, "b").calls == 0
    other = await call(rt, "eth_getCode", BALANCE)  # other methods still hedge
    assert other.hedged


async def test_failed_primary_then_hedge_failover() -> None:
    """A primary failing fast is failed over as usual under a hedging chain."""
    rt = budgeted(runtime(HedgeConfig(delay_ms=1000), a=status(500), b=ok("0xb")))
    out = await call(rt)
    assert result_of(out) == "0xb" and out.retries == 1 and not out.hedged


# -- cancellation -------------------------------------------------------------------------------


@pytest.mark.parametrize("hedge", [None, HedgeConfig(delay_ms=5000)], ids=["inline", "tasks"])
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
