"""Block heights and provider health: one poll per upstream instance, fed to the kernel.

:class:`HeightProber` is the node's one background prober. Every tick (≤ 200 ms) it

1. polls each upstream instance (a pool, shared by every profile that points at the same
   endpoint, per breaker and chain) at most once per interval, the smallest
   ``monitoring.probe_interval_ms`` of the chains that use it. The poll is
   ``eth_blockNumber`` (``eth_chainId`` until the chain id was verified once); its answer
   feeds the routers' heights and, when the instance is idle, its health
   (:mod:`lasso.probes.health` says what each answer means). A provider whose height a
   client ``eth_blockNumber`` reported within the interval is not polled at all: busy
   providers are measured for free and only idle ones cost a request;
2. probes open circuits every ``monitoring.recovery_probe_interval_ms`` (default 2 s,
   +0–20 % jitter) while their open is a health one, so a provider that healed is moved to
   half-open after 2 good answers instead of waiting out its recovery timeout
   (probe-assisted recovery, :mod:`lasso.probes.health`), and drives half-open trials at
   that cadence too;
3. reports breaker recoveries that came due (OPEN → HALF_OPEN) as events;
4. publishes "provider lagging" / "caught up" when a provider's optimistic lag crosses
   ``monitoring.lag_alert_threshold_blocks``, and "rate limited" / "rate limit cleared"
   when a channel's rate-limit expiry starts or ends, as structured log lines and
   :class:`~lasso.server.events.EventBus` state events.

None of this runs on the request path: the pipeline only updates the kernel objects the
prober reads.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from time import monotonic
from typing import TYPE_CHECKING, Any

import orjson
from prometheus_client.core import CounterMetricFamily, Metric

from lasso.kernel.breaker import BreakerState, CircuitBreaker, Transition
from lasso.kernel.classify import parse_retry_after
from lasso.kernel.faults import Fault
from lasso.kernel.router import Channel
from lasso.net.errors import PoolTimeout, UpstreamError
from lasso.net.http_client import ANSWER_BOUND
from lasso.net.http_conn import LARGE_ANSWER
from lasso.net.transport import UpstreamTransport
from lasso.probes.health import (
    DEFAULT_POLICY,
    ProbeKind,
    ProbePolicy,
    ProbeResult,
    ProbeState,
    apply_recovery_probe,
    apply_to_breaker,
    judge_error,
    judge_probe,
    probe_result_fault,
)
from lasso.server.faults import fault_of
from lasso.server.health_log import HealthLog
from lasso.server.runtime import ChainRuntime, Runtime

if TYPE_CHECKING:
    from lasso.kernel.clock import Rng
    from lasso.server.metrics import Metrics

__all__ = ["HeightProber", "parse_block_number"]

log = logging.getLogger("lasso.probes")
events_log = logging.getLogger("lasso.events")

TICK_S = 0.2
MIN_TICK_S = 0.02
MIN_RECOVERY_INTERVAL_S = 0.1  # the profile loader's floor, for configs built in code
_HEIGHT_BODY = b'{"jsonrpc":"2.0","id":"lasso-probe","method":"eth_blockNumber","params":[]}'
_CHAIN_BODY = b'{"jsonrpc":"2.0","id":"lasso-probe","method":"eth_chainId","params":[]}'
_PROBE_TID = b'"lasso-probe"'
_OPEN = BreakerState.OPEN
_HALF_OPEN = BreakerState.HALF_OPEN

GroupKey = tuple[int, int, int]  # (id(pool), chain id, id(breaker))


def parse_block_number(body: bytes) -> int | None:
    """The height in an ``eth_blockNumber`` answer, or ``None`` if it has none."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(doc, dict):
        return None
    result = doc.get("result")
    if not isinstance(result, str) or not result.startswith("0x"):
        return None
    try:
        return int(result, 16)
    except ValueError:
        return None


