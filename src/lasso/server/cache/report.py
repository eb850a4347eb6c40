"""What the cache reports: Prometheus series and the dashboard's cache panel data.

Built at scrape or poll time from the counters :class:`~.chain.ChainCache` bumps on the
request path, so reporting costs nothing per request.

Series (every one carries ``node_id``):

- ``lasso_cache_requests_total{profile,chain,method,result}``: cacheable requests by
  ``hit``/``miss``/``bypass``;
- ``lasso_coalesced_requests_total{profile,chain,method}``: requests answered by another
  request's upstream call;
- ``lasso_cache_bytes{profile,chain}`` and ``lasso_cache_entries{profile,chain}``: the
  memory store; ``lasso_cache_evictions_total{profile,chain}``;
- ``lasso_cache_reorgs_total{profile,chain}``: reorgs the block window saw;
- ``lasso_cache_head_polls_total{profile,chain,kind}``: background calls
  (``latest``, ``finalized``, ``walk``);
- with Redis: ``lasso_cache_redis_up`` (0/1), ``lasso_cache_redis_errors_total``,
  ``lasso_cache_redis_dropped_writes_total``, ``lasso_cache_redis_hits_total``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from time import monotonic
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from lasso.server.cache.chain import ChainCache
from lasso.server.cache.service import ResponseCache

__all__ = ["collector", "view"]


def collector(cache: ResponseCache) -> Callable[[str, float], Iterable[Metric]]:
    """A ``Metrics.extra_collectors`` entry for ``cache``."""

    def collect(node: str, now: float) -> Iterable[Metric]:
        requests = CounterMetricFamily(
            "lasso_cache_requests",
            "Cacheable JSON-RPC requests by how the cache answered (hit, miss, bypass)",
            labels=["node_id", "profile", "chain", "method", "result"],
        )
        coalesced = CounterMetricFamily(
            "lasso_coalesced_requests",
            "Requests answered by an identical request's upstream call in flight",
            labels=["node_id", "profile", "chain", "method"],
        )
        chain_labels = ["node_id", "profile", "chain"]
        size = GaugeMetricFamily(
            "lasso_cache_bytes", "Bytes held by the memory cache", labels=chain_labels
        )
        entries = GaugeMetricFamily(
            "lasso_cache_entries", "Answers held by the memory cache", labels=chain_labels
        )
        evictions = CounterMetricFamily(
            "lasso_cache_evictions", "Answers evicted to make room", labels=chain_labels
        )
        reorgs = CounterMetricFamily(
            "lasso_cache_reorgs", "Reorgs seen by the cache's block window", labels=chain_labels
        )
        polls = CounterMetricFamily(
            "lasso_cache_head_polls",
            "Background calls that keep block hashes and finality known",
            labels=[*chain_labels, "kind"],
        )
        for cc in list(cache.chains.values()):
            base = [node, cc.profile, cc.key]
            for (method, result), n in sorted(cc.requests.items()):
                requests.add_metric([*base, method, result], n)
            for method, n in sorted(cc.coalesced.items()):
                coalesced.add_metric([*base, method], n)
            size.add_metric(base, float(cc.store.bytes))
            entries.add_metric(base, float(len(cc.store)))
            evictions.add_metric(base, cc.store.evictions)
            reorgs.add_metric(base, cc.reorgs)
            for kind, n in sorted(cc.polls.items()):
                polls.add_metric([*base, kind], n)
        yield from (requests, coalesced, size, entries, evictions, reorgs, polls)
        redis = cache.redis
        if redis is not None:
            up = GaugeMetricFamily(
                "lasso_cache_redis_up", "1 while the cache's Redis link is up", labels=["node_id"]
            )
            up.add_metric([node], 1.0 if redis.link.up else 0.0)
            yield up
            for name, doc, value in (
                (
                    "lasso_cache_redis_errors",
                    "Redis reads and write batches that failed",
                    redis.errors,
                ),
                (
                    "lasso_cache_redis_dropped_writes",
                    "Cache writes Redis did not get",
                    redis.dropped,
                ),
                ("lasso_cache_redis_hits", "Answers found in Redis", redis.hits),
            ):
                family = CounterMetricFamily(name, doc, labels=["node_id"])
                family.add_metric([node], value)
                yield family

    return collect


def _ratio(hits: int, total: int) -> float | None:
    return round(hits / total, 4) if total else None


def _chain_doc(cc: ChainCache, now: float) -> dict[str, Any]:
    methods: dict[str, dict[str, int]] = {}
    for (method, result), n in cc.requests.items():
        row = methods.setdefault(method, {"hit": 0, "miss": 0, "bypass": 0, "coalesced": 0})
        row[result] += n
    for method, n in cc.coalesced.items():
        row = methods.setdefault(method, {"hit": 0, "miss": 0, "bypass": 0, "coalesced": 0})
        row["coalesced"] += n
    rows = []
    totals = {"hit": 0, "miss": 0, "bypass": 0, "coalesced": 0}
    for method, row in sorted(methods.items()):
        for k in totals:
            totals[k] += row[k]
        total = row["hit"] + row["miss"] + row["bypass"]
        rows.append(
            {
                "method": method,
                **row,
                "requests": total,
                "hit_ratio": _ratio(row["hit"], total),
                "saved": row["hit"] + row["coalesced"],
            }
        )
    total = totals["hit"] + totals["miss"] + totals["bypass"]
    return {
        "chain": cc.key,
        "chain_id": cc.chain_id,
        "enabled": cc.config.cache.enabled,
        "coalesce": cc.config.coalesce,
        **totals,
        "requests": total,
        "hit_ratio": _ratio(totals["hit"], total),
        "saved": totals["hit"] + totals["coalesced"],
        "bytes": cc.store.bytes,
        "max_bytes": cc.store.max_bytes,
        "entries": len(cc.store),
        "evictions": cc.store.evictions,
        "reorgs": cc.reorgs,
        "window": {"bottom": cc.window.bottom, "top": cc.window.top},
        "idle_s": None if cc.last_used == float("-inf") else round(now - cc.last_used, 1),
        "methods": rows,
    }


def view(cache: ResponseCache, profile: str) -> dict[str, Any]:
    """The dashboard's cache panel for ``profile``: per chain, per method."""
    now = monotonic()
    chains = [_chain_doc(cc, now) for cc in cache.chains.values() if cc.profile == profile]
    chains.sort(key=lambda c: c["chain"])
    redis = cache.redis
    return {
        "profile": profile,
        "chains": chains,
        "redis": None
        if redis is None
        else {
            "up": redis.link.up,
            "hits": redis.hits,
            "reads": redis.reads,
            "writes": redis.writes,
            "errors": redis.errors,
            "dropped": redis.dropped,
        },
    }
