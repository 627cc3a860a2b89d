"""Reference evaluator ("oracle") for the 13 canonical audiences.

Written straight from ``audiences.md`` (the spec), independently of the engine in
``streamsync.audiences``: brute force and deliberately naive. ``member(t)`` is computed by
scanning the whole (deduplicated, sorted) log of one customer for every instant asked
about; the only cleverness is *which* instants are asked about (``candidate_instants``):
every record timestamp plus every deadline a formula can produce. Membership is piecewise
constant between those instants, so comparing consecutive candidates finds every change.

Also here: ``decode_record``, a small decoder of raw Customer.io dicts written without
``streamsync.ingest``, so the CLI ``replay`` can be compared with the oracle on raw input.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from streamsync.ingest.event import Event

SECOND = 1_000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR

CART_ABANDON = "ACT__CartAbandon__90m"
CHECKOUT_ABANDON = "ACT__CheckoutAbandon__HighIntent"
CART_MED_INTENT = "ACT__CartAbandon__MedIntent"
RECENT_PURCHASERS = "SUP__RecentPurchasers__7d"
VIP = "SUP__VIP__LTV500"
WINBACK = "ACT__Winback__60to120d"
VIEWED_TWICE = "ACT__ViewedTwiceNoPurchase__7d"
TICKET_OPEN = "SUP__SupportTicketOpen"
RECENTLY_CONTACTED = "SUP__RecentlyContacted__7d"
ACTIVE_APP = "ACT__ActiveApp__10m"
SUBSCRIPTION_ACTIVE = "SUP__SubscriptionActive"
DUE_FOR_REORDER = "ACT__DueForReorder__7d"
STARTER_KIT = "ACT__StarterKit__CrossSell__30d"

#: The canonical audiences, in the order of the spec.
AUDIENCES: tuple[str, ...] = (
    CART_ABANDON,
    CHECKOUT_ABANDON,
    CART_MED_INTENT,
    RECENT_PURCHASERS,
    VIP,
    WINBACK,
    VIEWED_TWICE,
    TICKET_OPEN,
    RECENTLY_CONTACTED,
    ACTIVE_APP,
    SUBSCRIPTION_ACTIVE,
    DUE_FOR_REORDER,
    STARTER_KIT,
)

#: Every fixed duration that appears in any audience definition.
DURATIONS: tuple[int, ...] = (
    90 * MINUTE,
    7 * DAY,
    60 * MINUTE,
    3 * DAY,
    60 * DAY,
    120 * DAY,
    10 * MINUTE,
    30 * DAY,
)

ENTER = "enter"
EXIT = "exit"

PRODUCT_VIEWED = "Product Viewed"
PRODUCT_ADDED = "Product Added"
CHECKOUT_STARTED = "Checkout Started"
ORDER_COMPLETED = "Order Completed"
ORDER_REFUNDED = "Order Refunded"
APPLICATION_OPENED = "Application Opened"
TICKET_OPENED = "Support Ticket Opened"
TICKET_CLOSED = "Support Ticket Closed"

Transition = tuple[int, str]
Log = list[Event]


# --------------------------------------------------------------------------- log


def dedup_and_sort(events: Iterable[Event]) -> Log:
    """First arrival of each ``record_id`` wins; then a *stable* sort by timestamp.

    ``record_id`` ``None`` is never a duplicate. Ties keep arrival order ("log order").
    """
    seen: set[str] = set()
    kept: Log = []
    for event in events:
        if event.record_id is not None:
            if event.record_id in seen:
                continue
            seen.add(event.record_id)
        kept.append(event)
    return sorted(kept, key=lambda e: e.timestamp_ms)


def split_by_customer(log: Iterable[Event]) -> dict[str, Log]:
    """Per-customer logs, each keeping the order of ``log``."""
    out: dict[str, Log] = defaultdict(list)
    for event in log:
        out[event.customer_id].append(event)
    return dict(out)


def _is_track(event: Event, name: str) -> bool:
    return event.kind == "track" and event.name == name


def _upto(log: Log, t: int) -> Log:
    return [e for e in log if e.timestamp_ms <= t]


def _latest(past: Log, name: str) -> Event | None:
    """The latest ``name`` track event of ``past`` (last in log order among equal times)."""
    found: Event | None = None
    for event in past:
        if _is_track(event, name):
            found = event
    return found


def _count_in_window(past: Log, name: str, t: int, width: int) -> int:
    """Number of ``name`` track events with timestamp in ``(t - width, t]``."""
    return sum(1 for e in past if _is_track(e, name) and t - width < e.timestamp_ms <= t)


def _amount(event: Event) -> Decimal | None:
    total = event.properties.get("total")
    if isinstance(total, bool) or not isinstance(total, int | float):
        return None
    return Decimal(str(total))


def days_supply(order: Event) -> int | None:
    """Largest int ``days_supply`` among the order's products (bools excluded), or None."""
    products = order.properties.get("products")
    if not isinstance(products, list):
        return None
    values = [
        p["days_supply"]
        for p in products
        if isinstance(p, dict)
        and isinstance(p.get("days_supply"), int)
        and not isinstance(p.get("days_supply"), bool)
    ]
    return max(values) if values else None


