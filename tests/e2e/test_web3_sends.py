"""Idempotent sends end to end: web3.py and eth_account through Lasso against real anvils
(CONTRACT §8). A resend before and after mining answers the same hash; a conflicting
transaction with the same nonce is an error; routing.broadcast reaches both nodes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from eth_account import Account
from web3 import AsyncHTTPProvider, AsyncWeb3
from web3.exceptions import Web3RPCError

from lasso.kernel.keccak import tx_hash

from support import Anvil, eventually, profile_yaml

pytestmark = pytest.mark.e2e

KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"  # anvil dev key 0
TO = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"


@pytest.fixture
def nodes() -> Iterator[list[Anvil]]:
    """Two fresh anvils that do not mine by themselves: a sent transaction stays pending."""
    pair = [Anvil("--no-mining"), Anvil("--no-mining")]
    yield pair
    for node in pair:
        node.stop()


def chain(nodes: list[Anvil], broadcast: int = 1) -> str:
    lines = ["  anvil:", "    chain_id: 31337", f"    routing: {{broadcast: {broadcast}}}"]
    lines.append("    providers:")
    for i, node in enumerate(nodes):
        lines += [f"      - id: anvil{i}", f"        url: {node.url}", f"        priority: {i}"]
    return "\n".join(lines) + "\n"


def signed(nonce: int, value: int) -> str:
    tx = {"nonce": nonce, "gasPrice": 2 * 10**9, "gas": 21000, "to": TO, "value": value,
          "chainId": 31337}  # fmt: skip
    return "0x" + bytes(Account.sign_transaction(tx, KEY).raw_transaction).hex()


async def test_resends_answer_the_same_hash_and_a_conflict_is_an_error(
    nodes: list[Anvil], lasso_node: Any
) -> None:
    """Send; resend while pending; mine; resend again: one hash, never an error. Another
    transaction with that nonce is refused."""
    app = await lasso_node(profile_yaml(chain(nodes[:1])))
    via = AsyncWeb3(AsyncHTTPProvider(f"{app.base_url}/rpc/anvil"))
    direct = AsyncWeb3(AsyncHTTPProvider(nodes[0].url))
    sender = Account.from_key(KEY).address
    nonce = await via.eth.get_transaction_count(sender)
    raw = signed(nonce, 1)
    want = tx_hash(raw)
    assert want is not None
    first = await via.eth.send_raw_transaction(raw)
    assert "0x" + first.hex().removeprefix("0x") == want
    again = await via.eth.send_raw_transaction(raw)  # anvil: "transaction already imported"
    assert again == first
    await direct.provider.make_request("evm_mine", [])
    receipt = await via.eth.wait_for_transaction_receipt(first, timeout=10)
    assert receipt["status"] == 1
    after = await via.eth.send_raw_transaction(raw)  # anvil: "nonce too low", yet it is ours
    assert after == first
    with pytest.raises(Web3RPCError) as refused:
        await via.eth.send_raw_transaction(signed(nonce, 2))
    assert "nonce too low" in str(refused.value).lower()
    pending = signed(nonce + 1, 5)
    sent = await via.eth.send_raw_transaction(pending)
    with pytest.raises(Web3RPCError):  # a rival for a pending nonce: "underpriced"
        await via.eth.send_raw_transaction(signed(nonce + 1, 6))
    assert await via.eth.send_raw_transaction(pending) == sent


async def test_a_resend_through_lasso_is_the_hash_where_anvil_says_an_error(
    nodes: list[Anvil], lasso_node: Any
) -> None:
    """The same resend straight to anvil fails; through Lasso it answers the hash."""
    app = await lasso_node(profile_yaml(chain(nodes[:1])))
    via = AsyncWeb3(AsyncHTTPProvider(f"{app.base_url}/rpc/anvil"))
    direct = AsyncWeb3(AsyncHTTPProvider(nodes[0].url))
    raw = signed(await direct.eth.get_transaction_count(Account.from_key(KEY).address), 7)
    first = await direct.eth.send_raw_transaction(raw)
    with pytest.raises(Web3RPCError):
        await direct.eth.send_raw_transaction(raw)
    assert await via.eth.send_raw_transaction(raw) == first


async def test_broadcast_reaches_both_nodes(nodes: list[Anvil], lasso_node: Any) -> None:
    """routing.broadcast: 2 sends one transaction to both anvils; one answer, its hash;
    the leg that did not answer is counted when it ends."""
    app = await lasso_node(profile_yaml(chain(nodes, broadcast=2)))
    via = AsyncWeb3(AsyncHTTPProvider(f"{app.base_url}/rpc/anvil"))
    raw = signed(await via.eth.get_transaction_count(Account.from_key(KEY).address), 3)
    sent = await via.eth.send_raw_transaction(raw)
    assert "0x" + sent.hex().removeprefix("0x") == tx_hash(raw)
    rt = app.runtime.profile(None).resolve("anvil")
    await eventually(lambda: rt.consistency.counts.get(("legs", "accepted")) == 2)
    for node in nodes:
        found = await AsyncWeb3(AsyncHTTPProvider(node.url)).eth.get_transaction(sent)
        assert found["hash"] == sent
