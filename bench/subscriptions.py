"""Subscription fan-out: many WebSocket clients on one node share one upstream subscription.

One scripted upstream (a tiny WebSocket JSON-RPC server in this process: ``eth_subscribe``
newHeads, ``eth_blockNumber``) feeds a ``lasso serve`` node (its own process) whose only
provider is that upstream's ``ws_url``. ``--clients`` WebSocket clients, spread over
``--procs`` worker processes, each subscribe to ``newHeads`` through ``/ws/rpc/bench``.
Then the upstream announces ``--blocks`` heads, ``--interval-ms`` apart, each carrying the
``time.monotonic_ns()`` at which the upstream wrote it (``CLOCK_MONOTONIC`` is one clock for
every process of the machine).

Reported:

* **sharing**: upstream ``eth_subscribe`` newHeads calls the node made (one is the block-sync
  feed of the upstream connection, the others come from client subscriptions: exactly one
  shared subscription is asserted) and ``lasso_upstream_subscriptions`` from ``/metrics``;
* **fan-out latency** p50/p95/p99/max, from the upstream writing a head to a client
  reading it, over every (client, head) pair;
* **delivery**: heads received vs expected, and per client any gap or duplicate (0);
* **memory per client**: the node's RSS after every client subscribed minus before any
  connected, divided by the clients (sockets, the WebSocket connection, the subscription);
* **node CPU per notification**: the node's CPU time while the heads go out, divided by
  the notifications delivered (the fan-out cost, free of the clients' own work).

The latency includes the clients' processes reading their sockets, on the same cores as
the node: with 2 cores the workers' time is part of the tail.

    .venv/bin/python -m bench.subscriptions                    # 1,000 clients, 50 heads
    .venv/bin/python -m bench.subscriptions --clients 10000    # needs ~10k file descriptors
    .venv/bin/python -m bench.subscriptions --quick            # 200 clients, 10 heads
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # pragma: no cover - run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson  # noqa: E402
from websockets.asyncio.client import connect  # noqa: E402
from websockets.asyncio.server import ServerConnection, serve  # noqa: E402

from bench.common import (  # noqa: E402
    CLK_TCK,
    RESULTS,
    LassoProcess,
    Unavailable,
    fmt,
    free_port,
    latency_summary,
    log,
    markdown_table,
    save_report,
    timestamp,
    tree_cpu_ticks,
    tree_rss_kb,
)

CHAIN_ID = 1


def _hash(n: int) -> str:
    return "0x" + f"{n:064x}"


class Upstream:
    """A scripted provider: newHeads on demand, with the send time in every head."""

    def __init__(self) -> None:
        self.port = free_port()
        self.head = 1000
        self.subs: dict[str, ServerConnection] = {}
        self.subscribe_calls = 0
        self.sent = 0
        self._ids = 0

    async def handle(self, ws: ServerConnection) -> None:
        async for raw in ws:
            msg = orjson.loads(raw)
            method, rid = msg.get("method"), msg.get("id")
            result: Any
            if method == "eth_subscribe" and msg.get("params", [None])[0] == "newHeads":
                self._ids += 1
                self.subscribe_calls += 1
                result = f"0x{self._ids:032x}"
                self.subs[result] = ws
            elif method == "eth_unsubscribe":
                result = self.subs.pop(msg["params"][0], None) is not None
            elif method == "eth_blockNumber":
                result = hex(self.head)
            elif method == "eth_chainId":
                result = hex(CHAIN_ID)
            else:
                await ws.send(
                    orjson.dumps(
                        {"jsonrpc": "2.0", "id": rid, "error": {"code": -32601, "message": "no"}}
                    )
                )
                continue
            await ws.send(orjson.dumps({"jsonrpc": "2.0", "id": rid, "result": result}))

    async def announce(self) -> None:
        self.head += 1
        n = self.head
        for sid, ws in list(self.subs.items()):
            head = {
                "number": hex(n),
                "hash": _hash(n),
                "parentHash": _hash(n - 1),
                "timestamp": hex(int(time.time())),
                "benchSentNs": time.monotonic_ns(),  # last key: the worker reads it by position
            }
            note = {"jsonrpc": "2.0", "method": "eth_subscription", "params": {}}
            note["params"] = {"subscription": sid, "result": head}
            try:
                await ws.send(orjson.dumps(note))
                self.sent += 1
            except Exception:  # a closed subscriber
                self.subs.pop(sid, None)


# -- the worker: a share of the clients, in its own process ----------------------------------


async def worker(url: str, n: int, blocks: int, timeout: float) -> None:
    """Connect ``n`` clients, subscribe, print READY, then collect ``blocks`` heads each."""
    gate = asyncio.Semaphore(200)
    lat_ms: list[float] = []
    numbers: list[list[int]] = [[] for _ in range(n)]
    conns: list[Any] = [None] * n

    async def open_one(i: int) -> None:
        async with gate:
            ws = await connect(url, max_size=2**22, ping_interval=None)
            req = {"jsonrpc": "2.0", "id": 1, "method": "eth_subscribe", "params": ["newHeads"]}
            await ws.send(orjson.dumps(req))
            answer = orjson.loads(await ws.recv())
            if "result" not in answer:
                raise RuntimeError(f"subscribe failed: {answer}")
            conns[i] = ws

    t0 = time.monotonic()
    await asyncio.gather(*(open_one(i) for i in range(n)))
    print(json.dumps({"ready": True, "connect_s": time.monotonic() - t0}), flush=True)

    async def read(i: int) -> None:
        ws = conns[i]
        mine = numbers[i]
        while len(mine) < blocks:
            raw = await ws.recv(decode=False)
            now = time.monotonic_ns()
            # Two fields by position, not a full decode: the client's own cost stays small.
            i = raw.index(b'"benchSentNs":') + 14
            sent = int(raw[i : raw.index(b"}", i)])
            j = raw.index(b'"number":"') + 10
            lat_ms.append((now - sent) / 1e6)
            mine.append(int(raw[j : raw.index(b'"', j)], 16))

    try:
        async with asyncio.timeout(timeout):
            await asyncio.gather(*(read(i) for i in range(n)))
    except TimeoutError:
        pass
    gaps = dups = 0
    for mine in numbers:
        dups += len(mine) - len(set(mine))
        gaps += sum(1 for a, b in zip(mine, mine[1:], strict=False) if b != a + 1)
    await asyncio.gather(*(ws.close() for ws in conns if ws is not None), return_exceptions=True)
    received = sum(len(m) for m in numbers)
    out = {"latencies_ms": lat_ms, "received": received, "gaps": gaps, "dups": dups}
    print(json.dumps(out), flush=True)


# -- the driver --------------------------------------------------------------------------------


def _metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def _get(port: int, path: str) -> str:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    data = await reader.read()
    writer.close()
    return data.split(b"\r\n\r\n", 1)[1].decode()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, args.clients + 2048)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))  # children inherit it
    up = Upstream()
    server = await serve(up.handle, "127.0.0.1", up.port, max_size=2**22, ping_interval=None)
    workdir = Path(tempfile.mkdtemp(prefix="lasso-bench-subs-"))
    profile = (
        "---\nname: Bench\nslug: public\n---\nchains:\n  bench:\n"
        f"    chain_id: {CHAIN_ID}\n    websocket:\n      new_heads_timeout_ms: 600000\n"
        f"    providers:\n      - id: up\n        ws_url: ws://127.0.0.1:{up.port}\n"
    )
    lasso = LassoProcess(profile, workdir, "lasso-subs")
    procs: list[asyncio.subprocess.Process] = []
    try:
        lasso.start()
        deadline = time.monotonic() + 20
        while up.subscribe_calls < 1:  # the node's block-sync feed: the upstream is connected
            if time.monotonic() > deadline:
                raise Unavailable("the node did not connect to the upstream")
            await asyncio.sleep(0.05)
        baseline_calls = up.subscribe_calls
        rss_before = tree_rss_kb(lasso.pid)
        url = f"ws://127.0.0.1:{lasso.port}/ws/rpc/bench"
        shares = [
            args.clients // args.procs + (i < args.clients % args.procs) for i in range(args.procs)
        ]
        log(f"subscriptions: {args.clients} clients in {args.procs} processes")
        for n in shares:
            procs.append(
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    str(Path(__file__).resolve()),
                    "--worker",
                    "--url",
                    url,
                    "--clients",
                    str(n),
                    "--blocks",
                    str(args.blocks),
                    "--timeout",
                    str(args.blocks * args.interval_ms / 1000 + 60),
                    stdout=asyncio.subprocess.PIPE,
                    limit=2**28,  # the result line carries every latency
                )
            )
        t0 = time.monotonic()
        connect_s = []
        for p in procs:
            assert p.stdout is not None
            line = await asyncio.wait_for(p.stdout.readline(), 300)
            if not line:
                raise Unavailable("a worker exited before it was ready")
            connect_s.append(json.loads(line)["connect_s"])
        subscribe_all_s = time.monotonic() - t0
        rss_after = tree_rss_kb(lasso.pid)
        metrics = await _get(lasso.port, "/metrics")
        client_subs = _metric(metrics, "lasso_subscriptions", kind="newHeads")
        upstream_subs = _metric(metrics, "lasso_upstream_subscriptions", kind="newHeads")
        shared_calls = up.subscribe_calls - baseline_calls
        log(f"subscriptions: all subscribed in {subscribe_all_s:.1f}s; announcing {args.blocks}")
        cpu0 = sum(tree_cpu_ticks(lasso.pid).values())
        for _ in range(args.blocks):
            await up.announce()
            await asyncio.sleep(args.interval_ms / 1000)
        results = []
        for p in procs:
            assert p.stdout is not None
            line = await p.stdout.readline()
            results.append(json.loads(line))
            await p.wait()
        cpu_s = (sum(tree_cpu_ticks(lasso.pid).values()) - cpu0) / CLK_TCK
        lat = [x for r in results for x in r["latencies_ms"]]
        received = sum(r["received"] for r in results)
        summary = latency_summary(lat)
        per_client_kib = (rss_after - rss_before) / args.clients
        doc: dict[str, Any] = {
            "clients": args.clients,
            "procs": args.procs,
            "blocks": args.blocks,
            "interval_ms": args.interval_ms,
            "client_subscriptions": client_subs,
            "upstream_subscriptions_metric": upstream_subs,
            "upstream_subscribe_calls_for_clients": shared_calls,
            "subscribe_all_s": subscribe_all_s,
            "worker_connect_s": connect_s,
            "fanout_latency_ms": summary,
            "received": received,
            "expected": args.clients * args.blocks,
            "gaps": sum(r["gaps"] for r in results),
            "duplicates": sum(r["dups"] for r in results),
            "rss_before_kb": rss_before,
            "rss_after_kb": rss_after,
            "memory_per_client_kib": per_client_kib,
            "node_cpu_s_while_announcing": cpu_s,
            "node_cpu_us_per_notification": cpu_s * 1e6 / max(1, received),
        }
        doc["headline"] = {
            "clients": args.clients,
            "upstream subs": shared_calls,
            "fan-out p50 ms": summary["p50"],
            "fan-out p99 ms": summary["p99"],
            "KiB/client": round(per_client_kib, 1),
        }
        if shared_calls != 1 or upstream_subs != 1:
            raise AssertionError(
                f"{args.clients} clients made {shared_calls} upstream subscriptions "
                f"(metric {upstream_subs}), expected exactly 1"
            )
        if client_subs != args.clients:
            raise AssertionError(f"{client_subs} client subscriptions, expected {args.clients}")
        return doc
    finally:
        for p in procs:
            if p.returncode is None:
                p.kill()
        lasso.stop()
        server.close()


def render(doc: dict[str, Any]) -> str:
    s = doc["fanout_latency_ms"]
    rows = [
        ["clients", f"{doc['clients']:,} in {doc['procs']} processes"],
        ["upstream eth_subscribe for them", str(doc["upstream_subscribe_calls_for_clients"])],
        ["lasso_upstream_subscriptions", fmt(doc["upstream_subscriptions_metric"], 0)],
        ["heads delivered / expected", f"{doc['received']:,} / {doc['expected']:,}"],
        ["gaps / duplicates", f"{doc['gaps']} / {doc['duplicates']}"],
        [
            "fan-out p50 / p95 / p99 / max (ms)",
            " / ".join(fmt(s[k], 2) for k in ("p50", "p95", "p99", "max")),
        ],
        ["memory per client (KiB RSS)", fmt(doc["memory_per_client_kib"], 1)],
        ["node CPU per notification delivered (µs)", fmt(doc["node_cpu_us_per_notification"], 1)],
        ["time to subscribe every client (s)", fmt(doc["subscribe_all_s"], 2)],
    ]
    lines = [
        "# Subscription fan-out",
        "",
        f"{doc['blocks']} heads, {doc['interval_ms']} ms apart, from one upstream to every "
        "client through one Lasso node.",
        "",
        *markdown_table(["", "value"], rows, "ll"),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=1000, help="client subscriptions (1000)")
    ap.add_argument("--procs", type=int, default=2, help="client worker processes (2)")
    ap.add_argument("--blocks", type=int, default=50, help="heads to announce (50)")
    ap.add_argument("--interval-ms", type=float, default=100.0, help="between heads (100)")
    ap.add_argument("--quick", action="store_true", help="200 clients, 10 heads")
    ap.add_argument("--out-dir", default=str(RESULTS), help="where results go")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--url", help=argparse.SUPPRESS)
    ap.add_argument("--timeout", type=float, default=120.0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is a dependency
        pass
    if args.worker:
        asyncio.run(worker(args.url, args.clients, args.blocks, args.timeout))
        return 0
    if args.quick:
        args.clients, args.blocks = min(args.clients, 200), 10
    args.procs = max(1, min(args.procs, args.clients))
    try:
        doc = asyncio.run(run(args))
    except Unavailable as exc:
        log(f"subscriptions: unavailable: {exc}")
        return 2
    stamp, iso = timestamp()
    doc["timestamp"] = iso
    md = render(doc)
    print(
        json.dumps(
            {k: v for k, v in doc.items() if k != "fanout_latency_ms"}
            | {"fanout_latency_ms": doc["fanout_latency_ms"]},
            indent=1,
        )
    )
    print(md)
    save_report("subscriptions", stamp, doc, md, None, Path(args.out_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
