"""Upstream failures into kernel faults: exceptions, answers and probe verdicts."""

from __future__ import annotations

import pytest

from lasso.net.errors import UpstreamConnectError, UpstreamDisconnected, UpstreamTimeout
from lasso.server.faults import MAX_MESSAGE, answer_fault, fault_of


def test_fault_of_an_exception_keeps_its_cause_and_message() -> None:
    """The exception's cause and category become the fault's, with its text."""
    exc = UpstreamConnectError("cannot resolve https://x:443: nope", cause="dns")
    f = fault_of(exc)
    assert (f.cause, f.category, f.message, f.connect) == (
        "dns",
        "network_error",
        "cannot resolve https://x:443: nope",
        True,
    )
    assert f.ts is not None and f.ts > 1.6e9
    assert fault_of(UpstreamTimeout()).message == "UpstreamTimeout"
    assert fault_of(UpstreamDisconnected("reset")).cause == "disconnected"


@pytest.mark.parametrize(
    ("status", "category", "message", "error", "expected"),
    [
        (503, "server_error", "Provider infrastructure error (HTTP 503)", None,
         ("http_status", 503, "HTTP 503")),
        (429, "rate_limit", "rate limited", {"code": -32005, "message": "rate limited"},
         ("http_status", 429, "HTTP 429: rate limited")),
        (401, "auth_error", "Provider infrastructure error (HTTP 401)", None,
         ("http_status", 401, "HTTP 401")),
        (200, "internal_error", "boom", {"code": -32603, "message": "boom"},
         ("rpc_error", None, "JSON-RPC error -32603: boom")),
        (200, "protocol_error", "Invalid upstream response", None,
         ("protocol", None, "Invalid upstream response")),
    ],
)  # fmt: skip
def test_answer_fault_names_status_or_error(
    status: int,
    category: str,
    message: str,
    error: dict[str, object] | None,
    expected: tuple[str, int | None, str],
) -> None:
    """An HTTP error status, a JSON-RPC error and a bad body each get their cause."""
    f = answer_fault(status, category, message, error)
    assert f is not None
    assert (f.cause, f.status, f.message) == expected
    assert f.category == category


def test_answer_fault_skips_the_callers_errors_and_capability_gaps() -> None:
    """A revert, invalid params or a missing method is no fault of the provider."""
    for category in ("execution_revert", "invalid_params", "method_not_found"):
        assert answer_fault(200, category, "x", {"code": -32000, "message": "x"}) is None


def test_long_messages_are_cut_and_whitespace_folded() -> None:
    """An upstream's error text is kept to MAX_MESSAGE characters on one line."""
    f = answer_fault(200, "server_error", "a\nb " * 200, {"code": -32000})
    assert f is not None and len(f.message) == MAX_MESSAGE and "\n" not in f.message
