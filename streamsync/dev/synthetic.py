"""A deterministic, realistic Customer.io event stream for the demo, benchmarks and tests.

Real event logs cannot be shipped with the project, yet every stage (decoding, the
audience engine, delivery) needs input that behaves like a direct-to-consumer brand's
traffic: bursty sessions, a few heavy customers and a long tail of light ones, carts that
are abandoned, customers who churn and become winback candidates, consumables that run
out, support tickets, marketing sends, and the transport's imperfections (records that
arrive a little late, records delivered twice). This module produces such a stream from a
seed, so a benchmark or a failing test can be reproduced exactly.

Behaviour is chosen so that all 13 canonical audiences (``../shared/audiences.md``) are
entered and exited over the default 180-day window:

* sessions: ``Application Opened`` (app users) or a ``page`` view (web users), then
  ``Product Viewed`` (often a customer's favourite products again, so the same
  ``product_id`` is viewed twice within days), sometimes ``Product Added``, ``Checkout
  Started`` and ``Order Completed`` (carts and checkouts are also abandoned);
* orders carry ``total`` in USD and ``products[]`` with ``sku``, ``category`` and, for
  consumables, ``days_supply``; some contain the ``starter-kit`` sku; consumable buyers
  often come back around the time their supply runs out; a few orders are refunded;
* about a third of customers churn between day 45 and day 111, so the 60-120 day winback
  window after their last order falls inside the stream;
* ``identify`` calls carry ``email``, ``phone`` and ``subscription_status``, which changes
  over time; support tickets open, close and are occasionally reopened;
* reporting webhooks (``sent``, ``delivered``, ``opened`` for email, push and sms) keep
  arriving after a customer churns, as marketing sends do.

Everything is generated as compact tuples first (a "plan"), sorted by event time, and
turned into JSON-ready dicts only as they are yielded: that keeps generation above
100k records/s. The plan is sorted in bounded runs spilled to temporary files
(:mod:`streamsync.dev.plan_runs`), so memory does not grow with the number of records:
what does is one customer's plan at a time, and the 1.5% of records that arrive late or
twice, held until they are released.
"""

from __future__ import annotations

import heapq
import math
import os
import random
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from operator import itemgetter
from pathlib import Path
from typing import Any, BinaryIO, Final

import orjson

from streamsync.dev.plan_runs import RUN_ENTRIES, PlanRuns, read, spill

__all__ = [
    "BAD_RECORD_LABELS",
    "DEFAULT_DURATION_MS",
    "DEFAULT_START_MS",
    "bad_records",
    "format_timestamp",
    "generate_records",
    "mix_bad_records",
    "write_jsonl",
]

_SEC: Final = 1_000
_MIN: Final = 60 * _SEC
_HOUR: Final = 60 * _MIN
_DAY: Final = 24 * _HOUR

#: 2026-01-01T00:00:00Z: a fixed start, so output does not depend on when it was made.
DEFAULT_START_MS: Final = 1_767_225_600_000
#: The window the stream covers: long enough for 60-120 day winback windows to open.
DEFAULT_DURATION_MS: Final = 180 * _DAY

# Plan entry codes: ``(timestamp_ms, customer, code, a, b)``; ``a``/``b`` depend on code.
_APP_OPENED: Final = 0  # -
_PAGE: Final = 1  # a: page index, b: product index or -1
_SCREEN: Final = 2  # a: screen index
_VIEWED: Final = 3  # a: product index
_ADDED: Final = 4  # a: product index, b: cart number
_CHECKOUT: Final = 5  # a: order number, b: value in cents
_ORDER: Final = 6  # a: order number, b: tuple of product indexes
_REFUND: Final = 7  # a: order number, b: total in cents
_TICKET_OPENED: Final = 8  # a: ticket number
_TICKET_CLOSED: Final = 9  # a: ticket number
_IDENTIFY: Final = 10  # a: subscription status index or -1, b: 1 for the full profile
_WEBHOOK: Final = 11  # a: delivery number, b: metric * 3 + object type
_ANONYMOUS: Final = 12  # customer -1; a: anonymous visitor number, b: page index

