"""The fuzz stage: generated HTTP request bytes, JSON-RPC bodies and WebSocket frames
against a real Lasso node on loopback. Every input gets well-formed HTTP answers or a
clean close: never a hang, a 5xx, a traceback or an error in the node's log. Bounded to a
few seconds (``max_examples``); the node runs in a thread (``fuzz_support``)."""

from __future__ import annotations

import base64
import json
import os
import socket
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.uri import parse_uri

from fuzz_support import ThreadedNode, exchange, split_responses
from support import UNIT

pytestmark = pytest.mark.integration

FUZZ = settings(
    max_examples=int(os.environ.get("LASSO_FUZZ_EXAMPLES", "100")),
    deadline=5000 * UNIT,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@pytest.fixture(scope="module")
def node() -> Iterator[ThreadedNode]:
    with ThreadedNode() as running:
        yield running


def check_answers(data: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """Well-formed HTTP/1.1 answers, none a server error, JSON bodies parseable."""
    responses = split_responses(data)
    for status, headers, body in responses:
        assert status < 500 or status in (501, 505), (status, body[:300])  # method, version
        assert b"Traceback" not in body
        if headers.get("content-type", "").startswith("application/json") and body:
            orjson.loads(body)
    return responses


# -- raw HTTP request bytes ---------------------------------------------------------------

# No HEAD: its answers announce a Content-Length without a body, which a reader of
# pipelined answers cannot frame without knowing which request each one answers.
METHODS = st.sampled_from([b"GET", b"POST", b"OPTIONS", b"PUT", b"BREW", b"", b"G\x00T"])
PATHS = st.one_of(
    st.sampled_from(
        [
            b"/",
            b"/rpc/ethereum",
            b"/rpc/fastest/ethereum",
            b"/rpc/provider/p/ethereum",
            b"/rpc/profile/nope/ethereum",
            b"/api/health",
            b"/api/chains",
            b"/api/metrics/ethereum",
            b"/metrics",
            b"/ws/rpc/ethereum",
            b"/dashboard",
            b"*",
            b"/rpc/ethereum?include_meta=body",
        ]
    ),
    st.binary(max_size=40).map(lambda b: b"/" + b),
)
VERSIONS = st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.1x", b""])
HEADER_NAMES = st.one_of(
    st.sampled_from(
        [
            b"Host",
            b"Content-Length",
            b"Transfer-Encoding",
            b"Connection",
            b"Expect",
            b"Upgrade",
            b"Content-Type",
            b"X-Lasso-Include-Meta",
            b"Sec-WebSocket-Key",
        ]
    ),
    st.binary(min_size=1, max_size=20),
)
HEADER_VALUES = st.one_of(
    st.sampled_from(
        [
            b"0",
            b"7",
            b"-1",
            b"chunked",
            b"close",
            b"keep-alive",
            b"100-continue",
            b"websocket",
            b"Upgrade",
            b"application/json",
            b"99999999999999999999",
        ]
    ),
    st.binary(max_size=40),
)
BODIES = st.one_of(
    st.binary(max_size=200),
    st.just(b'{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber","params":[]}'),
    st.just(b"5\r\nhello\r\n0\r\n\r\n"),
)


@st.composite
def http_requests(draw: Any) -> bytes:
    head = draw(METHODS) + b" " + draw(PATHS) + b" " + draw(VERSIONS) + b"\r\n"
    for name, value in draw(st.lists(st.tuples(HEADER_NAMES, HEADER_VALUES), max_size=8)):
        head += name + b": " + value + b"\r\n"
    request = head + b"\r\n" + draw(BODIES)
    cut = draw(st.one_of(st.none(), st.integers(0, len(request))))
    if cut is not None:  # a request cut short, or with bytes flipped at that point
        flip = draw(st.binary(max_size=3))
        request = request[:cut] + flip + (request[cut + 1 :] if flip else b"")
    return request


HTTP_STREAMS = st.lists(st.one_of(http_requests(), st.binary(max_size=300)), min_size=1, max_size=3)


@FUZZ
@given(HTTP_STREAMS)
def test_any_http_bytes_get_answers_or_a_clean_close(
    node: ThreadedNode, parts: list[bytes]
) -> None:
    """Generated and mangled requests, alone or pipelined: HTTP answers, then a close."""
    data, closed = exchange(node.port, b"".join(parts))
    assert closed, f"no close after {data[:200]!r}"
    responses = check_answers(data)
    if responses and responses[-1][0] == 101:
        return  # a valid upgrade: WebSocket frames follow (fuzzed below)
    assert not node.problems, node.problems


# -- JSON-RPC bodies ----------------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=16),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
RPC_METHODS = st.one_of(
    st.sampled_from(
        [
            "eth_blockNumber",
            "eth_chainId",
            "eth_getBalance",
            "eth_call",
            "eth_getBlockByNumber",
            "eth_subscribe",
            "eth_sendTransaction",
            "eth_sendRawTransaction",
            "net_version",
            "web3_clientVersion",
            "nope_nothing",
        ]
    ),
    st.text(max_size=12),
)
CALLS = st.fixed_dictionaries(
    {},
    optional={
        "jsonrpc": st.sampled_from(["2.0", "1.0", 2]),
        "method": RPC_METHODS | JSON_VALUES,
        "params": JSON_VALUES,
        "id": JSON_VALUES,
    },
)
RPC_BODIES = st.one_of(
    CALLS.map(json.dumps),
    st.lists(CALLS, max_size=5).map(json.dumps),
    JSON_VALUES.map(json.dumps),
    st.text(max_size=60),
).map(str.encode) | st.binary(max_size=80)
RPC_PATHS = st.sampled_from(
    [
        "/rpc/ethereum",
        "/rpc/round-robin/ethereum",
        "/rpc/ethereum/p",
        "/rpc/1",
        "/rpc/unknown",
        "/rpc/ethereum?include_meta=body",
        "/rpc/ethereum?include_meta=headers",
    ]
)


def is_rpc_answer(doc: Any) -> bool:
    if isinstance(doc, list):
        return bool(doc) and all(is_rpc_answer(d) for d in doc)
    return (
        isinstance(doc, dict)
        and doc.get("jsonrpc") == "2.0"
        and "id" in doc
        and (("result" in doc) != ("error" in doc))
        and (
            "error" not in doc
            or (isinstance(doc["error"], dict) and isinstance(doc["error"].get("code"), int))
        )
    )


@FUZZ
@given(RPC_PATHS, RPC_BODIES)
def test_any_json_rpc_body_gets_a_json_rpc_answer(
    node: ThreadedNode, path: str, body: bytes
) -> None:
    """Generated JSON-RPC objects, batches and junk: a JSON-RPC answer or 204, no 5xx."""
    request = (
        f"POST {path} HTTP/1.1\r\nHost: f\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body
    data, closed = exchange(node.port, request, timeout=10)
    assert closed
    ((status, _, answer),) = check_answers(data)
    assert status in (200, 204, 400, 404, 413), (status, answer)
    if status == 204:
        assert answer == b""
    else:
        assert is_rpc_answer(orjson.loads(answer)), answer
    assert not node.problems, node.problems


# -- WebSocket frames ---------------------------------------------------------------------

WS_PAYLOADS = st.one_of(
    st.binary(max_size=200),
    CALLS.map(json.dumps).map(str.encode),
    st.just(b'{"jsonrpc":"2.0","id":3,"method":"eth_blockNumber"}'),
)


@st.composite
def ws_frames(draw: Any) -> bytes:
    b0 = (0x80 if draw(st.booleans()) else 0) | (draw(st.integers(0, 7)) << 4)
    b0 |= draw(st.sampled_from([0, 1, 2, 8, 9, 10, 3, 11, 15]))
    payload = draw(WS_PAYLOADS)
    n = len(payload)
    masked = draw(st.integers(0, 9)) > 0  # mostly masked, as a client must
    head = bytes([b0])
    mbit = 0x80 if masked else 0
    if n < 126:
        head += bytes([mbit | n])
    elif n < 65536:
        head += bytes([mbit | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([mbit | 127]) + n.to_bytes(8, "big")
    if masked:
        key = draw(st.binary(min_size=4, max_size=4))
        payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
        head += key
    return head + payload


WS_STREAMS = st.lists(st.one_of(ws_frames(), st.binary(max_size=50)), max_size=6)
CLOSE_CODES = {1000, 1001, 1002, 1003, 1007, 1008, 1009}


def ws_exchange(port: int, stream: bytes) -> bytes:
    """Upgrade on /ws/rpc/ethereum, send ``stream``, shut the write side, read to the end."""
    key = base64.b64encode(os.urandom(16))
    upgrade = (
        b"GET /ws/rpc/ethereum HTTP/1.1\r\nHost: f\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ) % key
    data, closed = exchange(port, upgrade + stream, timeout=5)
    assert closed, data[:200]
    return data


@FUZZ
@given(WS_STREAMS)
def test_any_websocket_frames_get_frames_or_a_clean_close(
    node: ThreadedNode, frames: list[bytes]
) -> None:
    """Generated, malformed and fragmented frames after a valid upgrade: the node answers
    with valid frames (JSON-RPC text, pongs, a close with a protocol code) and closes."""
    data = ws_exchange(node.port, b"".join(frames))
    head, sep, rest = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101") and sep
    client = ClientProtocol(parse_uri("ws://f/"), state=State.OPEN)
    client.receive_data(rest)
    for event in client.events_received():
        assert isinstance(event, Frame)
        if event.opcode is Opcode.TEXT:
            assert is_rpc_answer(orjson.loads(event.data)), event.data
        elif event.opcode is Opcode.CLOSE and len(event.data) >= 2:
            code = int.from_bytes(event.data[:2], "big")
            assert code in CLOSE_CODES, code
    assert client.parser_exc is None, client.parser_exc
    assert not node.problems, node.problems


def test_the_node_survived_the_fuzz(node: ThreadedNode) -> None:
    """After every generated input, the node still serves a fresh client at once."""
    t0 = time.monotonic()
    assert node.alive()
    assert time.monotonic() - t0 < 1.0 * UNIT
    with socket.create_connection(("127.0.0.1", node.port), timeout=5) as sock:
        sock.sendall(b"GET /api/health HTTP/1.1\r\nHost: f\r\n\r\n")
        assert sock.recv(12) == b"HTTP/1.1 200"
    assert not node.problems, node.problems
