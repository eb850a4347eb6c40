"""The subscription kernel: keys, filter normalization, and the gap-free stream machine."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lasso.kernel import subscriptions as ks
from lasso.kernel.subscriptions import (
    Backfill,
    BackfillDone,
    BackfillFailed,
    BlocksDropped,
    Close,
    Decision,
    Degraded,
    Dropped,
    Emit,
    Header,
    HeadReceived,
    HeadSeen,
    IllegalMove,
    LogEntry,
    LogReceived,
    NoProvider,
    Resubscribe,
    Retry,
    Start,
    StreamState,
    Subscribed,
    SubscribeFailed,
    SubscriptionParamsError,
    SubscriptionStream,
    TxReceived,
    UpstreamLost,
    Warn,
    normalize_filter,
    parse_header,
    parse_log,
    parse_subscription,
)

A1 = "0x" + "ab" * 20
A2 = "0x" + "0c" * 20
T1 = "0x" + "11" * 32
T2 = "0x" + "22" * 32
T3 = "0x" + "33" * 32


# -- a tiny chain model ------------------------------------------------------------------------


def bhash(n: int, branch: int = 0) -> str:
    return "0x" + f"{branch:02x}" + f"{n:062x}"


def header(n: int, branch: int = 0, parent_branch: int | None = None) -> Header:
    pb = branch if parent_branch is None else parent_branch
    payload = {"number": hex(n), "hash": bhash(n, branch), "parentHash": bhash(n - 1, pb)}
    h = parse_header(payload)
    assert h is not None
    return h


def chain(lo: int, hi: int, branch: int = 0, fork: int | None = None) -> dict[int, Header]:
    """Blocks lo..hi on ``branch``; at ``fork`` the parent is on branch 0."""
    return {
        n: header(n, branch, 0 if fork is not None and n == fork else branch)
        for n in range(lo, hi + 1)
    }


def log_entry(n: int, i: int, branch: int = 0, removed: bool = False) -> LogEntry:
    payload: dict[str, Any] = {
        "blockNumber": hex(n),
        "blockHash": bhash(n, branch),
        "logIndex": hex(i),
        "data": f"{n}/{i}/{branch}",
    }
    if removed:
        payload["removed"] = True
    e = parse_log(payload)
    assert e is not None
    return e


def numbers(ds: list[Decision]) -> list[int]:
    out = []
    for d in ds:
        if isinstance(d, Emit):
            assert isinstance(d.payload, dict)
            out.append(int(d.payload["number"], 16))
    return out


def emitted_logs(ds: list[Decision]) -> list[tuple[int, int, int, bool]]:
    out = []
    for d in ds:
        if isinstance(d, Emit):
            assert isinstance(d.payload, dict)
            n, i, b = (int(x) for x in d.payload["data"].split("/"))
            out.append((n, i, b, d.removed))
    return out


def active(kind: Any = "newHeads", provider: str = "p1", **kw: Any) -> SubscriptionStream:
    s = SubscriptionStream(kind, **kw)
    assert s.handle(Start()) == [Resubscribe(exclude=frozenset())]
    assert s.handle(Subscribed(provider=provider)) == []
    return s


def backfills(ds: list[Decision]) -> list[Backfill]:
    return [d for d in ds if isinstance(d, Backfill)]


# -- keys --------------------------------------------------------------------------------------


def test_equal_filters_give_equal_keys() -> None:
    """Case, order, duplicates, nulls and singleton lists do not change the key."""
    a = parse_subscription(
        ["logs", {"address": [A2.upper().replace("0X", "0x"), A1, A1], "topics": [[T2, T1], None]}]
    )
    b = parse_subscription(
        ["logs", {"topics": [[T1, T2, T1]], "address": [A1, A2], "fromBlock": None}]
    )
    assert a == b and hash(a) == hash(b)
    assert a.log_filter() == {"address": sorted([A1, A2]), "topics": [[T1, T2]]}
    assert parse_subscription(["logs", {"address": [A1]}]) == parse_subscription(
        ["logs", {"address": A1.upper().replace("0X", "0x")}]
    )


def test_missing_and_empty_filters_are_the_same_key() -> None:
    """``["logs"]``, ``["logs", null]`` and ``["logs", {}]`` share a key."""
    keys = {
        parse_subscription(p)
        for p in (["logs"], ["logs", None], ["logs", {}], ["logs", {"topics": []}])
    }
    assert len(keys) == 1
    (key,) = keys
    assert key.kind == "logs" and key.params() == ["logs", {}]


def test_topic_positions_normalize_like_geth() -> None:
    """A null in an OR-list is a wildcard; trailing wildcards drop; singletons unwrap."""
    f = normalize_filter({"topics": [[T2, T1], [T3], [T1, None], None]})
    assert f == {"topics": [[T1, T2], T3]}
    assert normalize_filter({"topics": [None, T1]}) == {"topics": [None, T1]}
    assert normalize_filter({"topics": [[]]}) == {}
    assert normalize_filter({"fromBlock": "0x0A", "toBlock": "LATEST"}) == {
        "fromBlock": "0xa",
        "toBlock": "latest",
    }
    assert normalize_filter({"address": []}) == {}


@pytest.mark.parametrize(
    "params",
    [
        [],
        "newHeads",
        [1],
        ["newBlocks"],
        ["newHeads", {"x": 1}],
        ["logs", {}, {}],
        ["logs", 5],
        ["logs", {"address": "0x12"}],
        ["logs", {"address": [A1, "nope"]}],
        ["logs", {"topics": "x"}],
        ["logs", {"topics": [T1, T1, T1, T1, T1]}],
        ["logs", {"topics": ["0x1234"]}],
        ["logs", {"blockHash": T1}],
        ["logs", {"fromBlock": "yesterday"}],
        ["logs", {"toBlock": 7}],
        ["newPendingTransactions", "yes"],
        ["newPendingTransactions", True, True],
    ],
)
def test_bad_params_are_rejected(params: Any) -> None:
    """Malformed params raise SubscriptionParamsError (JSON-RPC -32602)."""
    with pytest.raises(SubscriptionParamsError):
        parse_subscription(params)


def test_other_kinds() -> None:
    """newHeads (null extras ignored) and newPendingTransactions with and without full txs."""
    assert parse_subscription(["newHeads", None]).params() == ["newHeads"]
    assert parse_subscription(["newHeads"]).log_filter() == {}
    p = parse_subscription(["newPendingTransactions", False])
    assert p == parse_subscription(["newPendingTransactions"])
    assert parse_subscription(["newPendingTransactions", True]).params() == [
        "newPendingTransactions",
        True,
    ]


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


def test_lifecycle_failover_degrade_and_close() -> None:
    """Subscribe failures exclude providers; no provider degrades; retry clears exclusions."""
    s = SubscriptionStream("newHeads")
    assert s.handle(Start()) == [Resubscribe(exclude=frozenset())]
    assert s.handle(SubscribeFailed(provider="p1")) == [Resubscribe(exclude=frozenset({"p1"}))]
    assert s.handle(NoProvider()) == [Degraded(reason="no provider can take the subscription")]
    assert s.state is StreamState.DEGRADED
    assert s.handle(Retry()) == [Resubscribe(exclude=frozenset())]
    assert s.handle(Subscribed(provider="p2")) == []
    assert s.state is StreamState.ACTIVE and s.primary == "p2"
    assert s.handle(UpstreamLost(provider="p1", reason="ended")) == []  # not the primary
    assert s.state is StreamState.ACTIVE
    out = s.handle(UpstreamLost(provider="p2", reason="stale"))
    assert out[0] == Resubscribe(exclude=frozenset({"p2"}))
    assert s.state is StreamState.SUBSCRIBING and s.primary is None
    assert s.handle(Close()) == []
    assert s.state is StreamState.CLOSED
    assert s.handle(HeadReceived(provider="p2", header=header(1))) == []
    assert "closed" in repr(s)


# -- newHeads ----------------------------------------------------------------------------------


def test_heads_in_order_and_deduplicated() -> None:
    """Heads are emitted once each, in order; re-deliveries count as duplicates."""
    s = active()
    c = chain(1, 4)
    out: list[Decision] = []
    for n in (1, 2, 2, 3, 1, 4):
        out += s.handle(HeadReceived(provider="p1", header=c[n]))
    assert numbers(out) == [1, 2, 3, 4]
    assert s.duplicates == 2 and s.tip == 4


def test_gap_is_backfilled_then_delivered_in_order() -> None:
    """A head past tip+1 waits while the gap is fetched; backfilled blocks come first."""
    s = active()
    c = chain(1, 6)
    assert numbers(s.handle(HeadReceived(provider="p1", header=c[1]))) == [1]
    out = s.handle(HeadReceived(provider="p1", header=c[5]))
    (bf,) = backfills(out)
    assert (bf.from_block, bf.to_block) == (2, 4) and numbers(out) == []
    # a live head inside the gap arrives before the backfill: emitted, no duplicate later
    assert numbers(s.handle(HeadReceived(provider="p1", header=c[2]))) == [2]
    done = BackfillDone(
        request_id=bf.request_id, from_block=2, to_block=4, headers=(c[2], c[3], c[4])
    )
    assert numbers(s.handle(done)) == [3, 4, 5]
    assert s.backfilled == 2
    assert numbers(s.handle(HeadReceived(provider="p1", header=c[6]))) == [6]


def test_gap_over_the_cap_skips_the_oldest_blocks() -> None:
    """Past max_backfill_blocks the most recent blocks are fetched and the rest skipped."""
    s = active(max_backfill_blocks=3)
    c = chain(1, 20)
    s.handle(HeadReceived(provider="p1", header=c[1]))
    out = s.handle(HeadReceived(provider="p1", header=c[10]))
    (bf,) = backfills(out)
    assert (bf.from_block, bf.to_block) == (7, 9)
    assert any(isinstance(d, Warn) for d in out)
    out = s.handle(
        BackfillDone(request_id=bf.request_id, from_block=7, to_block=9, headers=(c[7], c[8], c[9]))
    )
    assert numbers(out) == [7, 8, 9, 10]
    assert s.dropped == 5  # blocks 2..6


def test_failed_backfills_give_up_after_three_attempts() -> None:
    """A gap that cannot be fetched is retried, then skipped with a warning."""
    s = active()
    c = chain(1, 5)
    s.handle(HeadReceived(provider="p1", header=c[1]))
    (bf,) = backfills(s.handle(HeadReceived(provider="p1", header=c[4])))
    for _ in range(2):
        (bf,) = backfills(s.handle(BackfillFailed(request_id=bf.request_id)))
        assert (bf.from_block, bf.to_block) == (2, 3)
    out = s.handle(BackfillFailed(request_id=bf.request_id))
    assert numbers(out) == [4] and s.dropped == 2
    assert s.handle(BackfillFailed(request_id=999)) == []  # stale answers are ignored
    assert s.handle(BackfillDone(request_id=999, from_block=1, to_block=1)) == []


def test_failover_catches_up_to_the_current_head() -> None:
    """After an upstream loss the stream fetches tip+1..head, then resumes on the new one."""
    s = active()
    c = chain(1, 12)
    for n in (1, 2, 3):
        s.handle(HeadReceived(provider="p1", header=c[n]))
    out = s.handle(UpstreamLost(provider="p1", reason="ended"))
    assert out[0] == Resubscribe(exclude=frozenset({"p1"}))
    (bf,) = backfills(out)
    assert (bf.from_block, bf.to_block, bf.exclude) == (4, None, frozenset({"p1"}))
    # the old upstream still delivers: it may extend the tip, nothing else
    assert numbers(s.handle(HeadReceived(provider="p1", header=c[4]))) == [4]
    assert numbers(s.handle(HeadReceived(provider="p1", header=c[6]))) == []
    done = BackfillDone(
        request_id=bf.request_id, from_block=4, to_block=6, headers=(c[4], c[5], c[6])
    )
    assert numbers(s.handle(done)) == [5, 6]
    out = s.handle(Subscribed(provider="p2"))
    (bf,) = backfills(out)
    assert (bf.from_block, bf.to_block) == (7, None)
    assert numbers(s.handle(HeadReceived(provider="p2", header=c[9]))) == []
    done = BackfillDone(request_id=bf.request_id, from_block=7, to_block=8, headers=(c[7], c[8]))
    assert numbers(s.handle(done)) == [7, 8, 9]


def test_catch_up_over_the_cap_is_reported() -> None:
    """A capped catch-up warns and accepts the skipped range once its blocks arrive."""
    s = active(max_backfill_blocks=2)
    c = chain(1, 10)
    s.handle(HeadReceived(provider="p1", header=c[1]))
    (bf,) = backfills(s.handle(UpstreamLost(provider="p1", reason="ended")))
    out = s.handle(
        BackfillDone(request_id=bf.request_id, from_block=9, to_block=10, headers=(c[9], c[10]))
    )
    assert any(isinstance(d, Warn) for d in out)
    assert numbers(out) == [9, 10] and s.dropped == 7
    (bf,) = backfills(s.handle(Subscribed(provider="p2")))
    assert s.handle(BackfillFailed(request_id=bf.request_id))[0].type == "warn"


def test_reorg_at_the_tip_emits_the_new_branch_once() -> None:
    """A new block at an emitted height whose parent is canonical replaces the old branch."""
    s = active()
    old = chain(1, 8)
    new = chain(7, 9, branch=1, fork=7)
    for n in range(1, 9):
        s.handle(HeadReceived(provider="p1", header=old[n]))
    out = s.handle(HeadReceived(provider="p1", header=new[7]))
    assert out[0] == Dropped(blocks=((7, bhash(7)), (8, bhash(8))))
    assert numbers(out) == [7]
    assert numbers(s.handle(HeadReceived(provider="p1", header=new[8]))) == [8]
    assert numbers(s.handle(HeadReceived(provider="p1", header=new[8]))) == []
    assert numbers(s.handle(HeadReceived(provider="p1", header=new[9]))) == [9]
    # a lagging provider re-sending the dead branch cannot drag the stream back
    assert s.handle(HeadReceived(provider="p9", header=old[8])) == []


def test_deep_reorg_walks_back_to_the_fork_point() -> None:
    """A head whose parent is unknown fetches its ancestors, then swaps the branch."""
    s = active()
    old = chain(1, 10)
    new = chain(6, 11, branch=1, fork=6)
    for n in range(1, 11):
        s.handle(HeadReceived(provider="p1", header=old[n]))
    out = s.handle(HeadReceived(provider="p1", header=new[11]))
    (bf,) = backfills(out)
    assert bf.to_block == 10 and bf.from_block == 1
    answer = tuple([old[n] for n in range(1, 6)] + [new[n] for n in range(6, 11)])
    out = s.handle(
        BackfillDone(request_id=bf.request_id, from_block=1, to_block=10, headers=answer)
    )
    assert isinstance(out[0], Dropped)
    assert [n for n, _ in out[0].blocks] == [6, 7, 8, 9, 10]
    assert numbers(out) == [6, 7, 8, 9, 10, 11]


def test_reorg_beyond_the_window_rebases_with_a_warning() -> None:
    """When the fork point is older than the window, the stream rebases on the new branch."""
    s = active(window=4)
    old = chain(1, 10)
    for n in range(1, 11):
        s.handle(HeadReceived(provider="p1", header=old[n]))
    new = chain(2, 11, branch=1, fork=2)
    (bf,) = backfills(s.handle(HeadReceived(provider="p1", header=new[11])))
    assert (bf.from_block, bf.to_block) == (7, 10)
    out = s.handle(
        BackfillDone(
            request_id=bf.request_id,
            from_block=7,
            to_block=10,
            headers=tuple(new[n] for n in range(7, 11)),
        )
    )
    assert any(isinstance(d, Warn) for d in out)
    assert any(isinstance(d, Dropped) for d in out)
    assert numbers(out) == [7, 8, 9, 10, 11]


def test_anchor_covers_a_loss_before_the_first_head() -> None:
    """A stream lost before any head catches up from the head it started at; heads older
    than that are not owed; a first head past it opens a gap."""
    c = chain(1, 20)
    s = SubscriptionStream("newHeads")
    s.handle(Start())
    assert s.handle(Subscribed(provider="p1", head=5)) == []
    assert s.handle(HeadReceived(provider="p1", header=c[4])) == []
    (bf,) = backfills(s.handle(UpstreamLost(provider="p1", reason="ended")))
    assert (bf.from_block, bf.to_block) == (6, None)
    done = BackfillDone(
        request_id=bf.request_id, from_block=6, to_block=8, headers=(c[6], c[7], c[8])
    )
    assert numbers(s.handle(done)) == [6, 7, 8]
    s2 = SubscriptionStream("newHeads")
    s2.handle(Start())
    s2.handle(Subscribed(provider="p1", head=5))
    (bf,) = backfills(s2.handle(HeadReceived(provider="p1", header=c[9])))
    assert (bf.from_block, bf.to_block) == (6, 8)
    done = BackfillDone(request_id=bf.request_id, from_block=6, to_block=8, headers=(c[7], c[8]))
    out = s2.handle(done)
    (bf,) = backfills(out)
    assert (bf.from_block, bf.to_block) == (6, 6)
    assert numbers(
        s2.handle(BackfillDone(request_id=bf.request_id, from_block=6, to_block=6, headers=(c[6],)))
    ) == [6, 7, 8, 9]


def test_heads_from_the_past_and_the_first_head() -> None:
    """The first head sets the baseline; heads older than the window are ignored."""
    s = active(window=3)
    c = chain(1, 10)
    assert numbers(s.handle(HeadReceived(provider="p1", header=c[5]))) == [5]
    for n in (6, 7, 8):
        s.handle(HeadReceived(provider="p1", header=c[n]))
    assert s.handle(HeadReceived(provider="p1", header=header(2, branch=3))) == []
    assert s.handle(HeadReceived(provider="p2", header=header(9, branch=3))) == []
    assert "newHeads active" in repr(s)


# -- logs --------------------------------------------------------------------------------------


def test_logs_dedupe_and_removed_on_reorg() -> None:
    """Duplicate logs are dropped; a new block at an emitted height removes the old logs
    first, then the new branch is re-read from the fork point and delivered in order."""
    s = active("logs")
    out: list[Decision] = []
    for n, i in ((5, 0), (5, 1), (5, 1), (6, 2), (7, 3)):
        out += s.handle(LogReceived(provider="p1", log=log_entry(n, i)))
    assert emitted_logs(out) == [
        (5, 0, 0, False),
        (5, 1, 0, False),
        (6, 2, 0, False),
        (7, 3, 0, False),
    ]
    out = s.handle(LogReceived(provider="p1", log=log_entry(6, 0, branch=1)))
    assert emitted_logs(out) == [(6, 2, 0, True), (7, 3, 0, True)]
    (bf,) = backfills(out)
    assert (bf.from_block, bf.to_block) == (6, None)
    # the replaced block never comes back; others cannot reorg the stream
    assert s.handle(LogReceived(provider="p1", log=log_entry(6, 2))) == []
    assert s.handle(LogReceived(provider="p2", log=log_entry(5, 0, branch=2))) == []
    s.handle(LogReceived(provider="p1", log=log_entry(7, 0, branch=1)))
    done = BackfillDone(
        request_id=bf.request_id,
        from_block=6,
        to_block=7,
        logs=(log_entry(6, 0, branch=1), log_entry(6, 1, branch=1), log_entry(7, 0, branch=1)),
    )
    assert emitted_logs(s.handle(done)) == [(6, 0, 1, False), (6, 1, 1, False), (7, 0, 1, False)]
    assert s.duplicates == 5


def test_logs_removed_by_the_heads_stream_or_upstream() -> None:
    """BlocksDropped and an upstream removed:true re-send our logs of that block as removed."""
    s = active("logs")
    for n, i in ((1, 0), (2, 0), (2, 1), (3, 0)):
        s.handle(LogReceived(provider="p1", log=log_entry(n, i)))
    out = s.handle(BlocksDropped(blocks=((3, bhash(3)), (2, bhash(2)), (99, bhash(99)))))
    assert emitted_logs(out) == [(2, 0, 0, True), (2, 1, 0, True), (3, 0, 0, True)]
    (bf,) = backfills(out)
    assert bf.from_block == 2
    assert s.handle(BlocksDropped(blocks=((3, bhash(3)),))) == []
    assert s.handle(BackfillDone(request_id=bf.request_id, from_block=2, to_block=3)) == []
    out = s.handle(LogReceived(provider="p1", log=log_entry(1, 0, removed=True)))
    assert emitted_logs(out) == [(1, 0, 0, True)]
    assert s.handle(LogReceived(provider="p1", log=log_entry(1, 0, removed=True))) == []
    assert numbers(s.handle(HeadReceived(provider="p1", header=header(1)))) == []


def test_logs_failover_buffers_and_merges_the_backfill() -> None:
    """After a loss, live logs wait for the catch-up getLogs and come out merged in order."""
    s = active("logs")
    s.handle(HeadSeen(provider="p1", number=3))
    s.handle(HeadSeen(provider="p1", number=2))  # never moves back
    s.handle(LogReceived(provider="p1", log=log_entry(3, 0)))
    out = s.handle(UpstreamLost(provider="p1", reason="ended"))
    assert out == [Resubscribe(exclude=frozenset({"p1"}))]
    out = s.handle(Subscribed(provider="p2"))
    (bf,) = backfills(out)
    assert (bf.from_block, bf.to_block) == (3, None)
    assert s.handle(LogReceived(provider="p2", log=log_entry(6, 0))) == []
    done = BackfillDone(
        request_id=bf.request_id,
        from_block=3,
        to_block=5,
        logs=(log_entry(3, 0), log_entry(4, 0), log_entry(5, 0), log_entry(5, 1)),
    )
    out = s.handle(done)
    assert emitted_logs(out) == [
        (4, 0, 0, False),
        (5, 0, 0, False),
        (5, 1, 0, False),
        (6, 0, 0, False),
    ]
    assert s.backfilled == 3


def test_logs_catch_up_failures_and_cap() -> None:
    """A failing catch-up is retried, then the buffer is flushed; a capped one warns."""
    s = active("logs", max_backfill_blocks=2)
    s.handle(LogReceived(provider="p1", log=log_entry(2, 0)))
    s.handle(UpstreamLost(provider="p1", reason="ended"))
    (bf,) = backfills(s.handle(Subscribed(provider="p2")))
    assert bf.from_block == 2
    s.handle(LogReceived(provider="p2", log=log_entry(9, 0)))
    for _ in range(2):
        (bf,) = backfills(s.handle(BackfillFailed(request_id=bf.request_id)))
    out = s.handle(BackfillFailed(request_id=bf.request_id))
    assert isinstance(out[0], Warn) and emitted_logs(out) == [(9, 0, 0, False)]
    s.handle(UpstreamLost(provider="p2", reason="stale"))
    (bf,) = backfills(s.handle(Subscribed(provider="p1")))
    out = s.handle(BackfillDone(request_id=bf.request_id, from_block=20, to_block=21))
    assert isinstance(out[0], Warn) and s.dropped == 11


def test_logs_without_a_resume_point_just_resubscribe() -> None:
    """A logs stream that never saw a head or a log has nothing to backfill."""
    s = active("logs")
    s.handle(UpstreamLost(provider="p1", reason="ended"))
    assert s.handle(Subscribed(provider="p2")) == []
    assert emitted_logs(s.handle(LogReceived(provider="p2", log=log_entry(1, 0)))) == [
        (1, 0, 0, False)
    ]


def test_logs_window_is_bounded() -> None:
    """Only ``window`` blocks are remembered; older re-deliveries are dropped."""
    s = active("logs", window=3)
    for n in range(1, 8):
        s.handle(LogReceived(provider="p1", log=log_entry(n, 0)))
    assert s.handle(LogReceived(provider="p1", log=log_entry(2, 0))) == []
    assert len(s._logs.blocks) == 3


def test_log_buffer_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past LOG_BUFFER_LIMIT the oldest buffered logs are delivered early."""
    monkeypatch.setattr(ks, "LOG_BUFFER_LIMIT", 3)
    s = active("logs")
    s.handle(HeadSeen(provider="p1", number=1))
    s.handle(UpstreamLost(provider="p1", reason="ended"))
    out: list[Decision] = []
    for n in (5, 4, 3, 2):
        out += s.handle(LogReceived(provider="p1", log=log_entry(n, 0)))
    assert emitted_logs(out) == [(2, 0, 0, False)]


