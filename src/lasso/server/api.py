"""Operations endpoints (CONTRACT §5): health, chains, metrics, cluster, Prometheus.

These are low-traffic GET routes behind a small router; none of them calls an upstream.
The dashboard's paths (``/dashboard...``, ``/api/stream``) are answered by the ``pages``
handler the composition root mounts (:mod:`lasso.dashboard.routes`); this module does not
know the dashboard.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from time import monotonic
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import orjson

from lasso.net.http_messages import rpc_error
from lasso.net.http_server import HttpRequest, Response

if TYPE_CHECKING:
    from lasso.server.metrics import Metrics
    from lasso.server.node import ClusterStatus, NodeInfo
    from lasso.server.runtime import ChainRuntime, ProfileRuntime, Runtime

__all__ = [
    "OpsApi",
    "Pages",
    "not_found",
    "is_rpc_path",
    "is_ws_path",
    "rpc_method_answer",
    "wrong_method",
    "API_ALLOW",
    "RPC_ALLOW",
    "WS_ALLOW",
]

_PROM_TYPE = b"text/plain; version=0.0.4; charset=utf-8"

Pages = Callable[[HttpRequest, str], Response]
"""A handler for the dashboard's paths: the request and its path without trailing slash."""


def _json(status: int, doc: Any) -> Response:
    return Response(status, orjson.dumps(doc, option=orjson.OPT_NON_STR_KEYS))


def not_found(req: HttpRequest) -> Response:
    return _json(404, {"error": "Not found", "path": req.path})


RPC_ALLOW = "POST, OPTIONS"
"""What ``/rpc`` and ``/rpc/...`` take: JSON-RPC is POSTed (OPTIONS: CORS preflight)."""
WS_ALLOW = "GET, OPTIONS"
"""What ``/ws/rpc/...`` takes: a GET with ``Upgrade: websocket``."""
API_ALLOW = "GET, HEAD, OPTIONS"
"""What the operations endpoints and the dashboard take."""
_SCOPES = ("node", "cluster")


def is_rpc_path(path: str) -> bool:
    """``/rpc`` or under it: the JSON-RPC over HTTP endpoints."""
    return path.startswith("/rpc/") or path == "/rpc"


def is_ws_path(path: str) -> bool:
    """``/ws/rpc`` or under it: the JSON-RPC over WebSocket endpoints."""
    return path.startswith("/ws/rpc/") or path == "/ws/rpc"


def wrong_method(req: HttpRequest, allow: str, use: str) -> Response:
    """405 with ``Allow`` and a JSON-RPC error naming the method to ``use`` (the method
    is an HTTP token llhttp accepted: upper-case letters and dashes, no escaping)."""
    body = rpc_error(-32600, f"Invalid Request: HTTP method {req.method} not allowed ({use})")
    return Response(405, body, headers=[("Allow", allow)])


def rpc_method_answer(req: HttpRequest) -> Response:
    """A request to a JSON-RPC path that is not a POST (or an upgrade): 405 with
    ``Allow: POST, OPTIONS`` on ``/rpc``; on ``/ws/rpc`` a plain GET is 426 Upgrade
    Required (``Upgrade: websocket``), any other method 405 with ``Allow: GET, OPTIONS``."""
    if is_rpc_path(req.path):
        return wrong_method(req, RPC_ALLOW, "use POST")
    if req.method == "GET" or req.method == "HEAD":
        body = rpc_error(
            -32600, "Invalid Request: a WebSocket endpoint (GET with Upgrade: websocket)"
        )
        return Response(426, body, headers=[("Upgrade", "websocket")])
    return wrong_method(req, WS_ALLOW, "use GET with Upgrade: websocket")


def _bad_value(name: str, value: str, valid: tuple[str, ...]) -> Response:
    return _json(
        400,
        {
            "error": "Invalid parameter",
            "message": f"Invalid {name} {value[:64]!r}: use one of {', '.join(valid)}",
            "parameter": name,
            "valid_values": list(valid),
        },
    )


def _query(req: HttpRequest) -> dict[str, str]:
    if not req.query:
        return {}
    return {k: v[0] for k, v in parse_qs(req.query).items()}


