"""Circuit breaker vocabulary: states, the transition table, its Markdown and the config."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import FrozenInstanceError
from types import MappingProxyType

import pytest

from lasso.kernel import breaker_table
from lasso.kernel.breaker_table import (
    TRANSITIONS,
    BreakerConfig,
    BreakerEvent,
    BreakerState,
    IllegalTransition,
    next_state,
    transition_table_markdown,
)

CLOSED, HALF_OPEN, OPEN = BreakerState.CLOSED, BreakerState.HALF_OPEN, BreakerState.OPEN
E = BreakerEvent

# --- states and table -----------------------------------------------------------------


def test_state_values_are_metric_values() -> None:
    """0 closed, 1 half-open, 2 open; str() gives the lower-case name."""
    assert [int(s) for s in (CLOSED, HALF_OPEN, OPEN)] == [0, 1, 2]
    assert str(HALF_OPEN) == "half_open"


@pytest.mark.parametrize(
    ("state", "event"),
    [
        (CLOSED, E.RECOVERY_DUE),
        (CLOSED, E.RECOVERED),
        (CLOSED, E.PROBE_FAILED),
        (OPEN, E.TRIP),
        (OPEN, E.RECOVERED),
        (OPEN, E.PROBE_FAILED),
        (HALF_OPEN, E.TRIP),
        (HALF_OPEN, E.FAILURE),
        (HALF_OPEN, E.RECOVERY_DUE),
        (CLOSED, E.PROBE_RECOVERY),
        (HALF_OPEN, E.PROBE_RECOVERY),
    ],
)
def test_illegal_transitions_raise(state: BreakerState, event: BreakerEvent) -> None:
    """Rows missing from the table are illegal moves."""
    with pytest.raises(IllegalTransition, match=event.value):
        next_state(state, event)


def test_table_is_complete_over_states_and_events() -> None:
    """Every (state, event) pair is either a table row or illegal, never anything else."""
    for state in BreakerState:
        for event in BreakerEvent:
            if (state, event) in TRANSITIONS:
                assert next_state(state, event) is TRANSITIONS[state, event][0]
            else:
                with pytest.raises(IllegalTransition):
                    next_state(state, event)
    manual = {(s, e) for s in BreakerState for e in (E.FORCE_OPEN, E.FORCE_CLOSE)}
    assert manual <= set(TRANSITIONS)


def test_transition_table_markdown() -> None:
    """The docs table has a header and one row per transition."""
    text = transition_table_markdown()
    lines = text.strip().splitlines()
    assert lines[0] == "| state | event | next state | rule |"
    assert len(lines) == 2 + len(TRANSITIONS)
    assert "| half_open | `recovered` | closed | success threshold reached |" in lines
    assert (
        "| open | `probe_recovery` | half_open | health probes passed: early half-open |" in lines
    )


# --- config ---------------------------------------------------------------------------


def test_config_defaults() -> None:
    """Defaults follow reference §13, except the documented 30 s recovery (§14 item 2)."""
    cfg = BreakerConfig()
    assert (cfg.failure_threshold, cfg.success_threshold) == (5, 2)
    assert (cfg.recovery_timeout_s, cfg.max_recovery_timeout_s) == (30.0, 600.0)
    assert cfg.half_open_max_probes == 1
    assert dict(cfg.category_thresholds) == {
        "server_error": 5,
        "network_error": 3,
        "timeout": 2,
        "auth_error": 3,
    }
    assert dict(cfg.category_recovery) == {"auth_error": 10.0}
    assert cfg.max_failure_threshold == 5


def test_config_is_frozen_and_copies_mappings() -> None:
    """A config cannot change after construction, even through the caller's dict."""
    thresholds = {"timeout": 7}
    cfg = BreakerConfig(category_thresholds=thresholds)
    thresholds["timeout"] = 1
    assert cfg.category_thresholds["timeout"] == 7
    assert cfg.max_failure_threshold == 7
    with pytest.raises(FrozenInstanceError):
        cfg.failure_threshold = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        cfg.category_thresholds["timeout"] = 1  # type: ignore[index]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"failure_threshold": 0},
        {"success_threshold": 0},
        {"half_open_max_probes": 0},
        {"category_thresholds": {"timeout": 0}},
        {"recovery_timeout_s": -1.0},
        {"recovery_timeout_s": 700.0},
        {"category_recovery": {"auth_error": 601.0}},
    ],
)
def test_config_validation(kwargs: dict[str, object]) -> None:
    """Nonsensical thresholds and timeouts are rejected."""
    with pytest.raises(ValueError):
        BreakerConfig(**kwargs)  # type: ignore[arg-type]


# --- module surface -------------------------------------------------------------------


def test_public_surface() -> None:
    """__all__ names the vocabulary; the private helpers stay out."""
    assert sorted(breaker_table.__all__) == sorted(
        [
            "TRANSITIONS",
            "BreakerConfig",
            "BreakerEvent",
            "BreakerState",
            "IllegalTransition",
            "Transition",
            "next_state",
            "transition_table_markdown",
        ]
    )
    # Defined here, not imported: the classes and functions name this module as home.
    for name in breaker_table.__all__:
        if name != "TRANSITIONS":
            assert getattr(breaker_table, name).__module__ == breaker_table.__name__, name
    assert isinstance(TRANSITIONS, MappingProxyType)


def test_module_imports_alone() -> None:
    """The table imports first in a fresh interpreter: it needs nothing from the breaker."""
    code = (
        "import sys, lasso.kernel.breaker_table\nassert 'lasso.kernel.breaker' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
