"""Configuration values: the default-profile rule (CONTRACT §3)."""

from __future__ import annotations

import random

import pytest

from lasso.config import ProfileConfig, default_profile_slug
from lasso.kernel.breaker import BreakerConfig
from lasso.kernel.router import BreakerRegistry
from lasso.server.runtime import PoolRegistry, Runtime


def test_default_profile_rule() -> None:
    """The requested one (aliases work), else public, else the only one, else none."""
    assert default_profile_slug({"public", "demo"}) == "public"
    assert default_profile_slug({"production"}) == "production"
    assert default_profile_slug({"production", "staging"}) is None
    assert default_profile_slug(set()) is None
    assert default_profile_slug({"production", "staging"}, "staging") == "staging"
    assert default_profile_slug({"public", "x"}, "default") == "public"
    with pytest.raises(ValueError, match=r"'nope' is not loaded \(profiles: a, b\)"):
        default_profile_slug({"a", "b"}, "nope")


def runtime(*slugs: str, default: str | None = None) -> Runtime:
    rng = random.Random(0)
    profiles = {s: ProfileConfig(slug=s, name=s) for s in slugs}
    return Runtime(
        profiles,
        pools=PoolRegistry(),
        breakers=BreakerRegistry(BreakerConfig(), rng),
        rng=rng,
        default_profile=default,
    )


def test_runtime_routes_plain_paths_to_the_default_profile() -> None:
    """Runtime.profile(None) is the default profile; without one, the message says how to
    pick one."""
    rt = runtime("production")
    assert rt.default_profile == "production"
    assert rt.profile(None) is rt.profiles["production"]
    several = runtime("production", "staging")
    assert several.profile(None) is None and several.profile("staging") is not None
    assert "LASSO_DEFAULT_PROFILE" in several.profile_not_found(None)
    assert several.profile_not_found("x") == "Profile 'x' not found"
    assert runtime("production", "staging", default="staging").profile(None) is not None
    with pytest.raises(ValueError):
        runtime("production", default="public")
