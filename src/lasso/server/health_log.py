"""Log lines and events for upstream trouble: what went wrong, once, with its cause.

Every channel's :class:`~lasso.kernel.faults.ChannelHealth` collects reports as failures
are recorded (by the pipeline, the health prober and the upstream WebSocket registry);
:class:`HealthLog` drains them off the request path (the prober calls :meth:`HealthLog.
watch` every tick) and writes one structured line per report to the ``lasso.events``
logger, also published as a state event for the dashboard's feed:

=======================  ========  =====================================================
event                    level     when
=======================  ========  =====================================================
``provider.unreachable``  warning  a connect-level failure (DNS, refused, unreachable,
                                   TLS, connect timeout) or a dropped WebSocket made the
                                   upstream unreachable
``provider.reachable``    info     it answers again (``down_s``: how long it was down)
``provider.error``        warning  the first failure of its kind (cause, category and
                                   HTTP status), then at most once per five minutes per
                                   kind, with ``repeats``: how many were not logged
=======================  ========  =====================================================

Rate limits are left to ``provider.rate_limited`` (the prober's rate-limit watch), which
carries the same error text. Each line has ``profile``, ``chain``, ``provider``,
``transport``, ``cause``, ``category`` and ``error`` (the message, which names the
upstream by scheme, host and port only), ``status`` for HTTP answers.
"""

from __future__ import annotations

import logging
from typing import Any

from lasso.kernel.faults import Report
from lasso.kernel.router import Channel
from lasso.server.runtime import ChainRuntime, Runtime

__all__ = ["HealthLog"]

log = logging.getLogger("lasso.events")

_QUIET_CATEGORIES = frozenset({"rate_limit"})  # reported by provider.rate_limited


class HealthLog:
    """Drains channel health reports into log lines and state events.

    Channels that share an upstream (one breaker for several profiles) share its health,
    so each report is written once, labelled with the first profile and chain using it.
    """

    def __init__(self) -> None:
        self.lines = 0  # lines written, for tests and repr

    def watch(self, runtime: Runtime) -> None:
        """Write the reports collected since the last call."""
        seen: set[int] = set()
        for rt in runtime.chains():
            for ch in rt.router.channels:
                health = ch.health
                if id(health) in seen:
                    continue
                seen.add(id(health))
                for report in health.drain():
                    self._write(rt, ch, report)

    def _write(self, rt: ChainRuntime, ch: Channel, report: Report) -> None:
        fault = report.fault
        fields: dict[str, Any] = {
            "type": "provider",
            "profile": rt.profile,
            "chain": rt.key,
            "provider": ch.provider_id,
            "transport": ch.transport,
        }
        if report.kind == "reachable":
            name, level = "provider.reachable", logging.INFO
            down = round(report.down_s or 0.0, 1)
            fields["down_s"] = down
            msg = f"provider reachable again after {down} s"
        else:
            assert fault is not None
            if report.kind == "error" and fault.category in _QUIET_CATEGORIES:
                return
            fields.update(cause=fault.cause, category=fault.category, error=fault.message)
            if fault.status is not None:
                fields["status"] = fault.status
            if report.kind == "unreachable":
                name = "provider.unreachable"
                msg = f"provider unreachable ({fault.cause}): {fault.message}"
            else:
                name = "provider.error"
                msg = f"provider error ({fault.cause}): {fault.message}"
                if report.repeats:
                    fields["repeats"] = report.repeats
                    msg += f" (and {report.repeats} more since the last report)"
            level = logging.WARNING
        fields["event"] = name
        self.lines += 1
        log.log(level, msg, extra={k: v for k, v in fields.items() if k != "type"})
        rt.events.state(fields)

    def __repr__(self) -> str:
        return f"<HealthLog lines={self.lines}>"
