"""The planner's phase table: complete for what can happen, rendered for the docs."""

from __future__ import annotations

from lasso.kernel import planner
from lasso.kernel.planner_table import (
    TRANSITIONS,
    IllegalMove,
    Phase,
    transition_table_markdown,
)

FACTS = ("refused", "answered", "failed", "timed_out", "cancelled")


def test_every_fact_is_legal_while_waiting() -> None:
    """With attempts in flight, any fact about one of them may arrive."""
    assert all((Phase.WAITING, fact) in TRANSITIONS for fact in FACTS)


def test_nothing_arrives_when_ready_and_no_refusal_after_the_end() -> None:
    """READY has no attempt in flight; a refusal is reported at once, never after DONE."""
    assert not any((Phase.READY, fact) in TRANSITIONS for fact in FACTS)
    assert (Phase.DONE, "refused") not in TRANSITIONS
    assert {fact for phase, fact in TRANSITIONS if phase is Phase.DONE} == set(FACTS) - {"refused"}


def test_table_renders_every_row() -> None:
    """Every row of the table appears in its Markdown rendering."""
    text = transition_table_markdown()
    assert text.count("\n") == len(TRANSITIONS) + 1
    assert "| waiting | `answered` |" in text


def test_planner_re_exports_the_table() -> None:
    """The adapters meet the table's names through the planner."""
    assert planner.TRANSITIONS is TRANSITIONS and planner.IllegalMove is IllegalMove
    assert planner.Phase is Phase
