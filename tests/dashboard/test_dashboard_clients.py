"""The dashboard's clients panel in a real browser: per-key counters, no secrets."""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson
import pytest

from support import UNIT, fleet_chain_yaml

pytestmark = pytest.mark.integration

MS = 1000 * UNIT
KEY = "lasso_dashboard-panel-key-0001"
BN = orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber"})


async def test_clients_panel_counts_per_key_and_hides_for_open_profiles(
    sim_fleet: Any, lasso_node: Any, browser: Any, console: Any
) -> None:
    """A gated profile shows one row per key with its counts; an open one no panel."""
    fleet = await sim_fleet(["alpha"])
    chain = fleet_chain_yaml(fleet)
    gated = (
        f"---\nname: Gated\nslug: gated\nauth:\n  keys:\n    - id: frontend\n"
        f"      key: {KEY}\n      rps_limit: 1\n      burst_limit: 2\n---\nchains:\n{chain}"
    )
    node = await lasso_node(f"---\nname: Open\nslug: public\n---\nchains:\n{chain}", gated)
    async with aiohttp.ClientSession() as s:
        for headers in [{"X-Lasso-Api-Key": KEY}] * 3 + [{}]:
            async with s.post(
                node.base_url + "/rpc/profile/gated/ethereum", data=BN, headers=headers
            ) as r:
                await r.read()
    page = await browser.new_page(viewport={"width": 1400, "height": 1000})
    log = console(page)
    await page.goto(node.base_url + "/dashboard/gated")
    await page.wait_for_selector("#clients-panel:not([hidden])", timeout=10 * MS)
    await page.wait_for_function(
        "() => [...document.querySelectorAll('#clients-table tbody tr')]"
        ".some(tr => tr.cells[0].textContent === 'frontend' && tr.cells[3].textContent === '3')",
        timeout=10 * MS,
    )
    text = await page.inner_text("#clients-panel")
    assert "1/s · burst 2" in text and "anonymous" in text and "keys required" in text
    content = await page.content()
    assert KEY not in content
    await page.goto(node.base_url + "/dashboard/public")
    await page.wait_for_selector("#provider-table tr[data-provider=alpha]", timeout=10 * MS)
    await page.wait_for_function(
        "() => document.getElementById('clients-panel').hidden", timeout=10 * MS
    )
    assert log.errors == []
