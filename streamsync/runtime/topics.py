"""Which topics the evaluate service reads and writes, and making sure they exist.

:func:`topic_names` (configuration only) and :func:`plan_topics` (configuration plus the
partition counts the cluster reports) are pure: every start-up rule about topics is
checked there, without a broker - inputs present, keyed inputs co-partitioned, the task
count, internal topics that already exist with one partition per task.

:func:`ensure_topics` applies a plan to a cluster. Topic metadata is eventually
consistent: a topic created a moment ago (by this process or by whoever set the cluster
up) may be missing from a broker's metadata for a while, so missing input topics are
asked for again for :data:`TOPIC_WAIT_S` before they are reported, and topics this
process creates are waited for until the metadata shows them, before any client is
built on them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    ConfigResource,
    NewTopic,
)

from streamsync.config import AppConfig
from streamsync.kafka.health import KafkaUnavailable
from streamsync.runtime.config import EvaluateConfig
from streamsync.runtime.errors import MissingTopics, StartupError
from streamsync.runtime.repartition import repartition_topic

log = logging.getLogger(__name__)

#: How long topics that are not (yet) in the metadata are asked for again.
TOPIC_WAIT_S = 5.0
#: Pause between two metadata requests while waiting for topics.
_RETRY_S = 0.2
#: The changelog's own settings: compacted (latest state per key), large records.
CHANGELOG_CONFIG = {"cleanup.policy": "compact", "max.message.bytes": "16777216"}
#: The membership table's: compacted (the latest record per customer and audience is
#: who is a member now; see :mod:`streamsync.deltas.membership`).
MEMBERS_CONFIG = {"cleanup.policy": "compact"}


@dataclass(frozen=True)
class TopicNames:
    """The topics of one configuration (no cluster needed)."""

    #: the configured input topics, in configuration order
    inputs: list[str]
    #: topics not keyed by customer -> the internal topics they are re-keyed through
    rekeyed: dict[str, str]
    #: the inputs of the tasks: keyed topics, then repartition topics
    task_topics: list[str]
    changelog: str
    deltas: str
    #: the current-membership table, written with the deltas
    members: str
    dead_letters: str
    #: identity resolution (``identity.live``): the topic keyed by linked id that the
    #: identity tasks read, and the repartition topic of what links attribute to a
    #: person (``""``: off); both are task inputs, at the end of :attr:`task_topics`
    identity: str = ""
    forward: str = ""

    @property
    def subscription(self) -> list[str]:
        """What the consumer subscribes to: every input and every repartition topic."""
        return self.inputs + list(self.rekeyed.values()) + self.identity_topics

    @property
    def identity_topics(self) -> list[str]:
        return [self.identity, self.forward] if self.identity else []


def identity_topic(group_id: str) -> str:
    """The internal topic of links and records keyed by the id they link."""
    return f"{group_id}.identity"


def forward_topic(group_id: str) -> str:
    """The repartition topic of records attributed through a link, keyed by person."""
    return f"{group_id}.identity.forward"


@dataclass(frozen=True)
class TopicSpec:
    """A topic the service writes, with the partitions and settings it needs."""

    name: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TopicPlan:
    """The topics of a configuration on one cluster; see :func:`plan_topics`."""

    names: TopicNames
    #: the number of tasks: every task input and internal topic has this many partitions
    partitions: int
    #: raw (re-keyed) topic -> its partition count
    raw_partitions: dict[str, int]
    #: the membership table's partition count: the deltas topic's
    members_partitions: int
    #: the internal and output topics that do not exist yet
    create: list[TopicSpec]


def topic_names(config: AppConfig) -> TopicNames:
    settings = _evaluate(config)
    topics = config.ingest.topics
    rekeyed = {
        t.name: repartition_topic(settings.group_id, t.name) for t in topics if t.repartition
    }
    keyed = [t.name for t in topics if t.name not in rekeyed]
    live = config.identity.resolves_live
    identity = identity_topic(settings.group_id) if live else ""
    forward = forward_topic(settings.group_id) if live else ""
    return TopicNames(
        inputs=[t.name for t in topics],
        rekeyed=rekeyed,
        task_topics=keyed + list(rekeyed.values()) + ([identity, forward] if live else []),
        changelog=settings.changelog,
        deltas=config.deltas.topic,
        members=config.deltas.members,
        dead_letters=config.ingest.dead_letter_topic,
        identity=identity,
        forward=forward,
    )


def partition_counts(metadata: Any) -> dict[str, int]:
    """Topic -> partition count of the topics ``metadata`` (``list_topics``) reports
    without an error."""
    return {
        name: len(topic.partitions)
        for name, topic in metadata.topics.items()
        if topic.error is None
    }


def plan_topics(config: AppConfig, counts: Mapping[str, int]) -> TopicPlan:
    """The plan for a cluster whose topics have the partition ``counts``; raises
    :class:`MissingTopics` or :class:`StartupError` naming each offending topic."""
    settings = _evaluate(config)
    names = topic_names(config)
    _distinct(names)
    missing = [name for name in names.inputs if name not in counts]
    if missing:
        raise MissingTopics(missing)
    keyed = {name: counts[name] for name in names.inputs if name not in names.rekeyed}
    raw = {name: counts[name] for name in names.rekeyed}
    if len(set(keyed.values())) > 1:
        detail = ", ".join(f"{name} has {n}" for name, n in keyed.items())
        raise StartupError(
            "input topics must be co-partitioned (one customer's records in the same "
            f"partition number of every topic), but their partition counts differ: {detail}"
        )
    partitions = _task_count(settings, keyed, raw)
    _require(counts, "changelog", names.changelog, "the input topics", partitions)
    for name in [*names.rekeyed.values(), *names.identity_topics]:
        _require(counts, "repartition", name, "the tasks", partitions)
    # Partitioned like the deltas: a customer's records sit in the partition their id
    # hashes to, so a table with another count than it was written with would keep
    # stale records in the old partitions.
    members_partitions = counts.get(names.deltas, partitions)
    _require(counts, "membership", names.members, "the deltas topic", members_partitions)
    wanted = [
        TopicSpec(names.changelog, partitions, dict(CHANGELOG_CONFIG)),
        TopicSpec(names.deltas, partitions),
        TopicSpec(names.members, members_partitions, dict(MEMBERS_CONFIG)),
        TopicSpec(names.dead_letters, partitions),
        *(TopicSpec(name, partitions) for name in names.rekeyed.values()),
        *(TopicSpec(name, partitions) for name in names.identity_topics),
    ]
    return TopicPlan(
        names=names,
        partitions=partitions,
        raw_partitions=raw,
        members_partitions=members_partitions,
        create=[spec for spec in wanted if spec.name not in counts],
    )


def _distinct(names: TopicNames) -> None:
    """Every topic evaluate reads or writes has one role: a changelog that is also the
    deltas topic, or an output that is an input, would feed the service its own records."""
    roles: dict[str, list[str]] = {}
    for role, name in (
        *(("input", n) for n in names.inputs),
        *(("repartition", n) for n in names.rekeyed.values()),
        *(("identity", n) for n in names.identity_topics),
        ("changelog", names.changelog),
        ("deltas", names.deltas),
        ("membership", names.members),
        ("dead-letter", names.dead_letters),
    ):
        roles.setdefault(name, []).append(role)
    clashes = [f"{name} ({' and '.join(r)})" for name, r in roles.items() if len(r) > 1]
    if clashes:
        raise StartupError("topics cannot have two roles: " + "; ".join(clashes))


#: Cleanup policies the service depends on: a changelog or membership table that deletes
#: old records loses state; a deltas topic that compacts loses history consumers replay.
_POLICIES = {"changelog": "compact", "membership": "compact", "deltas": "delete"}


def check_policies(admin: AdminClient, plan: TopicPlan, timeout_s: float = 10.0) -> None:
    """The existing internal topics' ``cleanup.policy`` is what the service depends on
    (one line naming the topic otherwise). Topics the service created have it."""
    names = plan.names
    topics = {"changelog": names.changelog, "membership": names.members, "deltas": names.deltas}
    created = {spec.name for spec in plan.create}
    wanted = {role: name for role, name in topics.items() if name not in created}
    if not wanted:
        return
    resources = [ConfigResource(ConfigResource.Type.TOPIC, name) for name in wanted.values()]
    try:
        answers = admin.describe_configs(resources, request_timeout=timeout_s)
        configs = {res.name: future.result(timeout_s) for res, future in answers.items()}
    except KafkaException as exc:  # no DescribeConfigs permission: cannot check, say so
        log.warning("cannot check the internal topics' cleanup.policy: %s", exc)
        return
    for role, name in wanted.items():
        entry = configs.get(name, {}).get("cleanup.policy")
        policy = "" if entry is None or entry.value is None else str(entry.value)
        need = _POLICIES[role]
        if need not in policy.split(","):
            raise StartupError(
                f"{role} topic {name} has cleanup.policy={policy or '?'}; it needs {need}"
            )


def _evaluate(config: AppConfig) -> EvaluateConfig:
    if config.evaluate is None:
        raise StartupError("the configuration has no evaluate section")
    return config.evaluate


def _task_count(settings: EvaluateConfig, keyed: dict[str, int], raw: dict[str, int]) -> int:
    """The keyed topics' partition count, else ``evaluate.repartition_partitions``, else
    the largest re-keyed topic's."""
    configured = settings.repartition_partitions
    if keyed:
        partitions = next(iter(keyed.values()))
        if configured is not None and configured != partitions:
            raise StartupError(
                f"evaluate.repartition_partitions is {configured}, but the keyed input "
                f"topics have {partitions} partitions; remove it or make them agree"
            )
        return partitions
    return configured if configured is not None else max(raw.values())