class OpsApi:
    """The ``GET``/``HEAD`` routes of a node.

    Args:
        node: this node's identity.
        runtime: the runtime serving now (reloads swap it).
        metrics: the node's counters and Prometheus exposition.
        cluster: the cluster status (:class:`~lasso.server.node.Standalone` alone).
        pages: the dashboard's handler; without it those paths are 404.
        clients: a profile slug to its per-client view (``/api/clients``,
            :meth:`lasso.auth.ClientAccess.view`); without it that path is 404.
        cache: a profile slug to its response cache view (``/api/cache``,
            :func:`lasso.server.cache.report.view`); without it that path is 404.
    """

    def __init__(
        self,
        *,
        node: NodeInfo,
        runtime: Callable[[], Runtime],
        metrics: Metrics,
        cluster: ClusterStatus,
        pages: Pages | None = None,
        clients: Callable[[str], dict[str, Any]] | None = None,
        cache: Callable[[str], dict[str, Any]] | None = None,
    ) -> None:
        self.node = node
        self.runtime = runtime
        self.metrics = metrics
        self.cluster_status = cluster
        self.pages = pages
        self.client_view = clients
        self.cache_view = cache

    def __repr__(self) -> str:
        return f"<OpsApi node={self.node.node_id} pages={self.pages is not None}>"

    def route(self, req: HttpRequest) -> Response:
        """Answer a ``GET`` or ``HEAD``."""
        path = req.path.rstrip("/") or "/"
        if is_rpc_path(path) or is_ws_path(path):
            return rpc_method_answer(req)
        if path == "/api/health":
            return _json(200, self.health())
        if path == "/metrics":
            return Response(200, self.metrics.render(), content_type=_PROM_TYPE)
        if path == "/api/chains":
            return self.chains(_query(req))
        if path.startswith("/api/metrics/"):
            return self.chain_metrics(path[len("/api/metrics/") :], _query(req))
        if path == "/api/cluster":
            return _json(200, self.cluster())
        if path == "/api/profiles":
            return _json(200, self.profiles())
        if path == "/api/clients" and self.client_view is not None:
            return self.clients(_query(req))
        if path == "/api/cache" and self.cache_view is not None:
            return self.cache(_query(req))
        if path == "/":
            return Response(302, b"", headers=[("Location", "/dashboard")])
        if self.pages is not None and (
            path == "/api/stream" or path == "/dashboard" or path.startswith("/dashboard/")
        ):
            return self.pages(req, path)
        return not_found(req)

    def serves(self, path: str) -> bool:
        """Whether ``path`` is one of the ``GET`` routes (a POST to it is 405, not 404)."""
        path = path.rstrip("/") or "/"
        if path in ("/", "/api/health", "/metrics", "/api/chains", "/api/cluster"):
            return True
        if path == "/api/profiles" or path.startswith("/api/metrics/"):
            return True
        if path == "/api/clients" and self.client_view is not None:
            return True
        if path == "/api/cache" and self.cache_view is not None:
            return True
        return self.pages is not None and (
            path == "/api/stream" or path == "/dashboard" or path.startswith("/dashboard/")
        )

    def other_method(self, req: HttpRequest) -> Response:
        """Any request that is neither a ``POST`` to ``/rpc/...``, a ``GET``/``HEAD`` nor
        ``OPTIONS``: the JSON-RPC paths answer :func:`rpc_method_answer`; a route of this
        API 405 with ``Allow: GET, HEAD, OPTIONS``; any other path 404."""
        if is_rpc_path(req.path) or is_ws_path(req.path):
            return rpc_method_answer(req)
        if not self.serves(req.path):
            return not_found(req)
        doc = {"error": "Method not allowed", "method": req.method, "allowed": API_ALLOW}
        return Response(405, orjson.dumps(doc), headers=[("Allow", API_ALLOW)])

    def health(self) -> dict[str, Any]:
        node = self.node
        return {
            "status": "healthy",
            "node_id": node.node_id,
            "version": node.version,
            "uptime_seconds": int(node.uptime()),
            "timestamp": _iso_now(),
            "cluster": self.cluster_status.summary(),
            "worker": node.worker_index,  # --workers N: which process answered
            "pid": os.getpid(),
        }

    def cluster(self) -> dict[str, Any]:
        status = self.cluster_status
        return {"node_id": self.node.node_id, "cluster": status.summary(), "nodes": status.nodes()}

    def profiles(self) -> dict[str, Any]:
        return {
            "profiles": [
                {"slug": slug, "name": p.config.name, "chains": sorted(p.chains)}
                for slug, p in self.runtime().profiles.items()
            ]
        }

    def clients(self, q: dict[str, str]) -> Response:
        """Per-client counts of a profile (``?profile=``): key ids only, never a secret."""
        prof = self._profile_or_error(q)
        if isinstance(prof, Response):
            return prof
        assert self.client_view is not None
        return _json(200, self.client_view(prof.config.slug))

    def cache(self, q: dict[str, str]) -> Response:
        """The response cache of a profile (``?profile=``): per chain and method, hits,
        misses, coalesced requests, upstream calls saved, memory (the dashboard's panel)."""
        prof = self._profile_or_error(q)
        if isinstance(prof, Response):
            return prof
        assert self.cache_view is not None
        return _json(200, self.cache_view(prof.config.slug))

    def _profile_or_error(self, q: dict[str, str]) -> ProfileRuntime | Response:
        runtime = self.runtime()
        prof = runtime.profile(q.get("profile"))
        if prof is None:
            return _json(
                404,
                {
                    "error": "Profile not found",
                    "message": runtime.profile_not_found(q.get("profile")),
                    "profile": q.get("profile"),
                    "available_profiles": sorted(runtime.profiles),
                },
            )
        return prof

    def chains(self, q: dict[str, str]) -> Response:
        prof = self._profile_or_error(q)
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
        doc = {"profile": prof.config.slug, "node_id": self.node.node_id, "chains": out}
        return _json(200, doc)

    def chain_metrics(self, ident: str, q: dict[str, str]) -> Response:
        prof = self._profile_or_error(q)
        if isinstance(prof, Response):
            return prof
        rt = prof.resolve(ident)
        if rt is None:
            return _json(
                404,
                {
                    "error": "Chain not found",
                    "chain": ident,
                    "available_chains": sorted(prof.chains),
                },
            )
        scope = q.get("scope", "node")
        if scope not in _SCOPES:
            return _bad_value("scope", scope, _SCOPES)
        node = q.get("node")
        me = self.node.node_id
        if scope == "cluster" or (node and node != me):
            doc = self.cluster_status.chain_metrics(prof.config.slug, rt.key, node=node)
            if doc is not None:
                return _json(404 if "error" in doc else 200, doc)
        if node and node != me:
            return _json(404, {"error": "Node not found", "node": node, "available_nodes": [me]})
        return _json(200, self.local_chain_metrics(rt))

    def local_chain_metrics(self, rt: ChainRuntime) -> dict[str, Any]:
        now = monotonic()
        snap = rt.router.snapshot(now)
        requests = self.metrics.chain_summary(rt.profile, rt.key)
        return {
            "chain": rt.key,
            "chain_id": str(rt.config.chain_id),
            "profile": rt.profile,
            "node_id": self.node.node_id,
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
