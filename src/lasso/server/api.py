"""Operations endpoints (CONTRACT §5): health, chains, metrics, cluster, Prometheus.

These are low-traffic GET routes behind a small router; none of them calls an upstream.
"""

from __future__ import annotations

import os
from time import monotonic
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import orjson

from lasso.net.http_server import HttpRequest, Response

if TYPE_CHECKING:
    from lasso.server.app import LassoApp

__all__ = ["route", "not_found"]

_PROM_TYPE = b"text/plain; version=0.0.4; charset=utf-8"


def _json(status: int, doc: Any) -> Response:
    return Response(status, orjson.dumps(doc, option=orjson.OPT_NON_STR_KEYS))


def not_found(req: HttpRequest) -> Response:
    return _json(404, {"error": "Not found", "path": req.path})


def _query(req: HttpRequest) -> dict[str, str]:
    if not req.query:
        return {}
    return {k: v[0] for k, v in parse_qs(req.query).items()}


def route(app: LassoApp, req: HttpRequest) -> Response:
    path = req.path.rstrip("/") or "/"
    if path == "/api/health":
        return _json(200, health(app))
    if path == "/metrics":
        return Response(200, app.metrics.render(app), content_type=_PROM_TYPE)
    if path == "/api/chains":
        return chains(app, _query(req))
    if path.startswith("/api/metrics/"):
        return chain_metrics(app, path[len("/api/metrics/") :], _query(req))
    if path == "/api/cluster":
        return _json(200, cluster(app))
    if path == "/api/profiles":
        return _json(200, profiles(app))
    if path == "/api/cache":
        return cache(app, _query(req))
    if path == "/":
        return Response(302, b"", headers=[("Location", "/dashboard")])
    if path == "/api/stream" or path == "/dashboard" or path.startswith("/dashboard/"):
        from lasso.dashboard import routes as dashboard  # the page, assets, live stream

        return dashboard.route(app, req, path)
    return not_found(req)


def cluster_summary(app: LassoApp) -> dict[str, Any]:
    view = getattr(app, "cluster_view", None)
    if view is None:
        return {
            "enabled": False,
            "status": "standalone",
            "nodes_total": 1,
            "nodes_responding": 1,
            "nodes_connected": 1,
            "regions": [app.node_id],
        }
    summary: dict[str, Any] = view.summary()
    return summary


def health(app: LassoApp) -> dict[str, Any]:
    return {
        "status": "healthy",
        "node_id": app.node_id,
        "version": app.version,
        "uptime_seconds": int(app.uptime()),
        "timestamp": _iso_now(),
        "cluster": cluster_summary(app),
        "worker": app.settings.worker_index,  # --workers N: which process answered
        "pid": os.getpid(),
    }


def cluster(app: LassoApp) -> dict[str, Any]:
    view = getattr(app, "cluster_view", None)
    if view is not None:
        nodes: list[dict[str, Any]] = view.nodes()
    else:
        nodes = [
            {
                "node_id": app.node_id,
                "region": app.node_id,
                "status": "responding",
                "last_seen_s": 0.0,
                "self": True,
            }
        ]
    return {"node_id": app.node_id, "cluster": cluster_summary(app), "nodes": nodes}


def cache(app: LassoApp, q: dict[str, str]) -> Response:
    """The response cache of a profile (``?profile=``): per chain and method, hits,
    misses, coalesced requests, upstream calls saved, memory (the dashboard's panel)."""
    from lasso.server.cache import report

    prof = _profile_or_error(app, q)
    if isinstance(prof, Response):
        return prof
    return _json(200, report.view(app.cache, prof.config.slug))


def profiles(app: LassoApp) -> dict[str, Any]:
    return {
        "profiles": [
            {"slug": slug, "name": p.config.name, "chains": sorted(p.chains)}
            for slug, p in app.runtime.profiles.items()
        ]
    }


def _profile_or_error(app: LassoApp, q: dict[str, str]) -> Any:
    prof = app.runtime.profile(q.get("profile"))
    if prof is None:
        return _json(
            404,
            {
                "error": "Profile not found",
                "profile": q.get("profile"),
                "available_profiles": sorted(app.runtime.profiles),
            },
        )
    return prof


def chains(app: LassoApp, q: dict[str, str]) -> Response:
    prof = _profile_or_error(app, q)
    if isinstance(prof, Response):
        return prof
    now = monotonic()
    out = []
    for key, rt in prof.chains.items():
        snap = rt.router.snapshot(now)
        out.append(
            {
                "chain": key,
                "chain_id": str(rt.config.chain_id),
                "name": rt.config.name,
                "aliases": list(rt.config.aliases),
                "supported": True,
                "default_strategy": rt.config.default_strategy,
                "block_height": snap.get("consensus_height"),
                "providers": snap.get("providers", []),
                "endpoints": {
                    "http": f"/rpc/profile/{rt.profile}/{key}",
                    "ws": f"/ws/rpc/profile/{rt.profile}/{key}",
                },
            }
        )
    return _json(200, {"profile": prof.config.slug, "node_id": app.node_id, "chains": out})


def chain_metrics(app: LassoApp, ident: str, q: dict[str, str]) -> Response:
    prof = _profile_or_error(app, q)
    if isinstance(prof, Response):
        return prof
    rt = prof.resolve(ident)
    if rt is None:
        return _json(
            404,
            {"error": "Chain not found", "chain": ident, "available_chains": sorted(prof.chains)},
        )
    scope = q.get("scope", "node")
    node = q.get("node")
    view = getattr(app, "cluster_view", None)
    if (scope == "cluster" or (node and node != app.node_id)) and view is not None:
        doc: dict[str, Any] = view.chain_metrics(prof.config.slug, rt.key, node=node)
        return _json(404 if "error" in doc else 200, doc)
    if node and node != app.node_id:
        return _json(
            404, {"error": "Node not found", "node": node, "available_nodes": [app.node_id]}
        )
    return _json(200, local_chain_metrics(app, rt))


def local_chain_metrics(app: LassoApp, rt: Any) -> dict[str, Any]:
    now = monotonic()
    snap = rt.router.snapshot(now)
    requests = app.metrics.chain_summary(rt.profile, rt.key)
    return {
        "chain": rt.key,
        "chain_id": str(rt.config.chain_id),
        "profile": rt.profile,
        "node_id": app.node_id,
        "scope": "node",
        "timestamp": _iso_now(),
        "consensus_height": snap.get("consensus_height"),
        "block_time_ms": snap.get("block_time_ms"),
        "chain_performance": requests,
        "providers": snap.get("providers", []),
    }


def _iso_now() -> str:
    import datetime

    return (
        datetime.datetime.now(datetime.UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )
