"""JSON log lines: fields, and whose node id each line carries."""

from __future__ import annotations

import asyncio
import logging

import orjson

from lasso.logs import JsonFormatter, node_context


def record(**extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("lasso.events", logging.WARNING, __file__, 1, "hello %s", ("x",), None)
    rec.__dict__.update(extra)
    return rec


def test_line_fields_and_the_process_node_id() -> None:
    """A line has ts, level, node_id, logger, msg and the extra fields."""
    doc = orjson.loads(JsonFormatter("local").format(record(event="x.y", provider="a")))
    assert doc["node_id"] == "local" and doc["msg"] == "hello x" and doc["level"] == "warning"
    assert (doc["event"], doc["provider"]) == ("x.y", "a")


async def test_node_context_names_the_node_in_its_tasks() -> None:
    """Inside node_context, and in tasks created there, lines carry that node's id; an
    explicit node_id in the call wins."""
    fmt = JsonFormatter("local")

    async def later() -> str:
        await asyncio.sleep(0)
        return str(orjson.loads(fmt.format(record()))["node_id"])

    with node_context("eu-west-1"):
        task = asyncio.get_running_loop().create_task(later())
        assert orjson.loads(fmt.format(record()))["node_id"] == "eu-west-1"
        assert orjson.loads(fmt.format(record(node_id="us-east-1")))["node_id"] == "us-east-1"
    assert orjson.loads(fmt.format(record()))["node_id"] == "local"
    assert await task == "eu-west-1"
