"""How a simulated provider misbehaves: the ``Behavior`` value, rate limiting and counters.

Pure code: time arrives as ``now`` and randomness as a ``random.Random``-like object, so
the provider adapter decides and this module computes.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from dataclasses import replace as _dataclass_replace
from typing import Any, Literal, Protocol, get_args

from lasso.sim.hostile import HOSTILE_MODES, HostileMode

__all__ = [
    "Behavior",
    "ErrorMode",
    "ProviderStats",
    "RateLimitMode",
    "TokenBucket",
    "sample_latency_s",
]

ErrorMode = Literal["http500", "jsonrpc"]
RateLimitMode = Literal["http429", "jsonrpc"]


class _Rng(Protocol):
    def random(self) -> float: ...

    def gauss(self, mu: float, sigma: float) -> float: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Behavior:
    """One provider's simulated behaviour; every field can change while it runs.

    Fault precedence for a request: ``down`` (connection closed), rate limit, ``hang``,
    latency, ``drop``, ``hostile`` (HTTP only), ``error_rate``, ``malformed``, then a
    normal answer.

    Attributes:
        latency_ms: median response delay.
        jitter: sigma of the lognormal spread around the median (0 = constant delay;
            0.5 gives a p99 near 3x the median).
        tail_rate: fraction of answers (0..1) that are ``tail_ms`` late on top: a
            heavy tail (a GC pause, a cold cache, a queue) that no median predicts.
        tail_ms: how late a tail answer is.
        method_latency_ms: per-method median overrides (a batch takes its slowest);
            the key ``eth_subscription`` sets the delay of WebSocket notifications.
        error_rate: fraction of requests (0..1) that fail with an internal error.
        error_mode: ``"http500"`` (HTTP 500 with a JSON-RPC body) or ``"jsonrpc"``
            (HTTP 200, every call answered with ``-32603``).
        rate_limit_rps: token-bucket refill rate in calls per second (None = unlimited);
            a batch costs one token per call.
        rate_limit_burst: bucket size (defaults to ``max(1, rate_limit_rps)``).
        rate_limit_mode: ``"http429"`` (HTTP 429, ``Retry-After: 1``, ``-32005`` body) or
            ``"jsonrpc"`` (HTTP 200, every call answered with ``-32005``).
        lag_blocks: this provider's head is the chain head minus this (never below a head
            it already served: raising the lag stalls the provider until the chain is
            that far ahead, as a real node falling behind).
        hang: accept requests and never answer them (the connection is closed when
            ``hang`` is turned off or the provider stops).
        down: refuse connections (the listening socket is closed; reopened on the same
            port when ``down`` turns false). Open connections are reset.
        drop: close the connection without answering, after the latency.
        malformed: answer HTTP 200 with a truncated or non-JSON body.
        max_block_range: largest ``eth_getLogs`` range (None = up to the scan limit).
        archival: serve state at any block; when false, state older than
            ``archive_depth`` blocks fails with ``missing trie node``.
        archive_depth: how many recent blocks of state a non-archival provider keeps.
        unsupported_methods: methods answered with ``-32601``.
        max_batch_size: largest JSON-RPC batch (None = unlimited, 0 = no batches).
        websocket: serve ``/ws``.
        hostile: answer every HTTP request in one hostile mode (None = off): ``slow_drip``,
            ``huge``, ``truncated``, ``wrong_id``, ``id_in_result``,
            ``absurd_retry_after`` or ``html_200`` (see :mod:`lasso.sim.hostile`).
        huge_bytes: size of the ``result`` string of a ``huge`` answer (default 160 MiB,
            over Lasso's default 128 MiB bound).
        drip_bytes, drip_interval_ms: a ``slow_drip`` answer sends this many bytes, then
            waits this long, until it is all out.
    """

    latency_ms: float = 0.0
    jitter: float = 0.0
    tail_rate: float = 0.0
    tail_ms: float = 0.0
    method_latency_ms: Mapping[str, float] = field(default_factory=dict)
    error_rate: float = 0.0
    error_mode: ErrorMode = "jsonrpc"
    rate_limit_rps: float | None = None
    rate_limit_burst: float | None = None
    rate_limit_mode: RateLimitMode = "http429"
    lag_blocks: int = 0
    hang: bool = False
    down: bool = False
    drop: bool = False
    malformed: bool = False
    max_block_range: int | None = None
    archival: bool = True
    archive_depth: int = 128
    unsupported_methods: frozenset[str] = frozenset()
    max_batch_size: int | None = None
    websocket: bool = True
    hostile: HostileMode | None = None
    huge_bytes: int = 160 * 1024 * 1024
    drip_bytes: int = 1
    drip_interval_ms: float = 100.0

    def __post_init__(self) -> None:
        _non_negative(self, "latency_ms")
        _non_negative(self, "jitter")
        _fraction(self, "tail_rate")
        _non_negative(self, "tail_ms")
        _fraction(self, "error_rate")
        _choice(self, "error_mode", get_args(ErrorMode))
        _choice(self, "rate_limit_mode", get_args(RateLimitMode))
        _optional_positive(self, "rate_limit_rps", float)
        _optional_positive(self, "rate_limit_burst", float)
        _optional_positive(self, "max_block_range", int)
        _integer(self, "lag_blocks")
        _integer(self, "archive_depth")
        if self.hostile is not None:
            _choice(self, "hostile", HOSTILE_MODES)
        _optional_positive(self, "huge_bytes", int)
        _optional_positive(self, "drip_bytes", int)
        _non_negative(self, "drip_interval_ms")
        if self.max_batch_size is not None:
            _integer(self, "max_batch_size")
        for name in ("hang", "down", "drop", "malformed", "archival", "websocket"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a boolean, got {getattr(self, name)!r}")
        methods = self.unsupported_methods
        if isinstance(methods, str) or not isinstance(methods, Iterable):
            raise ValueError(f"unsupported_methods must be a list of names, got {methods!r}")
        object.__setattr__(self, "unsupported_methods", frozenset(map(str, methods)))
        overrides = self.method_latency_ms
        if not isinstance(overrides, Mapping):
            raise ValueError(f"method_latency_ms must be a mapping, got {overrides!r}")
        checked: dict[str, float] = {}
        for method, value in overrides.items():
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"method_latency_ms[{method!r}] must be >= 0, got {value!r}")
            checked[str(method)] = float(value)
        object.__setattr__(self, "method_latency_ms", checked)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Behavior:
        """Build a behaviour from JSON/YAML fields.

        Raises:
            ValueError: on an unknown field or a bad value, naming it.
        """
        return cls().replace(**data)

    def replace(self, **changes: Any) -> Behavior:
        """Return a copy with ``changes`` applied and validated.

        Raises:
            ValueError: on an unknown field or a bad value, naming it.
        """
        unknown = sorted(set(changes) - set(self.field_names()))
        if unknown:
            raise ValueError(
                f"unknown behaviour field(s) {', '.join(unknown)}; "
                f"known: {', '.join(self.field_names())}"
            )
        try:
            return _dataclass_replace(self, **changes)
        except TypeError as exc:  # e.g. a comparison against a string
            raise ValueError(str(exc)) from exc

    @staticmethod
    def field_names() -> tuple[str, ...]:
        """Return the names of every behaviour field."""
        return tuple(f.name for f in fields(Behavior))

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict that :meth:`from_mapping` accepts back."""
        out = {name: getattr(self, name) for name in self.field_names()}
        out["unsupported_methods"] = sorted(self.unsupported_methods)
        out["method_latency_ms"] = dict(self.method_latency_ms)
        return out


def _non_negative(b: Behavior, name: str) -> None:
    value = getattr(b, name)
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise ValueError(f"{name} must be a number >= 0, got {value!r}")
    object.__setattr__(b, name, float(value))


def _fraction(b: Behavior, name: str) -> None:
    _non_negative(b, name)
    if getattr(b, name) > 1:
        raise ValueError(f"{name} must be between 0 and 1, got {getattr(b, name)!r}")


def _integer(b: Behavior, name: str) -> None:
    value = getattr(b, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be an integer >= 0, got {value!r}")


def _optional_positive(b: Behavior, name: str, kind: type[int] | type[float]) -> None:
    value = getattr(b, name)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"{name} must be a number > 0 or null, got {value!r}")
    if kind is int and value != int(value):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    object.__setattr__(b, name, kind(value))


def _choice(b: Behavior, name: str, allowed: tuple[str, ...]) -> None:
    if getattr(b, name) not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {getattr(b, name)!r}")


def sample_latency_s(behavior: Behavior, methods: Iterable[str], rng: _Rng) -> float:
    """Draw one response delay in seconds for a request carrying ``methods``.

    The median is ``latency_ms`` (or the slowest per-method override present); the spread
    is lognormal with sigma ``jitter``, which gives the long right tail real providers show;
    a ``tail_rate`` share of answers is ``tail_ms`` later still.
    """
    median_ms = behavior.latency_ms
    overrides = behavior.method_latency_ms
    if overrides:
        chosen = [overrides[m] for m in methods if m in overrides]
        if chosen:
            median_ms = max(chosen)
    delay_ms = median_ms if median_ms > 0 else 0.0
    if delay_ms and behavior.jitter > 0:
        delay_ms *= math.exp(rng.gauss(0.0, behavior.jitter))
    # The tail draws from the rng only when set, so other behaviours' draws stay as they were.
    if behavior.tail_rate > 0 and rng.random() < behavior.tail_rate:
        delay_ms += behavior.tail_ms
    return delay_ms / 1000.0


class TokenBucket:
    """A token bucket: ``rate`` tokens per second, at most ``burst`` stored.

    Starts full. ``take`` never blocks: it answers whether the request may pass now.
    """

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._updated = now

    def take(self, now: float, cost: float = 1.0) -> bool:
        """Take ``cost`` tokens (capped at ``burst``) if available; return whether it did."""
        elapsed = max(0.0, now - self._updated)
        self._tokens = min(self.burst, self._tokens + elapsed * self.rate)
        self._updated = max(now, self._updated)
        cost = min(cost, self.burst)
        if self._tokens >= cost:
            self._tokens -= cost
            return True
        return False

    def __repr__(self) -> str:
        return f"<TokenBucket rate={self.rate} burst={self.burst} tokens={self._tokens:.2f}>"


@dataclass(slots=True)
class ProviderStats:
    """Counters of one simulated provider, resettable with :meth:`reset`.

    Attributes:
        requests: HTTP requests and WebSocket messages received.
        calls: JSON-RPC calls received (a batch counts each member).
        methods: calls per method.
        statuses: HTTP responses per status code (as a string), plus ``"dropped"`` and
            ``"hung"`` for requests that got no response.
        faults: injected faults per kind (``down``, ``rate_limited``, ``hung``,
            ``dropped``, ``error``, ``malformed``).
        rpc_errors: JSON-RPC error objects sent, per code.
        ws_connections: open WebSocket connections (not reset).
        ws_notifications: subscription notifications sent.
    """

    requests: int = 0
    calls: int = 0
    methods: Counter[str] = field(default_factory=Counter)
    statuses: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    rpc_errors: Counter[int] = field(default_factory=Counter)
    ws_connections: int = 0
    ws_notifications: int = 0

    def reset(self) -> None:
        """Zero every counter except the open-connection gauge."""
        self.requests = 0
        self.calls = 0
        self.methods.clear()
        self.statuses.clear()
        self.faults.clear()
        self.rpc_errors.clear()
        self.ws_notifications = 0

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready snapshot."""
        return {
            "requests": self.requests,
            "calls": self.calls,
            "methods": dict(self.methods),
            "statuses": dict(self.statuses),
            "faults": dict(self.faults),
            "rpc_errors": {str(code): n for code, n in self.rpc_errors.items()},
            "ws_connections": self.ws_connections,
            "ws_notifications": self.ws_notifications,
        }
