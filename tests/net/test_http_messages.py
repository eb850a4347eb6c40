"""Response serialization: the JSON-RPC fast path writes the same bytes as the general one."""

from __future__ import annotations

import pytest

from lasso.net.http_messages import Response, encode_head, encode_response


@pytest.mark.parametrize(
    "resp",
    [
        Response(200, b'{"jsonrpc":"2.0","id":1,"result":"0x1"}'),
        Response(200, b"{}", headers=[("X-Lasso-Cache", "BYPASS"), ("X-Odd", "caf\u00e9 \u2603")]),
        Response(200, b"plain", content_type=b"text/plain"),
        Response(200, b""),
    ],
)
@pytest.mark.parametrize(("keep_alive", "announce"), [(True, False), (False, False), (True, True)])
def test_an_answer_is_its_head_then_its_body(
    resp: Response, keep_alive: bool, announce: bool
) -> None:
    """Every 200 answer (kept alive or not, announced or not) is encode_head + the body."""
    assert isinstance(resp.body, bytes)
    expected = encode_head(resp, keep_alive, announce) + resp.body
    assert encode_response(resp, keep_alive, announce=announce) == expected
    assert (
        encode_response(resp, keep_alive, head=True, announce=announce)
        == expected[: len(expected) - len(resp.body)]
    )


def test_the_usual_answer_head() -> None:
    """A kept-alive JSON answer: status, common headers, type, length, extras, blank line."""
    resp = Response(200, b"{}", headers=[("X-Lasso-Cache", "HIT")])
    assert encode_response(resp, True) == (
        b"HTTP/1.1 200 OK\r\nAccess-Control-Allow-Origin: *\r\nServer: lasso\r\n"
        b"Content-Type: application/json\r\nContent-Length: 2\r\nX-Lasso-Cache: HIT\r\n\r\n{}"
    )
