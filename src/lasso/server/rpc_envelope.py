"""Exact bytes of the JSON-RPC envelope: ids echoed as sent, upstream ids spliced in place.

CONTRACT §3: the client's ``id`` comes back byte for byte, whatever the upstream answer
contains. Parsing with orjson loses the spelling of some ids (integers beyond 64 bits
become floats, ``1.10`` becomes ``1.1``, ``"\\u0041"`` becomes ``"A"``, ``-0`` becomes
``0``), so the raw token is taken from the request bytes when re-encoding could differ:

* :class:`RequestIds` gives the bytes to echo for each id. The common ids (``null``,
  non-zero integers, strings in a body without a backslash) are re-encoded, which is exact
  for them; the rest are read from the body (:func:`member_spans`), checked against the
  parsed value, and re-encoded only if the body spells its ``id`` key in an unusual way
  (escaped, or repeated inside one batch item).
* :func:`splice_id` replaces Lasso's transport id in an upstream answer with the client's
  id: the ``id`` member of the top-level object, never an equal string elsewhere (an
  upstream may put ``result`` before ``id``, and a result may contain anything). Checks
  on a few bytes settle the usual layouts (``{"jsonrpc":"2.0","id":…`` first, or
  ``…,"id":…}`` last) without a scan; anything else takes :func:`member_spans`.
  :func:`splice_pieces` is the same for a large answer: :class:`~lasso.net.http_messages.Pieces`
  around the id, the answer itself never copied.
* :func:`read_answer` parses an upstream answer for judging: whole when it is small; a large
  one is validated whole but only its envelope is built (``id``, ``error``), its ``result``
  skipped (msgspec: no object is made of it, no copy taken).

:func:`member_spans` finds the values of ``"id"`` members at one nesting depth with
C-speed scans only (a regular expression for the keys, string removal and bracket
counts between them), so a hostile body costs O(size), never a Python loop per token.

:func:`params_too_deep` bounds the nesting of ``params`` (:data:`MAX_PARAMS_DEPTH`):
orjson parses 1,024 levels but encodes only 254, and the upstream request re-encodes
``params``.

:func:`loads_request` parses a request body: orjson (the fast path), and only when orjson
refuses the body, the standard library's parser, which reads the valid JSON numbers
orjson cannot hold (beyond the double range, ``1e309``) as :class:`orjson.Fragment`
values of their own text, so they go upstream and come back as ids exactly as sent.
"""

from __future__ import annotations

import codecs
import json
import re
from typing import Any

import msgspec
import orjson

from lasso.net.http_messages import Pieces
from lasso.server.limits import MAX_PARAMS_DEPTH

__all__ = [
    "ID_TYPES",
    "LARGE_RESULT",
    "RequestIds",
    "loads_request",
    "member_spans",
    "params_too_deep",
    "read_answer",
    "splice_id",
    "splice_pieces",
]

ID_TYPES: tuple[type, ...] = (str, int, float, orjson.Fragment)
"""The types of a valid ``id`` as :func:`loads_request` gives it (``null`` aside; a
``bool`` is an ``int`` subclass and is refused by an exact type check)."""

# An "id" key and the separator after it. In valid JSON this only matches a real key: a
# quote that opens a string value is never followed by ':', and a quote inside a string
# is escaped (the match is then preceded by a backslash, and skipped).
_ID_KEY = re.compile(rb'"id"[ \t\n\r]*:[ \t\n\r]*')
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_SCALAR = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|-?[0-9][0-9.eE+-]*|null|true|false')
_WS = b" \t\r\n"
_HEADS = {22: b'{"jsonrpc":"2.0","id":', 6: b'{"id":'}  # where the usual answers put the id
_ORJSON_MAX_DEPTH = 254  # orjson.dumps refuses deeper documents
_WHOLE_UP_TO = 4096  # answers parsed whole up to this size (orjson is faster on small ones)
_UTF8_STEP = 1 << 20  # bytes checked per step of a large non-ASCII answer


class _Envelope(msgspec.Struct):
    """The members of an answer a judgement reads; the others are validated and skipped.

    An absent member is an empty ``Raw`` (a present one is at least one byte of JSON).
    """

    id: msgspec.Raw = msgspec.Raw()
    result: msgspec.Raw = msgspec.Raw()
    error: msgspec.Raw = msgspec.Raw()


_decode_envelope = msgspec.json.Decoder(_Envelope).decode


class _LargeResult:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<result not parsed>"


