"""Observability.start from the configuration file's ``observability:`` section."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest

from streamsync.config import ConfigError, parse_config
from streamsync.observability.config import DEFAULT_ADMIN_PORT, ObservabilityConfig
from streamsync.observability.service import OTLP_TRACES_ENDPOINT_ENV, Observability
from tests.observability.scrape import get, scrape, value

INGEST = {"topics": [{"name": "cio.pipelines", "format": "pipelines_json"}]}


def test_section_defaults_and_validation() -> None:
    config = parse_config({"ingest": INGEST}, env={})
    assert config.observability == ObservabilityConfig()
    assert config.observability.admin.port == DEFAULT_ADMIN_PORT
    assert config.observability.admin.host == "127.0.0.1"
    parsed = parse_config(
        {
            "ingest": INGEST,
            "observability": {
                "admin": {"host": "0.0.0.0", "port": 9464, "stall_timeout_seconds": 120},
                "otlp_endpoint": "http://otel-collector:4318/v1/traces",
                "log_format": "text",
            },
        },
        env={},
    )
    assert parsed.observability.admin.stall_timeout_seconds == 120
    assert parsed.observability.log_format == "text"
    for bad in (
        {"admin": {"port": 70000}},
        {"log_format": "xml"},
        {"trace_sample_ratio": 2},
        {"unknown": 1},
    ):
        with pytest.raises(ConfigError, match="observability"):
            parse_config({"ingest": INGEST, "observability": bad}, env={})


def test_start_serves_probes_and_metrics_then_closes() -> None:
    config = ObservabilityConfig.model_validate({"admin": {"port": 0}})
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    obs = Observability.start(config, role="deliver", env={})
    try:
        assert obs.admin is not None
        url = obs.admin.url
        assert not obs.telemetry.tracing.exporting
        obs.telemetry.deltas_delivered("braze", 3)
        assert get(f"{url}/readyz")[0] == 503
        obs.telemetry.health.set_ready()
        assert get(f"{url}/readyz")[0] == 200
        delivered = "streamsync_destination_delivered_total"
        assert value(scrape(url), delivered, destination="braze") == 3
    finally:
        obs.close()
        obs.close()
        for handler in list(root.handlers):
            if handler not in handlers:
                root.removeHandler(handler)
        root.setLevel(level)
    with pytest.raises(OSError):
        get(f"{url}/healthz")


def test_otlp_endpoint_from_config_or_environment() -> None:
    config = ObservabilityConfig.model_validate({"admin": {"enabled": False}})
    with Observability.start(config, role="evaluate", env={}, configure_logging=False) as obs:
        assert obs.admin is None and not obs.telemetry.tracing.exporting
    env = {OTLP_TRACES_ENDPOINT_ENV: "http://127.0.0.1:1/v1/traces"}
    with Observability.start(config, role="evaluate", env=env, configure_logging=False) as obs:
        assert obs.telemetry.tracing.exporting


def test_production_imports_never_reach_development_modules() -> None:
    """config.py and the observability package load without the local broker, the
    synthetic stream or the demo."""
    code = (
        "import sys, streamsync.config, streamsync.observability.service;"
        "print(','.join(sorted(m for m in sys.modules if m.startswith('streamsync'))))"
    )
    loaded = (
        subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
        .stdout.strip()
        .split(",")
    )
    for module in ("streamsync.dev.broker", "streamsync.dev.synthetic", "streamsync.dev.demo"):
        assert module not in loaded
    from streamsync.dev import broker
    from streamsync.kafka import config

    assert broker.BOOTSTRAP_ENV == config.BOOTSTRAP_ENV == "KAFKA_BOOTSTRAP_SERVERS"
