"""Configuration file: YAML loading, validation messages, secrets never printed."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamsync.config import AppConfig, ConfigError, load_config, parse_config

REPO = Path(__file__).resolve().parents[1]
SECRET = "hunter2-very-secret"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "streamsync.yaml"
    path.write_text(text)
    return path


def test_example_config_loads() -> None:
    config = load_config(REPO / "examples" / "config" / "local.yaml", env={})
    assert [t.name for t in config.ingest.topics] == [
        "cio.pipelines",
        "cio.webhooks",
        "cio.pipelines.avro",
    ]
    avro = config.ingest.topic("cio.pipelines.avro")
    assert (avro.format, avro.framing, avro.record_kind) == (
        "pipelines_avro",
        "confluent",
        "pipelines",
    )
    assert config.ingest.schema_registry_dir == REPO / "schemas" / "registry"
    assert config.ingest.dead_letter_topic == "streamsync.dead-letter"
    assert config.ingest.topics[0].max_record_bytes == 1024 * 1024


def test_env_overrides_bootstrap(tmp_path: Path) -> None:
    path = write(tmp_path, "ingest:\n  topics: [{name: a, format: webhook_json}]\n")
    assert load_config(path, env={}).kafka.bootstrap_servers == "localhost:9092"
    config = load_config(path, env={"KAFKA_BOOTSTRAP_SERVERS": "broker:29092"})
    assert config.kafka.bootstrap_servers == "broker:29092"
    assert load_config(path, env={"KAFKA_BOOTSTRAP_SERVERS": "  "}).kafka.bootstrap_servers == (
        "localhost:9092"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ingest:\n  topics: []\n", "ingest.topics"),
        ("ingest:\n  topics: [{name: a, format: csv}]\n", "ingest.topics.0.format"),
        (
            "ingest:\n  topics: [{name: a, format: pipelines_json, framing: confluent}]\n",
            "Avro formats only",
        ),
        (
            "ingest:\n  topics: [{name: a, format: pipelines_avro, framing: confluent}]\n",
            "schema_registry_dir",
        ),
        (
            "ingest:\n  topics:\n    - {name: a, format: webhook_json}\n"
            "    - {name: a, format: webhook_json}\n",
            "listed twice",
        ),
        (
            "ingest:\n  dead_letter_topic: a\n  topics: [{name: a, format: webhook_json}]\n",
            "dead_letter_topic",
        ),
        ("ingest:\n  topics: [{name: a, format: webhook_json, colour: red}]\n", "colour"),
        (
            "ingest:\n  topics: [{name: a, format: webhook_json, max_record_bytes: 0}]\n",
            "max_record",
        ),
        *(
            (
                f"evaluate: {{audiences: a, {setting}: {value}}}\n",
                f"evaluate.{setting}: must be between",
            )
            for setting, value in (
                ("transaction_timeout", "0s"),
                ("transaction_timeout", "30m"),
                ("session_timeout", "1ms"),
                ("broker_timeout", "0s"),
            )
        ),
        ("evaluate: {audiences: a, delta_schema_id: 99999999999}\n", "delta_schema_id"),
        ("evaluate: {audiences: a, commit_interval: 0s}\n", "commit_interval"),
        ("ingest: [\n", "not valid YAML"),
        ("- a\n- b\n", "mapping"),
    ],
)
def test_validation_errors(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, text), env={})


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.yaml")


SASL = f"""
kafka:
  bootstrap_servers: b:9093
  security_protocol: SASL_SSL
  sasl_mechanism: SCRAM-SHA-512
  sasl_username: streamsync
  sasl_password: {SECRET}
ingest:
  topics: [{{name: a, format: webhook_json}}]
