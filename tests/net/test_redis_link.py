"""RedisLink against a real redis-server: serving, failing fast while down, recovering."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from lasso.net.redis_link import (
    RedisLink,
    RedisUnavailable,
    check_redis_url,
    redis_url_from_env,
)

from redis_support import RedisServer
from support import eventually, free_port


class StepClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def _set_get(link: RedisLink, key: str, value: bytes) -> Any:
    await link.call(lambda r: r.set(key, value))
    return await link.call(lambda r: r.get(key))


async def test_link_serves_commands(redis: RedisServer) -> None:
    """A healthy link runs commands and counts them."""
    link = RedisLink(redis.url, op_timeout=1.0)
    try:
        assert await _set_get(link, "k", b"v") == b"v"
        assert link.calls == 2 and link.failures == 0 and link.up
        assert "calls=2" in repr(link)
    finally:
        await link.aclose()


async def test_link_fails_fast_while_down_and_recovers_by_itself(
    redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Three failures open the link; then calls are refused without touching Redis, and a
    trial after the recovery delay closes it again once Redis is back."""
    clock = StepClock()
    link = RedisLink(redis.url, op_timeout=0.5, clock=clock)
    try:
        assert await _set_get(link, "a", b"1") == b"1"
        redis.stop()
        caplog.set_level(logging.INFO, logger="lasso.redis")
        for _ in range(3):
            with pytest.raises(RedisUnavailable):
                await link.call(lambda r: r.get("a"))
        assert link.failures == 3 and not link.up and not link.available()
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "redis unavailable" in warnings[0].getMessage()

        calls_before = link.calls
        for _ in range(50):  # refused at once: no attempt reaches the client
            with pytest.raises(RedisUnavailable):
                await link.call(lambda r: r.get("a"))
        assert link.calls == calls_before and link.refused == 50

        redis.start()
        clock.now += 1.1  # the first recovery trial is due after 1 s (+ up to 5 % jitter)
        assert link.available()
        assert await link.call(lambda r: r.set("a", b"2"))
        assert link.up and link.available()
        assert any("recovered" in r.getMessage() for r in caplog.records)
    finally:
        redis.start()
        await link.aclose()


async def test_failed_trial_backs_off() -> None:
    """A failed recovery trial doubles the wait before the next one."""
    clock = StepClock()
    link = RedisLink(f"redis://127.0.0.1:{free_port()}/0", op_timeout=0.5, clock=clock)
    try:
        for _ in range(3):
            with pytest.raises(RedisUnavailable):
                await link.call(lambda r: r.ping())
        assert not link.available()
        clock.now += 1.1
        with pytest.raises(RedisUnavailable):  # the trial fails: reopen for 2 s
            await link.call(lambda r: r.ping())
        clock.now += 1.8
        assert not link.available()
        clock.now += 0.35
        assert link.available()
    finally:
        await link.aclose()


async def test_real_time_recovery(redis: RedisServer) -> None:
    """With the real clock, the link comes back within a few seconds of Redis returning."""
    link = RedisLink(redis.url, op_timeout=0.5)
    try:
        redis.stop()
        for _ in range(3):
            with pytest.raises(RedisUnavailable):
                await link.call(lambda r: r.ping())
        redis.start()

        async def works() -> bool:
            try:
                return bool(await link.call(lambda r: r.ping()))
            except RedisUnavailable:
                return False

        await eventually(works, timeout=5, interval=0.1, message="link recovered")
    finally:
        await link.aclose()


def test_url_checks() -> None:
    """Bad LASSO_REDIS_URL values are refused with a reason; good ones pass."""
    assert check_redis_url("redis://127.0.0.1:6379/0") is None
    assert check_redis_url("rediss://user:pw@cache.example.com:6380/1") is None
    assert check_redis_url("unix:///run/redis.sock") is None
    assert "must start with" in (check_redis_url("http://x:1") or "")
    assert "not a valid URL" in (check_redis_url("redis://h:99999/0") or "")
    assert "no host" in (check_redis_url("redis:///0") or "")
    assert redis_url_from_env({}) is None
    assert redis_url_from_env({"LASSO_REDIS_URL": "  "}) is None
    with pytest.raises(ValueError, match="must start with"):
        redis_url_from_env({"LASSO_REDIS_URL": "localhost:6379"})


def test_password_stays_out_of_repr() -> None:
    """The URL's password never shows in the link's repr (which reaches logs)."""
    link = RedisLink("redis://app:s3cret@127.0.0.1:1/0")
    assert "s3cret" not in repr(link)
