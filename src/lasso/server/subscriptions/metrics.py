"""The subscription metric families, built at scrape time from the manager's streams.

Counters of closed streams are kept by the manager (``_retired``) so totals never go
back when a stream ends.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

if TYPE_CHECKING:
    from lasso.server.subscriptions.manager import SubscriptionManager
    from lasso.server.subscriptions.stream import Stream

__all__ = ["collect", "counters"]


def counters(stream: Stream) -> tuple[tuple[str, int], ...]:
    """The event counters of ``stream`` by name (what :func:`collect` exports)."""
    m = stream.machine
    return (
        ("duplicates", m.duplicates),
        ("dropped", m.dropped),
        ("backfilled", m.backfilled),
        ("failovers", stream.failovers),
        ("slow_client", stream.slow_drops),
        ("malformed", stream.malformed),
    )


def collect(mgr: SubscriptionManager, node: str, now: float) -> Iterable[Metric]:
    """The families for ``/metrics`` (registered with :meth:`Metrics.register`, ``mgr`` bound)."""
    upstreams = GaugeMetricFamily(
        "lasso_upstream_subscriptions",
        "Upstream subscriptions feeding client subscriptions (shared by all their clients)",
        labels=["node_id", "chain", "kind", "provider"],
    )
    ups: dict[tuple[str, str, str], int] = {}
    totals = dict(mgr._retired)
    for s in mgr._streams.values():
        if s.upstream is not None:
            k3 = (s.chain, s.kind, s.upstream.provider)
            ups[k3] = ups.get(k3, 0) + 1
        for name, n in counters(s):
            k = (s.chain, s.kind, name)
            totals[k] = totals.get(k, 0) + n
    for (chain, kind, provider), n in sorted(ups.items()):
        upstreams.add_metric([node, chain, kind, provider], float(n))
    yield upstreams
    families = {
        "failovers": CounterMetricFamily(
            "lasso_subscription_failovers",
            "Upstream subscriptions moved to another provider",
            labels=["node_id", "chain", "kind"],
        ),
        "backfilled": CounterMetricFamily(
            "lasso_backfilled_blocks",
            "Blocks recovered over HTTP after a gap (logs: blocks scanned)",
            labels=["node_id", "chain", "kind"],
        ),
        "duplicates": CounterMetricFamily(
            "lasso_subscription_duplicates_dropped",
            "Upstream events not delivered because clients already had them",
            labels=["node_id", "chain", "kind"],
        ),
    }
    dropped = CounterMetricFamily(
        "lasso_subscription_events_dropped",
        "Events clients did not get: skipped blocks (gap), slow clients, malformed",
        labels=["node_id", "chain", "kind", "reason"],
    )
    reasons = {"dropped": "gap", "slow_client": "slow_client", "malformed": "malformed"}
    for (chain, kind, name), n in sorted(totals.items()):
        if name in families:
            families[name].add_metric([node, chain, kind], float(n))
        else:
            dropped.add_metric([node, chain, kind, reasons[name]], float(n))
    yield from families.values()
    yield dropped
