"""Exact ids and id splicing (lasso.server.rpc_envelope), without sockets."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lasso.server.limits import MAX_PARAMS_DEPTH
from lasso.server.rpc_envelope import (
    RequestIds,
    loads_request,
    member_spans,
    params_too_deep,
    splice_id,
)

TID = b'"lasso-abc123-1f"'
CLIENT = b"18446744073709551616"

# -- splice_id ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b'{"jsonrpc":"2.0","id":"lasso-abc123-1f","result":"0x1"}',
        b'{"jsonrpc":"2.0","result":"0x1","id":"lasso-abc123-1f"}',
        b'{"jsonrpc":"2.0","result":"lasso-abc123-1f","id":"lasso-abc123-1f"}',
        b'{"result":{"id":"lasso-abc123-1f","x":["lasso-abc123-1f"]},"id":"lasso-abc123-1f"}',
        b'{"result":["lasso-abc123-1f"],"id":"lasso-abc123-1f","jsonrpc":"2.0"}',
        b'{"result":{"id":"lasso-abc123-1f"},"id":"lasso\\u002dabc123-1f","jsonrpc":"2.0"}',
        b'{ "jsonrpc" : "2.0" ,\n "id" :\t"lasso-abc123-1f" , "result" : "lasso-abc123-1f" }\n',
        b'{"result":"a\\"id\\":\\"lasso-abc123-1f\\"","id":"lasso-abc123-1f"}',
        b'{"x\\"id":"lasso-abc123-1f","id":"lasso-abc123-1f","result":null}',
    ],
    ids=[
        "id-first",
        "id-last",
        "tid-in-result-before-id",
        "tid-nested-with-id-key",
        "tid-in-array-then-id",
        "escaped-top-level-id",
        "whitespace",
        "tid-inside-a-string",
        "key-ending-in-id",
    ],
)
def test_only_the_top_level_id_is_replaced(body: bytes) -> None:
    """The client's id lands in the top-level id member; the rest keeps its bytes."""
    out = splice_id(body, TID, CLIENT)
    doc = json.loads(out, parse_int=str)
    want = json.loads(body)
    want["id"] = CLIENT.decode()
    assert doc == want


def test_the_usual_layouts_keep_every_other_byte() -> None:
    """Id first or last: a plain substitution, an equal string in the result untouched."""
    first = b'{"jsonrpc":"2.0","id":"lasso-abc123-1f","result":"lasso-abc123-1f"}'
    assert splice_id(first, TID, b"7") == b'{"jsonrpc":"2.0","id":7,"result":"lasso-abc123-1f"}'
    last = b'{"jsonrpc":"2.0","result":["lasso-abc123-1f",1.50],"id":"lasso-abc123-1f"}\n'
    assert (
        splice_id(last, TID, b"7")
        == b'{"jsonrpc":"2.0","result":["lasso-abc123-1f",1.50],"id":7}\n'
    )


def test_an_answer_without_the_id_bytes_is_rebuilt_with_the_client_id() -> None:
    """If the id is nowhere in the bytes, the envelope is rebuilt, never left with ours."""
    out = splice_id(b'{"result":"0x1","id":"other"}', TID, b'"c"')
    assert orjson.loads(out) == {"jsonrpc": "2.0", "id": "c", "result": "0x1"}


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.text(max_size=8)
    | st.just("lasso-abc123-1f"),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(["id", "result", "x", 'a"id']), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(
    result=json_values, extra=json_values, order=st.permutations(["jsonrpc", "id", "result", "x"])
)
def test_any_answer_layout_gets_the_client_id(result: Any, extra: Any, order: list[str]) -> None:
    """Whatever the member order and the result's content, only the id changes."""
    values = {"jsonrpc": "2.0", "id": "lasso-abc123-1f", "result": result, "x": extra}
    body = b"{" + b",".join(orjson.dumps(k) + b":" + orjson.dumps(values[k]) for k in order) + b"}"
    out = orjson.loads(splice_id(body, TID, b'"client"'))
    assert out == {**values, "id": "client"}


# -- RequestIds ---------------------------------------------------------------------------

RAW_IDS = [
    b"18446744073709551616",
    b"-18446744073709551617",
    b"123456789012345678901234567890",
    b"1.10",
    b"1e2",
    b"-0",
    b"0",
    b"7",
    b"9223372036854775808",
    b'"\\u0041bc"',
    b'"a\\"b"',
    '"é"'.encode(),
    b'"plain"',
    b"0.1e-5",
]


@pytest.mark.parametrize("raw", RAW_IDS)
def test_single_ids_are_echoed_as_sent(raw: bytes) -> None:
    """Big, fractional and escaped ids come back with the client's own spelling."""
    body = b'{"jsonrpc":"2.0","params":[{"id":%s}],"id":%s,"method":"x"}' % (b"1", raw)
    doc = orjson.loads(body)
    assert RequestIds(body).encode(doc["id"]) == raw


def test_batch_ids_are_echoed_as_sent_item_by_item() -> None:
    """Each batch item gets its own raw id; notifications and non-objects are skipped."""
    items = [b'{"id":%s,"method":"m","params":[{"id":0.5}]}' % raw for raw in RAW_IDS]
    items.insert(3, b'{"method":"notification"}')
    items.insert(5, b"[1,2]")
    body = b"[" + b",".join(items) + b"]"
    docs = orjson.loads(body)
    ids = RequestIds(body, docs)
    got = [ids.encode(d["id"], i) for i, d in enumerate(docs) if type(d) is dict and "id" in d]
    assert got == RAW_IDS


