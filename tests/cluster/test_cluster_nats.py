"""Clustering over a real nats-server: aggregation, unresponsive nodes, NATS outages."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from lasso.app import LassoApp, Settings
from lasso.profiles import parse_profile

from support import ROOT, UNIT, eventually, fleet_chain_yaml, free_port, profile_yaml

pytestmark = pytest.mark.integration

NATS = shutil.which("nats-server") or "/usr/sbin/nats-server"
INTERVAL = 0.25  # heartbeat interval of the test nodes (seconds)
REGIONS = ("us-east-1", "eu-west-1", "ap-southeast-1")


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class NatsServer:
    """A real nats-server on a loopback port that can be stopped and restarted."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        self.proc = subprocess.Popen(
            [NATS, "-a", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        await eventually(lambda: _port_open(self.port), timeout=10, message="nats-server up")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


@pytest.fixture
async def nats_server() -> AsyncIterator[NatsServer]:
    if not Path(NATS).exists():
        pytest.fail("nats-server is not installed: run scripts/test.sh first")
    server = NatsServer()
    await server.start()
    yield server
    server.stop()


@pytest.fixture
async def cluster_node() -> AsyncIterator[Callable[..., Awaitable[LassoApp]]]:
    """Factory: a Lasso node on a free port that joins the cluster at ``url``."""
    apps: list[LassoApp] = []

    async def start(node_id: str, url: str, fleet: Any, **settings: Any) -> LassoApp:
        prof = parse_profile(profile_yaml(fleet_chain_yaml(fleet)), "public.yml", {})
        app = LassoApp(
            {prof.slug: prof},
            Settings(
                node_id=node_id,
                probes=False,
                cluster_url=url,
                **{"cluster_interval_s": INTERVAL, **settings},
            ),
        )
        port = await app.start("127.0.0.1", 0)
        await app.start_background()
        app.base_url = f"http://127.0.0.1:{port}"  # type: ignore[attr-defined]
        apps.append(app)
        return app

    yield start
    for app in apps:
        await app.stop(drain_timeout=1.0)


async def get(url: str) -> Any:
    async with aiohttp.ClientSession() as s, s.get(url) as r:
        return r.status, orjson.loads(await r.read())


async def traffic(app: Any, n: int) -> None:
    """``n`` successful reads through ``app`` (two methods)."""
    async with aiohttp.ClientSession() as s:
        for i in range(n):
            method = "eth_blockNumber" if i % 2 else "eth_getBalance"
            params: list[Any] = [] if i % 2 else ["0x" + "00" * 19 + "aa", "latest"]
            body = {"jsonrpc": "2.0", "id": i, "method": method, "params": params}
            async with s.post(f"{app.base_url}/rpc/ethereum", data=orjson.dumps(body)) as r:
                doc = orjson.loads(await r.read())
                assert r.status == 200 and "result" in doc, doc


def method_calls(doc: dict[str, Any]) -> dict[tuple[str, str], int]:
    """(provider, method) -> calls, from a local or a cluster /api/metrics document."""
    out: dict[tuple[str, str], int] = {}
    for p in doc["providers"]:
        for row in p["methods"]:
            key = (p["id"], row["method"])
            out[key] = out.get(key, 0) + row["calls"]
    return out


async def responding(app: Any) -> int:
    _, doc = await get(f"{app.base_url}/api/cluster")
    return sum(1 for n in doc["nodes"] if n["status"] == "responding")


async def aggregate_matches(apps: list[Any], via: Any) -> bool:
    expected: dict[tuple[str, str], int] = {}
    total_requests = 0
    for app in apps:
        _, doc = await get(f"{app.base_url}/api/metrics/ethereum")
        for key, n in method_calls(doc).items():
            expected[key] = expected.get(key, 0) + n
        total_requests += doc["chain_performance"]["total_calls"]
    _, agg = await get(f"{via.base_url}/api/metrics/ethereum?scope=cluster")
    return (
        method_calls(agg) == expected
        and agg["chain_performance"]["total_calls"] == total_requests
        and agg["coverage"]["instances"] == len(apps)
    )


async def test_aggregate_equals_the_sum_of_the_nodes_figures(
    nats_server: NatsServer, cluster_node: Any, sim_fleet: Any
) -> None:
    """Three regions over NATS: every node's cluster view sums the nodes' own figures."""
    fleet = await sim_fleet(["alpha", "bravo", "charlie"])
    apps = [await cluster_node(r, nats_server.url, fleet) for r in REGIONS]
    for app in apps:
        await eventually(lambda app=app: responding(app), message="view")
        await eventually(
            lambda app=app: _count_is(app, 3), timeout=10, message="three nodes responding"
        )
    for app, n in zip(apps, (7, 11, 4), strict=True):
        await traffic(app, n)
    for via in apps:
        await eventually(
            lambda via=via: aggregate_matches(apps, via),
            timeout=10,
            message="aggregate equals the sum",
        )
    # Health reports the cluster; the per-node drill-down equals that node's own figures.
    status, health = await get(f"{apps[0].base_url}/api/health")
    assert status == 200
    cluster = health["cluster"]
    assert cluster["enabled"] and cluster["status"] == "healthy"
    assert cluster["nodes_total"] == cluster["nodes_responding"] == 3
    assert cluster["regions"] == sorted(REGIONS)
    _, own = await get(f"{apps[1].base_url}/api/metrics/ethereum")
    _, drill = await get(f"{apps[0].base_url}/api/metrics/ethereum?node=eu-west-1")
    assert drill["scope"] == "node" and method_calls(drill) == method_calls(own)
    by_node = drill["providers"][0]["by_node"]
    assert list(by_node) == ["eu-west-1"]
    status, missing = await get(f"{apps[0].base_url}/api/metrics/ethereum?node=nowhere")
    assert status == 404 and missing["error"] == "Node not found"
    # Prometheus exposes the connectivity gauges.
    async with aiohttp.ClientSession() as s, s.get(f"{apps[0].base_url}/metrics") as r:
        text = (await r.text()).splitlines()
    assert 'lasso_cluster_connected{exchange="nats",node_id="us-east-1"} 1.0' in text
    assert (
        'lasso_cluster_nodes{node_id="us-east-1",region="eu-west-1",status="responding"} 1.0'
        in text
    )


async def _count_is(app: Any, n: int) -> bool:
    return await responding(app) == n


async def test_instances_of_one_region_aggregate_at_region_level(
    nats_server: NatsServer, cluster_node: Any, sim_fleet: Any
) -> None:
    """Two processes with the same LASSO_NODE_ID are two members but one region."""
    fleet = await sim_fleet(["alpha", "bravo"])
    a = await cluster_node("eu-west-1", nats_server.url, fleet, instance_id="pod-a")
    b = await cluster_node("eu-west-1", nats_server.url, fleet, instance_id="pod-b")
    c = await cluster_node("us-east-1", nats_server.url, fleet)
    await eventually(lambda: _count_is(c, 3), timeout=10, message="three members")
    await traffic(a, 5)
    await traffic(b, 3)
    await eventually(lambda: aggregate_matches([a, b, c], c), timeout=10, message="aggregate")
    _, doc = await get(f"{c.base_url}/api/cluster")
    assert doc["cluster"]["regions"] == ["eu-west-1", "us-east-1"]
    assert sorted(n["instance"] for n in doc["nodes"] if n["node_id"] == "eu-west-1") == [
        "pod-a",
        "pod-b",
    ]
    _, drill = await get(f"{c.base_url}/api/metrics/ethereum?node=eu-west-1")
    assert drill["coverage"]["instances"] == 2
    assert drill["chain_performance"]["total_calls"] == 8
    _, one = await get(f"{c.base_url}/api/metrics/ethereum?node=eu-west-1/pod-b")
    assert one["chain_performance"]["total_calls"] == 3


async def test_a_stopped_node_leaves_the_view_at_once(
    nats_server: NatsServer, cluster_node: Any, sim_fleet: Any
) -> None:
    """app.stop() sends a leave notice first: the others drop the node within a heartbeat
    and stay healthy (a departure is not an outage)."""
    fleet = await sim_fleet(["alpha"])
    apps = [await cluster_node(r, nats_server.url, fleet) for r in REGIONS]
    await eventually(lambda: _count_is(apps[0], 3), timeout=10, message="three nodes")
    t0 = time.monotonic()
    await apps[2].stop(drain_timeout=0.5)

    async def gone() -> bool:
        _, doc = await get(f"{apps[0].base_url}/api/cluster")
        return all(n["node_id"] != "ap-southeast-1" for n in doc["nodes"])

    await eventually(gone, timeout=INTERVAL + 1, interval=0.01, message="dropped")
    assert time.monotonic() - t0 <= INTERVAL * UNIT + 0.5
    _, health = await get(f"{apps[0].base_url}/api/health")
    assert health["cluster"]["status"] == "healthy"
    assert health["cluster"]["nodes_responding"] == health["cluster"]["nodes_total"] == 2


async def test_the_leave_notice_goes_out_before_the_drain(
    nats_server: NatsServer, cluster_node: Any, sim_fleet: Any
) -> None:
    """A node draining a slow request has already left the others' view."""
    from lasso.sim.behavior import Behavior

    fleet = await sim_fleet({"stuck": Behavior(hang=True)})
    a = await cluster_node("us-east-1", nats_server.url, fleet)
    b = await cluster_node("eu-west-1", nats_server.url, fleet)
    await eventually(lambda: _count_is(a, 2), timeout=10, message="two nodes")
    body = orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_getBalance",
                         "params": ["0x" + "00" * 20, "latest"]})  # fmt: skip
    session = aiohttp.ClientSession()
    pending = asyncio.create_task(session.post(f"{b.base_url}/rpc/ethereum", data=body))
    try:
        await eventually(lambda: b.server.inflight == 1, message="request in flight")
        stopping = asyncio.create_task(b.stop(drain_timeout=3.0))
        await eventually(lambda: _count_is(a, 1), timeout=INTERVAL + 1, interval=0.01)
        assert b.server.inflight == 1  # still draining
        await stopping
    finally:
        pending.cancel()
        await session.close()