def test_pending_transactions_dedupe() -> None:
    """Pending transaction hashes are delivered once; other kinds ignore foreign facts."""
    s = active("newPendingTransactions")
    out = s.handle(TxReceived(provider="p1", tx_hash=T1, payload=T1))
    out += s.handle(TxReceived(provider="p2", tx_hash=T1, payload=T1))
    out += s.handle(TxReceived(provider="p1", tx_hash=T2, payload=T2))
    assert [d.payload for d in out if isinstance(d, Emit)] == [T1, T2]
    assert s.duplicates == 1
    assert s.handle(HeadReceived(provider="p1", header=header(1))) == []
    assert s.handle(LogReceived(provider="p1", log=log_entry(1, 0))) == []
    assert s.handle(BlocksDropped(blocks=())) == []
    assert s.handle(BackfillDone(request_id=1, from_block=1, to_block=1)) == []
    assert s.handle(BackfillFailed(request_id=1)) == []
    s.handle(UpstreamLost(provider="p1", reason="ended"))
    assert s.handle(Subscribed(provider="p2")) == []
    h = active("newHeads")
    assert h.handle(TxReceived(provider="p1", tx_hash=T1, payload=T1)) == []


# -- properties --------------------------------------------------------------------------------


@dataclass
class Driver:
    """Feeds a stream, answers its backfills from a chain model, checks each output."""

    stream: SubscriptionStream
    canonical: dict[int, Header]
    view: list[Header] = field(default_factory=list)
    queue: list[Backfill] = field(default_factory=list)
    emitted: list[int] = field(default_factory=list)
    warned: int = 0

    def feed(self, fact: Any) -> None:
        for d in self.stream.handle(fact):
            if isinstance(d, Emit):
                h = parse_header(d.payload)
                assert h is not None
                if self.view and not self.warned:
                    assert h.number == self.view[-1].number + 1, (h, self.view[-1])
                    assert h.parent_hash == self.view[-1].hash
                self.view.append(h)
                self.emitted.append(h.number)
            elif isinstance(d, Dropped):
                k = len(d.blocks)
                assert [(x.number, x.hash) for x in self.view[-k:]] == list(d.blocks)
                del self.view[-k:]
            elif isinstance(d, Backfill):
                self.queue.append(d)
            elif isinstance(d, Warn):
                self.warned += 1

    def answer(self, head: int, fail: bool = False) -> None:
        bf = self.queue.pop(0)
        if fail:
            self.feed(BackfillFailed(request_id=bf.request_id))
            return
        hi = head if bf.to_block is None else bf.to_block
        lo = bf.from_block
        if bf.to_block is None and hi - lo + 1 > self.stream._heads.cap:
            lo = hi - self.stream._heads.cap + 1
        hs = tuple(self.canonical[n] for n in range(lo, hi + 1) if n in self.canonical)
        self.feed(
            BackfillDone(
                request_id=bf.request_id, from_block=lo, to_block=max(hi, lo - 1), headers=hs
            )
        )


