"""Shared, gap-free client subscriptions over upstream WebSockets (CONTRACT §4, reference §7).

:class:`SubscriptionManager` is what the WebSocket endpoint calls
for ``eth_subscribe``/``eth_unsubscribe``. Clients asking for the same thing on the same
chain share one stream: one upstream subscription for N clients, kept for a grace period
after the last client leaves. Each stream is a thin adapter around the pure
:class:`~lasso.kernel.subscriptions.SubscriptionStream`, which decides every ordering
question; this package does the IO around it:

* :mod:`.manager` — :class:`SubscriptionManager`: subscribe and unsubscribe, streams
  shared by key with refcounts and grace periods, logs streams tied to their chain's
  newHeads stream, the circuit events of the event bus.
* :mod:`.stream` — ``Stream``: one shared upstream subscription; facts in, decisions out.
* :mod:`.upstream` — choosing a provider and subscribing upstream; upstream events
  parsed into facts.
* :mod:`.failover` — lost upstreams (connection ends, staleness, open circuits), the
  overlap after a failover, the degraded retry backoff.
* :mod:`.backfill` — missed blocks and logs fetched over HTTP through the pipeline.
* :mod:`.fanout` — :class:`SubscriptionClient` and the notification frames sent to it.
* :mod:`.metrics` — the Prometheus families.
"""

from lasso.server.subscriptions.fanout import SubscriptionClient
from lasso.server.subscriptions.manager import SubscriptionError, SubscriptionManager

__all__ = ["SubscriptionClient", "SubscriptionError", "SubscriptionManager"]
