"""The simulator's hostile modes (``lasso.sim.hostile``): the answers as built, as sent over
HTTP by a provider, and switched through Python and the admin API."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lasso.sim import Behavior, SimProvider
from lasso.sim.chain import SyntheticChain
from lasso.sim.fleet import ProviderSpec, SimFleet
from lasso.sim.hostile import (
    HOSTILE_MODES,
    HTML_PAGE,
    absurd_retry_after,
    huge_parts,
    id_in_result,
    wrong_id,
)

CALL = {"jsonrpc": "2.0", "id": 9, "method": "eth_blockNumber", "params": []}
IDS = st.one_of(st.none(), st.integers(-(2**60), 2**60), st.text(max_size=20))


@given(IDS)
def test_wrong_id_never_keeps_the_id(rid: Any) -> None:
    """Every answer comes back under an id that differs from the one sent."""
    answer = {"jsonrpc": "2.0", "id": rid, "result": "0x1"}
    assert wrong_id(answer)["id"] != rid
    assert [a["id"] for a in wrong_id([answer, answer])] != [rid, rid]


@given(st.lists(IDS, min_size=1, max_size=4), st.booleans())
def test_id_in_result_writes_the_result_first_and_equal_to_the_id(
    ids: list[Any], batch: bool
) -> None:
    """result precedes id in the bytes, and both are the request's id."""
    calls = [{**CALL, "id": i} for i in ids]
    body = id_in_result(calls if batch else calls[0])
    docs = orjson.loads(body)
    docs = docs if batch else [docs]
    assert [(d["result"], d["id"]) for d in docs] == [(i, i) for i in (ids if batch else ids[:1])]
    assert body.index(b'"result"') < body.index(b'"id"')


def test_absurd_retry_after_asks_for_1e308_seconds() -> None:
    """429, Retry-After 1e308 and data.retry_after 1e306, per call, ids kept."""
    status, headers, body = absurd_retry_after([CALL, {**CALL, "id": "b"}])
    assert status == 429 and headers == {"Retry-After": "1e308"}
    docs = orjson.loads(body)
    assert [d["id"] for d in docs] == [9, "b"]
    assert all(d["error"]["code"] == -32005 for d in docs)
    assert docs[0]["error"]["data"]["retry_after"] == 1e306


def test_huge_parts_make_one_valid_answer() -> None:
    """prefix + size filler bytes + suffix is a JSON-RPC answer with the right id."""
    prefix, size, suffix = huge_parts(CALL, 1000)
    doc = orjson.loads(prefix + b"a" * size + suffix)
    assert doc == {"jsonrpc": "2.0", "id": 9, "result": "a" * 1000}


def test_behavior_validates_the_hostile_fields() -> None:
    """Only the documented modes; sizes and intervals must be positive."""
    assert Behavior(hostile="huge").hostile == "huge"
    for bad in ({"hostile": "evil"}, {"huge_bytes": 0}, {"drip_bytes": -1}):
        with pytest.raises(ValueError):
            Behavior.from_mapping(bad)
    assert Behavior.from_mapping({"hostile": None}).hostile is None


async def raw_post(port: int, body: bytes) -> tuple[bytes, bytes, bool]:
    """POST over a raw socket: (head, body bytes received, whether the server closed)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    rest = b""
    closed = False
    try:
        while True:
            chunk = await asyncio.wait_for(reader.read(1 << 20), 0.5)
            if not chunk:
                closed = True
                break
            rest += chunk
    except TimeoutError:
        pass
    writer.close()
    return head, rest, closed


async def test_each_mode_over_http(make_provider: Any) -> None:
    """A provider in each mode sends the documented answer."""
    p: SimProvider = await make_provider("h")
    port = p.port
    body = orjson.dumps(CALL)

    await p.update(hostile="truncated")
    head, rest, closed = await raw_post(port, body)
    length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
    assert closed and 0 < len(rest) < length

    await p.update(hostile="html_200")
    head, rest, _ = await raw_post(port, body)
    assert head.startswith(b"HTTP/1.1 200") and b"text/html" in head and rest == HTML_PAGE

    await p.update(hostile="absurd_retry_after")
    head, rest, _ = await raw_post(port, body)
    assert head.startswith(b"HTTP/1.1 429") and b"Retry-After: 1e308" in head

    await p.update(hostile="wrong_id")
    _, rest, _ = await raw_post(port, body)
    assert orjson.loads(rest)["id"] == 10

    await p.update(hostile="id_in_result")
    _, rest, _ = await raw_post(port, body)
    assert rest == b'{"jsonrpc":"2.0","result":9,"id":9}'

    await p.update(hostile="huge", huge_bytes=3_000_000)
    head, rest, _ = await raw_post(port, body)
    assert b"Transfer-Encoding: chunked" in head and len(rest) > 3_000_000

    await p.update(hostile="slow_drip", drip_bytes=4, drip_interval_ms=20)
    t0 = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
    doc = orjson.loads(await asyncio.wait_for(reader.readexactly(length), 10))
    assert doc["id"] == 9 and doc["result"].startswith("0x")
    assert time.monotonic() - t0 >= (length / 4 - 1) * 0.02
    writer.close()
    assert {m: p.stats.faults[m] for m in HOSTILE_MODES} == dict.fromkeys(HOSTILE_MODES, 1)


async def test_the_admin_api_switches_a_mode_on_and_off(post: Any, rpc: Any) -> None:
    """POST /providers/{id} {"hostile": mode} turns it on; null turns it off; a bad mode is 400."""
    chain = SyntheticChain(1, 2.0, "hostile", start_time=time.time())
    async with SimFleet(chain, [ProviderSpec(id="a")], admin_port=0) as fleet:
        admin = fleet.admin_url
        reply = await post(f"{admin}/providers/a", {"hostile": "wrong_id"})
        assert reply.status == 200 and reply.json()["behavior"]["hostile"] == "wrong_id"
        assert (await rpc(fleet.urls()["a"], "eth_blockNumber"))["id"] == 2
        assert (await post(f"{admin}/providers/a", {"hostile": "nasty"})).status == 400
        await post(f"{admin}/providers/a", {"hostile": None})
        assert (await rpc(fleet.urls()["a"], "eth_blockNumber"))["id"] == 1