LARGE_RESULT: Any = _LargeResult()
"""The ``result`` of a large answer as :func:`read_answer` gives it: present, not built."""
_LONG_ID = object()  # an id no transport id can equal, left unparsed


def read_answer(body: bytes | bytearray) -> Any:
    """``body`` parsed for judging, or ``None`` when it is empty or not valid JSON (or,
    past 4 KiB, not an object: a judgement treats both alike).

    Up to 4 KiB the whole document (orjson). Larger answers are validated whole as well
    (JSON grammar by msgspec, which skips what it does not build, and UTF-8), but only
    their envelope is built: a dict with the top-level ``id`` and ``error`` parsed (an
    ``id`` longer than 256 bytes, which no transport id is, stays unparsed) and
    ``result``, when present, as :data:`LARGE_RESULT`. A 100 MB string result then costs a
    scan (about 35 ms here, against 180 ms and 100 MB for orjson; 100 MB of logs: 50-100
    ms against 1 s and 240 MB), not the objects of it. Differences with orjson, for
    large answers only: a float beyond the double range is accepted (JSON's grammar
    allows it), nesting is bounded by Python's recursion limit (about 1,000, like
    orjson's 1,024).
    """
    if len(body) < _WHOLE_UP_TO:
        if not body:
            return None
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            return None
    try:
        env = _decode_envelope(body)
    except (msgspec.DecodeError, RecursionError):  # ValidationError (not an object) included
        return None
    if not body.isascii() and not _is_utf8(body):
        return None
    doc: dict[str, Any] = {}
    try:
        if env.id:
            doc["id"] = orjson.loads(memoryview(env.id)) if len(env.id) <= 256 else _LONG_ID
        if env.error:
            doc["error"] = orjson.loads(memoryview(env.error))
    except orjson.JSONDecodeError:  # beyond orjson's bounds (depth, a huge float)
        return None
    if env.result:
        doc["result"] = LARGE_RESULT
    return doc


def _is_utf8(body: bytes | bytearray) -> bool:
    """Whether ``body`` is valid UTF-8, checked a MiB at a time (no copy of it whole)."""
    decode = codecs.getincrementaldecoder("utf-8")().decode
    with memoryview(body) as view:
        try:
            for i in range(0, len(view), _UTF8_STEP):
                decode(view[i : i + _UTF8_STEP])
            decode(b"", True)
        except UnicodeDecodeError:
            return False
    return True


def member_spans(body: bytes | bytearray, depth: int) -> list[tuple[int, int]]:
    """The ``(start, end)`` of the value of every ``"id"`` member at nesting ``depth``.

    Args:
        body: a valid JSON document (as orjson accepted it).
        depth: 1 for members of the top-level object, 2 for members of the objects of a
            top-level array (a batch).

    Returns:
        Spans in document order. A value that is an object or array gets an empty span at
        its start (it is not an id anyone could echo).
    """
    spans: list[tuple[int, int]] = []
    level = 0
    pos = 0  # always outside any string: the start of the document or of a key
    strip = _STRING.sub
    for match in _ID_KEY.finditer(body):
        start = match.start()
        if start and body[start - 1] == 0x5C:  # an escaped quote inside some key
            continue
        seg = strip(b"", body[pos:start])
        level += seg.count(b"{") + seg.count(b"[") - seg.count(b"}") - seg.count(b"]")
        pos = start
        if level == depth:
            value = _SCALAR.match(body, match.end())
            end = value.end() if value is not None else match.end()
            spans.append((match.end(), end))
    return spans


def _after_id_key(body: bytes | bytearray, i: int) -> bool:
    """Whether ``body[i:]`` starts right after an ``"id":`` key (whitespace allowed)."""
    head = body[max(0, i - 40) : i].rstrip(_WS)
    if not head.endswith(b":"):
        return False
    head = head[:-1].rstrip(_WS)
    return head.endswith(b'"id"') and not head.endswith(b'\\"id"')


def _id_at(body: bytes | bytearray, tid: bytes) -> int:
    """Where the value ``tid`` of the top-level object's ``id`` member starts in ``body``,
    when a few byte checks can tell (the usual layouts); -1 when only a scan can."""
    i = body.find(tid)
    head = _HEADS.get(i)
    if head is not None and body.startswith(head):  # geth, anvil, reth, erigon, the sim
        return i
    if (
        5 < i < 256
        and (body[i - 5 : i] == b'"id":' and body[i - 6] != 0x5C or _after_id_key(body, i))
        # One '{' (the document's own), no array and no escape before it: depth 1.
        and body.count(b"{", 0, i) == 1
        and body.find(b"[", 0, i) < 0
        and body.find(b"\\", 0, i) < 0
    ):
        return i  # the first occurrence is the one
    k = body.rfind(tid)
    end = k + len(tid)
    if (
        k > 0
        and len(body) - end <= 256
        and body[end:].strip(_WS) == b"}"
        and _after_id_key(body, k)
    ):
        return k  # the top-level object's last member
    return -1


