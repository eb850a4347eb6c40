"""The simulated node's filters: ``eth_newFilter`` and friends, as geth answers them.

Pure code owned by one :class:`~lasso.sim.provider.SimProvider` (filters live on one node,
which is the point of sticky filters). Ids are numbered per provider
(``0x0000…01``, ``0x0000…02``…), so two simulated providers hand out the same ids, as two
real nodes may: a router must not mix them up. At most :data:`MAX_FILTERS` per node, the
oldest dropped first; an unknown id answers geth's ``-32000 "filter not found"``.

* a block filter's changes are the hashes of the blocks that became visible since the
  last poll (at most :data:`MAX_CHANGES`);
* a log filter's changes are the matching logs of those blocks (up to its ``toBlock``);
  ``eth_getFilterLogs``
  answers the filter's whole range (``fromBlock``/``toBlock``, ``latest`` meaning the head);
* a pending-transaction filter's changes are the hashes received since the last poll.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lasso.sim.node import NodeView

__all__ = ["MAX_CHANGES", "MAX_FILTERS", "SimFilters"]

MAX_FILTERS = 1_000
MAX_CHANGES = 1_000


@dataclass(slots=True)
class _Filter:
    kind: str  # "block", "logs", "pending"
    last_block: int  # the last block reported (block and log filters)
    spec: dict[str, Any] = field(default_factory=dict)  # the log filter as given
    seen_txs: int = 0  # mempool entries reported (pending filters)


class SimFilters:
    """One node's filters."""

    def __init__(self) -> None:
        self._filters: dict[str, _Filter] = {}
        self._next = 1

    def __len__(self) -> int:
        return len(self._filters)

    def _add(self, flt: _Filter) -> str:
        fid = f"0x{self._next:032x}"
        self._next += 1
        self._filters[fid] = flt
        while len(self._filters) > MAX_FILTERS:
            del self._filters[next(iter(self._filters))]
        return fid

    def new_block_filter(self, view: NodeView) -> str:
        return self._add(_Filter("block", view.head))

    def new_pending_filter(self, view: NodeView) -> str:
        return self._add(_Filter("pending", view.head, seen_txs=len(view.mempool)))

    def new_log_filter(self, view: NodeView, spec: dict[str, Any]) -> str:
        """A log filter; ``spec`` was validated by the caller (addresses, topics). As in
        geth, its changes start after the head at creation, whatever ``fromBlock`` says
        (``eth_getFilterLogs`` answers the whole range)."""
        return self._add(_Filter("logs", view.head, spec=dict(spec)))

    def get(self, fid: str) -> _Filter | None:
        return self._filters.get(fid.lower()) if isinstance(fid, str) else None

    def uninstall(self, fid: str) -> bool:
        return self._filters.pop(fid.lower(), None) is not None if isinstance(fid, str) else False

    def changes(self, view: NodeView, fid: str, logs_of: Any) -> list[Any]:
        """New entries since the last poll; ``logs_of(spec, lo, hi)`` reads logs.

        Raises:
            KeyError: unknown filter.
        """
        flt = self._filters.get(fid.lower())
        if flt is None:
            raise KeyError(fid)
        if flt.kind == "pending":
            hashes = list(view.mempool)[flt.seen_txs : flt.seen_txs + MAX_CHANGES]
            flt.seen_txs += len(hashes)
            return hashes
        if view.head <= flt.last_block:
            return []  # this node has nothing newer (it may even be behind the poller)
        lo = flt.last_block + 1
        hi = min(view.head, flt.last_block + MAX_CHANGES)
        to_block = flt.spec.get("toBlock")
        if isinstance(to_block, str) and to_block.startswith("0x"):
            hi = min(hi, int(to_block, 16))
            if hi < lo:
                return []
        flt.last_block = hi
        if flt.kind == "block":
            return [view.chain.block_hash(n) for n in range(lo, hi + 1)]
        return list(logs_of(flt.spec, lo, hi))
