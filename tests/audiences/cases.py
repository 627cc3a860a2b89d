"""Hand-written audience scenarios with expected transitions worked out from the spec.

Every expectation below was written by hand from ``audiences.md`` (not computed). Times are
offsets in ms from ``T0`` (2026-01-01T00:00:00Z) built from ``S``/``M``/``H``/``D``; events
are listed in *arrival* order. ``Case.expected`` maps (audience, customer) to the exact list
of transitions the case is about: ``[]`` means "no transition at all".

Importable by other tests (engine, CLI replay) via ``CASES``.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from streamsync.ingest.event import Event
from tests.audiences.oracle import (
    ACTIVE_APP,
    CART_ABANDON,
    CART_MED_INTENT,
    CHECKOUT_ABANDON,
    DAY,
    DUE_FOR_REORDER,
    ENTER,
    EXIT,
    HOUR,
    MINUTE,
    RECENT_PURCHASERS,
    RECENTLY_CONTACTED,
    SECOND,
    STARTER_KIT,
    SUBSCRIPTION_ACTIVE,
    TICKET_OPEN,
    VIEWED_TWICE,
    VIP,
    WINBACK,
    iso_to_ms,
)

S, M, H, D = SECOND, MINUTE, HOUR, DAY
T0 = iso_to_ms("2026-01-01T00:00:00Z")

Transition = tuple[int, str]

_ids = itertools.count(1)
_AUTO = "<auto>"


def _ts(at: int | str) -> int:
    return iso_to_ms(at) if isinstance(at, str) else T0 + at


def _rid(rid: str | None, prefix: str) -> str | None:
    return f"{prefix}{next(_ids)}" if rid == _AUTO else rid


def ev(
    customer: str, name: str, at: int | str = 0, *, rid: str | None = _AUTO, **props: Any
) -> Event:
    """A track event ``name`` at ``at`` (ms offset from T0, or an ISO string)."""
    return Event(customer, "track", name, _ts(at), _rid(rid, "m"), properties=props)


def ident(customer: str, at: int | str = 0, *, rid: str | None = _AUTO, **traits: Any) -> Event:
    """An identify call carrying ``traits``."""
    return Event(customer, "identify", "identify", _ts(at), _rid(rid, "m"), traits=traits)


def hook(
    customer: str,
    metric: str = "sent",
    at: int | str = 0,
    *,
    object_type: str = "email",
    rid: str | None = _AUTO,
) -> Event:
    """A reporting webhook (metric ``sent``, ``delivered``, ...). Keep ``at`` whole seconds."""
    return Event(
        customer,
        "webhook",
        metric,
        _ts(at),
        _rid(rid, "w"),
        properties={"object_type": object_type},
    )


def page(customer: str, name: str, at: int | str = 0, **props: Any) -> Event:
    return Event(customer, "page", name, _ts(at), _rid(_AUTO, "m"), properties=props)


def dup(event: Event) -> Event:
    """An exact re-send of ``event`` (same record_id)."""
    return copy.deepcopy(event)


def order(
    customer: str,
    at: int | str,
    total: Any = 10,
    *products: dict[str, Any],
    rid: str | None = _AUTO,
) -> Event:
    """An Order Completed (one plain product unless ``products`` are given)."""
    props: dict[str, Any] = {"order_id": f"o{next(_ids)}", "total": total}
    props["products"] = list(products) or [{"sku": "sku-a", "category": "misc"}]
    return ev(customer, "Order Completed", at, rid=rid, **props)


def kit(customer: str, at: int | str) -> Event:
    return order(customer, at, 49, {"sku": "starter-kit", "category": "kits"})


@dataclass(frozen=True)
class Case:
    name: str
    events: list[Event]
    until_ms: int
    expected: dict[tuple[str, str], list[Transition]]


def case(
    name: str,
    events: Sequence[Event],
    until: int,
    expect: Mapping[str | tuple[str, str], Sequence[Transition]],
) -> Case:
    """``until`` and the expected times are offsets from T0; a plain audience key means c1."""
    expected: dict[tuple[str, str], list[Transition]] = {}
    for key, transitions in expect.items():
        full = (key, "c1") if isinstance(key, str) else key
        expected[full] = [(T0 + at, op) for at, op in transitions]
    return Case(name, list(events), T0 + until, expected)


E, X = ENTER, EXIT
C = "c1"


def _add(at: int, customer: str = C) -> Event:
    return ev(customer, "Product Added", at, product_id="p1", cart_id="k1")


def _view(at: int, product_id: Any = "p1", *, rid: str | None = _AUTO) -> Event:
    return ev(C, "Product Viewed", at, rid=rid, product_id=product_id)


def _ticket(name: str, at: int, ticket_id: Any) -> Event:
    return ev(C, f"Support Ticket {name}", at, ticket_id=ticket_id)


def _supply(*days: Any) -> list[dict[str, Any]]:
    return [{"sku": f"sku-{i}", "category": "refill", "days_supply": d} for i, d in enumerate(days)]


_view_dup = _view(0)
_order_dup = order(C, 0, 300)
_late_view_dup = _view(0)
_ltv_dup = order(C, 0, 300)

CASES: list[Case] = [
    # ---------------------------------------------------------------- (1) cart abandon
    case(
        "cart: enters exactly at +90m, expires exactly at +7d",
        [_add(0)],
        8 * D,
        {CART_ABANDON: [(90 * M, E), (7 * D, X)], CHECKOUT_ABANDON: []},
    ),
    case("cart: nothing before the deadline", [_add(0)], 90 * M - 1, {CART_ABANDON: []}),
    case("cart: until exactly at the deadline", [_add(0)], 90 * M, {CART_ABANDON: [(90 * M, E)]}),
    case(
        "cart: a second add before 90m resets the clock",
        [_add(0), _add(60 * M)],
        8 * D,
        {CART_ABANDON: [(150 * M, E), (60 * M + 7 * D, X)]},
    ),
    case(
        "cart: an add while a member exits at once and re-enters 90m later",
        [_add(0), _add(100 * M)],
        8 * D,
        {CART_ABANDON: [(90 * M, E), (100 * M, X), (190 * M, E), (100 * M + 7 * D, X)]},
    ),
    case(
        "cart: an order at the same millisecond as the add does not count",
        [_add(0), order(C, 0)],
        8 * D,
        {CART_ABANDON: [(90 * M, E), (7 * D, X)], RECENT_PURCHASERS: [(0, E), (7 * D, X)]},
    ),
    case(
        "cart: same-millisecond order logged before the add does not count either",
        [order(C, 0), _add(0)],
        8 * D,
        {CART_ABANDON: [(90 * M, E), (7 * D, X)]},
    ),
    case("cart: an order 1 ms after the add", [_add(0), order(C, 1)], 8 * D, {CART_ABANDON: []}),
    case(
        "cart: an order exactly at +90m prevents entry",
        [_add(0), order(C, 90 * M)],
        8 * D,
        {CART_ABANDON: []},
    ),
    case(
        "cart: an order after entering exits at once; a new add starts over",
        [_add(0), order(C, 2 * H), _add(3 * H)],
        8 * D,
        {CART_ABANDON: [(90 * M, E), (2 * H, X), (3 * H + 90 * M, E), (3 * H + 7 * D, X)]},
    ),
    case(
        "cart: an order before the add does not count",
        [order(C, 0), _add(1)],
        8 * D,
        {CART_ABANDON: [(1 + 90 * M, E), (1 + 7 * D, X)]},
    ),
    case(
        "cart: a late-arriving add (within lateness) is placed before the order",
        [order(C, 2 * M), _add(0)],
        8 * D,
        {CART_ABANDON: []},
    ),
    # ------------------------------------------------------- (2) checkout, (3) med intent
    case(
        "checkout: +60m to +3d; med intent only once the checkout audience expires",
        [ev(C, "Checkout Started", 0, value=50), _add(0)],
        8 * D,
        {
            CHECKOUT_ABANDON: [(60 * M, E), (3 * D, X)],
            CART_ABANDON: [(90 * M, E), (7 * D, X)],
            CART_MED_INTENT: [(3 * D, E), (7 * D, X)],
        },
    ),
    case(
        "checkout: an order 1 ms after the 60m deadline exits",
        [ev(C, "Checkout Started", 0, order_id="o-x", value=50), order(C, 60 * M + 1)],
        8 * D,
        {CHECKOUT_ABANDON: [(60 * M, E), (60 * M + 1, X)]},
    ),
    case(
        "checkout: both abandon audiences enter together, so med intent waits",
        [_add(0), ev(C, "Checkout Started", 30 * M, value=50)],
        8 * D,
        {
            CART_ABANDON: [(90 * M, E), (7 * D, X)],
            CHECKOUT_ABANDON: [(90 * M, E), (30 * M + 3 * D, X)],
            CART_MED_INTENT: [(30 * M + 3 * D, E), (7 * D, X)],
        },
    ),
    case(
        "med intent: cart member with no checkout at all",
        [_add(0)],
        8 * D,
        {CART_MED_INTENT: [(90 * M, E), (7 * D, X)]},
    ),
    # ------------------------------------------------------------ (4) recent purchasers
    case(
        "recent purchasers: orders exactly 7d apart keep membership continuous",
        [order(C, 0), order(C, 7 * D)],
        20 * D,
        {RECENT_PURCHASERS: [(0, E), (14 * D, X)]},
    ),
    case(
        "recent purchasers: orders 7d + 1 ms apart leave a 1 ms gap",
        [order(C, 0), order(C, 7 * D + 1)],
        20 * D,
        {RECENT_PURCHASERS: [(0, E), (7 * D, X), (7 * D + 1, E), (14 * D + 1, X)]},
    ),
    # --------------------------------------------------------------------- (5) VIP
    case(
        "vip: exactly 500 is not over 500",
        [order(C, 0, 300), order(C, 1 * H, 200), order(C, 2 * H, 0.01)],
        1 * D,
        {VIP: [(2 * H, E)]},
    ),
    case(
        "vip: refunds cross the line both ways",
        [
            order(C, 0, 600),
            ev(C, "Order Refunded", 1 * D, order_id="o1", total=100),
            order(C, 2 * D, 129.99),
            ev(C, "Order Refunded", 3 * D, order_id="o2", total=129.99),
        ],
        4 * D,
        {VIP: [(0, E), (1 * D, X), (2 * D, E), (3 * D, X)]},
    ),
    case(
        "vip: exact decimal sum (0.1 + 499.8 + 0.1 is 500, not 500.00000000000006)",
        [order(C, 0, 0.1), order(C, 1 * H, 499.8), order(C, 2 * H, 0.1), order(C, 3 * H, 0.01)],
        1 * D,
        {VIP: [(3 * H, E)]},
    ),
    case(
        "vip: non-numeric and boolean totals are ignored (the orders still count)",
        [order(C, 0, "600"), order(C, 1 * H, True), order(C, 2 * H, 500)],
        8 * D,
        {VIP: [], RECENT_PURCHASERS: [(0, E), (2 * H + 7 * D, X)]},
    ),
    # ----------------------------------------------------------------- (6) winback
    case("winback: a single order never enters", [order(C, 0)], 200 * D, {WINBACK: []}),
    case(
        "winback: two orders, window counted from the latest",
        [order(C, 0), order(C, 1 * D)],
        200 * D,
        {WINBACK: [(61 * D, E), (121 * D, X)]},
    ),
    case(
        "winback: a third order inside the window exits and restarts the window",
        [order(C, 0), order(C, 1 * D), order(C, 70 * D)],
        300 * D,
        {WINBACK: [(61 * D, E), (70 * D, X), (130 * D, E), (190 * D, X)]},
    ),
    case(
        "winback: two distinct orders at the same millisecond count as two",
        [order(C, 0), order(C, 0)],
        200 * D,
        {WINBACK: [(60 * D, E), (120 * D, X)]},
    ),
    case(
        "winback: a re-sent order (same id) counts once",
        [_order_dup, dup(_order_dup)],
        200 * D,
        {WINBACK: []},
    ),
    # ------------------------------------------------------------ (7) viewed twice
    case(
        "viewed twice: enters at the second view, exits when the first leaves 7d",
        [_view(0), _view(1 * H)],
        10 * D,
        {VIEWED_TWICE: [(1 * H, E), (7 * D, X)]},
    ),
    case(
        "viewed twice: two different products do not count",
        [_view(0, "p1"), _view(1 * H, "p2")],
        10 * D,
        {VIEWED_TWICE: []},
    ),
    case(
        "viewed twice: an order in the window blocks until it leaves the window",
        [order(C, 0), _view(1 * D), _view(1 * D + 1 * H)],
        10 * D,
        {VIEWED_TWICE: [(7 * D, E), (8 * D, X)], RECENT_PURCHASERS: [(0, E), (7 * D, X)]},
    ),
    case(
        "viewed twice: an order after the views exits at once",
        [_view(0), _view(1 * H), order(C, 2 * H)],
        20 * D,
        {VIEWED_TWICE: [(1 * H, E), (2 * H, X)]},
    ),
    case(
        "viewed twice: views without a product_id are ignored",
        [ev(C, "Product Viewed", 0), ev(C, "Product Viewed", 1 * H), _view(2 * H, None)],
        10 * D,
        {VIEWED_TWICE: []},
    ),
    case(
        "viewed twice: three views, exits when the second leaves 7d",
        [_view(0), _view(1 * D), _view(2 * D)],
        10 * D,
        {VIEWED_TWICE: [(1 * D, E), (8 * D, X)]},
    ),
    case(
        "viewed twice: suppressed while a winback member, enters when winback ends",
        [
            order(C, 0),
            order(C, 1 * D),
            _view(65 * D),
            _view(65 * D + 1 * M),
            _view(119 * D),
            _view(119 * D + 1 * M),
        ],
        200 * D,
        {WINBACK: [(61 * D, E), (121 * D, X)], VIEWED_TWICE: [(121 * D, E), (126 * D, X)]},
    ),
    case(
        "viewed twice: a page named like the event is not a Product Viewed",
        [
            page(C, "Product Viewed", 0, product_id="p1"),
            page(C, "Product Viewed", 1, product_id="p1"),
        ],
        10 * D,
        {VIEWED_TWICE: []},
    ),
    # ----------------------------------------------------------------- (8) tickets
    case(
        "ticket: closed then reopened",
        [
            _ticket("Opened", 0, "t1"),
            _ticket("Closed", 1 * H, "t1"),
            _ticket("Opened", 2 * H, "t1"),
        ],
        1 * D,
        {TICKET_OPEN: [(0, E), (1 * H, X), (2 * H, E)]},
    ),
    case(
        "ticket: two tickets, one closed keeps the member in",
        [
            _ticket("Opened", 0, "t1"),
            _ticket("Opened", 1 * H, "t2"),
            _ticket("Closed", 2 * H, "t1"),
            _ticket("Closed", 3 * H, "t2"),
        ],
        1 * D,
        {TICKET_OPEN: [(0, E), (3 * H, X)]},
    ),
    case(
        "ticket: opened and closed at the same millisecond apply in log order",
        [
            _ticket("Opened", 0, "t1"),
            _ticket("Closed", 0, "t1"),
            _ticket("Closed", 1 * H, "t2"),
            _ticket("Opened", 1 * H, "t2"),
        ],
        1 * D,
        {TICKET_OPEN: [(1 * H, E)]},
    ),
    case(
        "ticket: a close without an open, other ids and missing ids",
        [
            _ticket("Closed", 0, "t1"),
            _ticket("Opened", 1 * H, "t2"),
            _ticket("Closed", 2 * H, "t3"),
            ev(C, "Support Ticket Opened", 3 * H),
            ev(C, "Support Ticket Closed", 4 * H),
        ],
        1 * D,
        {TICKET_OPEN: [(1 * H, E)]},
    ),
    # ------------------------------------------------------- (9) recently contacted
    case(
        "contacted: only a webhook 'sent' counts (not delivered, not a track 'sent')",
        [hook(C, "delivered", 0), ev(C, "sent", 1 * H), hook(C, "sent", 2 * H, object_type="sms")],
        10 * D,
        {RECENTLY_CONTACTED: [(2 * H, E), (2 * H + 7 * D, X)]},
    ),
    case(
        "contacted: sends exactly 7d apart keep membership continuous",
        [hook(C, "sent", 0), hook(C, "sent", 7 * D, object_type="push")],
        20 * D,
        {RECENTLY_CONTACTED: [(0, E), (14 * D, X)]},
    ),
    # ------------------------------------------------------------- (10) active app
    case(
        "active app: 10m apart is continuous, 10m + 1 ms leaves a gap",
        [
            ev(C, "Application Opened", 0),
            ev(C, "Application Opened", 10 * M),
            ev(C, "Application Opened", 20 * M + 1),
        ],
        1 * D,
        {ACTIVE_APP: [(0, E), (20 * M, X), (20 * M + 1, E), (30 * M + 1, X)]},
    ),
    # --------------------------------------------------------- (11) subscription
    case(
        "subscription: the trait toggles; identifies without it change nothing",
        [
            ident(C, 0, subscription_status="active"),
            ident(C, 1 * H, email="a@example.com"),
            ident(C, 2 * H, subscription_status="cancelled"),
            ident(C, 3 * H, subscription_status="active", email="a@example.com"),
            ident(C, 4 * H, phone="+15550100"),
            ident(C, 5 * H, subscription_status=None),
        ],
        1 * D,
        {SUBSCRIPTION_ACTIVE: [(0, E), (2 * H, X), (3 * H, E), (5 * H, X)]},
    ),
    case(
        "subscription: same-millisecond identifies apply in log order",
        [
            ident(C, 0, subscription_status="cancelled"),
            ident(C, 0, subscription_status="active"),
            ident(C, 1 * H, subscription_status="active"),
            ident(C, 1 * H, subscription_status="paused"),
        ],
        1 * D,
        {SUBSCRIPTION_ACTIVE: [(0, E), (1 * H, X)]},
    ),
    # ------------------------------------------------------------ (12) reorder
    case(
        "reorder: the largest days_supply of the order sets the band",
        [order(C, 0, 40, *_supply(14, 30))],
        40 * D,
        {DUE_FOR_REORDER: [(23 * D, E), (30 * D, X)]},
    ),
    case(
        "reorder: a later order without days_supply ends the band",
        [order(C, 0, 40, *_supply(30)), order(C, 25 * D, 40)],
        40 * D,
        {DUE_FOR_REORDER: [(23 * D, E), (25 * D, X)]},
    ),
    case(
        "reorder: the latest order lacking days_supply means never due",
        [order(C, 0, 40, *_supply(30)), order(C, 10 * D, 40)],
        40 * D,
        {DUE_FOR_REORDER: []},
    ),
    case(
        "reorder: a supply shorter than 7d is due from the order itself",
        [order(C, 0, 40, *_supply(5))],
        40 * D,
        {DUE_FOR_REORDER: [(0, E), (5 * D, X)]},
    ),
    case(
        "reorder: boolean and string days_supply are ignored",
        [order(C, 0, 40, *_supply(True, "30")), order(C, 1 * D, 40, *_supply(True, 10))],
        40 * D,
        {DUE_FOR_REORDER: [(4 * D, E), (11 * D, X)]},
    ),
    case(
        "reorder: a reorder inside the band moves the band",
        [order(C, 0, 40, *_supply(30)), order(C, 24 * D, 40, *_supply(30))],
        80 * D,
        {DUE_FOR_REORDER: [(23 * D, E), (24 * D, X), (47 * D, E), (54 * D, X)]},
    ),
    # --------------------------------------------------------- (13) starter kit
    case(
        "starter kit: bought again inside 30d (ignored) and after (new membership)",
        [kit(C, 0), kit(C, 10 * D), kit(C, 40 * D)],
        100 * D,
        {STARTER_KIT: [(0, E), (30 * D, X), (40 * D, E), (70 * D, X)]},
    ),
    case(
        "starter kit: bought again exactly at 30d continues without a gap",
        [kit(C, 0), kit(C, 30 * D)],
        100 * D,
        {STARTER_KIT: [(0, E), (60 * D, X)]},
    ),
    case(
        "starter kit: a repurchase at 29d does not extend; one at 31d re-enters",
        [kit(C, 0), kit(C, 29 * D), kit(C, 31 * D)],
        100 * D,
        {STARTER_KIT: [(0, E), (30 * D, X), (31 * D, E), (61 * D, X)]},
    ),
    case(
        "starter kit: other skus and refunds do not matter",
        [
            order(C, 0, 10, {"sku": "sku-a", "category": "kits"}),
            kit(C, 1 * D),
            ev(C, "Order Refunded", 2 * D, order_id="o-k", total=49),
        ],
        100 * D,
        {STARTER_KIT: [(1 * D, E), (31 * D, X)]},
    ),
    # --------------------------------------------------------------- duplicates
    case(
        "duplicates: a re-sent view counts once",
        [_view_dup, dup(_view_dup)],
        10 * D,
        {VIEWED_TWICE: []},
    ),
    case(
        "duplicates: records without an id are never duplicates",
        [_view(0, rid=None), _view(0, rid=None)],
        10 * D,
        {VIEWED_TWICE: [(0, E), (7 * D, X)]},
    ),
    case(
        "duplicates: a re-sent view arriving a day later is still ignored",
        [_late_view_dup, ev(C, "Application Opened", 1 * D), dup(_late_view_dup)],
        10 * D,
        {VIEWED_TWICE: [], ACTIVE_APP: [(1 * D, E), (1 * D + 10 * M, X)]},
    ),
    case(
        "duplicates: a re-sent order counts once toward LTV",
        [_ltv_dup, dup(_ltv_dup), order(C, 1 * H, 150)],
        8 * D,
        {VIP: [], RECENT_PURCHASERS: [(0, E), (1 * H + 7 * D, X)]},
    ),
    # ------------------------------------------------------------- mixed / ties
    case(
        "customers are independent",
        [_add(0, "c1"), _add(0, "c2"), order("c2", 1 * M)],
        8 * D,
        {
            (CART_ABANDON, "c1"): [(90 * M, E), (7 * D, X)],
            (CART_ABANDON, "c2"): [],
            (RECENT_PURCHASERS, "c1"): [],
            (RECENT_PURCHASERS, "c2"): [(1 * M, E), (1 * M + 7 * D, X)],
        },
    ),
    case(
        "ties: many audiences triggered at the same millisecond",
        [
            _add(0),
            ev(C, "Checkout Started", 0, value=20),
            ev(C, "Application Opened", 0),
            ident(C, 0, subscription_status="active"),
            hook(C, "sent", 0),
            _ticket("Opened", 0, "t9"),
        ],
        8 * D,
        {
            ACTIVE_APP: [(0, E), (10 * M, X)],
            SUBSCRIPTION_ACTIVE: [(0, E)],
            RECENTLY_CONTACTED: [(0, E), (7 * D, X)],
            TICKET_OPEN: [(0, E)],
            CART_ABANDON: [(90 * M, E), (7 * D, X)],
            CHECKOUT_ABANDON: [(60 * M, E), (3 * D, X)],
            CART_MED_INTENT: [(3 * D, E), (7 * D, X)],
        },
    ),
]

_names = [c.name for c in CASES]
assert len(_names) == len(set(_names)), "case names must be unique"
