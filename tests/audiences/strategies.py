"""Hypothesis strategies: small multi-customer Customer.io logs aimed at audience edges.

``event_logs()`` draws 1-3 customers, each with a handful of records from the vocabulary of
``audiences.md``, at times built from gaps that hit the spec's durations exactly (and 1 ms
either side), ties (gap 0) and long silences; adds exact re-sends (same record_id, arriving
later); and shuffles arrival order within a bounded lateness. It returns
``(events_in_arrival_order, until_ms)``.
"""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import strategies as st

from streamsync.ingest.event import Event
from tests.audiences.oracle import DAY, HOUR, MINUTE, iso_to_ms

#: Generated logs start here and span up to about eleven months. Far enough in the past
#: that no generated record is ahead of the wall clock, which the decoders' clock-skew
#: bound would reject (README "Bad input").
T0 = iso_to_ms("2025-01-01T00:00:00Z")

PRODUCT_IDS: tuple[Any, ...] = ("p1", "p2", None)
TICKET_IDS: tuple[Any, ...] = ("t1", "t2", None)
SKUS = ("starter-kit", "sku-a", "sku-b")
DAYS_SUPPLY: tuple[Any, ...] = (5, 7, 14, 30, 60, None, True)
#: Totals near the 500 line, binary-unfriendly decimals, and (rarely) non-numbers.
TOTALS: tuple[Any, ...] = (
    0,
    0.01,
    0.1,
    10,
    100,
    129.99,
    250,
    370.01,
    499.8,
    500,
    600.0,
    1000,
    True,
    "75",
)
SUBSCRIPTION_STATUSES: tuple[Any, ...] = ("active", "active", "cancelled", "paused", None)

#: Durations that appear in the spec, plus days_supply - 7d for the days_supply pool.
SPEC_DURATIONS: tuple[int, ...] = (
    10 * MINUTE,
    60 * MINUTE,
    90 * MINUTE,
    3 * DAY,
    7 * DAY,
    30 * DAY,
    60 * DAY,
    120 * DAY,
    23 * DAY,
    53 * DAY,
    14 * DAY,
)
EXACT_GAPS: tuple[int, ...] = tuple(
    sorted({0, 1, 200 * DAY} | {d + k for d in SPEC_DURATIONS for k in (-1, 0, 1)})
)

#: (kind, name, properties, traits) before a customer, time and id are attached.
Payload = tuple[str, str, dict[str, Any], dict[str, Any]]


def _props(**values: Any) -> dict[str, Any]:
    """Drop keys whose value is ``None`` (a missing property)."""
    return {k: v for k, v in values.items() if v is not None}


_product = st.builds(
    lambda sku, supply: _props(sku=sku, category="c", days_supply=supply),
    st.sampled_from(SKUS),
    st.sampled_from(DAYS_SUPPLY),
)
_products: st.SearchStrategy[Any] = st.one_of(
    st.lists(_product, min_size=1, max_size=3), st.just([]), st.none()
)


def _track(name: str, props: dict[str, Any]) -> Payload:
    return ("track", name, props, {})


_payloads: st.SearchStrategy[Payload] = st.one_of(
    st.builds(
        lambda pid: _track("Product Viewed", _props(product_id=pid)), st.sampled_from(PRODUCT_IDS)
    ),
    st.builds(
        lambda pid: _track("Product Viewed", _props(product_id=pid)), st.sampled_from(PRODUCT_IDS)
    ),
    st.builds(
        lambda pid: _track("Product Added", _props(product_id=pid, cart_id="k1")),
        st.sampled_from(PRODUCT_IDS),
    ),
    st.builds(
        lambda oid: _track("Checkout Started", _props(order_id=oid, value=42)),
        st.sampled_from(("o1", None)),
    ),
    st.builds(
        lambda total, products: _track(
            "Order Completed", _props(order_id="o1", total=total, products=products)
        ),
        st.sampled_from(TOTALS),
        _products,
    ),
    st.builds(
        lambda total, products: _track(
            "Order Completed", _props(order_id="o2", total=total, products=products)
        ),
        st.sampled_from(TOTALS),
        _products,
    ),
    st.builds(
        lambda total: _track("Order Refunded", _props(order_id="o1", total=total)),
        st.sampled_from(TOTALS),
    ),
    st.just(_track("Application Opened", {})),
    st.builds(
        lambda tid: _track("Support Ticket Opened", _props(ticket_id=tid)),
        st.sampled_from(TICKET_IDS),
    ),
    st.builds(
        lambda tid: _track("Support Ticket Closed", _props(ticket_id=tid)),
        st.sampled_from(TICKET_IDS),
    ),
    st.builds(
        lambda status, carry: (
            "identify",
            "identify",
            {},
            {"email": "x@example.com", **({"subscription_status": status} if carry else {})},
        ),
        st.sampled_from(SUBSCRIPTION_STATUSES),
        st.booleans(),
    ),
    st.builds(
        lambda metric, obj: ("webhook", metric, {"object_type": obj}, {}),
        st.sampled_from(("sent", "sent", "delivered")),
        st.sampled_from(("email", "push", "sms")),
    ),
    # Decoys: a track event named like a webhook metric, a page named like a track event.
    st.just(_track("sent", {})),
    st.just(("page", "Product Viewed", {"product_id": "p1"}, {})),
)

