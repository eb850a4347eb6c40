"""docs/routing.md stays true to the kernel: its breaker and planner tables are generated."""

from __future__ import annotations

from pathlib import Path

from lasso.kernel import planner
from lasso.kernel.breaker_table import transition_table_markdown

DOC = Path(__file__).resolve().parents[2] / "docs" / "routing.md"


def test_breaker_table_matches_the_kernel() -> None:
    """The table between the breaker-table markers equals transition_table_markdown()."""
    text = DOC.read_text(encoding="utf-8")
    start = text.index("<!-- breaker-table:start -->\n") + len("<!-- breaker-table:start -->\n")
    end = text.index("<!-- breaker-table:end -->")
    assert text[start:end] == transition_table_markdown()


def test_planner_table_matches_the_kernel() -> None:
    """The table between the planner-table markers equals the planner's rendering."""
    text = DOC.read_text(encoding="utf-8")
    start = text.index("<!-- planner-table:start -->\n") + len("<!-- planner-table:start -->\n")
    end = text.index("<!-- planner-table:end -->")
    assert text[start:end] == planner.transition_table_markdown() + "\n"