step = st.one_of(
    st.tuples(st.just("head"), st.integers(0, 2), st.integers(-3, 2)),
    st.tuples(st.just("answer"), st.just(0), st.just(0)),
    st.tuples(st.just("lose"), st.integers(0, 2), st.just(0)),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(step, min_size=1, max_size=80), st.integers(1, 40))
def test_property_heads_are_gap_free_and_exactly_once(steps: list[Any], advance_every: int) -> None:
    """Duplicated, reordered and gapped deliveries from three providers, with failovers and
    backfills, emit every block exactly once, by number, each linked to the previous one."""
    canonical = chain(1, 200)
    s = SubscriptionStream("newHeads", max_backfill_blocks=500)
    d = Driver(s, canonical)
    providers = ["p0", "p1", "p2"]
    d.feed(Start())
    head = 1
    d.feed(Subscribed(provider="p0", head=head))  # owed: block 2 on
    for i, (what, who, delta) in enumerate(steps):
        if i % advance_every == 0:
            head += 1 + i % 3  # the chain moves on, sometimes by several blocks
        if what == "head":
            n = min(max(1, head + delta), head)
            d.feed(HeadReceived(provider=providers[who], header=canonical[n]))
        elif what == "answer" and d.queue:
            d.answer(head)
        elif what == "lose" and s.state is StreamState.ACTIVE:
            d.feed(UpstreamLost(provider=s.primary or "", reason="ended"))
            d.feed(Subscribed(provider=providers[who]))
    # settle: the primary announces the head, every backfill is answered
    if s.state is not StreamState.ACTIVE:
        d.feed(Subscribed(provider="p0"))
    d.feed(HeadReceived(provider=s.primary or "", header=canonical[head]))
    while d.queue:
        d.answer(head)
    assert d.emitted == list(range(2, head + 1))
    assert s.dropped == 0 and d.warned == 0
    assert len(s._heads.pending) == 0


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(step, min_size=1, max_size=60),
    st.integers(3, 12),
    st.integers(1, 4),
    st.integers(5, 40),
)
def test_property_reorgs_converge_on_the_new_branch(
    steps: list[Any], fork_back: int, extra: int, switch_at: int
) -> None:
    """Whatever the interleaving, after a reorg the view equals the new canonical chain:
    dropped blocks are announced as a suffix, new blocks follow their parents, none twice."""
    old = chain(1, 100)
    s = SubscriptionStream("newHeads", max_backfill_blocks=500)
    d = Driver(s, dict(old))
    providers = ["p0", "p1", "p2"]
    d.feed(Start())
    d.feed(Subscribed(provider="p0"))
    head = 20
    for n in range(1, head + 1):
        d.feed(HeadReceived(provider="p0", header=old[n]))
    fork = head - fork_back
    new = chain(fork, head + extra + 30, branch=1, fork=fork)
    reorged = False
    for i, (what, who, delta) in enumerate(steps):
        if i == switch_at % max(1, len(steps)) and not reorged:
            reorged = True
            d.canonical = {**{n: old[n] for n in range(1, fork)}, **new}
            head += extra
        src = d.canonical
        if what == "head":
            n = min(max(1, head + delta), head)
            p = providers[who]
            # other providers may still be on the old branch
            hdr = old[n] if (p != s.primary and n in old and reorged and who == 2) else src[n]
            d.feed(HeadReceived(provider=p, header=hdr))
        elif what == "answer" and d.queue:
            d.answer(head)
        elif what == "lose" and s.state is StreamState.ACTIVE:
            d.feed(UpstreamLost(provider=s.primary or "", reason="ended"))
            d.feed(Subscribed(provider=providers[who]))
    if not reorged:
        d.canonical = {**{n: old[n] for n in range(1, fork)}, **new}
        head += extra
    head += 1
    if s.state is not StreamState.ACTIVE:
        d.feed(Subscribed(provider="p0"))
    d.feed(HeadReceived(provider=s.primary or "", header=d.canonical[head]))
    while d.queue:
        d.answer(head)
    assert [h.hash for h in d.view] == [d.canonical[n].hash for n in range(1, head + 1)]
    new_numbers = [n for n in d.emitted if n >= fork]
    # every block of the new branch was emitted exactly once after the old one was dropped
    assert sorted(n for n in new_numbers[-(head - fork + 1) :]) == list(range(fork, head + 1))


