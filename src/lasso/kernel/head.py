"""The served head of one chain: what ``eth_blockNumber`` and block tags may answer.

CONTRACT §8: on one node, per chain, ``eth_blockNumber`` and
``eth_getBlockByNumber("latest")`` never answer lower than a head already served. Providers
a few blocks apart make a naive router's head saw-tooth; this object keeps the highest head
each tag has been served at and says, for every new answer, whether it may go out:

* ``eth_blockNumber`` answering ``h`` is *clamped*: the client gets ``max(h, served)``
  (:meth:`HeadTracker.serve_head`). The served value is a block some provider reported,
  so the answer is true; it costs no retry.
* a block answered for a tag (``latest``, ``safe``, ``finalized``) below that tag's served
  number is *behind*: the caller retries it on a provider that has the served block
  (:meth:`HeadTracker.accept_tag_block`), because a whole block cannot be made up.

The served numbers double as the node's knowledge of the chain for tag resolution
(:meth:`HeadTracker.resolve`): ``eth_getLogs`` bounds and the response cache's finality
both read it. ``finalized`` and ``safe`` are learned only from blocks served for those tags
(and :meth:`HeadTracker.observe_tag`, for a prober that polls them); unknown until then.

Everything only moves forward; nothing here reads a clock (the heights of providers, with
their ages, live in :class:`~.chainstate.ChainState`).
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["HEAD_TAGS", "HeadTracker"]

HEAD_TAGS = ("latest", "safe", "finalized")
"""Tags whose served block number only moves forward."""


class HeadTracker:
    """Served head numbers per tag for one chain (of one profile)."""

    __slots__ = ("_served",)

    def __init__(self) -> None:
        self._served: dict[str, int] = {}

    # -- reads ----------------------------------------------------------------------------

    @property
    def head(self) -> int | None:
        """The highest head served (``eth_blockNumber`` or a ``latest`` block); ``None``
        before the first one."""
        return self._served.get("latest")

    def tag(self, tag: str) -> int | None:
        """The served number of ``tag`` (one of :data:`HEAD_TAGS`), ``None`` if unknown."""
        return self._served.get(tag)

    @property
    def finalized(self) -> int | None:
        """The highest block known final (served or observed for ``finalized``)."""
        return self._served.get("finalized")

    def resolve(self, ref: int | str, head: int | None) -> int | None:
        """A block reference as a number, for routing, splitting and caching.

        Args:
            ref: a block number or a tag (``latest``, ``pending``, ``earliest``, ``safe``,
                ``finalized``).
            head: the chain's current head as the providers report it (the router's
                consensus); ``latest`` is the higher of it and the served head, so a read
                after an ``eth_blockNumber`` answer never resolves below that answer.

        Returns:
            The number; ``None`` when it is not known (``latest`` with no head at all,
            ``safe``/``finalized`` before they were seen): the caller passes the tag on.
        """
        if type(ref) is int:
            return ref
        if ref == "earliest":
            return 0
        if ref == "latest" or ref == "pending":
            served = self._served.get("latest")
            if head is None:
                return served
            return head if served is None or head > served else served
        return self._served.get(ref) if isinstance(ref, str) else None

    # -- inputs ---------------------------------------------------------------------------

    def serve_head(self, height: int) -> int:
        """An ``eth_blockNumber`` answer of ``height``: return the head to answer.

        That is ``height`` when it is not below the served head (which then becomes
        ``height``), else the served head: the answer never goes backwards.
        """
        served = self._served.get("latest")
        if served is None or height > served:
            self._served["latest"] = height
            return height
        return served

    def accept_tag_block(self, tag: str, number: int) -> bool:
        """A block answered for ``tag`` with number ``number``: may it be served?

        True (and the tag's served number moves up to ``number``) unless ``number`` is
        below what the tag was served at before: then the answering provider is behind and
        the caller retries on one that has :meth:`tag` (not the provider's fault). Unknown
        tags (``pending``, ``earliest``) are always accepted and not recorded.
        """
        if tag not in HEAD_TAGS:
            return True
        served = self._served.get(tag)
        if served is not None and number < served:
            return False
        self._served[tag] = number
        return True

    def observe_tag(self, tag: str, number: int) -> None:
        """A fact from outside the request path (a probe of ``finalized``, say): raise the
        tag's number to ``number`` if higher. Unknown tags are ignored."""
        if tag in HEAD_TAGS:
            served = self._served.get(tag)
            if served is None or number > served:
                self._served[tag] = number

    def restore(self, served: Mapping[str, int]) -> None:
        """Take over another tracker's numbers (a reload builds new routers; the served
        head must survive it). Only moves numbers up."""
        for tag, number in served.items():
            self.observe_tag(tag, number)

    def snapshot(self) -> dict[str, int]:
        """The served numbers by tag (a copy)."""
        return dict(self._served)

    def __repr__(self) -> str:
        parts = " ".join(f"{t}={self._served[t]}" for t in HEAD_TAGS if t in self._served)
        return f"<HeadTracker {parts or 'empty'}>"