_Plan = tuple[int, int, int, int, Any]

_STATUSES: Final = ("active", "cancelled", "paused")
_METRICS: Final = ("sent", "delivered", "opened")
_OBJECT_TYPES: Final = ("email", "push", "sms")
_PAGES: Final = (("Home", "/"), ("Product", "/products"), ("Cart", "/cart"), ("Blog", "/blog"))
_SCREENS: Final = ("Home", "Product Detail", "Cart", "Account")

_CONSUMABLES: Final = (
    ("coffee", (30,)),
    ("supplements", (30, 60, 90)),
    ("skincare", (45, 60)),
    ("pet-food", (30,)),
)
_DURABLES: Final = ("apparel", "accessories", "home", "equipment")
_STARTER_SKU: Final = "starter-kit"
#: Odd, so multiplying by it is a bijection mod 2**48 (see ``_Renderer``).
_ID_MULTIPLIER: Final = 0x9E3779B97F4B
_MASK48: Final = (1 << 48) - 1


def _build_catalog() -> list[tuple[str, str, str, int, int | None]]:
    """``(product_id, sku, category, price_cents, days_supply)``, the same for every seed.

    A fixed catalog means two streams with different seeds still talk about the same
    products, which keeps fixtures and dashboards comparable.
    """
    rng = random.Random(20260101)
    catalog: list[tuple[str, str, str, int, int | None]] = []
    for i in range(48):
        category, supplies = _CONSUMABLES[i % len(_CONSUMABLES)]
        price = 1500 + 100 * int(rng.random() * 45) - 1
        catalog.append((f"prod_{i:04d}", f"SKU-{i:04d}", category, price, rng.choice(supplies)))
    for i in range(48, 120):
        category = _DURABLES[i % len(_DURABLES)]
        price = 2500 + 100 * int(rng.random() * 155) - 1
        catalog.append((f"prod_{i:04d}", f"SKU-{i:04d}", category, price, None))
    catalog.append(("prod_starter_kit", _STARTER_SKU, "kits", 4900, None))
    return catalog


_CATALOG: Final = _build_catalog()
_STARTER: Final = len(_CATALOG) - 1
_N_CONSUMABLE: Final = 48
_N_PRODUCTS: Final = len(_CATALOG) - 1  # excluding the starter kit
_PRODUCT_JSON: Final = tuple(
    {"product_id": pid, "sku": sku, "category": cat, "price": cents / 100, "quantity": 1}
    | ({"days_supply": supply} if supply is not None else {})
    for pid, sku, cat, cents, supply in _CATALOG
)

#: ``"YYYY-MM-DDTHH:MM:"`` by epoch minute. Bounded: cleared when it reaches the limit.
_minute_prefix: dict[int, str] = {}
_MINUTE_CACHE_LIMIT: Final = 1 << 19
# Table lookups instead of ``:02d``/``:03d`` format specs, which cost more than the rest.
_TWO_DIGITS: Final = tuple(f"{i:02d}" for i in range(60))
_THREE_DIGITS: Final = tuple(f"{i:03d}" for i in range(1000))


def format_timestamp(ms: int) -> str:
    """``YYYY-MM-DDTHH:MM:SS.sssZ`` for epoch milliseconds, as Data Pipelines sends it.

    Hand-rolled with a per-minute prefix cache because ``datetime.isoformat`` dominated
    the generator's profile; the result is identical for every instant after 1970.
    """
    minute, rem = divmod(ms, _MIN)
    prefix = _minute_prefix.get(minute)
    if prefix is None:
        if len(_minute_prefix) >= _MINUTE_CACHE_LIMIT:
            _minute_prefix.clear()
        day, minute_of_day = divmod(minute, 1440)
        y, m, d = _civil_from_days(day)
        hours, minutes = divmod(minute_of_day, 60)
        prefix = _minute_prefix[minute] = f"{y:04d}-{m:02d}-{d:02d}T{hours:02d}:{minutes:02d}:"
    return f"{prefix}{_TWO_DIGITS[rem // 1000]}.{_THREE_DIGITS[rem % 1000]}Z"


