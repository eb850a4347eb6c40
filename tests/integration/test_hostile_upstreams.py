"""Hostile upstreams (the simulator's ``hostile`` modes) behind a real Lasso node: every
client gets a JSON-RPC answer or error carrying its own id, reads fail over."""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import orjson
import pytest

from lasso.kernel.keccak import tx_hash
from lasso.net.limits import Limits
from lasso.sim.behavior import Behavior
from lasso.sim.hostile import HOSTILE_MODES

from support import profile_yaml, routed_chain_yaml

pytestmark = pytest.mark.integration

BOUND = 2_000_000  # Lasso's max_upstream_response in these tests
HOSTILE = {
    "huge_bytes": 4_000_000,  # over the bound
    "drip_interval_ms": 50.0,  # an eth_blockNumber answer takes ~2 s to drip
}


@pytest.fixture
async def node() -> AsyncIterator[Callable[..., Awaitable[Any]]]:
    """Factory: a Lasso node for a fleet, upstream answers bounded to BOUND bytes."""
    from lasso.app import LassoApp, Settings
    from lasso.profiles import parse_profile

    apps: list[Any] = []

    async def start(fleet: Any) -> Any:
        text = profile_yaml(routed_chain_yaml(fleet))
        slug = re.search(r"^slug:\s*(\S+)", text, re.M)
        prof = parse_profile(text, f"{slug.group(1) if slug else 'public'}.yml", dict(os.environ))
        settings = Settings(probes=False, limits=Limits(max_upstream_response=BOUND))
        app = LassoApp({prof.slug: prof}, settings)
        port = await app.start("127.0.0.1", 0)
        app.base_url = f"http://127.0.0.1:{port}"
        apps.append(app)
        return app

    yield start
    for app in apps:
        await app.stop(drain_timeout=1.0)


async def call(url: str, method: str, params: list[Any], rid: Any) -> tuple[int, Any]:
    body = {"jsonrpc": "2.0", "id": rid, "method": method, "params": params}
    async with aiohttp.ClientSession() as s, s.post(url, data=orjson.dumps(body)) as r:
        raw = await r.read()
        assert r.headers["Content-Type"] == "application/json"
        return r.status, orjson.loads(raw)


@pytest.mark.parametrize("mode", [m for m in HOSTILE_MODES if m != "id_in_result"])
async def test_reads_fail_over_from_a_hostile_first_provider(
    mode: str, sim_fleet: Any, node: Any
) -> None:
    """The hostile provider is tried first (priority); the read is answered by the good
    one, with the client's id, every time."""
    fleet = await sim_fleet({"bad": Behavior(hostile=mode, **HOSTILE), "good": Behavior()})
    app = await node(fleet)
    for rid in (7, "x-7", None):
        status, doc = await call(
            f"{app.base_url}/rpc/priority/ethereum", "eth_blockNumber", [], rid
        )
        assert status == 200
        assert doc["id"] == rid and doc["result"].startswith("0x"), doc
    assert fleet["bad"].stats.faults[mode] >= 1
    assert fleet["good"].stats.calls >= 3


# A slow drip ends at the send's first-attempt timeout, like a hang; the read test above
# covers the drip itself.
@pytest.mark.parametrize(
    "mode", [m for m in HOSTILE_MODES if m not in ("id_in_result", "slow_drip")]
)
async def test_a_send_to_a_hostile_provider_is_answered_by_another(
    mode: str, sim_fleet: Any, node: Any
) -> None:
    """eth_sendRawTransaction on a hostile provider: whatever it did, the transaction is
    sent to the good provider (a rebroadcast is harmless) and its hash answers, with the
    client's id."""
    fleet = await sim_fleet({"bad": Behavior(hostile=mode, **HOSTILE), "good": Behavior()})
    app = await node(fleet)
    url = f"{app.base_url}/rpc/priority/ethereum"
    raw = "0x02f8" + "ab" * 60
    status, doc = await call(url, "eth_sendRawTransaction", [raw], "f-1")
    assert status == 200 and doc["jsonrpc"] == "2.0" and doc["id"] == "f-1", doc
    assert doc["result"] == tx_hash(raw)
    assert fleet["good"].stats.methods["eth_sendRawTransaction"] == 1


