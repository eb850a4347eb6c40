"""The kernel is pure: no module under lasso/kernel imports IO, clocks or global randomness."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import lasso.kernel

KERNEL_DIR = Path(lasso.kernel.__file__).resolve().parent
FORBIDDEN = frozenset({"asyncio", "socket", "time", "random", "aiohttp"})
MODULES = sorted(KERNEL_DIR.rglob("*.py"))  # subpackages (subscriptions/) included
IDS = [p.relative_to(KERNEL_DIR).as_posix() for p in MODULES]


def imported_roots(source: str, filename: str) -> set[str]:
    """Top-level package names imported anywhere in ``source`` (absolute imports only)."""
    roots: set[str] = set()
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name | ast.Attribute)
            and getattr(node.func, "id", getattr(node.func, "attr", None))
            in ("__import__", "import_module")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            roots.add(node.args[0].value.split(".")[0])
    return roots


def test_kernel_modules_found() -> None:
    """The scan sees the kernel package: breaker, classifier, routing modules, subpackages."""
    top = ["__init__", "clock", "methods", "classify", "breaker", "router", "channel", "status"]
    assert {f"{name}.py" for name in top} <= set(IDS)
    package = ["__init__", "events", "heads", "keys", "lifecycle", "logs", "stream", "tracking"]
    assert {f"subscriptions/{name}.py" for name in package} <= set(IDS)


@pytest.mark.parametrize("path", MODULES, ids=IDS)
def test_kernel_module_is_pure(path: Path) -> None:
    """No kernel module imports asyncio, socket, time, random or aiohttp."""
    bad = imported_roots(path.read_text(encoding="utf-8"), str(path)) & FORBIDDEN
    assert not bad, f"{path.relative_to(KERNEL_DIR)} imports {sorted(bad)}"


@pytest.mark.parametrize(
    "source",
    [
        "import time",
        "import asyncio.tasks",
        "from random import random",
        "from socket import socket as s",
        "import os, aiohttp",
        "def f():\n    import time\n",
        "if TYPE_CHECKING:\n    import asyncio\n",
        "__import__('time')",
        "importlib.import_module('random')",
    ],
)
def test_detector_catches_forbidden_imports(source: str) -> None:
    """The scanner flags every spelling of a forbidden import."""
    assert imported_roots(source, "<test>") & FORBIDDEN


@pytest.mark.parametrize(
    "source",
    ["import math", "from . import clock", "from .time_utils import x", "import timeit"],
)
def test_detector_allows_other_imports(source: str) -> None:
    """Relative imports and look-alike names are fine."""
    assert not imported_roots(source, "<test>") & FORBIDDEN
