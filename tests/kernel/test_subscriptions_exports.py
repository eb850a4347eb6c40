"""The subscription kernel package: its public surface and standalone imports."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from lasso.kernel import subscriptions as ks

MODULES = ["events", "heads", "keys", "lifecycle", "logs", "stream", "tracking"]

PUBLIC = [
    "KINDS",
    "LOG_BUFFER_LIMIT",
    "TRANSITIONS",
    "Backfill",
    "BackfillDone",
    "BackfillFailed",
    "BlocksDropped",
    "Close",
    "Decision",
    "Degraded",
    "Dropped",
    "Emit",
    "Fact",
    "Header",
    "HeadReceived",
    "HeadSeen",
    "IllegalMove",
    "LogEntry",
    "LogReceived",
    "NoProvider",
    "Resubscribe",
    "Retry",
    "Start",
    "StreamState",
    "SubscribeFailed",
    "Subscribed",
    "SubscriptionKey",
    "SubscriptionParamsError",
    "SubscriptionStream",
    "TxReceived",
    "UpstreamLost",
    "Warn",
    "normalize_filter",
    "parse_header",
    "parse_log",
    "parse_subscription",
    "transition_table_markdown",
]


def test_public_surface_and_standalone_import() -> None:
    """Every name in __all__ exists, and the module imports alone in a fresh interpreter."""
    assert all(hasattr(ks, name) for name in ks.__all__)
    assert len(set(ks.__all__)) == len(ks.__all__)
    code = "import lasso.kernel.subscriptions as m; print(len(m.__all__))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert int(out.stdout) == len(ks.__all__)


def test_exported_members() -> None:
    """__all__ is exactly the surface the server and tests import, nothing more."""
    assert sorted(ks.__all__) == sorted(PUBLIC)


def test_modules_found() -> None:
    """MODULES names every module of the package, so each one is import-tested below."""
    found = {p.stem for p in Path(ks.__file__).parent.glob("*.py")} - {"__init__"}
    assert found == set(MODULES)


@pytest.mark.parametrize("module", MODULES)
def test_module_imports_alone(module: str) -> None:
    """Each module imports first in a fresh interpreter (no import cycle inside the package)."""
    code = f"import lasso.kernel.subscriptions.{module}"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("module", MODULES)
def test_module_surface(module: str) -> None:
    """A module's __all__ names exist; those the package exports are the very same objects."""
    names = _all_of(module)
    assert len(set(names)) == len(names)
    mod = importlib.import_module(f"lasso.kernel.subscriptions.{module}")
    for name in names:
        value = getattr(mod, name)
        if name in ks.__all__:
            assert getattr(ks, name) is value, name


def test_every_export_has_one_home() -> None:
    """Each name the package exports is defined in (listed by) exactly one module."""
    homes = {name: [m for m in MODULES if name in _all_of(m)] for name in ks.__all__}
    assert {name: len(mods) for name, mods in homes.items()} == dict.fromkeys(ks.__all__, 1)


def _all_of(module: str) -> list[str]:
    names: list[str] = importlib.import_module(f"lasso.kernel.subscriptions.{module}").__all__
    return names
