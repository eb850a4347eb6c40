"""Upstream payload models, facts and decisions (kernel/subscriptions/events.py)."""

from __future__ import annotations

import dataclasses
from typing import get_args

import pytest

from lasso.kernel.subscriptions import (
    BlocksDropped,
    Decision,
    Dropped,
    Fact,
    HeadReceived,
    HeadSeen,
    LogReceived,
    Subscribed,
    SubscribeFailed,
    TxReceived,
    UpstreamLost,
    parse_header,
    parse_log,
)
from lasso.kernel.subscriptions.events import BlockRefs, ProviderFact

from kernel_subscriptions_support import (
    bhash,
    log_entry,
    type_tag,
)


def test_parsers_reject_malformed_events() -> None:
    """Headers and logs without number/hash/index parse to None; removed is read."""
    assert parse_header(None) is None
    assert parse_header({"number": "0x1", "hash": "0x12", "parentHash": bhash(0)}) is None
    assert parse_header({"number": "12", "hash": bhash(1), "parentHash": bhash(0)}) is None
    assert parse_header({"number": "0xzz", "hash": bhash(1), "parentHash": bhash(0)}) is None
    assert parse_log([]) is None
    assert parse_log({"blockNumber": "0x1", "blockHash": bhash(1)}) is None
    entry = log_entry(3, 1, removed=True)
    assert entry.removed and entry.position == (3, 1)


def _members(union: object) -> list[type]:
    return list(get_args(union))


def test_every_fact_and_decision_has_its_own_type_tag() -> None:
    """Each member of Fact and of Decision carries a distinct ``type`` tag by default."""
    for union in (Fact, Decision):
        classes = _members(union)
        tags = [type_tag(c) for c in classes]
        assert len(set(tags)) == len(tags) == len(classes)


def test_provider_facts_share_one_base() -> None:
    """Exactly the facts that name a provider derive from ProviderFact; nothing else does."""
    named = {c for c in _members(Fact) if "provider" in _field_names(c)}
    assert named == {c for c in _members(Fact) if issubclass(c, ProviderFact)}
    assert named == {
        Subscribed,
        SubscribeFailed,
        UpstreamLost,
        HeadReceived,
        LogReceived,
        TxReceived,
        HeadSeen,
    }
    assert not any(issubclass(c, ProviderFact) for c in _members(Decision))


def test_facts_are_frozen_values() -> None:
    """Facts compare by value and class, hash, refuse changes and print provider first."""
    lost = UpstreamLost(provider="p1", reason="stale")
    assert lost == UpstreamLost(provider="p1", reason="stale")
    assert hash(lost) == hash(UpstreamLost(provider="p1", reason="stale"))
    other_class: object = Subscribed(provider="p1")
    assert SubscribeFailed(provider="p1") != other_class
    assert repr(lost) == "UpstreamLost(provider='p1', reason='stale', type='upstream_lost')"
    with pytest.raises(dataclasses.FrozenInstanceError):
        lost.provider = "p2"  # type: ignore[misc]
    assert not hasattr(lost, "__dict__")  # slots, the base's field included
    assert TxReceived(provider="p", tx_hash="0x1", payload=1) == TxReceived(
        provider="p", tx_hash="0x1", payload=2
    )  # the payload is forwarded, not compared


def test_dropped_blocks_are_ascending_pairs() -> None:
    """Dropped and BlocksDropped carry the same ``(number, hash)`` pairs."""
    blocks: BlockRefs = ((4, bhash(4)), (5, bhash(5)))
    assert Dropped(blocks=blocks).blocks == BlocksDropped(blocks=blocks).blocks == blocks


def _field_names(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}
