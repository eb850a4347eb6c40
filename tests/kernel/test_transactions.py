"""Tests of idempotent sends: error wordings, the by-hash check, broadcast legs."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lasso.kernel.classify import Bucket, bucket_of, classify_rpc_error
from lasso.kernel.transactions import (
    ALREADY_KNOWN_WORDINGS,
    NONCE_TOO_LOW_WORDINGS,
    Broadcast,
    Decision,
    Leg,
    send_error_kind,
    verify_by_hash,
)

H = "0x" + "ab" * 32

# (who, code, message as the node sends it)
KNOWN = [
    ("geth", -32000, "already known"),
    ("anvil", -32003, "transaction already imported"),
    ("anvil pool", -32003, f"Tx: [{H}] already Imported"),
    ("OpenEthereum", -32010, "Transaction with the same hash was already imported."),
    ("Besu", -32000, "Known transaction"),
    ("Nethermind", -32010, "AlreadyKnown"),
    ("Avalanche", -32000, "tx already in mempool"),
    ("provider", -32000, "transaction already exists"),
    ("provider", -32000, "already have transaction " + H),
    ("provider", -32000, "transaction already in the mempool"),
    ("provider", -32000, "tx already exists in mempool"),
]
NONCE = [
    ("geth", -32000, "nonce too low: next nonce 5, tx nonce 3"),
    ("anvil", -32003, "nonce too low"),
    ("Besu", -32001, "Nonce too low"),
    ("Besu (enum)", -32000, "NONCE_TOO_LOW"),
    ("Nethermind", -32010, "OldNonce, Current nonce: 5, nonce of rejected tx: 3"),
    ("provider", -32000, "nonce is too low"),
    ("provider", -32000, "the nonce has already been used"),
]


@pytest.mark.parametrize(("who", "code", "message"), KNOWN, ids=[k[0] for k in KNOWN])
def test_already_known_is_acceptance(who: str, code: int, message: str) -> None:
    """Every 'already known' wording means the node has this very transaction."""
    assert send_error_kind(message) is Leg.ACCEPTED


@pytest.mark.parametrize(("who", "code", "message"), NONCE, ids=[k[0] for k in NONCE])
def test_nonce_too_low_needs_a_look(who: str, code: int, message: str) -> None:
    """Every 'nonce too low' wording asks for a by-hash check."""
    assert send_error_kind(message) is Leg.VERIFY


def test_every_wording_is_tested() -> None:
    """Each phrase of the tables matches one of the real messages above."""
    for _, phrase in ALREADY_KNOWN_WORDINGS:
        assert any(phrase in m.lower() for _, _, m in KNOWN), phrase
    for _, phrase in NONCE_TOO_LOW_WORDINGS:
        assert any(phrase in m.lower() for _, _, m in NONCE), phrase


@pytest.mark.parametrize(
    "message",
    [
        "insufficient funds for gas * price + value",
        "replacement transaction underpriced",
        "nonce too high",
        "invalid sender",
        "",
        None,
        42,
    ],
)
def test_other_errors_are_left_to_their_category(message: object) -> None:
    """Other refusals are no send outcome of their own (their category decides)."""
    assert send_error_kind(message) is None


def test_node_refusals_are_deterministic() -> None:
    """The classifier keeps node refusals the client's fault (REJECTED, never retried)."""
    for message in ("insufficient funds for gas * price + value", "nonce too high"):
        assert bucket_of(classify_rpc_error(-32000, message)) is Bucket.DETERMINISTIC


def test_verify_by_hash() -> None:
    """Only a transaction object with the same hash (any case) verifies."""
    assert verify_by_hash({"hash": H.upper().replace("0X", "0x")}, H)
    assert not verify_by_hash({"hash": "0x" + "cd" * 32}, H)
    assert not verify_by_hash(None, H)
    assert not verify_by_hash({"hash": None}, H)


def test_first_acceptance_answers_and_the_rest_are_counted() -> None:
    """With three legs out, the first acceptance answers; later legs are LATE."""
    b = Broadcast(H)
    b.launched(3)
    assert b.record(Leg.REJECTED, {"code": -32000}) is Decision.WAIT
    assert b.record(Leg.ACCEPTED) is Decision.ANSWER
    assert b.record(Leg.ACCEPTED) is Decision.LATE
    assert (b.accepted, b.rejected, b.retried, b.outstanding) == (2, 1, 0, 0)
    assert repr(b) == "<Broadcast 0xabababab… outstanding=0 accepted=2 rejected=1 retried=0>"


def test_rejection_answers_when_nobody_accepts() -> None:
    """All legs done with a rejection and no acceptance: the first rejection answers."""
    b = Broadcast(H)
    b.launched(2)
    assert b.record(Leg.RETRY) is Decision.WAIT
    assert b.record(Leg.REJECTED, "first") is Decision.REJECT
    assert b.rejection == "first"


def test_all_legs_failing_asks_for_more_providers() -> None:
    """Provider failures only: send to further providers (idempotent)."""
    b = Broadcast(H)
    b.launched(2)
    assert b.record(Leg.RETRY) is Decision.WAIT
    assert b.record(Leg.RETRY) is Decision.MORE
    b.launched(1)
    assert b.record(Leg.ACCEPTED) is Decision.ANSWER
    with pytest.raises(ValueError):
        b.record(Leg.VERIFY)


@given(st.lists(st.sampled_from([Leg.ACCEPTED, Leg.REJECTED, Leg.RETRY]), min_size=1))
def test_exactly_one_answer(legs: list[Leg]) -> None:
    """However legs end, the client gets at most one answer, and an acceptance wins over
    a rejection reported after it."""
    b = Broadcast(H)
    b.launched(len(legs))
    decisions = [b.record(leg) for leg in legs]
    answers = [d for d in decisions if d in (Decision.ANSWER, Decision.REJECT)]
    assert len(answers) <= 1
    if Leg.ACCEPTED in legs:
        first = legs.index(Leg.ACCEPTED)
        assert decisions[first] is Decision.ANSWER or Decision.REJECT in decisions[:first]
    if answers == [] and Leg.ACCEPTED not in legs:
        assert Leg.REJECTED not in legs and decisions[-1] is Decision.MORE
