"""Large upstream answers in lasso.server.rpc_envelope: judged by their envelope
(``read_answer``, validated whole) and spliced around the client's id without a copy
(``splice_pieces``). Without sockets."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lasso.net.http_messages import LARGE_BODY, Pieces
from lasso.server.rpc_envelope import LARGE_RESULT, read_answer, splice_id, splice_pieces

TID = b'"lasso-abc123-1f"'
PAD = "a" * 8192  # past the size up to which answers are parsed whole
BIG = b"a" * (LARGE_BODY + 1000)


def large(result: bytes, *, head: bytes = b'{"jsonrpc":"2.0","id":"lasso-abc123-1f"') -> bytes:
    """A large answer: ``result`` then a padding member."""
    return head + b',"result":' + result + b',"pad":"' + PAD.encode() + b'"}'


# -- read_answer: small answers are orjson's, large ones their envelope -------------------


def test_a_small_answer_is_parsed_whole() -> None:
    """Under 4 KiB the document itself, as orjson reads it; not JSON is None."""
    body = b'{"jsonrpc":"2.0","id":"lasso-abc123-1f","result":{"number":"0x1"}}'
    assert read_answer(body) == orjson.loads(body)
    assert read_answer(b"") is None and read_answer(b"<html>") is None


@pytest.mark.parametrize("kind", [bytes, bytearray])
def test_a_large_answer_gives_its_envelope_only(kind: type) -> None:
    """Past 4 KiB: id and error parsed, the result present but never built."""
    doc = read_answer(kind(large(b'[{"x":1},"y"]')))
    assert doc == {"id": "lasso-abc123-1f", "result": LARGE_RESULT}
    error = b'{"code":-32005,"message":"limit","data":{"retry_after":2}}'
    doc = read_answer(kind(large(b"null", head=b'{"id":"lasso-abc123-1f","error":' + error)))
    assert doc["error"] == orjson.loads(error) and doc["id"] == "lasso-abc123-1f"


def test_a_large_answer_with_a_long_id_never_matches() -> None:
    """An id longer than any transport id is left unparsed and equals no string."""
    long_id = b'"' + b"b" * 300 + b'"'
    doc = read_answer(large(b"1", head=b'{"id":' + long_id))
    assert doc is not None and doc["id"] != long_id.decode().strip('"')


BROKEN = [
    b"[1,2,]",
    b'{"a" 1}',
    b'"\xff\xfe"',  # not UTF-8
    b'"\xc3("',  # a cut sequence
    b'"\xed\xa0\x80"',  # an encoded surrogate
    b'"a\x01b"',  # a raw control character
    b'"\\x"',
    b'"\\ud800"',
    b'"\\u12"',
    b"01",
    b"1.",
    b"1e",
    b"-",
    b"tru",
    b"NaN",
    b"Infinity",
    b"[1 2]",
    b"{1:2}",
    b"[" * 100_000 + b"]" * 100_000,  # past any recursion limit
]


@pytest.mark.parametrize("fragment", BROKEN, ids=range(len(BROKEN)))
def test_a_broken_large_answer_is_not_json(fragment: bytes) -> None:
    """A large answer broken anywhere in its result is rejected whole, as orjson would."""
    body = large(fragment)
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(body)
    assert read_answer(body) is None


@pytest.mark.parametrize(
    "body",
    [
        large(b"1") + b" x",  # trailing bytes
        large(b"1")[:-1],  # cut short
        b"[" + large(b"1") + b"]",  # not an object
        b"<!DOCTYPE html><html>" + PAD.encode() + b"</html>",
    ],
    ids=["trailing", "truncated", "array", "html"],
)
def test_a_large_answer_that_is_not_an_object_is_none(body: bytes) -> None:
    """Trailing bytes, a cut, an array or an HTML page: nothing a judgement can use."""
    assert read_answer(body) is None


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
    | st.just("lasso-abc123-1f"),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(
    members=st.dictionaries(st.sampled_from(["id", "result", "error", "jsonrpc"]), json_values),
    order=st.permutations(["id", "result", "error", "jsonrpc", "pad"]),
)
def test_the_envelope_agrees_with_the_whole_document(
    members: dict[str, Any], order: list[str]
) -> None:
    """Any member order and content: read_answer's error is orjson's, its id too (one
    longer than 256 bytes, which no transport id is, only equals nothing), and it sees a
    result exactly when there is one."""
    values = {**members, "pad": PAD}
    body = (
        b"{"
        + b",".join(orjson.dumps(k) + b":" + orjson.dumps(values[k]) for k in order if k in values)
        + b"}"
    )
    whole = orjson.loads(body)
    doc = read_answer(body)
    assert doc is not None
    if len(orjson.dumps(whole.get("id"))) <= 256:
        assert doc.get("id") == whole.get("id")
    else:
        assert doc["id"] != whole["id"] and doc["id"] != "lasso-abc123-1f"
    assert doc.get("error") == whole.get("error")
    assert ("result" in doc) == ("result" in whole)


@settings(max_examples=300, deadline=None)
@given(at=st.integers(0, len(large(b"[1,2,3]")) - 1), byte=st.integers(0, 255))
def test_one_changed_byte_is_judged_as_orjson_judges_it(at: int, byte: int) -> None:
    """Change any byte of a large answer: read_answer rejects it exactly when orjson
    does not read an object."""
    body = bytearray(large(b'[1,{"b":"c"},true]'))
    body[at] = byte
    try:
        whole = orjson.loads(body)
    except orjson.JSONDecodeError:
        whole = None
    assert (read_answer(body) is None) == (type(whole) is not dict)


# -- splice_pieces: a large answer with the client's id, not copied -----------------------


LAYOUTS = [
    b'{"jsonrpc":"2.0","id":"lasso-abc123-1f","result":"%s"}',
    b'{"id":"lasso-abc123-1f","result":"%s"}',
    b'{"jsonrpc":"2.0","result":"%s","id":"lasso-abc123-1f"}',
    b'{"jsonrpc":"2.0","result":["lasso-abc123-1f","%s"],"id":"lasso-abc123-1f"}\n',
    b'{"result":"lasso-abc123-1f","x":"%s","id":"lasso-abc123-1f"}',
    b'{"result":{"id":"lasso-abc123-1f"},"x":"%s","id":"lasso\\u002dabc123-1f"}',
]


@pytest.mark.parametrize("layout", LAYOUTS, ids=range(len(LAYOUTS)))
@pytest.mark.parametrize("client", [b"7", b'"a-much-longer-client-id-than-ours-0123456789"'])
def test_pieces_are_the_spliced_answer(layout: bytes, client: bytes) -> None:
    """Joined, the pieces are exactly splice_id's bytes, whatever the layout."""
    body = bytearray(layout % BIG)
    pieces = splice_pieces(body, TID, client)
    assert isinstance(pieces, Pieces) and len(pieces) == len(pieces.join())
    assert pieces.join() == splice_id(body, TID, client)
    assert orjson.loads(pieces.join())["id"] == orjson.loads(client)


def test_pieces_are_views_of_the_answer_which_stays_as_it_was() -> None:
    """The usual layouts cost no copy: views of the upstream bytes around the id; the
    answer is unchanged, so a coalesced answer splices again for the next client."""
    body = bytearray(LAYOUTS[0] % BIG)
    before = bytes(body)
    first = splice_pieces(body, TID, b"1")
    head, ident, tail = first.parts
    assert isinstance(head, memoryview) and head.obj is body
    assert isinstance(tail, memoryview) and tail.obj is body and ident == b"1"
    second = splice_pieces(body, TID, b'"two"')
    assert body == before
    assert orjson.loads(first.join())["id"] == 1 and orjson.loads(second.join())["id"] == "two"
