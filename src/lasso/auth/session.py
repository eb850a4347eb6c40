"""A client's standing on one long-lived connection: :class:`Session` (WebSockets).

A WebSocket authenticates once, at the upgrade, with the same credentials as HTTP
(header, bearer or ``?key=``); every message after that is screened like an HTTP request
(scopes, one token per request or batch item) under the client found then. The session
keeps what it was opened with (the credential, the peer and its ``X-Forwarded-For``) so
that a reload can check it again under the new rules (:meth:`Session.recheck`): a key
that was removed, a token that no longer verifies, an address no longer allowed or a
chain no longer in scope ends the connection; otherwise the connection carries on under
the new limits and scopes. A JWT session also ends when its token expires.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence

from lasso.auth.client import Client, Refusal, forbidden_chain, unauthorized
from lasso.auth.gate import Item, ProfileGate, credential_of, mark

__all__ = ["Session"]


class Session:
    """What a connection was opened with, and the client it stands for now.

    ``client`` is ``None`` while the profile has no gate (no auth and no limits).
    """

    __slots__ = (
        "profile",
        "chain",
        "credential",
        "peer",
        "forwarded_for",
        "gate",
        "client",
        "leeway_s",
    )

    def __init__(
        self, profile: str, chain: str, headers: dict[str, str], query: str, peer: str
    ) -> None:
        self.profile = profile
        self.chain = chain
        self.credential = credential_of(headers, query)
        self.peer = peer
        self.forwarded_for = headers.get("x-forwarded-for")
        self.gate: ProfileGate | None = None
        self.client: Client | None = None
        self.leeway_s = 0.0

    def check(self, gate: ProfileGate | None, now: float) -> Refusal | None:
        """Find the client under ``gate``, the profile's current one (at the upgrade, and
        again after a reload); a refusal means the connection must not (or no longer)
        be served. Counts a refusal once."""
        self.gate = gate
        if gate is None:
            self.client = None
            return None
        address = gate.address(
            {"x-forwarded-for": self.forwarded_for} if self.forwarded_for else {}, self.peer
        )
        credential = self.credential if gate.takes_credentials else None
        who = gate.identify_parts(credential, address, now)
        if isinstance(who, Refusal):
            gate.count_refused(who)
            return who
        if who.chains is not None and self.chain not in who.chains:
            refusal = forbidden_chain(self.chain)
            who.count(refusal.metric)
            return refusal
        self.client = who
        self.leeway_s = float(gate.jwt.config.leeway_s) if gate.jwt is not None else 0.0
        return None

    def expires_at(self) -> float | None:
        """Wall-clock time after which the credential is no longer valid, if it expires."""
        client = self.client
        if client is None or client.expires_at is None:
            return None
        return client.expires_at + self.leeway_s

    def screen(
        self, items: Sequence[Item], now: float, wall: float
    ) -> Refusal | None | Awaitable[Refusal | None]:
        """Screen the items of one message (see :meth:`ProfileGate.screen`)."""
        client, gate = self.client, self.gate
        assert client is not None and gate is not None
        expires = self.expires_at()
        if expires is not None and wall >= expires:
            refusal = unauthorized("token_expired")
            for item in items:
                mark(item, refusal)
            client.count(refusal.metric, len(items))
            return refusal
        return gate.screen(client, self.chain, items, now)

    def __repr__(self) -> str:
        return f"<Session {self.profile}/{self.chain} {self.client!r}>"
