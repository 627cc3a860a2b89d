"""Changing audience definitions under a running group, on the real broker.

The example audiences are evaluated over a generated log. Then one window is changed
(cart abandonment after 60 minutes instead of 90, version 2), one audience added over a
fact no old audience kept (two carts in a day: rebuilt from the input history), one
removed and one description edited, and evaluate is started again with the same
group. It must keep running, and what it emits for the change must be exactly the
difference between replay of the new definitions and what the old ones had emitted,
at the clock's instant, ``seq`` continuing, nothing for unchanged audiences; and
``streamsync audiences diff``, run between the two starts, must have predicted exactly
the per-audience counts of what it emits.
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from streamsync.audiences.loader import load_audiences
from streamsync.audiences.replay import replay
from streamsync.cli import main
from streamsync.config import load_config
from streamsync.deltas.membership import read_members
from streamsync.deltas.record import ENTER, MembershipDelta
from streamsync.ingest.event import Event
from streamsync.ingest.jsonl import read_events
from streamsync.runtime.app import Application
from tests.runtime.evaluate_support import (
    EXAMPLE_AUDIENCES,
    Stream,
    check_seq,
    read_deltas,
    synthetic,
)

pytestmark = pytest.mark.kafka

REMOVED = "ACT__ActiveApp__10m"
ADDED = """
audiences:
  - name: ACT__TwoCarts__1d
    version: 1
    owner: retention@example.com
    description: Two carts within a day.
    entry:
      count: {event: Product Added, at_least: 2, within: 1d}
"""


def _changed_definitions(root: Path) -> Path:
    out = root / "changed"
    out.mkdir()
    for path in sorted(EXAMPLE_AUDIENCES.glob("*.yaml")):
        text = path.read_text()
        if path.name == "cart_and_checkout.yaml":
            text = text.replace("at_least: 90m", "at_least: 60m", 1)
            text = text.replace("version: 1", "version: 2", 1)  # the first: the cart audience
        if path.name == "engagement.yaml":
            start = text.index(f"  - name: {REMOVED}")
            end = text.index("  - name: ", start + 1)
            text = text[:start] + text[end:]
            text = text.replace(
                'description: The latest identify carrying subscription_status says "active".',
                "description: Edited, only the description changed.",
            )
        (out / path.name).write_text(text)
    (out / "added.yaml").write_text(ADDED)
    return out


def _track(customer: str, event: str, ms: int) -> dict[str, Any]:
    return {
        "type": "track",
        "messageId": str(uuid.uuid4()),
        "userId": customer,
        "event": event,
        "timestamp": datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds"),
        "properties": {"product_id": "p1"},
    }


def _recent(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Records at the end of the log that the changes decide: carts 75 minutes before
    the last record (in after 60 minutes, not yet after 90), second carts within a day,
    app opens a minute before (members of the audience to be removed)."""
    lines = [orjson.dumps(r) for r in records]
    end = max(e.timestamp_ms for e in read_events(lines) if isinstance(e, Event))
    end += 3 * 3_600_000
    out = []
    for i in range(40):
        customer = f"late-{i}"
        if i % 2 == 0:
            out.append(_track(customer, "Product Added", end - 20 * 3_600_000))
        out.append(_track(customer, "Product Added", end - 75 * 60_000 + i))
        if i % 3 == 0:
            out.append(_track(customer, "Application Opened", end - 60_000 + i))
    out.append(_track("late-clock", "Page Viewed", end))
    return sorted(out, key=lambda r: str(r["timestamp"]))  # in time order: none is late


def _membership(deltas: list[MembershipDelta]) -> set[tuple[str, str]]:
    members: set[tuple[str, str]] = set()
    for delta in sorted(deltas, key=lambda d: (d.audience, d.customer_id, d.seq)):
        key = (delta.audience, delta.customer_id)
        if delta.op == ENTER:
            members.add(key)
        else:
            members.discard(key)
    return members


def _diff(capsys: pytest.CaptureFixture[str], config: Path, new: Path) -> dict[str, Any]:
    """``streamsync audiences diff --json`` against the running configuration."""
    capsys.readouterr()
    assert main(["audiences", "diff", "--config", str(config), "--json", str(new)]) == 0
    report: dict[str, Any] = orjson.loads(capsys.readouterr().out)
    return report


