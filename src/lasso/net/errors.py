"""Exceptions of the network layer, and the one place foreign errors become them.

The tree::

    UpstreamError                  dispatched: may the request bytes have reached the provider?
     ├── UpstreamConnectError      DNS, refused, unreachable, TLS handshake, connect timeout
     │    │                        (dispatched=False)
     │    └── UpstreamNotConnected an upstream WebSocket is not connected right now
     │                             (dispatched=False; not the provider's fault)
     ├── UpstreamTimeout           no complete response before the deadline (dispatched=True;
     │    │                        the connection is closed, never reused), or the deadline
     │    │                        passed while connecting (dispatched=False)
     │    └── PoolTimeout          no connection became free before the deadline, or the
     │                             wait queue is full (dispatched=False)
     ├── UpstreamDisconnected      reset or EOF before a complete response (dispatched=True)
     ├── UpstreamProtocolError     unparseable or oversized HTTP response (dispatched=True)
     ├── UpstreamRpcError          a JSON-RPC error answer to a call made through
     │                             ``UpstreamWs.request`` (dispatched=True; ``code``,
     │                             ``message``, ``data``; not the provider's fault)
     └── PoolClosed                the pool was closed (dispatched=False, or True when it
                                   was closed under a request in flight); not the
                                   provider's fault

How the router reads ``dispatched``: when it is false nothing reached the provider and the
request may be sent elsewhere whatever the method; when it is true the provider may have
executed it, so only replay-safe methods may be retried on another provider.

``category`` names the matching ``lasso.kernel.classify.Category`` value (a ``StrEnum``, so
the plain strings compare equal), ``provider_fault`` says whether the failure should
count against the provider's health, and ``cause`` says what happened in the words an
operator looks for (``dns``, ``refused``, ``unreachable``, ``tls``, ``connect_timeout``,
``connect``, ``timeout``, ``disconnected``, ``protocol``, ...; the connect-level ones are
``lasso.kernel.faults.CONNECT_CAUSES``). Non-2xx HTTP statuses are not errors at this layer:
the pool returns them as responses.

OS, ``ssl`` and ``httptools`` exceptions are caught only inside ``lasso.net``; the
originating exception is kept as ``__cause__``.
"""

from __future__ import annotations

import errno
import re
import socket
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from typing import ClassVar

__all__ = [
    "UpstreamError",
    "UpstreamConnectError",
    "UpstreamNotConnected",
    "UpstreamRpcError",
    "UpstreamTimeout",
    "PoolTimeout",
    "UpstreamDisconnected",
    "UpstreamProtocolError",
    "PoolClosed",
    "map_connect_errors",
]


class UpstreamError(Exception):
    """Base class: an upstream request failed without an HTTP response.

    Attributes:
        dispatched: ``True`` if the request bytes may have reached the provider.
    """

    category: ClassVar[str] = "network_error"
    provider_fault: ClassVar[bool] = True
    default_dispatched: ClassVar[bool] = True
    default_cause: ClassVar[str] = "network"

    def __init__(
        self, message: str = "", *, dispatched: bool | None = None, cause: str | None = None
    ) -> None:
        super().__init__(message)
        self.dispatched: bool = self.default_dispatched if dispatched is None else dispatched
        self.cause: str = self.default_cause if cause is None else cause

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r}, dispatched={self.dispatched})"


class UpstreamConnectError(UpstreamError):
    """No connection could be made: DNS, refused, unreachable, TLS or connect timeout."""

    default_dispatched = False
    default_cause = "connect"


class UpstreamNotConnected(UpstreamConnectError):
    """An upstream WebSocket is down right now: nothing was sent, nobody is to blame."""

    provider_fault = False
    default_cause = "not_connected"


class UpstreamTimeout(UpstreamError):
    """The deadline passed: mid-exchange (connection closed) or while connecting."""

    category = "timeout"
    default_cause = "timeout"


class PoolTimeout(UpstreamTimeout):
    """No connection became free before the deadline (or too many waiters); nothing sent."""

    default_dispatched = False
    default_cause = "pool_exhausted"


class UpstreamDisconnected(UpstreamError):
    """The connection was reset or closed before a complete response arrived."""

    default_cause = "disconnected"


class UpstreamProtocolError(UpstreamError):
    """The provider answered with bytes that are not a valid (or acceptable) HTTP response."""

    category = "protocol_error"
    default_cause = "protocol"


class UpstreamRpcError(UpstreamError):
    """The provider answered a call with a JSON-RPC error object (EIP-1474 codes).

    Raised by :meth:`lasso.net.ws_upstream.UpstreamWs.request`; the pipeline never sees it
    (it judges raw answers itself). Classify it with
    ``lasso.kernel.classify.classify_rpc_error(exc.code, exc.message, exc.data)`` when the
    category matters.

    Attributes:
        code: the error's integer code.
        message: its message ("" when absent).
        data: its ``data`` member, or ``None``.
    """

    category = "unknown_error"
    provider_fault = False
    default_cause = "rpc_error"

    def __init__(self, code: int, message: str = "", data: object = None) -> None:
        super().__init__(f"{code}: {message}", dispatched=True)
        self.code = code
        self.message = message
        self.data = data


class PoolClosed(UpstreamError):
    """The pool was closed: a local condition, not the provider's fault."""

    category = "internal_error"
    provider_fault = False
    default_dispatched = False
    default_cause = "closed"


@contextmanager
def map_connect_errors(target: str) -> Iterator[None]:
    """Translate errors raised while connecting to ``target`` into :class:`UpstreamConnectError`.

    Picks the most specific message and ``cause``: DNS failure (``dns``), TLS failure
    (``tls``), timeout (``connect_timeout``), refused (``refused``), no route to the host
    or network (``unreachable``), another OS error (``connect``). Cancellation and our own
    errors pass through untouched.
    """
    try:
        yield
    except UpstreamError:
        raise
    except socket.gaierror as exc:
        raise UpstreamConnectError(f"cannot resolve {target}: {exc}", cause="dns") from exc
    except ssl.SSLError as exc:  # also covers certificate verification failures
        msg = f"TLS handshake with {target} failed: {exc}"
        raise UpstreamConnectError(msg, cause="tls") from exc
    except TimeoutError as exc:
        msg = f"connect to {target} timed out"
        raise UpstreamConnectError(msg, cause="connect_timeout") from exc
    except OSError as exc:
        msg = f"cannot connect to {target}: {exc}"
        raise UpstreamConnectError(msg, cause=_os_cause(exc)) from exc


_REFUSED = frozenset({errno.ECONNREFUSED})
_UNREACHABLE = frozenset(
    {errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EADDRNOTAVAIL, errno.ENETDOWN}
)
_ERRNO_TEXT = re.compile(r"\[Errno (\d+)\]")


def _os_cause(exc: OSError) -> str:
    """``refused``, ``unreachable`` or ``connect`` for an OS error while connecting.

    asyncio joins the errors of several addresses into one ``OSError`` without an errno
    ("Multiple exceptions: [Errno 111] ..., [Errno 99] ..."): the codes are then read from
    its text. One refusal makes it ``refused`` (the host is there: typically localhost with
    IPv6 unavailable); only unreachable addresses make it ``unreachable``.
    """
    codes = {exc.errno} if exc.errno is not None else set()
    if not codes:
        codes = {int(n) for n in _ERRNO_TEXT.findall(str(exc))}
    if codes & _REFUSED:
        return "refused"
    if codes and codes <= _UNREACHABLE:
        return "unreachable"
    return "connect"