def test_a_repeated_id_key_falls_back_to_the_value() -> None:
    """An item that repeats its id key gets the parsed value re-encoded (still equal)."""
    body = b'[{"id":1.50,"id":2.50,"method":"m"},{"id":1.10,"method":"m"}]'
    docs = orjson.loads(body)
    ids = RequestIds(body, docs)
    assert ids.encode(docs[0]["id"], 0) == b"2.5"
    assert ids.encode(docs[1]["id"], 1) == b"1.1"


def test_member_spans_ignore_nested_and_quoted_ids() -> None:
    """Only members at the asked depth count; an "id" inside a string never does."""
    body = b'{"a":{"id":1},"b":"\\"id\\": 2","id":3,"c":[{"id":4}]}'
    assert [body[s:e] for s, e in member_spans(body, 1)] == [b"3"]
    assert [body[s:e] for s, e in member_spans(body, 2)] == [b"1"]


# -- params depth ---------------------------------------------------------------------------


def nested(depth: int) -> Any:
    value: Any = []
    for _ in range(depth - 1):
        value = [value]
    return value


@pytest.mark.parametrize("depth", [1, 2, MAX_PARAMS_DEPTH])
def test_params_within_the_limit_pass(depth: int) -> None:
    """Up to MAX_PARAMS_DEPTH levels are accepted."""
    assert not params_too_deep(nested(depth))
    body = orjson.dumps(nested(depth))
    assert RequestIds(body).params_ok(nested(depth))


@pytest.mark.parametrize("depth", [MAX_PARAMS_DEPTH + 1, 255, 1023])
def test_params_beyond_the_limit_are_refused(depth: int) -> None:
    """One level more than the limit is refused, however deep."""
    assert params_too_deep(nested(depth))
    body = b"[" * depth + b"]" * depth
    assert not RequestIds(body).params_ok(nested(depth))


def test_a_batch_is_checked_whole_then_item_by_item() -> None:
    """A big shallow batch passes with one check; one deep item fails alone."""
    docs = [{"id": i, "method": "m", "params": [[1], {"a": [2]}]} for i in range(200)]
    ids = RequestIds(orjson.dumps(docs), docs)
    assert all(ids.params_ok(d["params"]) for d in docs)
    docs.append({"id": 0, "method": "m", "params": nested(MAX_PARAMS_DEPTH + 1)})
    ids = RequestIds(orjson.dumps(docs), docs)
    assert ids.params_ok(docs[0]["params"])
    assert not ids.params_ok(docs[-1]["params"])


# -- loads_request ------------------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=200)
@given(JSON_VALUES)
def test_loads_request_is_orjson_for_what_orjson_reads(value: Any) -> None:
    """Any body orjson parses gives orjson's own value (the fast path, untouched)."""
    body = orjson.dumps(value)
    assert loads_request(body) == orjson.loads(body)


@pytest.mark.parametrize(
    "body",
    [
        b"1e309",
        b"[1e400,-1E+400,1e-400,1.10,-0,0.5,12,123456789012345678901234567890]",
        b'{"id":-18446744073709551617e3,"params":[{"a":[1e999]}],"method":"m"}',
        b'[1e400,"\\ud83d\\ude00"]',
    ],
)
def test_loads_request_keeps_numbers_orjson_refuses_as_written(body: bytes) -> None:
    """A valid body with a number beyond the double range parses, and every number in
    it re-encodes as the client wrote it."""
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(body)
    doc = loads_request(body)
    assert orjson.dumps(doc) == body.replace(b'"\\ud83d\\ude00"', '"\U0001f600"'.encode())
    assert json.loads(orjson.dumps(doc), parse_float=str, parse_int=str) == json.loads(
        body, parse_float=str, parse_int=str
    )


def test_loads_request_reads_ordinary_numbers_of_such_a_body_as_orjson_would() -> None:
    """Next to a huge number, plain ints and floats stay ints and floats (block numbers)."""
    doc = loads_request(b'[1e400,12,0.5,-9223372036854775808,18446744073709551615,"0x1"]')
    assert doc[1:] == [12, 0.5, -(2**63), 2**64 - 1, "0x1"]
    assert type(doc[0]) is orjson.Fragment


@pytest.mark.parametrize(
    "body",
    [
        b"[1e400,]",
        b"[1e400,NaN]",
        b"[1e400,Infinity]",
        b'["\\ud800",1e400]',
        b'["\\udc00x",1e400]',
        b'["\xff",1e400]',
        b"\xef\xbb\xbf[1e400]",
        b"[1e400] x",
        b"[" * 5000 + b"1e400" + b"]" * 5000,
        b"",
        b"[01,1e400]",
    ],
)
def test_loads_request_refuses_what_orjson_refuses(body: bytes) -> None:
    """The fallback accepts nothing else orjson refuses: constants, lone surrogates, bad
    UTF-8, a BOM, trailing data, runaway nesting; the error is orjson's."""
    with pytest.raises(orjson.JSONDecodeError):
        loads_request(body)


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 5000 + b"1e400" + b"]" * 5000,
        b"[1e400," + b"[" * 1100 + b"]" * 1100 + b"]",
    ],
)
def test_runaway_nesting_is_refused_whatever_the_recursion_limit(body: bytes) -> None:
    """A library may raise the recursion limit (the full suite does): the fallback still
    refuses nesting deeper than orjson's 1024, never relying on RecursionError."""
    import sys

    old = sys.getrecursionlimit()
    sys.setrecursionlimit(20_000)
    try:
        with pytest.raises(orjson.JSONDecodeError):
            loads_request(body)
        assert loads_request(b"[1e400," + b"[" * 1000 + b"]" * 1000 + b"]")[0] is not None
    finally:
        sys.setrecursionlimit(old)