def has_starter_kit(order: Event) -> bool:
    products = order.properties.get("products")
    if not isinstance(products, list):
        return False
    return any(isinstance(p, dict) and p.get("sku") == "starter-kit" for p in products)


# --------------------------------------------------------------------------- audiences
# Each function: (the customer's whole sorted log, t) -> member(t).


def _abandon(log: Log, t: int, start_name: str, wait: int, expire: int) -> bool:
    past = _upto(log, t)
    start = _latest(past, start_name)
    if start is None:
        return False
    s = start.timestamp_ms
    if not s + wait <= t < s + expire:
        return False
    return not any(_is_track(e, ORDER_COMPLETED) and s < e.timestamp_ms <= t for e in past)


def cart_abandon(log: Log, t: int) -> bool:  # (1)
    return _abandon(log, t, PRODUCT_ADDED, 90 * MINUTE, 7 * DAY)


def checkout_abandon(log: Log, t: int) -> bool:  # (2)
    return _abandon(log, t, CHECKOUT_STARTED, 60 * MINUTE, 3 * DAY)


def cart_med_intent(log: Log, t: int) -> bool:  # (3)
    return cart_abandon(log, t) and not checkout_abandon(log, t)


def recent_purchasers(log: Log, t: int) -> bool:  # (4)
    return _count_in_window(_upto(log, t), ORDER_COMPLETED, t, 7 * DAY) >= 1


def vip(log: Log, t: int) -> bool:  # (5)
    total = Decimal(0)
    for event in _upto(log, t):
        amount = _amount(event)
        if amount is None:
            continue
        if _is_track(event, ORDER_COMPLETED):
            total += amount
        elif _is_track(event, ORDER_REFUNDED):
            total -= amount
    return total > 500


def winback(log: Log, t: int) -> bool:  # (6)
    past = _upto(log, t)
    last = _latest(past, ORDER_COMPLETED)
    if last is None:
        return False
    o = last.timestamp_ms
    orders = sum(1 for e in past if _is_track(e, ORDER_COMPLETED))
    return o + 60 * DAY <= t < o + 120 * DAY and orders >= 2


def viewed_twice(log: Log, t: int) -> bool:  # (7)
    past = _upto(log, t)
    window = [e for e in past if t - 7 * DAY < e.timestamp_ms <= t]
    if any(_is_track(e, ORDER_COMPLETED) for e in window):
        return False
    if winback(log, t):
        return False
    views = Counter(
        e.properties.get("product_id")
        for e in window
        if _is_track(e, PRODUCT_VIEWED) and e.properties.get("product_id") is not None
    )
    return any(n >= 2 for n in views.values())


def ticket_open(log: Log, t: int) -> bool:  # (8)
    is_open: dict[Any, bool] = {}
    for event in _upto(log, t):
        if _is_track(event, TICKET_OPENED) or _is_track(event, TICKET_CLOSED):
            ticket = event.properties.get("ticket_id")
            if ticket is not None:
                is_open[ticket] = event.name == TICKET_OPENED
    return any(is_open.values())


def recently_contacted(log: Log, t: int) -> bool:  # (9)
    return any(
        e.kind == "webhook" and e.name == "sent" and t - 7 * DAY < e.timestamp_ms <= t
        for e in _upto(log, t)
    )


def active_app(log: Log, t: int) -> bool:  # (10)
    return _count_in_window(_upto(log, t), APPLICATION_OPENED, t, 10 * MINUTE) >= 1


def subscription_active(log: Log, t: int) -> bool:  # (11)
    carried = False
    status: Any = None
    for event in _upto(log, t):
        if event.kind == "identify" and "subscription_status" in event.traits:
            carried = True
            status = event.traits["subscription_status"]
    return carried and status == "active"


def due_for_reorder(log: Log, t: int) -> bool:  # (12)
    last = _latest(_upto(log, t), ORDER_COMPLETED)
    if last is None:
        return False
    supply = days_supply(last)
    if supply is None:
        return False
    o = last.timestamp_ms
    return o + supply * DAY - 7 * DAY <= t < o + supply * DAY


