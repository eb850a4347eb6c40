"""lasso.auth's public surface, and every module of it importing on its own."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import lasso.auth

MODULES = sorted(
    p.stem for p in Path(lasso.auth.__file__).parent.glob("*.py") if p.stem != "__init__"
)


def test_exports() -> None:
    """__all__ names exactly what the package re-exports, and each name exists."""
    assert sorted(lasso.auth.__all__) == [
        "ANONYMOUS",
        "Client",
        "ClientAccess",
        "JwtVerifier",
        "LocalLimiter",
        "ProfileGate",
        "Refusal",
        "SharedLimiter",
        "credential_of",
    ]
    assert all(hasattr(lasso.auth, name) for name in lasso.auth.__all__)


@pytest.mark.parametrize("module", MODULES)
def test_module_imports_alone(module: str) -> None:
    """Each module imports in a fresh interpreter (no hidden import-order dependency)."""
    out = subprocess.run(
        [sys.executable, "-c", f"import lasso.auth.{module}"], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