@dataclass
class LogChain:
    """Blocks 1..N with a few logs each (deterministic)."""

    n: int

    def logs(self, block: int) -> list[LogEntry]:
        return [log_entry(block, i) for i in range((block * 7) % 4)]

    def between(self, lo: int, hi: int) -> list[LogEntry]:
        return [e for b in range(max(1, lo), hi + 1) for e in self.logs(b)]


log_step = st.one_of(
    st.tuples(st.just("mine"), st.integers(1, 3)),
    st.tuples(st.just("deliver"), st.integers(0, 2)),
    st.tuples(st.just("answer"), st.just(0)),
    st.tuples(st.just("lose"), st.integers(0, 2)),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(log_step, min_size=1, max_size=80))
def test_property_logs_are_exactly_once_and_in_order(steps: list[Any]) -> None:
    """Three upstreams (each an in-order feed from its subscription on, the old one still
    delivering for a while) and catch-up backfills: every log after the subscription is
    delivered once, ordered by (block, index)."""
    lc = LogChain(300)
    s = SubscriptionStream("logs", max_backfill_blocks=1000)
    emitted: list[tuple[int, int]] = []
    queue: list[tuple[Backfill, int]] = []  # with the head when issued
    # per provider: the next block it will deliver (None = not subscribed)
    cursor: dict[str, int | None] = {"p0": None, "p1": None, "p2": None}
    head = 10

    def feed(fact: Any) -> None:
        for dec in s.handle(fact):
            if isinstance(dec, Emit):
                e = parse_log(dec.payload)
                assert e is not None and not dec.removed
                emitted.append(e.position)
            elif isinstance(dec, Backfill):
                queue.append((dec, head))

    def subscribe(p: str) -> None:
        cursor[p] = head + 1
        feed(Subscribed(provider=p, head=head))

    def deliver(p: str) -> None:
        cur = cursor[p]
        if cur is None or cur > head:
            return
        for e in lc.logs(cur):
            feed(LogReceived(provider=p, log=e))
        feed(HeadSeen(provider=p, number=cur))
        cursor[p] = cur + 1

    def answer() -> None:
        bf, to = queue.pop(0)  # the head is read when the backfill starts

        feed(
            BackfillDone(
                request_id=bf.request_id,
                from_block=bf.from_block,
                to_block=to,
                logs=tuple(lc.between(bf.from_block, to)),
            )
        )

    feed(Start())
    subscribe("p0")
    start = head + 1
    for what, arg in steps:
        if what == "mine":
            head += arg
        elif what == "deliver":
            deliver(["p0", "p1", "p2"][arg])
        elif what == "answer" and queue:
            answer()
        elif what == "lose" and s.state is StreamState.ACTIVE:
            old = s.primary or ""
            feed(UpstreamLost(provider=old, reason="ended"))
            if arg == 0:
                cursor[old] = None  # the old connection is gone; otherwise it lingers
            subscribe(["p0", "p1", "p2"][arg])
    # settle: the primary delivers everything up to the head, backfills are answered
    primary = s.primary or ""
    while queue:
        answer()
    while (cursor[primary] or head + 1) <= head:
        deliver(primary)
    assert emitted == sorted(set(emitted))
    assert emitted == [e.position for e in lc.between(start, head)]
    assert s.dropped == 0


