"""Shared fixtures: one real Kafka broker (and, for the tests that ask, one schema
registry) for the whole test session.

The broker is ``KAFKA_BOOTSTRAP_SERVERS`` when that is set, otherwise a local KRaft
broker that streamsync fetches from Maven Central and starts on loopback.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from streamsync.dev.broker import kafka_bootstrap
from streamsync.dev.registry import schema_registry
from streamsync.observability.logs import REDACTOR
from tests.topics import create_topics


@pytest.fixture(autouse=True)
def _redactor_per_test() -> Iterator[None]:
    """The log redactor is process-wide: a process registers its configuration's secrets
    once. Tests run many configurations in one process, so each test's secrets are
    forgotten after it; otherwise a short secret of one test ("key") is masked in the
    output another test checks, and the outcome depends on the order tests run in."""
    saved = (REDACTOR._secrets, REDACTOR._short, REDACTOR._short_pattern)
    yield
    with REDACTOR._lock:
        REDACTOR._secrets, REDACTOR._short, REDACTOR._short_pattern = saved


@pytest.fixture(scope="session")
def kafka_bootstrap_servers() -> Iterator[str]:
    with kafka_bootstrap() as bootstrap:
        yield bootstrap


@pytest.fixture(scope="session")
def registry_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Confluent-compatible Schema Registry (see :mod:`streamsync.dev.registry`), one
    for the session: it takes seconds to start, and every test names its own subjects."""
    with schema_registry(tmp_path_factory.mktemp("registry") / "apicurio.log") as url:
        yield url


@pytest.fixture
def new_topic(kafka_bootstrap_servers: str) -> Callable[..., str]:
    """Create a uniquely named topic and return its name."""
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap_servers})

    def make(prefix: str = "t", partitions: int = 1) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:10]}"
        create_topics(admin, [NewTopic(name, partitions, 1)])
        return name

    return make


@pytest.fixture
def producer(kafka_bootstrap_servers: str) -> Iterator[Producer]:
    """A plain confluent-kafka producer, independent of streamsync's own clients."""
    # Idempotent: a retried batch cannot land after later ones (each partition keeps
    # the order records were produced in).
    p = Producer(
        {"bootstrap.servers": kafka_bootstrap_servers, "linger.ms": 1, "enable.idempotence": True}
    )
    yield p
    p.flush(30)