"""


def test_secrets_never_printed(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, SASL), env={})
    assert config.kafka.client_config()["sasl.password"] == SECRET
    for text in (repr(config), str(config), repr(config.kafka), str(config.kafka.redacted())):
        assert SECRET not in text
    assert config.kafka.redacted()["sasl.password"] == "**********"
    assert config.kafka.redacted()["sasl.username"] == "streamsync"


def test_secrets_not_in_validation_errors(tmp_path: Path) -> None:
    # A wrongly typed password (a list) must not be echoed back in the error.
    bad = SASL.replace(f"sasl_password: {SECRET}", f"sasl_password: [{SECRET}]")
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, bad), env={})
    assert "sasl_password" in str(info.value)
    assert SECRET not in str(info.value)
    # A YAML syntax error on the password's line must not quote it either.
    broken = SASL.replace(f"sasl_password: {SECRET}", f"sasl_password: {SECRET}: [")
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, broken), env={})
    assert SECRET not in str(info.value)


def test_sasl_needs_credentials() -> None:
    data = {
        "kafka": {"security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN"},
        "ingest": {"topics": [{"name": "a", "format": "webhook_json"}]},
    }
    with pytest.raises(ConfigError, match="sasl_username"):
        parse_config(data, env={})


def test_models_are_frozen() -> None:
    config = AppConfig.model_validate(
        {"ingest": {"topics": [{"name": "a", "format": "webhook_json"}]}}
    )
    with pytest.raises(ValueError, match="frozen"):
        config.ingest.topics[0].name = "b"  # type: ignore[misc]


TOPICS = "ingest:\n  topics: [{name: a, format: webhook_json}]\n"


def test_errors_are_one_line(tmp_path: Path) -> None:
    text = "ingest:\n  topics: [{name: a, format: csv, colour: red}]\n"
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), env={})
    message = str(info.value)
    assert "\n" not in message
    assert "ingest.topics.0.format" in message and "colour" in message


def test_not_utf8_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "streamsync.yaml"
    path.write_bytes(TOPICS.encode() + b"# caf\xe9\n")
    with pytest.raises(ConfigError, match=r"line 3: not UTF-8"):
        load_config(path, env={})


def test_a_directory_is_not_a_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path, env={})


def test_nested_too_deep(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nested more than 64 levels"):
        load_config(write(tmp_path, TOPICS + "x: " + "[" * 3000 + "]" * 3000 + "\n"), env={})


def test_duplicate_keys_are_rejected_without_values(tmp_path: Path) -> None:
    text = SASL.replace(
        f"  sasl_password: {SECRET}\n", f"  sasl_password: {SECRET}\n  sasl_password: x\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), env={})
    assert "line 8: duplicate key 'sasl_password' (first at line 7)" in str(info.value)
    assert SECRET not in str(info.value)


def test_missing_schema_registry_dir_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, TOPICS + "  schema_registry_dir: registry\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert f"ingest.schema_registry_dir: {tmp_path / 'registry'} does not exist" in str(info.value)
    (tmp_path / "registry").mkdir()
    assert load_config(path, env={}).ingest.schema_registry_dir == tmp_path / "registry"


def test_unreadable_schema_registry_mapping_is_found_at_load(tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    registry.mkdir()
    (registry / "registry.yaml").write_text(f"1: [{SECRET}\n", "utf-8")
    path = write(tmp_path, TOPICS + "  schema_registry_dir: registry\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert "ingest.schema_registry_dir" in str(info.value)
    assert "not valid YAML" in str(info.value) and SECRET not in str(info.value)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (f"{{no.such.setting: {SECRET}}}", "'no.such.setting' is not a librdkafka setting"),
        (f"{{linger.ms: 5, acks: {SECRET}}}", "librdkafka rejects the value of 'acks'"),
    ],
)
def test_unknown_or_invalid_librdkafka_settings(tmp_path: Path, extra: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, f"kafka:\n  extra: {extra}\n{TOPICS}"), env={})
    assert f"kafka.extra: {message}" in str(info.value)
    assert SECRET not in str(info.value)


def test_valid_librdkafka_settings_pass_as_is(tmp_path: Path) -> None:
    extra = "{linger.ms: 5, socket.keepalive.enable: true, auto.offset.reset: earliest}"
    config = load_config(write(tmp_path, f"kafka:\n  extra: {extra}\n{TOPICS}"), env={})
    assert config.kafka.client_config()["linger.ms"] == 5
    assert config.kafka.client_config()["auto.offset.reset"] == "earliest"


@pytest.mark.parametrize(
    "setting",
    [
        "enable.idempotence: false",
        "isolation.level: read_uncommitted",
        "enable.auto.commit: true",
        "transactional.id: x",
        "acks: 1",
        "group.id: other",
    ],
)
def test_extra_cannot_override_what_exactly_once_depends_on(tmp_path: Path, setting: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, f"kafka:\n  extra: {{{setting}}}\n{TOPICS}"), env={})
    assert "kafka.extra: cannot set " + setting.split(":")[0] in str(info.value)


def test_not_a_regular_file_or_too_large(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a regular file"):
        load_config("/dev/zero", env={})
    big = write(tmp_path, TOPICS + "#" * (1024 * 1024) + "\n")
    with pytest.raises(ConfigError, match="larger than 1 MiB"):
        load_config(big, env={})


def _admin_ports(path: Path) -> list[tuple[str, int]]:
    """``(process, admin port)`` of every long-running process ``path`` configures: evaluate
    when it has an ``evaluate:`` section, one deliver per destination."""
    config = load_config(path, env={})
    ports = []
    if config.evaluate is not None:
        ports.append((f"{path.name} evaluate", config.observability_for().admin.port))
    for name in config.destinations:
        ports.append((f"{path.name} deliver {name}", config.observability_for(name).admin.port))
    return ports


def test_example_configurations_run_side_by_side_without_port_clashes() -> None:
    """Every example is meant to run on one machine at once (evaluate from local.yaml,
    both delivers from deliver-local.yaml): no two processes may bind one admin port
    (port 0 picks a free one), nor an admin port a stand-in or the broker uses."""
    files = sorted((REPO / "examples" / "config").glob("*.yaml"))
    assert {f.name for f in files} >= {"local.yaml", "deliver-local.yaml"}
    ports = [entry for path in files for entry in _admin_ports(path)]
    assert len(ports) >= 3  # evaluate and both delivers
    taken: dict[int, str] = {}
    for process, port in ports:
        if port == 0:
            continue
        assert port not in taken, f"{process} and {taken[port]} both bind admin port {port}"
        taken[port] = process
    deliver = load_config(REPO / "examples" / "config" / "deliver-local.yaml", env={})
    others = {9092} | {int(d.base_url.rsplit(":", 1)[1]) for d in deliver.destinations.values()}
    assert not others & set(taken), "an admin port is the broker's or a stand-in's"


def test_a_destination_admin_port_applies_to_its_deliver_only(tmp_path: Path) -> None:
    config = parse_config(
        {
            "ingest": {"topics": [{"name": "a", "format": "webhook_json"}]},
            "observability": {"admin": {"port": 9500}},
            "destinations": {
                "braze": {"kind": "braze", "base_url": "http://x", "credentials": {"env": "K"},
                          "admin_port": 9501},
                "moe": {"kind": "moengage", "app_id": "A", "credentials": {"env": "K"}},
            },
        }
    )  # fmt: skip
    assert config.observability_for().admin.port == 9500
    assert config.observability_for("braze").admin.port == 9501
    assert config.observability_for("moe").admin.port == 9500
    assert config.observability_for("braze").admin.host == config.observability.admin.host