def starter_kit(log: Log, t: int) -> bool:  # (13)
    end: int | None = None  # end of the current 30-day membership
    for event in _upto(log, t):
        if _is_track(event, ORDER_COMPLETED) and has_starter_kit(event):
            k = event.timestamp_ms
            member_at_k = end is not None and k < end
            if not member_at_k:
                end = k + 30 * DAY
    return end is not None and t < end


MEMBER: Mapping[str, Callable[[Log, int], bool]] = {
    CART_ABANDON: cart_abandon,
    CHECKOUT_ABANDON: checkout_abandon,
    CART_MED_INTENT: cart_med_intent,
    RECENT_PURCHASERS: recent_purchasers,
    VIP: vip,
    WINBACK: winback,
    VIEWED_TWICE: viewed_twice,
    TICKET_OPEN: ticket_open,
    RECENTLY_CONTACTED: recently_contacted,
    ACTIVE_APP: active_app,
    SUBSCRIPTION_ACTIVE: subscription_active,
    DUE_FOR_REORDER: due_for_reorder,
    STARTER_KIT: starter_kit,
}
assert tuple(MEMBER) == AUDIENCES


def member(audience: str, log: Log, t: int) -> bool:
    """member(t) of one customer (``log`` = that customer's deduped, sorted records)."""
    return MEMBER[audience](log, t)


def candidate_instants(log: Log) -> list[int]:
    """Every instant at which some membership of this customer can change, sorted."""
    instants: set[int] = set()
    for event in log:
        ts = event.timestamp_ms
        instants.add(ts)
        instants.update(ts + d for d in DURATIONS)
        if _is_track(event, ORDER_COMPLETED):
            supply = days_supply(event)
            if supply is not None:
                instants.add(ts + supply * DAY - 7 * DAY)
                instants.add(ts + supply * DAY)
    return sorted(instants)


def customer_transitions(log: Log, until_ms: int) -> dict[str, list[Transition]]:
    """Transitions of one customer (``log`` already deduped and sorted), per audience."""
    out: dict[str, list[Transition]] = {}
    previous = dict.fromkeys(AUDIENCES, False)
    for t in candidate_instants(log):
        if t > until_ms:
            break
        for audience in AUDIENCES:
            now = member(audience, log, t)
            if now != previous[audience]:
                out.setdefault(audience, []).append((t, ENTER if now else EXIT))
                previous[audience] = now
    return out


def oracle_transitions(
    events: Sequence[Event], until_ms: int
) -> dict[tuple[str, str], list[Transition]]:
    """(audience, customer_id) -> [(at_ms, "enter"|"exit"), ...] in time order.

    ``events`` are in arrival order. Only transitions at or before ``until_ms``; keys with
    no transition are absent.
    """
    result: dict[tuple[str, str], list[Transition]] = {}
    for customer, log in split_by_customer(dedup_and_sort(events)).items():
        for audience, transitions in customer_transitions(log, until_ms).items():
            result[(audience, customer)] = transitions
    return result


# --------------------------------------------------------------------------- identity
# The spec's "Identity" section, brute force: links decided in event-time order (first
# wins), then for every instant the records attributed to each person at that instant.

ANONYMOUS_KIND = "anonymous"
IDENTITY_HORIZON = 30 * DAY


def identity_links(
    log: Log, *, anonymous: bool = True, alias: bool = True, email: bool = False
) -> tuple[dict[str, tuple[str, int]], int]:
    """``(linked id -> (person, link time), conflicting links)`` over a deduped, sorted
    log (``events`` decoded with identity links)."""
    links: dict[str, tuple[str, int]] = {}
    conflicts = 0
    for event in log:
        found: list[str] = []
        if event.kind == "alias":
            if alias:
                found.append(event.linked_id)
        elif event.linked_id and anonymous and event.id_kind != ANONYMOUS_KIND:
            found.append(event.linked_id)
        address = event.identifiers.get("email")
        if email and event.kind == "identify" and address and address != event.customer_id:
            found.append(address)
        for xid in found:
            if xid not in links:
                links[xid] = (event.customer_id, event.timestamp_ms)
            elif links[xid][0] != event.customer_id:
                conflicts += 1
    return links, conflicts


