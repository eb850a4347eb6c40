"""Fan-out: each event a stream emits reaches every client subscription sharing it.

An event is serialized once per stream; each client subscription prepends its own frame
prefix (:func:`frame_prefix`, built once when it subscribes). A client whose
:meth:`SubscriptionClient.send_raw` refuses a frame (gone, or dropped as too slow by its
endpoint) loses the subscription then and there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import orjson

if TYPE_CHECKING:
    from lasso.kernel.subscriptions import Emit
    from lasso.server.runtime import ChainRuntime
    from lasso.server.subscriptions.stream import Stream

__all__ = ["SubscriptionClient", "fan_out", "frame_prefix"]

_PREFIX = b'{"jsonrpc":"2.0","method":"eth_subscription","params":{"subscription":"'
_MIDDLE = b'","result":'
_SUFFIX = b"}}"


class SubscriptionClient(Protocol):
    """What the manager needs of a client connection (``ws_rpc.WsClient`` has it)."""

    @property
    def id(self) -> int: ...  # unique per node

    @property
    def rt(self) -> ChainRuntime: ...  # the chain the socket is bound to

    @property
    def provider_id(self) -> str | None: ...  # a provider override, or None

    def send_raw(self, frame: bytes) -> bool:
        """Queue a text frame; False if the client is gone or dropped as too slow."""
        ...


def frame_prefix(sub_id: str) -> bytes:
    """The bytes of an ``eth_subscription`` notification for ``sub_id`` up to its result."""
    return _PREFIX + sub_id.encode() + _MIDDLE


def fan_out(stream: Stream, emit: Emit) -> None:
    """Send ``emit`` to every client of ``stream``; unsubscribe those that refuse it."""
    payload = emit.payload
    if emit.removed and isinstance(payload, dict):
        payload = {**payload, "removed": True}
    data = orjson.dumps(payload) + _SUFFIX
    gone: list[str] = []
    prefixes = stream.prefixes
    for sid, client in list(stream.clients.items()):  # a send may close a client
        if not client.send_raw(prefixes[sid] + data):
            gone.append(sid)
    for sid in gone:  # gone or dropped as too slow: their subscriptions end here
        stream.slow_drops += 1
        stream.mgr._remove(sid)
