"""Opt-in busy polling: keep the event loop awake for a short window after I/O.

Why it exists (measured, see docs/performance.md): on a virtual machine a vCPU that has
nothing to run halts, and waking it costs far more than the work it wakes up for. With
one client sending one request at a time, Lasso sleeps twice per request (waiting for the
upstream, then for the client's next request), and each wake-up runs the proxy's Python
code with cold caches: about 150 µs of CPU per request at concurrency 1 against 45 µs at
concurrency 64, and +150-230 µs of added p50 latency instead of about +50 µs.

With ``--busy-poll-us N`` (env ``LASSO_BUSY_POLL_US``), every client request and every
response written keeps the loop polling its sockets without sleeping (``epoll_wait``
with a zero timeout, through a self-rescheduling ``call_soon``) until N µs have passed
with no further I/O. An upstream that answers within N µs and a client that sends its
next request within N µs then find the proxy hot. The price is CPU: up to N µs of spinning
after each request and each response when traffic is sparse (nothing extra when the
node is busy, because the loop never runs out of work then). Off (0) by default: it pays
for a co-located node (sub-millisecond upstream) and latency-sensitive clients, not for
remote providers tens of milliseconds away.
"""

from __future__ import annotations

import asyncio
from time import monotonic

__all__ = ["BusyPoller", "MAX_BUSY_POLL_US"]

#: The largest window accepted: beyond a few milliseconds spinning only burns CPU.
MAX_BUSY_POLL_US = 10_000


class BusyPoller:
    """Keeps one event loop polling until ``window_s`` after the last :meth:`activity`."""

    __slots__ = ("_loop", "_until", "_running", "window_s", "polls")

    def __init__(self, loop: asyncio.AbstractEventLoop, window_s: float) -> None:
        if not 0 < window_s <= MAX_BUSY_POLL_US / 1e6:
            raise ValueError(f"busy-poll window must be in (0, {MAX_BUSY_POLL_US}] µs")
        self._loop = loop
        self._until = 0.0
        self._running = False
        self.window_s = window_s
        self.polls = 0  # loop iterations spent polling (for tests and the curious)

    def __repr__(self) -> str:
        return f"<BusyPoller window={self.window_s * 1e6:.0f}µs running={self._running}>"

    @property
    def running(self) -> bool:
        return self._running

    def activity(self) -> None:
        """I/O happened: keep polling for at least another window from now."""
        self._until = monotonic() + self.window_s
        if not self._running:
            self._running = True
            self._loop.call_soon(self._poll)

    def _poll(self) -> None:
        if monotonic() < self._until:
            self.polls += 1
            self._loop.call_soon(self._poll)  # a ready callback: the next epoll never sleeps
        else:
            self._running = False
