"""Profiles: the chain's ``cache`` section and ``routing.coalesce`` (CONTRACT §7)."""

from __future__ import annotations

import textwrap

import pytest

from lasso.config import DEFAULT_CACHE_MAX_BYTES, CacheConfig
from lasso.profiles import ConfigError, parse_profile

BASE = """\
---
name: Test
---
chains:
  ethereum:
    chain_id: 1
{extra}
    providers:
      - id: a
        url: http://a.example
"""


def profile(extra: str = "") -> str:
    return BASE.format(extra=textwrap.indent(textwrap.dedent(extra).strip("\n"), "    "))


def problems(extra: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_profile(profile(extra), "p.yml", {})
    return [str(p) for p in info.value.problems]


def test_defaults_when_absent() -> None:
    """No cache section: cache on, 64 MiB, depth 64, head TTL from the block time; coalescing on."""
    chain = parse_profile(profile(), "p.yml", {}).chains["ethereum"]
    assert chain.cache == CacheConfig()
    assert chain.cache.enabled and chain.cache.max_bytes == DEFAULT_CACHE_MAX_BYTES
    assert chain.cache.finality_depth == 64
    assert chain.coalesce is True


def test_values_are_read() -> None:
    """Every key lands in CacheConfig; routing.coalesce false turns coalescing off."""
    chain = parse_profile(
        profile(
            """
            routing:
              coalesce: false
            cache:
              enabled: false
              max_bytes: 1048576
              finality_depth: 12
              realtime_ttl_ms: 250
            """
        ),
        "p.yml",
        {},
    ).chains["ethereum"]
    assert chain.coalesce is False
    assert chain.cache == CacheConfig(
        enabled=False, max_bytes=1048576, finality_depth=12, realtime_ttl_ms=250
    )


def test_realtime_ttl_defaults_to_half_the_block_time() -> None:
    """Without realtime_ttl_ms the head TTL is block_time_ms / 2, else 1 s; 0 stays 0."""
    assert CacheConfig().realtime_ttl_s(12_000) == 6.0
    assert CacheConfig().realtime_ttl_s(None) == 1.0
    assert CacheConfig(realtime_ttl_ms=0).realtime_ttl_s(12_000) == 0.0
    assert CacheConfig(realtime_ttl_ms=300).realtime_ttl_s(12_000) == 0.3


def test_bad_values_name_file_line_and_key() -> None:
    """Wrong types and out-of-range numbers are reported with file:line: key path."""
    found = problems(
        """
        routing:
          coalesce: "yes"
        cache:
          enabled: 1
          max_bytes: -5
          finality_depth: 0
          realtime_ttl_ms: fast
        """
    )
    c = "chains.ethereum.cache"
    assert found == [
        "p.yml:8: chains.ethereum.routing.coalesce: expected boolean (true/false), "
        "got string 'yes'",
        f"p.yml:10: {c}.enabled: expected boolean (true/false), got integer 1",
        f"p.yml:11: {c}.max_bytes: must not be negative, got -5",
        f"p.yml:12: {c}.finality_depth: must be positive, got 0",
        f"p.yml:13: {c}.realtime_ttl_ms: expected integer, got string 'fast'",
    ]


def test_unknown_cache_key_suggests_the_close_one() -> None:
    """A misspelt key in the cache section is an error with a did-you-mean."""
    assert problems("cache:\n  finality_dept: 3") == [
        "p.yml:8: chains.ethereum.cache.finality_dept: unknown key 'finality_dept', "
        "did you mean 'finality_depth'?"
    ]


def test_cache_section_must_be_a_mapping() -> None:
    """``cache: true`` is not a section."""
    assert problems("cache: true") == [
        "p.yml:7: chains.ethereum.cache: expected mapping, got boolean true"
    ]
