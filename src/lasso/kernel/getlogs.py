"""``eth_getLogs`` splitting: one wide request as block-ordered chunks, answered whole.

CONTRACT §8. Sans-IO: :func:`plan_get_logs` decides what to do with a request, and a
:class:`LogsSplit` runs the chunks (the driver sends each one through the normal attempt
planner, so every chunk gets candidates, failover and breakers like any request):

1. ``blockHash`` filters and malformed params pass through untouched (one block: nothing to
   split; the provider answers malformed ones).
2. Tags are resolved first (``latest``/``pending`` to the higher of the providers'
   consensus head and the served head, ``earliest`` to 0,
   ``safe``/``finalized`` when known): every chunk then sees the same head, and the
   consistency rules route each chunk to providers known to have its last block. A tag
   that cannot be resolved yet passes the request through as sent.
3. A range wider than ``routing.get_logs.max_range`` (default 100,000 blocks) is refused
   with ``-32602`` and ``data.max_range``.
4. A range wider than the chunk size (the largest limit among the healthy providers, from
   ``limits.max_block_range`` or learned from their errors; no split when any healthy
   provider has no limit) is split into contiguous chunks of that size. At most
   :data:`MAX_CHUNKS` chunks: beyond, ``-32602`` with the widest range that fits.
5. A chunk a provider rejects as too large is split again (reactive halving, or to the
   size the error names), down to single blocks; a single block that is still too large
   fails the request.
6. Chunks run with bounded parallelism, in block order; the answer is their logs
   concatenated in block order. Any chunk failing fails the whole request: never a
   partial answer. A log outside its chunk's range is a wrong answer and fails the chunk.
"""

from __future__ import annotations

from bisect import insort
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from lasso.config import GET_LOGS_MAX_PARALLEL, GET_LOGS_MAX_RANGE

from .head import HeadTracker
from .logs_limits import LogsLimit, LogsLimitKind
from .methods import logs_block_range

__all__ = [
    "DEFAULT_MAX_PARALLEL",
    "DEFAULT_MAX_RANGE",
    "MAX_CHUNKS",
    "Chunk",
    "LogsPlan",
    "LogsSplit",
    "PlanKind",
    "behind_error",
    "chunk_params",
    "chunk_size_for",
    "learned_limit",
    "plan_get_logs",
]

DEFAULT_MAX_RANGE = GET_LOGS_MAX_RANGE
"""``routing.get_logs.max_range``: the widest range one request may ask, in blocks."""
DEFAULT_MAX_PARALLEL = GET_LOGS_MAX_PARALLEL
"""``routing.get_logs.max_parallel``: chunks of one request in flight at once."""
MAX_CHUNKS = 1_000
"""Chunks one request may need, re-splits included: the upstream cost a request can cause."""


@dataclass(frozen=True, slots=True, order=True)
class Chunk:
    """Blocks ``lo`` to ``hi``, both included."""

    lo: int
    hi: int

    @property
    def span(self) -> int:
        return self.hi - self.lo + 1


class PlanKind(Enum):
    PASS = "pass"  # send ``params`` as one request
    SPLIT = "split"  # run ``chunks`` through a LogsSplit
    REJECT = "reject"  # answer ``error``


@dataclass(frozen=True, slots=True, kw_only=True)
class LogsPlan:
    """What to do with one ``eth_getLogs``.

    Attributes:
        kind: pass, split or reject.
        params: the params to send (``PASS``; tags resolved when they could be) or the
            template of each chunk's params (``SPLIT``).
        chunks: the chunks, in block order (``SPLIT``).
        error: the JSON-RPC error object (``REJECT``).
        lo, hi: the resolved range (``None`` when it could not be resolved).
    """

    kind: PlanKind
    params: Any = None
    chunks: tuple[Chunk, ...] = ()
    error: dict[str, Any] | None = None
    lo: int | None = None
    hi: int | None = None


def too_wide_error(span: int, max_range: int) -> dict[str, Any]:
    """The ``-32602`` answer for a range wider than ``max_range`` blocks."""
    return {
        "code": -32602,
        "message": f"eth_getLogs block range too large: {span} blocks, at most {max_range}",
        "data": {"max_range": max_range, "requested": span},
    }


