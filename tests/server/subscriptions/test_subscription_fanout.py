"""Fan-out to client subscriptions: frames, and slow clients losing their subscription.

Against simulated providers over real upstream WebSockets; helpers in
``tests/server_subscriptions_support.py``.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from lasso.server.subscriptions.fanout import frame_prefix

from server_subscriptions_support import FakeClient, rt_of, start
from support import eventually


def test_frame_prefix_makes_the_standard_notification() -> None:
    """A frame is the subscription's prefix, the result's JSON and ``}}``: the standard
    ``eth_subscription`` notification (EIP-1474 style, the id as given)."""
    sub_id = "00ff00ff00ff00ff"
    frame = frame_prefix(sub_id) + orjson.dumps({"number": "0x1"}) + b"}}"
    assert orjson.loads(frame) == {
        "jsonrpc": "2.0",
        "method": "eth_subscription",
        "params": {"subscription": sub_id, "result": {"number": "0x1"}},
    }


@pytest.mark.integration
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
    text = app.metrics.render().decode()
    assert 'reason="slow_client"} 1.0' in text