def _serve(
    tmp_path: Path, url: str, node_id: str, instance: str | None, interval: float = INTERVAL
) -> Any:
    """A real `lasso serve` subprocess in the cluster at ``url``."""
    env = {
        **os.environ,
        "LASSO_CLUSTER_URL": url,
        "LASSO_CLUSTER_INTERVAL_MS": str(int(interval * 1000)),
        "LASSO_NODE_ID": node_id,
        "PYTHONPATH": str(ROOT / "src"),
    }
    env.pop("LASSO_INSTANCE_ID", None)
    if instance is not None:
        env["LASSO_INSTANCE_ID"] = instance
    cmd = [sys.executable, "-m", "lasso", "serve", "--profiles", str(tmp_path)]
    cmd += ["--port", str(free_port()), "--log-level", "warning"]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def test_rolling_restart_with_the_same_node_id_never_degrades(
    nats_server: NatsServer, cluster_node: Any, sim_fleet: Any, tmp_path: Path
) -> None:
    """SIGTERM then a new process with the same node id, as Kubernetes does (a new pod
    name, then the same name as a StatefulSet keeps): the old instance disappears at once,
    the new one joins, and the cluster is never degraded nor anyone unresponsive."""
    # A 1 s heartbeat (3 s before a member counts as silent): on a loaded machine a 0.25 s
    # one can miss a beat for reasons that have nothing to do with leaving.
    interval = 1.0
    fleet = await sim_fleet(["alpha"])
    app = await cluster_node("us-east-1", nats_server.url, fleet, cluster_interval_s=interval)
    (tmp_path / "public.yml").write_text(profile_yaml(fleet_chain_yaml(fleet)))
    seen: list[tuple[str, list[tuple[str, str]]]] = []

    async def members() -> list[tuple[str, str]]:
        _, doc = await get(f"{app.base_url}/api/cluster")
        _, health = await get(f"{app.base_url}/api/health")
        found = [(n["instance"], n["status"]) for n in doc["nodes"] if n["node_id"] == "eu-west-1"]
        seen.append((health["cluster"]["status"], found))
        return found

    await eventually(lambda: _count_is(app, 1), timeout=10, message="node up")
    await eventually(
        lambda: _health_is(app, "healthy"), timeout=10, message="exchange round trip works"
    )
    procs = []
    try:
        for instance, replaces in (("pod-1", None), ("pod-2", "pod-1"), ("pod-2", "pod-2")):
            if replaces is not None:  # SIGTERM the running one, then start its successor
                old = procs[-1]
                old.send_signal(signal.SIGTERM)
                assert await asyncio.get_running_loop().run_in_executor(None, old.wait, 20) == 0
                # Gone already: the notice went out before the process exited.
                await eventually(lambda: _members_are(members, []), timeout=2, interval=0.01)
            procs.append(_serve(tmp_path, nats_server.url, "eu-west-1", instance, interval))
            await eventually(
                lambda i=instance: _members_are(members, [(i, "responding")]),
                timeout=20,
                interval=0.05,
                message=f"{instance} joined",
            )
        text = await _metrics(app)
        assert (
            'lasso_cluster_nodes{node_id="us-east-1",region="eu-west-1",status="unresponsive"} 0.0'
            in text
        )
        assert {status for status, _ in seen} == {"healthy"}
        assert all(s == "responding" for _, found in seen for _, s in found)
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


