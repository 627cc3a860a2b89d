"""Identity stitching in the engine path (replay), against the spec's examples and the
oracle's attribution rule (../shared/audiences.md, "Identity")."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from streamsync.audiences.engine import Engine
from streamsync.audiences.loader import load_audiences
from streamsync.audiences.replay import ReplaySummary, replay
from streamsync.cli import main as cli_main
from streamsync.config import ConfigError, load_config
from streamsync.deltas.record import MembershipDelta
from streamsync.identity.config import IdentityConfig
from streamsync.identity.resolver import IdentityResolver
from streamsync.ingest.event import ANONYMOUS, Event
from streamsync.ingest.jsonl import read_events
from tests.audiences.oracle import (
    CART_ABANDON,
    DAY,
    DUE_FOR_REORDER,
    RECENTLY_CONTACTED,
    STARTER_KIT,
    VIP,
    dedup_and_sort,
    identity_links,
    identity_transitions,
    iso_to_ms,
)
from tests.audiences.strategies import event_logs
from tests.audiences.test_engine_vs_oracle import group

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "audiences"
LATENESS_MS = 300_000
AUDIENCES = load_audiences(EXAMPLES)


def line(**fields: object) -> bytes:
    return orjson.dumps(fields)


def cart(at: str, anonymous_id: str = "x1", mid: str = "m-cart") -> bytes:
    return line(
        type="track",
        anonymousId=anonymous_id,
        event="Product Added",
        properties={"product_id": "p1", "cart_id": "k1"},
        timestamp=f"2026-01-01T{at}Z",
        messageId=mid,
    )


def identify(at: str, user: str = "u1", anonymous_id: str = "x1", mid: str = "m-id") -> bytes:
    return line(
        type="identify",
        userId=user,
        anonymousId=anonymous_id,
        traits={"email": f"{user}@example.com"},
        timestamp=f"2026-01-01T{at}Z",
        messageId=mid,
    )


def run(
    lines: Sequence[bytes], identity: IdentityConfig | None = None, until: str | None = None
) -> tuple[list[MembershipDelta], ReplaySummary]:
    summary = ReplaySummary()
    deltas = list(
        replay(
            AUDIENCES,
            read_events(lines, "t", links=True),
            until_ms=None if until is None else iso_to_ms(until),
            identity=IdentityConfig() if identity is None else identity,
            progress=None,
            summary=summary,
        )
    )
    return deltas, summary


def of(deltas: Sequence[MembershipDelta], audience: str) -> list[tuple[str, str, str, bool]]:
    return [
        (d.customer_id, d.op, d.to_json()["at"], d.stitched)
        for d in deltas
        if d.audience == audience
    ]


def test_an_anonymous_cart_counts_from_an_identify_before_its_deadline() -> None:
    """Spec: a cart at 10:00 with the identify at 10:30 enters U at 11:30 (cart + 90m)."""
    deltas, summary = run([cart("10:00:00"), identify("10:30:00")], until="2026-01-01T13:00:00Z")
    assert of(deltas, CART_ABANDON) == [("u1", "enter", "2026-01-01T11:30:00.000Z", False)]
    assert summary.identity.ids_linked == 1 and summary.identity.records_forwarded == 1


def test_an_identify_after_the_deadline_enters_at_the_identify() -> None:
    """Spec: with the identify at 12:00, U enters at 12:00, marked stitched."""
    deltas, _ = run([cart("10:00:00"), identify("12:00:00")], until="2026-01-01T13:00:00Z")
    assert of(deltas, CART_ABANDON) == [("u1", "enter", "2026-01-01T12:00:00.000Z", True)]
    [enter] = [d for d in deltas if d.audience == CART_ABANDON]
    assert "m-cart" in enter.record_ids and not enter.correction


def test_later_records_of_a_linked_id_are_the_persons() -> None:
    order = line(
        type="track",
        anonymousId="x1",
        event="Order Completed",
        properties={"order_id": "o1", "total": 10},
        timestamp="2026-01-01T11:00:00Z",
        messageId="m-order",
    )
    deltas, _ = run([cart("10:00:00"), identify("10:30:00"), order], until="2026-01-01T13:00Z")
    assert of(deltas, CART_ABANDON) == []


def test_an_alias_links_its_previous_id() -> None:
    alias = line(
        type="alias",
        userId="u1",
        previousId="x1",
        timestamp="2026-01-01T10:30:00Z",
        messageId="m-alias",
    )
    deltas, summary = run([cart("10:00:00"), alias], until="2026-01-01T13:00:00Z")
    assert of(deltas, CART_ABANDON) == [("u1", "enter", "2026-01-01T11:30:00.000Z", False)]
    assert summary.skipped["alias"] == 0
    off, summary = run(
        [cart("10:00:00"), alias], IdentityConfig(alias=False), until="2026-01-01T13:00Z"
    )
    assert of(off, CART_ABANDON) == [] and summary.identity.ids_held == 1


def test_anonymous_links_can_be_turned_off() -> None:
    deltas, summary = run(
        [cart("10:00:00"), identify("10:30:00")],
        IdentityConfig(anonymous=False),
        until="2026-01-01T13:00:00Z",
    )
    assert of(deltas, CART_ABANDON) == [] and summary.identity.ids_linked == 0


def _sent_to(email: str, at: str) -> bytes:
    return line(
        event_id=f"w-{at}",
        object_type="email",
        metric="sent",
        timestamp=iso_to_ms(f"2026-01-01T{at}Z") // 1000,
        data={"identifiers": {"email": email}},
    )


def test_email_links_are_off_by_default_and_on_when_configured() -> None:
    """A webhook whose only identifier is U's email: its own customer by default; U's
    (and no customer of its own) with email links on."""
    lines = [_sent_to("u1@example.com", "09:00:00"), identify("10:00:00", anonymous_id="x9")]
    default, _ = run(lines)
    assert [(c, op) for c, op, _, _ in of(default, RECENTLY_CONTACTED)] == [
        ("u1@example.com", "enter")
    ]
    on, summary = run(lines, IdentityConfig(email=True))
    assert of(on, RECENTLY_CONTACTED) == [("u1", "enter", "2026-01-01T10:00:00.000Z", True)]
    assert summary.identity.ids_linked == 2  # x9 and the email


def test_the_first_link_wins_and_a_conflicting_one_is_counted() -> None:
    lines = [cart("10:00:00"), identify("10:30:00"), identify("10:40:00", "u2", mid="m-id2")]
    deltas, summary = run(lines, until="2026-01-01T13:00:00Z")
    assert of(deltas, CART_ABANDON) == [("u1", "enter", "2026-01-01T11:30:00.000Z", False)]
    assert summary.identity.conflicting_links == 1
    # The first by event time, whatever the arrival order within the lateness.
    swapped = [cart("10:00:00"), identify("10:41:00", "u2", mid="m-id2"), identify("10:40:00")]
    deltas, summary = run(swapped, until="2026-01-01T13:00:00Z")
    assert of(deltas, CART_ABANDON) == [("u1", "enter", "2026-01-01T11:30:00.000Z", False)]
    assert summary.identity.conflicting_links == 1


def test_a_repeated_link_is_idempotent() -> None:
    lines = [
        cart("10:00:00"),
        identify("10:30:00"),
        identify("10:30:00"),
        identify("10:50:00", mid="m3"),
    ]
    deltas, summary = run(lines, until="2026-01-01T13:00:00Z")
    assert of(deltas, CART_ABANDON) == [("u1", "enter", "2026-01-01T11:30:00.000Z", False)]
    assert summary.identity.conflicting_links == 0 and summary.duplicates == 1


def test_ids_never_linked_produce_nothing() -> None:
    deltas, summary = run([cart("10:00:00"), cart("10:05:00", "x2", "m2")])
    assert deltas == []
    assert summary.identity.ids_held == 2 and summary.identity.records_held == 2
    assert summary.skipped["no_customer"] == 0


def _order(at_ms: int, mid: str) -> Event:
    return Event(
        "x1", "track", "Order Completed", at_ms, mid,
        properties={"order_id": mid, "total": 900}, id_kind=ANONYMOUS,
    )  # fmt: skip


def _link(at_ms: int) -> Event:
    return Event("u1", "identify", "identify", at_ms, "m-link", linked_id="x1")


def _resolve(
    events: Sequence[Event], config: IdentityConfig
) -> tuple[list[MembershipDelta], IdentityResolver]:
    engine = Engine(AUDIENCES, allowed_lateness_ms=LATENESS_MS)
    resolver = IdentityResolver(engine, config)
    deltas = [d for e in events for d in resolver.process(copy.deepcopy(e))]
    deltas.extend(engine.finish())
    return deltas, resolver


def test_held_records_older_than_the_horizon_are_dropped_and_counted() -> None:
    """An anonymous 900 USD order 40 days before the identify: dropped under the default
    30-day horizon (no VIP), kept under a 60-day one."""
    t0 = iso_to_ms("2026-01-01T00:00:00Z")
    events = [_order(t0, "o1"), _order(t0 + 35 * DAY, "o2"), _link(t0 + 40 * DAY)]
    deltas, resolver = _resolve(events, IdentityConfig())
    assert resolver.stats.records_expired == 1 and resolver.stats.records_forwarded == 1
    vip = [d for d in deltas if d.audience == VIP]
    assert vip == [] or all(d.customer_id == "u1" for d in vip)
    events = [_order(t0, "o1"), _order(t0 + 35 * DAY, "o2"), _link(t0 + 40 * DAY)]
    events[1] = replace(events[1], properties={"order_id": "o2", "total": 10})
    deltas, resolver = _resolve(events, IdentityConfig())
    assert [d for d in deltas if d.audience == VIP] == []
    deltas, resolver = _resolve(events, IdentityConfig.model_validate({"anonymous_horizon": "60d"}))
    assert [(d.customer_id, d.op) for d in deltas if d.audience == VIP] == [("u1", "enter")]
    assert resolver.stats.records_expired == 0


def test_held_records_no_link_can_claim_are_dropped_as_the_clock_moves() -> None:
    t0 = iso_to_ms("2026-01-01T00:00:00Z")
    later = Event("u9", "track", "Application Opened", t0 + 31 * DAY, "m-later")
    _, resolver = _resolve([_order(t0, "o1"), later], IdentityConfig())
    stats = resolver.stats
    assert stats.records_expired == 1 and stats.ids_expired == 1 and stats.ids_held == 0


# -- against the oracle ----------------------------------------------------------------

ANONYMOUS_IDS = ("x1", "x2", "x3")


@st.composite
def identity_logs(draw: st.DrawFn) -> tuple[list[Event], int, bool, int]:
    """A generated log with some records anonymous (keyed by an anonymousId), some
    carrying one beside their userId, aliases and identifies linking ids (to different
    customers: conflicts), webhooks keyed only by the customer's email; plus whether
    email links are on and the horizon."""
    events, until = draw(event_logs(lateness_ms=LATENESS_MS, max_duplicates=2))
    email = draw(st.booleans())
    out: list[Event] = []
    done: dict[str, Event] = {}  # a re-send is the same record as its original
    for event in events:
        if event.record_id in done:
            out.append(copy.deepcopy(done[event.record_id]))
            continue
        original = event
        choice = draw(st.integers(0, 5))
        if event.kind == "webhook":
            if choice == 0:
                address = f"{event.customer_id}@example.com"
                event = replace(event, customer_id=address, id_kind="email")
        elif event.kind == "identify":
            event = replace(event, identifiers={"email": f"{event.customer_id}@example.com"})
            if choice <= 1:
                event = replace(event, linked_id=draw(st.sampled_from(ANONYMOUS_IDS)))
        elif choice <= 1:
            event = replace(
                event, customer_id=draw(st.sampled_from(ANONYMOUS_IDS)), id_kind=ANONYMOUS
            )
        elif choice == 2:
            event = replace(event, linked_id=draw(st.sampled_from(ANONYMOUS_IDS)))
        if original.record_id is not None:
            done[original.record_id] = event
        out.append(event)
    stamps = [e.timestamp_ms for e in out]
    customers = sorted({e.customer_id for e in events})
    for n in range(draw(st.integers(0, 3))):
        at = draw(st.sampled_from(stamps)) + draw(st.sampled_from((0, 1, 30 * 60_000, 3 * DAY)))
        person = draw(st.sampled_from(customers))
        kind = draw(st.sampled_from(("alias", "identify")))
        link = Event(
            person, kind, kind, at, f"l{n}", linked_id=draw(st.sampled_from(ANONYMOUS_IDS))
        )
        # Where arrival within the lateness allows it (see ``event_logs``).
        position = 0
        highest = None
        for i, e in enumerate(out):
            highest = e.timestamp_ms if highest is None else max(highest, e.timestamp_ms)
            if highest <= at + LATENESS_MS:
                position = i + 1
        out.insert(position, link)
    until = max(until, *(e.timestamp_ms for e in out))
    horizon = draw(st.sampled_from((30 * DAY, 2 * DAY, 3 * 60 * 60_000)))
    return out, until, email, horizon


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(identity_logs())
def test_replay_with_identity_matches_the_oracle(
    generated: tuple[list[Event], int, bool, int],
) -> None:
    events, until, email, horizon = generated
    assume(not _ties_across_a_link(events, email))
    config = IdentityConfig.model_validate({"email": email, "anonymous_horizon": f"{horizon}ms"})
    engine = Engine(AUDIENCES, allowed_lateness_ms=LATENESS_MS)
    resolver = IdentityResolver(engine, config)
    deltas = [d for e in events for d in resolver.process(copy.deepcopy(e))]
    deltas.extend(engine.finish(until))
    expected = identity_transitions(events, until, email=email, horizon_ms=horizon)
    assert _but_sticky(group(deltas)) == _but_sticky(expected)
    _, conflicts = identity_links(dedup_and_sort(events), email=email)
    assert resolver.stats.conflicting_links == conflicts


def _ties_across_a_link(events: Sequence[Event], email: bool) -> bool:
    """Whether a record held for a link has the same timestamp as one of the person's
    own records: the engine applies the held one after it (at the link), so it wins the
    tie of a "latest" fact whatever the arrival order, where the spec's log order may
    pick the other (a known gap: ``test_a_held_record_wins_a_tie_with_the_persons_own``)."""
    log = dedup_and_sort(events)
    links, _ = identity_links(log, email=email)
    own = {(e.customer_id, e.timestamp_ms) for e in log if e.id_kind not in (ANONYMOUS, "email")}
    for e in log:
        if e.id_kind == ANONYMOUS or (email and e.id_kind == "email"):
            link = links.get(e.customer_id)
            if link is not None and e.timestamp_ms < link[1] and (link[0], e.timestamp_ms) in own:
                return True
    return False


def test_a_held_record_wins_a_tie_with_the_persons_own() -> None:
    """Documents the gap above: an anonymous order (7 days' supply) and the person's own
    order (30 days) at the same millisecond, the anonymous one first in the log, linked a
    minute later: the engine takes the anonymous one as the latest order (due at once),
    where the log order makes the person's own the latest (due 23 days on)."""
    t0 = iso_to_ms("2026-01-01T00:00:00Z")

    def order(cid: str, rid: str, supply: int, kind: str = "id") -> Event:
        products = [{"sku": "a", "category": "c", "days_supply": supply}]
        properties = {"order_id": rid, "total": 1, "products": products}
        return Event(cid, "track", "Order Completed", t0, rid, properties=properties, id_kind=kind)

    events = [order("x1", "a1", 7, ANONYMOUS), order("u1", "o1", 30), _link(t0 + 60_000)]
    deltas, _ = _resolve(events, IdentityConfig())
    assert [(d.op, d.at_ms - t0) for d in deltas if d.audience == DUE_FOR_REORDER][:1] == [
        ("enter", 60_000)
    ]
    expected = identity_transitions(events, t0 + 60_000)
    assert (DUE_FOR_REORDER, "u1") not in expected


def _but_sticky(grouped: dict[tuple[str, str], list[tuple[int, str]]]) -> object:
    """Everything but the sticky audience (13): when several starter-kit orders of a
    linked id are attributed at one instant, the engine starts the period at the latest
    of them, where the spec's walk through the history starts it at the first that was
    not inside a period (a known gap, the same as for several late starter-kit orders
    applied at one instant; see ``test_stitched_starter_kits_start_at_the_latest``)."""
    return {key: value for key, value in grouped.items() if key[0] != STARTER_KIT}


def test_stitched_starter_kits_start_at_the_latest() -> None:
    """Documents the gap above: kits at 0 and 45m, linked at 46m, end the period at
    45m + 30d (the spec says 30d)."""
    t0 = iso_to_ms("2026-01-01T00:00:00Z")
    kit = {"order_id": "o", "total": 1, "products": [{"sku": "starter-kit", "category": "c"}]}
    events = [
        Event("x1", "track", "Order Completed", t0, "k1", properties=kit, id_kind=ANONYMOUS),
        Event(
            "x1", "track", "Order Completed", t0 + 45 * 60_000, "k2",
            properties=kit, id_kind=ANONYMOUS,
        ),
        replace(_link(t0 + 46 * 60_000), record_id="m-link"),
        Event("u9", "track", "Application Opened", t0 + 40 * DAY, "m-end"),
    ]  # fmt: skip
    deltas, _ = _resolve(events, IdentityConfig())
    got = [(d.op, d.at_ms - t0) for d in deltas if d.audience == STARTER_KIT]
    assert got == [("enter", 46 * 60_000), ("exit", 45 * 60_000 + 30 * DAY)]
    expected = identity_transitions(events, t0 + 40 * DAY)[(STARTER_KIT, "u1")]
    assert [(op, at - t0) for at, op in expected] == [("enter", 46 * 60_000), ("exit", 30 * DAY)]


def test_without_identity_anonymous_records_are_skipped() -> None:
    summary = ReplaySummary()
    deltas = list(
        replay(
            AUDIENCES,
            read_events([cart("10:00:00"), identify("10:30:00")], links=True),
            progress=None,
            summary=summary,
        )
    )
    assert of(deltas, CART_ABANDON) == [] and summary.skipped["no_customer"] == 1


@pytest.mark.parametrize("bad", [{"email": "yes please"}, {"anonymous_horizon": "30"}, {"x": 1}])
def test_the_identity_section_is_strict(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        IdentityConfig.model_validate(bad)


def test_the_identity_section_is_read_from_the_configuration_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    topics = '{"topics": [{"name": "p", "format": "pipelines_json"}]}'
    path.write_text(f"ingest: {topics}\nidentity: {{email: true, anonymous_horizon: 7d}}\n")
    config = load_config(path)
    assert config.identity.email and config.identity.anonymous_horizon_ms == 7 * DAY
    assert load_config(_write(tmp_path, f"ingest: {topics}\n")).identity == IdentityConfig()
    with pytest.raises(ConfigError, match="identity"):
        load_config(_write(tmp_path, f"ingest: {topics}\nidentity: {{emails: true}}\n"))


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / f"c{len(list(tmp_path.iterdir()))}.yaml"
    path.write_text(text)
    return path


def test_replay_cli_stitches_by_default_and_explain_shows_the_link(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = tmp_path / "e.jsonl"
    events.write_bytes(cart("10:00:00") + b"\n" + identify("12:00:00") + b"\n")
    args = ["--audiences", str(EXAMPLES), "--events", str(events)]
    assert cli_main(["replay", *args, "--until", "2026-01-01T13:00:00Z"]) == 0
    out, err = capsys.readouterr()
    [enter] = [d for d in map(orjson.loads, out.splitlines()) if d["audience"] == CART_ABANDON]
    assert enter["customer_id"] == "u1" and enter["stitched"] is True
    assert "identity: 1 ids linked, 1 records attributed through a link" in err
    assert cli_main(["explain", *args, "--customer", "u1", "--until", "2026-01-01T13:00Z"]) == 0
    out = capsys.readouterr().out
    assert "linked id x1 from 2026-01-01T12:00:00.000Z (record m-id): 1 record(s)" in out
    assert "stitched)" in out and "through linked id x1)" in out
