"""Limits: defaults, validation, environment variables and ``--limit`` flags, the cap."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lasso.net.limits import MIN_RESERVED_FILES, Limits, connection_cap


def test_defaults_follow_the_documented_choices() -> None:
    """The defaults are the documented ones (docs/operations.md#limits)."""
    limits = Limits()
    assert limits.max_header_line == 8192 and limits.max_head == 32768
    assert limits.max_headers == 100 and limits.max_pipeline == 20
    assert (limits.head_timeout, limits.request_timeout) == (10.0, 60.0)
    assert limits.keepalive_timeout == 75.0
    assert (limits.lingering_time, limits.lingering_timeout) == (30.0, 5.0)
    assert limits.max_upstream_response == 128 * 1024 * 1024
    assert limits.max_redis_pending_bytes == 64 * 1024 * 1024
    assert limits.max_connections == 10_000


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"max_head": 0}, "max_head must be an integer >= 1"),
        ({"max_headers": 2.5}, "max_headers must be an integer"),
        ({"head_timeout": -1}, "head_timeout must be > 0"),
        ({"head_timeout": float("nan")}, "head_timeout must be > 0"),
        ({"max_header_line": 40000}, "must not exceed max_head"),
        ({"head_timeout": 100}, "must not exceed request_timeout"),
        ({"max_pipeline": True}, "max_pipeline must be an integer"),
        ({"max_redis_pending_bytes": 0}, "max_redis_pending_bytes must be an integer >= 1"),
    ],
)
def test_bad_values_are_refused_with_the_name(changes: dict[str, object], message: str) -> None:
    """Every bad value is a ValueError naming the limit."""
    with pytest.raises(ValueError, match=message):
        Limits().with_changes(changes)


def test_environment_then_flags_override_the_defaults() -> None:
    """LASSO_<NAME> beats the default; --limit name=value beats the environment."""
    env = {"LASSO_MAX_CONNECTIONS": "20_000", "LASSO_HEAD_TIMEOUT": "5", "LASSO_OTHER": "x"}
    limits = Limits.from_sources(env, ["head_timeout=2.5", "max_pipeline = 4"])
    assert limits.max_connections == 20_000
    assert limits.head_timeout == 2.5 and limits.max_pipeline == 4


@pytest.mark.parametrize(
    ("env", "flags", "message"),
    [
        ({"LASSO_MAX_HEAD": "big"}, [], "LASSO_MAX_HEAD: max_head='big' is not a number"),
        ({}, ["max_heads=3"], "unknown limit 'max_heads'"),
        ({}, ["max_head"], "expected name=value"),
        ({}, ["max_pipeline=0"], "--limit max_pipeline: max_pipeline must be an integer >= 1"),
    ],
)
def test_bad_sources_name_where_the_value_came_from(
    env: dict[str, str], flags: list[str], message: str
) -> None:
    """A bad environment variable or flag says which one."""
    with pytest.raises(ValueError, match=message):
        Limits.from_sources(env, flags)


@given(st.integers(1, 10**7), st.integers(16, 10**7))
def test_the_cap_stays_under_the_open_file_limit(wanted: int, files: int) -> None:
    """The cap never exceeds the setting, leaves the reserve free, and is at least 1."""
    cap = connection_cap(wanted, files)
    assert 1 <= cap <= wanted
    assert cap == 1 or cap <= files - max(MIN_RESERVED_FILES, files // 4)


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--limit", "max_heads=3"], {}, "unknown limit 'max_heads'"),
        (["--limit", "max_head=0"], {}, "max_head must be an integer >= 1"),
        ([], {"LASSO_HEAD_TIMEOUT": "soon"}, "LASSO_HEAD_TIMEOUT: head_timeout='soon'"),
    ],
)
def test_serve_refuses_a_bad_limit_with_its_name(
    args: list[str], env: dict[str, str], message: str, tmp_path: Any
) -> None:
    """`lasso serve` exits 2 and names the bad flag or variable, before doing anything."""
    out = subprocess.run(
        [sys.executable, "-m", "lasso", "serve", "--profiles", str(tmp_path), *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **env},
    )
    assert out.returncode == 2
    assert message in out.stderr and "Traceback" not in out.stderr


@pytest.mark.integration
async def test_the_node_serves_with_its_settings_limits() -> None:
    """Settings(limits=...) reaches the client-facing server and the upstream pools."""
    from lasso.app import LassoApp, Settings

    limits = Limits(max_headers=3, max_upstream_response=1_000_000)
    app = LassoApp({}, Settings(probes=False, limits=limits))
    port = await app.start("127.0.0.1", 0)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /api/health HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 431")
        writer.close()
        assert app.server.limits is limits
        assert app.pools.max_response_size == 1_000_000
    finally:
        await app.stop(drain_timeout=1.0)
