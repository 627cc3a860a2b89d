"""A log of anonymous shopping sessions and the people they belong to, written to the
real broker as a shop's pipelines write it: anonymous records keyed by ``anonymousId``
on one topic, identified records keyed by ``userId`` on another (so one person's
records are in different partitions), and the replay of the same log with identity on:
what live evaluate must equal."""

from __future__ import annotations

import random
import time
import zlib
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from streamsync.audiences.loader import load_audiences
from streamsync.audiences.replay import ReplaySummary, replay
from streamsync.deltas.record import MembershipDelta
from streamsync.identity.config import IdentityConfig
from streamsync.identity.resolver import IdentityResolver, IdentityStats
from streamsync.ingest.jsonl import read_events
from streamsync.runtime.repartition import repartition_topic
from streamsync.runtime.topics import forward_topic, identity_topic
from tests.runtime.evaluate_support import EXAMPLE_AUDIENCES, Stream, uncommitted
from tests.topics import create_topics

MINUTE = 60_000


def _iso(ms: int) -> str:
    seconds, millis = divmod(ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def sessions(seed: int, visitors: int, people: int, start_ms: int) -> list[dict[str, Any]]:
    """Records, in event-time order (every instant distinct): anonymous visitors who
    add to cart (some order anonymously too), then identify before the cart's 90-minute
    deadline, after it, through an alias, twice as different people (a conflicting
    link), or never; some come back anonymously after logging in; people also shop
    under their own id."""
    rng = random.Random(seed)
    out: list[tuple[int, dict[str, Any]]] = []
    used: set[int] = set()
    number = 0

    def at(ms: int) -> int:
        while ms in used:
            ms += 1
        used.add(ms)
        return ms

    def add(ms: int, record: dict[str, Any]) -> None:
        nonlocal number
        number += 1
        ms = at(ms)
        record.setdefault("messageId", f"m-{seed}-{number}")
        record["timestamp"] = _iso(ms)
        out.append((ms, record))

    def cart(ms: int, **who: str) -> None:
        product = f"p{rng.randrange(20)}"
        properties = {"product_id": product, "cart_id": f"c{number}"}
        add(ms, {"type": "track", "event": "Product Added", "properties": properties, **who})

    def order(ms: int, **who: str) -> None:
        total = rng.choice([25, 60, 180, 420])
        products = [{"sku": "s1", "category": "coffee", "days_supply": 30}]
        properties = {"order_id": f"o{number}", "total": total, "products": products}
        add(ms, {"type": "track", "event": "Order Completed", "properties": properties, **who})

    def identify(ms: int, user: str, anonymous: str) -> None:
        traits = {"email": f"{user}@example.com"}
        add(ms, {"type": "identify", "userId": user, "anonymousId": anonymous, "traits": traits})

    span = 30 * 60 * MINUTE // 60  # sessions start within 30 hours
    for v in range(visitors):
        x = f"anon-{seed}-{v}"
        person = f"user-{rng.randrange(people)}"
        s = start_ms + rng.randrange(span)
        cart(s, anonymousId=x)
        if rng.random() < 0.25:
            order(s + rng.randrange(20, 200) * MINUTE, anonymousId=x)
        kind = rng.random()
        if kind < 0.3:
            link = s + rng.randrange(5, 80) * MINUTE  # before the deadline
        elif kind < 0.55:
            link = s + rng.randrange(100, 400) * MINUTE  # after it
        elif kind < 0.7:
            link = s + rng.randrange(5, 300) * MINUTE
            add(link, {"type": "alias", "previousId": x, "userId": person})
            link = -1
        elif kind < 0.85:
            link = s + rng.randrange(5, 300) * MINUTE
            other = f"user-{rng.randrange(people)}"
            identify(link + rng.randrange(10, 100) * MINUTE, other, x)  # may conflict
        else:
            continue  # never linked
        if link > 0:
            identify(link, person, x)
        if rng.random() < 0.4:  # back later, not logged in
            cart(s + rng.randrange(300, 900) * MINUTE, anonymousId=x)
    for p in range(people):
        user = f"user-{p}"
        for _ in range(rng.randrange(1, 4)):
            ms = start_ms + rng.randrange(span)
            (cart if rng.random() < 0.6 else order)(ms, userId=user)
    out.sort(key=lambda item: item[0])
    return [record for _, record in out]


def replay_identity(lines: list[bytes], until_ms: int | None = None) -> list[MembershipDelta]:
    """The deltas ``replay`` gives with identity on (the default ``identity:``)."""
    audiences = load_audiences(EXAMPLE_AUDIENCES)
    events = read_events(lines, "test", links=True)
    return list(
        replay(
            audiences,
            events,
            until_ms=until_ms,
            progress=None,
            identity=IdentityConfig(),
            summary=ReplaySummary(),
        )
    )


def replay_resolver_stats(lines: list[bytes]) -> IdentityStats:
    """What the replay resolver counted over ``lines``."""
    found: list[IdentityResolver] = []
    audiences = load_audiences(EXAMPLE_AUDIENCES)
    for _ in replay(
        audiences,
        read_events(lines, "test", links=True),
        progress=None,
        identity=IdentityConfig(),
        on_resolver=found.append,
    ):
        pass
    return found[0].stats


class IdentityStream(Stream):
    """:class:`Stream`'s topics plus one of anonymous records keyed by ``anonymousId``
    (co-partitioned: an input like any other); identity is resolved live."""

    def __init__(self, bootstrap: str, partitions: int = 3, *, rekeyed: bool = False) -> None:
        super().__init__(bootstrap, partitions)
        self.anonymous = f"ev-{self.run}.anonymous"
        #: the anonymous topic is ``repartition: true`` (2 partitions, keyed by
        #: ``anonymousId`` with another count than the tasks'): re-keyed, not an input
        self.rekeyed = rekeyed
        self.anonymous_partitions = 2 if rekeyed else partitions
        admin = AdminClient({"bootstrap.servers": bootstrap})
        create_topics(admin, [NewTopic(self.anonymous, self.anonymous_partitions, 1)])
        self.routed: dict[str, int] = {}

    @property
    def inputs(self) -> list[str]:
        return [self.pipelines, self.webhooks, self.anonymous]

    def produce(self, records: list[dict[str, Any]]) -> None:
        producer = self._producer
        for record in records:
            user = record.get("userId")
            key = str(user or record["anonymousId"])
            topic = self.pipelines if user else self.anonymous
            count = self.partitions if user else self.anonymous_partitions
            partition = zlib.crc32(key.encode()) % count
            value = orjson.dumps(record)
            producer.produce(topic, value, key.encode(), partition=partition)
            self.routed[topic] = self.routed.get(topic, 0) + 1
            self.lines.append(value)
            for event in read_events([value], links=True):
                ts = getattr(event, "timestamp_ms", None)
                if ts is not None and ts > self.newest.get((topic, partition), -1):
                    self.newest[(topic, partition)] = ts
        assert producer.flush(30) == 0

    def config(self, tmp: Path, state: str = "state", **evaluate: Any) -> Path:
        path = super().config(tmp, state, **evaluate)
        data = orjson.loads(path.read_bytes())
        topic = {"name": self.anonymous, "format": "pipelines_json", "repartition": self.rekeyed}
        data["ingest"]["topics"].append(topic)
        data["identity"] = {"live": True}
        path.write_bytes(orjson.dumps(data))
        return path

    def lag(self) -> int:
        """Records of the inputs and identity topics not yet committed by the evaluate
        group (an internal topic's last offset is a commit marker, never consumed)."""
        internal = [identity_topic(self.group), forward_topic(self.group)]
        tps = [
            TopicPartition(topic, p)
            for topic in self.inputs + internal
            for p in range(
                self.anonymous_partitions if topic == self.anonymous else self.partitions
            )
        ]
        if self.rekeyed:
            internal.append(repartition_topic(self.group, self.anonymous))
            tps += [TopicPartition(internal[-1], p) for p in range(self.partitions)]
        return uncommitted(self.bootstrap, self.group, tps, set(internal))