class _Group:
    """One probed instance: a pool, a chain, a breaker, and the channels that share them."""

    __slots__ = (
        "breaker",
        "chain",
        "chain_id",
        "interval",
        "key",
        "members",
        "pool",
        "provider",
        "recovery_interval",
    )

    def __init__(
        self, key: GroupKey, pool: UpstreamTransport, breaker: CircuitBreaker, chain_id: int
    ) -> None:
        self.key = key
        self.pool = pool
        self.breaker = breaker
        self.chain_id = chain_id
        self.interval = float("inf")
        self.recovery_interval = float("inf")  # probes of an open circuit
        self.members: list[tuple[ChainRuntime, Channel]] = []
        self.provider = ""  # labels: the first member's provider id and chain key
        self.chain = ""

    def last_client_attempt(self) -> float | None:
        """The latest client attempt on any member channel (probes never touch it)."""
        latest: float | None = None
        for _rt, ch in self.members:
            seen = ch.evidence.last_observed
            if seen is not None and (latest is None or seen > latest):
                latest = seen
        return latest

    def last_client_height(self) -> float | None:
        latest: float | None = None
        for rt, ch in self.members:
            seen = rt.router.state.observed_at(ch.provider_id)
            if seen is not None and (latest is None or seen > latest):
                latest = seen
        return latest


