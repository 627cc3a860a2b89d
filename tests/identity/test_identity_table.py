"""The live identity table on its own (no broker): the resolver's decisions in
event-time order, and its state surviving a write to the store and a load back."""

from __future__ import annotations

from pathlib import Path

from streamsync.identity.config import IdentityConfig
from streamsync.identity.table import (
    IDENTITY_PREFIX,
    IdentityTable,
    PendingLink,
    Roles,
    roles,
)
from streamsync.ingest.event import ALIAS, ANONYMOUS, Event
from streamsync.runtime.topics import topic_names
from streamsync.state.store import PartitionStore
from tests.runtime.driver import driver_config
from tests.runtime.evaluate_support import EXAMPLE_AUDIENCES

LATENESS = 300_000
HOUR = 3_600_000


def _record(xid: str, at: int, mid: str) -> Event:
    return Event(xid, "track", "Product Added", at, mid, id_kind=ANONYMOUS)


def _link(xid: str, person: str, at: int, mid: str) -> PendingLink:
    return PendingLink(xid, at, person, "id", mid)


def _store(tmp_path: Path, table: IdentityTable) -> PartitionStore:
    store = PartitionStore(tmp_path / "store")
    store.apply(table.changes(), None)
    return store


def _loaded(store: PartitionStore) -> IdentityTable:
    table = IdentityTable(IdentityConfig(), LATENESS)
    table.load(store.items(IDENTITY_PREFIX))
    return table


def test_roles_follow_the_resolver() -> None:
    config = IdentityConfig()
    anonymous = _record("x1", 0, "m1")
    assert roles(anonymous, config) == Roles(own=False, records=("x1",))
    login = Event("u1", "identify", "identify", 0, "m2", linked_id="x1")
    assert roles(login, config) == Roles(own=True, links=("x1",))
    assert roles(login, IdentityConfig(anonymous=False)) == Roles(own=True)
    alias = Event("u1", ALIAS, "alias", 0, "m3", linked_id="x1")
    assert roles(alias, config) == Roles(own=False, links=("x1",))
    assert roles(alias, IdentityConfig(alias=False)) == Roles(own=False)
    email = Event("u1", "identify", "identify", 0, "m4", identifiers={"email": "a@b.c"})
    assert roles(email, config) == Roles(own=True)
    assert roles(email, IdentityConfig(email=True)) == Roles(own=True, links=("a@b.c",))


def test_decisions_wait_for_the_clock_and_survive_a_restore(tmp_path: Path) -> None:
    table = IdentityTable(IdentityConfig(), LATENESS)
    table.record(_record("x1", 10 * HOUR, "c1"))  # held until linked
    table.link(_link("x1", "u1", 11 * HOUR, "l1"))
    table.link(_link("x1", "u2", 10 * HOUR + 1, "l2"))  # earlier: it wins, u1 conflicts
    table.record(_record("x2", 10 * HOUR, "c2"))
    assert table.release(10 * HOUR) == []  # nothing before the clock yet
    store = _store(tmp_path, table)
    table = _loaded(store)  # undecided items are state too
    forwards = table.release(12 * HOUR)
    assert [(f.event.customer_id, f.event.via, f.from_ms) for f in forwards] == [
        ("u2", "x1", 10 * HOUR + 1)
    ]
    stats = table.stats
    assert (stats.ids_linked, stats.conflicting_links, stats.ids_held) == (1, 1, 1)
    store.apply(table.changes(), None)
    table = _loaded(store)
    assert table.links["x1"].person == "u2" and not table.waiting
    assert [e.record_id for e in table.held["x2"]] == ["c2"]
    # A later record of a linked id is forwarded once decided; a re-sent link is no
    # second link and no conflict.
    table.record(_record("x1", 13 * HOUR, "c3"))
    table.link(_link("x1", "u2", 13 * HOUR, "l2"))
    table.link(_link("x1", "u1", 13 * HOUR, "l1"))  # the same conflicting record again
    forwarded = table.release(14 * HOUR)
    assert [(f.event.record_id, f.from_ms) for f in forwarded] == [("c3", 10 * HOUR + 1)]
    assert (table.stats.ids_linked, table.stats.conflicting_links) == (1, 1)
    store.close()


def test_a_link_too_late_counts_from_the_clock() -> None:
    table = IdentityTable(IdentityConfig(), LATENESS)
    table.record(_record("x1", HOUR, "c1"))
    table.release(5 * HOUR)
    table.link(_link("x1", "u1", 2 * HOUR, "l1"))  # behind the clock by more than L
    (forward,) = table.release(6 * HOUR)
    assert forward.from_ms == 5 * HOUR


def test_held_records_past_the_horizon_are_dropped() -> None:
    table = IdentityTable(IdentityConfig(anonymous_horizon="1d"), LATENESS)
    table.record(_record("x1", 0, "c1"))
    table.release(HOUR)
    assert table.stats.records_held == 1
    table.release(25 * HOUR + LATENESS)
    stats = table.stats
    assert (stats.records_held, stats.records_expired, stats.ids_expired) == (0, 1, 1)


def test_identity_topics_only_with_identity_live(tmp_path: Path) -> None:
    config = driver_config(tmp_path, EXAMPLE_AUDIENCES, topics=[("a", "pipelines_json")])
    assert topic_names(config).identity_topics == []
    live = config.model_copy(update={"identity": IdentityConfig(live=True)})
    names = topic_names(live)
    assert names.identity_topics == [names.identity, names.forward]
    assert names.task_topics[-2:] == names.identity_topics
    assert names.subscription[-2:] == names.identity_topics
