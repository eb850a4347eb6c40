"""SubscriptionManager against simulated providers over real upstream WebSockets.

The client side is a fake with the ``WsClient`` surface (``id``, ``rt``, ``provider_id``,
``send_raw``); upstreams are the simulator's ``/ws`` endpoints reached through the node's
real :class:`~lasso.net.ws_upstream.UpstreamWs` connections.
"""

from __future__ import annotations

import itertools
from typing import Any

import orjson
import pytest

from lasso.kernel.breaker import BreakerState
from lasso.server.subscriptions import SubscriptionError, SubscriptionManager

from support import eventually, fleet_chain_yaml, profile_yaml

pytestmark = pytest.mark.integration

FAST_WS = {
    "startup_jitter": 0.0,
    "reconnect_base": 0.05,
    "reconnect_cap": 0.2,
    "reconnect_jitter": 0.0,
    "heartbeat": 1.0,
}
TOPIC_FILTER_A = {"topics": [None]}
_ids = itertools.count(1)


class FakeClient:
    """The part of ``WsClient`` the manager uses, recording what it is sent."""

    def __init__(self, rt: Any, provider_id: str | None = None) -> None:
        self.id = next(_ids)
        self.rt = rt
        self.provider_id = provider_id
        self.frames: list[dict[str, Any]] = []
        self.closed = False
        self.accepting = True

    def send_raw(self, frame: bytes) -> bool:
        if self.closed or not self.accepting:
            return False
        self.frames.append(orjson.loads(frame))
        return True

    def send_notification(self, sub_id: str, result: Any) -> bool:
        return self.send_raw(
            orjson.dumps(
                {
                    "jsonrpc": "2.0",
                    "method": "eth_subscription",
                    "params": {"subscription": sub_id, "result": result},
                }
            )
        )

    def results(self, sub_id: str) -> list[Any]:
        return [f["params"]["result"] for f in self.frames if f["params"]["subscription"] == sub_id]

    def numbers(self, sub_id: str) -> list[int]:
        return [int(r["number"], 16) for r in self.results(sub_id)]


def consecutive(nums: list[int]) -> bool:
    return bool(nums) and nums == list(range(nums[0], nums[0] + len(nums)))


async def start(
    lasso_node: Any,
    sim_fleet: Any,
    ids: tuple[str, ...] = ("a", "b", "c"),
    block_time_s: float = 0.1,
    extra: str = "",
    ws: tuple[str, ...] | None = None,
) -> tuple[Any, Any, SubscriptionManager]:
    fleet = await sim_fleet(list(ids), block_time_s=block_time_s)
    with_ws = ids if ws is None else ws
    lines = {pid: f"ws_url: {url}" for pid, url in fleet.ws_urls().items() if pid in with_ws}
    chain = fleet_chain_yaml(fleet, extra=extra, providers=lines)
    app = await lasso_node(profile_yaml(chain), ws_upstream_options=FAST_WS)
    mgr: SubscriptionManager = app.subscriptions
    mgr.grace_s = 0.2
    mgr.establish_timeout_s = 3.0
    mgr.circuit_check_s = 0.05
    ups = list(app.ws_upstreams)
    await eventually(lambda: ups and all(up.connected for up in ups), message="upstreams up")
    return fleet, app, mgr


def rt_of(app: Any) -> Any:
    return app.runtime.profile("public").chains["ethereum"]


async def test_clients_share_one_upstream_per_key(lasso_node: Any, sim_fleet: Any) -> None:
    """Fifty clients, equal filters spelled differently: one upstream subscription per key,
    every client gets the same heads under its own 16-hex id."""
    fleet, app, mgr = await start(lasso_node, sim_fleet)
    rt = rt_of(app)
    clients = [FakeClient(rt) for _ in range(50)]
    ids = [await mgr.subscribe(c, ["newHeads"]) for c in clients]
    assert len(set(ids)) == 50 and all(len(i) == 16 and int(i, 16) >= 0 for i in ids)
    a = FakeClient(rt)
    b = FakeClient(rt)
    addr = "0x" + "Ab" * 20
    await mgr.subscribe(a, ["logs", {"address": [addr, addr], "topics": [None]}])
    await mgr.subscribe(b, ["logs", {"address": addr.lower()}])
    kinds = sorted(s.kind for s in mgr.streams)
    assert kinds == ["logs", "newHeads"]  # logs share the chain's newHeads stream too
    sim_subs = sum(len(c.subscriptions) for p in fleet for c in p._ws_clients)
    # one per key, plus the block-sync feed the registry keeps per connection
    assert sim_subs == 2 + len(fleet)
    await eventually(lambda: all(len(c.numbers(i)) >= 3 for c, i in zip(clients, ids, strict=True)))
    first = clients[0].numbers(ids[0])
    assert consecutive(first)
    metrics = app.metrics.render(app).decode()
    assert 'lasso_subscriptions{chain="ethereum",kind="newHeads",node_id="test"} 50.0' in metrics
    assert "lasso_upstream_subscriptions{" in metrics
    assert mgr.unsubscribe(clients[0], ids[0]) is True
    assert mgr.unsubscribe(clients[0], ids[0]) is False
    assert mgr.unsubscribe(clients[2], ids[1]) is False  # not its subscription
    assert "streams=2" in repr(mgr)


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
    text = app.metrics.render(app).decode()
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