@dataclass
class ForkedLogChain:
    """Branch 0 everywhere; after the reorg, branch 1 from ``fork`` on."""

    fork: int
    reorged: bool = False

    def branch(self, block: int) -> int:
        return 1 if self.reorged and block >= self.fork else 0

    def logs(self, block: int, branch: int | None = None) -> list[LogEntry]:
        b = self.branch(block) if branch is None else branch
        return [log_entry(block, i, branch=b) for i in range((block * 7 + b * 3) % 4)]

    def between(self, lo: int, hi: int) -> list[LogEntry]:
        return [e for n in range(max(1, lo), hi + 1) for e in self.logs(n)]


reorg_step = st.one_of(
    st.tuples(st.just("mine"), st.integers(1, 3)),
    st.tuples(st.just("deliver"), st.integers(0, 1)),
    st.tuples(st.just("answer"), st.just(0)),
    st.tuples(st.just("lose"), st.integers(0, 1)),
    st.tuples(st.just("reorg"), st.integers(1, 6)),
    st.tuples(st.just("hint"), st.just(0)),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(reorg_step, min_size=1, max_size=60), st.booleans())
def test_property_logs_of_dropped_blocks_are_removed_before_new_ones(
    steps: list[Any], upstream_removes: bool
) -> None:
    """Across a reorg, failovers and backfills, the client's view (logs added minus logs
    removed) stays ordered and ends equal to the canonical chain's logs: every removal
    names a delivered log and comes before the replacement logs."""
    s = SubscriptionStream("logs", max_backfill_blocks=1000)
    lc = ForkedLogChain(fork=0)
    view: list[LogEntry] = []
    queue: list[tuple[Backfill, int]] = []  # with the head when issued
    cursor: dict[str, int | None] = {"p0": None, "p1": None}
    sent: dict[str, list[LogEntry]] = {"p0": [], "p1": []}
    head = 10
    dropped_hashes: list[tuple[int, str]] = []

    def feed(fact: Any) -> None:
        for dec in s.handle(fact):
            if isinstance(dec, Emit):
                e = parse_log(dec.payload)
                assert e is not None
                if dec.removed:
                    assert e in view
                    view.remove(e)
                else:
                    assert e not in view
                    assert not view or view[-1].position < e.position
                    view.append(e)
            elif isinstance(dec, Backfill):
                queue.append((dec, head))

    def subscribe(p: str) -> None:
        cursor[p] = head + 1
        feed(Subscribed(provider=p, head=head))

    def deliver(p: str) -> None:
        cur = cursor[p]
        if cur is None or cur > head:
            return
        for e in lc.logs(cur):
            sent[p].append(e)
            feed(LogReceived(provider=p, log=e))
        feed(HeadSeen(provider=p, number=cur))
        cursor[p] = cur + 1

    def answer() -> None:
        bf, to = queue.pop(0)  # the head is read when the backfill starts
        feed(
            BackfillDone(
                request_id=bf.request_id,
                from_block=bf.from_block,
                to_block=to,
                logs=tuple(lc.between(bf.from_block, to)),
            )
        )

    feed(Start())
    subscribe("p0")
    start = head + 1
    for what, arg in steps:
        if what == "mine":
            head += arg
        elif what == "deliver":
            deliver(f"p{arg}")
        elif what == "answer" and queue:
            answer()
        elif what == "lose" and s.state is StreamState.ACTIVE:
            old = s.primary or ""
            feed(UpstreamLost(provider=old, reason="ended"))
            cursor[old] = None
            subscribe(f"p{arg}")
        elif what == "reorg" and not lc.reorged:
            lc.fork = max(start, head - arg + 1)
            lc.reorged = True
            dropped_hashes = [(n, bhash(n, 0)) for n in range(lc.fork, head + 1)]
            for p, cur in cursor.items():
                if cur is not None and cur > lc.fork:
                    if upstream_removes:
                        for e in [x for x in sent[p] if x.block_number >= lc.fork]:
                            feed(LogReceived(provider=p, log=log_entry(*e.position, removed=True)))
                    cursor[p] = lc.fork
        elif what == "hint" and dropped_hashes:
            feed(BlocksDropped(blocks=tuple(dropped_hashes)))
    if dropped_hashes:
        feed(BlocksDropped(blocks=tuple(dropped_hashes)))
    primary = s.primary or ""
    while queue:
        answer()
    while (cursor[primary] or head + 1) <= head:
        deliver(primary)
    assert view == lc.between(start, head)
    assert s.dropped == 0


