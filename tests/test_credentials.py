"""Secrets named by the configuration (``{env: VAR}`` / ``{file: PATH}``): the model's rules,
the Kafka SASL password read from them, and the password never printed or logged."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from streamsync.cli import main
from streamsync.config import ConfigError, load_config, parse_config
from streamsync.credentials import Credentials, CredentialsError, resolve_credential_files
from streamsync.kafka.config import KafkaConfig
from streamsync.observability.logs import JsonFormatter, TextFormatter

SENTINEL = "sentinel-kafka-pw-8d1f0c"
INGEST = {"topics": [{"name": "in", "format": "pipelines_json"}]}


def sasl(**password: Any) -> dict[str, Any]:
    return {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_username": "streamsync",
        **password,
    }


def write(path: Path, kafka: dict[str, Any], **sections: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"kafka": kafka, "ingest": INGEST, **sections}))
    return path


# -- the Credentials model ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, "credentials need exactly one of env: VARIABLE or file: PATH"),
        ({"env": "A", "file": "/x"}, "credentials need exactly one of env: VARIABLE or file: PATH"),
        ({"env": ""}, "at least 1 character"),
        ({"path": "/x"}, "Extra inputs are not permitted"),
    ],
)
def test_credentials_need_exactly_one_source(data: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError) as info:
        Credentials.model_validate(data)
    assert message in str(info.value)


def test_credentials_read_env_and_file(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text(f"{SENTINEL}\n")
    assert Credentials(file=secret).read().get_secret_value() == SENTINEL
    assert Credentials(env="PW").read({"PW": SENTINEL}).get_secret_value() == SENTINEL
    assert SENTINEL not in repr(Credentials(env="PW").read({"PW": SENTINEL}))


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ({"env": "NO_SUCH_PW"}, "credentials environment variable NO_SUCH_PW is unset or empty"),
        ({"env": "BLANK_PW"}, "credentials environment variable BLANK_PW is unset or empty"),
        ({"file": "missing"}, "cannot read credentials file {dir}/missing (No such file"),
        ({"file": "empty"}, "credentials file {dir}/empty is unset or empty"),
        ({"file": "binary"}, "credentials file {dir}/binary is not UTF-8 text"),
    ],
)
def test_credentials_errors_name_the_source(
    tmp_path: Path, source: dict[str, str], message: str
) -> None:
    (tmp_path / "empty").write_text("\n")
    (tmp_path / "binary").write_bytes(b"\xff\xfe" + SENTINEL.encode())
    if "file" in source:
        source = {"file": str(tmp_path / source["file"])}
    with pytest.raises(CredentialsError) as info:
        Credentials.model_validate(source).read({"BLANK_PW": "  \n"})
    assert message.format(dir=tmp_path) in str(info.value)
    assert SENTINEL not in str(info.value)


def test_every_credential_file_resolves_against_the_configuration_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf = tmp_path / "conf"
    path = write(
        conf / "streamsync.yaml",
        sasl(sasl_password_from={"file": "secrets/kafka"}),
        destinations={
            "braze": {
                "kind": "braze",
                "base_url": "https://rest.iad-01.braze.com",
                "credentials": {"file": "secrets/braze"},
                "mode": "cohorts",
                "cohorts": {"partner_name": "p", "partner_key": {"file": "secrets/partner"}},
            },
            "moengage": {
                "kind": "moengage",
                "base_url": "https://api-01.moengage.com",
                "app_id": "APP",
                "credentials": {"file": "/abs/moengage"},
            },
        },
    )
    monkeypatch.chdir(tmp_path)  # not the configuration file's directory
    config = load_config(path, env={})
    secrets = conf.resolve() / "secrets"
    assert config.kafka.sasl_password_from == Credentials(file=secrets / "kafka")
    braze = config.destinations["braze"]
    assert braze.credentials.file == secrets / "braze"
    assert braze.cohorts.partner_key.file == secrets / "partner"  # type: ignore[attr-defined]
    assert config.destinations["moengage"].credentials.file == Path("/abs/moengage")
    # Nothing relative left: resolving again changes nothing.
    assert resolve_credential_files(config, Path("/elsewhere")) is config


# -- kafka.sasl_password_from ------------------------------------------------------------


@pytest.mark.parametrize(
    ("kafka", "message"),
    [
        (sasl(), "SASL needs sasl_password, or sasl_password_from: {env: VARIABLE}"),
        (
            sasl(sasl_password=SENTINEL, sasl_password_from={"env": "PW"}),
            "set sasl_password or sasl_password_from, not both",
        ),
        (
            {**sasl(sasl_password_from={"env": "PW"}), "sasl_username": None},
            "SASL needs sasl_username",
        ),
        (sasl(sasl_password_from={"env": "PW", "file": "/x"}), "exactly one of env"),
        (sasl(sasl_password_from=SENTINEL), "kafka.sasl_password_from"),
        (sasl(sasl_password_from={"env": "PW", "value": SENTINEL}), "Extra inputs"),
    ],
)
def test_sasl_password_rules(kafka: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"kafka": kafka, "ingest": INGEST}, env={})
    assert message in str(info.value)
    assert SENTINEL not in str(info.value)


def test_client_config_reads_the_password_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    kafka = KafkaConfig.model_validate(sasl(sasl_password_from={"env": "KAFKA_SASL_PASSWORD"}))
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", SENTINEL)
    settings = kafka.client_config()
    assert settings["sasl.password"] == SENTINEL
    assert settings["sasl.username"] == "streamsync"
    assert settings["sasl.mechanism"] == "SCRAM-SHA-512"
    assert (
        kafka.client_config({"KAFKA_SASL_PASSWORD": f"{SENTINEL}-2"})["sasl.password"]
        == f"{SENTINEL}-2"
    )
    # Read when the settings are built, not when the file is loaded: a rotated secret is
    # picked up by the next client.
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", f"{SENTINEL}-rotated")
    assert kafka.client_config()["sasl.password"] == f"{SENTINEL}-rotated"


def test_client_config_reads_the_password_from_a_relative_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path / "conf" / "c.yaml", sasl(sasl_password_from={"file": "kafka-pw"}))
    (tmp_path / "conf" / "kafka-pw").write_text(f"{SENTINEL}\n")  # as a Secret mounts it
    monkeypatch.chdir(tmp_path)
    config = load_config(path, env={})
    assert config.kafka.client_config()["sasl.password"] == SENTINEL


def test_a_missing_password_is_named_when_the_settings_are_built(tmp_path: Path) -> None:
    # Loading does not need it (commands that never reach Kafka work without it).
    config = load_config(write(tmp_path / "c.yaml", sasl(sasl_password_from={"env": "NO_PW"})))
    with pytest.raises(CredentialsError) as info:
        config.kafka.client_config({})
    assert str(info.value) == (
        "kafka.sasl_password_from: credentials environment variable NO_PW is unset or empty"
    )


def test_redacted_and_model_text_never_hold_the_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", SENTINEL)
    config = parse_config(
        {"kafka": sasl(sasl_password_from={"env": "KAFKA_SASL_PASSWORD"}), "ingest": INGEST},
        env={},
    )
    assert config.kafka.client_config()["sasl.password"] == SENTINEL
    redacted = config.kafka.redacted()
    assert redacted["sasl.password"] == "**********"
    assert redacted["sasl.username"] == "streamsync"
    for text in (str(redacted), repr(config), str(config), config.model_dump_json()):
        assert SENTINEL not in text
    # redacted() reads no secret: it works where the password is not available.
    monkeypatch.delenv("KAFKA_SASL_PASSWORD")
    assert config.kafka.redacted() == redacted


def test_a_password_read_is_masked_in_every_log_format(monkeypatch: pytest.MonkeyPatch) -> None:
    # Once read, the password is registered with the log redactor: a line quoting the
    # client settings (or a library echoing them) shows it masked.
    secret = f"{SENTINEL}-{uuid.uuid4().hex}"
    kafka = KafkaConfig.model_validate(sasl(sasl_password_from={"env": "KAFKA_SASL_PASSWORD"}))
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", secret)
    settings = kafka.client_config()
    record = logging.LogRecord(
        "streamsync.kafka", logging.ERROR, __file__, 1, "settings %s", (settings,), None
    )
    record.note = f"auth failed with {secret}"
    for formatter in (JsonFormatter(), TextFormatter()):
        line = formatter.format(record)
        assert secret not in line and "**********" in line


def test_a_secret_under_extra_is_masked_in_logs_too() -> None:
    secret = f"{SENTINEL}-{uuid.uuid4().hex}"
    kafka = KafkaConfig.model_validate({"extra": {"ssl.key.password": secret}})
    assert kafka.redacted()["ssl.key.password"] != secret
    kafka.client_config()
    record = logging.LogRecord(
        "streamsync.kafka", logging.ERROR, __file__, 1, "key password %s", (secret,), None
    )
    for formatter in (JsonFormatter(), TextFormatter()):
        assert secret not in formatter.format(record)


# -- the commands ------------------------------------------------------------------------


COMMANDS = [
    ["evaluate"],
    ["ingest", "--idle-timeout", "1"],
    ["deliver", "--destination", "braze", "--idle-timeout", "1"],
    ["explain", "--customer", "c1", "--timeout", "1"],
]


def _command_config(path: Path, kafka: dict[str, Any]) -> Path:
    return write(
        path,
        kafka,
        evaluate={"audiences": "audiences", "state_dir": "state"},
        destinations={
            "braze": {
                "kind": "braze",
                "base_url": "http://127.0.0.1:9",
                "credentials": {"env": "TEST_CREDENTIALS_BRAZE_KEY"},
            }
        },
        observability={"admin": {"port": 0}, "log_format": "text"},
    )


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
@pytest.mark.parametrize("source", ["env", "file"])
def test_commands_report_a_missing_password_in_one_line(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    command: list[str],
    source: str,
) -> None:
    monkeypatch.setenv("TEST_CREDENTIALS_BRAZE_KEY", "test-credentials-braze-key")
    monkeypatch.delenv("NO_SUCH_KAFKA_PW", raising=False)
    missing = {"env": "NO_SUCH_KAFKA_PW"} if source == "env" else {"file": "secrets/kafka"}
    config = _command_config(tmp_path / "c.yaml", sasl(sasl_password_from=missing))
    rc = main([command[0], "--config", str(config), *command[1:]])
    err = capsys.readouterr().err.strip()
    named = "environment variable NO_SUCH_KAFKA_PW" if source == "env" else "secrets/kafka"
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.startswith(f"streamsync {command[0]}: kafka.sasl_password_from: ")
    assert named in err


@pytest.mark.kafka
def test_a_failed_sasl_connection_never_logs_the_password(
    tmp_path: Path,
    kafka_bootstrap_servers: str,
    new_topic: Any,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The shared broker speaks PLAINTEXT, so a SASL client fails its handshake: the errors
    it reports (Python logs, librdkafka's own lines, the command's output) never carry the
    password, here through ``deliver --dry-run`` with verbose logging."""
    from streamsync.destinations.deliver import DeliverLoop
    from streamsync.kafka.health import KafkaRefused

    topic = new_topic("sasl-deltas")
    monkeypatch.setenv("TEST_CREDENTIALS_BRAZE_KEY", "test-credentials-braze-key")
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", SENTINEL)
    kafka = {
        **sasl(sasl_password_from={"env": "KAFKA_SASL_PASSWORD"}),
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "PLAIN",
        "bootstrap_servers": kafka_bootstrap_servers,
    }
    path = _command_config(tmp_path / "c.yaml", kafka)
    data = yaml.safe_load(path.read_text())
    data["deltas"] = {"topic": topic}
    data["destinations"]["braze"]["group_id"] = f"sasl-{uuid.uuid4().hex[:8]}"
    path.write_text(yaml.safe_dump(data))
    config = load_config(path)
    caplog.set_level(logging.DEBUG)
    # `deliver --dry-run` sets this logger to INFO, and an earlier test may have run it.
    caplog.set_level(logging.DEBUG, logger="streamsync.deliver")
    loop = DeliverLoop(config, "braze", dry_run=True)
    with pytest.raises(KafkaRefused, match=r"refused this client: .*SASL") as refused:
        loop.run(duration_s=30)  # a refusal stops the loop at once, not after 30 s
    assert SENTINEL not in str(refused.value)
    rc = main(
        ["deliver", "--config", str(path), "--destination", "braze", "--dry-run", "-v",
         "--idle-timeout", "2"]
    )  # fmt: skip
    out, err = capfd.readouterr()
    assert rc == 1, err
    assert "refused this client" in err and "SASL" in err  # the refusal is shown ...
    assert "Traceback" not in err, err
    for text in (caplog.text, out, err):
        assert SENTINEL not in text  # ... without the password


