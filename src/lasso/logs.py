"""Structured logging: one JSON object per line, every line carrying the node id.

The node id of a line is, in order: a ``node_id`` the call passes in ``extra``; the
:data:`NODE_ID` context variable, which :func:`node_context` sets while a node starts (so
every task and connection of that node inherits it: ``lasso demo --nodes N`` runs N
nodes in one process); else the process's node id given to :func:`setup_logging`.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import orjson

__all__ = ["LEVELS", "NODE_ID", "JsonFormatter", "node_context", "setup_logging"]

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
"""The log levels ``--log-level`` accepts (any case)."""

NODE_ID: ContextVar[str | None] = ContextVar("lasso_node_id", default=None)
"""The node id of the code running now, when a process runs several nodes."""


@contextmanager
def node_context(node_id: str) -> Iterator[None]:
    """Run the block (and every task it creates) as node ``node_id`` for the logs."""
    token = NODE_ID.set(node_id)
    try:
        yield
    finally:
        NODE_ID.reset(token)


_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def __init__(self, node_id: str) -> None:
        super().__init__()
        self.node_id = node_id

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "node_id": NODE_ID.get() or self.node_id,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                doc[key] = value
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(doc, default=str).decode()


def setup_logging(node_id: str, level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(node_id))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
