"""The consistency tables against a real anvil: its hashes, send errors and filter errors."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import pytest
from eth_account import Account

from lasso.kernel.classify import Bucket, bucket_of, classify_rpc_error
from lasso.kernel.filters import FILTER_NOT_FOUND
from lasso.kernel.keccak import tx_hash
from lasso.kernel.transactions import Leg, send_error_kind, verify_by_hash

from support import Anvil

pytestmark = pytest.mark.integration

KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"  # anvil dev key 0
TO = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"


def rpc(node: Anvil, method: str, *params: Any) -> dict[str, Any]:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)})
    request = urllib.request.Request(node.url, body.encode(), {"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        answer: dict[str, Any] = json.loads(response.read())
    return answer


def signed(nonce: int, value: int) -> str:
    tx = {"nonce": nonce, "gasPrice": 2 * 10**9, "gas": 21000, "to": TO, "value": value,
          "chainId": 31337}  # fmt: skip
    return "0x" + bytes(Account.sign_transaction(tx, KEY).raw_transaction).hex()


@pytest.fixture
def node() -> Any:
    """A fresh anvil without automine, so a sent transaction stays pending until mined."""
    anvil = Anvil("--no-mining")
    yield anvil
    anvil.stop()


def test_send_resend_and_conflict_wordings(node: Anvil) -> None:
    """anvil's hash is ours; its resend and nonce errors read as the tables say."""
    sender = Account.from_key(KEY).address
    nonce = int(rpc(node, "eth_getTransactionCount", sender, "latest")["result"], 16)
    raw = signed(nonce, 1)
    first = rpc(node, "eth_sendRawTransaction", raw)
    assert first["result"] == tx_hash(raw)
    again = rpc(node, "eth_sendRawTransaction", raw)["error"]
    assert send_error_kind(again["message"]) is Leg.ACCEPTED, again
    pending_rival = rpc(node, "eth_sendRawTransaction", signed(nonce, 3))["error"]
    assert send_error_kind(pending_rival["message"]) is None  # "replacement … underpriced"
    assert bucket_of(classify_rpc_error(pending_rival["code"], pending_rival["message"])) is (
        Bucket.DETERMINISTIC
    )
    rpc(node, "evm_mine")
    mined = rpc(node, "eth_sendRawTransaction", raw)["error"]
    assert send_error_kind(mined["message"]) is Leg.VERIFY, mined
    found = rpc(node, "eth_getTransactionByHash", tx_hash(raw))["result"]
    assert verify_by_hash(found, str(tx_hash(raw)))
    conflict = signed(nonce, 2)  # the same nonce, another transaction
    refused = rpc(node, "eth_sendRawTransaction", conflict)["error"]
    assert send_error_kind(refused["message"]) is Leg.VERIFY
    other = rpc(node, "eth_getTransactionByHash", tx_hash(conflict))["result"]
    assert not verify_by_hash(other, str(tx_hash(conflict)))
    assert bucket_of(classify_rpc_error(refused["code"], refused["message"])) is (
        Bucket.DETERMINISTIC
    )


def test_filter_not_found_wording(node: Anvil) -> None:
    """anvil answers an unknown filter id the way Lasso does."""
    error = rpc(node, "eth_getFilterChanges", "0x" + "12" * 16)["error"]
    assert error["message"] == FILTER_NOT_FOUND["message"]
