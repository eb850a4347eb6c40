"""Upstream failures described for people: exceptions and answers into kernel faults.

The pipeline, the health prober and the upstream WebSocket registry record failures in
the router (``record_failure(..., fault=...)``, ``observe_fault``); these helpers build the
:class:`~lasso.kernel.faults.Fault` they pass (a probe's verdict becomes one in
:func:`lasso.probes.health.probe_result_fault`): the cause an operator looks for (name
resolution, refused, TLS, timeout, an HTTP status, a JSON-RPC error...), the category the
failure counted as, and a message that names the upstream by scheme, host and port only
(``lasso.net`` builds its messages that way; paths and queries may hold API keys).

They run only when something failed, never on a successful request.
"""

from __future__ import annotations

import time
from typing import Any

from lasso.kernel.classify import Bucket, Category, bucket_of
from lasso.kernel.faults import Fault
from lasso.net.errors import UpstreamError

__all__ = ["MAX_MESSAGE", "answer_fault", "fault_of"]

MAX_MESSAGE = 200
"""Longest message kept (an upstream's error text is cut there)."""

_RECORDED = {c.value: bucket_of(c) in (Bucket.QUOTA, Bucket.PROVIDER_FAILURE) for c in Category}


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 1] + "…"


def fault_of(exc: UpstreamError) -> Fault:
    """The fault of a failed exchange (no HTTP answer): its cause, category and message."""
    return Fault(
        cause=exc.cause,
        category=str(exc.category),
        message=_clip(str(exc) or type(exc).__name__),
        ts=time.time(),
    )


def answer_fault(
    status: int, category: str, message: str, error: dict[str, Any] | None = None
) -> Fault | None:
    """The fault of an upstream answer judged a failure, or ``None`` when the category is
    not the provider's trouble (the caller's error, a capability gap): those never become
    a last error.

    Args:
        status: the HTTP status of the answer.
        category: what it was classified as (a ``Category`` value).
        message: the judgement's message (the JSON-RPC error message, or a description).
        error: the JSON-RPC error object, when the answer carried one.
    """
    if not _RECORDED.get(category, True):
        return None
    code = error.get("code") if error is not None else None
    text = message or (f"code {code}" if code is not None else "")
    if status != 200:
        detail = f"HTTP {status}" + (f": {text}" if error is not None and text else "")
        return Fault(
            cause="http_status",
            category=category,
            message=_clip(detail),
            status=status,
            ts=time.time(),
        )
    if error is not None:
        detail = f"JSON-RPC error {code}: {text}" if code is not None else f"JSON-RPC error: {text}"
        return Fault(cause="rpc_error", category=category, message=_clip(detail), ts=time.time())
    return Fault(
        cause="protocol", category=category, message=_clip(message or category), ts=time.time()
    )