def identity_transitions(
    events: Sequence[Event],
    until_ms: int,
    *,
    anonymous: bool = True,
    alias: bool = True,
    email: bool = False,
    horizon_ms: int = IDENTITY_HORIZON,
) -> dict[tuple[str, str], list[Transition]]:
    """Like :func:`oracle_transitions`, with identity attribution: at ``t`` a person's
    records are their own at or before ``t`` plus, for every id linked to them by a link
    at or before ``t``, that id's records at or before ``t``, except those older than
    ``horizon_ms`` at the link (held too long, dropped). Ids never linked give
    nothing."""
    log = dedup_and_sort(events)
    links, _ = identity_links(log, anonymous=anonymous, alias=alias, email=email)
    own: dict[str, list[tuple[int, Event]]] = defaultdict(list)
    linked: dict[str, list[tuple[int, int, Event]]] = defaultdict(list)  # (link, order, e)
    for order, event in enumerate(log):
        if event.kind == "alias":
            continue
        if event.id_kind == ANONYMOUS_KIND or (email and event.id_kind == "email"):
            link = links.get(event.customer_id)
            if link is None or event.timestamp_ms <= link[1] - horizon_ms:
                continue
            linked[link[0]].append((link[1], order, event))
        else:
            own[event.customer_id].append((order, event))
    result: dict[tuple[str, str], list[Transition]] = {}
    for person in set(own) | set(linked):
        mine = own.get(person, [])
        theirs = linked.get(person, [])
        every = [e for _, e in sorted([*mine, *((o, e) for _, o, e in theirs)], key=_first)]
        instants = set(candidate_instants(sorted(every, key=lambda e: e.timestamp_ms)))
        instants.update(at for at, _, _ in theirs)
        previous = dict.fromkeys(AUDIENCES, False)
        for t in sorted(instants):
            if t > until_ms:
                break
            attributed = [(o, e) for o, e in mine] + [(o, e) for at, o, e in theirs if at <= t]
            at_t = [e for _, e in sorted(attributed, key=_first)]
            for audience in AUDIENCES:
                now = member(audience, at_t, t)
                if now != previous[audience]:
                    result.setdefault((audience, person), []).append((t, ENTER if now else EXIT))
                    previous[audience] = now
    return result


def _first(pair: tuple[int, Event]) -> int:
    return pair[0]


# --------------------------------------------------------------------------- sticky with an exit
# Not canonical: audience (13) with an exit, once for each ``exit_during_sticky`` choice.
# A starter-kit order at ``k`` at which the exit does not hold starts a 30-day period
# ``[k, k + 30d)``; a further kit inside the period does not extend it. The exit is "an
# app open in the last 10 minutes, or an abandoned cart" (audiences (10) or (1)). With
# ``leave`` the first instant in the period at which the exit holds ends the period (it
# does not resume when the exit stops holding); with ``stay`` the exit only keeps a
# customer from entering.

STARTER_KIT_EXIT_LEAVES = "ACT__StarterKit__ExitLeaves__30d"
STARTER_KIT_EXIT_STAYS = "ACT__StarterKit__ExitStays__30d"

#: audience -> whether an exit ends a sticky period
STICKY_WITH_EXIT: Mapping[str, bool] = {
    STARTER_KIT_EXIT_LEAVES: True,
    STARTER_KIT_EXIT_STAYS: False,
}


def _starter_kit_at(log: Log, t: int) -> bool:
    return any(
        _is_track(e, ORDER_COMPLETED) and e.timestamp_ms == t and has_starter_kit(e) for e in log
    )


def _engaged(log: Log, t: int) -> bool:
    return active_app(log, t) or cart_abandon(log, t)


def sticky_with_exit_transitions(log: Log, until_ms: int, exit_ends: bool) -> list[Transition]:
    """Transitions of one customer (``log`` deduped and sorted) for one of the audiences
    above, walking the candidate instants once: the exit and the trigger only change
    there, and a period ends 30 days after a record, which is a candidate too."""
    out: list[Transition] = []
    end: int | None = None
    was = False
    for t in candidate_instants(log):
        if t > until_ms:
            break
        in_period = end is not None and t < end
        if in_period and exit_ends and _engaged(log, t):
            in_period = False
        if not in_period:
            end = t + 30 * DAY if _starter_kit_at(log, t) and not _engaged(log, t) else None
        now = end is not None
        if now != was:
            out.append((t, ENTER if now else EXIT))
            was = now
    return out


def oracle_sticky_with_exit(
    events: Sequence[Event], until_ms: int
) -> dict[tuple[str, str], list[Transition]]:
    """Like :func:`oracle_transitions`, for the audiences of :data:`STICKY_WITH_EXIT`."""
    result: dict[tuple[str, str], list[Transition]] = {}
    for customer, log in split_by_customer(dedup_and_sort(events)).items():
        for audience, exit_ends in STICKY_WITH_EXIT.items():
            transitions = sticky_with_exit_transitions(log, until_ms, exit_ends)
            if transitions:
                result[(audience, customer)] = transitions
    return result


