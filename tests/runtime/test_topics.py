"""The topic plan (a pure function of configuration and partition counts) and its
creation, which waits for topics the metadata does not show yet."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from streamsync.runtime.errors import MissingTopics, StartupError
from streamsync.runtime.topics import (
    CHANGELOG_CONFIG,
    MEMBERS_CONFIG,
    TopicSpec,
    ensure_topics,
    plan_topics,
)
from tests.runtime.driver import driver_config
from tests.runtime.evaluate_support import EXAMPLE_AUDIENCES

TOPICS = [("a", "pipelines_json"), ("b", "webhook_json"), ("raw", "pipelines_json")]


def _config(tmp_path: Path, **evaluate: Any) -> Any:
    return driver_config(tmp_path, EXAMPLE_AUDIENCES, topics=TOPICS, rekeyed=["raw"], **evaluate)


def test_the_plan_names_every_topic_and_what_to_create(tmp_path: Path) -> None:
    plan = plan_topics(_config(tmp_path), {"a": 4, "b": 4, "raw": 7, "deltas": 4})
    names = plan.names
    assert names.rekeyed == {"raw": "driver.repartition.raw"}
    assert names.task_topics == ["a", "b", "driver.repartition.raw"]
    assert names.subscription == ["a", "b", "raw", "driver.repartition.raw"]
    assert (plan.partitions, plan.raw_partitions) == (4, {"raw": 7})
    assert names.members == "deltas.members"
    assert plan.create == [
        TopicSpec(names.changelog, 4, CHANGELOG_CONFIG),
        TopicSpec("deltas.members", 4, {"cleanup.policy": "compact"}),
        TopicSpec("dead-letter", 4),
        TopicSpec("driver.repartition.raw", 4),
    ]


def test_the_plan_refuses_what_cannot_run(tmp_path: Path) -> None:
    config = _config(tmp_path)
    with pytest.raises(MissingTopics, match="input topics not found: b, raw"):
        plan_topics(config, {"a": 4})
    with pytest.raises(StartupError, match=r"co-partitioned.*a has 4, b has 3"):
        plan_topics(config, {"a": 4, "b": 3, "raw": 1})
    changelog = plan_topics(config, {"a": 2, "b": 2, "raw": 1}).names.changelog
    with pytest.raises(
        StartupError, match=re.escape(f"changelog topic {changelog} has 3 partitions")
    ):
        plan_topics(config, {"a": 2, "b": 2, "raw": 1, changelog: 3})
    with pytest.raises(
        StartupError, match=re.escape("repartition topic driver.repartition.raw has 5")
    ):
        plan_topics(config, {"a": 2, "b": 2, "raw": 1, "driver.repartition.raw": 5})
    with pytest.raises(
        StartupError,
        match=re.escape("membership topic deltas.members has 3 partitions, the deltas topic 2"),
    ):
        plan_topics(config, {"a": 2, "b": 2, "raw": 1, "deltas.members": 3})
    with pytest.raises(StartupError, match="repartition_partitions is 6"):
        plan_topics(_config(tmp_path, repartition_partitions=6), {"a": 2, "b": 2, "raw": 1})


def test_a_topic_with_two_roles_is_refused(tmp_path: Path) -> None:
    counts = {"a": 2, "b": 2, "raw": 1}
    with pytest.raises(StartupError, match=r"two roles: a \(input and changelog\)"):
        plan_topics(_config(tmp_path, changelog_topic="a"), counts)
    same = _config(tmp_path, changelog_topic="deltas")
    with pytest.raises(StartupError, match=r"deltas \(changelog and deltas\)"):
        plan_topics(same, counts)


def test_the_membership_table_is_partitioned_like_the_deltas_and_may_be_named(
    tmp_path: Path,
) -> None:
    """An existing deltas topic with its own partition count gives the table that count
    (a customer's table records sit where their id hashes among the deltas' count)."""
    config = _config(tmp_path)
    plan = plan_topics(config, {"a": 4, "b": 4, "raw": 1, "deltas": 6})
    assert plan.members_partitions == 6
    assert TopicSpec("deltas.members", 6, MEMBERS_CONFIG) in plan.create
    named = config.model_copy(
        update={"deltas": config.deltas.model_copy(update={"members_topic": "who-is-in"})}
    )
    plan = plan_topics(named, {"a": 4, "b": 4, "raw": 1, "who-is-in": 4})
    assert plan.names.members == "who-is-in"
    assert [s.name for s in plan.create if s.config == MEMBERS_CONFIG] == []


def test_only_rekeyed_inputs_take_the_configured_or_largest_count(tmp_path: Path) -> None:
    config = driver_config(tmp_path, EXAMPLE_AUDIENCES, topics=TOPICS[2:], rekeyed=["raw"])
    assert plan_topics(config, {"raw": 7}).partitions == 7
    config = driver_config(
        tmp_path, EXAMPLE_AUDIENCES, topics=TOPICS[2:], rekeyed=["raw"], repartition_partitions=3
    )
    assert plan_topics(config, {"raw": 7}).partitions == 3


class _Admin:
    """Metadata that shows topics only some requests after they exist (as a broker
    whose metadata cache lags the controller does)."""

    def __init__(self, topics: dict[str, int], lag: int) -> None:
        self.topics = dict(topics)
        self.lag = lag
        self.created: list[str] = []
        self._seen: dict[str, int] = dict.fromkeys(topics, 0)

    def list_topics(self, timeout: float) -> Any:
        shown = {}
        for name, count in self.topics.items():
            self._seen[name] += 1
            if self._seen[name] > self.lag:
                shown[name] = SimpleNamespace(error=None, partitions=dict.fromkeys(range(count)))
        return SimpleNamespace(topics=shown)

    def create_topics(self, new: list[Any]) -> dict[str, Any]:
        for topic in new:
            self.topics[topic.topic] = topic.num_partitions
            self._seen[topic.topic] = 0
            self.created.append(topic.topic)
        return {t.topic: SimpleNamespace(result=lambda timeout: None) for t in new}


def test_topics_not_yet_in_the_metadata_are_waited_for(tmp_path: Path) -> None:
    config = driver_config(tmp_path, EXAMPLE_AUDIENCES)
    admin = _Admin({"pipelines": 2}, lag=3)
    plan = ensure_topics(admin, config, admin.list_topics(5), wait_s=5)
    assert plan.partitions == 2
    assert sorted(admin.created) == sorted(
        [plan.names.changelog, "deltas", "deltas.members", "dead-letter"]
    )
    counts = admin.list_topics(5).topics  # every created topic is visible now
    assert set(admin.created) <= set(counts)


def test_input_topics_missing_for_good_are_named_after_the_wait(tmp_path: Path) -> None:
    config = driver_config(tmp_path, EXAMPLE_AUDIENCES)
    admin = _Admin({}, lag=0)
    with pytest.raises(MissingTopics, match="input topics not found: pipelines"):
        ensure_topics(admin, config, admin.list_topics(5), wait_s=0.5)


@pytest.mark.kafka
def test_internal_topics_with_the_wrong_cleanup_policy_are_refused(
    kafka_bootstrap_servers: str, tmp_path: Path
) -> None:
    """A changelog or membership table that deletes old records would lose state, a
    deltas topic that compacts would lose history: refused at start-up, naming it."""
    from confluent_kafka.admin import AdminClient, NewTopic

    from streamsync.config import load_config
    from tests.runtime.evaluate_support import Stream
    from tests.topics import create_topics

    admin = AdminClient({"bootstrap.servers": kafka_bootstrap_servers})
    stream = Stream(kafka_bootstrap_servers, partitions=1)
    config = load_config(stream.config(tmp_path))
    changelog = f"{stream.group}.changelog"
    create_topics(admin, [NewTopic(changelog, 1, 1, config={"cleanup.policy": "delete"})])
    with pytest.raises(
        StartupError, match=f"changelog topic {changelog} has cleanup.policy=delete"
    ):
        ensure_topics(admin, config, admin.list_topics(timeout=10))
    create_topics(admin, [NewTopic(stream.deltas, 1, 1, config={"cleanup.policy": "compact"})])
    other = load_config(stream.config(tmp_path, "other", changelog_topic=f"{stream.group}.fixed"))
    with pytest.raises(StartupError, match=f"deltas topic {stream.deltas} has cleanup.policy"):
        ensure_topics(admin, other, admin.list_topics(timeout=10))
