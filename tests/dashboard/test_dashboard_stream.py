"""Dashboard routes and the live stream: assets, caching, SSE, sharing, bounds, errors."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
from yarl import URL

from support import UNIT, eventually, fleet_chain_yaml, profile_yaml

pytestmark = pytest.mark.integration

BN = orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []})


@pytest.fixture
async def node(sim_fleet: Any, lasso_node: Any) -> Any:
    fleet = await sim_fleet(["alpha", "bravo"])
    # No response cache on the watched chain: the counts checked here are routed calls
    # (the cache's own background calls are covered in tests/server/cache).
    off = "    cache:\n      enabled: false"
    app = await lasso_node(
        profile_yaml(fleet_chain_yaml(fleet, extra=off)),
        profile_yaml(fleet_chain_yaml(fleet, key="other"), slug="team"),
    )
    app.fleet = fleet
    return app


async def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes, Any]:
    """GET ``url`` exactly as written (no client-side path normalization)."""
    async with (
        aiohttp.ClientSession() as s,
        s.get(URL(url, encoded=True), headers=headers, allow_redirects=False) as r,
    ):
        return r.status, await r.read(), r.headers


async def sse_events(resp: aiohttp.ClientResponse) -> AsyncIterator[tuple[str, Any]]:
    """Parse a server-sent event stream into (event, JSON data) pairs."""
    name = "message"
    async for raw in resp.content:
        line = raw.decode().rstrip("\n")
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            yield name, orjson.loads(line[6:])
        elif not line:
            name = "message"


async def next_event(events: AsyncIterator[tuple[str, Any]], kind: str) -> Any:
    async def find() -> Any:
        async for name, data in events:
            if name == kind:
                return data
        raise AssertionError(f"stream ended before a {kind!r} event")

    return await asyncio.wait_for(find(), 5 * UNIT)


async def test_page_and_assets_have_types_and_caching(node: Any) -> None:
    """The page is no-cache with a CSP; assets are hashed, typed and revalidated."""
    status, body, headers = await get(node.base_url + "/dashboard")
    assert status == 200
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert headers["Cache-Control"] == "no-cache"
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    refs = dict(re.findall(rb"/dashboard/static/([\w.]+)\?v=([0-9a-f]{12})", body))
    assets = {b"app.css", b"app.js", b"favicon.svg", b"clients.css", b"clients.js"}
    assert set(refs) == assets | {b"cache.css", b"cache.js"}
    types = {
        b"app.css": "text/css; charset=utf-8",
        b"app.js": "text/javascript; charset=utf-8",
        b"clients.css": "text/css; charset=utf-8",
        b"clients.js": "text/javascript; charset=utf-8",
        b"cache.css": "text/css; charset=utf-8",
        b"cache.js": "text/javascript; charset=utf-8",
        b"favicon.svg": "image/svg+xml",
    }
    for name, version in refs.items():
        url = f"{node.base_url}/dashboard/static/{name.decode()}"
        status, asset, h = await get(f"{url}?v={version.decode()}")
        assert status == 200 and h["Content-Type"] == types[name]
        assert h["Cache-Control"] == "public, max-age=31536000, immutable"
        assert h["ETag"] == f'"{version.decode()}"'
        status, again, h2 = await get(url)
        assert status == 200 and again == asset and h2["Cache-Control"] == "no-cache"
        status, empty, _ = await get(url, {"If-None-Match": h["ETag"]})
        assert status == 304 and empty == b""


@pytest.mark.parametrize(
    ("path", "status", "kind"),
    [
        ("/", 302, None),
        ("/dashboard/", 200, "text/html; charset=utf-8"),
        ("/dashboard/team", 200, "text/html; charset=utf-8"),
        ("/dashboard/default", 200, "text/html; charset=utf-8"),
        ("/dashboard/nope", 404, "text/html; charset=utf-8"),
        ("/dashboard/team/extra", 404, "application/json"),
        ("/dashboard/static/nope.js", 404, "application/json"),
        ("/dashboard/static/index.html", 404, "application/json"),
        ("/dashboard/static/../../pyproject.toml", 404, "application/json"),
        ("/dashboard/static/%2e%2e/views.py", 404, "application/json"),
        ("/dashboard/static/app.js/", 200, "text/javascript; charset=utf-8"),
        ("/dashboard/%3Cscript%3E", 404, "text/html; charset=utf-8"),
        ("/dashboardx", 404, "application/json"),
    ],
)
async def test_dashboard_paths(node: Any, path: str, status: int, kind: str | None) -> None:
    """Known pages answer; anything else is a clear 404, never a file outside the assets."""
    got, body, headers = await get(node.base_url + path)
    assert got == status, body
    if kind is not None:
        assert headers["Content-Type"] == kind
    if path == "/":
        assert headers["Location"] == "/dashboard"
    if path == "/dashboard/nope":
        assert b"Profile &ldquo;nope&rdquo; not found" in body and b"/dashboard/team" in body


async def test_stream_sends_hello_snapshots_and_events(node: Any) -> None:
    """A viewer gets hello, then a snapshot every tick, and routing decisions as events."""
    async with (
        aiohttp.ClientSession() as s,
        s.get(node.base_url + "/api/stream?profile=public") as resp,
    ):
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "text/event-stream; charset=utf-8"
        assert resp.headers["Cache-Control"] == "no-cache"
        assert resp.headers["Transfer-Encoding"] == "chunked"
        events = sse_events(resp)
        hello = await next_event(events, "hello")
        assert hello["node_id"] == "test" and hello["profile"] == "public"
        snap = await next_event(events, "snapshot")
        assert snap["profile"] == "public" and snap["scope"] == "node"
        assert [p["slug"] for p in snap["profiles"]] == ["public", "team"]
        [chain] = snap["chains"]
        assert [p["id"] for p in chain["providers"]] == ["alpha", "bravo"]
        assert {p["status"] for p in chain["providers"]} == {"healthy"}
        async with s.post(node.base_url + "/rpc/ethereum", data=BN) as r:
            assert r.status == 200
        batch = await next_event(events, "events")
        [decision] = batch["events"]
        assert decision["type"] == "decision" and decision["method"] == "eth_blockNumber"
        assert decision["chain"] == "ethereum" and decision["profile"] == "public"
        t0 = time.monotonic()
        later = await next_event(events, "snapshot")
        assert time.monotonic() - t0 < 1.5 * UNIT
        [chain] = later["chains"]
        assert sum(p["calls"] for p in chain["providers"]) == 1


async def test_other_profiles_events_are_not_sent(node: Any) -> None:
    """A viewer of one profile does not get another profile's routing decisions."""
    async with aiohttp.ClientSession() as s, s.get(node.base_url + "/api/stream") as resp:
        events = sse_events(resp)
        await next_event(events, "hello")
        async with s.post(node.base_url + "/rpc/profile/team/other", data=BN) as r:
            assert r.status == 200
        async with s.post(node.base_url + "/rpc/ethereum", data=BN) as r:
            assert r.status == 200
        batch = await next_event(events, "events")
        assert {e["profile"] for e in batch["events"]} == {"public"}


