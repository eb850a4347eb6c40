"""Bounds on what one JSON-RPC request may ask of a node (CONTRACT §3, §4).

Every value is documented in docs/configuration.md (Request limits). The socket-level
bounds (header size, request time, pipelining, connections) live with the HTTP server.

* **Batches.** ``max_batch`` (default :data:`DEFAULT_MAX_BATCH`, 1000: what viem's
  ``batchSize`` and ethers send by default) items per batch; more is HTTP 400 / -32600 for
  the whole batch. Items run concurrently, at most :data:`BATCH_CONCURRENCY` of one batch
  at a time and at most :data:`NODE_BATCH_CONCURRENCY` batch items on the node, all
  batches together (first come, first served), so one huge batch cannot take every
  upstream connection (256 per provider) from the other clients. Single requests never
  wait on either bound.
* **eth_getLogs chunks.** A split ``eth_getLogs`` (CONTRACT §8) runs at most
  ``routing.get_logs.max_parallel`` chunks at once, and the node at most
  :data:`NODE_LOG_CHUNKS` chunks of every split request together.
* **Params depth.** ``params`` nested deeper than :data:`MAX_PARAMS_DEPTH` levels (the
  default recursion limit of serde_json, which Rust clients and nodes such as reth and
  anvil use) are answered ``-32602`` with the client's id, without reaching a provider.
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_MAX_BATCH",
    "MAX_BATCH_LIMIT",
    "BATCH_CONCURRENCY",
    "NODE_BATCH_CONCURRENCY",
    "NODE_LOG_CHUNKS",
    "MAX_PARAMS_DEPTH",
]

DEFAULT_MAX_BATCH = 1000
"""Items per batch by default (``--max-batch`` / ``LASSO_MAX_BATCH``)."""

MAX_BATCH_LIMIT = 100_000
"""The largest ``max_batch`` accepted (the 8 MB body limit allows about this many)."""

BATCH_CONCURRENCY = 32
"""Items of one batch in flight at once."""

NODE_BATCH_CONCURRENCY = 128
"""Batch items in flight on the node, all batches together (half a provider's pool)."""

NODE_LOG_CHUNKS = 64
"""Chunks of split ``eth_getLogs`` requests in flight on the node, all requests together."""

MAX_PARAMS_DEPTH = 128
"""Deepest nesting of ``params`` (``[]`` is 1, ``[[]]`` is 2)."""