def _civil_from_days(days: int) -> tuple[int, int, int]:
    """Howard Hinnant's days-since-epoch to proleptic Gregorian (year, month, day)."""
    z = days + 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    return yoe + era * 400 + (1 if m <= 2 else 0), m, d


def _zipf_budgets(rng: random.Random, customers: int, total: int) -> list[int]:
    """Split ``total`` records over customers with a Zipf-like (exponent 0.6) share each.

    0.6 gives the shape of real D2C traffic: the busiest customer has about 100 times the
    median's records, and still only about 1% of the stream, so no single key dominates a
    Kafka partition.
    """
    weights = [1.0 / (rank + 1) ** 0.6 for rank in range(customers)]
    rng.shuffle(weights)
    scale = total / math.fsum(weights)
    budgets = [int(w * scale) for w in weights]
    remainder = total - sum(budgets)
    order = list(range(customers))
    rng.shuffle(order)
    for i in order[:remainder]:
        budgets[i] += 1
    return budgets


class _CustomerPlanner:
    """Builds one customer's timeline into the shared plan list.

    A class rather than a closure so the hot loop reads attributes it was given once,
    and so the behaviour model is in one readable place.
    """

    def __init__(self, rng: random.Random, start_ms: int, duration_ms: int) -> None:
        self.rng = rng
        self.start = start_ms
        self.end = start_ms + duration_ms
        self.duration = duration_ms

    def plan(self, customer: int, budget: int, app_user: bool, out: list[_Plan]) -> None:
        r = self.rng.random
        duration = self.duration
        churner = r() < 0.35
        if churner:
            signup = self.start + int(r() * 0.15 * duration)
            active_end = self.start + int((0.25 + 0.37 * r()) * duration)
        else:
            signup = self.start + int(r() * 0.3 * duration)
            active_end = self.end
        active_end = max(active_end, signup + 10 * _DAY)
        consumable = r() < 0.55
        starter = r() < 0.25
        buy_p = 0.25 + 0.6 * r()
        pool = _N_CONSUMABLE if consumable else _N_PRODUCTS
        favourites = [int(r() * pool) for _ in range(3)]
        status = 0 if r() < 0.5 else -1

        events: list[_Plan] = [(signup, customer, _IDENTIFY, status, 1)]
        counters = [0, 0, 0, 0]  # orders, carts, tickets, deliveries
        reorders: list[int] = []
        session_span = active_end - signup - _HOUR
        while len(events) < budget:
            x = r()
            if reorders:
                self._session(events, customer, reorders.pop(), app_user, favourites, pool,
                              starter, 0.9, counters, reorders)  # fmt: skip
            elif x < 0.80:
                t = signup + int(r() * session_span)
                self._session(events, customer, t, app_user, favourites, pool, starter, buy_p,
                              counters, reorders)  # fmt: skip
            elif x < 0.93:
                self._campaign(events, customer, signup + int(r() * (self.end - signup)), counters)
            elif x < 0.96:
                self._ticket(events, customer, signup + int(r() * (self.end - signup)), counters)
            else:
                t = signup + int(r() * (self.end - signup))
                status = int(r() * 3) if r() < 0.9 else 0
                events.append((t, customer, _IDENTIFY, status, 0))
        del events[budget:]
        out.extend(events)

    def _session(
        self,
        events: list[_Plan],
        c: int,
        t: int,
        app_user: bool,
        favourites: list[int],
        pool: int,
        starter: bool,
        buy_p: float,
        counters: list[int],
        reorders: list[int],
    ) -> None:
        r = self.rng.random
        if app_user:
            events.append((t, c, _APP_OPENED, 0, 0))
            t += _SEC + int(r() * 20 * _SEC)
            events.append((t, c, _SCREEN, 0, 0))
        else:
            events.append((t, c, _PAGE, 0, -1))
        views = 1 + int(r() * r() * 6)
        viewed = 0
        for _ in range(views):
            t += 5 * _SEC + int(r() * 90 * _SEC)
            viewed = favourites[int(r() * 3)] if r() < 0.5 else int(r() * pool)
            if not app_user and r() < 0.3:
                events.append((t, c, _PAGE, 1, viewed))
            events.append((t, c, _VIEWED, viewed, 0))
        if r() >= 0.4:
            return
        counters[1] += 1
        cart = counters[1]
        basket = [viewed]
        if r() < 0.3:
            basket.append(int(r() * pool))
        if starter and r() < 0.3:
            basket.append(_STARTER)
        for product in basket:
            t += 3 * _SEC + int(r() * 40 * _SEC)
            events.append((t, c, _ADDED, product, cart))
        if r() >= 0.65:
            return  # cart abandoned
        counters[0] += 1
        order = counters[0]
        value = sum(_CATALOG[p][3] for p in basket)
        t += 20 * _SEC + int(r() * 3 * _MIN)
        events.append((t, c, _CHECKOUT, order, value))
        if r() >= buy_p:
            return  # checkout abandoned
        t += 30 * _SEC + int(r() * 8 * _MIN)
        events.append((t, c, _ORDER, order, tuple(basket)))
        if r() < 0.05:
            refund_at = t + 2 * _DAY + int(r() * 18 * _DAY)
            if refund_at < self.end:
                events.append((refund_at, c, _REFUND, order, value))
        supply = max((_CATALOG[p][4] or 0) for p in basket)
        if supply and r() < 0.5:
            # Some come back early, some in the reorder window, some a little late.
            again = t + (supply - 10) * _DAY + int(r() * 15 * _DAY)
            if again < self.end - _HOUR:
                reorders.append(again)

    def _campaign(self, events: list[_Plan], c: int, t: int, counters: list[int]) -> None:
        r = self.rng.random
        counters[3] += 1
        delivery = counters[3]
        x = r()
        object_type = 0 if x < 0.6 else (1 if x < 0.85 else 2)
        events.append((t, c, _WEBHOOK, delivery, object_type))
        if r() < 0.95:
            t += _SEC + int(r() * 60 * _SEC)
            events.append((t, c, _WEBHOOK, delivery, 3 + object_type))
            if object_type != 2 and r() < 0.3:
                t += _MIN + int(r() * 2 * _DAY)
                if t < self.end:
                    events.append((t, c, _WEBHOOK, delivery, 6 + object_type))

    def _ticket(self, events: list[_Plan], c: int, t: int, counters: list[int]) -> None:
        r = self.rng.random
        counters[2] += 1
        ticket = counters[2]
        events.append((t, c, _TICKET_OPENED, ticket, 0))
        if r() >= 0.9:
            return  # still open
        t += _HOUR + int(r() * 3 * _DAY)
        if t >= self.end:
            return
        events.append((t, c, _TICKET_CLOSED, ticket, 0))
        if r() < 0.15:  # reopened, and closed again
            t += _HOUR + int(r() * 2 * _DAY)
            if t < self.end:
                events.append((t, c, _TICKET_OPENED, ticket, 0))
                t += _HOUR + int(r() * 2 * _DAY)
                if t < self.end:
                    events.append((t, c, _TICKET_CLOSED, ticket, 0))


