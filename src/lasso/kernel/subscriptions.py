"""Gap-free subscription streams: keys, filter normalization and a per-key state machine.

One :class:`SubscriptionStream` stands behind every shared upstream subscription (one per
profile, chain and :class:`SubscriptionKey`). The adapter feeds it *facts* (an upstream
subscription was made or lost, a head or log arrived from provider P, a backfill came
back) and carries out the *decisions* it returns, in order: events to emit to every
client, and actions (:class:`Resubscribe`, :class:`Backfill`, :class:`Degraded`). It never
awaits and never reads a clock, so every ordering question is answered here and tested
without an event loop.

Lifecycle (:data:`TRANSITIONS`; any other lifecycle fact is an :class:`IllegalMove`)::

    IDLE --start--> SUBSCRIBING --subscribed--> ACTIVE --upstream_lost(primary)--> SUBSCRIBING
                     |  ^   ^ subscribe_failed (exclude P, try the next)
          no_provider|  |retry (backoff or a WS connect)
                     v  |
                   DEGRADED                      any --close--> CLOSED (facts then ignored)

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
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Literal

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

Kind = Literal["newHeads", "logs", "newPendingTransactions"]
KINDS: tuple[Kind, ...] = ("newHeads", "logs", "newPendingTransactions")

LOG_BUFFER_LIMIT = 10_000
"""Live logs held while a catch-up backfill runs; past it the oldest are flushed early."""
MAX_ATTEMPTS = 3
"""Backfills tried for one unresolved head before the stream accepts the gap."""
REORG_WALK = 32
"""Blocks fetched per step when walking back to a fork point."""

# -- keys and filter normalization (JSON-RPC eth_subscribe params, EIP-1474 / geth) ----------

_HEX = re.compile(r"^0x[0-9a-f]*$")
_TAGS = frozenset({"latest", "earliest", "pending", "safe", "finalized"})
_FILTER_KEYS = frozenset({"address", "topics", "fromBlock", "toBlock"})


class SubscriptionParamsError(ValueError):
    """``eth_subscribe`` params that name no supported subscription (JSON-RPC -32602)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SubscriptionKey:
    """What one shared upstream subscription delivers; equal filters give equal keys.

    ``canonical`` is the normalized params list as compact JSON with sorted keys.
    """

    kind: Kind
    canonical: str

    def params(self) -> list[object]:
        """The normalized ``eth_subscribe`` params to send upstream (a fresh list)."""
        value = json.loads(self.canonical)
        assert isinstance(value, list)
        return value

    def log_filter(self) -> dict[str, object]:
        """The normalized logs filter (``{}`` for other kinds), a fresh dict."""
        params = self.params()
        if self.kind == "logs" and len(params) > 1 and isinstance(params[1], dict):
            return params[1]
        return {}


def _address(value: object) -> str:
    if not isinstance(value, str) or not _HEX.match(value.lower()) or len(value) != 42:
        raise SubscriptionParamsError(f"invalid address {value!r}")
    return value.lower()


def _topic(value: object) -> str:
    if not isinstance(value, str) or not _HEX.match(value.lower()) or len(value) != 66:
        raise SubscriptionParamsError(f"invalid topic {value!r}")
    return value.lower()


def _block_ref(value: object, name: str) -> str:
    if isinstance(value, str):
        low = value.lower()
        if low in _TAGS:
            return low
        if _HEX.match(low) and len(low) > 2:
            return hex(int(low, 16))
    raise SubscriptionParamsError(f"invalid {name} {value!r}")


def _topic_position(value: object) -> str | list[str] | None:
    """One topic position: ``None`` (any), a topic, or a sorted OR-list of topics.

    A ``null`` inside an OR-list matches anything, so the whole position becomes a wildcard
    (geth's reading). *Decision*: the reference drops such nulls instead, which turns
    ``[A, null]`` from "anything" into "A" and would deliver less than the client asked for.
    """
    if value is None:
        return None
    if isinstance(value, list):
        if not value or any(v is None for v in value):
            return None
        topics = sorted({_topic(v) for v in value})
        return topics[0] if len(topics) == 1 else topics
    return _topic(value)