async def _health_is(app: Any, status: str) -> bool:
    return bool((await get(f"{app.base_url}/api/health"))[1]["cluster"]["status"] == status)


async def _members_are(members: Any, want: list[tuple[str, str]]) -> bool:
    return bool(await members() == want)


async def _metrics(app: Any) -> str:
    async with aiohttp.ClientSession() as s, s.get(f"{app.base_url}/metrics") as r:
        return await r.text()


async def test_a_killed_process_goes_silent_and_degrades_the_cluster(
    nats_server: NatsServer, cluster_node: Any, sim_fleet: Any, tmp_path: Path
) -> None:
    """A SIGKILLed `lasso serve` is marked unresponsive after 3 missed heartbeats."""
    fleet = await sim_fleet(["alpha"])
    app = await cluster_node("us-east-1", nats_server.url, fleet)
    (tmp_path / "public.yml").write_text(profile_yaml(fleet_chain_yaml(fleet)))
    env = {
        **os.environ,
        "LASSO_CLUSTER_URL": nats_server.url,
        "LASSO_CLUSTER_INTERVAL_MS": str(int(INTERVAL * 1000)),
        "LASSO_NODE_ID": "sa-east-1",
        "PYTHONPATH": str(ROOT / "src"),
    }
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lasso",
            "serve",
            "--profiles",
            str(tmp_path),
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        await eventually(lambda: _count_is(app, 2), timeout=20, message="subprocess joined")
        t0 = time.monotonic()
        proc.send_signal(signal.SIGKILL)

        async def silent() -> Any:
            _, doc = await get(f"{app.base_url}/api/cluster")
            node = next(n for n in doc["nodes"] if n["node_id"] == "sa-east-1")
            return node["status"] == "unresponsive" and node

        node = await eventually(silent, timeout=3 * INTERVAL + 1, interval=0.01)
        assert time.monotonic() - t0 <= 3 * INTERVAL * UNIT + 0.5
        assert node["reason"] == "silent"
        _, health = await get(f"{app.base_url}/api/health")
        assert health["cluster"]["status"] == "degraded"  # 1 of 2 connected responds
        assert health["cluster"]["nodes_connected"] == 2
    finally:
        proc.kill()
        proc.wait()