class _Renderer:
    """Turns plan entries into Data Pipelines / reporting webhook dicts.

    Every call builds fresh dicts (nothing is shared between records), so a consumer may
    mutate what it receives. Dict literals rather than successive assignments: this is
    the generator's hottest code.
    """

    def __init__(self, seed: int, app_users: list[bool]) -> None:
        customers = len(app_users)
        ids = random.Random(f"streamsync-ids-{seed}")
        self.customer_ids = [f"cus_{i:07d}" for i in range(customers)]
        self.emails = [f"customer{i}@example.com" for i in range(customers)]
        self.phones = [
            f"+1555{ids.getrandbits(24) % 10_000_000:07d}" if ids.random() < 0.7 else None
            for _ in range(customers)
        ]
        self.cio_ids = [f"{ids.getrandbits(48):012x}" for _ in range(customers)]
        self.anonymous_ids = [_uuid(ids.getrandbits(128)) for _ in range(customers)]
        self.app_users = app_users
        # Ids are a seed-specific UUID-shaped head and a 48-bit tail that is an odd
        # multiple of the record's sequence number (a bijection mod 2**48): unique within
        # a stream, equal for a re-sent duplicate, different across seeds.
        head = _uuid(ids.getrandbits(128))
        self._id_head = head[:24]
        self._event_id_head = f"01{ids.getrandbits(40):010X}"
        self._visitor_head = _uuid(ids.getrandbits(128))[:24]
        self._id_offset = ids.getrandbits(48)

    def _id_tail(self, seq: int) -> int:
        return ((seq + self._id_offset) * _ID_MULTIPLIER) & _MASK48

    def render(self, entry: _Plan, seq: int) -> dict[str, Any]:
        ts, c, code, a, b = entry
        if code == _WEBHOOK:
            return self._webhook(ts, c, a, b, seq)
        message_id = f"{self._id_head}{self._id_tail(seq):012x}"
        if code == _ANONYMOUS:
            name, path = _PAGES[b]
            return {
                "type": "page",
                "anonymousId": f"{self._visitor_head}{((a + 1) * _ID_MULTIPLIER) & _MASK48:012x}",
                "name": name,
                "properties": {"path": path},
                "context": _web_context(None, path),
                "timestamp": format_timestamp(ts),
                "messageId": message_id,
            }
        email = self.emails[c]
        if self.app_users[c]:
            anonymous_id = None
            context = {
                "app": {"name": "Acme", "version": "4.2.0"},
                "device": {"type": "ios"},
                "library": {"name": "customerio-ios", "version": "3.1.0"},
                "traits": {"email": email},
            }
        else:
            anonymous_id = self.anonymous_ids[c]
            context = _web_context(email, "/")
        if code == _IDENTIFY:
            traits: dict[str, Any] = {"email": email}
            if b:
                phone = self.phones[c]
                if phone is not None:
                    traits["phone"] = phone
                traits["cio_id"] = self.cio_ids[c]
            if a >= 0:
                traits["subscription_status"] = _STATUSES[a]
            record: dict[str, Any] = {
                "type": "identify",
                "userId": self.customer_ids[c],
                "traits": traits,
            }
        elif code == _PAGE:
            name, path = _PAGES[a]
            properties: dict[str, Any]
            if b >= 0:
                product_id = _CATALOG[b][0]
                properties = {"path": f"/products/{product_id}", "product_id": product_id}
            else:
                properties = {"path": path}
            record = {
                "type": "page",
                "userId": self.customer_ids[c],
                "name": name,
                "properties": properties,
            }
        elif code == _SCREEN:
            record = {
                "type": "screen",
                "userId": self.customer_ids[c],
                "name": _SCREENS[a],
                "properties": {},
            }
        else:
            event, properties = _track(c, code, a, b)
            record = {
                "type": "track",
                "userId": self.customer_ids[c],
                "event": event,
                "properties": properties,
            }
        if anonymous_id is not None:
            record["anonymousId"] = anonymous_id
        record["context"] = context
        record["timestamp"] = format_timestamp(ts)
        record["messageId"] = message_id
        return record

    def _webhook(self, ts: int, c: int, delivery: int, kind: int, seq: int) -> dict[str, Any]:
        metric, object_type = divmod(kind, 3)
        customer_id = self.customer_ids[c]
        data: dict[str, Any] = {
            "customer_id": customer_id,
            "identifiers": {"id": customer_id, "email": self.emails[c], "cio_id": self.cio_ids[c]},
            "delivery_id": f"dlv_{c:07d}_{delivery:05d}",
            "campaign_id": 1 + delivery % 17,
        }
        if object_type == 0:
            data["recipient"] = self.emails[c]
        elif object_type == 2 and self.phones[c] is not None:
            data["recipient"] = self.phones[c]
        return {
            # Customer.io event ids are 26-character ULIDs: a 12-character head, then
            # the 48-bit tail in 14 more characters.
            "event_id": f"{self._event_id_head}{self._id_tail(seq):014X}",
            "object_type": _OBJECT_TYPES[object_type],
            "metric": _METRICS[metric],
            "timestamp": ts // 1000,
            "data": data,
        }


