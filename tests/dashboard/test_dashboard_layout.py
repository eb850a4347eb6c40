"""The overview's layout in a real browser: 1 to 10 chains, 1 to 30 providers, 1280 to
2560 px wide, measured (nothing overflows its card, cards in a grid of sane widths,
topology circles bounded and apart, no truncated figure)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from lasso.sim.traffic import SampleTraffic

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.fleets import CHAINS, layout_node  # noqa: E402

from support import UNIT  # noqa: E402

pytestmark = pytest.mark.integration

MS = 1000 * UNIT
LAYOUTS = {"c1p1": (1, 1), "c1p30": (1, 30), "c3": (3, 5), "c8": (8, 4), "c10": (10, 3)}
WIDTHS = (1280, 1440, 1920, 2560)

# Every measurement is taken in the page; the result is a list of problems (empty: fine).
MEASURE = """
() => {
  const problems = [];
  const TOL = 1.5;
  const inside = (r, box) => r.left >= box.left - TOL && r.right <= box.right + TOL &&
    r.top >= box.top - TOL && r.bottom <= box.bottom + TOL;
  const name = (el) => el.tagName.toLowerCase() +
    (el.className && el.className.baseVal === undefined
      ? "." + String(el.className).trim().split(/\\s+/).join(".") : "");
  const truncated = (el) => el.scrollWidth > el.clientWidth + 1;
  if (document.documentElement.scrollWidth > window.innerWidth + 1) {
    problems.push(`page scrolls sideways: ${document.documentElement.scrollWidth}px`);
  }
  const cards = [...document.querySelectorAll(".chain-card")];
  const widths = cards.map((c) => c.getBoundingClientRect().width);
  for (const card of cards) {
    const chain = card.dataset.chain;
    const box = card.getBoundingClientRect();
    if (box.width < 400 || box.width > 1010) problems.push(`${chain}: card ${box.width}px wide`);
    for (const el of card.querySelectorAll("*")) {
      const r = el.getBoundingClientRect();
      if (r.width === 0 && r.height === 0) continue;
      if (!inside(r, box)) problems.push(`${chain}: ${name(el)} overflows its card`);
    }
    for (const dd of card.querySelectorAll(".kv dd")) {
      if (truncated(dd)) problems.push(`${chain}: figure "${dd.textContent}" is cut`);
    }
    const svg = card.querySelector("svg.topology");
    const sbox = svg.getBoundingClientRect();
    for (const t of svg.querySelectorAll("text")) {
      if (!inside(t.getBoundingClientRect(), sbox)) {
        problems.push(`${chain}: label "${t.textContent}" leaves the topology`);
      }
    }
    const circles = [...svg.querySelectorAll("g.prov circle")].map((c) => {
      const r = c.getBoundingClientRect();
      return { x: r.left + r.width / 2, y: r.top + r.height / 2, r: r.width / 2 };
    });
    for (const c of circles) {
      if (c.r > 24 || c.r < 5) problems.push(`${chain}: provider circle of radius ${c.r}px`);
    }
    for (let i = 0; i < circles.length; i++) {
      for (let j = i + 1; j < circles.length; j++) {
        const a = circles[i], b = circles[j];
        if (Math.hypot(a.x - b.x, a.y - b.y) < a.r + b.r) {
          problems.push(`${chain}: circles overlap`);
        }
      }
    }
    const hub = svg.querySelector("g.hub circle.ring").getBoundingClientRect();
    if (hub.width / 2 > 60) problems.push(`${chain}: hub of radius ${hub.width / 2}px`);
  }
  // A grid: every card of a row has the same width, and rows never hold a lone stretched card.
  const rows = {};
  for (const c of cards) {
    const r = c.getBoundingClientRect();
    (rows[Math.round(r.top)] ||= []).push(r.width);
  }
  for (const ws of Object.values(rows)) {
    if (Math.max(...ws) - Math.min(...ws) > 2) problems.push(`uneven row: ${ws.join(", ")}`);
  }
  if (cards.length > 1 && widths.some((w) => Math.abs(w - widths[0]) > 2)) {
    problems.push(`cards of different widths: ${widths.join(", ")}`);
  }
  const columns = Object.values(rows)[0]?.length || 0;
  if (cards.length >= 2 && columns < 2) problems.push(`${cards.length} chains in one column`);
  const lg = document.querySelector("#loadgen");
  const lbox = lg.getBoundingClientRect();
  for (const el of lg.querySelectorAll("*")) {
    const r = el.getBoundingClientRect();
    if ((r.width || r.height) && !inside(r, lbox)) {
      problems.push(`load generator: ${name(el)} overflows`);
    }
  }
  for (const el of lg.querySelectorAll(".lg-note, .lg-last, dd, dt")) {
    if (truncated(el)) problems.push(`load generator: "${el.textContent.trim()}" is cut`);
  }
  const wrap = document.querySelector(".table-wrap");
  if (truncated(wrap)) problems.push(`provider table scrolls sideways (${wrap.scrollWidth}px)`);
  const feed = document.querySelector("#feed").getBoundingClientRect();
  for (const el of document.querySelectorAll("#feed .ev > *")) {
    const r = el.getBoundingClientRect();
    if (r.width && (r.left < feed.left - TOL || r.right > feed.right + TOL)) {
      problems.push(`feed: ${name(el)} leaves the feed`);
      break;
    }
  }
  return problems;
}
"""


async def test_overview_layout_from_1280_to_2560_px_for_1_to_10_chains(
    browser: Any, console: Any
) -> None:
    """At 1280, 1440, 1920 and 2560 px, with 1 chain of 1 or 30 providers and 3, 8 and 10
    chains, nothing overflows its card, cards form an even grid, figures are not cut,
    circles stay small and apart, and nothing scrolls sideways."""
    async with layout_node(LAYOUTS) as app:
        routes = [f"{app.base_url}/rpc/profile/c10/{key}" for key, *_ in CHAINS]
        routes.append(f"{app.base_url}/rpc/profile/c1p30/ethereum")
        traffic = SampleTraffic(routes, 40)  # live figures, a feed and errors to lay out
        traffic.start()
        page = await browser.new_page(viewport={"width": WIDTHS[0], "height": 1000})
        log = console(page)
        problems: list[str] = []
        try:
            for slug, (n_chains, _n_providers) in LAYOUTS.items():
                await page.goto(f"{app.base_url}/dashboard/{slug}")
                await page.wait_for_function(
                    f"() => document.querySelectorAll('.chain-card').length === {n_chains}"
                    " && document.querySelectorAll('#provider-table tbody tr').length > 0",
                    timeout=10 * MS,
                )
                for width in WIDTHS:
                    await page.set_viewport_size({"width": width, "height": 1000})
                    await page.evaluate("() => new Promise(requestAnimationFrame)")
                    found = await page.evaluate(MEASURE)
                    problems += [f"{slug} @ {width}px: {p}" for p in found]
        finally:
            await traffic.stop()
            await page.close()
        assert problems == []
        assert log.errors == []
