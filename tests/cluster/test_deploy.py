"""deploy/: the Grafana dashboard asks only for metrics Parley exposes, and the systemd units are valid."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

import parley.agent.metrics  # registers its metrics, as the others below
import parley.speech.metrics
import parley.telephony.metrics  # noqa: F401
from integration.harness import ROOT

DEPLOY = ROOT / "deploy"
PROMQL_FUNCTIONS = {"sum", "rate", "by", "max", "histogram_quantile"}
PROMQL_WORDS = PROMQL_FUNCTIONS | {"le", "instance", "reason", "kind", "engine", "slot_type", "why"}


def exposed_names() -> set[str]:
    """Every sample name Parley's metrics expose (counters' _total, histograms' _bucket ...), labelled
    ones included before any label value is seen."""
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"], "gauge": [""]}
    return {
        family.name + suffix
        for family in REGISTRY.collect()
        if family.name.startswith("parley_")
        for suffix in suffixes.get(family.type, [""])
    }


def test_every_dashboard_query_names_an_exposed_metric():
    dashboard = json.loads((DEPLOY / "grafana" / "parley-dashboard.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    exprs.append(dashboard["templating"]["list"][1]["query"])
    asked = {name for expr in exprs for name in re.findall(r"\bparley_[a-z_]+", expr)}
    assert asked, exprs
    missing = asked - exposed_names()
    assert not missing, f"the dashboard asks for metrics no layer defines: {sorted(missing)}"
    for expr in exprs:  # every word outside the metric names is PromQL or a label we set
        words = set(re.findall(r"\b[a-z_]+\b", re.sub(r'"[^"]*"|\[[^]]*\]|\bparley_[a-z_]+', "", expr)))
        assert words <= PROMQL_WORDS | {"label_values"}, expr
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
@pytest.mark.parametrize("unit", ["parley-node.service", "parley-kamailio.service"])
def test_systemd_units_parse(unit: str, tmp_path: Path):
    # Verified as text: the binaries they name (/opt/parley/...) need not exist on this machine.
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(DEPLOY / "systemd" / unit)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    problems = [
        line
        for line in result.stderr.splitlines()
        if unit in line and "Command" not in line and "is not executable" not in line
    ]
    assert not problems, result.stderr


def test_the_node_unit_passes_only_options_serve_knows():
    from click.testing import CliRunner

    from parley.cli import main

    unit = (DEPLOY / "systemd" / "parley-node.service").read_text()
    command = re.search(r"(?ms)^ExecStart=(.*?[^\\])$", unit)[1].replace("\\\n", " ")
    env = dict(
        line.split("=", 1)
        for line in (DEPLOY / "systemd" / "parley.env").read_text().splitlines()
        if line and not line.startswith("#")
    )
    args = re.sub(r"\$\{(\w+)\}", lambda m: env[m[1]], command).split()[1:]
    assert args[:3] == ["--log-format", "json", "serve"]
    result = CliRunner().invoke(main, [*args[:2], "serve", "--help"])
    assert result.exit_code == 0
    for option in (a for a in args[3:] if a.startswith("--")):
        assert option in result.output, f"parley serve has no {option}"
    # Behind Kamailio every request comes from its address: the per-source limit would throttle it.
    assert args[args.index("--rate-per-ip") + 1] == "0"
