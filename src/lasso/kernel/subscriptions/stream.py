"""The per-key stream state machine: one entry point, :meth:`SubscriptionStream.handle`.

It applies lifecycle facts through :data:`~lasso.kernel.subscriptions.lifecycle.TRANSITIONS`
and hands data facts to the tracker of its kind (heads, logs or transactions).
"""

from __future__ import annotations

from lasso.kernel.subscriptions.events import (
    BackfillDone,
    BackfillFailed,
    BlocksDropped,
    Decision,
    Degraded,
    Fact,
    HeadReceived,
    HeadSeen,
    LogReceived,
    NoProvider,
    ProviderFact,
    Resubscribe,
    Retry,
    Start,
    Subscribed,
    SubscribeFailed,
    TxReceived,
    UpstreamLost,
    Warn,
)
from lasso.kernel.subscriptions.heads import HeadTracker
from lasso.kernel.subscriptions.keys import KINDS, Kind
from lasso.kernel.subscriptions.lifecycle import (
    LIFECYCLE_FACTS,
    TRANSITIONS,
    IllegalMove,
    StreamState,
)
from lasso.kernel.subscriptions.logs import LogTracker
from lasso.kernel.subscriptions.tracking import Counters, TxTracker

__all__ = ["SubscriptionStream"]


