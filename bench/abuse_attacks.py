"""The attackers of ``bench/abuse.py``: each one a coroutine that abuses a Lasso node for
a while and reports what it tried and what came back.

Every attacker runs in its own process (``python -m bench.abuse_attacks NAME PORT
SECONDS``: it prints ``ready``, attacks once a line arrives on stdin, then prints one JSON
line), so that its start-up and its own CPU use never delay the measuring clients of
``bench/abuse.py`` inside their event loop. The result is a dict with ``inputs`` (how
many), ``unit`` (of what), ``outcome`` (one line for the report), ``answered`` / ``bad``
(answers that carried the request's id / anything else, where an answer is expected)
and raw counters.

``slowloris``
    ``--conns`` connections, each trickling one header byte every ``--interval`` s;
    reconnecting whenever cut.
``huge_header``
    A 100 MB header line, as fast as the socket takes it, again and again.
``header_repetition``
    Requests repeating one header name 10,000 times.
``pipelining_flood``
    One connection writing pipelined JSON-RPC requests as fast as it can, never reading.
``ws_ping_flood``
    WebSocket pings as fast as the socket takes them; reconnecting when closed.
``huge_body``
    9 MB bodies sent whole before reading (what urllib and requests do).
``upstream``
    JSON-RPC calls pinned to a hostile provider (its mode is set by the caller).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # pragma: no cover - run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

__all__ = ["ATTACKERS", "rpc_body", "main"]

Result = dict[str, Any]
GOOD_PATH = "/rpc/provider/good/ethereum"


def rpc_body(rid: int | str, method: str = "eth_blockNumber") -> bytes:
    """A JSON-RPC call with id ``rid``."""
    return json.dumps(
        {"jsonrpc": "2.0", "id": rid, "method": method, "params": []}, separators=(",", ":")
    ).encode()


def post(path: str, body: bytes, *extra: str) -> bytes:
    head = [f"POST {path} HTTP/1.1", "Host: abuse", "Content-Type: application/json", *extra]
    head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def read_status(reader: asyncio.StreamReader, timeout: float) -> int | None:
    """The status of the next answer (its body is skipped), None on EOF/reset/timeout."""
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
    except (TimeoutError, asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
        return None
    try:
        status = int(head.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return None
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            try:
                await asyncio.wait_for(reader.readexactly(int(line.split(b":")[1])), timeout)
            except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
                pass
    return status


async def slowloris(port: int, seconds: float, args: argparse.Namespace) -> Result:
    end = time.monotonic() + seconds
    counts: Counter[str] = Counter()

    async def one() -> None:
        while time.monotonic() < end:
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", port), 5
                )
            except (OSError, TimeoutError):
                counts["connect_failed"] += 1
                await asyncio.sleep(0.2)
                continue
            counts["opened"] += 1
            try:
                writer.write(b"GET /api/health HTTP/1.1\r\nHost: abuse\r\nX-Slow: ")
                while time.monotonic() < end:
                    try:
                        data = await asyncio.wait_for(reader.read(64), args.interval)
                    except TimeoutError:
                        writer.write(b"a")  # one more byte: the head never ends
                        counts["bytes"] += 1
                        continue
                    counts["cut_408" if data.startswith(b"HTTP/1.1 408") else "closed"] += 1
                    break
            except ConnectionError:
                counts["closed"] += 1
            finally:
                writer.close()

    await asyncio.gather(*(one() for _ in range(args.conns)))
    return {
        "inputs": counts["opened"],
        "unit": "connections",
        "outcome": (
            f"{counts['cut_408']} cut by the head deadline (408), {counts['closed']} closed"
            f" to make room (cap), {counts['connect_failed']} connects failed"
        ),
        "counts": dict(counts),
    }


async def huge_header(port: int, seconds: float, args: argparse.Namespace) -> Result:
    end = time.monotonic() + seconds
    attempts = refused = reset = 0
    sent_max = 0
    chunk = b"h" * 65536
    while time.monotonic() < end:
        attempts += 1
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        answer = asyncio.ensure_future(read_status(reader, 30))  # read while writing
        writer.write(b"GET / HTTP/1.1\r\nHost: abuse\r\nX-Huge: ")
        sent = 0
        was_reset = False
        try:
            while sent < 100_000_000:  # the window may end one attempt late
                writer.write(chunk)
                await writer.drain()
                sent += len(chunk)
        except ConnectionError:
            was_reset = True
        status = await answer
        refused += status == 431
        # A 431 still unread when the proxy resets (after discarding what a request could
        # hold) is lost with the reset: the refusal was sent, the sender kept sending.
        reset += status != 431 and was_reset
        sent_max = max(sent_max, sent)
        writer.close()
    return {
        "inputs": attempts,
        "unit": "100 MB header lines",
        "outcome": (
            f"{refused} read the 431, {reset} reset (still sending) before reading it;"
            f" the proxy took at most {sent_max / 1e6:.1f} MB of each"
        ),
        "answered": refused + reset,
        "bad": attempts - refused - reset,
    }


async def header_repetition(port: int, seconds: float, args: argparse.Namespace) -> Result:
    end = time.monotonic() + seconds
    request = b"GET /api/health HTTP/1.1\r\nHost: abuse\r\n" + b"X-Same: 1\r\n" * 10_000 + b"\r\n"
    attempts = refused = 0
    while time.monotonic() < end:
        attempts += 1
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(request)
            await writer.drain()
        except ConnectionError:
            pass
        refused += await read_status(reader, 5) == 431
        writer.close()
    return {
        "inputs": attempts,
        "unit": "requests x 10,000 headers",
        "outcome": f"{refused}/{attempts} refused 431",
        "answered": refused,
        "bad": attempts - refused,
    }


async def pipelining_flood(port: int, seconds: float, args: argparse.Namespace) -> Result:
    end = time.monotonic() + seconds
    one = post(GOOD_PATH, rpc_body(1))
    block = one * 1000
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    written = 0
    stalled = 0.0
    try:
        while time.monotonic() < end:
            writer.write(block)
            t0 = time.monotonic()
            try:
                await asyncio.wait_for(writer.drain(), max(0.01, end - time.monotonic()))
            except TimeoutError:
                stalled += time.monotonic() - t0
                break
            stalled += time.monotonic() - t0
            written += 1000
    except ConnectionError:
        pass
    writer.transport.abort()
    return {
        "inputs": written,
        "unit": "pipelined requests",
        "outcome": (
            f"{written:,} requests written in {seconds:.0f} s without reading; the proxy"
            f" stopped reading for {stalled:.1f} s of it"
        ),
    }


def _ws_upgrade(path: str) -> bytes:
    key = base64.b64encode(os.urandom(16))
    return (
        b"GET %s HTTP/1.1\r\nHost: abuse\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n" % (path.encode(), key)
    )


async def ws_ping_flood(port: int, seconds: float, args: argparse.Namespace) -> Result:
    end = time.monotonic() + seconds
    ping = b"\x89\x80\x01\x02\x03\x04"  # a masked, empty ping
    block = ping * 10_000
    connections = sent = pongs = 0
    codes: Counter[int] = Counter()

    async def frames(reader: asyncio.StreamReader) -> int:
        """Read server frames until the close frame; its code (0: none before EOF)."""
        nonlocal pongs
        try:
            while True:
                b0, b1 = await reader.readexactly(2)
                n = b1 & 0x7F
                if n == 126:
                    n = int.from_bytes(await reader.readexactly(2), "big")
                elif n == 127:
                    n = int.from_bytes(await reader.readexactly(8), "big")
                payload = await reader.readexactly(n)
                if b0 == 0x88:
                    return int.from_bytes(payload[:2], "big") if n >= 2 else 1005
                pongs += b0 == 0x8A
        except (asyncio.IncompleteReadError, ConnectionError):
            return 0

    while time.monotonic() < end:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(_ws_upgrade("/ws/rpc/ethereum"))
        await reader.readuntil(b"\r\n\r\n")
        connections += 1
        closing = asyncio.ensure_future(frames(reader))
        try:
            while not closing.done() and time.monotonic() < end:
                writer.write(block)
                sent += 10_000
                await asyncio.wait_for(writer.drain(), 0.5)
        except (ConnectionError, TimeoutError):
            pass
        try:
            codes[await asyncio.wait_for(closing, 5)] += 1
        except TimeoutError:
            codes[0] += 1
        writer.transport.abort()
    shown = ", ".join(f"{code or 'none'} x{n}" for code, n in sorted(codes.items()))
    return {
        "inputs": sent,
        "unit": "pings written",
        "outcome": f"{pongs:,} pongs; {connections} connections closed with code {shown}",
        "counts": {str(k): v for k, v in codes.items()},
    }


async def huge_body(port: int, seconds: float, args: argparse.Namespace) -> Result:
    end = time.monotonic() + seconds
    body = b"[" + b'"x",' * 2_250_000 + b'"x"]'  # 9 MB
    request = post(GOOD_PATH, body)
    counts: Counter[str] = Counter()

    async def one() -> None:
        while time.monotonic() < end:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                writer.write(request)  # the whole body first, then read (urllib, requests)
                await writer.drain()
            except ConnectionError:
                counts["reset_while_sending"] += 1
                writer.close()
                continue
            status = await read_status(reader, 10)
            counts[str(status)] += 1
            writer.close()

    await asyncio.gather(*(one() for _ in range(4)))
    n = sum(counts.values())
    return {
        "inputs": n,
        "unit": "9 MB bodies",
        "outcome": f"{counts['413']}/{n} read the 413 JSON-RPC error",
        "answered": counts["413"],
        "bad": n - counts["413"],
        "counts": dict(counts),
    }


async def upstream(port: int, seconds: float, args: argparse.Namespace) -> Result:
    """Calls pinned to the hostile provider: every one must come back with its own id."""
    import aiohttp

    end = time.monotonic() + seconds
    codes: Counter[str] = Counter()
    bad: list[str] = []
    ids = iter(range(10**9))
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def one() -> None:
            while time.monotonic() < end:
                rid = f"u-{next(ids)}"
                try:
                    async with session.post(
                        f"http://127.0.0.1:{port}/rpc/provider/{args.provider}/ethereum",
                        data=rpc_body(rid),
                    ) as resp:
                        raw = await resp.read()
                        doc = json.loads(raw)
                except Exception as exc:  # noqa: BLE001 - every failure is a finding
                    bad.append(type(exc).__name__)
                    continue
                if not isinstance(doc, dict) or doc.get("id") != rid:
                    bad.append(
                        f"HTTP {resp.status} id {doc.get('id') if isinstance(doc, dict) else '?'}"
                    )
                    continue
                err = doc.get("error")
                codes["result" if "result" in doc else str(err.get("code") if err else "?")] += 1

        await asyncio.gather(*(one() for _ in range(args.concurrency)))
    n = sum(codes.values()) + len(bad)
    shown = ", ".join(f"{k} x{v}" for k, v in codes.most_common())
    outcome = f"{sum(codes.values())}/{n} answered with their id ({shown})"
    if bad:
        outcome += f"; {len(bad)} not: {Counter(bad).most_common(2)}"
    return {
        "inputs": n,
        "unit": "calls",
        "outcome": outcome,
        "answered": sum(codes.values()),
        "bad": len(bad),
        "counts": dict(codes),
    }


ATTACKERS: dict[str, Callable[[int, float, argparse.Namespace], Awaitable[Result]]] = {
    "slowloris": slowloris,
    "huge_header": huge_header,
    "header_repetition": header_repetition,
    "pipelining_flood": pipelining_flood,
    "ws_ping_flood": ws_ping_flood,
    "huge_body": huge_body,
    "upstream": upstream,
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="one attacker of bench/abuse.py")
    p.add_argument("name", choices=sorted(ATTACKERS))
    p.add_argument("port", type=int)
    p.add_argument("seconds", type=float)
    p.add_argument("--conns", type=int, default=1100, help="slowloris connections")
    p.add_argument("--interval", type=float, default=10.0, help="slowloris seconds per byte")
    p.add_argument("--concurrency", type=int, default=4, help="upstream calls in flight")
    p.add_argument("--provider", default="hostile", help="upstream: the provider to call")
    args = p.parse_args(argv)
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:  # pragma: no cover
        runner = asyncio.Runner()
    # Start-up (imports, the interpreter) is over: say so, and attack on the go-ahead, so
    # that the caller's measuring window holds the attack alone.
    print("ready", flush=True)
    sys.stdin.readline()
    with runner:
        result = runner.run(ATTACKERS[args.name](args.port, args.seconds, args))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
