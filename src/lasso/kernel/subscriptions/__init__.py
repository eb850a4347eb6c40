"""Gap-free subscription streams: keys, filter normalization and a per-key state machine.

One :class:`SubscriptionStream` stands behind every shared upstream subscription (one per
profile, chain and :class:`SubscriptionKey`). The adapter feeds it *facts* (an upstream
subscription was made or lost, a head or log arrived from provider P, a backfill came
back) and carries out the *decisions* it returns, in order: events to emit to every
client, and actions (:class:`Resubscribe`, :class:`Backfill`, :class:`Degraded`). It never
awaits and never reads a clock, so every ordering question is answered here and tested
without an event loop.

Lifecycle: IDLE → SUBSCRIBING → ACTIVE, back to SUBSCRIBING when the primary is lost,
DEGRADED while no provider can take the subscription, CLOSED at the end. The table is
:data:`TRANSITIONS`, drawn in :mod:`~lasso.kernel.subscriptions.lifecycle`; any other
lifecycle fact is an :class:`IllegalMove`.

Data rules, by kind:

* ``newHeads``: deduplicated by block hash and delivered by number with parent-hash
  linkage. A head beyond ``tip + 1`` opens a gap, filled by :class:`Backfill` (at most
  ``max_backfill_blocks``; beyond that the most recent blocks are fetched, the older ones
  are skipped with a :class:`Warn`). A head whose parent is not the block emitted at
  ``number - 1`` is a reorg: its ancestors are fetched back to the fork point, the dropped
  blocks are announced with :class:`Dropped` and the new canonical blocks are emitted from
  the fork point, each exactly once. Only the *primary* (the provider the subscription
  lives on) and backfills may reorg the stream; other providers (an old upstream kept for
  overlap) may only extend the tip, so a lagging node cannot drag clients onto a stale fork.
* ``logs``: deduplicated by ``(blockHash, logIndex)`` and delivered by
  ``(blockNumber, logIndex)``. From the loss of an upstream until the catch-up backfill
  (``eth_getLogs`` over the missed range) is back, live logs are buffered and merged with it.
  On a reorg (a new block at or below the highest emitted one, an upstream ``removed: true``
  log, or :class:`BlocksDropped` from the chain's newHeads stream) the logs already emitted
  for the dropped blocks are re-emitted with ``removed: true`` first (ascending, as geth
  does), then the new ones. A bounded window of the last ``window`` blocks with emitted
  logs is kept for that.
* ``newPendingTransactions``: deduplicated by hash in a bounded window; no gap fill
  (hashes are not ordered), a failover only resubscribes.

Every cache is bounded: ``window`` canonical heads, ``4 × window`` recent hashes, at most
``max_backfill_blocks + window`` pending heads, ``window`` blocks of logs, and
:data:`LOG_BUFFER_LIMIT` buffered logs.

Modules (each imports alone; this package re-exports their public names):

* :mod:`~lasso.kernel.subscriptions.keys`: ``eth_subscribe`` params, filter normalization.
* :mod:`~lasso.kernel.subscriptions.events`: header and log models, facts, decisions.
* :mod:`~lasso.kernel.subscriptions.lifecycle`: :class:`StreamState` and :data:`TRANSITIONS`.
* :mod:`~lasso.kernel.subscriptions.tracking`: bounded sets, counters, the transaction dedupe.
* :mod:`~lasso.kernel.subscriptions.heads`: the newHeads tracker (gap fill, reorg walk-back).
* :mod:`~lasso.kernel.subscriptions.logs`: the logs tracker (catch-up buffer, removals).
* :mod:`~lasso.kernel.subscriptions.stream`: :class:`SubscriptionStream`, the entry point.
"""

from __future__ import annotations

from lasso.kernel.subscriptions.events import (
    Backfill,
    BackfillDone,
    BackfillFailed,
    BlocksDropped,
    Close,
    Decision,
    Degraded,
    Dropped,
    Emit,
    Fact,
    Header,
    HeadReceived,
    HeadSeen,
    LogEntry,
    LogReceived,
    NoProvider,
    Resubscribe,
    Retry,
    Start,
    Subscribed,
    SubscribeFailed,
    TxReceived,
    UpstreamLost,
    Warn,
    parse_header,
    parse_log,
)
from lasso.kernel.subscriptions.keys import (
    KINDS,
    SubscriptionKey,
    SubscriptionParamsError,
    normalize_filter,
    parse_subscription,
)
from lasso.kernel.subscriptions.lifecycle import (
    TRANSITIONS,
    IllegalMove,
    StreamState,
    transition_table_markdown,
)
from lasso.kernel.subscriptions.logs import LOG_BUFFER_LIMIT
from lasso.kernel.subscriptions.stream import SubscriptionStream

__all__ = [
    "KINDS",
    "LOG_BUFFER_LIMIT",
    "TRANSITIONS",
    "Backfill",
    "BackfillDone",
    "BackfillFailed",
    "BlocksDropped",
    "Close",
    "Decision",
    "Degraded",
    "Dropped",
    "Emit",
    "Fact",
    "Header",
    "HeadReceived",
    "HeadSeen",
    "IllegalMove",
    "LogEntry",
    "LogReceived",
    "NoProvider",
    "Resubscribe",
    "Retry",
    "Start",
    "StreamState",
    "SubscribeFailed",
    "Subscribed",
    "SubscriptionKey",
    "SubscriptionParamsError",
    "SubscriptionStream",
    "TxReceived",
    "UpstreamLost",
    "Warn",
    "normalize_filter",
    "parse_header",
    "parse_log",
    "parse_subscription",
    "transition_table_markdown",
]
