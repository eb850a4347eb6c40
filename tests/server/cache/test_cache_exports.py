"""The cache package's public surface: exported names and standalone imports."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import lasso.server.cache

MODULES = ["chain", "coalesce", "heads", "memory", "redis_store", "report", "service"]


def test_exported_members() -> None:
    """__all__ lists the names other code imports, each one importable."""
    assert sorted(lasso.server.cache.__all__) == [
        "ChainCache",
        "Coalescer",
        "HeadWatch",
        "MemoryStore",
        "RedisStore",
        "ResponseCache",
        "cache_key",
    ]
    for name in lasso.server.cache.__all__:
        assert getattr(lasso.server.cache, name) is not None


def test_modules_found() -> None:
    """MODULES names every module of the package, so the import test sees new ones."""
    package = Path(lasso.server.cache.__path__[0])
    found = sorted(p.stem for p in package.glob("*.py") if p.name != "__init__.py")
    assert found == MODULES


@pytest.mark.parametrize("module", MODULES)
def test_module_exports_exist(module: str) -> None:
    """Each module's own __all__ names exist in it."""
    mod = importlib.import_module(f"lasso.server.cache.{module}")
    assert mod.__all__
    for name in mod.__all__:
        assert hasattr(mod, name), (module, name)


@pytest.mark.parametrize("module", MODULES)
def test_module_imports_alone(module: str) -> None:
    """Each module imports first in a fresh interpreter (no import cycle depends on order)."""
    subprocess.run([sys.executable, "-c", f"import lasso.server.cache.{module}"], check=True)