def _uuid(x: int) -> str:
    h = f"{x:032x}"
    variant = "89ab"[int(h[16], 16) & 3]
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{variant}{h[17:20]}-{h[20:]}"


def _web_context(email: str | None, path: str) -> dict[str, Any]:
    context: dict[str, Any] = {
        "library": {"name": "analytics.js", "version": "2.11.1"},
        "page": {"path": path},
        "userAgent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15",
    }
    if email is not None:
        context["traits"] = {"email": email}
    return context


def _track(c: int, code: int, a: int, b: Any) -> tuple[str, dict[str, Any]]:
    if code == _VIEWED:
        product = _CATALOG[a]
        return "Product Viewed", {
            "product_id": product[0],
            "sku": product[1],
            "category": product[2],
            "price": product[3] / 100,
        }
    if code == _APP_OPENED:
        return "Application Opened", {}
    if code == _ADDED:
        product = _CATALOG[a]
        return "Product Added", {
            "product_id": product[0],
            "sku": product[1],
            "price": product[3] / 100,
            "quantity": 1,
            "cart_id": f"cart_{c:07d}_{b:05d}",
        }
    order_id = f"ord_{c:07d}_{a:05d}"
    if code == _CHECKOUT:
        return "Checkout Started", {"order_id": order_id, "value": b / 100, "currency": "USD"}
    if code == _ORDER:
        products = [dict(_PRODUCT_JSON[p]) for p in b]
        total = sum(_CATALOG[p][3] for p in b) / 100
        return "Order Completed", {
            "order_id": order_id,
            "total": total,
            "currency": "USD",
            "products": products,
        }
    if code == _REFUND:
        return "Order Refunded", {"order_id": order_id, "total": b / 100, "currency": "USD"}
    ticket_id = f"tkt_{c:07d}_{a:04d}"
    if code == _TICKET_OPENED:
        return "Support Ticket Opened", {"ticket_id": ticket_id}
    if code == _TICKET_CLOSED:
        return "Support Ticket Closed", {"ticket_id": ticket_id}
    raise AssertionError(f"unknown plan code {code}")


