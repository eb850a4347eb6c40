"""HTTP routes of the dashboard: the page, its static assets and the live stream.

* ``GET /dashboard`` and ``GET /dashboard/<profile>``: the page (``no-cache``; the
  assets it names carry a content hash, ``?v=<hash>``, so they can be cached for a year).
* ``GET /dashboard/static/<file>``: assets with their content type, an ``ETag`` and
  ``If-None-Match`` revalidation (``304``); immutable caching when the ``v`` query matches
  the current content.
* ``GET /api/stream?profile=<slug>[&node=<node_id>]``: server-sent events
  (:mod:`lasso.dashboard.hub`).

Unknown profiles, nodes and files get a clear ``404`` (JSON for the API, a short HTML page
for the dashboard URL); nothing here is on the JSON-RPC path.
"""

from __future__ import annotations

import hashlib
import html
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any
from urllib.parse import parse_qs

import orjson

from lasso.dashboard.hub import DashboardHub, TooManyViewers, UnknownNode, UnknownProfile
from lasso.net.http_server import HttpRequest, Response, StreamingResponse

__all__ = ["Dashboard", "StaticFiles"]

CONTENT_TYPES = {
    ".html": b"text/html; charset=utf-8",
    ".css": b"text/css; charset=utf-8",
    ".js": b"text/javascript; charset=utf-8",
    ".svg": b"image/svg+xml",
    ".png": b"image/png",
    ".ico": b"image/x-icon",
    ".json": b"application/json",
    ".txt": b"text/plain; charset=utf-8",
}
EVENT_STREAM = b"text/event-stream; charset=utf-8"
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; frame-ancestors 'none'; form-action 'none'"
)
HTML_HEADERS = [
    ("Content-Security-Policy", CSP),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", REVALIDATE),
]
INDEX = "index.html"


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    content_type: bytes
    etag: str
    version: str


class StaticFiles:
    """The page's files, read once from the package (``lasso/dashboard/static``).

    Only files found there are served, by exact relative name: there is no path to
    traverse. ``index.html`` references each asset as ``/dashboard/static/<name>?v=dev``;
    ``dev`` is replaced by the asset's content hash.
    """

    def __init__(self, root: Traversable | None = None) -> None:
        root = root if root is not None else resources.files("lasso.dashboard") / "static"
        self.assets: dict[str, Asset] = {}
        for name, body in _walk(root, ""):
            ext = name[name.rfind(".") :] if "." in name else ""
            ctype = CONTENT_TYPES.get(ext)
            if ctype is None:
                continue
            self.assets[name] = _asset(body, ctype)
        index = self.assets.get(INDEX)
        if index is not None:
            text = index.body
            for name, asset in self.assets.items():
                ref = f"/dashboard/static/{name}?v=dev".encode()
                text = text.replace(ref, f"/dashboard/static/{name}?v={asset.version}".encode())
            self.assets[INDEX] = _asset(text, index.content_type)

    def get(self, name: str) -> Asset | None:
        return self.assets.get(name)

    def __repr__(self) -> str:
        return f"<StaticFiles assets={len(self.assets)}>"


def _asset(body: bytes, ctype: bytes) -> Asset:
    version = hashlib.sha256(body).hexdigest()[:12]
    return Asset(body, ctype, f'"{version}"', version)


def _walk(node: Traversable, prefix: str) -> list[tuple[str, bytes]]:
    out: list[tuple[str, bytes]] = []
    for child in node.iterdir():
        name = prefix + child.name
        if child.is_dir():
            out.extend(_walk(child, name + "/"))
        elif child.is_file() and not child.name.startswith("."):
            out.append((name, child.read_bytes()))
    return out


class Dashboard:
    """The dashboard of one node: its assets and its stream hub.

    Args:
        hub: the live stream's producer (it also knows the node and its runtime).
        static: the page's files; by default read from the package on first use, so a
            node nobody looks at never reads them.
    """

    def __init__(self, hub: DashboardHub, *, static: StaticFiles | None = None) -> None:
        self.hub = hub
        self._static = static

    @property
    def static(self) -> StaticFiles:
        if self._static is None:
            self._static = StaticFiles()
        return self._static

    def route(self, req: HttpRequest, path: str) -> Response:
        """Answer a dashboard path (``path`` without a trailing slash); ``HEAD`` gets the
        same status and headers without the body."""
        resp = _route(self, req, path)
        if req.method == "HEAD" and resp.body:
            return Response(resp.status, b"", content_type=resp.content_type, headers=resp.headers)
        return resp

    def __repr__(self) -> str:
        return f"<Dashboard {self._static!r} {self.hub!r}>"


