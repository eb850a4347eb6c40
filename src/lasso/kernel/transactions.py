"""Idempotent ``eth_sendRawTransaction``: what a provider's answer means, and broadcasts.

CONTRACT §8. A signed transaction is the same transaction however often it is sent: its
hash is keccak-256 of its bytes (:func:`.keccak.tx_hash`), computed here, not trusted from
an answer. So a resend (a wallet or SDK after a timeout) must be answered with that hash,
not with the error a node gives for a transaction it already has:

* "already known" and its variants (geth, Erigon, Besu, Nethermind, anvil, providers) are
  **accepted**: the node has this very transaction;
* "nonce too low" and its variants need a look: the transaction may have been mined (then
  it is ours: accepted) or another transaction used the nonce (the client's error). The
  driver asks the *same* provider ``eth_getTransactionByHash`` (:func:`verify_by_hash`);
* any other error the node gives (insufficient funds, underpriced, bad signature…) is
  **rejected**: the client's answer, never retried;
* a provider that failed or refused (timeout, 5xx, rate limit, method missing) may be
  **retried** on another: rebroadcasting a signed transaction is idempotent, so even a
  send that may have landed ("indeterminate") is safe to repeat elsewhere.

:class:`Broadcast` aggregates the legs of one send to ``routing.broadcast`` providers at
once: the first acceptance answers; the others are counted.
"""

from __future__ import annotations

import re
from enum import Enum
from typing import Any

__all__ = [
    "ALREADY_KNOWN_WORDINGS",
    "NONCE_TOO_LOW_WORDINGS",
    "Broadcast",
    "Decision",
    "Leg",
    "send_error_kind",
    "verify_by_hash",
]


class Leg(Enum):
    """One provider's answer to a send."""

    ACCEPTED = "accepted"  # a hash, or "already known"
    VERIFY = "verify"  # "nonce too low": ask this provider for the transaction by hash
    REJECTED = "rejected"  # the node refused the transaction: the client's error
    RETRY = "retry"  # the provider failed or refused the request: try another one


ALREADY_KNOWN_WORDINGS: tuple[tuple[str, str], ...] = (
    ("geth, Erigon, reth, Bor, most providers", "already known"),
    ("Besu, OpenEthereum, Parity", "known transaction"),
    ("anvil, Hardhat", "already imported"),
    ("Nethermind", "alreadyknown"),
    ("Avalanche, Celo, providers", "already in mempool"),
    ("providers", "already in the mempool"),
    ("providers", "already exists in mempool"),
    ("providers", "transaction already exists"),
    ("providers", "already have transaction"),
)
"""(who, phrase): the node already has this transaction. Lower-cased substrings."""

NONCE_TOO_LOW_WORDINGS: tuple[tuple[str, str], ...] = (
    ("geth, Erigon, reth, anvil, providers", "nonce too low"),
    ("Besu (rendered), providers", "nonce is too low"),
    ("Besu", "nonce_too_low"),
    ("Nethermind", "oldnonce"),
    ("providers", "nonce has already been used"),
)
"""(who, phrase): the nonce is used, by this transaction or another one."""

_KNOWN = re.compile("|".join(re.escape(p) for _, p in ALREADY_KNOWN_WORDINGS))
_NONCE = re.compile("|".join(re.escape(p) for _, p in NONCE_TOO_LOW_WORDINGS))


def send_error_kind(message: object) -> Leg | None:
    """``ACCEPTED`` for an "already known" message, ``VERIFY`` for "nonce too low", else
    ``None`` (the error's category decides: the caller's fault is ``REJECTED``, a
    provider's failure ``RETRY``)."""
    if not isinstance(message, str) or not message:
        return None
    lowered = message[:512].lower()
    if _KNOWN.search(lowered):
        return Leg.ACCEPTED
    if _NONCE.search(lowered):
        return Leg.VERIFY
    return None


def verify_by_hash(result: Any, tx_hash: str) -> bool:
    """Whether an ``eth_getTransactionByHash`` result is the transaction ``tx_hash``: a
    "nonce too low" was then this very transaction, already mined or pending."""
    if not isinstance(result, dict):
        return False
    got = result.get("hash")
    return isinstance(got, str) and got.lower() == tx_hash.lower()


class Decision(Enum):
    """What the driver does after a leg's outcome."""

    ANSWER = "answer"  # the first acceptance: answer the client with the hash now
    WAIT = "wait"  # other legs are still out
    REJECT = "reject"  # every leg is done, none accepted, one rejected: answer that error
    MORE = "more"  # every leg is done, none accepted or rejected: try further providers
    LATE = "late"  # a leg after the answer: count it, nothing to do


class Broadcast:
    """The legs of one ``eth_sendRawTransaction`` sent to several providers at once.

    Args:
        tx_hash: the locally computed hash (the answer on acceptance).
    """

    __slots__ = ("accepted", "answered", "outstanding", "rejected", "rejection", "retried",
                 "tx_hash")  # fmt: skip

    def __init__(self, tx_hash: str) -> None:
        self.tx_hash = tx_hash
        self.outstanding = 0
        self.answered = False
        self.accepted = 0
        self.rejected = 0
        self.retried = 0
        self.rejection: Any = None  # the first rejecting answer (the driver's error object)

    def launched(self, legs: int) -> None:
        """``legs`` more sends went out."""
        self.outstanding += legs

    def record(self, leg: Leg, error: Any = None) -> Decision:
        """One leg's final outcome (after any ``VERIFY`` follow-up: pass ``ACCEPTED`` or
        ``REJECTED`` then). ``error`` is kept for the first rejection."""
        if leg is Leg.VERIFY:
            raise ValueError("resolve VERIFY with eth_getTransactionByHash first")
        self.outstanding -= 1
        if leg is Leg.ACCEPTED:
            self.accepted += 1
        elif leg is Leg.REJECTED:
            self.rejected += 1
            if self.rejection is None:
                self.rejection = error
        else:
            self.retried += 1
        if self.answered:
            return Decision.LATE
        if leg is Leg.ACCEPTED:
            self.answered = True
            return Decision.ANSWER
        if self.outstanding > 0:
            return Decision.WAIT
        if self.rejected:
            self.answered = True
            return Decision.REJECT
        return Decision.MORE

    def __repr__(self) -> str:
        return (
            f"<Broadcast {self.tx_hash[:10]}… outstanding={self.outstanding} "
            f"accepted={self.accepted} rejected={self.rejected} retried={self.retried}>"
        )
