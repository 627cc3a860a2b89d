"""JSON log lines: structured, and never carrying a secret or an e-mail address."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from streamsync.config import parse_config
from streamsync.observability.logs import (
    REDACTED,
    JsonFormatter,
    Redactor,
    TextFormatter,
    secret_values,
    setup_logging,
)
from streamsync.observability.tracing import Tracing

SECRET = "s3cr3t-p4ssw0rd-value"
EMAIL = "jane.doe+promo@example.co.uk"


@pytest.fixture
def log() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter(Redactor([SECRET])))
    logger = logging.getLogger(f"test.logs.{id(stream)}")
    logger.propagate = False
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield logger, stream
    logger.removeHandler(handler)


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_one_json_object_per_line_with_extra_fields(
    log: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = log
    logger.info("restored partition %d", 3, extra={"records": 1200, "topic": "cio.pipelines"})
    logger.warning("two\nlines")
    first, second = lines(stream)
    assert first["message"] == "restored partition 3"
    assert first["level"] == "INFO" and first["records"] == 1200
    assert first["topic"] == "cio.pipelines"
    assert str(first["ts"]).endswith("+00:00")
    assert second["message"] == "two\nlines"
    assert "trace_id" not in first


def test_secrets_never_appear(log: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = log
    password = SecretStr(SECRET)
    logger.info("connecting with %s", password)
    logger.info("raw value leaked into a message: %s", SECRET)
    logger.info("config", extra={"sasl_password": SECRET, "auth": password, "note": f"x{SECRET}y"})
    logger.info("headers", extra={"request": {"Authorization": "Bearer abcdef", "id": 7}})
    try:
        raise ValueError(f"bad credentials {SECRET}")
    except ValueError:
        logger.exception("delivery failed")
    text = stream.getvalue()
    assert SECRET not in text
    assert "abcdef" not in text
    records = lines(stream)
    assert records[0]["message"] == f"connecting with {REDACTED}"
    assert records[2]["sasl_password"] == REDACTED and records[2]["auth"] == REDACTED
    assert records[2]["note"] == f"x{REDACTED}y"
    assert records[3]["request"] == {"Authorization": REDACTED, "id": 7}
    assert "ValueError: bad credentials" in str(records[4]["exception"])


@pytest.mark.parametrize("secret", ["k", "x9", "a+b"])
def test_secrets_shorter_than_four_characters_are_masked_where_they_stand_alone(
    secret: str,
) -> None:
    redactor = Redactor([secret])
    for template in ("Authorization: Bearer {}", "key={}&id=1", '{{"api_key": "{}"}}', "{}"):
        assert redactor.text(template.format(secret)) == template.format(REDACTED)
    # Inside a longer word or number it is not a secret being printed: left alone.
    word = f"z{secret}z"
    assert redactor.text(word) == word


def test_personal_data_never_appears(log: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = log
    logger.info("customer %s entered with email %s", "cus_0000042", EMAIL)
    logger.info(
        "delta",
        extra={
            "customer_id": "cus_0000042",
            "identifiers": {"email": EMAIL, "cio_id": "abc"},
            "email": EMAIL,
            "phone": "+1 415 555 0100",
            "detail": f"reply from {EMAIL} and +44 20 7946 0958",
        },
    )
    text = stream.getvalue()
    assert EMAIL not in text and "example.co.uk" not in text
    assert "555 0100" not in text and "7946" not in text
    first, second = lines(stream)
    assert first["message"] == "customer cus_0000042 entered with email <email>"
    assert second["customer_id"] == "cus_0000042"  # the customer key is allowed
    assert second["identifiers"] == "<redacted>"


@settings(max_examples=200, deadline=None)
@given(
    local=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._%+\-]{0,20}", fullmatch=True),
    domain=st.from_regex(r"[a-z0-9]{1,10}(\.[a-z0-9]{1,8}){0,2}\.[a-z]{2,6}", fullmatch=True),
    before=st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=20),
    after=st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=20),
)
def test_no_email_survives_formatting(local: str, domain: str, before: str, after: str) -> None:
    email = f"{local}@{domain}"
    text = before + email + after
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "%s", (text,), None)
    record.contact = {"to": [email]}
    for formatter in (JsonFormatter(Redactor()), TextFormatter(Redactor())):
        assert email not in formatter.format(record)


def test_secret_values_of_the_configuration_and_setup_logging() -> None:
    config = parse_config(
        {
            "kafka": {
                "security_protocol": "SASL_SSL",
                "sasl_mechanism": "PLAIN",
                "sasl_username": "streamsync",
                "sasl_password": SECRET,
            },
            "ingest": {"topics": [{"name": "cio.pipelines", "format": "pipelines_json"}]},
        },
        env={},
    )
    assert secret_values(config) == [SECRET]
    stream = io.StringIO()
    root = logging.getLogger()
    before = list(root.handlers), root.level
    try:
        setup_logging("json", "INFO", secrets=secret_values(config), stream=stream)
        setup_logging("json", "INFO", secrets=secret_values(config), stream=stream)
        logging.getLogger("streamsync.kafka").info("client config %s", config.kafka.client_config())
    finally:
        for handler in list(root.handlers):
            if handler not in before[0]:
                root.removeHandler(handler)
        root.setLevel(before[1])
    text = stream.getvalue()
    assert len(text.splitlines()) == 1  # the second setup replaced the first handler
    assert SECRET not in text and "streamsync" in text


def test_trace_ids_are_logged_inside_a_span(log: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = log
    traceparent = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    tracing = Tracing()
    with tracing.span("work", headers=[("traceparent", traceparent)]):
        logger.info("inside")
    (record,) = lines(stream)
    assert record["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
    tracing.shutdown()