def splice_id(body: bytes | bytearray, tid: bytes, id_json: bytes) -> bytes:
    """``body`` (an upstream answer whose top-level ``id`` is ``tid``) with ``id_json`` as id.

    Only the top-level object's ``id`` member is replaced; the rest of the bytes are kept
    as they are, except in the last resort of an answer whose ``id`` cannot be found in
    its bytes at all, which is re-encoded around the parsed answer.
    """
    i = _id_at(body, tid)
    if i < 0:
        return _splice_slow(body, tid, id_json)
    return bytes(body[:i]) + id_json + body[i + len(tid) :]


def splice_pieces(body: bytes | bytearray, tid: bytes, id_json: bytes) -> Pieces:
    """:func:`splice_id` for a large answer: the bytes before the id, ``id_json``, the bytes
    after it, the answer itself not copied (views of it); an unusual layout is spliced
    by :func:`splice_id` (one copy)."""
    i = _id_at(body, tid)
    if i < 0:
        return Pieces((_splice_slow(body, tid, id_json),))
    view = memoryview(body)
    return Pieces((view[:i], id_json, view[i + len(tid) :]))


def _splice_slow(body: bytes | bytearray, tid: bytes, id_json: bytes) -> bytes:
    want = orjson.loads(tid)
    parts: list[bytes | bytearray] = []
    last = 0
    for start, end in member_spans(body, 1):
        raw = body[start:end]
        if raw == tid or (raw[:1] == b'"' and _loads(raw) == want):
            parts += (body[last:start], id_json)
            last = end
    if parts:
        parts.append(body[last:])
        return b"".join(parts)
    try:  # no id member in the bytes: rebuild the envelope around what was parsed
        doc = orjson.loads(body)
        if not isinstance(doc, dict):
            raise ValueError("not an object")
        doc.pop("id", None)
        doc.pop("jsonrpc", None)
        rest = orjson.dumps(doc)[1:]
        sep = b"," if rest != b"}" else b""
        return b'{"jsonrpc":"2.0","id":%s%s%s' % (id_json, sep, rest)
    except (ValueError, TypeError):  # orjson's errors are ValueErrors
        return (
            b'{"jsonrpc":"2.0","error":{"code":-32603,'
            b'"message":"Internal error: unreadable upstream answer"},"id":%s}' % id_json
        )


def _loads(raw: bytes | bytearray) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return _NO_VALUE


_NO_VALUE = object()


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b


class RequestIds:
    """The bytes to echo for the ids of one request body (a single object or a batch).

    Args:
        body: the request body, valid JSON.
        docs: the parsed batch (a list), or None for a single object.
    """

    __slots__ = ("body", "docs", "_spans", "_order", "_bounded")

    def __init__(self, body: bytes, docs: list[Any] | None = None) -> None:
        self.body = body
        self.docs = docs
        self._spans: list[tuple[int, int]] | None = None
        self._order: dict[int, int] = {}
        self._bounded: bool | None = None

    def encode(self, rid: Any, index: int = 0) -> bytes:
        """The JSON bytes of id ``rid`` (a str, int or float) of item ``index``, as sent."""
        body = self.body
        if type(rid) is str:
            if b"\\" not in body:  # no escape anywhere: orjson spells it as the client did
                return orjson.dumps(rid)
        elif type(rid) is int and (rid or b"-0" not in body):
            return orjson.dumps(rid)
        raw = self._raw(index)
        if raw is not None and _same(_loads(raw), rid):
            return raw
        return orjson.dumps(rid)  # an unusual spelling of the key: the value, re-encoded

    def _raw(self, index: int) -> bytes | None:
        spans = self._spans
        if spans is None:
            spans = self._spans = member_spans(self.body, 1 if self.docs is None else 2)
            if self.docs is not None:  # the k-th span belongs to the k-th item with an id
                items = [i for i, d in enumerate(self.docs) if type(d) is dict and "id" in d]
                if len(items) == len(spans):
                    self._order = {item: k for k, item in enumerate(items)}
        if self.docs is None:
            pick = len(spans) - 1  # orjson keeps the last of repeated keys
        else:
            pick = self._order.get(index, -1)
        if pick < 0:
            return None
        start, end = spans[pick]
        return self.body[start:end]

    def params_ok(self, params: Any) -> bool:
        """Whether ``params`` (of an item of this body) is within :data:`MAX_PARAMS_DEPTH`.

        A body with fewer brackets than the limit passes at once; a batch is checked
        whole once, then item by item only if some item is too deep.
        """
        bounded = self._bounded
        if bounded is None:
            body = self.body
            bounded = body.count(b"[") + body.count(b"{") <= MAX_PARAMS_DEPTH
            if not bounded and self.docs is not None:  # params sit two levels down
                bounded = not params_too_deep(self.docs, MAX_PARAMS_DEPTH + 2)
            self._bounded = bounded
        return bounded or not params_too_deep(params)