# -- bounds and corner cases -------------------------------------------------------------------


def test_head_caches_are_bounded() -> None:
    """Recent hashes and pending heads stay within their limits."""
    s = active(window=2, max_backfill_blocks=1)
    c = chain(1, 60)
    for n in range(1, 12):
        s.handle(HeadReceived(provider="p1", header=c[n]))
    assert len(s._heads.canon) == 2 and len(s._heads.recent._items) == 8
    for n in (20, 30, 40, 50, 60):
        s.handle(HeadReceived(provider="p1", header=c[n]))
    assert len(s._heads.pending) == 3
    assert min(h.number for _, h, _ in s._heads.pending.values()) == 40


def test_a_sibling_linking_to_the_tip_wins_and_prunes_the_orphan() -> None:
    """A head whose parent is unknown waits; a sibling extending the tip goes out and the
    orphan is dropped."""
    s = active()
    c = chain(1, 5)
    for n in range(1, 6):
        s.handle(HeadReceived(provider="p1", header=c[n]))
    orphan = header(6, branch=7)  # parent 5 on branch 7: unknown
    (bf,) = backfills(s.handle(HeadReceived(provider="p1", header=orphan)))
    assert bf.to_block == 5
    assert numbers(s.handle(HeadReceived(provider="p1", header=header(6)))) == [6]
    assert s._heads.pending == {}
    old = header(2, branch=9)
    done = BackfillDone(request_id=bf.request_id, from_block=1, to_block=5, headers=(old,))
    s2 = active(window=3)
    for n in range(1, 6):
        s2.handle(HeadReceived(provider="p1", header=c[n]))
    (bf2,) = backfills(s2.handle(HeadReceived(provider="p1", header=orphan)))
    s2.handle(BackfillDone(request_id=bf2.request_id, from_block=1, to_block=5, headers=(old,)))
    assert old.hash not in s2._heads.pending
    assert s.handle(done) == []


