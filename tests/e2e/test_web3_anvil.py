"""End to end: web3.py through Lasso against a real anvil node gives anvil's own answers."""

from __future__ import annotations

from typing import Any

import pytest
from web3 import AsyncHTTPProvider, AsyncWeb3

from support import Anvil, profile_yaml

pytestmark = pytest.mark.e2e

# anvil's first default account (a well-known test key, funded on every anvil start).
KEY0 = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
ADDR1 = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"

# A tiny contract: constructor stores nothing; runtime emits LOG1(topic=0x01..) and returns 42.
# runtime: MSTORE(0, 42); LOG1(0, 32, topic); RETURN(0, 32)
TOPIC = "0x" + "11" * 32


def _runtime_code() -> str:
    return (
        "602a600052"  # mstore(0, 42)
        "7f"
        + "11"
        * 32  # push32 topic
        + "60206000a1"  # log1(0, 32, topic)
        "60206000f3"  # return(0, 32)
    )


def _init_code() -> str:
    runtime = _runtime_code()
    n = len(runtime) // 2
    # codecopy(0, offset, n); return(0, n)
    prefix_len = 15  # bytes of the five instructions below
    return (
        f"61{n:04x}"  # push2 n
        f"61{prefix_len:04x}"  # push2 offset
        "600039"  # push1 0, codecopy
        f"61{n:04x}"  # push2 n
        "6000f3"  # push1 0, return
    ) + runtime


def _two(node: Anvil, lasso_url: str) -> tuple[AsyncWeb3, AsyncWeb3]:
    direct = AsyncWeb3(AsyncHTTPProvider(node.url))
    via = AsyncWeb3(AsyncHTTPProvider(lasso_url))
    return direct, via


async def test_web3_reads_and_a_signed_transaction_match_anvil(
    anvil: Anvil, lasso_node: Any
) -> None:
    """Blocks, balances, eth_call, a signed tx and its receipt, and getLogs equal anvil's."""
    chains = f"""  anvil:
    chain_id: 31337
    providers:
      - id: anvil-a
        url: {anvil.url}
      - id: anvil-b
        url: {anvil.url}/
"""
    app = await lasso_node(profile_yaml(chains))
    direct, via = _two(anvil, f"{app.base_url}/rpc/anvil")

    assert await via.eth.chain_id == 31337
    acct = via.eth.account.from_key(KEY0)

    # Deploy the logging contract through Lasso with a locally signed transaction.
    nonce = await via.eth.get_transaction_count(acct.address)
    assert nonce == await direct.eth.get_transaction_count(acct.address)
    gas_price = await via.eth.gas_price
    deploy = acct.sign_transaction(
        {
            "nonce": nonce,
            "gas": 200_000,
            "gasPrice": gas_price,
            "data": "0x" + _init_code(),
            "chainId": 31337,
        }
    )
    tx_hash = await via.eth.send_raw_transaction(deploy.raw_transaction)
    receipt = await via.eth.wait_for_transaction_receipt(tx_hash, timeout=10)
    assert receipt["status"] == 1
    assert receipt == await direct.eth.get_transaction_receipt(tx_hash)
    contract = receipt["contractAddress"]

    # A value transfer, then a call that logs.
    tx = acct.sign_transaction(
        {
            "nonce": nonce + 1,
            "to": ADDR1,
            "value": 12345,
            "gas": 21_000,
            "gasPrice": gas_price,
            "chainId": 31337,
        }
    )
    h2 = await via.eth.send_raw_transaction(tx.raw_transaction)
    r2 = await via.eth.wait_for_transaction_receipt(h2, timeout=10)
    assert r2 == await direct.eth.get_transaction_receipt(h2)
    call_tx = acct.sign_transaction(
        {
            "nonce": nonce + 2,
            "to": contract,
            "gas": 100_000,
            "gasPrice": gas_price,
            "chainId": 31337,
            "data": "0x",
        }
    )
    h3 = await via.eth.send_raw_transaction(call_tx.raw_transaction)
    r3 = await via.eth.wait_for_transaction_receipt(h3, timeout=10)
    assert len(r3["logs"]) == 1

    head = await via.eth.block_number
    assert head == await direct.eth.block_number
    for n in (0, head - 1, head):
        assert await via.eth.get_block(n, full_transactions=True) == await direct.eth.get_block(
            n, True
        )
    assert await via.eth.get_block("latest") == await direct.eth.get_block("latest")
    assert await via.eth.get_balance(ADDR1) == await direct.eth.get_balance(ADDR1)
    assert await via.eth.get_balance(ADDR1, head - 1) == await direct.eth.get_balance(
        ADDR1, head - 1
    )
    assert await via.eth.get_code(contract) == await direct.eth.get_code(contract)
    assert await via.eth.get_transaction(h2) == await direct.eth.get_transaction(h2)

    result = await via.eth.call({"to": contract, "data": "0x"})
    assert result == await direct.eth.call({"to": contract, "data": "0x"})
    assert int.from_bytes(result, "big") == 42

    flt = {"fromBlock": 0, "toBlock": head, "topics": [TOPIC]}
    logs = await via.eth.get_logs(flt)
    assert logs == await direct.eth.get_logs(flt)
    assert len(logs) == 1 and logs[0]["address"] == contract


async def test_revert_is_returned_unchanged_with_its_data(anvil: Anvil, lasso_node: Any) -> None:
    """A reverting eth_call comes back as anvil's own error (code, message, data), not retried."""
    import aiohttp

    chains = f"""  anvil:
    chain_id: 31337
    providers:
      - id: anvil-a
        url: {anvil.url}
"""
    app = await lasso_node(profile_yaml(chains))
    # Init code that reverts with Error("no") when called as a contract creation via eth_call.
    revert = (
        "0x08c379a0"  # Error(string)
        + "20".rjust(64, "0")
        + "2".rjust(64, "0")
        + "6e6f".ljust(64, "0")
    )
    n = (len(revert) - 2) // 2
    code = f"0x61{n:04x}600e60003961{n:04x}6000fd" + revert[2:]  # 14-byte prefix
    body = {"jsonrpc": "2.0", "id": 7, "method": "eth_call", "params": [{"data": code}, "latest"]}
    async with aiohttp.ClientSession() as s:
        async with s.post(anvil.url, json=body) as r:
            want = await r.json()
        async with s.post(f"{app.base_url}/rpc/anvil", json=body) as r:
            got = await r.json()
            assert r.status == 200
    assert "error" in want
    assert got == want
    assert got["error"]["data"].startswith("0x08c379a0")
