"""docker-compose.yml, Dockerfile and .dockerignore agree with the code.

Docker is not available where the tests run, so the stack is checked structurally: the
Kafka image is the version the tests run against, the KRaft settings are consistent, the
streamsync services connect to an address the broker advertises, and their commands are
valid ``streamsync`` invocations.
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from streamsync.cli import build_parser
from streamsync.kafka.broker import default_kafka_version

_ROOT = Path(__file__).resolve().parents[1]
_STREAMSYNC_SERVICES = ("streamsync-ingest", "streamsync-demo-generator")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((_ROOT / "docker-compose.yml").read_text("utf-8"))
    return loaded


@pytest.fixture(scope="module")
def kafka_env(compose: dict[str, Any]) -> dict[str, str]:
    env = compose["services"]["kafka"]["environment"]
    assert isinstance(env, dict), "kafka environment must be a mapping"
    return {key: str(value) for key, value in env.items()}


def _listeners(value: str) -> dict[str, tuple[str, int]]:
    """``NAME://host:port,...`` as ``{NAME: (host, port)}`` (an empty host stays empty)."""
    out: dict[str, tuple[str, int]] = {}
    for item in value.split(","):
        name, _, address = item.partition("://")
        host, _, port = address.rpartition(":")
        out[name] = (host, int(port))
    return out


def _command(service: dict[str, Any]) -> list[str]:
    command = service["command"]
    argv = shlex.split(command) if isinstance(command, str) else [str(c) for c in command]
    # The image's ENTRYPOINT is `streamsync`; tolerate it being repeated in the command.
    return argv[1:] if argv and argv[0] == "streamsync" else argv


def _registered_commands() -> set[str]:
    parser = build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return set(action.choices)
    return set()


def test_services_exist(compose: dict[str, Any]) -> None:
    assert {"kafka", "streamsync-ingest", "streamsync-demo-generator"} <= set(compose["services"])
    assert compose["services"]["streamsync-demo-generator"]["profiles"] == ["demo"]


def test_kafka_image_is_the_pinned_version(compose: dict[str, Any]) -> None:
    image = compose["services"]["kafka"]["image"]
    assert image == f"apache/kafka:{default_kafka_version()}"


def test_kraft_combined_mode_is_consistent(kafka_env: dict[str, str]) -> None:
    assert set(kafka_env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    node_id = kafka_env["KAFKA_NODE_ID"]
    listeners = _listeners(kafka_env["KAFKA_LISTENERS"])
    advertised = _listeners(kafka_env["KAFKA_ADVERTISED_LISTENERS"])
    protocols = dict(
        item.split(":") for item in kafka_env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")
    )
    controller = kafka_env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    assert controller in listeners and controller in protocols
    assert set(listeners) <= set(protocols)
    assert set(advertised) <= set(listeners)
    for name, (_, port) in advertised.items():
        assert listeners[name][1] == port, f"{name} advertises a port it does not listen on"
    voter_id, _, voter = kafka_env["KAFKA_CONTROLLER_QUORUM_VOTERS"].partition("@")
    assert voter_id == node_id
    assert int(voter.rpartition(":")[2]) == listeners[controller][1]
    inter_broker = kafka_env.get("KAFKA_INTER_BROKER_LISTENER_NAME")
    if inter_broker is not None:
        assert inter_broker in advertised


def test_single_broker_replication(kafka_env: dict[str, str]) -> None:
    for key in (
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR",
    ):
        assert kafka_env[key] == "1", key
    assert kafka_env["KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS"] == "0"


def test_kafka_has_healthcheck_and_published_port(compose: dict[str, Any]) -> None:
    kafka = compose["services"]["kafka"]
    assert kafka["healthcheck"]["test"]
    assert "9092:9092" in [str(p) for p in kafka["ports"]]


def test_streamsync_services_use_an_advertised_listener(
    compose: dict[str, Any], kafka_env: dict[str, str]
) -> None:
    advertised = {
        f"{host}:{port}"
        for host, port in _listeners(kafka_env["KAFKA_ADVERTISED_LISTENERS"]).values()
    }
    ingest = compose["services"]["streamsync-ingest"]
    bootstrap = ingest["environment"]["KAFKA_BOOTSTRAP_SERVERS"]
    assert set(bootstrap.split(",")) <= advertised
    assert ingest["depends_on"]["kafka"]["condition"] == "service_healthy"
    for name in _STREAMSYNC_SERVICES:
        env = compose["services"][name].get("environment") or {}
        if "KAFKA_BOOTSTRAP_SERVERS" in env:
            assert set(env["KAFKA_BOOTSTRAP_SERVERS"].split(",")) <= advertised, name


def test_demo_generator_command_parses(compose: dict[str, Any]) -> None:
    argv = _command(compose["services"]["streamsync-demo-generator"])
    args = build_parser().parse_args(argv)
    assert args.command == "dev" and args.dev_command == "generate"


def test_ingest_command_parses(compose: dict[str, Any]) -> None:
    if "ingest" not in _registered_commands():
        pytest.skip("streamsync.cli.ingest is not written yet; its command cannot be checked")
    argv = _command(compose["services"]["streamsync-ingest"])
    args = build_parser().parse_args(argv)
    assert args.command == "ingest"


def test_mounted_config_exists(compose: dict[str, Any]) -> None:
    ingest = compose["services"]["streamsync-ingest"]
    argv = _command(ingest)
    config = argv[argv.index("--config") + 1]
    mounts = {
        target: source
        for source, target, *_ in (str(v).split(":") for v in ingest.get("volumes", []))
    }
    host_path = None
    for target, source in mounts.items():
        if config.startswith(target.rstrip("/") + "/"):
            host_path = _ROOT / source / config[len(target) :].lstrip("/")
    assert host_path is not None, f"{config} is not inside any volume of streamsync-ingest"
    if not host_path.parent.exists() or not host_path.exists():
        pytest.skip(f"{host_path.relative_to(_ROOT)} is not in the repository yet")
    assert host_path.is_file()


def test_dockerfile_installs_package_with_entrypoint() -> None:
    text = (_ROOT / "Dockerfile").read_text("utf-8")
    lines = [line.strip() for line in text.splitlines()]
    assert any(line.startswith("FROM python:3.11-slim") for line in lines)
    assert any(line.startswith("RUN pip install /app") for line in lines)
    assert 'ENTRYPOINT ["streamsync"]' in lines
    user = [line for line in lines if line.startswith("USER ")]
    assert user and user[-1] not in ("USER root", "USER 0")


def test_dockerignore_keeps_local_state_out() -> None:
    entries = set((_ROOT / ".dockerignore").read_text("utf-8").split())
    assert {".git", ".venv"} <= entries
