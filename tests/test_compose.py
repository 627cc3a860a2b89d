"""docker-compose.yml, compose/, Dockerfile and .dockerignore agree with the code.

Docker is not available where the tests run, so the stack is checked structurally: the
Kafka image is the version the tests run against, the KRaft settings are consistent, the
streamsync services connect to an address the broker advertises, their commands are
valid ``streamsync`` invocations, every deliver service names a configured destination,
and Prometheus scrapes every streamsync admin endpoint.
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from streamsync.cli import build_parser
from streamsync.dev.broker import default_kafka_version

_ROOT = Path(__file__).resolve().parents[1]
_STREAMSYNC_SERVICES = (
    "streamsync-evaluate",
    "streamsync-deliver-braze",
    "streamsync-deliver-moengage",
    "streamsync-standins",
    "streamsync-ingest",
    "streamsync-demo-generator",
)
_ADMIN_SERVICES = ("streamsync-evaluate", "streamsync-deliver-braze", "streamsync-deliver-moengage")
_CONFIG_IN_CONTAINER = "/etc/streamsync/streamsync.yaml"


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


# -- the complete stack: evaluate, deliver per destination, stand-ins, Prometheus ----------


@pytest.fixture(scope="module")
def stack_config() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((_ROOT / "compose" / "streamsync.yaml").read_text())
    return loaded


def _mounts(service: dict[str, Any]) -> dict[str, str]:
    """{container path: host path or volume name} of a service."""
    out = {}
    for volume in service.get("volumes", []):
        source, target, *_ = str(volume).split(":")
        out[target] = source
    return out


def _parse_or_skip(argv: list[str]) -> argparse.Namespace:
    """The parsed command; skipped while this build lacks the sub-command (it is built
    elsewhere and lands with it)."""
    registered = _registered_commands()
    if argv[0] not in registered:
        pytest.skip(f"'streamsync {argv[0]}' is not in this build yet")
    if argv[0] == "dev":
        parser = build_parser()
        try:
            return parser.parse_args(argv)
        except SystemExit:
            pytest.skip(f"'streamsync {' '.join(argv[:2])}' is not in this build yet")
    return build_parser().parse_args(argv)


def test_complete_stack_services(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(_STREAMSYNC_SERVICES) | {"kafka", "prometheus"} <= set(services)
    for name in _STREAMSYNC_SERVICES:
        service = services[name]
        assert service["image"] == "streamsync:local"
        assert service["build"] == ".", f"{name} would try to pull streamsync:local"
        assert service["read_only"] is True, name
        assert "/tmp" in service["tmpfs"], name
    for name in ("streamsync-evaluate", "streamsync-deliver-braze", "streamsync-deliver-moengage"):
        assert services[name]["depends_on"]["kafka"]["condition"] == "service_healthy"
        assert services[name]["restart"] == "unless-stopped"
    # Opt-in extras stay out of a plain `docker compose up`.
    assert services["streamsync-ingest"]["profiles"] == ["ingest-check"]


def test_evaluate_command_and_mounts(compose: dict[str, Any], stack_config: dict[str, Any]) -> None:
    evaluate = compose["services"]["streamsync-evaluate"]
    argv = _command(evaluate)
    assert argv == ["evaluate", "--config", _CONFIG_IN_CONTAINER]
    mounts = _mounts(evaluate)
    assert mounts[_CONFIG_IN_CONTAINER] == "./compose/streamsync.yaml"
    # The state directory is a named volume (the root filesystem is read-only).
    state = mounts[stack_config["evaluate"]["state_dir"]]
    assert state in compose["volumes"]
    audiences = mounts[stack_config["evaluate"]["audiences"]]
    assert (_ROOT / audiences).is_dir() and list((_ROOT / audiences).glob("*.yaml"))
    args = _parse_or_skip(argv)
    assert args.command == "evaluate"


def test_one_deliver_service_per_destination(
    compose: dict[str, Any], stack_config: dict[str, Any]
) -> None:
    destinations = stack_config["destinations"]
    delivers = {
        name: service
        for name, service in compose["services"].items()
        if "command" in service and _command(service)[:1] == ["deliver"]
    }
    assert set(delivers) == {f"streamsync-deliver-{name}" for name in destinations}
    standins = compose["services"]["streamsync-standins"]
    standin_ports = {int(str(p).split(":")[-1]) for p in standins["ports"]}
    for service_name, service in delivers.items():
        argv = _command(service)
        destination = argv[argv.index("--destination") + 1]
        assert service_name == f"streamsync-deliver-{destination}"
        assert argv[argv.index("--config") + 1] == _CONFIG_IN_CONTAINER
        assert _mounts(service)[_CONFIG_IN_CONTAINER] == "./compose/streamsync.yaml"
        settings = destinations[destination]
        # The credentials the destination names are given to its container (stand-in keys).
        assert settings["credentials"]["env"] in service["environment"]
        host, port = settings["base_url"].removeprefix("http://").split(":")
        assert host == "streamsync-standins" and int(port) in standin_ports
        assert service["depends_on"]["streamsync-standins"]["condition"] == "service_started"
    for service in delivers.values():
        args = _parse_or_skip(_command(service))
        assert args.command == "deliver"


def test_standins_command(compose: dict[str, Any], stack_config: dict[str, Any]) -> None:
    argv = _command(compose["services"]["streamsync-standins"])
    assert argv[:2] == ["dev", "stand-ins"]
    assert argv[argv.index("--host") + 1] == "0.0.0.0"
    ports = {int(argv[argv.index(flag) + 1]) for flag in ("--braze-port", "--moengage-port")}
    published = {
        int(str(p).split(":")[-1]) for p in compose["services"]["streamsync-standins"]["ports"]
    }
    assert ports == published
    args = _parse_or_skip(argv)
    assert args.command == "dev"


def test_stack_config_is_valid(stack_config: dict[str, Any]) -> None:
    from streamsync.config import AppConfig, parse_config

    # Sections this build does not know yet (evaluate, destinations) are checked by the
    # build that adds them; everything else must validate now.
    unknown = set(stack_config) - set(AppConfig.model_fields)
    assert unknown <= {"evaluate", "destinations"}
    config = parse_config({k: v for k, v in stack_config.items() if k not in unknown}, env={})
    assert config.kafka.bootstrap_servers == "kafka:29092"
    assert (config.observability.admin.host, config.observability.admin.port) == ("0.0.0.0", 9464)


def test_prometheus_scrapes_every_admin_endpoint(
    compose: dict[str, Any], stack_config: dict[str, Any]
) -> None:
    prometheus = compose["services"]["prometheus"]
    mounts = _mounts(prometheus)
    assert mounts["/etc/prometheus/prometheus.yml"] == "./compose/prometheus.yml"
    scrape: dict[str, Any] = yaml.safe_load((_ROOT / "compose" / "prometheus.yml").read_text())
    (job,) = scrape["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    targets = {t for group in job["static_configs"] for t in group["targets"]}
    port = stack_config["observability"]["admin"]["port"]
    assert targets == {f"{name}:{port}" for name in _ADMIN_SERVICES}
    for name in _ADMIN_SERVICES:
        service = compose["services"][name]
        test = " ".join(service["healthcheck"]["test"])
        assert f"127.0.0.1:{port}/readyz" in test
        assert any(str(p).endswith(f":{port}") for p in service["ports"])


def _stages(text: str) -> list[list[str]]:
    """The Dockerfile's instructions per stage, continuation lines joined."""
    stages: list[list[str]] = []
    for raw in text.replace("\\\n", " ").splitlines():
        line = raw.strip()
        if line.startswith("FROM "):
            stages.append([])
        if stages and line and not line.startswith("#"):
            stages[-1].append(line)
    return stages


