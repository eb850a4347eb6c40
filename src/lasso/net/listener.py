"""Accepting client connections under a cap: the listening half of the HTTP server.

``loop.create_server`` accepts as fast as the kernel hands connections over and has no way
to stop without closing its socket, so a flood of connections ends in ``accept`` failing
with ``EMFILE`` for everyone. :class:`Acceptor` runs the accept loop itself, on listening
sockets made by :func:`bind_sockets` (the addresses ``create_server`` would bind):

* every accepted socket takes a :class:`Slot`, given back exactly once when the
  connection is gone (by its protocol, or by the protocol it was upgraded to);
* at ``cap`` open connections, when another one waits, it first asks ``evict`` to close
  one that can go (an idle keep-alive connection, a stalled request); when none can, it
  stops reading the listening sockets: new connections wait in the kernel's backlog, and
  are accepted again once the count is down to ``low``, or ``retry_s`` later if by then
  something can be evicted;
* ``EMFILE``/``ENFILE``/``ENOBUFS``/``ENOMEM`` on ``accept`` pause accepting for
  :data:`ACCEPT_RETRY_S` instead of spinning; other accept errors (a peer that reset
  while queued) are skipped.
* a pause is logged once (``server.accept_paused``, with the reason: ``cap`` or the
  errno), again only after the count went back down to ``low``.

At most :data:`ACCEPT_BATCH` connections are accepted per loop turn, so a connection
storm cannot starve established clients.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import select
import socket
from collections.abc import Callable
from typing import Any

__all__ = ["Acceptor", "Slot", "bind_sockets", "ACCEPT_BATCH", "ACCEPT_RETRY_S"]

_log = logging.getLogger("lasso.net.listener")
ACCEPT_BATCH = 64
ACCEPT_RETRY_S = 0.1
_RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


def _waiting(lsock: socket.socket) -> bool:
    """Whether a connection waits in ``lsock``'s backlog (a zero-timeout poll)."""
    try:
        return bool(select.select([lsock], [], [], 0)[0])
    except (OSError, ValueError):
        return False


def bind_sockets(
    host: str, port: int, *, reuse_port: bool = False, backlog: int = 1024
) -> list[socket.socket]:
    """Listening, non-blocking TCP sockets for ``host:port`` (every address it resolves
    to, as ``loop.create_server`` binds them).

    Raises:
        OSError: the address cannot be resolved or bound.
    """
    infos = socket.getaddrinfo(
        host or None, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, socket.AI_PASSIVE
    )
    socks: list[socket.socket] = []
    seen: set[tuple[Any, ...]] = set()
    try:
        for family, kind, proto, _, addr in infos:
            if (family, addr) in seen:
                continue
            seen.add((family, addr))
            sock = socket.socket(family, kind, proto)
            socks.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6 and hasattr(socket, "IPPROTO_IPV6"):
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(addr)
            sock.listen(backlog)
            sock.setblocking(False)
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    return socks


class Slot:
    """One accepted connection's place under the cap; :meth:`release` gives it back once."""

    __slots__ = ("_acceptor",)

    def __init__(self, acceptor: Acceptor) -> None:
        self._acceptor: Acceptor | None = acceptor

    def release(self) -> None:
        """Give the place back (idempotent)."""
        acceptor, self._acceptor = self._acceptor, None
        if acceptor is not None:
            acceptor._released()

    @property
    def held(self) -> bool:
        return self._acceptor is not None


