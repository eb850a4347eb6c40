"""A real Lasso node in a background thread for the fuzz stage (``tests/integration/
test_fuzz.py``), and blocking-socket helpers that read whatever it answers.

``ThreadedNode`` runs a one-provider simulator fleet and a ``LassoApp`` in front of it on
their own uvloop event loop (the production loop), so that a test function driven by
Hypothesis can use plain blocking sockets between examples. Everything the node reports
as a failure is collected in ``problems``: error log records of the ``lasso`` loggers and
every exception that reaches the loop's exception handler (a protocol callback that
raised, a task that failed unobserved).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
from typing import Any

from lasso.sim.behavior import Behavior

from support import UNIT, fleet_chain_yaml, profile_yaml

__all__ = ["ThreadedNode", "exchange", "split_responses"]


class _Collect(logging.Handler):
    def __init__(self, sink: list[str]) -> None:
        super().__init__(logging.ERROR)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        self.sink.append(f"{record.name}: {record.getMessage()} {record.exc_text or ''}")


class ThreadedNode:
    """Lasso in front of one simulated provider, served from a background thread."""

    def __init__(self) -> None:
        self.problems: list[str] = []
        self.port = 0
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._run, name="fuzz-node", daemon=True)
        self._handler = _Collect(self.problems)

    def __enter__(self) -> ThreadedNode:
        logging.getLogger("lasso").addHandler(self._handler)
        self._thread.start()
        if not self._ready.wait(30 * UNIT) or not self.port:
            raise RuntimeError(f"fuzz node did not start: {self.problems}")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30 * UNIT)
        logging.getLogger("lasso").removeHandler(self._handler)

    def _run(self) -> None:
        import uvloop

        loop = uvloop.new_event_loop()
        self._loop = loop
        loop.set_exception_handler(self._on_loop_error)
        try:
            loop.run_until_complete(self._main())
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            self.problems.append(f"node crashed: {exc!r}")
            self._ready.set()
        finally:
            loop.close()

    def _on_loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        self.problems.append(f"loop: {context.get('message')} {exc!r}")

    async def _main(self) -> None:
        from lasso.app import LassoApp, Settings
        from lasso.profiles import parse_profile
        from lasso.sim.chain import SyntheticChain
        from lasso.sim.fleet import ProviderSpec, SimFleet

        self._stop = asyncio.Event()
        chain = SyntheticChain(1, 1.0, "fuzz", start_time=time.time())
        fleet = SimFleet(chain, [ProviderSpec(id="p", behavior=Behavior())], seed="fuzz")
        await fleet.start()
        text = profile_yaml(fleet_chain_yaml(fleet))
        profile = parse_profile(text, "public.yml", dict(os.environ))
        app = LassoApp({"public": profile}, Settings(probes=False, max_body=100_000))
        try:
            self.port = await app.start("127.0.0.1", 0)
            self._ready.set()
            await self._stop.wait()
        finally:
            await app.stop(drain_timeout=1.0)
            await fleet.stop()

    def alive(self) -> bool:
        """The node still answers a health check on a fresh connection."""
        status, _ = exchange(self.port, b"GET /api/health HTTP/1.1\r\nHost: f\r\n\r\n")
        return status.startswith(b"HTTP/1.1 200")


def exchange(port: int, data: bytes, timeout: float = 3.0) -> tuple[bytes, bool]:
    """Send ``data``, shut the write side, read until the server closes.

    Returns (everything received, whether it closed in time). A reset counts as a close.
    """
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout * UNIT)
    got = bytearray()
    closed = False
    try:
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except OSError:  # refused early (413, 431...) and closed under our feet
            pass
        deadline = time.monotonic() + timeout * UNIT
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            except ConnectionResetError:
                closed = True
                break
            if not chunk:
                closed = True
                break
            got += chunk
    finally:
        sock.close()
    return bytes(got), closed


def split_responses(data: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """Parse ``data`` as back-to-back HTTP/1.1 responses framed by Content-Length (or
    chunked). Raises ValueError on anything else."""
    out = []
    pos = 0
    while pos < len(data):
        end = data.find(b"\r\n\r\n", pos)
        if end < 0:
            raise ValueError(f"incomplete response head: {data[pos : pos + 200]!r}")
        lines = data[pos:end].decode("latin-1").split("\r\n")
        version, code, *_ = lines[0].split(" ")
        if version != "HTTP/1.1":
            raise ValueError(f"not an HTTP/1.1 status line: {lines[0]!r}")
        headers = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                raise ValueError(f"bad header line {line!r}")
            headers[name.strip().lower()] = value.strip()
        pos = end + 4
        status = int(code)
        if status == 101:  # the connection is no longer HTTP
            out.append((status, headers, b""))
            return out
        if 100 <= status < 200:
            continue
        if "content-length" in headers:
            n = int(headers["content-length"])
            body = data[pos : pos + n]
            if len(body) != n:
                raise ValueError("truncated body")
            pos += n
        elif headers.get("transfer-encoding") == "chunked":
            parts = []
            while True:
                eol = data.index(b"\r\n", pos)
                size = int(data[pos:eol], 16)
                pos = eol + 2
                parts.append(data[pos : pos + size])
                pos += size + 2
                if size == 0:
                    break
            body = b"".join(parts)
        else:
            body = b""
        out.append((status, headers, body))
    return out
