"""Tests of the network error tree and the connect-error mapping."""

from __future__ import annotations

import errno
import socket
import ssl

import pytest

from lasso.net import errors
from lasso.net.errors import (
    PoolClosed,
    PoolTimeout,
    UpstreamConnectError,
    UpstreamDisconnected,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamTimeout,
    map_connect_errors,
)


def test_dispatched_defaults_follow_the_tree() -> None:
    """Connect errors, PoolTimeout and PoolClosed default to undispatched; the rest dispatched."""
    assert UpstreamConnectError().dispatched is False
    assert PoolTimeout().dispatched is False
    assert PoolClosed().dispatched is False
    assert UpstreamTimeout().dispatched is True
    assert UpstreamDisconnected().dispatched is True
    assert UpstreamProtocolError().dispatched is True
    assert UpstreamTimeout(dispatched=False).dispatched is False
    assert PoolClosed(dispatched=True).dispatched is True


def test_hierarchy_and_hints() -> None:
    """All errors are UpstreamErrors; PoolTimeout is a timeout; PoolClosed is no provider fault."""
    for name in errors.__all__:
        obj = getattr(errors, name)
        if isinstance(obj, type):
            assert issubclass(obj, UpstreamError)
    assert issubclass(PoolTimeout, UpstreamTimeout)
    assert UpstreamTimeout.category == PoolTimeout.category == "timeout"
    assert UpstreamProtocolError.category == "protocol_error"
    assert UpstreamConnectError.category == UpstreamDisconnected.category == "network_error"
    assert PoolClosed.provider_fault is False and UpstreamTimeout.provider_fault is True


def test_repr_shows_dispatched() -> None:
    """repr names the class, the message and the dispatched flag."""
    assert repr(UpstreamTimeout("late")) == "UpstreamTimeout('late', dispatched=True)"


@pytest.mark.parametrize(
    ("raised", "fragment", "cause"),
    [
        (socket.gaierror(-2, "Name or service not known"), "cannot resolve", "dns"),
        (ssl.SSLCertVerificationError("bad cert"), "TLS handshake", "tls"),
        (TimeoutError(), "timed out", "connect_timeout"),
        (ConnectionRefusedError(errno.ECONNREFUSED, "refused"), "cannot connect", "refused"),
        (OSError(errno.EHOSTUNREACH, "No route to host"), "cannot connect", "unreachable"),
        (OSError(errno.ENETUNREACH, "Network is unreachable"), "cannot connect", "unreachable"),
        (OSError(errno.EMFILE, "Too many open files"), "cannot connect", "connect"),
        # asyncio joins the errors of several addresses into one OSError without errno.
        (
            OSError(
                "Multiple exceptions: [Errno 111] Connect call failed ('127.0.0.1', 1), "
                "[Errno 99] Cannot assign requested address"
            ),
            "cannot connect",
            "refused",
        ),
        (
            OSError("Multiple exceptions: [Errno 113] No route, [Errno 101] Unreachable"),
            "cannot connect",
            "unreachable",
        ),
        (OSError("Multiple exceptions: something else"), "cannot connect", "connect"),
    ],
)
def test_map_connect_errors_picks_the_most_specific_message(
    raised: Exception, fragment: str, cause: str
) -> None:
    """OS, DNS, TLS and timeout errors become UpstreamConnectError with the original kept
    as ``__cause__`` and the operator's word for it as ``cause``."""
    with pytest.raises(UpstreamConnectError, match=fragment) as info:
        with map_connect_errors("http://h:1"):
            raise raised
    assert info.value.__cause__ is raised
    assert info.value.dispatched is False
    assert info.value.cause == cause


def test_causes_default_per_class() -> None:
    """Each error class names its cause; an instance may say more precisely."""
    assert UpstreamTimeout().cause == "timeout"
    assert UpstreamTimeout(cause="connect_timeout").cause == "connect_timeout"
    assert UpstreamDisconnected().cause == "disconnected"
    assert UpstreamProtocolError().cause == "protocol"
    assert UpstreamConnectError().cause == "connect"
    assert PoolTimeout().cause == "pool_exhausted"
    assert PoolClosed().cause == "closed"


def test_map_connect_errors_lets_others_through() -> None:
    """Our own errors and unrelated exceptions pass through unchanged."""
    with pytest.raises(UpstreamTimeout):
        with map_connect_errors("http://h:1"):
            raise UpstreamTimeout(dispatched=False)
    with pytest.raises(KeyError):
        with map_connect_errors("http://h:1"):
            raise KeyError("x")
