"""docs/routing.md stays true to the kernel: its breaker table is the generated one."""

from __future__ import annotations

from pathlib import Path

from lasso.kernel.breaker_table import transition_table_markdown

DOC = Path(__file__).resolve().parents[2] / "docs" / "routing.md"


def test_breaker_table_matches_the_kernel() -> None:
    """The table between the breaker-table markers equals transition_table_markdown()."""
    text = DOC.read_text(encoding="utf-8")
    start = text.index("<!-- breaker-table:start -->\n") + len("<!-- breaker-table:start -->\n")
    end = text.index("<!-- breaker-table:end -->")
    assert text[start:end] == transition_table_markdown()