def test_dockerfile_is_multi_stage_non_root_and_read_only_ready() -> None:
    from streamsync.observability.config import DEFAULT_ADMIN_PORT

    stages = _stages((_ROOT / "Dockerfile").read_text("utf-8"))
    assert len(stages) >= 2
    runtime = stages[-1]
    # Only the built virtualenv and data files reach the runtime stage: no build context.
    copies = [line for line in runtime if line.startswith("COPY")]
    assert copies and all(line.startswith("COPY --from=build ") for line in copies)
    assert not any("pip install" in line for line in runtime)
    assert "USER 10001:10001" in runtime
    assert any(line.startswith("RUN ") and "--uid 10001" in line for line in runtime)
    assert 'VOLUME ["/var/lib/streamsync/state"]' in runtime
    assert f"EXPOSE {DEFAULT_ADMIN_PORT}" in runtime
    assert any("PYTHONDONTWRITEBYTECODE=1" in line for line in runtime)
    # Byte-code is compiled at build time: a read-only root cannot take __pycache__.
    assert any("compileall" in line for line in stages[0])


def test_dockerignore_keeps_what_the_build_needs() -> None:
    entries = set((_ROOT / ".dockerignore").read_text("utf-8").split())
    assert {"tests", "helm", "bench"} <= entries
    for needed in ("pyproject.toml", "README.md", "streamsync", "schemas", "examples"):
        assert needed not in entries and (_ROOT / needed).exists()
