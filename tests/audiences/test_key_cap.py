"""A customer with ever-new keys (a scraper viewing thousands of products, a harness
opening tickets) keeps at most ``max_keys`` per per-key fact: the least recent are
dropped and reported, so its records cost a bounded amount, and nobody else changes."""

from __future__ import annotations

from streamsync.audiences.compiler import MEMBERS
from streamsync.audiences.engine import Engine
from streamsync.audiences.loader import load_audiences
from streamsync.ingest.event import Event
from streamsync.resources import project_path

AUDIENCES = load_audiences(project_path("examples", "audiences"))
T = 1_767_261_600_000
S = 1_000


def _flood(n: int) -> list[Event]:
    out = []
    for i in range(n):
        if i % 2:
            out.append(
                Event("bot", "track", "Product Viewed", T + i * S, f"v{i}", {"product_id": f"p{i}"})
            )
        else:
            out.append(
                Event(
                    "bot",
                    "track",
                    "Support Ticket Opened",
                    T + i * S,
                    f"t{i}",
                    {"ticket_id": f"t{i}"},
                )
            )
    return out


def test_a_customer_with_ever_new_keys_keeps_at_most_the_cap() -> None:
    engine = Engine(AUDIENCES, max_keys=50)
    for event in _flood(2_000):
        engine.process(event)
    engine.finish()
    facts = engine.program.facts
    (views,) = [slot for key, (slot, _) in facts.items() if key[0] == "window_count"]
    (tickets,) = [slot for key, (slot, _) in facts.items() if key[0] == "open"]
    c = engine.customers["bot"]
    stride = 2 * 2 + 1  # [product, t1, t2, r1, r2]
    assert len(c[views]) == 50 * stride
    assert "p1999" in c[views][::stride]  # the newest kept, the oldest dropped
    assert "p1" not in c[views][::stride]
    assert len(c[tickets]) == 50 and "t1998" in c[tickets] and "t0" not in c[tickets]
    capped = engine.take_capped()
    assert set(capped) == {"bot"}
    dropped, event = capped["bot"]
    assert dropped > 1_000 and event.customer_id == "bot"
    assert engine.stats.capped == dropped
    assert engine.take_capped() == {}


def test_the_cap_changes_nobody_else() -> None:
    normal = [
        Event("c1", "track", "Product Viewed", T, "a", {"product_id": "x"}),
        Event("c1", "track", "Product Viewed", T + S, "b", {"product_id": "x"}),
    ]
    alone = Engine(AUDIENCES, max_keys=50)
    for event in normal:
        alone.process(event)
    alone.finish(T + 10 * S)
    crowded = Engine(AUDIENCES, max_keys=50)
    flood = [e for e in _flood(400) if e.timestamp_ms <= T + 10 * S] + _flood(400)[11:]
    for event in sorted(normal + flood, key=lambda e: e.timestamp_ms):
        crowded.process(event)
    crowded.finish(T + 10 * S)
    assert alone.members("c1") == crowded.members("c1") == ["ACT__ViewedTwiceNoPurchase__7d"]
    assert alone.customers["c1"][MEMBERS] == crowded.customers["c1"][MEMBERS]
