"""What the cache reports: Prometheus series and the dashboard's cache panel data.

Built at scrape or poll time from the counters :class:`~.chain.ChainCache` bumps on the
request path, so reporting costs nothing per request. With ``--workers N`` each worker
publishes :func:`snapshot` in its metrics snapshot (``"cache"``) and any worker reports
the node: its own figures plus the other workers' (``peers``).

Series (every one carries ``node_id``):

- ``lasso_cache_requests_total{profile,chain,method,result}``: cacheable requests by
  ``hit``/``miss``/``bypass``;
- ``lasso_coalesced_requests_total{profile,chain,method}``: requests answered by another
  request's upstream call;
- ``lasso_cache_bytes{profile,chain}`` and ``lasso_cache_entries{profile,chain}``: the
  memory stores; ``lasso_cache_evictions_total{profile,chain}``;
- ``lasso_cache_reorgs_total{profile,chain}``: reorgs the block windows saw;
- ``lasso_cache_head_polls_total{profile,chain,kind}``: background calls
  (``latest``, ``finalized``, ``walk``);
- with Redis: ``lasso_cache_redis_up`` (0/1, this worker's link),
  ``lasso_cache_redis_errors_total``, ``lasso_cache_redis_dropped_writes_total``,
  ``lasso_cache_redis_hits_total``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from lasso.server.cache.service import ResponseCache

__all__ = ["collector", "merged", "snapshot", "view"]

Peers = Callable[[], list[dict[str, Any]]]
_SUMMED = ("bytes", "max_bytes", "entries", "evictions", "reorgs")
_REDIS = ("hits", "reads", "writes", "errors", "dropped")


def snapshot(cache: ResponseCache) -> dict[str, Any]:
    """This process's cache figures, JSON-ready and summable across workers."""
    chains = []
    for cc in list(cache.chains.values()):
        store = cc.store
        chains.append(
            {
                "profile": cc.profile,
                "chain": cc.key,
                "chain_id": cc.chain_id,
                "enabled": cc.config.cache.enabled,
                "coalesce": cc.config.coalesce,
                "requests": [[m, r, n] for (m, r), n in cc.requests.items()],
                "coalesced": [[m, n] for m, n in cc.coalesced.items()],
                "polls": [[k, n] for k, n in cc.polls.items()],
                "bytes": store.bytes,
                "max_bytes": store.max_bytes,
                "entries": len(store),
                "evictions": store.evictions,
                "reorgs": cc.reorgs,
                "window": [cc.window.bottom, cc.window.top],
            }
        )
    redis = cache.redis
    doc: dict[str, Any] = {"chains": chains, "redis": None}
    if redis is not None:
        doc["redis"] = {"up": redis.link.up, **{k: getattr(redis, k) for k in _REDIS}}
    return doc


def merged(cache: ResponseCache, peers: Peers | None = None) -> dict[str, Any]:
    """:func:`snapshot` of this process plus those of the other workers (``peers``):
    counters summed per (profile, chain); the window and Redis state are this process's."""
    mine = snapshot(cache)
    docs = [mine] + [p["cache"] for p in (peers() if peers else ()) if "cache" in p]
    chains: dict[tuple[str, str], dict[str, Any]] = {}
    for doc in docs:
        for c in doc.get("chains", ()):
            key = (c["profile"], c["chain"])
            into = chains.get(key)
            if into is None:
                into = chains[key] = {
                    **{k: c[k] for k in ("profile", "chain", "chain_id", "enabled", "coalesce")},
                    "window": c["window"],
                    "requests": {},
                    "coalesced": {},
                    "polls": {},
                    **dict.fromkeys(_SUMMED, 0),
                }
            for m, r, n in c["requests"]:
                into["requests"][(m, r)] = into["requests"].get((m, r), 0) + n
            for name in ("coalesced", "polls"):
                for k, n in c[name]:
                    into[name][k] = into[name].get(k, 0) + n
            for k in _SUMMED:
                into[k] += c[k]
        redis = doc.get("redis")
        if doc is not mine and redis and mine["redis"]:
            for k in _REDIS:
                mine["redis"][k] += redis.get(k, 0)
    return {"chains": list(chains.values()), "redis": mine["redis"]}