@pytest.mark.parametrize(
    ("query", "status", "key"),
    [
        ("profile=nope", 404, "available_profiles"),
        ("node=elsewhere", 404, "available_nodes"),
    ],
)
async def test_bad_stream_requests_get_clear_errors(
    node: Any, query: str, status: int, key: str
) -> None:
    """An unknown profile or node is a 404 with what exists, for GET and HEAD alike."""
    got, body, headers = await get(f"{node.base_url}/api/stream?{query}")
    assert got == status
    assert headers["Content-Type"] == "application/json"
    doc = orjson.loads(body)
    assert doc[key] in (["public", "team"], ["test"])
    async with aiohttp.ClientSession() as s, s.head(f"{node.base_url}/api/stream?{query}") as r:
        assert r.status == status
    assert node.dashboard.hub.viewers == 0


async def test_viewer_limit_is_a_503(node: Any) -> None:
    """Past the viewer limit the stream is refused with 503 and Retry-After."""
    node.dashboard.hub.max_viewers = 1
    async with aiohttp.ClientSession() as s, s.get(node.base_url + "/api/stream") as first:
        await next_event(sse_events(first), "hello")
        status, body, headers = await get(node.base_url + "/api/stream")
        assert status == 503 and headers["Retry-After"] == "5"
        assert b"too many dashboard streams" in body


async def test_one_snapshot_per_tick_is_shared_by_every_viewer(node: Any) -> None:
    """Ten viewers: each tick builds and encodes one snapshot, the same bytes for all."""
    hub = node.dashboard.hub
    viewers = [hub.open("public", None) for _ in range(10)]
    other = hub.open("team", None)
    try:
        hub.tick()
        last = {id(v.queue[-1]) for v in viewers}
        assert len(last) == 1
        assert other.queue[-1] is not viewers[0].queue[-1]
        assert viewers[0].queue[-1].startswith(b"event: snapshot\ndata: ")
        assert hub.viewers == 11 and len(hub.feeds) == 2
    finally:
        for v in [*viewers, other]:
            hub.close(v)
    assert hub.viewers == 0


