"""The TCP fault proxy: forwarding, RST cuts, stalls, refusal and resume, several doors."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
import websockets

from lasso.sim.faultproxy import FaultProxy

from support import UNIT, Anvil, eventually


class Echo:
    """A tiny TCP echo server counting its connections."""

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        self.port = 0
        self.connections = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()


@pytest.fixture
async def echo() -> AsyncIterator[Echo]:
    e = Echo()
    await e.start()
    yield e
    await e.stop()


@pytest.fixture
async def proxy(echo: Echo) -> AsyncIterator[FaultProxy]:
    async with FaultProxy("127.0.0.1", echo.port) as p:
        yield p


async def _open(p: FaultProxy) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", p.port)


async def test_forwards_both_ways(proxy: FaultProxy) -> None:
    """Bytes reach the target and its answers come back, large ones included."""
    reader, writer = await _open(proxy)
    payload = b"x" * 3_000_000
    writer.write(payload)
    got = await asyncio.wait_for(reader.readexactly(len(payload)), 10 * UNIT)
    assert got == payload
    assert proxy.connections == 1 and proxy.accepted == 1
    assert proxy.bytes_up == proxy.bytes_down == len(payload)
    writer.close()
    await eventually(lambda: proxy.connections == 0)
    assert "up" in repr(proxy)


async def test_cut_resets_both_sides(proxy: FaultProxy, echo: Echo) -> None:
    """cut() sends RST: the client sees a reset, not a clean EOF; new connections work."""
    reader, writer = await _open(proxy)
    writer.write(b"ping")
    assert await reader.readexactly(4) == b"ping"
    assert proxy.cut() == 1 and proxy.cuts == 1
    with pytest.raises(ConnectionResetError):
        await asyncio.wait_for(reader.read(10), 5 * UNIT)
        writer.write(b"more")
        await writer.drain()
        await asyncio.wait_for(reader.read(10), 5 * UNIT)
    reader2, writer2 = await _open(proxy)
    writer2.write(b"again")
    assert await asyncio.wait_for(reader2.readexactly(5), 5 * UNIT) == b"again"
    writer2.close()


async def test_stall_holds_bytes_until_resume(proxy: FaultProxy) -> None:
    """A stalled proxy keeps connections open and silent; resume delivers what waited."""
    reader, writer = await _open(proxy)
    writer.write(b"a")
    assert await reader.readexactly(1) == b"a"
    proxy.stall()
    assert "stalled" in repr(proxy)
    writer.write(b"held")
    late_reader, late_writer = await _open(proxy)  # accepted, but hangs
    late_writer.write(b"late")
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(reader.readexactly(4), 0.2)
    await proxy.resume()
    assert await asyncio.wait_for(reader.readexactly(4), 5 * UNIT) == b"held"
    assert await asyncio.wait_for(late_reader.readexactly(4), 5 * UNIT) == b"late"
    writer.close()
    late_writer.close()


async def test_refuse_then_resume_on_the_same_port(proxy: FaultProxy) -> None:
    """refuse() closes the listener (ECONNREFUSED); open connections live; resume listens."""
    reader, writer = await _open(proxy)
    port = proxy.port
    await proxy.refuse()
    assert not proxy.listening and "refusing" in repr(proxy)
    with pytest.raises(ConnectionRefusedError):
        await _open(proxy)
    writer.write(b"still")
    assert await asyncio.wait_for(reader.readexactly(5), 5 * UNIT) == b"still"
    await proxy.resume()
    assert proxy.port == port and proxy.listening
    r2, w2 = await _open(proxy)
    w2.write(b"ok")
    assert await asyncio.wait_for(r2.readexactly(2), 5 * UNIT) == b"ok"
    await proxy.restart()
    assert proxy.connections == 0 and proxy.listening
    writer.close()
    w2.close()


async def test_unreachable_target_resets_the_client() -> None:
    """When the target refuses, the client connection is reset."""
    async with FaultProxy("127.0.0.1", 1, connect_timeout=2.0) as p:
        reader, writer = await _open(p)
        data = b""
        with pytest.raises((ConnectionResetError, asyncio.IncompleteReadError)):
            data = await asyncio.wait_for(reader.readexactly(1), 5 * UNIT)
        assert data == b""
        writer.close()


async def test_several_doors_to_one_anvil_carry_websockets() -> None:
    """Three proxies front one anvil; a WebSocket through one of them dies on cut while
    the others keep serving the same chain."""
    node = Anvil()
    try:
        doors = [FaultProxy("127.0.0.1", node.port) for _ in range(3)]
        for d in doors:
            await d.start()
        conns = [await websockets.connect(d.ws_url) for d in doors]
        req = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []})
        for ws in conns:
            await ws.send(req)
            assert json.loads(await ws.recv())["result"] == "0x7a69"
        assert doors[0].cut() == 1
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(conns[0].recv(), 5 * UNIT)
        await conns[1].send(req)
        assert json.loads(await conns[1].recv())["result"] == "0x7a69"
        for ws in conns[1:]:
            await ws.close()
        for d in doors:
            await d.stop()
    finally:
        node.stop()
