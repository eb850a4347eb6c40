"""What one upstream answer means: :func:`judge` turns a response into a :class:`Judgement`.

The planner (:mod:`.planner`) acts on judgements, never on bytes. The adapter parses the
body (with orjson, outside the kernel) and passes the document in, so an answer is parsed
once whoever reads it next (the height sample of an ``eth_blockNumber``, say).

=====================================  ===================================================
answer                                 judgement
=====================================  ===================================================
HTTP 200, ``result``, our id           :data:`ACCEPTED`
a JSON-RPC ``error`` object            the category of ``classify_rpc_error`` (a 429, or a
                                       403 whose body reads as a quota, is ``rate_limit``);
                                       the retry-after hint of its ``data``, else of the
                                       ``Retry-After`` header; the error object itself
a non-200 status without one           ``classify_http_status`` ("Provider infrastructure
                                       error (HTTP n)"), the header's retry-after
anything else (no JSON, wrong id)      ``protocol_error`` "Invalid upstream response"
=====================================  ===================================================

Judgements of *results* (a ``null`` block from a provider behind the requested height:
"retry elsewhere, not the provider's fault"; an ``eth_blockNumber`` clamped to the served
head) are made after this one, by :func:`.consistency.check_answer`: a non-ok judgement in
the capability bucket, or an accepted one with a ``replacement`` result. The planner needs
no change for them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .classify import (
    Bucket,
    Category,
    bucket_of,
    classify_http_status,
    classify_rpc_error,
    is_quota_body,
    parse_retry_after,
    retry_after_from_error,
)

if TYPE_CHECKING:  # rules are read by attribute; no config code at runtime
    from lasso.config import ErrorRule

__all__ = ["ACCEPTED", "INVALID_RESPONSE", "Judgement", "judge"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Judgement:
    """The meaning of one upstream answer (or, for transport failures, of its absence).

    Attributes:
        ok: a usable result: the answer ends the request.
        category: for a failure, what went wrong; :func:`~.classify.bucket_of` says
            what follows (answer the caller, fail over, count against the breaker).
        error: the upstream's JSON-RPC error object, when it sent one (a deterministic
            error goes back to the client as the provider wrote it).
        retry_after_s: the provider's retry-after hint in seconds (clamped), if any.
        message: a short reason, for the client-facing error when nothing better exists.
        id_ok: the answer carries our transport id, so its bytes may be passed back with
            the client's id spliced in.
        replacement: for an accepted answer, a result to answer instead of the provider's
            (a JSON string: a head clamped to the one already served); ``None`` keeps the
            provider's bytes.
    """

    ok: bool
    category: Category | None = None
    error: Mapping[str, Any] | None = None
    retry_after_s: float | None = None
    message: str = ""
    id_ok: bool = False
    replacement: str | None = None

    @property
    def bucket(self) -> Bucket | None:
        """The category's bucket (``None`` for a success)."""
        return None if self.category is None else bucket_of(self.category)


ACCEPTED = Judgement(ok=True, id_ok=True)
"""The judgement of every usable result (one shared value: no allocation per request)."""

INVALID_RESPONSE = Judgement(
    ok=False, category=Category.PROTOCOL_ERROR, message="Invalid upstream response"
)


def judge(
    status: int,
    doc: object,
    body: bytes | bytearray,
    headers: Mapping[bytes, bytes],
    *,
    tid: str,
    wall_now: float,
    rules: Sequence[ErrorRule] = (),
    known_method: bool = True,
) -> Judgement:
    """Judge an upstream answer (reference §5.3; JSON-RPC 2.0 §5, EIP-1474 codes).

    Args:
        status: the HTTP status (WebSocket answers are passed as 200).
        doc: ``body`` parsed as JSON, or ``None`` when it is empty or not JSON.
        body: the raw body, searched for quota wording in 403/5xx answers.
        headers: response headers with lower-case names (``retry-after`` is read).
        tid: our transport id as the upstream must echo it (the JSON string's value).
        wall_now: Unix seconds, to turn a ``Retry-After`` HTTP-date into a delay.
        rules: the provider's ``capabilities.error_rules``, tried first.
        known_method: whether the method is in the registry (see ``classify_rpc_error``).

    Returns:
        :data:`ACCEPTED` for a usable result, else a failed judgement. Never raises.
    """
    if type(doc) is dict:
        err = doc.get("error")
        if status == 200 and err is None:
            if "result" in doc and doc.get("id") == tid:
                return ACCEPTED
            return INVALID_RESPONSE
        if isinstance(err, dict) and isinstance(err.get("code"), int):
            code = err["code"]
            raw = err.get("message")
            message = raw if isinstance(raw, str) else ""
            cat = classify_rpc_error(
                code, message, err.get("data"), rules, known_method=known_method
            )
            if status == 429 or (  # a 403 "forbidden: daily quota exceeded" is a quota
                status == 403
                and bucket_of(cat) is Bucket.PROVIDER_FAILURE
                and is_quota_body(status, body)
            ):
                cat = Category.RATE_LIMIT
            ra = retry_after_from_error(err.get("data"))
            if ra is None:
                ra = parse_retry_after(headers.get(b"retry-after"), wall_now)
            return Judgement(
                ok=False,
                category=cat,
                error=err,
                retry_after_s=ra,
                message=message,
                id_ok=doc.get("id") == tid,
            )
    if status != 200:
        return Judgement(
            ok=False,
            category=classify_http_status(status, body),
            retry_after_s=parse_retry_after(headers.get(b"retry-after"), wall_now),
            message=f"Provider infrastructure error (HTTP {status})",
        )
    return INVALID_RESPONSE
