"""Fixtures for runtime tests against the real broker."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from tests.topics import create_topic


@pytest.fixture
def topic_with_config(kafka_bootstrap_servers: str) -> Callable[[str, dict[str, str]], str]:
    """Create a uniquely named one-partition topic with topic-level ``config``."""
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap_servers})

    def make(prefix: str, config: dict[str, str]) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:10]}"
        create_topic(admin, NewTopic(name, 1, 1, config=config))
        return name

    return make