class HeightProber:
    """Polls idle upstream instances for their head and health; watches lag and limits.

    Args:
        runtime: the runtime serving now; re-read every tick, so reloads are picked up
            without restarting the prober, and probe state survives them.
        metrics: the node's metrics; the probe counters are registered there.
        rng: randomness for the recovery-probe jitter and back-offs.
        policy: back-offs, timeouts and thresholds (:class:`~lasso.probes.health.ProbePolicy`).
    """

    def __init__(
        self,
        *,
        runtime: Callable[[], Runtime],
        metrics: Metrics,
        rng: Rng,
        policy: ProbePolicy = DEFAULT_POLICY,
    ) -> None:
        self.runtime = runtime
        self.policy = policy
        self.rng = rng
        self.states: dict[GroupKey, ProbeState] = {}
        self.polls = 0
        self.failures = 0
        self.recovery_probes = 0  # sent to open circuits (included in polls)
        self._groups: list[_Group] = []
        self._runtime: Runtime | None = None
        self._tick_s = TICK_S
        self._inflight: set[GroupKey] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._rate_limited: dict[tuple[str, str, str], bool] = {}
        self._lagging: dict[tuple[str, str], dict[str, int]] = {}
        self.health_log = HealthLog()  # provider.unreachable / .reachable / .error lines
        metrics.register(self.collect)

    def __repr__(self) -> str:
        return (
            f"<HeightProber instances={len(self._groups)} inflight={len(self._inflight)} "
            f"polls={self.polls} failures={self.failures} recovery={self.recovery_probes}>"
        )

    async def run(self) -> None:
        """Tick until cancelled; in-flight polls are cancelled with it."""
        try:
            while True:
                self.tick(monotonic())
                await asyncio.sleep(self._tick_s)
        finally:
            for task in list(self._tasks):
                task.cancel()

    def tick(self, now: float) -> None:
        """One round: start due polls, then publish breaker, rate-limit and lag changes."""
        for group in self._refresh():
            self._maybe_probe(group, now)
        self.watch(now)

    def state_of(self, provider_id: str, chain: str | None = None) -> ProbeState | None:
        """The probe state of the instance behind ``provider_id`` (first match), for tests
        and diagnostics."""
        for g in self._refresh():
            for rt, ch in g.members:
                if ch.provider_id == provider_id and (chain is None or rt.key == chain):
                    return self.states.get(g.key)
        return None

    # -- polling ----------------------------------------------------------------------

    def _refresh(self) -> list[_Group]:
        runtime = self.runtime()
        if runtime is self._runtime:
            return self._groups
        groups: dict[GroupKey, _Group] = {}
        for rt in runtime.chains():
            interval = max(0.05, rt.config.probe_interval_ms / 1000.0)
            recovery = max(MIN_RECOVERY_INTERVAL_S, rt.config.recovery_probe_interval_ms / 1000.0)
            for ch in rt.router.channels:
                pool = rt.pools.get(ch.provider_id) if ch.transport == "http" else None
                if pool is None:
                    continue
                key = (id(pool), rt.config.chain_id, id(ch.breaker))
                group = groups.get(key)
                if group is None:
                    group = groups[key] = _Group(key, pool, ch.breaker, rt.config.chain_id)
                    group.provider, group.chain = ch.provider_id, rt.key
                group.members.append((rt, ch))
                group.interval = min(group.interval, interval)
                group.recovery_interval = min(group.recovery_interval, recovery)
        self._groups = list(groups.values())
        self._runtime = runtime
        for key in [k for k in self.states if k not in groups]:
            del self.states[key]
        for g in self._groups:
            state = self.states.get(g.key)
            if state is None:
                state = self.states[g.key] = ProbeState()
            standing = state.config_fault
            for rt, ch in g.members:  # a reload builds new channels: carry the verdict over
                ch.probe_status = state.status
                if standing is not None:
                    rt.router.observe_config_fault(ch, standing[0], standing[1])
        intervals = [min(g.interval, g.recovery_interval) for g in self._groups]
        self._tick_s = min(TICK_S, max(MIN_TICK_S, min(intervals, default=TICK_S) / 4))
        live = {(rt.profile, rt.key) for rt in runtime.chains()}
        self._lagging = {k: v for k, v in self._lagging.items() if k in live}
        self._rate_limited = {k: v for k, v in self._rate_limited.items() if k[:2] in live}
        return self._groups

    def _maybe_probe(self, g: _Group, now: float) -> None:
        if g.key in self._inflight:
            return
        state = self.states[g.key]
        breaker = g.breaker
        bstate = breaker.state(now)
        if bstate is _OPEN:
            # Probe-assisted recovery: only a health open, at the recovery cadence, the
            # first probe a gap after it opened. Any other open gets nothing: its recovery
            # timeout is the back-off.
            opened_at = breaker.opened_at
            if opened_at is None or not breaker.probe_assisted(now):
                return
            interval = g.recovery_interval
            if not state.recovery_probe_due(opened_at, now, interval, self.rng, self.policy):
                return
            state.recovery_sent(now, interval, self.rng, self.policy)
            self.recovery_probes += 1
            self._launch(g, state, False, True, opened_at)
            return
        last = g.last_client_attempt()
        idle = last is None or now - last >= g.interval
        if bstate is _HALF_OPEN:
            # The probe may be the half-open probe: taken through normal admission, so a
            # client probe in flight wins and the probe waits for the next tick. A
            # half-open channel is tier 2 and sees little client traffic, so the prober
            # also drives the trial at the recovery cadence.
            cadence = now >= state.recovery_due
            if not (idle or state.due(now) or cadence) or not breaker.admit(now):
                return
            state.recovery_sent(now, g.recovery_interval, self.rng, self.policy)
            holds_slot, report = True, True
        else:
            if not state.due(now):
                return
            if state.chain_verified:
                seen = g.last_client_height()
                ours = state.last_probe
                if seen is not None and now - seen < g.interval and (ours is None or seen > ours):
                    return  # a client eth_blockNumber answered by it is fresh enough
            holds_slot, report = False, idle
        self._launch(g, state, holds_slot, report, None)

    def _launch(
        self,
        g: _Group,
        state: ProbeState,
        holds_slot: bool,
        report: bool,
        opened_at: float | None,
    ) -> None:
        self._inflight.add(g.key)
        task = asyncio.get_running_loop().create_task(
            self._probe(g, state, holds_slot, report, opened_at)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _probe(
        self,
        g: _Group,
        state: ProbeState,
        holds_slot: bool,
        report: bool,
        opened_at: float | None,
    ) -> None:
        """Send one probe and fold its answer in. ``opened_at`` is set for a probe of an
        open circuit (probe-assisted recovery): the open period it belongs to."""
        verifying = not state.chain_verified
        self.polls += 1
        bound = ANSWER_BOUND.set(LARGE_ANSWER)  # a number: a huge answer is cut, not read
        try:
            try:
                resp = await g.pool.exchange(
                    _CHAIN_BODY if verifying else _HEIGHT_BODY,
                    _PROBE_TID,
                    self.policy.timeout_s,
                    replay_safe=True,
                )
            except UpstreamError as exc:
                if not exc.provider_fault or isinstance(exc, PoolTimeout):
                    # Pool closed or exhausted: a local condition, nothing learned.
                    if holds_slot:
                        g.breaker.on_neutral(monotonic())
                    state.next_due = monotonic() + g.interval
                    return
                result = judge_error(exc.category, str(exc) or type(exc).__name__)
                fault: Fault | None = fault_of(exc)
            else:
                retry_after = parse_retry_after(resp.headers.get(b"retry-after"), time.time())
                result = judge_probe(
                    resp.status,
                    resp.body,
                    retry_after_s=retry_after,
                    expect_chain_id=g.chain_id if verifying else None,
                )
                fault = probe_result_fault(result, resp.status, time.time())
            now = monotonic()
            self._note_health(g, result, fault, now)
            self._finish(g, state, result, holds_slot, report, verifying, now, opened_at)
        except asyncio.CancelledError:
            if holds_slot:
                g.breaker.on_neutral(monotonic())
            raise
        except Exception:  # a probe bug must not kill the prober or leak the slot
            log.exception("probe failed unexpectedly", extra={"event": "probe.crashed"})
            if holds_slot:
                g.breaker.on_neutral(monotonic())
        finally:
            ANSWER_BOUND.reset(bound)
            self._inflight.discard(g.key)

    def _note_health(self, g: _Group, result: ProbeResult, fault: Fault | None, now: float) -> None:
        """The probe's outcome as the instance's last error and connection state (the
        members share one breaker, hence one :class:`~lasso.kernel.faults.ChannelHealth`).

        A wrong chain id is no fault of the upstream (it answered): it becomes the
        configuration fault of this group's channels alone, which belong to the chains
        configured with that chain id; other chains on the same upstream never see it.
        A verified chain id clears it.
        """
        rt, ch = g.members[0]
        state = self.states[g.key]
        if result.wrong_chain and fault is not None:
            rt.router.observe_reached(ch, now)
            if state.config_fault is None or state.config_fault[0].message != fault.message:
                state.config_fault = (fault, now)
            for member_rt, member in g.members:
                member_rt.router.observe_config_fault(member, fault, state.config_fault[1])
            return
        if result.kind is ProbeKind.OK and state.config_fault is not None:
            state.config_fault = None
            for member_rt, member in g.members:
                member_rt.router.observe_config_fault(member, None, now)
        if fault is None:
            rt.router.observe_reached(ch, now)
        else:
            rt.router.observe_fault(ch, fault, now)

    def _finish(
        self,
        g: _Group,
        state: ProbeState,
        result: ProbeResult,
        holds_slot: bool,
        report: bool,
        verifying: bool,
        now: float,
        opened_at: float | None = None,
    ) -> None:
        kind = result.kind
        if kind is not ProbeKind.OK:
            self.failures += 1
        if opened_at is not None:
            state.recovery_counts[kind] += 1
        if verifying and result.wrong_chain:
            report = True  # a wrong chain counts even when busy: it serves another chain
        old_status = state.status
        if report:
            state.record(result, now, g.interval, self.rng, self.policy)
        else:
            # Busy: clients judge its health; this poll only fed (or failed to feed) a
            # height. Keep the cadence, and do not add to a provider's quota trouble.
            state.counts[kind] += 1
            state.last_probe = now
            wait = self.policy.rate_limit_backoff_s if kind is ProbeKind.RATE_LIMITED else 0.0
            state.next_due = now + max(g.interval, wait)
        if kind is ProbeKind.OK:
            if verifying:
                state.chain_verified = True
                state.next_due = now  # the height poll follows at once
            elif result.value is not None:
                for rt, ch in g.members:
                    rt.router.observe_height(ch.provider_id, result.value, now)
        else:
            log.debug(
                "probe %s",
                kind,
                extra={
                    "event": "probe." + kind,
                    "provider": g.provider,
                    "chain": g.chain,
                    "detail": result.detail,
                    "counted": report,
                },
            )
        if not report:
            return
        if opened_at is not None:  # a probe of an open circuit: never a breaker failure
            tr = apply_recovery_probe(
                result, g.breaker, now, opened_at=opened_at, policy=self.policy
            )
        else:
            tr = apply_to_breaker(result, g.breaker, now, holds_slot=holds_slot, policy=self.policy)
        if tr is not None:
            self._publish_transition(g.members, tr)
        if kind is ProbeKind.RATE_LIMITED:
            until = now + max(self.policy.rate_limit_mark_s, result.retry_after_s or 0.0)
            for _rt, ch in g.members:
                ch.evidence.mark_rate_limited(until)
        for _rt, ch in g.members:
            ch.probe_status = state.status
        if (state.status == "misconfigured") != (old_status == "misconfigured"):
            name = (
                "provider.misconfigured"
                if state.status == "misconfigured"
                else "provider.configured"
            )
            level = logging.ERROR if state.status == "misconfigured" else logging.INFO
            for rt, ch in g.members:
                self._event(rt, name, level, provider=ch.provider_id, detail=result.detail)

    # -- watching ---------------------------------------------------------------------

    def watch(self, now: float) -> None:
        """Publish due breaker recoveries, rate-limit starts/ends and lag crossings."""
        breakers: dict[int, tuple[CircuitBreaker, list[tuple[ChainRuntime, Channel]]]] = {}
        for rt in self.runtime().chains():
            router = rt.router
            for ch in router.channels:
                entry = breakers.get(id(ch.breaker))
                if entry is None:
                    entry = breakers[id(ch.breaker)] = (ch.breaker, [])
                entry[1].append((rt, ch))
                key = (rt.profile, rt.key, ch.key)
                limited = ch.evidence.rate_limited(now)
                if limited != self._rate_limited.get(key, False):
                    self._rate_limited[key] = limited
                    if limited:
                        remaining = round(ch.evidence.rate_limit_remaining(now), 3)
                        last = ch.health.last
                        self._event(
                            rt,
                            "provider.rate_limited",
                            logging.WARNING,
                            provider=ch.provider_id,
                            transport=ch.transport,
                            remaining_s=remaining,
                            **(
                                {"error": last.message}
                                if last is not None and last.category == "rate_limit"
                                else {}
                            ),
                        )
                    else:
                        self._event(
                            rt,
                            "provider.rate_limit_cleared",
                            logging.INFO,
                            provider=ch.provider_id,
                            transport=ch.transport,
                        )
            self._watch_lag(rt, now)
        for breaker, members in breakers.values():
            tr = breaker.tick(now)
            if tr is not None:
                self._publish_transition(members, tr)
        self.health_log.watch(self.runtime())

    def _watch_lag(self, rt: ChainRuntime, now: float) -> None:
        state = rt.router.state
        threshold = rt.config.lag_alert_threshold_blocks
        previous = self._lagging.get((rt.profile, rt.key), {})
        current: dict[str, int] = {}
        for provider in rt.config.providers:
            pid = provider.id
            lag = state.optimistic_lag(pid, now)
            if lag is None:
                if pid in previous:  # no consensus for now: keep the last verdict
                    current[pid] = previous[pid]
                continue
            if lag > threshold:
                current[pid] = lag
                if pid not in previous:
                    self._event(
                        rt,
                        "provider.lagging",
                        logging.WARNING,
                        provider=pid,
                        lag=lag,
                        height=state.height(pid),
                        consensus_height=state.consensus(now),
                        threshold=threshold,
                    )
            elif pid in previous:
                self._event(
                    rt,
                    "provider.caught_up",
                    logging.INFO,
                    provider=pid,
                    lag=lag,
                    height=state.height(pid),
                    threshold=threshold,
                )
        self._lagging[(rt.profile, rt.key)] = current

    def lagging(self, profile: str, chain: str) -> dict[str, int]:
        """Providers currently reported as lagging on ``profile``/``chain``, with their lag."""
        return dict(self._lagging.get((profile, chain), {}))

    # -- output -----------------------------------------------------------------------

    def _publish_transition(
        self, members: Iterable[tuple[ChainRuntime, Channel]], tr: Transition
    ) -> None:
        closed = tr.new is BreakerState.CLOSED
        for rt, ch in members:
            if closed:  # probes closed it: let client traffic find the provider again
                ch.evidence.clear_failure_streak()
            rt.events.transition(rt, ch, tr)

    def _event(self, rt: ChainRuntime, name: str, level: int, **fields: Any) -> None:
        event: dict[str, Any] = {
            "type": "provider",
            "event": name,
            "profile": rt.profile,
            "chain": rt.key,
            **fields,
        }
        fields_only = {k: v for k, v in event.items() if k != "type"}
        events_log.log(level, name.replace(".", " ").replace("_", " "), extra=fields_only)
        rt.events.state(event)

    def collect(self, node: str, now: float) -> Iterable[Metric]:
        """Prometheus series: ``lasso_health_probes_total{chain,provider,outcome}`` and,
        of those, the probes of open circuits: ``lasso_recovery_probes_total``."""
        labels = ["node_id", "chain", "provider", "outcome"]
        probes = CounterMetricFamily(
            "lasso_health_probes", "Health and height probes sent, by outcome", labels=labels
        )
        recovery = CounterMetricFamily(
            "lasso_recovery_probes",
            "Health probes sent to open circuits (probe-assisted recovery), by outcome",
            labels=labels,
        )
        for g in self._groups:
            state = self.states.get(g.key)
            if state is None:
                continue
            for outcome, n in state.counts.items():
                if n:
                    probes.add_metric([node, g.chain, g.provider, str(outcome)], n)
            for outcome, n in state.recovery_counts.items():
                if n:
                    recovery.add_metric([node, g.chain, g.provider, str(outcome)], n)
        yield probes
        yield recovery
