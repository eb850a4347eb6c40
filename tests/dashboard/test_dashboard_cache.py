"""The dashboard's response cache panel in a real browser, on the demo node."""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson
import pytest

from support import UNIT

pytestmark = pytest.mark.integration

MS = 1000 * UNIT


async def rpc(session: aiohttp.ClientSession, url: str, method: str, params: list[Any]) -> Any:
    body = orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
    async with session.post(url, data=body) as r:
        return orjson.loads(await r.read())


async def test_panel_shows_hit_ratio_and_calls_saved(
    demo_node: Any, browser: Any, console: Any
) -> None:
    """Five reads of one finalized block's receipts: the panel lists the method with one
    miss, four hits (80 %) and four upstream calls saved, and the page logs no error."""
    url = demo_node.base_url + "/rpc/ethereum"
    async with aiohttp.ClientSession() as s:
        head = int((await rpc(s, url, "eth_blockNumber", []))["result"], 16)
        for _ in range(5):
            doc = await rpc(s, url, "eth_getBlockReceipts", [hex(head - 300)])
            assert "result" in doc
    page = await browser.new_page(viewport={"width": 1500, "height": 1100})
    log = console(page)
    await page.goto(demo_node.base_url + "/dashboard")
    row = '#cache-table tr[data-chain="ethereum"][data-method="eth_getBlockReceipts"]'
    await page.wait_for_selector(row, timeout=10 * MS)
    cells = await page.eval_on_selector_all(row + " td", "tds => tds.map(td => td.textContent)")
    assert cells[:9] == ["ethereum", "eth_getBlockReceipts", "5", "80.0 %", "4", "1", "0", "0", "4"]
    total = '#cache-table tr.cache-total[data-chain="ethereum"]'
    assert await page.eval_on_selector(total, "tr => tr.children[1].textContent") == "all methods"
    summary = await page.text_content("#cache-summary")
    assert summary is not None and "answers" in summary and "MiB" in summary
    assert log.errors == []
