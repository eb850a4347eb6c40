"""The simulator's admin HTTP API: inspect providers, switch faults, reorg a chain.

| route | does |
|---|---|
| ``GET /providers`` | ``{"providers": [...]}``: id, chain, URLs, head, behaviour, stats |
| ``GET /providers/{id}`` | one provider |
| ``POST /providers/{id}`` | JSON object of behaviour fields to change; answers the provider |
| ``POST /providers/{id}/reset-stats`` | zero its counters |
| ``POST /reset-stats`` | zero every provider's counters |
| ``GET /chain[?chain_id=N]`` | chain id, block time, head, head hash, reorg count |
| ``GET /chains`` | every chain |
| ``POST /chain/reorg`` | ``{"depth": N, "chain_id"?: N}``: the chain and ``first_replaced`` |

Errors are ``{"error": "..."}`` with 400 (bad input) or 404 (unknown provider or chain).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

if TYPE_CHECKING:
    from lasso.sim.fleet import SimFleet
    from lasso.sim.provider import SimProvider

__all__ = ["make_admin_app"]


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def _error(status: int, message: str) -> web.Response:
    return _json({"error": message}, status)


def _fail(exc_class: type[web.HTTPError], message: str) -> web.HTTPError:
    """Return an HTTP error to raise, with the API's JSON error body."""
    text = orjson.dumps({"error": message}).decode()
    return exc_class(text=text, content_type="application/json")


async def _body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _fail(web.HTTPBadRequest, f"invalid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise _fail(web.HTTPBadRequest, "expected a JSON object")
    return data


def make_admin_app(fleet: SimFleet) -> web.Application:
    """Return the admin application for ``fleet`` (see the module docstring for routes)."""

    def provider_or_404(request: web.Request) -> SimProvider:
        provider_id = request.match_info["provider_id"]
        if provider_id not in fleet:
            raise _fail(web.HTTPNotFound, f"unknown provider {provider_id!r}")
        return fleet[provider_id]

    def chain_id_of(value: Any) -> int | None:
        if value is None:
            return None
        try:
            chain_id = int(value)
        except (TypeError, ValueError):
            raise _fail(web.HTTPBadRequest, f"bad chain_id {value!r}") from None
        if chain_id not in fleet.chains:
            raise _fail(web.HTTPNotFound, f"unknown chain {chain_id}")
        return chain_id

    async def list_providers(request: web.Request) -> web.Response:
        return _json({"providers": [p.describe() for p in fleet]})

    async def get_provider(request: web.Request) -> web.Response:
        return _json(provider_or_404(request).describe())

    async def update_provider(request: web.Request) -> web.Response:
        provider = provider_or_404(request)
        changes = await _body(request)
        try:
            await provider.update(**changes)
        except ValueError as exc:
            return _error(400, str(exc))
        return _json(provider.describe())

    async def reset_provider(request: web.Request) -> web.Response:
        provider = provider_or_404(request)
        provider.reset_stats()
        return _json(provider.describe())

    async def reset_all(request: web.Request) -> web.Response:
        fleet.reset_stats()
        return _json({"providers": [p.describe() for p in fleet]})

    async def get_chain(request: web.Request) -> web.Response:
        chain = fleet.chain(chain_id_of(request.query.get("chain_id")))
        return _json(chain.describe(fleet.clock()))

    async def list_chains(request: web.Request) -> web.Response:
        now = fleet.clock()
        return _json({"chains": [c.describe(now) for c in fleet.chains.values()]})

    async def reorg(request: web.Request) -> web.Response:
        body = await _body(request)
        chain_id = chain_id_of(body.get("chain_id"))
        depth = body.get("depth", 1)
        if isinstance(depth, bool) or not isinstance(depth, int):
            return _error(400, f"depth must be an integer, got {depth!r}")
        try:
            first = fleet.reorg(depth, chain_id)
        except ValueError as exc:
            return _error(400, str(exc))
        chain = fleet.chain(chain_id)
        return _json({**chain.describe(fleet.clock()), "first_replaced": first})

    app = web.Application()
    app.router.add_get("/providers", list_providers)
    app.router.add_get("/providers/{provider_id}", get_provider)
    app.router.add_post("/providers/{provider_id}", update_provider)
    app.router.add_post("/providers/{provider_id}/reset-stats", reset_provider)
    app.router.add_post("/reset-stats", reset_all)
    app.router.add_get("/chain", get_chain)
    app.router.add_get("/chains", list_chains)
    app.router.add_post("/chain/reorg", reorg)
    return app