class Acceptor:
    """The accept loop over one or more listening sockets, at most ``cap`` connections open.

    Args:
        loop: the event loop.
        factory: builds the protocol of an accepted connection from its :class:`Slot`;
            the protocol (or whatever takes the connection over) must call
            ``slot.release()`` when the connection is gone.
        cap: connections open at once; at the cap, accepting stops.
        low: accepting resumes when the count falls to this (default 90 % of ``cap``).
        evict: at the cap, asked to close one connection that can go; returns whether it
            did (it must release that connection's slot at once).
        retry_s: while paused at the cap with nothing to evict, look again this often.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        factory: Callable[[Slot], asyncio.Protocol],
        cap: int,
        *,
        low: int | None = None,
        evict: Callable[[], bool] | None = None,
        retry_s: float = 0.25,
    ) -> None:
        if cap < 1:
            raise ValueError("cap must be >= 1")
        self.loop = loop
        self.cap = cap
        self.low = max(0, min(cap - 1, low if low is not None else cap - max(1, cap // 10)))
        self.open = 0
        self.accepted = 0
        self.evicted = 0
        self.paused = False
        self.retry_s = retry_s
        self._factory = factory
        self._evict = evict
        self._socks: list[socket.socket] = []
        self._retry: asyncio.TimerHandle | None = None
        self._closed = False
        self._warned = False
        self._tasks: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("paused" if self.paused else "accepting")
        return (
            f"<Acceptor {state} open={self.open} cap={self.cap} low={self.low}"
            f" accepted={self.accepted} evicted={self.evicted}>"
        )

    @property
    def sockets(self) -> list[socket.socket]:
        return list(self._socks)

    def listen(self, sock: socket.socket) -> None:
        """Start accepting on ``sock`` (listening and non-blocking)."""
        self._socks.append(sock)
        if not self.paused and not self._closed:
            self.loop.add_reader(sock.fileno(), self._on_readable, sock)

    def close(self) -> None:
        """Stop accepting and close the listening sockets (open connections stay)."""
        if self._closed:
            return
        self._closed = True
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        for sock in self._socks:
            if not self.paused:
                self.loop.remove_reader(sock.fileno())
            sock.close()
        self._socks.clear()

    # -- internals ----------------------------------------------------------------------
    def _released(self) -> None:
        self.open -= 1
        if self.open <= self.low:
            self._warned = False
        if self.paused and self.open <= self.low and not self._closed:
            if self._retry is not None:
                self._retry.cancel()
            self._resume()

    def _pause(self, retry_after: float | None = None, reason: str = "cap") -> None:
        if not self.paused:
            self.paused = True
            for sock in self._socks:
                self.loop.remove_reader(sock.fileno())
            if not self._warned:  # once per episode: resuming below ``low`` re-arms it
                self._warned = True
                _log.warning(
                    "not accepting new connections",
                    extra={
                        "event": "server.accept_paused",
                        "reason": reason,
                        "open": self.open,
                        "cap": self.cap,
                    },
                )
        if retry_after is not None and self._retry is None:
            self._retry = self.loop.call_later(retry_after, self._resume)

    def _resume(self) -> None:
        self._retry = None
        if not self.paused or self._closed:
            return
        self.paused = False
        for sock in self._socks:
            self.loop.add_reader(sock.fileno(), self._on_readable, sock)

    def _on_readable(self, lsock: socket.socket) -> None:
        for _ in range(ACCEPT_BATCH):
            if self.open >= self.cap:
                if not _waiting(lsock):  # nobody to make room for (yet)
                    return
                if self._evict is None or not self._evict():
                    self._pause(self.retry_s)  # everyone is busy: look again shortly
                    return
                self.evicted += 1
            try:
                sock, _ = lsock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in _RESOURCE_ERRNOS:  # out of files: wait, do not spin
                    self._pause(ACCEPT_RETRY_S, errno.errorcode.get(exc.errno or 0, "EMFILE"))
                    return
                continue  # ECONNABORTED and the like: that one is gone, take the next
            self.open += 1
            self.accepted += 1
            slot = Slot(self)
            try:
                sock.setblocking(False)
                task = self.loop.create_task(self._start(sock, slot))
            except BaseException:
                sock.close()
                slot.release()
                raise
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _start(self, sock: socket.socket, slot: Slot) -> None:
        try:
            await self.loop.connect_accepted_socket(lambda: self._factory(slot), sock)
        except Exception:  # the peer vanished while we set it up
            sock.close()
            slot.release()