async def test_grace_period_then_unsubscribe(lasso_node: Any, sim_fleet: Any) -> None:
    """The upstream outlives its last client by the grace period; a client coming back in
    time reuses it; after it, the upstream is unsubscribed."""
    fleet, app, mgr = await start(lasso_node, sim_fleet)
    rt = rt_of(app)
    c1 = FakeClient(rt)
    sid = await mgr.subscribe(c1, ["newPendingTransactions"])
    (stream,) = mgr.streams
    await eventually(lambda: c1.results(sid))
    assert all(isinstance(h, str) and h.startswith("0x") for h in c1.results(sid))
    mgr.grace_s = 5.0
    mgr.drop_client(c1)
    assert stream.grace_handle is not None and mgr.streams == [stream]
    c2 = FakeClient(rt)
    await mgr.subscribe(c2, ["newPendingTransactions"])
    assert mgr.streams == [stream] and stream.grace_handle is None
    mgr.grace_s = 0.05
    mgr.drop_client(c2)

    def upstream_subs() -> int:
        return sum(
            1
            for p in fleet
            for c in p._ws_clients
            for s in c.subscriptions.values()
            if s.kind == "newPendingTransactions"
        )

    await eventually(lambda: not mgr.streams and upstream_subs() == 0)
    assert app.metrics.subscriptions[("ethereum", "newPendingTransactions")] == 0


async def test_bad_params_and_impossible_subscriptions(lasso_node: Any, sim_fleet: Any) -> None:
    """Bad params and overrides that cannot serve get -32602; no WS provider gets -32000."""
    fleet, app, mgr = await start(lasso_node, sim_fleet, ws=("a",))
    rt = rt_of(app)
    for params in (["newBlocks"], [], ["logs", {"address": "nope"}], ["newHeads", {"x": 1}]):
        with pytest.raises(SubscriptionError) as err:
            await mgr.subscribe(FakeClient(rt), params)
        assert err.value.code == -32602
    with pytest.raises(SubscriptionError) as err:
        await mgr.subscribe(FakeClient(rt, provider_id="b"), ["newHeads"])
    assert err.value.code == -32602 and "ws_url" in err.value.message
    sid = await mgr.subscribe(FakeClient(rt, provider_id="a"), ["newHeads"])
    assert len(sid) == 16


async def test_no_websocket_provider_at_all(lasso_node: Any, sim_fleet: Any) -> None:
    """A chain without any ws_url answers -32000 at once."""
    fleet = await sim_fleet(["a"])
    app = await lasso_node(profile_yaml(fleet_chain_yaml(fleet)))
    with pytest.raises(SubscriptionError) as err:
        await app.subscriptions.subscribe(FakeClient(rt_of(app)), ["newHeads"])
    assert err.value.code == -32000


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


async def test_slow_client_loses_its_subscription(lasso_node: Any, sim_fleet: Any) -> None:
    """A client whose queue refuses a frame is unsubscribed; the others keep receiving."""
    fleet, app, mgr = await start(lasso_node, sim_fleet)
    rt = rt_of(app)
    slow, ok = FakeClient(rt), FakeClient(rt)
    s1 = await mgr.subscribe(slow, ["newHeads"])
    s2 = await mgr.subscribe(ok, ["newHeads"])
    slow.accepting = False
    await eventually(lambda: len(ok.numbers(s2)) >= 3)
    assert mgr.unsubscribe(slow, s1) is False
    (stream,) = mgr.streams
    assert stream.slow_drops == 1
    text = app.metrics.render(app).decode()
    assert 'reason="slow_client"} 1.0' in text


async def test_reorg_replaces_heads_and_removes_logs(lasso_node: Any, sim_fleet: Any) -> None:
    """After a simulated reorg the client gets the new canonical heads, and logs of the
    replaced blocks come back with removed: true before the new ones."""
    fleet, app, mgr = await start(lasso_node, sim_fleet, block_time_s=0.2)
    rt = rt_of(app)
    client = FakeClient(rt)
    heads = await mgr.subscribe(client, ["newHeads"])
    logs = await mgr.subscribe(client, ["logs", {}])
    await eventually(lambda: len(client.numbers(heads)) >= 3 and client.results(logs))
    first = fleet.reorg(2)
    chain = fleet.chain()

    def settled() -> bool:
        nums = client.numbers(heads)
        return bool(nums) and nums[-1] >= first + 3

    await eventually(settled, timeout=10)
    # the view after applying every head in order equals the chain
    view: dict[int, str] = {}
    for r in client.results(heads):
        view[int(r["number"], 16)] = r["hash"]
    top = max(view)
    for n in range(first, top + 1):
        assert view[n] == chain.block_hash(n)
    # logs: every removal names a delivered log and precedes logs of its block number
    seen: set[tuple[str, str]] = set()
    removed_numbers: set[int] = set()
    for r in client.results(logs):
        key = (r["blockHash"], r["logIndex"])
        if r.get("removed"):
            assert key in seen
            seen.discard(key)
            removed_numbers.add(int(r["blockNumber"], 16))
        else:
            assert key not in seen
            seen.add(key)
    if any(chain.logs(n) for n in range(first, first + 2)):
        assert removed_numbers
    for bh, _ in seen:
        n = next(int(r["blockNumber"], 16) for r in client.results(logs) if r["blockHash"] == bh)
        if n <= top:
            assert chain.block_hash(n) == bh
    assert sum(s.machine.dropped for s in mgr.streams) == 0
