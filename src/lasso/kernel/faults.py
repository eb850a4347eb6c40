"""What went wrong with an upstream, whether it can be reached, and when to say so.

A :class:`Fault` is one failure of a channel, described by the adapter that saw it: its
*cause* (name resolution, refused connection, TLS, timeout, an HTTP status, a JSON-RPC
error...), its error category (:class:`~lasso.kernel.classify.Category`) and a message
for people. A :class:`ChannelHealth` keeps, per upstream channel, the last fault, the
connection state and what is worth reporting:

* the **connection state** (:data:`LINK_STATES`): ``unknown`` until the first outcome;
  ``up`` once the upstream answered anything (a result, an HTTP error status, a JSON-RPC
  error) or took the request bytes; ``down`` after a fault with a connect cause
  (:data:`CONNECT_CAUSES`: nothing could be sent), until it answers again;
* **reports**, the facts a log line or an event is made of, never more than one per kind
  of trouble and period: ``unreachable`` when the state becomes ``down``, ``reachable``
  when it comes back ``up``, and ``error`` for the first fault of its kind (its
  :attr:`Fault.key`) and again only :data:`REPEAT_REPORT_S` later, carrying how many of
  that kind were not reported in between. A provider failing on every request therefore
  costs a log line per kind every five minutes, not one per request.

Nothing here reads a clock: ``now`` comes in as an argument (monotonic seconds); a
fault's ``ts`` (wall-clock seconds, for display) is the adapter's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = [
    "CONNECT_CAUSES",
    "LINK_STATES",
    "MAX_PENDING_REPORTS",
    "MAX_TRACKED_KINDS",
    "REPEAT_REPORT_S",
    "ChannelHealth",
    "Fault",
    "Report",
]

CONNECT_CAUSES = frozenset({"dns", "refused", "unreachable", "tls", "connect_timeout", "connect"})
"""Causes meaning no connection could be made (nothing reached the upstream)."""

LINK_STATES = ("unknown", "up", "down")
"""Values of :attr:`ChannelHealth.link`."""

REPEAT_REPORT_S = 300.0
"""A fault of a kind already reported is reported again at most this often."""
MAX_PENDING_REPORTS = 16
"""Reports kept until drained; past it the oldest are dropped (and counted)."""
MAX_TRACKED_KINDS = 64
"""Fault kinds remembered per channel for the repeat rule; past it the oldest is forgotten."""

_UNKNOWN, _UP, _DOWN = LINK_STATES


@dataclass(frozen=True, slots=True, kw_only=True)
class Fault:
    """One failure of an upstream channel, as the adapter that saw it describes it.

    Attributes:
        cause: what happened, e.g. ``dns``, ``refused``, ``tls``, ``connect_timeout``,
            ``timeout``, ``disconnected``, ``protocol``, ``http_status``, ``rpc_error``,
            ``wrong_chain`` (:data:`CONNECT_CAUSES` are the connect-level ones).
        category: the error category (a ``Category`` value) the failure was counted as.
        message: for people; never a URL path or query (they may hold API keys).
        status: the HTTP status, when there was one.
        ts: wall-clock seconds when it happened (display only), when the adapter knows.
    """

    cause: str
    category: str
    message: str
    status: int | None = None
    ts: float | None = None

    @property
    def connect(self) -> bool:
        """True when no connection could be made."""
        return self.cause in CONNECT_CAUSES

    @property
    def key(self) -> tuple[str, str, int | None]:
        """The kind of trouble, for the repeat rule: cause, category and status."""
        return (self.cause, self.category, self.status)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready fields (``status`` and ``ts`` only when known)."""
        out: dict[str, object] = {
            "category": self.category,
            "cause": self.cause,
            "message": self.message,
        }
        if self.status is not None:
            out["status"] = self.status
        if self.ts is not None:
            out["ts"] = round(self.ts, 3)
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class Report:
    """Something worth one log line: a state change or the first fault of a kind.

    Attributes:
        kind: ``unreachable`` (the state became ``down``), ``reachable`` (back ``up``) or
            ``error`` (the first fault of its kind, or the first one
            :data:`REPEAT_REPORT_S` after the last report of that kind).
        fault: the fault (``None`` for ``reachable``).
        at: monotonic seconds.
        repeats: faults of this kind that were not reported since its last report.
        down_s: for ``reachable``, how long the channel was down.
    """

    kind: Literal["unreachable", "reachable", "error"]
    fault: Fault | None
    at: float
    repeats: int = 0
    down_s: float | None = None


