"""Tests of ``lasso sim``: argument parsing, spec files and a real run until SIGINT."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from lasso.sim import cli

UNIT = float(os.environ.get("LASSO_TEST_TIME_UNIT", "1.0"))


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return parser.parse_args(argv)


def test_providers_flag_builds_named_providers_on_consecutive_ports() -> None:
    """--providers N gives alpha, bravo, ... on base+1.. with the quick behaviour flags."""
    argv = "--providers 3 --base-port 5000 --lag-blocks 2 --error-rate 0.5 --chain-id 10"
    fleet = cli.build_fleet(parse(*argv.split()))
    assert [(p.id, p.port) for p in fleet] == [("alpha", 5001), ("bravo", 5002), ("charlie", 5003)]
    assert fleet["bravo"].behavior.lag_blocks == 2 and fleet["alpha"].behavior.error_rate == 0.5
    assert fleet.chain().chain_id == 10


def test_demo_flag_builds_the_demo_fleet() -> None:
    """--demo gives the eight demo providers; --base-port 0 makes every port ephemeral."""
    ports = {p.port for p in cli.build_fleet(parse("--demo"))}
    assert ports == {4101, 4102, 4103, 4104, 4105, 4111, 4112, 4113}
    assert {p.port for p in cli.build_fleet(parse("--demo", "--base-port", "0"))} == {0}


def test_base_port_moves_the_demo_fleet_too() -> None:
    """--demo --base-port 5100 puts the admin API on 5100 and the providers on 5101..5113,
    and prints the variables that point demo.yml at them."""
    fleet = cli.build_fleet(parse("--demo", "--base-port", "5100"))
    assert {p.port for p in fleet} == {5101, 5102, 5103, 5104, 5105, 5111, 5112, 5113}
    assert fleet["alpha-base"].port == 5111
    hint = cli.demo_env_hint(fleet)
    assert "export LASSO_SIM_ALPHA_URL=http://127.0.0.1:5101" in hint
    assert "export LASSO_SIM_BASE_CHARLIE_WS=ws://127.0.0.1:5113/ws" in hint


def test_spec_file(tmp_path: Path) -> None:
    """A YAML spec gives chains and providers, flat or nested behaviour, default ports."""
    spec = tmp_path / "fleet.yml"
    spec.write_text(
        "chains:\n  - {chain_id: 8453, block_time_ms: 500, cache_size: 20000}\n"
        "providers:\n"
        "  - {id: fast, latency_ms: 5}\n"
        "  - {id: pruned, port: 6123, behavior: {archival: false}}\n"
    )
    fleet = cli.build_fleet(parse("--spec", str(spec), "--base-port", "6000"))
    assert [(p.id, p.port) for p in fleet] == [("fast", 6001), ("pruned", 6123)]
    assert fleet.chain().chain_id == 8453 and fleet.chain().block_time_s == 0.5
    assert fleet.chain()._cache_size == 20000  # blocks kept built (a wide getLogs bench)
    assert fleet["pruned"].behavior.archival is False
    listed = tmp_path / "list.json"
    listed.write_text(json.dumps([{"id": "x", "drop": True}]))
    assert cli.build_fleet(parse("--spec", str(listed)))["x"].behavior.drop


def test_bad_spec_is_a_readable_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown behaviour field in a spec exits 2 with a message naming it."""
    spec = tmp_path / "bad.yml"
    spec.write_text("- {id: a, latency: 5}\n")
    assert cli.run(parse("--spec", str(spec))) == 2
    assert "latency" in capsys.readouterr().err


def test_runs_until_sigint() -> None:
    """The command prints the URLs, serves requests and exits 0 on SIGINT."""
    code = (
        "import argparse, sys; from lasso.sim import cli; p = argparse.ArgumentParser(); "
        "cli.add_arguments(p); sys.exit(cli.run(p.parse_args(sys.argv[1:])))"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "--base-port", "0", "--providers", "2", "--latency-ms", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(4)]
        assert lines[0].startswith("chain 1"), lines
        url = lines[1].split()[1]
        admin = lines[3].split()[2]
        request = urllib.request.Request(
            url, data=b'{"jsonrpc":"2.0","id":1,"method":"eth_chainId"}', method="POST"
        )
        with urllib.request.urlopen(request, timeout=5 * UNIT) as response:
            assert json.loads(response.read())["result"] == "0x1"
        with urllib.request.urlopen(f"{admin}/providers", timeout=5 * UNIT) as response:
            assert len(json.loads(response.read())["providers"]) == 2
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10 * UNIT) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