@pytest.mark.kafka
@pytest.mark.parametrize("command", COMMANDS[:2] + COMMANDS[3:], ids=lambda c: c[0])
def test_a_cluster_that_refuses_the_client_stops_the_command_at_once(
    tmp_path: Path,
    kafka_bootstrap_servers: str,
    monkeypatch: pytest.MonkeyPatch,
    command: list[str],
) -> None:
    """Retrying a refused handshake cannot succeed: the command ends with exit 1 and one
    line saying the cluster refused it (not a minute of retries reported as an outage)."""
    from streamsync.resources import project_path

    monkeypatch.setenv("KAFKA_SASL_PASSWORD", SENTINEL)
    kafka = {
        **sasl(sasl_password_from={"env": "KAFKA_SASL_PASSWORD"}),
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "PLAIN",
        "bootstrap_servers": kafka_bootstrap_servers,
    }
    path = _command_config(tmp_path / "c.yaml", kafka)
    data = yaml.safe_load(path.read_text())
    data["evaluate"]["audiences"] = str(project_path("examples", "audiences"))
    data["evaluate"]["group_id"] = f"refused-{uuid.uuid4().hex[:8]}"
    path.write_text(yaml.safe_dump(data))
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    env["KAFKA_SASL_PASSWORD"] = SENTINEL
    done = subprocess.run(
        [sys.executable, "-m", "streamsync", command[0], "--config", str(path), *command[1:]],
        capture_output=True,
        text=True,
        env=env,
        timeout=50,  # the broker timeout (60 s) would not be reached: refused at once
    )
    out, err, rc = done.stdout, done.stderr, done.returncode
    assert rc == 1, err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"streamsync {command[0]}: ") and "refused this client" in last, err
    assert "Traceback" not in err, err
    assert SENTINEL not in out + err
