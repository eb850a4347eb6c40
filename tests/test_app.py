"""The composition root (lasso.app): one node's components, built once and wired together."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import pytest

import lasso.app
from lasso.app import LassoApp, Settings
from lasso.cluster.transport import MemoryHub
from lasso.kernel.filters import Binding
from lasso.net.http_server import HttpRequest
from lasso.profiles import parse_profile
from lasso.server.node import Standalone
from lasso.server.route import ResolvedRoute

PROFILE = """---
name: T
slug: {slug}
---
chains:
  ethereum:
    chain_id: 1
    providers:
      - id: alpha
        url: http://127.0.0.1:1
"""


def _profiles(slug: str = "public") -> dict[str, Any]:
    prof = parse_profile(PROFILE.format(slug=slug), f"{slug}.yml", dict(os.environ))
    return {prof.slug: prof}


@pytest.fixture
async def apps() -> AsyncIterator[list[LassoApp]]:
    made: list[LassoApp] = []
    yield made
    for app in made:
        await app.stop(drain_timeout=0.5)


def test_exports() -> None:
    """__all__ is the app, its settings and the event-loop installer."""
    assert sorted(lasso.app.__all__) == ["LassoApp", "Settings", "install_uvloop"]


async def test_components_share_the_nodes_dependencies(apps: list[LassoApp]) -> None:
    """Every component gets the same identity, metrics, events and runtime callable."""
    app = LassoApp(_profiles(), Settings(node_id="n1", probes=True))
    apps.append(app)
    assert app.node.node_id == "n1" and app.node.version == lasso.__version__
    assert app.metrics.node is app.node
    assert app.rpc.metrics is app.metrics and app.ws.metrics is app.metrics
    assert app.ws.rpc is app.rpc and app.ws.routes is app.routes is app.rpc.routes
    assert app.ws.subscriptions is app.subscriptions
    assert app.api.metrics is app.metrics and app.api.node is app.node
    hub = app.dashboard.hub
    assert hub.events is app.events and hub.metrics is app.metrics and hub.node is app.node
    assert app.prober is not None and app.prober.runtime() is app.runtime
    assert app.subscriptions.runtime() is app.runtime


async def test_a_lone_node_has_the_standalone_cluster_status(apps: list[LassoApp]) -> None:
    """No exchange and no cluster URL: no cluster node, the null status everywhere."""
    app = LassoApp(_profiles(), Settings(node_id="solo", probes=False))
    apps.append(app)
    assert app.cluster is None and app.prober is None
    assert isinstance(app.cluster_status, Standalone)
    assert app.api.cluster_status is app.cluster_status
    assert app.dashboard.hub.cluster_status is app.cluster_status
    assert app.api.health()["cluster"]["status"] == "standalone"


async def test_an_exchange_makes_a_clustered_node(apps: list[LassoApp]) -> None:
    """With an exchange the cluster view is the status the API and dashboard read."""
    settings = Settings(node_id="eu", probes=False, cluster_interval_s=0.5, instance_id="i1")
    app = LassoApp(_profiles(), settings, cluster_exchange=MemoryHub().exchange())
    apps.append(app)
    assert app.cluster is not None
    assert app.cluster.interval_s == 0.5 and app.cluster.instance == "i1"
    assert app.cluster_status is app.cluster.view
    assert app.api.cluster_status is app.cluster.view
    assert app.api.health()["cluster"]["enabled"] is True


async def test_reload_reaches_every_component(apps: list[LassoApp]) -> None:
    """After a reload the resolver, the API and the metrics read the new runtime."""
    app = LassoApp(_profiles("public"), Settings(node_id="n", probes=False))
    apps.append(app)
    old = app.runtime
    await app.reload({**_profiles("public"), **_profiles("team")})
    assert app.runtime is not old and app.runtime.generation == 2
    req = HttpRequest("POST", "/rpc/profile/team/ethereum", "", {}, b"", "127.0.0.1:1", True)
    route = app.routes.resolve(req)
    assert isinstance(route, ResolvedRoute) and route.rt.profile == "team"
    assert [p["slug"] for p in app.api.profiles()["profiles"]] == ["public", "team"]
    assert 'profile="team"' in app.metrics.render().decode()


async def test_reload_keeps_served_heads_and_filters(apps: list[LassoApp]) -> None:
    """A reload (SIGHUP) keeps what clients were told: the served head and the filters of
    every chain that stays, and their metrics; a chain that goes takes its state along."""
    app = LassoApp(_profiles("public"), Settings(node_id="n", probes=False))
    apps.append(app)
    old = app.runtime.profile("public").resolve("ethereum")  # type: ignore[union-attr]
    assert old is not None
    old.router.head.serve_head(100)
    old.consistency.filters.bind("0xab", Binding("alpha", "0x1", "eth_newBlockFilter"), 0.0)
    await app.reload({**_profiles("public"), **_profiles("team")})
    new = app.runtime.profile("public").resolve("ethereum")  # type: ignore[union-attr]
    assert new is not None and new is not old
    assert new.router.head.head == 100 and new.consistency.filters.lookup("0xab", 1.0)
    text = app.metrics.render().decode()
    assert (
        'lasso_served_head{chain="ethereum",node_id="n",profile="public",tag="latest"} 100.0'
        in text
    )
    await app.reload(_profiles("team"))
    assert repr(app.consistency) == "<NodeConsistency chains=1>"


def test_nothing_below_the_entry_points_imports_the_app() -> None:
    """The composition root is a leaf of the import graph: only cli, demo and
    demo_cluster (and tests) import it; lint-imports checks every edge, this the obvious."""
    import grimp

    graph = grimp.build_graph("lasso")
    importers = graph.find_modules_that_directly_import("lasso.app")
    assert importers <= {"lasso.cli", "lasso.demo", "lasso.demo_cluster"}
    assert "lasso.cli" in importers
