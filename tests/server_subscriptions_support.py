"""Helpers of the subscription manager tests (``tests/server/subscriptions/``).

The client side is a fake with the ``WsClient`` surface (``id``, ``rt``, ``provider_id``,
``send_raw``); upstreams are the simulator's ``/ws`` endpoints reached through the node's
real :class:`~lasso.net.ws_upstream.UpstreamWs` connections.
"""

from __future__ import annotations

import itertools
from typing import Any

import orjson

from lasso.server.subscriptions import SubscriptionManager

from support import eventually, fleet_chain_yaml, profile_yaml

__all__ = ["FakeClient", "consecutive", "rt_of", "start"]

FAST_WS = {
    "startup_jitter": 0.0,
    "reconnect_base": 0.05,
    "reconnect_cap": 0.2,
    "reconnect_jitter": 0.0,
    "heartbeat": 1.0,
}
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
    """A simulated fleet and a node whose providers have ``ws_url`` (those in ``ws``), with
    the manager's timers shortened and every upstream WebSocket connected."""
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
