"""The shipped deployment files: alert rules, Grafana dashboard, Kubernetes, Dockerfile."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import yaml

from lasso.cluster.transport import MemoryHub
from lasso.profiles import parse_profile

from support import ROOT, eventually, fleet_chain_yaml, profile_yaml

DEPLOY = ROOT / "deploy"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
NATS = shutil.which("nats-server") or "/usr/sbin/nats-server"
REGIONS = ("us-east-1", "eu-west-1", "ap-southeast-1")


def promtool(*args: str) -> str:
    if not Path(PROMTOOL).exists():
        pytest.fail("promtool is not installed (Debian package prometheus): run scripts/test.sh")
    done = subprocess.run(
        [PROMTOOL, *args], capture_output=True, text=True, timeout=60, cwd=DEPLOY / "prometheus"
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_alert_rules_are_valid_and_pass_their_unit_tests() -> None:
    """promtool accepts alerts.yml and the example config, and the rule tests pass."""
    assert "SUCCESS" in promtool("check", "rules", "alerts.yml")
    promtool("check", "config", "prometheus.yml")
    promtool("test", "rules", "alerts_test.yml")
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    names = {r["alert"] for g in rules["groups"] for r in g["rules"]}
    assert {
        "LassoCircuitBreakerOpen",
        "LassoProviderLagging",
        "LassoClusterNodeUnresponsive",
        "LassoHighErrorRate",
    } <= names


def _exprs(dashboard: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


async def test_dashboard_queries_only_name_metrics_a_node_exposes(
    sim_fleet: Any, lasso_node: Any
) -> None:
    """Every metric in deploy/grafana/lasso.json is in a clustered node's /metrics."""
    dashboard = orjson.loads((DEPLOY / "grafana" / "lasso.json").read_bytes())
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    titles = " ".join(p["title"] for p in dashboard["panels"]).lower()
    for needed in ("request rate", "p50", "p95", "p99", "circuit breaker", "availability",
                   "cluster"):  # fmt: skip
        assert needed in titles, needed
    fleet = await sim_fleet(["alpha", "bravo"])
    app = await lasso_node(
        profile_yaml(fleet_chain_yaml(fleet)),
        node_id="eu-west-1",
        settings={"cluster_interval_s": 0.1},
        cluster_exchange=MemoryHub().exchange(),
    )
    body = orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []})
    async with aiohttp.ClientSession() as s:
        for _ in range(4):
            async with s.post(f"{app.base_url}/rpc/load-balanced/ethereum", data=body) as r:
                assert r.status == 200
        await eventually(lambda: app.cluster.view.connected, message="memory exchange")
        async with s.get(f"{app.base_url}/metrics") as r:
            text = await r.text()
    # Series names from the TYPE lines, so families without samples yet count too.
    suffixes = {"histogram": ("_bucket", "_sum", "_count")}
    exposed = {
        name + suffix
        for name, kind in re.findall(r"^# TYPE (lasso_\w+) (\w+)$", text, re.M)
        for suffix in suffixes.get(kind, ("",))
    }
    used = {m for e in _exprs(dashboard) for m in re.findall(r"\blasso_\w+", e)}
    used |= {m for v in dashboard["templating"]["list"] if v["type"] == "query"
             for m in re.findall(r"\blasso_\w+", v["definition"])}  # fmt: skip
    assert used and used <= exposed, used - exposed
    assert any("histogram_quantile" in e and "provider" in e for e in _exprs(dashboard))
    assert {"lasso_cluster_nodes", "lasso_cluster_connected"} <= used


def _manifests() -> dict[str, list[dict[str, Any]]]:
    return {
        f.name: [d for d in yaml.safe_load_all(f.read_text()) if d]
        for f in sorted((DEPLOY / "k8s").glob("*.yaml"))
    }


def test_kubernetes_manifests_deploy_one_node_per_region() -> None:
    """Each region file runs lasso with its LASSO_NODE_ID, the cluster URL and probes."""
    files = _manifests()
    for region in REGIONS:
        docs = {d["kind"]: d for d in files[f"lasso-{region}.yaml"]}
        assert set(docs) == {
            "Deployment",
            "Service",
            "PodDisruptionBudget",
            "HorizontalPodAutoscaler",
        }
        pod = docs["Deployment"]["spec"]["template"]
        labels = docs["Deployment"]["spec"]["selector"]["matchLabels"]
        assert labels.items() <= pod["metadata"]["labels"].items()
        assert docs["Service"]["spec"]["selector"] == labels
        assert docs["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"] == labels
        assert (
            docs["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]["name"]
            == (docs["Deployment"]["metadata"]["name"])
        )
        (container,) = pod["spec"]["containers"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["LASSO_NODE_ID"] == region
        assert env["LASSO_CLUSTER_URL"].startswith("nats://nats.lasso.svc")
        assert container["args"][:3] == ["serve", "--host", "0.0.0.0"]
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            assert container[probe]["httpGet"]["path"] == "/api/health"
        assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert env["LASSO_PROFILES_DIR"] in mounts


def test_kubernetes_profiles_and_nats_config_are_valid(tmp_path: Path) -> None:
    """The ConfigMap's profiles load in Lasso and the NATS config passes nats-server -t."""
    files = _manifests()
    (profiles,) = files["10-profiles.yaml"]
    for name, text in profiles["data"].items():
        prof = parse_profile(text, name, {})
        assert prof.chains
    nats_conf = next(d for d in files["20-nats.yaml"] if d["kind"] == "ConfigMap")
    assert {d["kind"] for d in files["20-nats.yaml"]} >= {"StatefulSet", "Service"}
    if not Path(NATS).exists():
        pytest.fail("nats-server is not installed: run scripts/test.sh first")
    conf = tmp_path / "nats.conf"
    conf.write_text(nats_conf["data"]["nats.conf"])
    done = subprocess.run(
        [NATS, "-t", "-c", str(conf)],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "POD_NAME": "nats-0"},
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_dockerfile_runs_lasso_serve_as_non_root_with_a_health_check() -> None:
    """The image serves on 0.0.0.0 as a non-root user and checks /api/health."""
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.M)
    assert re.search(r"^USER 10001", text, re.M)
    assert re.search(r"^HEALTHCHECK .*", text, re.M) and "/api/health" in text
    assert 'ENTRYPOINT ["lasso"]' in text and 'CMD ["serve", "--host", "0.0.0.0"]' in text
    for copied in re.findall(r"^COPY (?!--)(\S+)", text, re.M):
        assert (ROOT / copied).exists(), copied
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".venv" in ignored and "node_modules" in ignored