class ChannelHealth:
    """The last fault and connection state of one upstream channel, and its reports.

    One per (upstream, transport), shared like the circuit breaker by every profile that
    points at the same upstream (see :class:`~lasso.kernel.channel.BreakerRegistry`), so
    a reload keeps it and an upstream used by three profiles is reported once.
    """

    __slots__ = (
        "_pending",
        "_seen",
        "down_since",
        "dropped",
        "failures",
        "last",
        "last_at",
        "link",
    )

    def __init__(self) -> None:
        self.link: str = _UNKNOWN
        self.last: Fault | None = None
        self.last_at: float | None = None
        self.down_since: float | None = None
        self.failures = 0  # faults recorded, all kinds
        self.dropped = 0  # reports lost to the MAX_PENDING_REPORTS bound
        self._seen: dict[tuple[str, str, int | None], list[float]] = {}  # key -> [at, n]
        self._pending: list[Report] = []

    @property
    def connected(self) -> bool:
        """True while the connection state is ``up``."""
        return self.link == _UP

    def reached(self, now: float) -> None:
        """The upstream answered (or took the request bytes): the state is ``up``.

        Cheap when already up; callers on the request path may check ``link`` first.
        """
        if self.link == _UP:
            return
        if self.link == _DOWN:
            since = self.down_since if self.down_since is not None else now
            self._push(Report(kind="reachable", fault=None, at=now, down_s=now - since))
        self.link = _UP
        self.down_since = None

    def fault(self, fault: Fault, now: float) -> None:
        """Record a failure: it becomes the last error and may change the state.

        A connect-level fault makes the state ``down`` (an ``unreachable`` report when it
        was not already); any other fault means the upstream was reached (``up``).
        """
        self.last = fault
        self.last_at = now
        self.failures += 1
        if fault.connect:
            if self.link != _DOWN:
                self.link = _DOWN
                self.down_since = now
                self._seen_now(fault.key, now)
                self._push(Report(kind="unreachable", fault=fault, at=now))
                return
        else:
            self.reached(now)
        seen = self._seen.get(fault.key)
        if seen is None or now - seen[0] >= REPEAT_REPORT_S:
            repeats = 0 if seen is None else int(seen[1])
            self._seen_now(fault.key, now)
            self._push(Report(kind="error", fault=fault, at=now, repeats=repeats))
        else:
            seen[1] += 1

    def lost(self, fault: Fault, now: float) -> None:
        """A standing connection (an upstream WebSocket) dropped: the state is ``down``
        with ``fault`` as the last error, reported as ``unreachable`` if it was up."""
        self.last = fault
        self.last_at = now
        self.failures += 1
        if self.link != _DOWN:
            self.link = _DOWN
            self.down_since = now
            self._seen_now(fault.key, now)
            self._push(Report(kind="unreachable", fault=fault, at=now))

    def drain(self) -> list[Report]:
        """The reports since the last call, oldest first (the caller logs them)."""
        out, self._pending = self._pending, []
        return out

    def last_error(self, now: float) -> dict[str, object] | None:
        """The last fault as JSON-ready fields plus ``age_s``; ``None`` if there was none."""
        if self.last is None or self.last_at is None:
            return None
        out = self.last.to_dict()
        out["age_s"] = round(max(0.0, now - self.last_at), 3)
        return out

    def _seen_now(self, key: tuple[str, str, int | None], now: float) -> None:
        seen = self._seen
        seen.pop(key, None)
        if len(seen) >= MAX_TRACKED_KINDS:
            del seen[next(iter(seen))]  # the least recently reported kind
        seen[key] = [now, 0]

    def _push(self, report: Report) -> None:
        pending = self._pending
        if len(pending) >= MAX_PENDING_REPORTS:
            del pending[0]
            self.dropped += 1
        pending.append(report)

    def __repr__(self) -> str:
        last = f" last={self.last.cause}" if self.last is not None else ""
        return (
            f"<ChannelHealth link={self.link} failures={self.failures}{last} "
            f"pending={len(self._pending)}>"
        )
