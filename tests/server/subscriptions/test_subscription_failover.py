"""Failover of a stream's upstream: dropped, stale, circuit open, none left then recovery.

Against simulated providers over real upstream WebSockets; helpers in
``tests/server_subscriptions_support.py``.
"""

from __future__ import annotations

from typing import Any

import pytest

from lasso.kernel.breaker import BreakerState
from lasso.server.subscriptions import SubscriptionError

from server_subscriptions_support import FakeClient, consecutive, rt_of, start
from support import eventually

pytestmark = pytest.mark.integration


async def test_upstream_drop_fails_over_without_gaps(lasso_node: Any, sim_fleet: Any) -> None:
    """Taking the serving provider down moves the subscription; the client sees every
    block once, in order, and keeps its id."""
    fleet, app, mgr = await start(lasso_node, sim_fleet)
    client = FakeClient(rt_of(app))
    sid = await mgr.subscribe(client, ["newHeads"])
    (stream,) = mgr.streams
    for _ in range(3):
        await eventually(lambda: stream.upstream is not None and len(client.numbers(sid)) >= 3)
        serving = stream.upstream.provider
        before = len(client.numbers(sid))
        await fleet[serving].update(down=True)
        await eventually(
            lambda s=serving: stream.upstream is not None and stream.upstream.provider != s
        )
        await eventually(lambda b=before: len(client.numbers(sid)) >= b + 5)
        await fleet[serving].update(down=False)
    nums = client.numbers(sid)
    assert consecutive(nums), nums
    assert stream.failovers == 3
    assert stream.machine.dropped == 0
    text = app.metrics.render().decode()
    assert 'lasso_subscription_failovers_total{chain="ethereum",kind="newHeads"' in text


async def test_stale_upstream_fails_over(lasso_node: Any, sim_fleet: Any) -> None:
    """A provider whose feed stalls (connection open, nothing sent) is left after the
    staleness timeout; the others' heads move the consensus, so it is not an idle chain."""
    fleet, app, mgr = await start(lasso_node, sim_fleet)
    mgr.stale_timeout_s = 0.4
    client = FakeClient(rt_of(app))
    sid = await mgr.subscribe(client, ["newHeads"])
    (stream,) = mgr.streams
    await eventually(lambda: stream.upstream is not None and len(client.numbers(sid)) >= 2)
    serving = stream.upstream.provider
    await fleet[serving].update(hang=True)
    await eventually(lambda: stream.upstream is not None and stream.upstream.provider != serving)
    before = len(client.numbers(sid))
    await eventually(lambda: len(client.numbers(sid)) >= before + 5)
    assert consecutive(client.numbers(sid))
    assert stream.olds or stream.failovers == 1
    await fleet[serving].update(hang=False)


async def test_open_circuit_moves_the_subscription(lasso_node: Any, sim_fleet: Any) -> None:
    """When the serving provider's WebSocket circuit opens, the subscription moves."""
    fleet, app, mgr = await start(lasso_node, sim_fleet)
    rt = rt_of(app)
    client = FakeClient(rt)
    sid = await mgr.subscribe(client, ["newHeads"])
    (stream,) = mgr.streams
    await eventually(lambda: stream.upstream is not None and client.numbers(sid))
    serving = stream.upstream.provider
    from time import monotonic

    rt.router.channel(serving, "ws").breaker.force_open(monotonic())
    assert rt.router.channel(serving, "ws").breaker.state(monotonic()) is BreakerState.OPEN
    await eventually(lambda: stream.upstream is not None and stream.upstream.provider != serving)
    before = len(client.numbers(sid))
    await eventually(lambda: len(client.numbers(sid)) >= before + 3)
    assert consecutive(client.numbers(sid))


async def test_no_provider_up_then_recovery(lasso_node: Any, sim_fleet: Any) -> None:
    """With every upstream down a new subscription fails after the wait; an existing one
    degrades, retries, and resumes as soon as a provider connects again."""
    fleet, app, mgr = await start(lasso_node, sim_fleet, ids=("a", "b"))
    rt = rt_of(app)
    client = FakeClient(rt)
    sid = await mgr.subscribe(client, ["newHeads"])
    (stream,) = mgr.streams
    await eventually(lambda: len(client.numbers(sid)) >= 2)
    for p in fleet:
        await p.update(down=True)
    await eventually(lambda: stream.machine.state == "degraded")
    mgr.establish_timeout_s = 0.2
    with pytest.raises(SubscriptionError) as err:
        await mgr.subscribe(FakeClient(rt), ["logs"])
    assert err.value.code == -32000
    before = len(client.numbers(sid))
    await fleet["b"].update(down=False)
    await eventually(lambda: len(client.numbers(sid)) >= before + 5)
    assert consecutive(client.numbers(sid))
