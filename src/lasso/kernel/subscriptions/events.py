"""The values crossing a stream's boundary: upstream payload models, facts in, decisions out.

Each is a small frozen value tagged with a ``Literal`` ``type`` field, so a ``match`` over
:data:`Fact` or :data:`Decision` is checked for exhaustiveness.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from lasso.kernel.subscriptions.keys import HASH_LEN, hex_of_length

__all__ = [
    "Backfill",
    "BackfillDone",
    "BackfillFailed",
    "BlockRefs",
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
    "LogEntry",
    "LogReceived",
    "NoProvider",
    "ProviderFact",
    "Resubscribe",
    "Retry",
    "Start",
    "SubscribeFailed",
    "Subscribed",
    "TxReceived",
    "UpstreamLost",
    "Warn",
    "parse_header",
    "parse_log",
]

# -- models of upstream events ----------------------------------------------------------------


def _quantity(value: object) -> int | None:
    if isinstance(value, str) and value[:2] in ("0x", "0X") and len(value) > 2:
        try:
            return int(value, 16)
        except ValueError:
            return None
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
    block_hash = hex_of_length(obj.get("hash"), HASH_LEN)
    parent = hex_of_length(obj.get("parentHash"), HASH_LEN)
    if number is None or block_hash is None or parent is None:
        return None
    return Header(number=number, hash=block_hash, parent_hash=parent, payload=obj)


def parse_log(obj: object) -> LogEntry | None:
    """A :class:`LogEntry` from a logs result; ``None`` if malformed (or pending)."""
    if not isinstance(obj, Mapping):
        return None
    number = _quantity(obj.get("blockNumber"))
    block_hash = hex_of_length(obj.get("blockHash"), HASH_LEN)
    index = _quantity(obj.get("logIndex"))
    if number is None or block_hash is None or index is None:
        return None
    removed = obj.get("removed") is True
    return LogEntry(
        block_number=number, block_hash=block_hash, log_index=index, removed=removed, payload=obj
    )


# -- facts (inputs) ----------------------------------------------------------------------------

BlockRefs = tuple[tuple[int, str], ...]
"""Blocks as ``(number, hash)`` pairs, ascending."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ProviderFact:
    """The base of the facts that name a ``provider``; only the primary's data is trusted.

    A head or log from another provider (an old upstream kept for overlap) may extend the
    stream but never reorg it.
    """

    provider: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Start:
    """The first client arrived: find an upstream."""

    type: Literal["start"] = "start"


@dataclass(frozen=True, slots=True, kw_only=True)
class Subscribed(ProviderFact):
    """The upstream subscription on ``provider`` is live; it becomes the primary.

    ``head``, when known, is the chain head at that moment: clients are owed the blocks
    (and logs) after it, so a newHeads stream that has not emitted anything yet can still
    backfill from there, and a logs stream knows where the new upstream starts.
    """

    head: int | None = None
    type: Literal["subscribed"] = "subscribed"


@dataclass(frozen=True, slots=True, kw_only=True)
class SubscribeFailed(ProviderFact):
    """Subscribing on ``provider`` failed; exclude it and try the next one."""

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
class UpstreamLost(ProviderFact):
    """The upstream on ``provider`` dropped, went stale, or its circuit opened."""

    reason: str
    type: Literal["upstream_lost"] = "upstream_lost"


@dataclass(frozen=True, slots=True, kw_only=True)
class Close:
    """The last client left and the grace period passed."""

    type: Literal["close"] = "close"


@dataclass(frozen=True, slots=True, kw_only=True)
class HeadReceived(ProviderFact):
    header: Header
    type: Literal["head"] = "head"


@dataclass(frozen=True, slots=True, kw_only=True)
class LogReceived(ProviderFact):
    log: LogEntry
    type: Literal["log"] = "log"


@dataclass(frozen=True, slots=True, kw_only=True)
class TxReceived(ProviderFact):
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

    blocks: BlockRefs
    type: Literal["blocks_dropped"] = "blocks_dropped"


@dataclass(frozen=True, slots=True, kw_only=True)
class HeadSeen(ProviderFact):
    """Logs of the blocks below ``number`` have been delivered through ``provider``.

    Feed it for every head the chain's newHeads stream receives from ``provider`` (the
    logs of that head itself may still be on their way), and with ``tip + 1`` when a logs
    subscription starts on ``provider`` (clients are owed nothing older). A failover
    resumes the logs backfill from the mark of the lost provider.
    """

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

    blocks: BlockRefs
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
