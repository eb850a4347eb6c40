"""What the consistency rules keep per chain, across reloads (CONTRACT §8).

A reload (``SIGHUP``) builds new routers and chain runtimes; what clients were already told
must survive it:

* the **served head** (:class:`~lasso.kernel.head.HeadTracker`): ``eth_blockNumber`` and
  tag blocks never go backwards, reload or not (the new router is given the same tracker);
* the **filter table** (:class:`~lasso.kernel.filters.FilterTable`): a client's filter id
  still reaches the provider that made it (a binding whose provider left the profile
  answers "filter not found" on its next poll, so the client recreates it);
* the **counters** behind the metrics below, which only ever go up;
* the broadcast legs still out after their request was answered (held here so that they
  finish, and are counted, whatever happens to the request).

:class:`NodeConsistency` is one per process: it hands every (profile, chain) the same
:class:`ChainConsistency` for as long as the chain exists, and holds the node-wide bound on
``eth_getLogs`` chunks in flight (:data:`~lasso.server.limits.NODE_LOG_CHUNKS`).

With ``lasso serve --workers N`` all of this is per worker process (see
``docs/routing.md``): the served head is monotonic per worker, and a filter poll that lands
on another worker than the one that made the filter is answered "filter not found".

Metrics (:meth:`NodeConsistency.collect`, registered by the composition root):

* ``lasso_served_head{profile,chain,tag}``: the highest block served per tracked tag;
* ``lasso_consistency_retries_total{profile,chain,reason}``: answers not served because
  the provider was behind (``behind``), ``eth_blockNumber`` answers raised to the served
  head (``clamped``);
* ``lasso_get_logs_chunks_total{profile,chain,outcome}``: chunks of split ``eth_getLogs``
  requests (``ok``, ``resplit``: too large and split again, ``failed``), and
  ``lasso_get_logs_splits_total{profile,chain}``: requests split;
* ``lasso_broadcast_legs_total{profile,chain,outcome}``: sends of
  ``eth_sendRawTransaction`` (``accepted``, ``rejected``, ``failed``), the legs after the
  answer included;
* ``lasso_filters{profile,chain}`` and ``lasso_filter_not_found_total{profile,chain}``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from lasso.kernel.filters import FilterTable
from lasso.kernel.head import HEAD_TAGS, HeadTracker
from lasso.server.limits import NODE_LOG_CHUNKS

__all__ = ["COUNTERS", "ChainConsistency", "NodeConsistency"]

COUNTERS: dict[str, tuple[str, str]] = {
    "retries": ("lasso_consistency_retries", "reason"),
    "chunks": ("lasso_get_logs_chunks", "outcome"),
    "splits": ("lasso_get_logs_splits", ""),
    "legs": ("lasso_broadcast_legs", "outcome"),
    "filter_not_found": ("lasso_filter_not_found", ""),
}
"""Counter kinds: (metric name without ``_total``, the label its detail goes under)."""

_HELP = {
    "retries": "Answers retried or changed for consistency (behind: provider behind the block)",
    "chunks": "Chunks of split eth_getLogs requests by outcome",
    "splits": "eth_getLogs requests split into chunks",
    "legs": "eth_sendRawTransaction sends of broadcasts by outcome",
    "filter_not_found": "Filter calls answered 'filter not found' (expired, lost, unknown)",
}


class ChainConsistency:
    """One chain's consistency state (of one profile), kept across reloads.

    Args:
        head: the served head; the chain's router is built with it.
        logs_slots: the node-wide bound on ``eth_getLogs`` chunks in flight.
    """

    __slots__ = ("_legs", "counts", "filters", "head", "logs_slots")

    def __init__(
        self,
        head: HeadTracker | None = None,
        logs_slots: asyncio.Semaphore | None = None,
    ) -> None:
        self.head = head if head is not None else HeadTracker()
        self.filters = FilterTable()
        self.logs_slots = (
            logs_slots if logs_slots is not None else asyncio.Semaphore(NODE_LOG_CHUNKS)
        )
        self.counts: dict[tuple[str, str], int] = {}
        self._legs: set[asyncio.Task[Any]] = set()

    def count(self, kind: str, detail: str = "", n: int = 1) -> None:
        """Add ``n`` to counter ``kind`` (one of :data:`COUNTERS`) with label ``detail``."""
        key = (kind, detail)
        self.counts[key] = self.counts.get(key, 0) + n

    def keep(self, task: asyncio.Task[Any]) -> None:
        """Hold ``task`` (a broadcast leg still out after the answer) until it ends."""
        self._legs.add(task)
        task.add_done_callback(self._legs.discard)

    @property
    def legs_out(self) -> int:
        """Broadcast legs still running after their request was answered."""
        return len(self._legs)

    def __repr__(self) -> str:
        return f"<ChainConsistency {self.head!r} {self.filters!r} legs_out={len(self._legs)}>"


class NodeConsistency:
    """Every chain's :class:`ChainConsistency` of this process, by (profile, chain key).

    Args:
        max_log_chunks: ``eth_getLogs`` chunks in flight on the node at most.
    """

    def __init__(self, *, max_log_chunks: int = NODE_LOG_CHUNKS) -> None:
        self.logs_slots = asyncio.Semaphore(max_log_chunks)
        self._chains: dict[tuple[str, str], ChainConsistency] = {}

    def chain(self, profile: str, key: str) -> ChainConsistency:
        """The state of chain ``key`` of ``profile``: the same object on every call (and
        so in every runtime generation) until :meth:`retain` drops it."""
        state = self._chains.get((profile, key))
        if state is None:
            state = self._chains[(profile, key)] = ChainConsistency(logs_slots=self.logs_slots)
        return state

    def retain(self, keys: Iterable[tuple[str, str]]) -> None:
        """Forget the chains not in ``keys`` (gone from the profiles after a reload)."""
        keep = set(keys)
        for key in [k for k in self._chains if k not in keep]:
            del self._chains[key]

    def collect(self, node_id: str, now: float) -> Iterable[Metric]:
        """The Prometheus families of the module docstring (a ``Metrics`` collector)."""
        head = GaugeMetricFamily(
            "lasso_served_head",
            "Highest block served per tag (eth_blockNumber and tag blocks never go below it)",
            labels=["node_id", "profile", "chain", "tag"],
        )
        filters = GaugeMetricFamily(
            "lasso_filters",
            "Filters bound to a provider (eth_newFilter and kin)",
            labels=["node_id", "profile", "chain"],
        )
        counters: dict[str, CounterMetricFamily] = {}
        for kind, (name, label) in COUNTERS.items():
            labels = ["node_id", "profile", "chain", *([label] if label else [])]
            counters[kind] = CounterMetricFamily(name, _HELP[kind], labels=labels)
        for (profile, chain), state in sorted(self._chains.items()):
            for tag in HEAD_TAGS:
                number = state.head.tag(tag)
                if number is not None:
                    head.add_metric([node_id, profile, chain, tag], float(number))
            filters.add_metric([node_id, profile, chain], float(len(state.filters)))
            for (kind, detail), n in sorted(state.counts.items()):
                labels = [node_id, profile, chain, *([detail] if COUNTERS[kind][1] else [])]
                counters[kind].add_metric(labels, float(n))
        yield head
        yield filters
        yield from counters.values()

    def __repr__(self) -> str:
        return f"<NodeConsistency chains={len(self._chains)}>"