# --------------------------------------------------------------------------- raw decoding

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def iso_to_ms(text: str) -> int:
    """Epoch ms of an ISO 8601 / RFC 3339 timestamp (naive = UTC; sub-ms truncated)."""
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def ms_to_iso(epoch_ms: int) -> str:
    """``2026-01-01T00:00:00.000Z`` for an epoch-ms instant."""
    moment = _EPOCH + timedelta(milliseconds=epoch_ms)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{epoch_ms % 1000:03d}Z"


def _dict(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, dict) else {}


def _content_id(raw: Mapping[str, Any]) -> str:
    canonical = json.dumps(raw, sort_keys=True, separators=(",", ":"))
    return "content:" + hashlib.sha256(canonical.encode()).hexdigest()


def decode_record(raw: Mapping[str, Any]) -> Event | None:
    """A raw Customer.io record (Data Pipelines or reporting webhook) as an Event.

    None when the record has no customer key: ``userId``, or for a webhook the first of
    ``identifiers.id``, ``identifiers.email``, ``identifiers.cio_id`` and the deprecated
    ``customer_id`` that is set (the default identity policy). A record without an id
    gets one from its content, so identical copies are duplicates.
    """
    if "metric" in raw or "event_id" in raw:
        data = _dict(raw.get("data"))
        ids = _dict(data.get("identifiers"))
        keys = [ids.get("id"), ids.get("email"), ids.get("cio_id"), data.get("customer_id")]
        kinds = ["id", "email", "cio_id", "customer_id"]
        found = [(k, kind) for k, kind in zip(keys, kinds, strict=True) if k not in (None, "")]
        if not found:
            return None
        customer, id_kind = found[0]
        seconds = Decimal(str(raw["timestamp"]))
        identifiers = {
            k: str(v) for k, v in _dict(data.get("identifiers")).items() if v is not None
        }
        return Event(
            customer_id=str(customer),
            kind="webhook",
            name=str(raw.get("metric")),
            timestamp_ms=int(seconds * 1000),
            record_id=raw.get("event_id") or _content_id(raw),
            properties={"object_type": raw.get("object_type")},
            identifiers=identifiers,
            id_kind=id_kind,
        )
    customer = raw.get("userId")
    if customer is None or customer == "":
        return None
    kind = str(raw.get("type"))
    if kind == "track":
        name = str(raw.get("event"))
    elif kind == "identify":
        name = "identify"
    else:
        name = str(raw.get("name") or "")
    traits = _dict(raw.get("traits"))
    context_traits = _dict(_dict(raw.get("context")).get("traits"))
    identifiers = {
        k: str(v)
        for k, v in {**context_traits, **traits}.items()
        if k in ("email", "phone", "cio_id") and v is not None
    }
    return Event(
        customer_id=str(customer),
        kind=kind,
        name=name,
        timestamp_ms=iso_to_ms(str(raw["timestamp"])),
        record_id=raw.get("messageId") or _content_id(raw),
        properties=_dict(raw.get("properties")),
        traits=traits if kind == "identify" else {},
        identifiers=identifiers,
    )


def encode_record(event: Event) -> dict[str, Any]:
    """The raw Customer.io dict for an Event (inverse of ``decode_record`` for tests).

    Webhooks carry whole epoch seconds, so a webhook's ``timestamp_ms`` must be a
    multiple of 1000.
    """
    if event.kind == "webhook":
        if event.timestamp_ms % 1000:
            raise ValueError("webhook timestamps are whole seconds")
        raw: dict[str, Any] = {
            "event_id": event.record_id,
            "object_type": event.properties.get("object_type", "email"),
            "metric": event.name,
            "timestamp": event.timestamp_ms // 1000,
            "data": {
                "customer_id": event.customer_id,
                "identifiers": {"id": event.customer_id},
            },
        }
        if event.record_id is None:
            del raw["event_id"]
        return raw
    raw = {
        "type": event.kind,
        "userId": event.customer_id,
        "timestamp": ms_to_iso(event.timestamp_ms),
        "context": {"traits": {}},
    }
    if event.record_id is not None:
        raw["messageId"] = event.record_id
    if event.kind == "track":
        raw["event"] = event.name
        raw["properties"] = dict(event.properties)
    elif event.kind == "identify":
        raw["traits"] = dict(event.traits)
    else:
        raw["name"] = event.name
        raw["properties"] = dict(event.properties)
    return raw