def test_logs_rewind_while_a_backfill_runs() -> None:
    """A reorg below the range being fetched triggers a second read from the fork point."""
    s = active("logs")
    s.handle(HeadSeen(provider="p1", number=10))
    for n in range(4, 10):
        s.handle(LogReceived(provider="p1", log=log_entry(n, 0)))
    s.handle(UpstreamLost(provider="p1", reason="ended"))
    (bf,) = backfills(s.handle(Subscribed(provider="p2")))
    assert bf.from_block == 10
    assert s.handle(BlocksDropped(blocks=())) == []
    out = s.handle(BlocksDropped(blocks=((8, bhash(8)), (9, bhash(9)))))
    assert emitted_logs(out) == [(8, 0, 0, True), (9, 0, 0, True)]
    assert backfills(out) == []  # one request at a time
    out = s.handle(BackfillDone(request_id=bf.request_id, from_block=10, to_block=10))
    (bf2,) = backfills(out)
    assert bf2.from_block == 8
    assert s.handle(BackfillDone(request_id=999, from_block=1, to_block=1)) == []
    assert s.handle(BackfillFailed(request_id=999)) == []
    done = BackfillDone(
        request_id=bf2.request_id,
        from_block=8,
        to_block=10,
        logs=(log_entry(8, 0, branch=1), log_entry(9, 0, branch=1), log_entry(10, 0, branch=1)),
    )
    assert emitted_logs(s.handle(done)) == [(8, 0, 1, False), (9, 0, 1, False), (10, 0, 1, False)]


