"""Hostile answers: what a broken or malicious provider sends instead of a good answer.

A provider whose :class:`~lasso.sim.behavior.Behavior` has ``hostile`` set answers every
HTTP JSON-RPC request (after its latency, like any other fault) in that mode:

``slow_drip``
    The right answer, ``Content-Length`` announced, trickled ``drip_bytes`` every
    ``drip_interval_ms``.
``huge``
    A valid answer whose ``result`` is a string of ``huge_bytes`` bytes, chunked (no
    ``Content-Length``, so the size is known only as it arrives).
``truncated``
    The right answer's head and first half, with the ``Content-Length`` of the whole;
    then the connection closes.
``wrong_id``
    The right answer under an id nobody sent.
``id_in_result``
    ``{"jsonrpc":"2.0","result":<the request's id>,"id":<the request's id>}``: the result
    comes first and equals the id (a proxy splicing ids by search gets it wrong).
``absurd_retry_after``
    HTTP 429 with ``Retry-After: 1e308`` and a ``-32005`` error whose
    ``data.retry_after`` is 1e306.
``html_200``
    An HTML error page with status 200.

The answer bodies are built by the pure functions here; :func:`respond` writes them with
aiohttp (streaming for the drip, the huge answer and the truncation). WebSocket answers
are not affected.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Literal, get_args

import orjson
from aiohttp import web

__all__ = [
    "HostileMode",
    "HOSTILE_MODES",
    "wrong_id",
    "id_in_result",
    "absurd_retry_after",
    "huge_parts",
    "HTML_PAGE",
    "respond",
]

HostileMode = Literal[
    "slow_drip",
    "huge",
    "truncated",
    "wrong_id",
    "id_in_result",
    "absurd_retry_after",
    "html_200",
]
HOSTILE_MODES: tuple[str, ...] = get_args(HostileMode)

HTML_PAGE = (
    b"<!DOCTYPE html><html><head><title>Service Unavailable</title></head><body>"
    b"<h1>Our servers are busy</h1><p>Please try again later.</p></body></html>"
)
_PIECE = 1 << 20  # bytes of filler per chunk of a huge answer


def _calls(payload: Any) -> list[Any]:
    return payload if isinstance(payload, list) else [payload]


def _id_of(call: Any) -> Any:
    return call.get("id") if isinstance(call, dict) else None


def wrong_id(answer: Any) -> Any:
    """``answer`` (an object or a batch) with every id replaced by one nobody sent."""

    def other(item: Any) -> Any:
        if not isinstance(item, dict):
            return item
        old = item.get("id")
        new: Any = old + 1 if isinstance(old, int) and not isinstance(old, bool) else "not-yours"
        return {**item, "id": new}

    return [other(a) for a in answer] if isinstance(answer, list) else other(answer)


def id_in_result(payload: Any) -> bytes:
    """One answer per call whose ``result`` is the call's id, written before the id."""
    items = [
        b'{"jsonrpc":"2.0","result":%s,"id":%s}' % (orjson.dumps(i), orjson.dumps(i))
        for i in (_id_of(c) for c in _calls(payload))
    ]
    return b"[" + b",".join(items) + b"]" if isinstance(payload, list) else items[0]


def absurd_retry_after(payload: Any) -> tuple[int, dict[str, str], bytes]:
    """A rate-limit answer asking to come back in 1e308 seconds: status, headers, body."""
    errors = [
        {
            "jsonrpc": "2.0",
            "id": _id_of(c),
            "error": {"code": -32005, "message": "rate limited", "data": {"retry_after": 1e306}},
        }
        for c in _calls(payload)
    ]
    body = orjson.dumps(errors if isinstance(payload, list) else errors[0])
    return 429, {"Retry-After": "1e308"}, body


def huge_parts(payload: Any, size: int) -> tuple[bytes, int, bytes]:
    """A valid answer to the first call with a ``size``-byte string result, as
    ``(prefix, filler bytes, suffix)``: the filler is ``size`` bytes of ``"a"``."""
    prefix = b'{"jsonrpc":"2.0","id":%s,"result":"' % orjson.dumps(_id_of(_calls(payload)[0]))
    return prefix, size, b'"}'


async def respond(
    request: web.Request,
    mode: str,
    payload: Any,
    answer: Any,
    *,
    huge_bytes: int,
    drip_bytes: int,
    drip_interval_s: float,
) -> web.StreamResponse:
    """Answer ``request`` in hostile ``mode``; ``answer`` is what a good provider says."""
    good = orjson.dumps(answer) if answer is not None else b""
    if mode == "wrong_id":
        return _json(orjson.dumps(wrong_id(answer)))
    if mode == "id_in_result":
        return _json(id_in_result(payload))
    if mode == "absurd_retry_after":
        status, headers, body = absurd_retry_after(payload)
        return _json(body, status, headers)
    if mode == "html_200":
        return web.Response(body=HTML_PAGE, status=200, content_type="text/html")
    resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
    with contextlib.suppress(ConnectionError, asyncio.CancelledError):
        if mode == "huge":
            prefix, size, suffix = huge_parts(payload, huge_bytes)
            resp.enable_chunked_encoding()
            await resp.prepare(request)
            await resp.write(prefix)
            piece = b"a" * min(_PIECE, max(1, size))
            left = size
            while left > 0:
                await resp.write(piece[:left])
                left -= len(piece)
            await resp.write(suffix)
            await resp.write_eof()
        elif mode == "truncated":
            resp.content_length = len(good)
            await resp.prepare(request)
            await resp.write(good[: max(1, len(good) // 2)])
            if request.transport is not None:
                request.transport.close()
        else:  # slow_drip
            resp.content_length = len(good)
            await resp.prepare(request)
            for i in range(0, len(good), drip_bytes):
                await resp.write(good[i : i + drip_bytes])
                await asyncio.sleep(drip_interval_s)
            await resp.write_eof()
    return resp


def _json(body: bytes, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=body, status=status, headers=headers, content_type="application/json")