def generate_records(
    customers: int,
    events: int,
    *,
    seed: int = 0,
    start_ms: int = DEFAULT_START_MS,
    duration_ms: int = DEFAULT_DURATION_MS,
    anonymous_fraction: float = 0.01,
    out_of_order_fraction: float = 0.01,
    duplicate_fraction: float = 0.005,
    run_entries: int = RUN_ENTRIES,
) -> Iterator[dict[str, Any]]:
    """Yield exactly ``events`` Customer.io records for ``customers`` customers, in arrival order.

    Arrival order is event-time order except for two transport effects Kafka topics really
    show: ``out_of_order_fraction`` of records arrive late, by up to 2 minutes (behind
    records with later timestamps), and ``duplicate_fraction`` of records are re-sent
    (same ``messageId`` / ``event_id``, identical content) up to 5 minutes later.
    Duplicates count towards ``events``. ``anonymous_fraction`` of records are web page
    views by visitors with only an ``anonymousId`` (no customer key).

    The same arguments always yield the same records, on any machine and Python 3.11+.
    ``run_entries`` bounds the plan entries held in memory while sorting (the rest wait
    in temporary files, see :mod:`streamsync.dev.plan_runs`); it changes no record.
    """
    if customers < 1:
        raise ValueError("customers must be at least 1")
    if events < 0:
        raise ValueError("events must not be negative")
    if duration_ms < _DAY:
        raise ValueError("duration_ms must be at least one day")
    for name, fraction in (
        ("anonymous_fraction", anonymous_fraction),
        ("out_of_order_fraction", out_of_order_fraction),
        ("duplicate_fraction", duplicate_fraction),
    ):
        if not 0.0 <= fraction < 1.0:
            raise ValueError(f"{name} must be in [0, 1)")
    if run_entries < 1:
        raise ValueError("run_entries must be at least 1")
    return _generate(
        customers, events, seed, start_ms, duration_ms,
        anonymous_fraction, out_of_order_fraction, duplicate_fraction, run_entries,
    )  # fmt: skip