async def test_nats_outage_keeps_routing_and_the_view_recovers(
    nats_server: NatsServer, cluster_node: Any, sim_fleet: Any
) -> None:
    """NATS down: requests still succeed, the view turns local and degraded, then recovers."""
    fleet = await sim_fleet(["alpha", "bravo"])
    apps = [await cluster_node(r, nats_server.url, fleet) for r in REGIONS[:2]]
    await eventually(lambda: _count_is(apps[0], 2), timeout=10, message="two nodes")
    await traffic(apps[0], 4)
    await traffic(apps[1], 6)
    await eventually(lambda: aggregate_matches(apps, apps[0]), timeout=10, message="agg")

    nats_server.stop()

    async def degraded(app: Any) -> bool:
        _, health = await get(f"{app.base_url}/api/health")
        return (
            health["cluster"]["status"] == "degraded"
            and not health["cluster"]["exchange_connected"]
        )

    for app in apps:
        await eventually(lambda app=app: degraded(app), timeout=5, message="degraded")
    # Routing is untouched: every request still succeeds on every node.
    await traffic(apps[0], 10)
    await traffic(apps[1], 10)
    _, local = await get(f"{apps[0].base_url}/api/metrics/ethereum?scope=cluster")
    assert local["coverage"]["instances"] == 1  # local data only
    assert local["chain_performance"]["total_calls"] == 14

    await nats_server.start()  # same port
    for app in apps:
        await eventually(lambda app=app: _count_is(app, 2), timeout=15, message="recovered")
    await eventually(lambda: aggregate_matches(apps, apps[1]), timeout=10, message="agg back")
    _, health = await get(f"{apps[1].base_url}/api/health")
    assert health["cluster"]["status"] == "healthy"
    assert health["cluster"]["exchange_connected"] is True