def params_too_deep(params: Any, limit: int = MAX_PARAMS_DEPTH) -> bool:
    """Whether ``params`` nests more than ``limit`` levels (``[]`` is one level).

    Runs in C: orjson refuses to encode more than 254 levels, so ``params`` wrapped in
    ``254 - limit`` more lists encodes exactly when it is within the limit.
    """
    wrapped = params
    for _ in range(_ORJSON_MAX_DEPTH - limit):
        wrapped = [wrapped]
    try:
        orjson.dumps(wrapped)
    except orjson.JSONEncodeError:
        return True
    return False


# The int range orjson parses as int (beyond it, a lossy float).
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1
# A surrogate escape: the one string the standard library accepts alone and orjson refuses.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _exact_int(text: str) -> Any:
    """An integer that re-encodes as ``text``, else ``text`` as a fragment."""
    if len(text) < 19 and text != "-0":  # within 64 bits whatever the digits
        return int(text)
    value = int(text) if 2 < len(text) <= 21 else None
    if value is not None and _INT_MIN <= value <= _INT_MAX:
        return value
    return orjson.Fragment(text.encode())


def _exact_float(text: str) -> Any:
    """A float that re-encodes as ``text``, else ``text`` as a fragment (beyond the
    double range, below it, or spelled otherwise than orjson writes it: ``1.10``)."""
    value = float(text)
    if value - value == 0.0 and orjson.dumps(value) == text.encode():
        return value
    return orjson.Fragment(text.encode())


def _no_constant(text: str) -> Any:
    raise ValueError(f"{text} is not JSON")


def loads_request(body: bytes) -> Any:
    """Parse a request body (JSON-RPC 2.0): orjson, else the exact fallback.

    The fallback runs only when orjson refuses the body, so valid bodies keep the fast
    path. It accepts exactly what orjson accepts, and also numbers beyond what a double
    or a 64-bit integer holds. Every number of such a body that would not re-encode as
    written (``1e400``, ``1e-400``, ``1.10``, ``-0``, 30-digit integers) becomes an
    :class:`orjson.Fragment` of its text, which orjson writes verbatim (upstream, and as
    an id); the others are the ints and floats orjson would have read.

    Raises:
        ValueError: the body is not JSON (``orjson.JSONDecodeError`` is one).
    """
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        error = exc
    if str(error).startswith("depth limit"):  # not a number's fault: no second opinion
        raise error
    try:
        text = body.decode("utf-8")  # strict, as orjson; no UTF-16/32 detection
        doc = json.loads(
            text, parse_int=_exact_int, parse_float=_exact_float, parse_constant=_no_constant
        )
        if _SURROGATE_ESCAPE.search(text):
            orjson.dumps(doc)  # a lone surrogate cannot be encoded: orjson refused it
    except (ValueError, RecursionError, orjson.JSONEncodeError):
        raise error from None
    if _deeper_than(doc, _MAX_DEPTH):  # json's own bound is the recursion limit, which
        raise error  # a library may have raised: hold orjson's
    return doc


_MAX_DEPTH = 1024
"""orjson's nesting limit: arrays and objects deeper than this are refused."""


def _deeper_than(doc: Any, limit: int) -> bool:
    """Whether ``doc`` nests arrays/objects more than ``limit`` deep (no recursion)."""
    stack: list[tuple[Any, int]] = [(doc, 1)]
    while stack:
        node, depth = stack.pop()
        children = node if type(node) is list else node.values() if type(node) is dict else ()
        for child in children:
            if type(child) is list or type(child) is dict:
                if depth + 1 > limit:
                    return True
                stack.append((child, depth + 1))
    return False