class SubscriptionStream:
    """The state of one shared subscription: feed it facts, carry out its decisions.

    Args:
        kind: ``newHeads``, ``logs`` or ``newPendingTransactions``.
        max_backfill_blocks: the most blocks one backfill may cover (the chain's
            ``websocket.failover.max_backfill_blocks``).
        window: canonical heads and blocks of logs remembered for dedupe and reorgs.

    Attributes ``duplicates``, ``dropped`` and ``backfilled`` count upstream events
    suppressed as duplicates or superseded, events clients will never see, and blocks
    recovered by backfill.
    """

    def __init__(self, kind: Kind, *, max_backfill_blocks: int = 100, window: int = 128) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown subscription kind {kind!r}")
        if window < 2:
            raise ValueError("window must be at least 2")
        self.kind = kind
        self.state = StreamState.IDLE
        self.primary: str | None = None
        self.exclude: set[str] = set()
        self.suspects: set[str] = set()
        self._ids = 0
        self._c = Counters()
        self._heads = HeadTracker(max(1, max_backfill_blocks), window, self._c)
        self._logs = LogTracker(max(1, max_backfill_blocks), window, self._c)
        self._txs = TxTracker(window, self._c)
        self._lost_once = False

    # counters ---------------------------------------------------------------------------
    @property
    def duplicates(self) -> int:
        return self._c.duplicates

    @property
    def dropped(self) -> int:
        return self._c.dropped

    @property
    def backfilled(self) -> int:
        return self._c.backfilled

    @property
    def tip(self) -> int | None:
        """The number of the last emitted head (newHeads), else ``None``."""
        tip = self._heads.tip
        return tip.number if tip is not None else None

    def _next_id(self) -> int:
        self._ids += 1
        return self._ids

    # the one entry point ----------------------------------------------------------------
    def handle(self, fact: Fact) -> list[Decision]:
        """Apply one fact; return the decisions to carry out, in order.

        Raises:
            IllegalMove: a lifecycle fact the current state does not allow.
        """
        if self.state is StreamState.CLOSED:
            return []
        if fact.type in LIFECYCLE_FACTS:
            return self._lifecycle(fact)
        if self.state is StreamState.IDLE:
            raise IllegalMove(f"{fact.type!r} before start")
        return self._data(fact)

    def _lifecycle(self, fact: Fact) -> list[Decision]:
        if isinstance(fact, UpstreamLost) and fact.provider != self.primary:
            return []  # an old upstream: the primary is already elsewhere
        row = TRANSITIONS.get((self.state, fact.type))
        if row is None:
            raise IllegalMove(f"{fact.type!r} is illegal in state {self.state}")
        self.state = row[0]
        match fact:
            case Start() | Retry():
                return [Resubscribe(exclude=frozenset(self.exclude))]
            case SubscribeFailed(provider=p):
                self.exclude.add(p)
                return [Resubscribe(exclude=frozenset(self.exclude))]
            case NoProvider():
                self.exclude.clear()
                return [Degraded(reason="no provider can take the subscription")]
            case UpstreamLost(provider=p):
                self.primary = None
                self.exclude = {p}
                self.suspects.add(p)
                self._lost_once = True
                out: list[Decision] = [Resubscribe(exclude=frozenset(self.exclude))]
                if self.kind == "newHeads":
                    self._heads.catch_up = True
                    out += self._resolve_heads()
                elif self.kind == "logs":
                    self._logs.on_loss(p)
                return out
            case Subscribed(provider=p, head=head):
                self.primary = p
                self.exclude.clear()
                if head is not None:
                    if self._heads.tip is None and self._heads.anchor is None:
                        self._heads.anchor = head + 1
                    marks = self._logs.head_mark
                    marks[p] = max(marks.get(p, -1), head + 1)
                if not self._lost_once:
                    return []
                if self.kind == "newHeads":
                    # Catch up again: the first catch-up ran while no upstream delivered.
                    self._heads.catch_up = True
                    return self._resolve_heads()
                if self.kind == "logs":
                    return self._logs.catch_up(
                        frozenset(self.suspects), self._next_id(), self.primary
                    )
                return []
            case _:  # Close
                return []

    def _data(self, fact: Fact) -> list[Decision]:
        trusted = (
            isinstance(fact, ProviderFact)
            and fact.provider == self.primary
            and self.primary is not None
        )
        match fact:
            case HeadReceived(header=h):
                if self.kind != "newHeads":
                    return []
                out = self._heads.on_head(h, trusted)
                return out + self._resolve_heads()
            case LogReceived(log=entry):
                if self.kind != "logs":
                    return []
                return self._logs_next(self._logs.on_log(entry, trusted))
            case TxReceived(tx_hash=tx, payload=payload):
                return self._txs.on_tx(tx, payload) if self.kind == "newPendingTransactions" else []
            case HeadSeen(provider=p, number=n):
                mark = self._logs.head_mark
                if n >= mark.get(p, -1):
                    mark[p] = n
                return []
            case BlocksDropped(blocks=blocks):
                if self.kind != "logs":
                    return []
                return self._logs_next(self._logs.on_dropped(blocks))
            case BackfillDone():
                return self._backfill_done(fact)
            case BackfillFailed(request_id=rid):
                return self._backfill_failed(rid)
            case _:  # pragma: no cover - every data fact is matched above
                raise IllegalMove(f"unexpected fact {fact!r}")

    def _resolve_heads(self) -> list[Decision]:
        return self._heads.resolve(frozenset(self.suspects), self._next_id())

    def _logs_next(self, out: list[Decision]) -> list[Decision]:
        """After a reorg the logs stream re-reads from the fork point (when live)."""
        logs = self._logs
        if logs.buffering and logs.outstanding is None and self.state is StreamState.ACTIVE:
            out += logs.catch_up(frozenset(self.suspects), self._next_id(), self.primary)
        return out

    def _backfill_done(self, done: BackfillDone) -> list[Decision]:
        if self.kind == "newHeads":
            req = self._heads.outstanding
            if req is None or req.request_id != done.request_id:
                return []
            self._heads.outstanding = None
            out = self._heads.on_backfill(done, req)
            self.suspects.clear()
            return out + self._resolve_heads()
        if self.kind == "logs":
            req = self._logs.outstanding
            if req is None or req.request_id != done.request_id:
                return []
            self.suspects.clear()
            return self._logs_next(self._logs.on_backfill(done, req, self.primary))
        return []

    def _backfill_failed(self, request_id: int) -> list[Decision]:
        if self.kind == "newHeads":
            req = self._heads.outstanding
            if req is None or req.request_id != request_id:
                return []
            self._heads.outstanding = None
            if req.to_block is None:
                return [Warn(message=f"catch-up from block {req.from_block} failed")]
            return self._resolve_heads()
        if self.kind == "logs":
            req = self._logs.outstanding
            if req is None or req.request_id != request_id:
                return []
            return self._logs_next(
                self._logs.on_backfill_failed(
                    frozenset(self.suspects), self._next_id(), self.primary
                )
            )
        return []

    def __repr__(self) -> str:
        return (
            f"<SubscriptionStream {self.kind} {self.state} primary={self.primary} "
            f"tip={self.tip} pending={len(self._heads.pending)} "
            f"buffered={len(self._logs.buffer)} dup={self.duplicates} "
            f"dropped={self.dropped} backfilled={self.backfilled}>"
        )