def _require(counts: Mapping[str, int], kind: str, topic: str, of: str, partitions: int) -> None:
    """An internal ``kind`` topic that already exists must have one partition per task
    (``of``: what sets that count, for the error)."""
    existing = counts.get(topic)
    if existing is not None and existing != partitions:
        raise StartupError(f"{kind} topic {topic} has {existing} partitions, {of} {partitions}")


def ensure_topics(
    admin: AdminClient,
    config: AppConfig,
    metadata: Any,
    *,
    wait_s: float = TOPIC_WAIT_S,
    request_timeout_s: float = 5.0,
) -> TopicPlan:
    """Plan on ``metadata`` (asking again while input topics are missing, up to
    ``wait_s``), create the topics the plan lacks, and wait until the metadata shows
    them with their partitions; the plan."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            plan = plan_topics(config, partition_counts(metadata))
            break
        except MissingTopics:
            if time.monotonic() >= deadline:
                raise
        time.sleep(_RETRY_S)
        metadata = _list_topics(admin, request_timeout_s)
    check_policies(admin, plan, request_timeout_s)
    if plan.create:
        _create(admin, plan.create)
        _wait_visible(admin, plan.create, wait_s, request_timeout_s)
    return plan


def _create(admin: AdminClient, specs: list[TopicSpec]) -> None:
    new = [NewTopic(s.name, s.partitions, -1, config=s.config) for s in specs]
    for name, future in admin.create_topics(new).items():
        try:
            future.result(30)
            log.info("created topic %s", name)
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            if not (
                isinstance(error, KafkaError) and error.code() == KafkaError.TOPIC_ALREADY_EXISTS
            ):
                raise StartupError(f"cannot create topic {name}: {exc}") from None


def _wait_visible(
    admin: AdminClient, specs: list[TopicSpec], wait_s: float, timeout_s: float
) -> None:
    """Until every topic of ``specs`` is in the metadata with all its partitions (a
    producer or consumer built earlier would see an unknown topic)."""
    deadline = time.monotonic() + wait_s
    while True:
        counts = partition_counts(_list_topics(admin, timeout_s))
        pending = [s.name for s in specs if counts.get(s.name, 0) < s.partitions]
        if not pending:
            return
        if time.monotonic() >= deadline:
            raise StartupError(
                f"topics created but not in the cluster's metadata after "
                f"{wait_s:.0f}s: {', '.join(pending)}"
            )
        time.sleep(_RETRY_S)


def _list_topics(admin: AdminClient, timeout_s: float) -> Any:
    try:
        return admin.list_topics(timeout=timeout_s)
    except KafkaException as exc:  # it answered a moment ago; gone again
        raise KafkaUnavailable(f"cannot read the cluster's topics: {exc}") from None
