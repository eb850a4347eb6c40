"""The node's client access: one :class:`~lasso.auth.gate.ProfileGate` per gated profile,
the limiter behind them, the counters, the subscription caps and their views.

:class:`ClientAccess` is built once per process and survives reloads: :meth:`reload`
builds new gates from the new profiles (keys, scopes, limits) while the buckets, the
counters and the subscription counts carry on, keyed by names (profile, key id, address)
rather than by objects. Connections opened under the old gates are re-checked by their
owners (:meth:`lasso.server.ws_rpc.WsRpcEndpoint.recheck_clients`).

Everything here is keyed by a client's *name*: secrets are hashed into the gates and are
found nowhere else.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from lasso.auth.client import ANONYMOUS, Client, Refusal, Stats
from lasso.auth.gate import ProfileGate
from lasso.auth.limiter import LocalLimiter
from lasso.auth.shared import SharedLimiter
from lasso.config import ProfileConfig
from lasso.net.redis_link import RedisLink

__all__ = ["ClientAccess", "subscription_limit"]

log = logging.getLogger("lasso.auth")

_ERRORS = ("error", "rpc_error")
_LIMITED = ("rate_limited", "subscription_limited")
_REFUSED = ("unauthorized", "forbidden")


def subscription_limit(n: int) -> Refusal:
    return Refusal(
        429,
        -32005,
        f"Subscription limit reached for this client (max {n})",
        "subscription_limit",
        "subscription_limited",
    )


class ClientAccess:
    """Client checks of one process.

    Args:
        profiles: the profiles served.
        redis: the node's Redis link (``LASSO_REDIS_URL``): limits are then shared by
            every process using that Redis; ``None`` keeps them in this process.
        instance: this process's id among the processes sharing limits.
        share: the fraction of each limit this process enforces when it enforces alone
            (``1 / workers`` of ``lasso serve --workers N``).
        peer_snapshots: with ``--workers N``, the other workers' latest snapshots
            (:meth:`lasso.server.workers.WorkerSnapshots.peers`; their ``clients`` rows are
            :meth:`snapshot`), merged into the view and the metrics.
        wall: wall-clock seconds (JWT expiry).
    """

    def __init__(
        self,
        profiles: Mapping[str, ProfileConfig],
        *,
        redis: RedisLink | None = None,
        instance: str = "local",
        share: float = 1.0,
        peer_snapshots: Callable[[], list[dict[str, Any]]] | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.stats: Stats = {}
        self.local = LocalLimiter(share=share)
        self.failures = LocalLimiter()
        self.shared = (
            SharedLimiter(redis, self.local, instance=instance) if redis is not None else None
        )
        self._wall = wall
        self.subscriptions: dict[tuple[str, str, str], int] = {}  # (profile, id, bucket)
        self.generation = 0
        self.gates: dict[str, ProfileGate] = self._build(profiles)
        self._task: asyncio.Task[None] | None = None
        self.peer_snapshots = peer_snapshots

    def _build(self, profiles: Mapping[str, ProfileConfig]) -> dict[str, ProfileGate]:
        limiter = self.shared if self.shared is not None else self.local
        return {
            slug: ProfileGate(p, limiter, self.failures, self.stats, wall=self._wall)
            for slug, p in profiles.items()
            if p.gated
        }

    def gate(self, slug: str) -> ProfileGate | None:
        """The gate of profile ``slug``, or ``None`` when it has no auth and no limit."""
        return self.gates.get(slug)

    def reload(self, profiles: Mapping[str, ProfileConfig]) -> None:
        """New gates for ``profiles``; buckets, counters and subscription counts carry on."""
        self.gates = self._build(profiles)
        self.generation += 1

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> None:
        """Start the Redis membership heartbeat (nothing to do without Redis)."""
        if self.shared is not None and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self.shared.run())

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
            assert self.shared is not None
            await self.shared.leave()

    # -- subscription caps --------------------------------------------------------------
    def acquire_subscription(self, client: Client) -> Refusal | None:
        """Count one more subscription of ``client``, or refuse it over its cap."""
        key = (client.profile, client.id, client.bucket)
        n = self.subscriptions.get(key, 0)
        cap = client.max_subscriptions
        if cap is not None and n >= cap:
            client.count("subscription_limited")
            return subscription_limit(cap)
        self.subscriptions[key] = n + 1
        return None

    def release_subscription(self, client: Client, n: int = 1) -> None:
        key = (client.profile, client.id, client.bucket)
        left = self.subscriptions.get(key, 0) - n
        if left > 0:
            self.subscriptions[key] = left
        else:
            self.subscriptions.pop(key, None)

    # -- views --------------------------------------------------------------------------
    def counts(self) -> Stats:
        """This process's counters plus the other workers' snapshots."""
        out = dict(self.stats)
        peers = self.peer_snapshots() if self.peer_snapshots is not None else []
        for snap in peers:
            for profile, cid, status, n in snap.get("clients", ()):
                key = (profile, cid, status)
                out[key] = out.get(key, 0) + n
        return out

    def snapshot(self) -> list[list[Any]]:
        """The counters as JSON-ready rows (for ``lasso serve --workers N``)."""
        return [[p, c, s, n] for (p, c, s), n in self.stats.items()]

    def view(self, profile: str) -> dict[str, Any]:
        """Per client of ``profile``: requests, errors, limited, refused; no secrets."""
        gate = self.gates.get(profile)
        rows: dict[str, dict[str, Any]] = {}
        if gate is not None:
            for cid, client in gate.by_id.items():
                rows[cid] = _row(cid, "key", client.limit)
            if gate.jwt is not None:
                jwt = gate.jwt.config
                rows[jwt.id] = _row(jwt.id, "jwt", jwt.limit)
            rows[ANONYMOUS] = _row(ANONYMOUS, "anonymous", gate.default_limit)
        for (p, cid, status), n in self.counts().items():
            if p != profile:
                continue
            row = rows.setdefault(cid, _row(cid, "removed", None))
            row["requests"] += n
            row["by_status"][status] = row["by_status"].get(status, 0) + n
            if status in _ERRORS:
                row["errors"] += n
            elif status in _LIMITED:
                row["limited"] += n
            elif status in _REFUSED:
                row["refused"] += n
        for (p, cid, _bucket), n in self.subscriptions.items():
            if p == profile and cid in rows:
                rows[cid]["subscriptions"] += n
        return {
            "profile": profile,
            "gated": gate is not None,
            "auth_required": gate.required if gate is not None else False,
            "limiter": self.describe_limiter(),
            "clients": sorted(rows.values(), key=lambda r: (r["kind"] == "anonymous", r["key"])),
        }

    def describe_limiter(self) -> dict[str, Any]:
        if self.shared is not None:
            return self.shared.describe()
        return {"mode": "local", "share": round(self.local.share, 4)}

    def collect(self, node: str, now: float) -> Iterable[Metric]:
        """The ``lasso_client_*`` series (a :meth:`lasso.server.metrics.Metrics.register`
        collector)."""
        del now
        req = CounterMetricFamily(
            "lasso_client_requests",
            "Client JSON-RPC requests by client (key id, JWT entry id or anonymous) and outcome",
            labels=["node_id", "profile", "key", "status"],
        )
        for (profile, cid, status), n in sorted(self.counts().items()):
            req.add_metric([node, profile, cid, status], n)
        yield req
        subs = GaugeMetricFamily(
            "lasso_client_subscriptions",
            "Open subscriptions per client on this process",
            labels=["node_id", "profile", "key"],
        )
        per: dict[tuple[str, str], int] = {}
        for (profile, cid, _bucket), n in self.subscriptions.items():
            per[(profile, cid)] = per.get((profile, cid), 0) + n
        for (profile, cid), n in sorted(per.items()):
            subs.add_metric([node, profile, cid], float(n))
        yield subs
        if self.shared is not None:
            mode = GaugeMetricFamily(
                "lasso_client_limits_shared",
                "1 while client limits are shared through Redis, 0 while this process"
                " enforces its share alone",
                labels=["node_id"],
            )
            mode.add_metric([node], 1.0 if self.shared.mode == "redis" else 0.0)
            yield mode

    def __repr__(self) -> str:
        limiter = self.shared if self.shared is not None else self.local
        return f"<ClientAccess gates={sorted(self.gates)} {limiter!r}>"


def _row(cid: str, kind: str, limit: Any) -> dict[str, Any]:
    return {
        "key": cid,
        "kind": kind,
        "rps_limit": limit.rps if limit is not None else None,
        "burst_limit": limit.burst if limit is not None else None,
        "requests": 0,
        "errors": 0,
        "limited": 0,
        "refused": 0,
        "subscriptions": 0,
        "by_status": {},
    }