def test_logs_flush_skips_dead_blocks_and_stops_at_a_reorg() -> None:
    """A read in flight during a reorg is followed by another; buffered logs of blocks
    dropped meanwhile are discarded; a conflict inside the buffer withdraws what it
    replaces and waits for the re-read."""
    s = active("logs")
    s.handle(HeadSeen(provider="p1", number=3))
    s.handle(LogReceived(provider="p1", log=log_entry(3, 0)))
    s.handle(LogReceived(provider="p1", log=log_entry(4, 0)))
    s.handle(UpstreamLost(provider="p1", reason="ended"))
    s.handle(LogReceived(provider="p1", log=log_entry(5, 0)))
    (bf,) = backfills(s.handle(Subscribed(provider="p2")))
    assert s.handle(BlocksDropped(blocks=((5, bhash(5)),))) == []
    # the read planned before the reorg is followed by another from its start
    (bf,) = backfills(s.handle(BackfillDone(request_id=bf.request_id, from_block=3, to_block=5)))
    assert bf.from_block == 3
    done = BackfillDone(
        request_id=bf.request_id,
        from_block=3,
        to_block=6,
        logs=(log_entry(3, 0), log_entry(4, 0, branch=1), log_entry(6, 0, branch=1)),
    )
    out = s.handle(done)
    assert emitted_logs(out) == [(4, 0, 0, True)]
    (bf2,) = backfills(out)
    assert bf2.from_block == 4
    assert s._logs.buffering and len(s._logs.buffer) == 3  # 4', 5 (dead) and 6' wait


def test_logs_buffered_for_a_dropped_block_are_discarded() -> None:
    """A live log held during catch-up is not delivered once its block is dropped."""
    s = active("logs")
    s.handle(HeadSeen(provider="p1", number=3))
    s.handle(UpstreamLost(provider="p1", reason="ended"))
    s.handle(LogReceived(provider="p1", log=log_entry(4, 0)))
    s.handle(LogReceived(provider="p1", log=log_entry(5, 0)))
    s.handle(BlocksDropped(blocks=((4, bhash(4)),)))  # before the new upstream: no read yet
    (bf,) = backfills(s.handle(Subscribed(provider="p2")))
    out = s.handle(BackfillDone(request_id=bf.request_id, from_block=3, to_block=5))
    assert emitted_logs(out) == [(5, 0, 0, False)]
    assert s.duplicates == 1


def test_public_surface_and_standalone_import() -> None:
    """Every name in __all__ exists, and the module imports alone in a fresh interpreter."""
    import subprocess
    import sys

    assert all(hasattr(ks, name) for name in ks.__all__)
    assert len(set(ks.__all__)) == len(ks.__all__)
    code = "import lasso.kernel.subscriptions as m; print(len(m.__all__))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert int(out.stdout) == len(ks.__all__)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=70) | st.sampled_from([A1, T1]),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=20,
)
filters = st.dictionaries(
    st.sampled_from(["address", "topics", "fromBlock", "toBlock"]), json_values, max_size=4
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(json_values, st.tuples(st.sampled_from(ks.KINDS), filters).map(list)))
def test_property_any_params_give_a_key_or_a_params_error(params: Any) -> None:
    """Whatever JSON arrives as eth_subscribe params, the result is a key whose params
    parse to the same key, or SubscriptionParamsError; nothing else escapes."""
    try:
        key = parse_subscription(params)
    except SubscriptionParamsError:
        return
    assert parse_subscription(key.params()) == key
