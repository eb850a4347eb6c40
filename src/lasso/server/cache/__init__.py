"""The response cache and request coalescing (CONTRACT §7, docs/caching.md).

What an answer depends on and when it stays true is decided in the kernel
(:mod:`lasso.kernel.cache_policy`, :mod:`lasso.kernel.blockwindow`); this package holds
the stores (:mod:`.memory`, :mod:`.redis_store`), the coalescer (:mod:`.coalesce`), the
per-chain state (:mod:`.chain`), the wrapper around the pipeline (:mod:`.service`), the
feed of block hashes and finality (:mod:`.heads`) and the metrics and dashboard view
(:mod:`.report`).
"""

from lasso.server.cache.chain import ChainCache
from lasso.server.cache.coalesce import Coalescer
from lasso.server.cache.heads import HeadWatch
from lasso.server.cache.memory import MemoryStore
from lasso.server.cache.redis_store import RedisStore
from lasso.server.cache.service import ResponseCache, cache_key

__all__ = [
    "ChainCache",
    "Coalescer",
    "HeadWatch",
    "MemoryStore",
    "RedisStore",
    "ResponseCache",
    "cache_key",
]
