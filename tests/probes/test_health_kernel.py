"""Kernel pieces behind provider health: quota bodies, Retry-After, rate-limit marks and the
provider status word (the judgement of whole answers is tested in tests/kernel/test_judge.py)."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lasso.config import ChainConfig, ProviderConfig
from lasso.kernel.breaker import BreakerConfig
from lasso.kernel.classify import (
    Category,
    classify_http_status,
    is_quota_body,
    parse_retry_after,
)
from lasso.kernel.clock import FakeClock
from lasso.kernel.router import PROVIDER_STATUSES, BreakerRegistry, ChainRouter
from lasso.kernel.stats import ChannelEvidence

NOW_WALL = 1_750_000_000.0


# -- classify: HTTP statuses with bodies ----------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "category"),
    [
        (429, b"", "rate_limit"),
        (403, b"", "auth_error"),
        (403, b"Forbidden", "auth_error"),
        (403, b"Daily QUOTA exceeded", "rate_limit"),
        (403, b"monthly request limit reached", "rate_limit"),
        (403, b"Too Many Requests", "rate_limit"),
        (403, b"throttled", "rate_limit"),
        (401, b"quota", "auth_error"),  # 401 is about credentials, whatever it says
        (500, b"", "server_error"),
        (503, b"rate limited, retry later", "rate_limit"),
        (502, b"<h1>429 Too Many Requests</h1>", "rate_limit"),
        (500, b"limit of 5 connections", "server_error"),  # 5xx needs the narrow wording
        (404, b"quota", "server_error"),
    ],
)
def test_http_status_with_body(status: int, body: bytes, category: str) -> None:
    """403 quota bodies and 5xx rate-limit bodies are rate limits; others keep the status."""
    assert classify_http_status(status, body) == category


def test_quota_body_reads_only_a_bounded_prefix() -> None:
    """A huge body is searched only in its first 4 KiB."""
    assert not is_quota_body(403, b" " * 10_000 + b"quota")
    assert is_quota_body(403, b"quota" + b" " * 10_000)
    assert not is_quota_body(200, b"quota")


# -- Retry-After ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b"120", 120.0),
        ("  7 ", 7.0),
        (b"1.5", 1.5),
        (b"0", 0.0),
        (None, None),
        (b"", None),
        (b"-5", None),
        (b"soon", None),
        (b"inf", None),
        (b"nan", None),
    ],
)
def test_retry_after_seconds(value: bytes | str | None, expected: float | None) -> None:
    """delay-seconds parse; negative, infinite or junk values do not."""
    assert parse_retry_after(value, NOW_WALL) == expected


def test_retry_after_http_dates() -> None:
    """IMF-fixdate, RFC 850 and asctime dates become delays from now; past dates are 0."""
    when = datetime.fromtimestamp(NOW_WALL + 90, UTC)
    imf = format_datetime(when, usegmt=True)
    assert parse_retry_after(imf.encode(), NOW_WALL) == pytest.approx(90.0)
    rfc850 = when.strftime("%A, %d-%b-%y %H:%M:%S GMT")
    assert parse_retry_after(rfc850, NOW_WALL) == pytest.approx(90.0)
    asctime = when.strftime("%a %b %d %H:%M:%S %Y")
    assert parse_retry_after(asctime, NOW_WALL) == pytest.approx(90.0)
    assert parse_retry_after(imf, NOW_WALL + 1000) == 0.0


@settings(max_examples=300, deadline=None)
@given(value=st.one_of(st.binary(max_size=60), st.text(max_size=60)))
def test_retry_after_never_raises(value: bytes | str) -> None:
    """Any header value yields a finite non-negative delay or None."""
    got = parse_retry_after(value, NOW_WALL)
    assert got is None or got >= 0.0


# -- evidence marks -------------------------------------------------------------------


def test_mark_rate_limited_extends_without_counting() -> None:
    """A probe's mark extends the expiry, never shortens it, and counts nothing."""
    ev = ChannelEvidence()
    assert ev.mark_rate_limited(60.0)
    assert not ev.mark_rate_limited(30.0)
    assert ev.rate_limited(59.0) and not ev.rate_limited(60.0)
    assert ev.total_rate_limits == 0 and ev.comparable_attempts == 0
    assert ev.success_prob is None and ev.last_observed is None


# -- provider status ------------------------------------------------------------------


def router(clock: FakeClock, **chain_kw: object) -> ChainRouter:
    providers = tuple(
        ProviderConfig(id=p, name=p, url=f"https://{p}.example/rpc") for p in ("a", "b", "c")
    )
    chain = ChainConfig(
        key="ethereum",
        chain_id=1,
        name="Ethereum",
        providers=providers,
        **chain_kw,  # type: ignore[arg-type]
    )
    rng = random.Random(1)
    return ChainRouter(chain, BreakerRegistry(BreakerConfig(), rng), rng, profile="t")


def test_provider_status_ranks_the_most_severe_condition() -> None:
    """misconfigured > circuit_open > rate_limited > recovering > degraded > lagging > healthy."""
    clock = FakeClock()
    r = router(clock, lag_alert_threshold_blocks=3)
    now = clock.now()
    a = r.channel("a", "http")
    assert a is not None
    for pid in ("a", "b", "c"):
        r.observe_height(pid, 100, now)
    assert r.provider_status("a", now) == "healthy"
    r.observe_height("a", 90, now)
    assert r.provider_status("a", now) == "lagging"
    r.record_failure(a, "eth_call", Category.SERVER_ERROR, 0.01, now)
    assert r.provider_status("a", now) == "degraded"
    r.record_success(a, "eth_call", 0.01, now)
    a.probe_status = "unhealthy"
    assert r.provider_status("a", now) == "degraded"
    a.probe_status = "healthy"
    a.breaker.force_open(now)
    assert r.provider_status("a", now) == "circuit_open"
    clock.advance(70)
    now = clock.now()
    assert r.provider_status("a", now) == "recovering"
    a.evidence.mark_rate_limited(now + 5)
    assert r.provider_status("a", now) == "rate_limited"
    a.breaker.force_open(now)
    a.probe_status = "misconfigured"
    assert r.provider_status("a", now) == "misconfigured"
    assert r.provider_status("nobody", now) == "healthy"
    assert set(PROVIDER_STATUSES) >= {r.provider_status(p, now) for p in ("a", "b", "c")}


def test_snapshot_shows_status_and_probe_verdict() -> None:
    """The API snapshot carries the provider status and each channel's probe verdict."""
    clock = FakeClock()
    r = router(clock)
    a = r.channel("a", "http")
    assert a is not None
    a.probe_status = "rate_limited"
    a.evidence.mark_rate_limited(clock.now() + 60)
    snap = r.snapshot(clock.now())
    providers: Any = snap["providers"]
    prov = {p["id"]: p for p in providers}
    assert prov["a"]["status"] == "rate_limited"
    assert prov["a"]["channels"]["http"]["probe"] == "rate_limited"
    assert prov["b"]["status"] == "healthy"
    assert prov["b"]["channels"]["http"]["probe"] == "unknown"