def normalize_filter(raw: object) -> dict[str, object]:
    """Normalize a logs filter so that equal filters compare (and serialize) equal.

    Drops nulls and empty lists; lower-cases hex; sorts and dedupes addresses (one address
    becomes a string) and topic OR-lists; drops trailing wildcard topic positions;
    canonicalizes block numbers (``"0x0A"`` → ``"0xa"``).

    Raises:
        SubscriptionParamsError: not an object, an unknown key, or a malformed value.
    """
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise SubscriptionParamsError("logs filter must be an object")
    unknown = sorted(set(raw) - _FILTER_KEYS)
    if unknown:
        raise SubscriptionParamsError(f"unsupported logs filter key {unknown[0]!r}")
    out: dict[str, object] = {}
    address = raw.get("address")
    if isinstance(address, list):
        addresses = sorted({_address(a) for a in address if a is not None})
        if addresses:
            out["address"] = addresses[0] if len(addresses) == 1 else addresses
    elif address is not None:
        out["address"] = _address(address)
    topics = raw.get("topics")
    if topics is not None:
        if not isinstance(topics, list):
            raise SubscriptionParamsError("topics must be a list")
        if len(topics) > 4:
            raise SubscriptionParamsError("at most 4 topic positions")
        positions = [_topic_position(t) for t in topics]
        while positions and positions[-1] is None:
            positions.pop()
        if positions:
            out["topics"] = positions
    for name in ("fromBlock", "toBlock"):
        if raw.get(name) is not None:
            out[name] = _block_ref(raw[name], name)
    return out


def parse_subscription(params: object) -> SubscriptionKey:
    """Validate ``eth_subscribe`` params and return their key.

    Accepts ``["newHeads"]``, ``["logs"]``, ``["logs", filter]`` (a missing or null filter
    is ``{}``), ``["newPendingTransactions"]`` and ``["newPendingTransactions", bool]``
    (geth's full-transaction flag; ``false`` is dropped).

    Raises:
        SubscriptionParamsError: anything else; answer JSON-RPC ``-32602``.
    """
    if not isinstance(params, list) or not params or not isinstance(params[0], str):
        raise SubscriptionParamsError("params must be [kind, ...]")
    name = params[0]
    rest = params[1:]
    kind: Kind
    if name == "newHeads":
        kind = "newHeads"
        if any(r is not None for r in rest):
            raise SubscriptionParamsError("newHeads takes no parameters")
        normalized: list[object] = ["newHeads"]
    elif name == "logs":
        kind = "logs"
        if len(rest) > 1:
            raise SubscriptionParamsError("logs takes one filter object")
        normalized = ["logs", normalize_filter(rest[0] if rest else None)]
    elif name == "newPendingTransactions":
        kind = "newPendingTransactions"
        if len(rest) > 1 or (rest and rest[0] is not None and not isinstance(rest[0], bool)):
            raise SubscriptionParamsError("newPendingTransactions takes one optional boolean")
        normalized = ["newPendingTransactions"] + ([True] if rest and rest[0] else [])
    else:
        raise SubscriptionParamsError(f"unsupported subscription kind {name!r}")
    canonical = json.dumps(normalized, sort_keys=True, separators=(",", ":"))
    return SubscriptionKey(kind=kind, canonical=canonical)


# -- models of upstream events ----------------------------------------------------------------


def _quantity(value: object) -> int | None:
    if isinstance(value, str) and value[:2] in ("0x", "0X") and len(value) > 2:
        try:
            return int(value, 16)
        except ValueError:
            return None
    return None


def _hash(value: object) -> str | None:
    if isinstance(value, str) and len(value) == 66 and _HEX.match(value.lower()):
        return value.lower()
    return None


