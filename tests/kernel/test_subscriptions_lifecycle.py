"""The stream lifecycle table and illegal moves (kernel/subscriptions/lifecycle.py)."""

from __future__ import annotations

from typing import get_args

import pytest

from lasso.kernel import subscriptions as ks
from lasso.kernel.subscriptions import (
    TRANSITIONS,
    Close,
    Fact,
    HeadReceived,
    IllegalMove,
    NoProvider,
    Retry,
    Start,
    StreamState,
    Subscribed,
    SubscribeFailed,
    SubscriptionStream,
    UpstreamLost,
)
from lasso.kernel.subscriptions.lifecycle import LIFECYCLE_FACTS

from kernel_subscriptions_support import (
    header,
    type_tag,
)


def test_transition_table_renders_and_illegal_moves_raise() -> None:
    """The table renders as Markdown; a lifecycle fact out of place raises IllegalMove."""
    md = ks.transition_table_markdown()
    assert "| active | `upstream_lost` | subscribing |" in md
    s = SubscriptionStream("newHeads")
    with pytest.raises(IllegalMove):
        s.handle(Subscribed(provider="p1"))
    with pytest.raises(IllegalMove):
        s.handle(HeadReceived(provider="p1", header=header(1)))
    s.handle(Start())
    with pytest.raises(IllegalMove):
        s.handle(Retry())
    with pytest.raises(ValueError):
        SubscriptionStream("blocks")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        SubscriptionStream("newHeads", window=1)


def test_lifecycle_facts_are_the_facts_the_table_names() -> None:
    """LIFECYCLE_FACTS are the type tags of the seven lifecycle facts; the rest are data."""
    lifecycle = [Start, Subscribed, SubscribeFailed, NoProvider, Retry, UpstreamLost, Close]
    tags = {type_tag(c) for c in lifecycle}
    assert LIFECYCLE_FACTS == tags
    data = set(get_args(Fact)) - set(lifecycle)
    assert not {type_tag(c) for c in data} & LIFECYCLE_FACTS


def test_every_live_state_can_close_and_closed_is_final() -> None:
    """Every state but CLOSED has a ``close`` row; no row leaves CLOSED."""
    for state in StreamState:
        if state is StreamState.CLOSED:
            assert not [k for k in TRANSITIONS if k[0] is state]
        else:
            assert TRANSITIONS[(state, "close")][0] is StreamState.CLOSED
    md = ks.transition_table_markdown().splitlines()
    assert len(md) == 2 + len(TRANSITIONS)
