"""compose/prometheus-rules.yml is the chart's PrometheusRule (default thresholds), so the
docker-compose stack alerts like a Kubernetes install and the two cannot drift apart."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.helm.chart import ROOT, one, render

pytestmark = pytest.mark.helm


def test_compose_rules_are_the_charts() -> None:
    rendered = one(render("--set", "prometheusRule.enabled=true"), "PrometheusRule", "streamsync")
    shipped: dict[str, Any] = yaml.safe_load(
        (ROOT / "compose" / "prometheus-rules.yml").read_text()
    )
    assert shipped == {"groups": rendered["spec"]["groups"]}, (
        "compose/prometheus-rules.yml is stale; regenerate it as its header says"
    )


def test_compose_prometheus_loads_the_rules() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    config = yaml.safe_load((ROOT / "compose" / "prometheus.yml").read_text())
    mounts = {
        target: source
        for source, target, *_ in (
            v.split(":") for v in compose["services"]["prometheus"]["volumes"]
        )
    }
    (rules,) = config["rule_files"]
    assert mounts[rules] == "./compose/prometheus-rules.yml"
    # The rules select on the ServiceMonitor's pod labels: the static targets carry them.
    components = {
        group["labels"]["app_kubernetes_io_component"]
        for job in config["scrape_configs"]
        for group in job["static_configs"]
    }
    assert components == {"evaluate", "deliver"}
