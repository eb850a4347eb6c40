"""bench.cache: the truth it judges answers against, and its report."""

from __future__ import annotations

import argparse

from bench import cache

from lasso.sim.chain import SyntheticChain


class _Fleet:
    """The two things Truth.reorg uses of a SimFleet, over one chain and a fixed clock."""

    def __init__(self, chain: SyntheticChain, now: float) -> None:
        self.chain_ = chain
        self.now = now

    def clock(self) -> float:
        return self.now

    def reorg(self, depth: int) -> int:
        return self.chain_.reorg(depth, self.now)


def test_truth_replays_reorgs_for_past_instants() -> None:
    """Before a reorg the truth is the old block, after it the new one."""
    chain = SyntheticChain(1, 1.0, "t", start_height=100, start_time=0.0)
    truth = cache.Truth(chain)
    old = chain.block_hash(110)
    truth.reorg(_Fleet(chain, 10.5), 1)  # type: ignore[arg-type]
    assert chain.block_hash(110) != old
    assert truth.answer(10.2, "eth_getBlockByNumber", ["0x6e", False])["hash"] == old
    new = truth.answer(10.7, "eth_getBlockByNumber", ["0x6e", False])["hash"]
    assert new == chain.block_hash(110)
    assert truth.answer(5.0, "eth_getBlockByNumber", ["0x6e", False]) is None  # not yet
    assert truth.answer(5.0, "eth_getBalance", ["0x12", "latest"]) == {"__error__": -32602}
    assert truth.instants(9.5, 11.6) == [9.5, 11.6, 10.0, 11.0, 10.5]


def test_judge_on_time_late_wrong_failed() -> None:
    """An answer true when sent is on time, true shortly before is late, else wrong."""
    chain = SyntheticChain(1, 1.0, "t", start_height=100, start_time=0.0)
    truth = cache.Truth(chain)

    def rec(answer: object, sent: float) -> cache.Record:
        return cache.Record("dapp", "eth_blockNumber", [], sent, sent + 0.01, 200, answer, None)

    assert cache.judge(truth, rec("0x6e", 10.5), 0.05) == "on_time"
    assert cache.judge(truth, rec("0x6d", 10.02), 0.05) == "late"
    assert cache.judge(truth, rec("0x6d", 10.5), 0.05) == "wrong"
    assert cache.judge(truth, rec(cache.FAILED, 10.5), 0.05) == "failed"


def test_report_and_arguments() -> None:
    """The report has one row per mode with the reduction against off; --quick is 15 s."""
    args = cache.parse_args(["--quick"])
    assert args.duration == 15.0 and args.block_time == 12.0
    off = cache.ModeResult("off", requests=100, upstream_calls=100)
    on = cache.ModeResult("cache", requests=100, upstream_calls=40)
    for r in (off, on):
        r.latency = {"dapp": {"p50": 1.0, "p99": 2.0}, "indexer": {"p50": 3.0, "p99": 4.0}}
        r.verdicts = {"on_time": 100}
    meta = {"timestamp": "now", "git": "abc", "cpus": 2}
    text = cache.render([off, on], meta, argparse.Namespace(**vars(args)))
    assert "| cache | 100 | 40 | 0.400 | 60.0 % |" in text
