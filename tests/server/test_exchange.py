"""The drivers' shared pieces: transport errors as facts, ids, request bytes, outcomes."""

from __future__ import annotations

import orjson
import pytest

from lasso.kernel.attempts import TimedOut, TransportFailed
from lasso.kernel.classify import Category
from lasso.net.errors import (
    PoolTimeout,
    UpstreamConnectError,
    UpstreamDisconnected,
    UpstreamError,
    UpstreamNotConnected,
    UpstreamProtocolError,
    UpstreamTimeout,
)
from lasso.server.exchange import (
    Outcome,
    encode_upstream_request,
    failure_fact,
    new_transport_id,
)


@pytest.mark.parametrize(
    ("exc", "message", "dispatched", "fault"),
    [
        (PoolTimeout("full"), "Upstream connection pool exhausted", False, False),
        (UpstreamConnectError("refused"), "Upstream connection failed", False, True),
        (UpstreamNotConnected("down"), "Upstream connection failed", False, False),
        (UpstreamDisconnected("reset"), "Upstream connection lost", True, True),
        (UpstreamProtocolError("junk"), "Upstream connection lost", True, True),
    ],
)
def test_transport_errors_become_facts(
    exc: UpstreamError, message: str, dispatched: bool, fault: bool
) -> None:
    """Each transport error keeps its category, dispatched and provider_fault."""
    fact = failure_fact(3, exc)
    assert isinstance(fact, TransportFailed)
    assert (fact.attempt, fact.message) == (3, message)
    assert (fact.dispatched, fact.provider_fault) == (dispatched, fault)
    assert fact.category == Category(exc.category)


def test_timeouts_become_timed_out() -> None:
    """A timeout is its own fact, dispatched or not (connecting)."""
    assert failure_fact(0, UpstreamTimeout("late")) == TimedOut(attempt=0, dispatched=True)
    connecting = UpstreamTimeout("connect", dispatched=False)
    assert failure_fact(1, connecting) == TimedOut(attempt=1, dispatched=False)


def test_transport_ids_are_unique_and_encoded_first() -> None:
    """Ids never repeat; the request body carries the id first, as JSON text."""
    ids = {new_transport_id() for _ in range(1000)}
    assert len(ids) == 1000 and all(i.startswith("lasso-") for i in ids)
    tid = b'"lasso-x-1"'
    body = encode_upstream_request(tid, b'"eth_call"', [{"to": "0x1"}, "latest"])
    assert body.startswith(b'{"jsonrpc":"2.0","id":"lasso-x-1",')
    assert orjson.loads(body) == {
        "jsonrpc": "2.0",
        "id": "lasso-x-1",
        "method": "eth_call",
        "params": [{"to": "0x1"}, "latest"],
    }


def test_outcome_defaults() -> None:
    """A fresh outcome is an unhedged success with nothing set yet."""
    out = Outcome([])
    assert (out.status, out.body, out.error, out.hedged, out.hedge_winner) == (
        "success",
        None,
        None,
        False,
        None,
    )
    out.hedges = 1
    assert out.hedged