async def test_an_upstream_answer_under_the_bound_passes_through_whole(
    sim_fleet: Any, node: Any
) -> None:
    """A large valid answer (1 MB, under the bound) reaches the client intact, id restored."""
    fleet = await sim_fleet({"big": Behavior(hostile="huge", huge_bytes=1_000_000)})
    app = await node(fleet)
    status, doc = await call(f"{app.base_url}/rpc/ethereum", "eth_blockNumber", [], 42)
    assert status == 200 and doc["id"] == 42
    assert doc["result"] == "a" * 1_000_000


async def test_an_id_in_the_result_is_left_alone(sim_fleet: Any, node: Any) -> None:
    """An upstream that writes its result (equal to Lasso's transport id) before the id:
    the client gets its own id in ``id`` and the upstream's result untouched."""
    fleet = await sim_fleet({"echo": Behavior(hostile="id_in_result")})
    app = await node(fleet)
    for rid in (5, "five"):
        status, doc = await call(f"{app.base_url}/rpc/ethereum", "eth_blockNumber", [], rid)
        assert status == 200 and doc["id"] == rid
        assert isinstance(doc["result"], str) and doc["result"].startswith("lasso-"), doc


async def test_an_absurd_retry_after_from_every_provider_is_a_clean_error(
    sim_fleet: Any, node: Any
) -> None:
    """When the only provider asks to come back in 1e308 s, the client gets a JSON-RPC
    rate-limit error with its id (never an HTTP 500 with id null)."""
    fleet = await sim_fleet({"only": Behavior(hostile="absurd_retry_after")})
    app = await node(fleet)
    status, doc = await call(f"{app.base_url}/rpc/ethereum", "eth_blockNumber", [], "r")
    assert status == 200 and doc["id"] == "r", doc
    assert doc["error"]["code"] in (-32000, -32005)
    ms = doc["error"].get("data", {}).get("retry_after_ms")
    assert ms is None or 0 < ms < 86_400_000


LARGE = 1_500_000  # past LARGE_ANSWER (a bytearray body) and LARGE_BODY (written as pieces)


@pytest.mark.parametrize(
    "raw_id", [b"42", b'"x-42"', b"123456789012345678901234567890", b"1.10", b'"\\u0041"']
)
async def test_a_large_valid_answer_passes_byte_for_byte_but_the_id(
    raw_id: bytes, sim_fleet: Any, node: Any
) -> None:
    """A 1.5 MB answer reaches the client as the provider wrote it, the client's id spelled
    as the client spelled it in place of Lasso's: alone and inside a batch."""
    fleet = await sim_fleet({"big": Behavior(hostile="huge", huge_bytes=LARGE)})
    app = await node(fleet)
    request = b'{"jsonrpc":"2.0","id":%s,"method":"eth_blockNumber","params":[]}' % raw_id
    answer = b'{"jsonrpc":"2.0","id":%s,"result":"%s"}' % (raw_id, b"a" * LARGE)
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{app.base_url}/rpc/ethereum", data=request) as r:
            assert r.status == 200 and await r.read() == answer
        small = b'{"jsonrpc":"2.0","id":9,"method":"eth_chainId","params":[]}'
        async with s.post(f"{app.base_url}/rpc/ethereum", data=b"[%s,%s]" % (request, small)) as r:
            body = await r.read()
    assert r.status == 200
    assert body.startswith(b"[" + answer + b",") and orjson.loads(body)[1]["id"] == 9


async def test_a_large_valid_answer_reaches_a_websocket_client_whole(
    sim_fleet: Any, node: Any
) -> None:
    """Over a WebSocket (answered by an HTTP provider) the same bytes, one text frame."""
    import websockets

    fleet = await sim_fleet({"big": Behavior(hostile="huge", huge_bytes=LARGE)})
    app = await node(fleet)
    url = app.base_url.replace("http://", "ws://") + "/ws/rpc/ethereum"
    async with websockets.connect(url, max_size=None) as ws:
        await ws.send('{"jsonrpc":"2.0","id":"w-1","method":"eth_blockNumber","params":[]}')
        frame = await ws.recv()
    assert frame == '{"jsonrpc":"2.0","id":"w-1","result":"%s"}' % ("a" * LARGE)
