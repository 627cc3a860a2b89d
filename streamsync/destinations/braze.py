"""Braze through ``POST /users/track``.

Membership is written, per customer and batch, as one attributes object:

* an array custom attribute (``array_attribute``, default ``streamsync_audiences``)
  updated with ``{"add": [...], "remove": [...]}``: streamsync adds and removes only the
  audience names it manages, so values others put in a shared attribute stay;
* optionally a boolean attribute per audience (``audience_options.<A>.boolean_attribute``);
* optionally a custom event on enter (``audience_options.<A>.enter_event``) for Canvas
  triggers. Braze does not deduplicate events, so after a retry of a request whose
  answer was lost the event can arrive twice; its properties carry the delta's ``seq``.

Identifiers, first available wins (``identifiers.order``): ``external_id`` (the
customer's own id), ``user_alias`` (``alias_label`` with the value of
``alias_source``), ``email``, ``phone``. A delta with none of them is unmatched
(counted per audience, dead-lettered).

Limits enforced here, from braze.com/docs/api/endpoints/user_data/post_user_track and
braze.com/docs/api/api_limits: at most 75 attribute, 75 event and 75 purchase objects
per request; 3,000 requests per 3 seconds for /users/track (the rate-limit default);
``X-RateLimit-Reset`` is a UTC epoch time in seconds. Partial success (2xx with
``errors: [{type, input_array, index}]``) is mapped back to the changes behind each
named object; everything else in the request was applied.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

import orjson
from pydantic import Field, SecretStr, model_validator

from streamsync.credentials import Credentials
from streamsync.deltas.record import MembershipDelta, format_rfc3339_ms
from streamsync.destinations.client import (
    Change,
    DestinationClient,
    Request,
    Response,
    raise_for_status,
)
from streamsync.destinations.config import DestinationConfig, RateLimit, _Model, duplicate_names
from streamsync.destinations.errors import Rejection
from streamsync.destinations.identifiers import identifier

#: Objects of each kind per /users/track request (post_user_track: "up to 75").
MAX_OBJECTS_PER_REQUEST = 75
#: /users/track: 3,000 requests per 3 seconds per workspace (api_limits, since Oct 2024).
DEFAULT_RATE_LIMIT = RateLimit(limit=3000, window_s=3.0)
#: Partner cohort endpoints: 250,000 requests per hour (the newer pt-BR copy of
#: cohort_import; the older English one names no limit beyond 1,000 ids per request).
DEFAULT_COHORT_RATE_LIMIT = RateLimit(limit=250_000, window_s=3600.0)

IdentifierKind = Literal["external_id", "user_alias", "email", "phone"]
ValueSource = Literal["at", "seq", "version", "customer_id", "email", "phone", "cio_id"]
_DEFAULT_ORDER: tuple[IdentifierKind, ...] = ("external_id", "email", "phone")
AttributeType = Literal["string", "boolean", "integer", "float", "time"]


class BrazeCohorts(_Model):
    """The partner cohort import API (hidden Braze page ``partners/isv_partners/cohort_import``):
    the partner key comes from Braze to partners only."""

    partner_name: str = Field(min_length=1)
    partner_key: Credentials
    cohort_ids: dict[str, str] = Field(
        default_factory=dict, description="audience -> cohort_id (default: the audience name)"
    )


class BrazeAudienceOptions(_Model):
    boolean_attribute: str | None = Field(default=None, min_length=1)
    enter_event: str | None = Field(default=None, min_length=1)


class BrazeIdentifiers(_Model):
    order: list[IdentifierKind] = Field(default_factory=lambda: list(_DEFAULT_ORDER), min_length=1)
    alias_label: str = Field(default="cio_id", min_length=1)
    alias_source: Literal["cio_id", "email", "customer_id"] = "cio_id"


#: The types each ride-along source can fill. Deltas' numbers (``at``, ``seq``,
#: ``version``) are integers; identifiers are text, and only a customer id can be numeric.
#: A pair outside this table could never be written, so it is refused at start-up rather
#: than found on every delta.
SOURCE_TYPES: dict[str, frozenset[str]] = {
    "at": frozenset({"time", "integer", "float", "string"}),
    "seq": frozenset({"integer", "float", "string"}),
    "version": frozenset({"integer", "float", "string"}),
    "customer_id": frozenset({"string", "integer"}),
    "email": frozenset({"string"}),
    "phone": frozenset({"string"}),
    "cio_id": frozenset({"string"}),
}


class RideAlong(_Model):
    """An extra attribute written with each change: a delta field or a constant, with a
    declared type; values that do not fit the type are never sent as strings.

    A type its source can never fill (an integer from an e-mail address) is a
    configuration error; a value that does not fit at run time (a customer id that is not
    a number) is left out of that change, which is still sent, and dead-lettered apart."""

    attribute: str = Field(min_length=1)
    type: AttributeType
    source: ValueSource | None = None
    value: str | int | float | bool | None = None

    @model_validator(mode="after")
    def _check(self) -> RideAlong:
        if (self.source is None) == (self.value is None):
            raise ValueError(f"attribute {self.attribute!r} needs exactly one of source or value")
        if self.value is not None:
            try:
                coerce(self.value, self.type)  # a constant must fit its type at start-up
            except CoercionError as exc:
                raise ValueError(f"attribute {self.attribute!r}: value {exc}") from None
        elif self.type not in SOURCE_TYPES[str(self.source)]:
            fits = ", ".join(sorted(SOURCE_TYPES[str(self.source)]))
            raise ValueError(
                f"attribute {self.attribute!r}: type {self.type} cannot hold source "
                f"{self.source} (it fits {fits})"
            )
        return self


class CoercionError(ValueError):
    pass


def coerce(value: Any, kind: str) -> Any:
    """``value`` as ``kind``; :class:`CoercionError` when it does not fit (booleans are
    only booleans or the strings true/false; never 'yes' or 1)."""
    if kind == "string":
        if isinstance(value, bool):
            raise CoercionError("a boolean is not a string")
        return str(value)
    if kind == "boolean":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise CoercionError(f"{type(value).__name__} is not a boolean")
    if kind == "integer":
        if isinstance(value, bool):
            raise CoercionError("a boolean is not an integer")
        try:
            return int(value)
        except (TypeError, ValueError):
            raise CoercionError("not an integer") from None
    if kind == "float":
        if isinstance(value, bool):
            raise CoercionError("a boolean is not a number")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise CoercionError("not a number") from None
    if isinstance(value, int) and not isinstance(value, bool):
        return format_rfc3339_ms(value)
    raise CoercionError("a time is epoch milliseconds")


class BrazeConfig(DestinationConfig):
    kind: Literal["braze"] = "braze"
    array_attribute: str | None = Field(default="streamsync_audiences", min_length=1)
    audience_options: dict[str, BrazeAudienceOptions] = Field(default_factory=dict)
    identifiers: BrazeIdentifiers = Field(default_factory=BrazeIdentifiers)
    attributes: list[RideAlong] = Field(default_factory=list)
    update_existing_only: bool = Field(
        default=False,
        description="only update profiles that exist (_update_existing_only); with user_alias "
        "Braze's default is already update-only, so streamsync always sends the value",
    )
    max_objects_per_request: int = Field(default=MAX_OBJECTS_PER_REQUEST, ge=1, le=75)
    rate_limit: RateLimit | None = None
    mode: Literal["users_track", "cohorts"] = Field(
        default="users_track",
        description="cohorts: the partner cohort endpoints (needs a Braze partner key); "
        "credentials then hold the customer's Data Import Key",
    )
    cohorts: BrazeCohorts | None = None

    @model_validator(mode="after")
    def _writes_something(self) -> BrazeConfig:
        if self.array_attribute is None and not any(
            o.boolean_attribute for o in self.audience_options.values()
        ):
            raise ValueError("set array_attribute or a boolean_attribute per audience")
        if self.mode == "cohorts" and self.cohorts is None:
            raise ValueError("mode cohorts needs cohorts: {partner_name, partner_key}")
        return self

    @model_validator(mode="after")
    def _one_writer_per_attribute(self) -> BrazeConfig:
        # One attributes object per customer holds every write: a name used twice would
        # have one value overwrite the other (or the identifier) without a word.
        # ... but a profile field set from the identifier of the same name (email from
        # email) writes the very value that identifies the customer: allowed.
        own = {e.attribute for e in self.attributes if e.attribute == e.source}
        named: list[tuple[str, str]] = [
            (kind, f"identifiers.order ({kind})")
            for kind in self.identifiers.order
            if kind not in own
        ]
        named.append(("_update_existing_only", "update_existing_only"))
        if self.array_attribute is not None:
            named.append((self.array_attribute, "array_attribute"))
        for audience, options in self.audience_options.items():
            if options.boolean_attribute is not None:
                where = f"audience_options.{audience}.boolean_attribute"
                named.append((options.boolean_attribute, where))
        for index, extra in enumerate(self.attributes):
            named.append((extra.attribute, f"attributes[{index}]"))
        duplicate_names(named)
        return self

    def named_audiences(self) -> list[tuple[str, str]]:
        named = super().named_audiences()
        named += [(audience, "audience_options") for audience in self.audience_options]
        if self.cohorts is not None:
            named += [(audience, "cohorts.cohort_ids") for audience in self.cohorts.cohort_ids]
        return named

    def effective_rate_limit(self) -> RateLimit:
        if self.rate_limit is not None:
            return self.rate_limit
        return DEFAULT_COHORT_RATE_LIMIT if self.mode == "cohorts" else DEFAULT_RATE_LIMIT


class BrazeClient(DestinationClient):
    kind = "braze"

    def __init__(self, name: str, config: BrazeConfig, secret: SecretStr) -> None:
        super().__init__(name, config.effective_rate_limit(), config.max_objects_per_request)
        self.config = config
        self._headers = {
            "Content-Type": "application/json",
            "Authorization": f"Bearer {secret.get_secret_value()}",
        }
        self._limit = config.max_objects_per_request
        self._suffix = config.holdout_suffix

    def secret_values(self) -> list[str]:
        return [self._headers["Authorization"].removeprefix("Bearer ")]

    def identify(self, delta: MembershipDelta) -> Any | None:
        ids = self.config.identifiers
        for kind in ids.order:
            if kind == "external_id":
                value = identifier(delta, "customer_id")
            elif kind == "user_alias":
                value = identifier(delta, ids.alias_source)
                if value is not None:
                    return ("user_alias", {"alias_name": value, "alias_label": ids.alias_label})
                continue
            else:
                value = identifier(delta, kind)
            if value is not None:
                return (kind, value)
        return None

    def attribute_failures(self, delta: MembershipDelta) -> list[tuple[str, str]]:
        failures: list[tuple[str, str]] = []
        for extra in self.config.attributes:
            raw = self._raw(extra, delta)
            if raw is None:
                continue
            try:
                coerce(raw, extra.type)
            except CoercionError as exc:
                failures.append((extra.attribute, f"does not fit type {extra.type}: {exc}"))
        return failures

    def _value(self, change: Change) -> str:
        return change.audience + self._suffix if change.holdout else change.audience

    @staticmethod
    def _raw(extra: RideAlong, delta: MembershipDelta) -> Any | None:
        if extra.value is not None:
            return extra.value
        if extra.source == "at":
            return delta.at_ms
        if extra.source == "seq":
            return delta.seq
        if extra.source == "version":
            return delta.version
        return identifier(delta, str(extra.source))

    def _ride_along(self, delta: MembershipDelta, target: dict[str, Any]) -> None:
        for extra in self.config.attributes:
            raw = self._raw(extra, delta)
            if raw is None:
                continue
            try:
                target[extra.attribute] = coerce(raw, extra.type)
            except CoercionError:
                # Left out: the membership change goes without it (the sink dead-lettered
                # the attribute when the delta arrived, see attribute_failures).
                continue

    def _objects(
        self, changes: list[Change]
    ) -> tuple[dict[str, Any], list[tuple[dict[str, Any], Change]]]:
        first = changes[0]
        kind, value = first.identity
        ident = {kind: value}
        attributes: dict[str, Any] = dict(ident)
        attributes["_update_existing_only"] = self.config.update_existing_only
        adds = [self._value(c) for c in changes if c.enter]
        removes = [self._value(c) for c in changes if not c.enter]
        array = self.config.array_attribute
        if array is not None:
            op: dict[str, list[str]] = {}
            if adds:
                op["add"] = adds
            if removes:
                op["remove"] = removes
            attributes[array] = op
        events: list[tuple[dict[str, Any], Change]] = []
        for change in changes:
            options = self.config.audience_options.get(change.audience)
            if options is None:
                continue
            if options.boolean_attribute:
                name = options.boolean_attribute + (self._suffix if change.holdout else "")
                attributes[name] = change.enter
            if options.enter_event and change.enter and not (change.holdout or change.reconciled):
                event = dict(ident)
                event.update(
                    name=options.enter_event,
                    time=format_rfc3339_ms(change.delta.at_ms),
                    properties={"audience": change.audience, "seq": change.delta.seq},
                    _update_existing_only=self.config.update_existing_only,
                )
                events.append((event, change))
        for change in changes:
            self._ride_along(change.delta, attributes)
        return attributes, events

    def plan(self, changes: list[Change]) -> list[Request]:
        by_customer: dict[tuple[str, bytes], list[Change]] = {}
        for change in changes:
            # one object per profile: the halves of a move name two profiles of a customer
            profile = orjson.dumps(change.identity, option=orjson.OPT_SORT_KEYS)
            by_customer.setdefault((change.customer_id, profile), []).append(change)
        requests: list[Request] = []
        attrs: list[dict[str, Any]] = []
        events: list[dict[str, Any]] = []
        attr_changes: list[list[Change]] = []
        event_changes: list[Change] = []

        def close() -> None:
            if not attrs and not events:
                return
            body: dict[str, Any] = {}
            if attrs:
                body["attributes"] = list(attrs)
            if events:
                body["events"] = list(events)
            carried = [c for group in attr_changes for c in group]
            requests.append(
                Request(
                    "POST",
                    "/users/track",
                    orjson.dumps(body),
                    self._headers,
                    carried,
                    cost=1,
                    objects=len(attrs) + len(events),
                    meta={"attributes": list(attr_changes), "events": list(event_changes)},
                )
            )
            attrs.clear()
            events.clear()
            attr_changes.clear()
            event_changes.clear()

        for group in by_customer.values():
            attributes, new_events = self._objects(group)
            if len(attrs) + 1 > self._limit or len(events) + len(new_events) > self._limit:
                close()
            attrs.append(attributes)
            attr_changes.append(group)
            for event, change in new_events:
                events.append(event)
                event_changes.append(change)
        close()
        return requests

    def reset_at(self, response: Response, now_epoch: float) -> float | None:
        try:
            return float(response.headers["x-ratelimit-reset"])
        except (KeyError, ValueError):
            return None

    def interpret(self, request: Request, response: Response) -> list[tuple[Change, Rejection]]:
        request_id = response.headers.get("x-request-id", "")
        raise_for_status(self, response, request_id)
        try:
            body = orjson.loads(response.body) if response.body else {}
        except orjson.JSONDecodeError:
            body = {}
        errors = body.get("errors") if isinstance(body, dict) else None
        if not errors or not isinstance(errors, list):
            # The documented shape is a list of {type, input_array, index}; anything else
            # (a count, a string) names no object, so no change is taken as refused.
            return []
        rejected: list[tuple[Change, Rejection]] = []
        seen: set[int] = set()
        for error in _dicts(errors):
            array, index = error.get("input_array"), error.get("index")
            if not isinstance(index, int):
                continue
            if array == "attributes":
                groups = request.meta.get("attributes", [])
                named = groups[index] if 0 <= index < len(groups) else []
            elif array == "events":
                singles = request.meta.get("events", [])
                named = [singles[index]] if 0 <= index < len(singles) else []
            else:
                continue
            message = str(error.get("type") or error.get("message") or "rejected")
            for change in named:
                if id(change) not in seen:
                    seen.add(id(change))
                    rejected.append((change, Rejection(response.status, message, request_id)))
        return rejected


def _dicts(items: Iterable[Any]) -> Iterable[dict[str, Any]]:
    return (item for item in items if isinstance(item, dict))