async def test_bad_messages_on_the_subject_are_dropped(
    nats_server: NatsServer, cluster_node: Any, sim_fleet: Any
) -> None:
    """Garbage and foreign snapshots on the subject are counted and ignored."""
    from nats.aio.client import Client

    from lasso.cluster.transport import SUBJECT

    fleet = await sim_fleet(["alpha"])
    app = await cluster_node("us-east-1", nats_server.url, fleet)
    await eventually(lambda: _healthy(app), message="subscribed")
    nc = Client()
    await nc.connect(nats_server.url)
    try:
        for payload in (b"not json", b"[]", b'{"v":1,"type":"snapshot"}', b'{"v":99}'):
            await nc.publish(SUBJECT, payload)
        await nc.flush()
        await eventually(lambda: app.cluster.invalid >= 3, message="invalid counted")
    finally:
        await nc.close()
    _, doc = await get(f"{app.base_url}/api/cluster")
    assert [n["node_id"] for n in doc["nodes"]] == ["us-east-1"]
    await eventually(lambda: _healthy(app), message="healthy despite the garbage")


async def _healthy(app: Any) -> bool:
    status, health = await get(f"{app.base_url}/api/health")
    return status == 200 and health["cluster"]["status"] == "healthy"


async def test_unreachable_nats_never_blocks_startup(cluster_node: Any, sim_fleet: Any) -> None:
    """With NATS unreachable the node serves at once, degraded, and joins when NATS starts."""
    fleet = await sim_fleet(["alpha"])
    server = NatsServer()  # not started yet
    t0 = time.monotonic()
    app = await cluster_node("us-east-1", server.url, fleet)
    assert time.monotonic() - t0 < 2 * UNIT
    await traffic(app, 3)
    _, health = await get(f"{app.base_url}/api/health")
    assert health["cluster"]["enabled"] and health["cluster"]["status"] == "degraded"
    await server.start()
    try:
        await eventually(lambda: _healthy(app), timeout=15, message="joined once NATS is up")
    finally:
        server.stop()


async def test_invalid_cluster_url_is_reported_not_fatal(cluster_node: Any, sim_fleet: Any) -> None:
    """A malformed LASSO_CLUSTER_URL leaves routing up and names the problem in health."""
    fleet = await sim_fleet(["alpha"])
    app = await cluster_node("us-east-1", "http://127.0.0.1:1", fleet)
    await traffic(app, 2)

    async def reported() -> Any:
        _, doc = await get(f"{app.base_url}/api/health")
        return "expected nats://" in doc["cluster"].get("exchange_error", "") and doc

    doc = await eventually(reported, message="error reported")
    assert doc["cluster"]["status"] == "degraded"