def test_changed_definitions_emit_only_the_net_difference_and_evaluate_goes_on(
    kafka_bootstrap_servers: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    stream = Stream(kafka_bootstrap_servers)
    records = synthetic(300, 6000, seed=23)
    stream.produce(records + _recent(records))
    # Event time only, every deadline up to the newest record fired: one clock for all.
    clock: dict[str, Any] = {"wall_clock": False}
    Application(load_config(stream.config(tmp_path, **clock))).run(idle_timeout_s=2.0, finish=True)
    first = read_deltas(kafka_bootstrap_servers, stream.deltas)
    assert len(first) > 500
    told = _membership(first)

    changed = _changed_definitions(tmp_path)
    first_config = stream.config(tmp_path, **clock)
    predicted = _diff(capsys, first_config, changed)
    assert main(["audiences", "diff", "--config", str(first_config), str(changed)]) == 0
    text = capsys.readouterr().out
    assert f"{REMOVED}: removed (version 1 -> -)" in text
    assert "unchanged, nothing emitted:" in text
    caplog.set_level(logging.INFO)
    config = stream.config(tmp_path, audiences=str(changed), **clock)
    stats = Application(load_config(config)).run(idle_timeout_s=2.0)
    assert stats.definition_changes > 0
    every = read_deltas(kafka_bootstrap_servers, stream.deltas)
    assert not [d for d in first if d.definition_change]
    change = [d for d in every if d.definition_change]
    assert change, "no definition-change deltas"
    (at,) = {d.at_ms for d in change}

    # What the new definitions give at that instant, from the whole log.
    new = load_audiences(changed)
    expected = _membership(
        list(replay(new, read_events(stream.lines, "test"), until_ms=at, progress=None))
    )
    kept = {m for m in told if m[0] != REMOVED}
    want = Counter({(a, c, "enter"): 1 for a, c in expected - kept})
    want.update({(a, c, "exit"): 1 for a, c in kept - expected})
    want.update({(a, c, "exit"): 1 for a, c in told if a == REMOVED})
    got = Counter((d.audience, d.customer_id, d.op) for d in change)
    assert got == want

    # audiences diff, run between the two starts, predicted exactly these counts.
    emitted = Counter((d.audience, d.op) for d in change)
    by = {a["audience"]: a for a in predicted["audiences"]}
    for name, item in by.items():
        assert (item["enter"], item["leave"]) == (emitted[(name, "enter")], emitted[(name, "exit")])
        entered = {c for a, c, op in got if a == name and op == "enter"}
        assert set(item["sample_enter"]) <= entered
    assert by[REMOVED]["kind"] == "removed"
    assert by[REMOVED]["size_before"] == by[REMOVED]["leave"] > 0
    assert by["ACT__TwoCarts__1d"]["kind"] == "added"
    assert by["ACT__CartAbandon__90m"]["kind"] == "changed"
    assert by["SUP__SubscriptionActive"]["kind"] == "unchanged"  # a description edit
    assert predicted["instants_ms"] == [at]
    assert not predicted["notes"]
    audiences = {d.audience for d in change}
    # The medium-intent band reads the cart audience: rebuilt with it.
    rebuilt = {"ACT__CartAbandon__90m", "ACT__CartAbandon__MedIntent", "ACT__TwoCarts__1d"}
    assert audiences <= rebuilt | {REMOVED}
    assert {"ACT__TwoCarts__1d", REMOVED} <= audiences
    assert {d.version for d in change if d.audience == "ACT__CartAbandon__90m"} <= {2}
    check_seq(every)  # seq continues across the change, from 1 for the added audience
    # The membership table (written in the same transactions) is who is a member now.
    table = read_members(load_config(config), timeout_s=60)
    assert table.complete
    assert set(table.members) == _membership(every)

    lines = [r.getMessage() for r in caplog.records if "definition change" in r.getMessage()]
    assert any("ACT__CartAbandon__90m: changed" in x and "rebuilt from state" in x for x in lines)
    assert any("ACT__TwoCarts__1d: added" in x and "input history" in x for x in lines)
    assert not any("SUP__SubscriptionActive" in x for x in lines)
    assert len(lines) == len(set(lines)), "a change reported more than once"

    # A third start with the same definitions changes nothing.
    Application(load_config(config)).run(idle_timeout_s=2.0)
    again = read_deltas(kafka_bootstrap_servers, stream.deltas)
    assert len([d for d in again if d.definition_change]) == len(change)