def behind_error(block: int) -> dict[str, Any]:
    """The ``-32000`` answer when the providers a request may use are all behind ``block``
    (another provider has it): their answer could silently miss logs."""
    return {
        "code": -32000,
        "message": (
            f"eth_getLogs: the providers this route may use are behind block {block}; "
            "their answer could miss logs"
        ),
        "data": {"behind": hex(block)},
    }


def plan_get_logs(
    params: Any,
    head: HeadTracker,
    consensus: int | None,
    *,
    chunk_size: int | None,
    max_range: int = DEFAULT_MAX_RANGE,
) -> LogsPlan:
    """Decide how to run one ``eth_getLogs`` (see the module docstring, steps 1-4).

    Args:
        params: the request's params.
        head: the chain's served head (tag resolution).
        consensus: the providers' consensus height (``latest`` is at least this).
        chunk_size: the widest chunk to send, from :func:`chunk_size_for`; ``None``
            means no proactive split.
        max_range: ``routing.get_logs.max_range``.
    """
    bounds = logs_block_range(params)
    if bounds is None:
        return LogsPlan(kind=PlanKind.PASS, params=params)
    lo = head.resolve(bounds[0], consensus)
    hi = head.resolve(bounds[1], consensus)
    if lo is None or hi is None or lo > hi:
        # An unknown tag, or an empty/reversed range (from = head + 1, to = latest, say):
        # the provider answers it as sent.
        return LogsPlan(kind=PlanKind.PASS, params=params, lo=lo, hi=hi)
    span = hi - lo + 1
    if span > max_range:
        return LogsPlan(kind=PlanKind.REJECT, error=too_wide_error(span, max_range), lo=lo, hi=hi)
    resolved = chunk_params(params, Chunk(lo, hi))
    if chunk_size is None or span <= chunk_size:
        return LogsPlan(kind=PlanKind.PASS, params=resolved, lo=lo, hi=hi)
    count = -(-span // chunk_size)
    if count > MAX_CHUNKS:
        error = too_wide_error(span, chunk_size * MAX_CHUNKS)
        return LogsPlan(kind=PlanKind.REJECT, error=error, lo=lo, hi=hi)
    chunks = tuple(Chunk(a, min(a + chunk_size - 1, hi)) for a in range(lo, hi + 1, chunk_size))
    return LogsPlan(kind=PlanKind.SPLIT, params=resolved, chunks=chunks, lo=lo, hi=hi)


def chunk_params(params: Any, chunk: Chunk) -> list[Any]:
    """``params`` with ``fromBlock``/``toBlock`` set to the chunk (hex), other keys kept."""
    flt = dict(params[0])
    flt["fromBlock"] = hex(chunk.lo)
    flt["toBlock"] = hex(chunk.hi)
    return [flt, *params[1:]]


def chunk_size_for(limits: list[int | None]) -> int | None:
    """The chunk size for a split: the largest limit among the providers that may serve it
    (each chunk then fits at least one of them; the router sends it to those it fits).
    ``None`` (no proactive split) when there is no provider or any has no limit."""
    if not limits or any(limit is None for limit in limits):
        return None
    return max(limit for limit in limits if limit is not None)


def learned_limit(limit: LogsLimit, span: int, current: int | None) -> int | None:
    """The range limit to remember for a provider after it rejected ``span`` blocks.

    A range error with a number gives that number; one without gives half the span
    (conservative; it shrinks again if still too wide). Result-size errors depend on
    the data and teach nothing (``current`` is kept). Never above ``current``.
    """
    if limit.kind is LogsLimitKind.RESULTS:
        return current
    value = limit.max_blocks if limit.max_blocks is not None else max(1, span // 2)
    return value if current is None or value < current else current


@dataclass(slots=True)
class _State:
    pending: list[Chunk] = field(default_factory=list)  # in block order
    running: set[Chunk] = field(default_factory=set)
    results: dict[Chunk, list[Any]] = field(default_factory=dict)


class LogsSplit:
    """The chunks of one split request: what to send next, and the merged answer.

    The driver loops: :meth:`next_chunks` → send each → report :meth:`succeeded`,
    :meth:`too_large` or :meth:`failed` → until :attr:`done` or :attr:`error`.

    Args:
        chunks: the plan's chunks, in block order.
        max_parallel: chunks in flight at once (at least 1).
    """

    __slots__ = ("_created", "_max_parallel", "_s", "error")

    def __init__(self, chunks: tuple[Chunk, ...], *, max_parallel: int) -> None:
        self._s = _State(pending=list(chunks))
        self._max_parallel = max(1, max_parallel)
        self._created = len(chunks)
        self.error: dict[str, Any] | None = None

    @property
    def done(self) -> bool:
        """Every chunk answered (and no failure)."""
        return self.error is None and not self._s.pending and not self._s.running

    @property
    def in_flight(self) -> int:
        return len(self._s.running)

    def next_chunks(self) -> list[Chunk]:
        """Chunks to send now, lowest blocks first, within ``max_parallel``; they count as
        in flight until reported. Empty once the request failed."""
        s = self._s
        if self.error is not None:
            return []
        room = self._max_parallel - len(s.running)
        if room <= 0:
            return []
        out = s.pending[:room]
        del s.pending[:room]
        s.running.update(out)
        return out

    def succeeded(self, chunk: Chunk, logs: list[Any]) -> bool:
        """A chunk's logs. Returns False (and fails the request) when a log lies outside
        the chunk's blocks: the provider answered another question."""
        self._s.running.discard(chunk)
        for log in logs:
            number = _log_block(log)
            if number is not None and not chunk.lo <= number <= chunk.hi:
                self.failed(
                    {
                        "code": -32000,
                        "message": "eth_getLogs: a provider answered logs outside the range",
                        "data": {"fromBlock": hex(chunk.lo), "toBlock": hex(chunk.hi)},
                    }
                )
                return False
        self._s.results[chunk] = logs
        return True

    def too_large(self, chunk: Chunk, limit: LogsLimit | None) -> bool:
        """A provider rejected the chunk as too large: split it again (to the size the
        error names when smaller, else in halves). Returns False (and fails the request)
        when the chunk is a single block or the request would exceed :data:`MAX_CHUNKS`."""
        s = self._s
        s.running.discard(chunk)
        span = chunk.span
        size = span // 2 + span % 2
        if limit is not None and limit.max_blocks is not None and limit.max_blocks < span:
            size = limit.max_blocks
        parts = [Chunk(a, min(a + size - 1, chunk.hi)) for a in range(chunk.lo, chunk.hi + 1, size)]
        if span <= 1 or self._created + len(parts) > MAX_CHUNKS:
            self.failed(
                {
                    "code": -32005,
                    "message": "eth_getLogs: result too large even in small chunks",
                    "data": {"fromBlock": hex(chunk.lo), "toBlock": hex(chunk.hi)},
                }
            )
            return False
        self._created += len(parts)
        for part in parts:  # pending stays in block order: the earliest blocks go first
            insort(s.pending, part)
        return True

    def failed(self, error: dict[str, Any]) -> None:
        """A chunk failed for good: the request fails with ``error``; nothing more is sent
        (chunks in flight may be cancelled or their answers dropped)."""
        if self.error is None:
            self.error = error
        self._s.pending.clear()

    def result(self) -> list[Any]:
        """The merged logs, in block order. Only once :attr:`done`."""
        if not self.done:
            raise RuntimeError("the split request is not complete")
        out: list[Any] = []
        for chunk in sorted(self._s.results):
            out.extend(self._s.results[chunk])
        return out

    def __repr__(self) -> str:
        s = self._s
        state = "failed" if self.error is not None else ("done" if self.done else "running")
        return (
            f"<LogsSplit {state} pending={len(s.pending)} running={len(s.running)} "
            f"answered={len(s.results)} created={self._created}>"
        )


def _log_block(log: object) -> int | None:
    if isinstance(log, dict):
        value = log.get("blockNumber")
        if isinstance(value, str) and value[:2] == "0x":
            try:
                return int(value, 16)
            except ValueError:
                return None
    return None