def _generate(
    customers: int,
    events: int,
    seed: int,
    start_ms: int,
    duration_ms: int,
    anonymous_fraction: float,
    out_of_order_fraction: float,
    duplicate_fraction: float,
    run_entries: int = RUN_ENTRIES,
) -> Iterator[dict[str, Any]]:
    rng = random.Random(seed)
    duplicates = round(events * duplicate_fraction)
    originals = events - duplicates
    anonymous = round(originals * anonymous_fraction)

    # Decided up front because the planner (which events) and the renderer (which
    # context, whether an anonymousId rides along) must agree on it.
    app_users = [rng.random() < 0.6 for _ in range(customers)]
    plan = PlanRuns(run_entries)
    planner = _CustomerPlanner(rng, start_ms, duration_ms)
    events_of: list[_Plan] = []
    for customer, budget in enumerate(_zipf_budgets(rng, customers, originals - anonymous)):
        if budget:
            planner.plan(customer, budget, app_users[customer], events_of)
            plan.extend(events_of)
            events_of.clear()
    r = rng.random
    visitors = max(1, anonymous // 3)
    for _ in range(anonymous):
        plan.append(
            (start_ms + int(r() * duration_ms), -1, _ANONYMOUS, int(r() * visitors), int(r() * 4))
        )

    # Displaced records wait in a heap keyed by arrival time and are released just before
    # the first on-time record whose timestamp reaches that arrival time. Which records,
    # and by how much, is drawn before the plan is read (the draws do not depend on the
    # entries); each one joins the heap when the sorted plan reaches it, which releases
    # them in the same order as a heap filled up front, since a record always arrives
    # after its own timestamp.
    count = plan.count
    late = rng.sample(range(count), round(count * out_of_order_fraction))
    late.sort()
    # (index, delay, whether it is late rather than re-sent), by index, kept on disk.
    delays = [(i, _SEC + int(r() * 119 * _SEC), True) for i in late]
    del late
    for i in sorted(rng.sample(range(count), min(count, duplicates))):
        delays.append((i, 10 * _SEC + int(r() * 290 * _SEC), False))
    delays.sort(key=itemgetter(0))  # stable: a record both late and re-sent keeps both
    waiting = read(spill(delays))
    del delays
    pending: list[tuple[int, int, _Plan]] = []
    upcoming = next(waiting, None)

    renderer = _Renderer(seed, app_users)
    render = renderer.render
    for seq, entry in enumerate(plan.sorted()):
        ts = entry[0]
        displaced = False
        while upcoming is not None and upcoming[0] == seq:
            heapq.heappush(pending, (ts + upcoming[1], seq, entry))
            displaced = displaced or upcoming[2]
            upcoming = next(waiting, None)
        while pending and pending[0][0] <= ts:
            _, j, held = heapq.heappop(pending)
            yield render(held, j)
        if not displaced:
            yield render(entry, seq)
    while pending:
        _, j, held = heapq.heappop(pending)
        yield render(held, j)


#: Labels of :func:`bad_records`, in the order they first appear.
BAD_RECORD_LABELS: Final = (
    "malformed_json",
    "wrong_type_user_id",
    "wrong_type_timestamp",
    "out_of_range_amount",
    "unknown_type",
    "oversized",
    "missing_customer_id",
)
_OVERSIZED_BYTES: Final = 1024 * 1024 + 4096


def bad_records(seed: int, count: int) -> list[tuple[str, bytes]]:
    """``count`` malformed or unusable inputs as ``(label, raw bytes)``, for dead-letter demos.

    Labels cycle through :data:`BAD_RECORD_LABELS`, so any ``count >= 7`` has each one.
    ``missing_customer_id`` is well-formed but has only an ``anonymousId``: ingest counts
    and skips it rather than dead-lettering it, and the demo shows that difference.
    No value contains a newline, so each one is a single JSON-lines line.
    """
    rng = random.Random(f"streamsync-bad-{seed}")
    out: list[tuple[str, bytes]] = []
    for i in range(count):
        label = BAD_RECORD_LABELS[i % len(BAD_RECORD_LABELS)]
        ms = DEFAULT_START_MS + int(rng.random() * DEFAULT_DURATION_MS)
        user = f"cus_{int(rng.random() * 10_000):07d}"
        mid = _uuid(rng.getrandbits(128))
        good: dict[str, Any] = {
            "type": "track",
            "userId": user,
            "event": "Product Viewed",
            "properties": {"product_id": _CATALOG[int(rng.random() * _N_PRODUCTS)][0]},
            "timestamp": format_timestamp(ms),
            "messageId": mid,
        }
        if label == "malformed_json":
            text = orjson.dumps(good)
            cut = 10 + int(rng.random() * (len(text) - 20))
            raw = text[:cut] if rng.random() < 0.5 else text.replace(b'":', b'" ', 1)
        elif label == "wrong_type_user_id":
            raw = orjson.dumps(good | {"userId": {"id": user}})
        elif label == "wrong_type_timestamp":
            raw = orjson.dumps(good | {"timestamp": ms})
        elif label == "out_of_range_amount":
            # A summed amount no engine arithmetic can take (README "Bad input").
            raw = orjson.dumps(good | {"properties": {"product_id": "prod_0000", "price": 1e308}})
        elif label == "unknown_type":
            # Not a documented call type (group and alias are valid, counted as skipped).
            raw = orjson.dumps(good | {"type": rng.choice(("purchase", "merge", "trak"))})
        elif label == "oversized":
            blob = "x" * _OVERSIZED_BYTES
            raw = orjson.dumps(good | {"properties": {"product_id": "prod_0000", "blob": blob}})
        else:
            del good["userId"]
            good["anonymousId"] = _uuid(rng.getrandbits(128))
            raw = orjson.dumps(good)
        out.append((label, raw))
    return out


def mix_bad_records(
    records: Iterable[dict[str, Any]], fraction: float, *, seed: int = 0
) -> Iterator[dict[str, Any] | bytes]:
    """Interleave raw bad records after roughly ``fraction`` of ``records`` (deterministic).

    The bad records are extra: every input record is still yielded, in order.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError("fraction must be in [0, 1]")
    rng = random.Random(f"streamsync-mix-{seed}")
    pool = bad_records(seed, len(BAD_RECORD_LABELS) * 4)
    next_bad = 0
    r = rng.random
    for record in records:
        yield record
        if fraction and r() < fraction:
            yield pool[next_bad % len(pool)][1]
            next_bad += 1


def write_jsonl(
    records: Iterable[Mapping[str, Any] | bytes],
    target: str | os.PathLike[str] | BinaryIO,
    *,
    progress: Callable[[int], None] | None = None,
    progress_every: int = 100_000,
) -> int:
    """Write one JSON document per line to ``target`` and return how many lines.

    ``target`` is a path, ``"-"`` for standard output, or an open binary file. Dicts are
    encoded with orjson; ``bytes`` are written as they are (raw bad records), so malformed
    input survives to the file. Lines are written in batches, because one ``write`` per
    record would cost more than encoding it. ``progress(lines_so_far)`` is called every
    ``progress_every`` lines.
    """
    if isinstance(target, str) and target == "-":
        return _write_lines(records, sys.stdout.buffer, progress, progress_every)
    if isinstance(target, (str, os.PathLike)):
        with Path(target).open("wb") as handle:
            return _write_lines(records, handle, progress, progress_every)
    return _write_lines(records, target, progress, progress_every)


def _write_lines(
    records: Iterable[Mapping[str, Any] | bytes],
    handle: BinaryIO,
    progress: Callable[[int], None] | None,
    progress_every: int,
) -> int:
    dumps = orjson.dumps
    batch: list[bytes] = []
    written = 0
    report_at = progress_every
    for record in records:
        batch.append(record if isinstance(record, bytes) else dumps(record))
        if len(batch) >= 4096:
            batch.append(b"")
            handle.write(b"\n".join(batch))
            written += len(batch) - 1
            batch.clear()
            if progress is not None and written >= report_at:
                progress(written)
                report_at = written + progress_every
    if batch:
        batch.append(b"")
        handle.write(b"\n".join(batch))
        written += len(batch) - 1
    handle.flush()
    if progress is not None:
        progress(written)
    return written
