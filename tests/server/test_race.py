"""Hedged requests (server/race.py) over in-memory transports: the first attempt inline,
hedges as tasks; who wins, what gets cancelled and recorded, the budget, per-method
switches."""

from __future__ import annotations

import asyncio
import time

from lasso.config import HedgeConfig, MethodOverride
from lasso.kernel.breaker import BreakerState
from lasso.net.http_conn import UpstreamResponse
from lasso.net.transport import MemoryRequest, result_answer
from server_pipeline_support import (
    BALANCE,
    budgeted,
    call,
    hang,
    ok,
    outcomes,
    result_of,
    rpc_error,
    runtime,
    settled,
    slow_ok,
    status,
    transport,
)

# -- hedging ----------------------------------------------------------------------------------


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


async def test_primary_failing_while_the_hedge_runs() -> None:
    """The inline first attempt fails after the hedge went out: the hedge's answer wins."""
    hedge_out = asyncio.Event()
    hedge_go = asyncio.Event()

    async def primary(req: MemoryRequest) -> UpstreamResponse:
        await hedge_out.wait()
        return UpstreamResponse(500, b"oops", {})

    async def second(req: MemoryRequest) -> UpstreamResponse:
        hedge_out.set()
        await hedge_go.wait()
        return result_answer(req, "0xb")

    rt = budgeted(runtime(HedgeConfig(delay_ms=5), a=primary, b=second))
    task = asyncio.ensure_future(call(rt))
    await asyncio.wait_for(hedge_out.wait(), 5.0)
    await settled(lambda: outcomes(rt, "a") == {"failure": 1})
    assert not task.done()  # the hedge is still out: the request waits for it
    hedge_go.set()
    out = await task
    assert result_of(out) == "0xb" and out.hedge_winner == "hedge" and out.retries == 0


async def test_hedge_failing_while_the_primary_runs() -> None:
    """A hedge that fails is recorded against its provider; the first attempt still wins."""
    primary_go = asyncio.Event()
    hedge_failed = asyncio.Event()

    async def primary(req: MemoryRequest) -> UpstreamResponse:
        await primary_go.wait()
        return result_answer(req, "0xa")

    def broken(req: MemoryRequest) -> UpstreamResponse:
        hedge_failed.set()
        return UpstreamResponse(502, b"bad gateway", {})

    rt = budgeted(runtime(HedgeConfig(delay_ms=5), a=primary, b=broken))
    task = asyncio.ensure_future(call(rt))
    await asyncio.wait_for(hedge_failed.wait(), 5.0)
    await settled(lambda: outcomes(rt, "b") == {"failure": 1})
    primary_go.set()
    out = await task
    assert result_of(out) == "0xa" and out.hedged and out.hedge_winner == "primary"


async def test_two_hedges_staggered_behind_an_inline_primary() -> None:
    """max_hedges 2: two racing attempts after the delay, the second answers, both
    losers are cancelled."""
    rt = budgeted(runtime(HedgeConfig(delay_ms=5, max_hedges=2), a=hang(), b=hang(), c=ok("0xc")))
    out = await call(rt)
    assert result_of(out) == "0xc" and out.hedges == 2 and out.hedge_winner == "hedge"
    await settled(lambda: transport(rt, "a").cancelled == 1 and transport(rt, "b").cancelled == 1)


async def test_a_hedge_answering_the_callers_error_ends_the_request() -> None:
    """An error that is the caller's fault, from a hedge, is the answer (no waiting on)."""
    rt = budgeted(runtime(HedgeConfig(delay_ms=5), a=hang(), b=rpc_error(3, "execution reverted")))
    out = await call(rt)
    assert out.status == "rpc_error" and out.provider_id == "b"
    await settled(lambda: transport(rt, "a").cancelled == 1)


async def test_refused_hedge_goes_to_the_next_provider() -> None:
    """A hedge whose breaker is open is skipped for the next provider, from the timer."""
    rt = budgeted(runtime(HedgeConfig(delay_ms=5), a=hang(), b=ok("0xb"), c=ok("0xc")))
    ch = rt.router.channel("b", "http")
    assert ch is not None
    ch.breaker.force_open(time.monotonic())
    out = await call(rt)
    assert result_of(out) == "0xc" and out.hedges == 1
    assert transport(rt, "b").calls == 0


async def test_upstream_latency_is_the_time_spent_waiting_not_the_sum_of_racers() -> None:
    """upstream_latency is the wall time during which an attempt was in flight: a hedge
    winning over a hanging primary counts from the primary's start (not only the hedge's
    own time), and a primary failing while the hedge runs is not added on top of it."""
    rt = budgeted(runtime(HedgeConfig(delay_ms=60), a=hang(), b=ok("0xb")))
    t0 = time.monotonic()
    out = await call(rt)
    wall = time.monotonic() - t0
    assert out.hedge_winner == "hedge"
    assert 0.055 <= out.upstream_latency <= wall

    async def failing(req: MemoryRequest) -> UpstreamResponse:
        await asyncio.sleep(0.15)  # the simulated provider's latency, then a failure
        return UpstreamResponse(502, b"bad gateway", {})

    rt = budgeted(runtime(HedgeConfig(delay_ms=20), a=failing, b=slow_ok(0.2, "0xb")))
    t0 = time.monotonic()
    out = await call(rt)
    wall = time.monotonic() - t0
    assert result_of(out) == "0xb" and out.hedge_winner == "hedge"
    # Summed, the two attempts would be about 0.15 + 0.2 = 0.35 s within a ~0.22 s request.
    assert 0.2 <= out.upstream_latency <= wall
