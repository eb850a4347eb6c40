"""SubscriptionManager: streams shared per key, grace periods, refusals, reorgs across streams.

Against simulated providers over real upstream WebSockets; helpers in
``tests/server_subscriptions_support.py``.
"""

from __future__ import annotations

from typing import Any

import pytest

from lasso.server.subscriptions import SubscriptionError

from server_subscriptions_support import FakeClient, consecutive, rt_of, start
from support import eventually, fleet_chain_yaml, profile_yaml

pytestmark = pytest.mark.integration


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
    metrics = app.metrics.render().decode()
    assert 'lasso_subscriptions{chain="ethereum",kind="newHeads",node_id="test"} 50.0' in metrics
    assert "lasso_upstream_subscriptions{" in metrics
    assert mgr.unsubscribe(clients[0], ids[0]) is True
    assert mgr.unsubscribe(clients[0], ids[0]) is False
    assert mgr.unsubscribe(clients[2], ids[1]) is False  # not its subscription
    assert "streams=2" in repr(mgr)


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