@dataclass(frozen=True, slots=True, kw_only=True)
class Header:
    """A block header as newHeads delivers it; ``payload`` is forwarded untouched."""

    number: int
    hash: str
    parent_hash: str
    payload: object = field(compare=False, repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class LogEntry:
    """One log as the logs subscription delivers it; ``payload`` is forwarded untouched."""

    block_number: int
    block_hash: str
    log_index: int
    removed: bool = False
    payload: object = field(compare=False, repr=False)

    @property
    def position(self) -> tuple[int, int]:
        return (self.block_number, self.log_index)


def parse_header(obj: object) -> Header | None:
    """A :class:`Header` from a newHeads result or block object; ``None`` if malformed."""
    if not isinstance(obj, Mapping):
        return None
    number = _quantity(obj.get("number"))
    block_hash = _hash(obj.get("hash"))
    parent = _hash(obj.get("parentHash"))
    if number is None or block_hash is None or parent is None:
        return None
    return Header(number=number, hash=block_hash, parent_hash=parent, payload=obj)


def parse_log(obj: object) -> LogEntry | None:
    """A :class:`LogEntry` from a logs result; ``None`` if malformed (or pending)."""
    if not isinstance(obj, Mapping):
        return None
    number = _quantity(obj.get("blockNumber"))
    block_hash = _hash(obj.get("blockHash"))
    index = _quantity(obj.get("logIndex"))
    if number is None or block_hash is None or index is None:
        return None
    removed = obj.get("removed") is True
    return LogEntry(
        block_number=number, block_hash=block_hash, log_index=index, removed=removed, payload=obj
    )


# -- facts (inputs) ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Start:
    """The first client arrived: find an upstream."""

    type: Literal["start"] = "start"


@dataclass(frozen=True, slots=True, kw_only=True)
class Subscribed:
    """The upstream subscription on ``provider`` is live; it becomes the primary.

    ``head``, when known, is the chain head at that moment: clients are owed the blocks
    (and logs) after it, so a newHeads stream that has not emitted anything yet can still
    backfill from there, and a logs stream knows where the new upstream starts.
    """

    provider: str
    head: int | None = None
    type: Literal["subscribed"] = "subscribed"


@dataclass(frozen=True, slots=True, kw_only=True)
class SubscribeFailed:
    """Subscribing on ``provider`` failed; exclude it and try the next one."""

    provider: str
    type: Literal["subscribe_failed"] = "subscribe_failed"


@dataclass(frozen=True, slots=True, kw_only=True)
class NoProvider:
    """No provider can take the subscription now (none left after exclusions)."""

    type: Literal["no_provider"] = "no_provider"


@dataclass(frozen=True, slots=True, kw_only=True)
class Retry:
    """The degraded backoff elapsed, or a WebSocket upstream connected."""

    type: Literal["retry"] = "retry"


@dataclass(frozen=True, slots=True, kw_only=True)
class UpstreamLost:
    """The upstream on ``provider`` dropped, went stale, or its circuit opened."""

    provider: str
    reason: str
    type: Literal["upstream_lost"] = "upstream_lost"


@dataclass(frozen=True, slots=True, kw_only=True)
class Close:
    """The last client left and the grace period passed."""

    type: Literal["close"] = "close"


@dataclass(frozen=True, slots=True, kw_only=True)
class HeadReceived:
    provider: str
    header: Header
    type: Literal["head"] = "head"


@dataclass(frozen=True, slots=True, kw_only=True)
class LogReceived:
    provider: str
    log: LogEntry
    type: Literal["log"] = "log"


@dataclass(frozen=True, slots=True, kw_only=True)
class TxReceived:
    provider: str
    tx_hash: str
    payload: object = field(compare=False, repr=False)
    type: Literal["tx"] = "tx"


@dataclass(frozen=True, slots=True, kw_only=True)
class BackfillDone:
    """The answer to :class:`Backfill` ``request_id``: the range actually fetched.

    ``from_block`` above the requested one means the adapter capped the range (the older
    blocks are skipped); ``headers`` may miss blocks the provider did not have.
    """

    request_id: int
    from_block: int
    to_block: int
    headers: tuple[Header, ...] = ()
    logs: tuple[LogEntry, ...] = ()
    type: Literal["backfill_done"] = "backfill_done"


@dataclass(frozen=True, slots=True, kw_only=True)
class BackfillFailed:
    request_id: int
    type: Literal["backfill_failed"] = "backfill_failed"


@dataclass(frozen=True, slots=True, kw_only=True)
class BlocksDropped:
    """The chain's newHeads stream dropped these blocks, ``(number, hash)`` (logs only)."""

    blocks: tuple[tuple[int, str], ...]
    type: Literal["blocks_dropped"] = "blocks_dropped"


@dataclass(frozen=True, slots=True, kw_only=True)
class HeadSeen:
    """Logs of the blocks below ``number`` have been delivered through ``provider``.

    Feed it for every head the chain's newHeads stream receives from ``provider`` (the
    logs of that head itself may still be on their way), and with ``tip + 1`` when a logs
    subscription starts on ``provider`` (clients are owed nothing older). A failover
    resumes the logs backfill from the mark of the lost provider.
    """

    provider: str
    number: int
    type: Literal["head_seen"] = "head_seen"


Fact = (
    Start
    | Subscribed
    | SubscribeFailed
    | NoProvider
    | Retry
    | UpstreamLost
    | Close
    | HeadReceived
    | LogReceived
    | TxReceived
    | BackfillDone
    | BackfillFailed
    | BlocksDropped
    | HeadSeen
)

# -- decisions (outputs) -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Emit:
    """Send ``payload`` to every client of the stream (with ``removed: true`` if set)."""

    payload: object = field(repr=False)
    removed: bool = False
    type: Literal["emit"] = "emit"


@dataclass(frozen=True, slots=True, kw_only=True)
class Dropped:
    """A reorg dropped these emitted blocks, ``(number, hash)`` ascending."""

    blocks: tuple[tuple[int, str], ...]
    type: Literal["dropped"] = "dropped"


@dataclass(frozen=True, slots=True, kw_only=True)
class Resubscribe:
    """Subscribe on the best provider not in ``exclude``; answer with a lifecycle fact."""

    exclude: frozenset[str]
    type: Literal["resubscribe"] = "resubscribe"


@dataclass(frozen=True, slots=True, kw_only=True)
class Backfill:
    """Fetch blocks (or logs) ``from_block..to_block`` over HTTP, avoiding ``exclude``.

    ``to_block`` ``None`` means "through the current head" (ask ``eth_blockNumber``). The
    adapter caps the range to the most recent ``max_backfill_blocks`` and answers with
    :class:`BackfillDone` or :class:`BackfillFailed` carrying ``request_id``.
    """

    request_id: int
    from_block: int
    to_block: int | None
    exclude: frozenset[str]
    type: Literal["backfill"] = "backfill"


@dataclass(frozen=True, slots=True, kw_only=True)
class Degraded:
    """No provider can serve the stream; send :class:`Retry` after a backoff."""

    reason: str
    type: Literal["degraded"] = "degraded"


@dataclass(frozen=True, slots=True, kw_only=True)
class Warn:
    """Something a client may notice (a skipped range): log it."""

    message: str
    type: Literal["warn"] = "warn"


Decision = Emit | Dropped | Resubscribe | Backfill | Degraded | Warn

# -- lifecycle table ---------------------------------------------------------------------------


class StreamState(StrEnum):
    IDLE = "idle"
    SUBSCRIBING = "subscribing"
    ACTIVE = "active"
    DEGRADED = "degraded"
    CLOSED = "closed"


class IllegalMove(RuntimeError):
    """A lifecycle fact arrived in a state whose table row does not allow it (adapter bug)."""


_S = StreamState
TRANSITIONS: Mapping[tuple[StreamState, str], tuple[StreamState, str]] = MappingProxyType(
    {
        (_S.IDLE, "start"): (_S.SUBSCRIBING, "first client: pick a provider"),
        (_S.SUBSCRIBING, "subscribed"): (_S.ACTIVE, "primary set; catch up if a gap is open"),
        (_S.SUBSCRIBING, "subscribe_failed"): (_S.SUBSCRIBING, "exclude it, try the next"),
        (_S.SUBSCRIBING, "no_provider"): (_S.DEGRADED, "back off, retry on a timer or connect"),
        (_S.DEGRADED, "retry"): (_S.SUBSCRIBING, "try every provider again"),
        (_S.ACTIVE, "upstream_lost"): (_S.SUBSCRIBING, "primary lost: fail over, open a gap"),
        (_S.IDLE, "close"): (_S.CLOSED, "never started"),
        (_S.SUBSCRIBING, "close"): (_S.CLOSED, "last client left"),
        (_S.ACTIVE, "close"): (_S.CLOSED, "last client left"),
        (_S.DEGRADED, "close"): (_S.CLOSED, "last client left"),
    }
)
"""``(state, lifecycle fact) → (next state, rule)``; a missing row is an illegal move.

Data facts (heads, logs, transactions, backfills, markers) never change the state. An
``upstream_lost`` naming a provider other than the primary is stale and ignored, and every
fact is ignored once CLOSED (callbacks may race the teardown)."""

_LIFECYCLE = frozenset(fact for _, fact in TRANSITIONS)


def transition_table_markdown() -> str:
    """Render :data:`TRANSITIONS` as a Markdown table for the docs."""
    lines = ["| state | fact | next state | rule |", "|---|---|---|---|"]
    for (state, fact), (new, rule) in TRANSITIONS.items():
        lines.append(f"| {state} | `{fact}` | {new} | {rule} |")
    return "\n".join(lines)


# -- the trackers ------------------------------------------------------------------------------


class _LruSet:
    """A bounded set forgetting its oldest members."""

    __slots__ = ("_items", "_limit")

    def __init__(self, limit: int) -> None:
        self._items: OrderedDict[str, None] = OrderedDict()
        self._limit = limit

    def __contains__(self, item: str) -> bool:
        return item in self._items

    def add(self, item: str) -> None:
        self._items[item] = None
        self._items.move_to_end(item)
        if len(self._items) > self._limit:
            self._items.popitem(last=False)

    def discard(self, item: str) -> None:
        self._items.pop(item, None)


class _Counters:
    __slots__ = ("duplicates", "dropped", "backfilled")

    def __init__(self) -> None:
        self.duplicates = 0  # upstream events not delivered: already delivered or superseded
        self.dropped = 0  # events clients will never see (skipped ranges, flushed buffers)
        self.backfilled = 0  # blocks recovered by backfill


class _Heads:
    """newHeads: canonical chain window, pending heads, gap fill and reorg walk-back."""

    def __init__(self, cap: int, window: int, counters: _Counters) -> None:
        self.cap = cap
        self.window = window
        self.c = counters
        self.canon: OrderedDict[int, Header] = OrderedDict()  # emitted, by number, ascending
        self.by_hash: dict[str, int] = {}
        self.recent = _LruSet(4 * window)  # emitted hashes, canonical or aged out
        self.pending: dict[str, tuple[int, Header, bool]] = {}  # hash → (seq, header, backfill)
        self.seq = 0
        self.outstanding: Backfill | None = None
        self.attempts = 0
        self.last_bottom: str | None = None
        self.skip_floor: int | None = None
        self.catch_up = False
        self.anchor: int | None = None  # first block owed, before any head was emitted

    @property
    def tip(self) -> Header | None:
        return next(reversed(self.canon.values())) if self.canon else None

    def on_head(self, h: Header, trusted: bool) -> list[Decision]:
        if h.hash in self.by_hash or h.hash in self.recent or h.hash in self.pending:
            self.c.duplicates += 1
            return []
        tip = self.tip
        if not trusted:
            # Another provider (an old upstream kept for overlap): it may extend the tip only.
            if tip is not None and h.number == tip.number + 1 and h.parent_hash == tip.hash:
                return self._emit_path([h], set())
            self.c.duplicates += 1
            return []
        oldest = next(iter(self.canon)) if tip is not None else self.anchor
        if oldest is not None and h.number < oldest:
            self.c.duplicates += 1  # older than everything we remember (or owe)
            return []
        self._add_pending(h, False)
        return []

    def _add_pending(self, h: Header, backfill: bool) -> None:
        self.seq += 1
        self.pending[h.hash] = (self.seq, h, backfill)
        limit = self.cap + self.window
        if len(self.pending) > limit:
            lowest = sorted(self.pending.values(), key=lambda e: (e[1].number, e[0]))
            for _, old, _ in lowest[: len(self.pending) - limit]:
                del self.pending[old.hash]

    def _emit_path(self, path: list[Header], from_backfill: set[str]) -> list[Decision]:
        out: list[Decision] = []
        for h in path:
            self.canon[h.number] = h
            self.by_hash[h.hash] = h.number
            self.recent.add(h.hash)
            self.pending.pop(h.hash, None)
            if h.hash in from_backfill:
                self.c.backfilled += 1
            out.append(Emit(payload=h.payload))
        while len(self.canon) > self.window:
            _, old = self.canon.popitem(last=False)
            del self.by_hash[old.hash]
        # Pending heads at or below the new tip lost to the branch just emitted.
        top = path[-1].number
        for key in [k for k, (_, h, _) in self.pending.items() if h.number <= top]:
            del self.pending[key]
        return out

    def _rollback(self, fork: int) -> Dropped:
        dropped: list[tuple[int, str]] = []
        while self.canon and next(reversed(self.canon)) >= fork:
            _, h = self.canon.popitem(last=True)
            del self.by_hash[h.hash]
            self.recent.discard(h.hash)  # a later flip back may re-emit it
            dropped.append((h.number, h.hash))
        dropped.reverse()
        return Dropped(blocks=tuple(dropped))

    def resolve(self, exclude: frozenset[str], next_id: int) -> list[Decision]:
        """Emit whatever links to the canonical tip; ask for what is missing.

        Before the first head the tip is virtual: ``anchor - 1`` (the chain head when the
        subscription started), or nothing at all without an anchor (the first head is the
        baseline).
        """
        out: list[Decision] = []
        while self.pending:
            tip = self.tip
            _, target, _ = max(self.pending.values(), key=lambda e: (e[1].number, e[0]))
            path = [target]
            while path[-1].parent_hash in self.pending and len(path) <= len(self.pending):
                path.append(self.pending[path[-1].parent_hash][1])
            bottom = path[-1]
            path.reverse()
            backfilled = {h.hash for h in path if self.pending[h.hash][2]}
            anchor = self.anchor
            if tip is None and (anchor is None or bottom.number <= anchor):
                # The baseline: the first head at the anchor (heads below it never get
                # here: nobody is owed them).
                out += self._emit_path(path, backfilled)
                continue
            if tip is not None and self.by_hash.get(bottom.parent_hash) == bottom.number - 1:
                if bottom.number <= tip.number:
                    out.append(self._rollback(bottom.number))
                out += self._emit_path(path, backfilled)
                self._progress()
                continue
            # Unresolved: a gap above the tip, or a reorg whose ancestors we lack. Meanwhile
            # a head that extends the tip (a live one inside the gap) goes out at once.
            if tip is not None:
                child = next(
                    (e for e in self.pending.values() if e[1].parent_hash == tip.hash), None
                )
                if child is not None:
                    out += self._emit_path([child[1]], {child[1].hash} if child[2] else set())
                    continue
            if self.outstanding is not None:
                break
            if bottom.hash != self.last_bottom:
                self.last_bottom = bottom.hash
                self.attempts = 0
            tip_n = tip.number if tip is not None else (anchor or 0) - 1
            lowest = next(iter(self.canon)) if self.canon else tip_n + 1
            gap = bottom.number > tip_n + 1
            floor_reached = self.skip_floor is not None and bottom.number <= self.skip_floor
            walk_exhausted = not gap and bottom.number - 1 < lowest
            if self.attempts >= MAX_ATTEMPTS or (gap and floor_reached) or walk_exhausted:
                out += self._accept_discontinuity(bottom, tip_n)
                out += self._emit_path(path, backfilled)
                self._progress()
                continue
            hi = bottom.number - 1
            if gap:
                lo = tip_n + 1
                if hi - lo + 1 > self.cap:
                    lo = hi - self.cap + 1
                    self.skip_floor = lo
                    out.append(
                        Warn(
                            message=f"gap of {hi - tip_n} blocks exceeds "
                            f"max_backfill_blocks={self.cap}: blocks {tip_n + 1}.."
                            f"{lo - 1} are skipped"
                        )
                    )
            else:
                lo = max(lowest, hi - REORG_WALK + 1)
            self.attempts += 1
            self.outstanding = Backfill(
                request_id=next_id, from_block=lo, to_block=hi, exclude=exclude
            )
            out.append(self.outstanding)
            return out
        if self.catch_up and self.outstanding is None:
            tip = self.tip
            start = tip.number + 1 if tip is not None else self.anchor
            if start is not None:
                self.catch_up = False
                self.outstanding = Backfill(
                    request_id=next_id, from_block=start, to_block=None, exclude=exclude
                )
                out.append(self.outstanding)
        return out

    def _progress(self) -> None:
        self.attempts = 0
        self.last_bottom = None

    def _accept_discontinuity(self, bottom: Header, tip_n: int) -> list[Decision]:
        """Best effort: emit ``bottom`` without a link (skipping a gap, or an unknown fork)."""
        self.skip_floor = None
        if bottom.number > tip_n:
            skipped = bottom.number - tip_n - 1
            self.c.dropped += skipped
            return [Warn(message=f"blocks {tip_n + 1}..{bottom.number - 1} are skipped")]
        lowest = next(iter(self.canon))
        fork = max(bottom.number, lowest)
        return [
            Warn(message=f"reorg fork point below block {bottom.number} not found"),
            self._rollback(fork),
        ]

    def on_backfill(self, done: BackfillDone, requested: Backfill) -> list[Decision]:
        out: list[Decision] = []
        if done.from_block > requested.from_block:
            self.skip_floor = done.from_block
            out.append(
                Warn(
                    message=f"catch-up of {done.to_block - requested.from_block + 1} blocks "
                    f"exceeds max_backfill_blocks={self.cap}: blocks {requested.from_block}.."
                    f"{done.from_block - 1} are skipped"
                )
            )
        # Keep what fills a gap above the tip, and the ancestors of waiting heads (a reorg
        # walk); a block at or below the tip that nothing waits for is not a reason to
        # reorg (the backfill provider may sit on another fork).
        tip = self.tip
        lowest = next(iter(self.canon)) if self.canon else (self.anchor or 0)
        fetched = {
            h.hash: h for h in done.headers if h.hash not in self.by_hash and h.number >= lowest
        }
        keep = {k for k, h in fetched.items() if tip is None or h.number > tip.number}
        for _, waiting, _ in list(self.pending.values()):
            parent = waiting.parent_hash
            while parent in fetched and parent not in keep:
                keep.add(parent)
                parent = fetched[parent].parent_hash
        for h in done.headers:
            if h.hash in keep:
                self._add_pending(h, True)
        return out


class _Logs:
    """logs: per-block window of emitted logs, reorg removal, catch-up buffering."""

    def __init__(self, cap: int, window: int, counters: _Counters) -> None:
        self.cap = cap
        self.window = window
        self.c = counters
        self.blocks: OrderedDict[str, tuple[int, dict[int, LogEntry]]] = OrderedDict()
        self.dead = _LruSet(4 * window)
        self.floor = -1  # logs of blocks below this were forgotten: treat as delivered
        self.high: int | None = None
        self.buffering = False
        self.buffer: list[tuple[LogEntry, bool]] = []
        self.head_mark: dict[str, int] = {}
        self.resume_from: int | None = None
        self.outstanding: Backfill | None = None
        self.attempts = 0
        self.stale = False  # the read in flight no longer covers everything

    def on_log(self, entry: LogEntry, trusted: bool) -> list[Decision]:
        if entry.removed:
            if entry.block_hash in self.blocks:
                return self._remove([entry.block_hash], entry.block_number, False)
            self.c.duplicates += 1
            return []
        if entry.block_hash in self.dead:
            self.c.duplicates += 1
            return []
        if self.buffering:
            return self._hold(entry, trusted)
        return self._accept(entry, trusted)

    def _hold(self, entry: LogEntry, trusted: bool) -> list[Decision]:
        self.buffer.append((entry, trusted))
        if len(self.buffer) <= LOG_BUFFER_LIMIT:
            return []
        # Best effort: deliver the oldest now rather than grow without bound.
        self.buffer.sort(key=lambda e: e[0].position)
        first, ok = self.buffer.pop(0)
        return self._accept(first, ok)

    def _accept(self, entry: LogEntry, trusted: bool) -> list[Decision]:
        block = self.blocks.get(entry.block_hash)
        if block is None:
            if entry.block_number < self.floor:
                self.c.duplicates += 1
                return []
            if self.high is not None and entry.block_number <= self.high:
                # A new block at or below one we delivered: the old ones were reorged out.
                if not trusted:
                    self.c.duplicates += 1
                    return []
                n = entry.block_number
                replaced = [bh for bh, (m, _) in self.blocks.items() if m == n]
                above = [bh for bh, (m, _) in self.blocks.items() if m > n]
                out = self._remove(replaced, n, False, above)
                return out + self._hold(entry, trusted)
            block = (entry.block_number, {})
            self.blocks[entry.block_hash] = block
            while len(self.blocks) > self.window:
                _, (n, _) = self.blocks.popitem(last=False)
                self.floor = max(self.floor, n)
        elif entry.log_index in block[1]:
            self.c.duplicates += 1
            return []
        block[1][entry.log_index] = entry
        if self.high is None or entry.block_number > self.high:
            self.high = entry.block_number
        return [Emit(payload=entry.payload)]

    def _remove(
        self, dead: Iterable[str], lowest: int, exact: bool, doubtful: Iterable[str] = ()
    ) -> list[Decision]:
        """Re-send the emitted logs of dropped blocks with ``removed: true``, ascending.

        ``dead`` blocks are known to be off the chain and never delivered again;
        ``doubtful`` ones (emitted above a replaced block, maybe from the new branch
        already) are withdrawn too, to keep the order, and come back if the re-read finds
        them. Then the logs are re-read from the fork point on: an upstream that was lost
        (or a node that does not re-send logs after a reorg) would otherwise leave the new
        branch's logs out. Live logs wait in the buffer meanwhile, so no new log precedes
        a removal. The newHeads stream knows the fork point (``exact``); logs alone only
        show the lowest dropped block *with logs*, so the re-read starts just above the
        highest block still standing below it (at most :data:`REORG_WALK` blocks lower).
        """
        gone: list[LogEntry] = []
        for bh, is_dead in [(h, True) for h in dead] + [(h, False) for h in doubtful]:
            if is_dead:
                self.dead.add(bh)
            block = self.blocks.pop(bh, None)
            if block is not None:
                gone.extend(block[1].values())
        gone.sort(key=lambda e: e.position)
        live = [n for n, _ in self.blocks.values()]
        self.high = max(live) if live else None
        start = lowest
        if not exact:
            below = [n for n in live if n < lowest]
            start = max(max(below) + 1 if below else lowest, lowest - REORG_WALK)
        for p, mark in self.head_mark.items():
            self.head_mark[p] = min(mark, start)
        self.resume_from = start if self.resume_from is None else min(self.resume_from, start)
        self.buffering = True
        self.stale = self.outstanding is not None  # it may have read the old branch
        return [Emit(payload=e.payload, removed=True) for e in gone]

    def on_dropped(self, blocks: tuple[tuple[int, str], ...]) -> list[Decision]:
        blocks = tuple(b for b in blocks if b[1] not in self.dead)  # news only
        if not blocks:
            return []
        return self._remove([bh for _, bh in blocks], min(n for n, _ in blocks), True)

    def on_loss(self, provider: str) -> None:
        """Open the gap: buffer live logs and remember where to resume."""
        mark = self.head_mark.get(provider)
        if mark is None:
            mark = self.high
        if mark is not None:
            self.resume_from = mark if self.resume_from is None else min(self.resume_from, mark)
        self.buffering = True
        # A read in flight was planned before this loss: it may stop short of what the
        # lost upstream now fails to deliver, so it is followed by another one.
        self.stale = self.outstanding is not None

    def catch_up(
        self, exclude: frozenset[str], next_id: int, primary: str | None
    ) -> list[Decision]:
        if self.outstanding is not None:
            return []
        if self.resume_from is None:
            return self._flush()
        # Never start above what the live upstream has delivered: a lagging primary's
        # older blocks would otherwise look like a reorg below the backfilled ones.
        start = min(self.resume_from, self.head_mark.get(primary or "", self.resume_from))
        self.resume_from = start
        self.attempts += 1
        self.outstanding = Backfill(
            request_id=next_id, from_block=start, to_block=None, exclude=exclude
        )
        return [self.outstanding]

    def on_backfill(
        self, done: BackfillDone, requested: Backfill, primary: str | None
    ) -> list[Decision]:
        self.outstanding = None
        self.attempts = 0
        self.c.backfilled += max(0, done.to_block - done.from_block + 1)
        self.buffer.extend((e, True) for e in done.logs)
        if self.stale or (self.resume_from is not None and self.resume_from < requested.from_block):
            # A loss or a reorg arrived meanwhile: read again, from the lowest point (the
            # catch-up set ``resume_from`` to this request's start; it only went down).
            self.stale = False
            return []
        self.resume_from = None
        if primary is not None:
            # The live upstream covers what follows the catch-up range.
            self.head_mark[primary] = max(self.head_mark.get(primary, -1), done.to_block + 1)
        out: list[Decision] = []
        if done.from_block > requested.from_block:
            skipped = done.from_block - requested.from_block
            self.c.dropped += skipped
            out.append(
                Warn(
                    message=f"logs of blocks {requested.from_block}..{done.from_block - 1} "
                    f"exceed max_backfill_blocks={self.cap} and are skipped"
                )
            )
        return out + self._flush()

    def on_backfill_failed(
        self, exclude: frozenset[str], next_id: int, primary: str | None
    ) -> list[Decision]:
        self.outstanding = None
        if self.attempts < MAX_ATTEMPTS:
            return self.catch_up(exclude, next_id, primary)
        start = self.resume_from
        self.resume_from = None
        self.attempts = 0
        return [Warn(message=f"logs from block {start} could not be backfilled")] + self._flush()

    def _flush(self) -> list[Decision]:
        self.buffering = False
        items = sorted(self.buffer, key=lambda e: e[0].position)
        self.buffer = []
        out: list[Decision] = []
        for k, (entry, trusted) in enumerate(items):
            if self.buffering:  # a reorg inside the batch: the rest waits for the re-read
                self.buffer.extend(items[k:])
                break
            if entry.block_hash in self.dead:
                self.c.duplicates += 1
                continue
            out += self._accept(entry, trusted)
        return out


class _Txs:
    """newPendingTransactions: dedupe only."""

    def __init__(self, window: int, counters: _Counters) -> None:
        self.seen = _LruSet(max(64 * window, 1024))
        self.c = counters

    def on_tx(self, tx_hash: str, payload: object) -> list[Decision]:
        if tx_hash in self.seen:
            self.c.duplicates += 1
            return []
        self.seen.add(tx_hash)
        return [Emit(payload=payload)]


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
        self._c = _Counters()
        self._heads = _Heads(max(1, max_backfill_blocks), window, self._c)
        self._logs = _Logs(max(1, max_backfill_blocks), window, self._c)
        self._txs = _Txs(window, self._c)
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
        if fact.type in _LIFECYCLE:
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
        trusted = getattr(fact, "provider", None) == self.primary and self.primary is not None
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
