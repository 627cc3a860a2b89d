"""The Kafka clients of one evaluate process, built once, and what they report.

:class:`KafkaClients` is the factory a caller injects (tests, tools); :func:`open_clients`
builds with it, after the cluster answered and the topics exist, the four clients the
runtime uses - the group consumer, the transactional producer, the restore consumer and
the admin client - as one :class:`EvaluateClients`, so no part of the runtime exists
before its clients do.

:class:`~streamsync.kafka.health.ClientHealth` (shared with the ingest and deliver
loops) is where trouble reported outside a call ends up: librdkafka's error callback (an
outage is counted, a fatal error or a refused client stops the service) and exceptions
raised inside rebalance callbacks (which librdkafka would swallow); the loop calls
:meth:`~streamsync.kafka.health.ClientHealth.check` once per turn to raise them.
"""

from __future__ import annotations

import os
import stat
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient

from streamsync.config import AppConfig, ConfigError
from streamsync.dead_letter import DEAD_LETTER_PRODUCER_OVERRIDES
from streamsync.kafka.config import admin_config, consumer_config, producer_config
from streamsync.kafka.health import BrokerOutage, ClientHealth, KafkaUnavailable, client_settings
from streamsync.runtime.config import EvaluateConfig
from streamsync.state.disk import write_failure


class KafkaClients(Protocol):
    """Builds the Kafka clients the application uses (injected for tests and tools)."""

    def consumer(self, config: dict[str, Any]) -> Consumer: ...

    def producer(self, config: dict[str, Any]) -> Producer: ...

    def admin(self, config: dict[str, Any]) -> AdminClient: ...


class ConfluentClients:
    """The default: confluent-kafka clients as configured."""

    def consumer(self, config: dict[str, Any]) -> Consumer:
        return Consumer(config)

    def producer(self, config: dict[str, Any]) -> Producer:
        return Producer(config)

    def admin(self, config: dict[str, Any]) -> AdminClient:
        return AdminClient(config)


def check_state_dir(state_dir: Path) -> Path:
    """``state_dir`` unless it, or the nearest part of its path that exists, is not a
    directory: then :class:`ConfigError` naming it, before any client is made, where
    creating the directory later said only "File exists"."""
    for path in (state_dir, *state_dir.parents):
        try:
            mode = path.stat().st_mode
        except (FileNotFoundError, NotADirectoryError):  # look at the part above
            continue
        except OSError as exc:
            raise ConfigError(
                f"evaluate.state_dir {state_dir}: {exc.strerror or 'cannot be read'}"
            ) from None
        if not stat.S_ISDIR(mode):
            where = "" if path == state_dir else f" ({path} is not a directory)"
            raise ConfigError(
                f"evaluate.state_dir {state_dir}: not a directory{where}; name a directory"
            )
        break
    return state_dir


def instance_id(state_dir: Path) -> str:
    """This instance's stable id (kept in the state directory), the suffix of its
    transactional id: a restarted instance fences its previous incarnation and aborts
    its open transaction at once instead of waiting for the transaction timeout."""
    check_state_dir(state_dir).mkdir(parents=True, exist_ok=True)
    path = state_dir / "instance-id"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        value = uuid.uuid4().hex[:12]
        tmp = path.with_suffix(".tmp")
        try:
            tmp.write_text(value)
            os.replace(tmp, path)
        except OSError as exc:
            raise (write_failure(state_dir, exc) or exc) from None
        return value


def client_base(config: AppConfig, health: ClientHealth) -> dict[str, Any]:
    """Settings every client of the service shares."""
    return client_settings(config.kafka.client_config(), health)


def open_admin(factory: KafkaClients, config: AppConfig, health: ClientHealth) -> AdminClient:
    return factory.admin(
        admin_config(config.kafka.bootstrap_servers, extra=client_base(config, health))
    )


def wait_for_cluster(admin: AdminClient, settings: EvaluateConfig, health: ClientHealth) -> Any:
    """The cluster's topic metadata, once it answers (reported once, then at a slow
    interval); :class:`KafkaUnavailable` after ``broker_timeout``, or at once when the
    cluster refuses this client (retrying cannot help)."""
    budget = settings.broker_timeout_ms / 1000
    started = time.monotonic()
    deadline = started + budget
    outage = BrokerOutage(health.bootstrap)
    while True:
        try:
            metadata = admin.list_topics(timeout=min(5.0, max(1.0, budget / 4)))
            break
        except KafkaException as exc:
            error = exc.args[0] if exc.args else exc
            reason = error.str() if isinstance(error, KafkaError) else str(error)
            now = time.monotonic()
            admin.poll(0)  # serves the error callback: did the cluster refuse us?
            health.check()
            if now >= deadline:
                raise KafkaUnavailable(
                    f"cannot reach Kafka at {health.bootstrap} ({reason}); gave up after "
                    f"{now - started:.0f}s (evaluate.broker_timeout)"
                ) from None
            outage.report(f"{reason}; retrying", now)
    health.outage.clear()
    return metadata


@dataclass(frozen=True)
class EvaluateClients:
    """The clients of one run, built by :func:`open_clients`."""

    #: the group member: reads the inputs, rebalances
    consumer: Consumer
    #: writes deltas, dead letters, changelog and offsets in one transaction
    producer: Producer
    #: group-less ``read_committed`` consumer that restores tasks from the changelog
    restorer: Consumer
    admin: AdminClient


def open_clients(
    factory: KafkaClients,
    config: AppConfig,
    settings: EvaluateConfig,
    admin: AdminClient,
    health: ClientHealth,
) -> EvaluateClients:
    """Build the clients; the producer's transactions are initialised (fencing a
    previous incarnation of this instance and aborting its open transaction)."""
    bootstrap = config.kafka.bootstrap_servers
    base = client_base(config, health)
    txn_id = f"{settings.group_id}-{instance_id(settings.state_dir)}"
    producer = factory.producer(
        producer_config(
            bootstrap,
            transactional_id=txn_id,
            extra={
                **base,
                **DEAD_LETTER_PRODUCER_OVERRIDES,
                "transaction.timeout.ms": settings.transaction_timeout_ms,
                "linger.ms": 2,
            },
        )
    )
    producer.init_transactions(settings.broker_timeout_ms / 1000)
    consumer = factory.consumer(
        consumer_config(
            bootstrap,
            settings.group_id,
            extra={
                **base,
                "partition.assignment.strategy": "range",
                "enable.partition.eof": True,
                "session.timeout.ms": settings.session_timeout_ms,
                "heartbeat.interval.ms": max(settings.session_timeout_ms // 5, 500),
            },
        )
    )
    restorer = factory.consumer(
        consumer_config(bootstrap, f"{settings.group_id}.restore", extra=base)
    )
    return EvaluateClients(consumer=consumer, producer=producer, restorer=restorer, admin=admin)