def _json(status: int, doc: Any, headers: list[tuple[str, str]] | None = None) -> Response:
    return Response(status, orjson.dumps(doc), headers=headers or [])


def _query(req: HttpRequest) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(req.query).items()} if req.query else {}


def _route(dash: Dashboard, req: HttpRequest, path: str) -> Response:
    if path == "/api/stream":
        return stream(dash, req)
    if path == "/dashboard":
        return page(dash, None)
    if path.startswith("/dashboard/static/"):
        return static(dash, req, path[len("/dashboard/static/") :])
    rest = path[len("/dashboard/") :] if path.startswith("/dashboard/") else None
    if rest and "/" not in rest:
        return page(dash, rest)
    return _json(404, {"error": "Not found", "path": req.path})


def page(dash: Dashboard, profile: str | None) -> Response:
    """The page, for the default profile or ``profile`` (404 page when unknown)."""
    runtime = dash.hub.runtime()
    if profile is not None and runtime.profile(profile) is None:
        links = "".join(
            f'<li><a href="/dashboard/{html.escape(s)}">{html.escape(s)}</a></li>'
            for s in sorted(runtime.profiles)
        )
        body = (
            "<!doctype html><meta charset=utf-8><title>Lasso: profile not found</title>"
            f"<h1>Profile &ldquo;{html.escape(profile)}&rdquo; not found</h1>"
            f"<p>This node serves:</p><ul>{links}</ul>"
        ).encode()
        return Response(404, body, content_type=CONTENT_TYPES[".html"], headers=HTML_HEADERS)
    index = dash.static.get(INDEX)
    if index is None:  # pragma: no cover - a broken install
        return _json(500, {"error": "dashboard assets are missing from the installation"})
    return Response(200, index.body, content_type=index.content_type, headers=HTML_HEADERS)


def static(dash: Dashboard, req: HttpRequest, name: str) -> Response:
    """One asset, with revalidation and versioned caching."""
    asset = dash.static.get(name) if name != INDEX else None
    if asset is None:
        return _json(404, {"error": "Not found", "path": req.path})
    versioned = _query(req).get("v") == asset.version
    headers = [
        ("ETag", asset.etag),
        ("Cache-Control", IMMUTABLE if versioned else REVALIDATE),
        ("X-Content-Type-Options", "nosniff"),
    ]
    if req.headers.get("if-none-match") == asset.etag:
        return Response(304, headers=headers)
    return Response(200, asset.body, content_type=asset.content_type, headers=headers)


def stream(dash: Dashboard, req: HttpRequest) -> Response:
    """The server-sent event stream of ``?profile=&node=`` (see :mod:`.hub`)."""
    q = _query(req)
    hub = dash.hub
    node = q.get("node") or None
    try:
        if req.method == "GET":
            viewer = hub.open(q.get("profile") or None, node)
        else:  # HEAD: the same checks, no stream
            hub.resolve(q.get("profile") or None, node)
            viewer = None
    except UnknownProfile:
        return _json(
            404,
            {
                "error": "Profile not found",
                "profile": q.get("profile"),
                "available_profiles": sorted(hub.runtime().profiles),
            },
        )
    except UnknownNode:
        return _json(
            404,
            {
                "error": "Node not found",
                "node": node,
                "available_nodes": sorted(hub.node_ids() | {hub.node.node_id}),
            },
        )
    except TooManyViewers as exc:
        return _json(
            503,
            {"error": f"too many dashboard streams (max {exc.args[0]})"},
            headers=[("Retry-After", "5")],
        )
    headers = [("Cache-Control", "no-cache"), ("X-Accel-Buffering", "no")]
    if viewer is None:  # HEAD
        return Response(200, b"", content_type=EVENT_STREAM, headers=headers)
    return StreamingResponse(
        200, b"", content_type=EVENT_STREAM, headers=headers, stream=viewer.stream()
    )