def collector(
    cache: ResponseCache, peers: Peers | None = None
) -> Callable[[str, float], Iterable[Metric]]:
    """A ``Metrics.register`` collector for ``cache`` (and the other workers')."""

    def collect(node: str, now: float) -> Iterable[Metric]:
        del now
        doc = merged(cache, peers)
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
        for c in doc["chains"]:
            base = [node, c["profile"], c["chain"]]
            for (method, result), n in sorted(c["requests"].items()):
                if result != "uncached":  # the metric counts cacheable requests only
                    requests.add_metric([*base, method, result], n)
            for method, n in sorted(c["coalesced"].items()):
                coalesced.add_metric([*base, method], n)
            size.add_metric(base, float(c["bytes"]))
            entries.add_metric(base, float(c["entries"]))
            evictions.add_metric(base, c["evictions"])
            reorgs.add_metric(base, c["reorgs"])
            for kind, n in sorted(c["polls"].items()):
                polls.add_metric([*base, kind], n)
        yield from (requests, coalesced, size, entries, evictions, reorgs, polls)
        redis = doc["redis"]
        if redis is not None:
            up = GaugeMetricFamily(
                "lasso_cache_redis_up", "1 while the cache's Redis link is up", labels=["node_id"]
            )
            up.add_metric([node], 1.0 if redis["up"] else 0.0)
            yield up
            for name, help_text, key in (
                ("lasso_cache_redis_errors", "Redis reads and write batches that failed", "errors"),
                ("lasso_cache_redis_dropped_writes", "Cache writes Redis did not get", "dropped"),
                ("lasso_cache_redis_hits", "Answers found in Redis", "hits"),
            ):
                family = CounterMetricFamily(name, help_text, labels=["node_id"])
                family.add_metric([node], redis[key])
                yield family

    return collect


def _ratio(hits: int, total: int) -> float | None:
    return round(hits / total, 4) if total else None


_RESULTS = ("hit", "miss", "bypass", "uncached", "coalesced")


def _chain_doc(c: dict[str, Any]) -> dict[str, Any]:
    """One chain of :func:`view`: ``requests = hit + miss + bypass + uncached`` (each
    request once; ``uncached``: never-cacheable reads that went through coalescing),
    ``coalesced`` a part of ``miss + uncached``, ``saved = hit + coalesced``; the hit
    ratio is over cacheable requests."""
    methods: dict[str, dict[str, int]] = {}
    for (method, result), n in c["requests"].items():
        row = methods.setdefault(method, dict.fromkeys(_RESULTS, 0))
        row[result] += n
    for method, n in c["coalesced"].items():
        row = methods.setdefault(method, dict.fromkeys(_RESULTS, 0))
        row["coalesced"] += n
    rows = []
    totals = dict.fromkeys(_RESULTS, 0)
    for method, row in sorted(methods.items()):
        for k in totals:
            totals[k] += row[k]
        total = row["hit"] + row["miss"] + row["bypass"] + row["uncached"]
        rows.append(
            {
                "method": method,
                **row,
                "requests": total,
                "hit_ratio": _ratio(row["hit"], total - row["uncached"]),
                "saved": row["hit"] + row["coalesced"],
            }
        )
    total = totals["hit"] + totals["miss"] + totals["bypass"] + totals["uncached"]
    return {
        "chain": c["chain"],
        "chain_id": str(c["chain_id"]),  # a string, as in every /api answer
        "enabled": c["enabled"],
        "coalesce": c["coalesce"],
        **totals,
        "requests": total,
        "hit_ratio": _ratio(totals["hit"], total - totals["uncached"]),
        "saved": totals["hit"] + totals["coalesced"],
        **{k: c[k] for k in _SUMMED if k != "reorgs"},
        "reorgs": c["reorgs"],
        "window": {"bottom": c["window"][0], "top": c["window"][1]},
        "methods": rows,
    }


def view(cache: ResponseCache, profile: str, peers: Peers | None = None) -> dict[str, Any]:
    """The dashboard's cache panel for ``profile`` (``/api/cache``): per chain, per method."""
    doc = merged(cache, peers)
    chains = [_chain_doc(c) for c in doc["chains"] if c["profile"] == profile]
    chains.sort(key=lambda c: c["chain"])
    return {"profile": profile, "chains": chains, "redis": doc["redis"]}