_gaps: st.SearchStrategy[int] = st.one_of(
    st.sampled_from(EXACT_GAPS),
    st.sampled_from((0, 0, 1)),
    st.integers(0, 2 * HOUR),
    st.integers(0, 10 * DAY),
)


@st.composite
def _customer_log(draw: st.DrawFn, max_events: int) -> list[tuple[int, Payload]]:
    """(timestamp, payload) pairs for one customer, in generation order (not sorted)."""
    start = draw(st.sampled_from((0, 0, 1, 7 * MINUTE, DAY)))
    out: list[tuple[int, Payload]] = []
    previous = T0 + start
    for _ in range(draw(st.integers(1, max_events))):
        if out and draw(st.integers(0, 3)) == 0:
            # Anchor on any earlier record, so exact durations are hit between records
            # that are not adjacent (view ... view exactly 7d after the first).
            anchor = draw(st.sampled_from([ts for ts, _ in out]))
            ts = anchor + draw(st.sampled_from(EXACT_GAPS))
        else:
            ts = previous + draw(_gaps)
        previous = ts
        out.append((ts, draw(_payloads)))
    return out


@st.composite
def event_logs(
    draw: st.DrawFn,
    *,
    max_customers: int = 3,
    max_events: int = 12,
    lateness_ms: int = 300_000,
    allow_missing_ids: bool = True,
    whole_second_webhooks: bool = False,
    max_duplicates: int = 3,
) -> tuple[list[Event], int]:
    """``(events_in_arrival_order, until_ms)``.

    Arrival order is timestamp order perturbed so that, when a record arrives, no record
    that arrived before it has a timestamp more than ``lateness_ms`` after its own. Exact
    re-sends (same ``record_id``) arrive after their original, possibly much later.
    """
    n_customers = draw(st.integers(1, max_customers))
    records: list[Event] = []
    for c in range(n_customers):
        customer = f"c{c + 1}"
        for ts, (kind, name, props, traits) in draw(_customer_log(max_events)):
            if whole_second_webhooks and kind == "webhook":
                ts -= ts % 1000
            record_id: str | None = f"{'w' if kind == 'webhook' else 'm'}{len(records) + 1}"
            if allow_missing_ids and draw(st.integers(0, 15)) == 0:
                record_id = None
            records.append(
                Event(
                    customer_id=customer,
                    kind=kind,
                    name=name,
                    timestamp_ms=ts,
                    record_id=record_id,
                    properties=copy.deepcopy(props),
                    traits=copy.deepcopy(traits),
                )
            )
    records.sort(key=lambda e: e.timestamp_ms)

    # Arrival at (timestamp + delay), delay in [0, lateness]: a record r arriving before s
    # has ts_r <= ts_r + delay_r <= ts_s + delay_s <= ts_s + lateness, as required.
    delay = st.one_of(st.just(0), st.integers(0, lateness_ms), st.just(lateness_ms))
    keyed = [(e.timestamp_ms + draw(delay), i, e) for i, e in enumerate(records)]
    arrival = [e for _, _, e in sorted(keyed, key=lambda k: (k[0], k[1]))]

    with_ids = [i for i, e in enumerate(arrival) if e.record_id is not None]
    for _ in range(draw(st.integers(0, max_duplicates)) if with_ids else 0):
        i = draw(st.sampled_from(with_ids))
        position = draw(st.integers(i + 1, len(arrival)))
        arrival.insert(position, copy.deepcopy(arrival[i]))
        with_ids = [j + 1 if j >= position else j for j in with_ids]

    max_ts = max(e.timestamp_ms for e in records)
    extra = draw(
        st.one_of(
            st.sampled_from((0, 1, 90 * MINUTE, 7 * DAY, 31 * DAY, 121 * DAY, 200 * DAY)),
            st.integers(0, 130 * DAY),
        )
    )
    return arrival, max_ts + extra