async def test_slow_viewer_keeps_only_the_newest_messages(node: Any) -> None:
    """A viewer that does not read keeps a bounded queue: the oldest messages go first."""
    hub = node.dashboard.hub
    hub.queue_len = 4
    viewer = hub.open(None, None)
    try:
        for _ in range(10):
            hub.tick()
        assert len(viewer.queue) == 4
        assert viewer.dropped == 7  # hello+snapshot, then ten ticks, four kept
        stamps = [orjson.loads(m.split(b"data: ", 1)[1])["ts"] for m in viewer.queue]
        assert stamps == sorted(stamps)
    finally:
        hub.close(viewer)


async def test_events_are_batched_and_capped_per_flush(node: Any) -> None:
    """Each flush sends at most max_events per profile (the newest) and counts the rest."""
    hub = node.dashboard.hub
    hub.max_events = 5
    viewer = hub.open("public", None)
    try:
        for i in range(20):
            node.events.state({"type": "test", "profile": "public", "n": i})
        node.events.state({"type": "test", "profile": "team", "n": 99})
        viewer.queue.clear()
        hub.flush_events()
        [msg] = list(viewer.queue)
        doc = orjson.loads(msg.split(b"data: ", 1)[1])
        assert [e["n"] for e in doc["events"]] == [15, 16, 17, 18, 19]
        assert doc["dropped"] == 15 and hub.events_dropped == 15
    finally:
        hub.close(viewer)


async def test_viewer_streams_release_their_viewer(node: Any) -> None:
    """Closing a stream, even one never iterated, frees its viewer; closing the viewer
    ends its stream."""
    hub = node.dashboard.hub
    unused = hub.open("public", None).stream()
    await unused.aclose()
    assert hub.viewers == 0
    viewer = hub.open("public", None)
    stream = viewer.stream()
    first = await anext(stream)
    assert first.startswith(b"retry: 2000\n\nevent: hello\n")
    waiting = asyncio.ensure_future(anext(stream))
    await eventually(lambda: not viewer.wake.is_set(), message="stream not waiting")
    hub.close(viewer)
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(waiting, 5 * UNIT)
    assert hub.viewers == 0 and hub._task is None


async def test_events_without_a_profile_reach_every_profile(node: Any) -> None:
    """A shared upstream's state event (no profile) is shown to viewers of every profile."""
    hub = node.dashboard.hub
    viewers = [hub.open("public", None), hub.open("team", None)]
    try:
        node.events.state({"type": "ws_upstream", "provider": "alpha", "connected": False})
        for v in viewers:
            v.queue.clear()
        hub.flush_events()
        for v in viewers:
            [msg] = list(v.queue)
            [event] = orjson.loads(msg.split(b"data: ", 1)[1])["events"]
            assert event["type"] == "ws_upstream" and event["connected"] is False
    finally:
        for v in viewers:
            hub.close(v)


async def test_no_viewer_no_cost(node: Any) -> None:
    """The hub listens to the event bus only while someone watches, and stops after."""
    hub = node.dashboard.hub
    assert hub._on_event not in node.events.listeners
    async with aiohttp.ClientSession() as s, s.get(node.base_url + "/api/stream") as resp:
        await next_event(sse_events(resp), "snapshot")
        assert node.events.listeners.count(hub._on_event) == 1
        assert hub._task is not None
    await eventually(lambda: hub.viewers == 0, message="viewer not released")
    assert hub._on_event not in node.events.listeners
    assert hub._task is None


async def test_stopping_the_node_ends_streams_promptly(sim_fleet: Any, lasso_node: Any) -> None:
    """A node with dashboards open drains in well under its 10 s budget."""
    fleet = await sim_fleet(["alpha"])
    app = await lasso_node(profile_yaml(fleet_chain_yaml(fleet)))
    async with aiohttp.ClientSession() as s, s.get(app.base_url + "/api/stream") as resp:
        events = sse_events(resp)
        await next_event(events, "snapshot")
        t0 = time.monotonic()
        await app.stop(drain_timeout=10.0)
        assert time.monotonic() - t0 < 2.0 * UNIT
        with pytest.raises(AssertionError, match="stream ended"):
            await next_event(events, "never")
