"""The console's Deployment in the Helm chart: off by default, signed-in only, its
configuration file valid for ``streamsync console``, its secrets from Secrets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from streamsync.config import parse_config
from tests.helm.chart import CHART, RELEASE, RenderError, find, one, render, run_helm

pytestmark = pytest.mark.helm

CONSOLE = f"{RELEASE}-console"
VALUES = {
    "console": {
        "enabled": True,
        "users": [
            {
                "name": "retention",
                "role": "viewer",
                "tokenSecret": {"secretName": "streamsync-console", "key": "viewer-token"},
            },
            {
                "name": "platform",
                "role": "operator",
                "passwordSecret": {"secretName": "streamsync-console", "key": "platform"},
            },
        ],
        "proxy": {"enabled": True, "trustedProxies": ["10.0.0.0/8"], "operators": ["a@b"]},
        "processes": [
            {"name": "evaluate-0", "role": "evaluate", "url": "http://evaluate:9464"},
        ],
    }
}


def _values(tmp_path: Path, values: dict[str, Any]) -> list[str]:
    path = tmp_path / "console-values.yaml"
    path.write_text(yaml.safe_dump(values))
    return ["-f", str(path)]


def test_the_console_is_off_by_default() -> None:
    docs = render()
    assert not find(docs, "Deployment", CONSOLE)
    assert not find(docs, "Service", CONSOLE)


def test_enabled_it_needs_a_way_to_sign_in() -> None:
    with pytest.raises(RenderError, match="needs a way to sign in"):
        render("--set", "console.enabled=true")
    with pytest.raises(RenderError, match="tokenSecret or passwordSecret"):
        render("--set", "console.enabled=true", "--set", "console.users[0].name=x")


def test_lint_with_the_console(tmp_path: Path) -> None:
    done = run_helm("lint", "--strict", str(CHART), *_values(tmp_path, VALUES))
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_console_deployment_reads_its_own_config_and_secrets(tmp_path: Path) -> None:
    docs = render(*_values(tmp_path, VALUES))
    deployment = one(docs, "Deployment", CONSOLE)
    spec = deployment["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert container["args"] == ["console", "--config", "/etc/streamsync/streamsync.yaml"]
    env = {e["name"]: e.get("valueFrom", {}).get("secretKeyRef") for e in container["env"]}
    assert env["STREAMSYNC_CONSOLE_TOKEN_0"] == {
        "name": "streamsync-console",
        "key": "viewer-token",
    }
    assert env["STREAMSYNC_CONSOLE_PASSWORD_1"] == {"name": "streamsync-console", "key": "platform"}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    (config_volume,) = [v for v in spec["volumes"] if v["name"] == "config"]
    assert config_volume["configMap"]["name"] == f"{CONSOLE}-config"
    text = one(docs, "ConfigMap", f"{CONSOLE}-config")["data"]["streamsync.yaml"]
    config = parse_config(yaml.safe_load(text), env={})
    assert config.console is not None
    assert config.console.host == "0.0.0.0"  # inside the pod; the Service is ClusterIP
    assert [u.name for u in config.console.auth.users] == ["retention", "platform"]
    assert config.console.auth.secure_cookies is True
    assert config.console.auth.proxy is not None
    assert config.console.auth.proxy.trusted_proxies == ["10.0.0.0/8"]
    assert "viewer-token" not in text  # names the Secret's variable, never a value
    service = one(docs, "Service", CONSOLE)
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"][0]["port"] == 8470
    assert one(docs, "NetworkPolicy", CONSOLE)
    # The shared configuration file has no console section: evaluate and deliver do not
    # roll when the console changes.
    shared = one(docs, "ConfigMap", f"{RELEASE}-config")["data"]["streamsync.yaml"]
    assert "console" not in yaml.safe_load(shared)


def test_the_console_draws_the_swing_alert_the_chart_pages_with(tmp_path: Path) -> None:
    values = {
        **VALUES,
        "prometheusRule": {"audienceSwingPercent": 35, "audienceSwingMinMembers": 250},
    }
    docs = render(*_values(tmp_path, values))
    text = one(docs, "ConfigMap", f"{CONSOLE}-config")["data"]["streamsync.yaml"]
    config = parse_config(yaml.safe_load(text), env={})
    assert config.console is not None
    assert config.console.swing_alert.percent == 35
    assert config.console.swing_alert.min_members == 250


def test_more_than_one_replica_needs_the_session_key(tmp_path: Path) -> None:
    with pytest.raises(RenderError, match=r"needs console\.sessionKeySecret"):
        render(*_values(tmp_path, VALUES), "--set", "console.replicas=2")
    # One replica without it: each pod signs with a key of its own.
    single = one(render(*_values(tmp_path, VALUES)), "ConfigMap", f"{CONSOLE}-config")
    assert "session_key" not in yaml.safe_load(single["data"]["streamsync.yaml"])["console"]["auth"]
    key = {"secretName": "streamsync-console", "key": "session-key"}
    values = {"console": {**VALUES["console"], "replicas": 3, "sessionKeySecret": key}}
    docs = render(*_values(tmp_path, values))
    deployment = one(docs, "Deployment", CONSOLE)
    assert deployment["spec"]["replicas"] == 3
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("valueFrom", {}).get("secretKeyRef") for e in container["env"]}
    assert env["STREAMSYNC_CONSOLE_SESSION_KEY"] == {
        "name": "streamsync-console",
        "key": "session-key",
    }
    text = one(docs, "ConfigMap", f"{CONSOLE}-config")["data"]["streamsync.yaml"]
    config = parse_config(yaml.safe_load(text), env={})
    assert config.console is not None and config.console.auth.session_key is not None
    assert config.console.auth.session_key.env == "STREAMSYNC_CONSOLE_SESSION_KEY"
    done = run_helm("lint", "--strict", str(CHART), *_values(tmp_path, values))
    assert done.returncode == 0, done.stdout + done.stderr
