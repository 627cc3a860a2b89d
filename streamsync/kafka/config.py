"""librdkafka configuration builders, in one place so every client agrees on the basics.

Each builder returns a plain ``dict`` for confluent-kafka; ``extra`` entries win, so a
caller (or a user's own settings file) can override anything.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: Environment variable naming the cluster to use. Production configuration reads it (it
#: overrides ``kafka.bootstrap_servers``), and the development broker skips starting when it
#: is set; it lives here so production code never imports the development broker.
BOOTSTRAP_ENV = "KAFKA_BOOTSTRAP_SERVERS"


def admin_config(bootstrap: str, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """An AdminClient configuration for ``bootstrap``."""
    config: dict[str, Any] = {"bootstrap.servers": bootstrap}
    config.update(extra or {})
    return config


def producer_config(
    bootstrap: str,
    *,
    transactional_id: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """An idempotent producer; transactional when ``transactional_id`` is given.

    Idempotence keeps per-partition order and removes duplicates on retry, which the
    exactly-once delta topic needs; it costs nothing measurable on one broker.
    """
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "enable.idempotence": True,
        "linger.ms": 5,
        "compression.type": "lz4",
    }
    if transactional_id is not None:
        config["transactional.id"] = transactional_id
    config.update(extra or {})
    return config


def consumer_config(
    bootstrap: str,
    group_id: str,
    *,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A consumer that commits by hand and reads only committed transactional data.

    Offsets are committed by streamsync after the work for a record is durable (dead
    letters flushed, deltas produced), never on a timer, so a crash re-reads rather than
    loses records.
    """
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "group.id": group_id,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
        "enable.partition.eof": False,
    }
    config.update(extra or {})
    return config
