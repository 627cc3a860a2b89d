"""The audience definition language, as pydantic models.

An audience file is YAML: one mapping (one audience), a list of mappings, or a mapping
with an ``audiences:`` list. Each audience says when a customer is a member::

    name: ACT__CartAbandon__90m
    version: 1
    owner: retention@example.com
    description: Added to cart, no order for 90 minutes.
    entry:
      since_last: {event: Product Added, at_least: 90m, less_than: 7d}
    exit:
      occurred_since_last: {event: Order Completed, since: {event: Product Added}}

Membership at event time ``t`` is ``entry(t) and not exit(t)``; ``sticky_for`` turns
that into fixed-length memberships, and ``exit_during_sticky`` says whether an exit
still ends one early (``leave``) or waits for the period to end (``stay``). Conditions
are small and closed on purpose: each one maps to compact per-customer state with an
exactly computable next change, which is what lets the engine fire deadlines without
keeping event lists.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from streamsync.audiences.durations import parse_duration

#: ``ACT__Name__Qualifier`` for audiences that trigger action, ``SUP__...`` for suppression.
NAME_CONVENTION = re.compile(r"^(ACT|SUP)__[A-Za-z0-9]+(__[A-Za-z0-9]+)*$")

Scalar = str | int | float | bool | None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


#: Largest ``count.at_least``: the engine keeps that many timestamps per key.
MAX_COUNT = 100_000
#: Largest audience version: deltas carry it as a 32-bit Avro int.
MAX_VERSION = 2**31 - 1


def _duration(value: Any) -> int:
    """A duration field's value in ms (see :mod:`~streamsync.audiences.durations`)."""
    if isinstance(value, str | int) and not isinstance(value, bool):
        return parse_duration(value)
    raise ValueError("a duration is a number with a unit, such as 90m or 7d")


#: Validation context of stored definitions (``streamsync.audiences.migration``), whose
#: durations are plain milliseconds: a user's bare number stays an error.
STORED = {"durations": "ms"}


def _duration_field(value: Any, info: ValidationInfo) -> int | None:
    """A duration field's ``before`` validator."""
    if value is None:
        return None
    if info.context == STORED and isinstance(value, int) and not isinstance(value, bool):
        return value
    return _duration(value)


def _not_negative(value: int | None, name: str) -> None:
    if value is not None and value < 0:
        raise ValueError(f"{name} must not be negative")


class Comparison(_Strict):
    """An operator test on one property value."""

    eq: Scalar = None
    ne: Scalar = None
    gt: float | None = Field(default=None, allow_inf_nan=False)
    gte: float | None = Field(default=None, allow_inf_nan=False)
    lt: float | None = Field(default=None, allow_inf_nan=False)
    lte: float | None = Field(default=None, allow_inf_nan=False)
    one_of: list[Scalar] | None = Field(default=None, alias="in")
    exists: bool | None = None

    @model_validator(mode="after")
    def _one_operator(self) -> Comparison:
        if not self.model_fields_set:
            raise ValueError("a comparison needs an operator: eq, ne, gt, gte, lt, lte, in, exists")
        return self


class EventMatch(_Strict):
    """Which records a condition counts.

    ``where`` maps a property path to a value (equality) or a comparison. A path
    step ``name[]`` means "any element of the list ``name``": ``products[].sku``.
    """

    event: str
    #: Data Pipelines ``type``, or ``webhook`` for reporting webhooks (``event`` = metric).
    kind: Literal["track", "identify", "page", "screen", "webhook"] = "track"
    where: dict[str, Scalar | Comparison] = Field(default_factory=dict)


class Capture(_Strict):
    """A number read from the latest matching record, as a duration (``days_supply``)."""

    max_of: str | None = None
    min_of: str | None = None
    unit: Literal["ms", "s", "m", "h", "d", "w"] = "d"

    @model_validator(mode="after")
    def _one_path(self) -> Capture:
        if (self.max_of is None) == (self.min_of is None):
            raise ValueError("offset_by needs exactly one of max_of or min_of")
        return self

    @property
    def path(self) -> str:
        return self.max_of if self.max_of is not None else str(self.min_of)


class SinceLast(EventMatch):
    """``L`` = the latest matching record at or before ``t``; true while
    ``L + offset + at_least <= t < L + offset + less_than``.

    ``offset_by`` adds a duration read from that record (no value: false).
    """

    at_least: int = 0
    less_than: int | None = None
    offset_by: Capture | None = None

    @field_validator("at_least", "less_than", mode="before")
    @classmethod
    def _durations(cls, value: Any, info: ValidationInfo) -> int | None:
        return _duration_field(value, info)

    @model_validator(mode="after")
    def _ordered(self) -> SinceLast:
        if self.offset_by is None:
            # Negative bounds place the window before a captured offset (7 days before
            # the supply runs out); without offset_by they reach before the record.
            _not_negative(self.at_least, "at_least (without offset_by)")
        if self.less_than is not None and self.less_than <= self.at_least:
            raise ValueError("less_than must be longer than at_least")
        return self


class Happened(EventMatch):
    """True at exactly the instant of a matching record (a trigger, for sticky audiences)."""


class OccurredSinceLast(EventMatch):
    """A matching record in ``(L(since), t]``: "an order after the latest cart add"."""

    since: EventMatch


class Count(EventMatch):
    """At least ``at_least`` matching records in ``(t - within, t]`` (or ever, without
    ``within``); with ``per``, for some single value of that property."""

    at_least: int = Field(default=1, ge=1, le=MAX_COUNT)
    within: int | None = None
    per: str | None = None

    @field_validator("within", mode="before")
    @classmethod
    def _durations(cls, value: Any, info: ValidationInfo) -> int | None:
        return _duration_field(value, info)

    @field_validator("within")
    @classmethod
    def _positive(cls, v: int | None) -> int | None:
        if v is not None and v <= 0:
            raise ValueError("within must be a positive duration")
        return v


class Amount(EventMatch):
    """A numeric property of matching records, for sums."""

    field: str


class Sum(_Strict):
    """Sum of ``add`` amounts minus ``subtract`` amounts over ``(t - within, t]`` (or ever),
    compared with a threshold."""

    add: list[Amount] = Field(min_length=1)
    subtract: list[Amount] = Field(default_factory=list)
    within: int | None = None
    greater_than: float | None = Field(default=None, allow_inf_nan=False)
    at_least: float | None = Field(default=None, allow_inf_nan=False)

    @field_validator("within", mode="before")
    @classmethod
    def _durations(cls, value: Any, info: ValidationInfo) -> int | None:
        return _duration_field(value, info)

    @model_validator(mode="after")
    def _one_threshold(self) -> Sum:
        if (self.greater_than is None) == (self.at_least is None):
            raise ValueError("sum needs exactly one of greater_than or at_least")
        if self.within is not None and self.within <= 0:
            raise ValueError("within must be a positive duration")
        return self


class OpenItems(_Strict):
    """Some value of ``key`` has an ``open`` record with no ``close`` after its latest open."""

    open: EventMatch
    close: EventMatch
    key: str


class Trait(_Strict):
    """The latest identify carrying trait ``name`` has a value equal to ``equals``."""

    name: str
    equals: Scalar


class Condition(_Strict):
    """Exactly one of the fields below."""

    all: list[Condition] | None = Field(default=None, min_length=1)
    any: list[Condition] | None = Field(default=None, min_length=1)
    not_: Condition | None = Field(default=None, alias="not")
    since_last: SinceLast | None = None
    happened: Happened | None = None
    occurred_since_last: OccurredSinceLast | None = None
    count: Count | None = None
    sum: Sum | None = None
    open_items: OpenItems | None = None
    trait: Trait | None = None
    in_audience: str | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Condition:
        if len(self.model_fields_set) != 1:
            names = ", ".join(sorted(_CONDITION_KEYS))
            raise ValueError(f"a condition has exactly one of: {names}")
        (name,) = self.model_fields_set
        if getattr(self, name) is None:
            key = "not" if name == "not_" else name
            raise ValueError(f"{key} needs a value, not null")
        return self

    @property
    def kind(self) -> str:
        (name,) = self.model_fields_set
        return name

    def children(self) -> list[Condition]:
        if self.all is not None:
            return list(self.all)
        if self.any is not None:
            return list(self.any)
        if self.not_ is not None:
            return [self.not_]
        return []

    def references(self) -> set[str]:
        """Names of the audiences this condition reads, at any depth."""
        found = {self.in_audience} if self.in_audience is not None else set()
        for child in self.children():
            found |= child.references()
        return found


_CONDITION_KEYS = {
    "all",
    "any",
    "not",
    "since_last",
    "happened",
    "occurred_since_last",
    "count",
    "sum",
    "open_items",
    "trait",
    "in_audience",
}


#: A destination name as configured under ``destinations:`` in the configuration file.
DESTINATION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class HoldoutDelivery(_Strict):
    """Which members are held out (``percent``, assigned deterministically per customer).

    How holdout members reach a destination is the destination's setting
    (``destinations.<name>.holdout: skip | marker``), not the audience's: a
    ``deliver_marker`` key here was once accepted and never read, so it is refused with
    that pointer rather than silently ignored. The field stays, always false, because the
    state fingerprint hashes the definition as dumped: removing it would make every
    audience with a holdout refuse the state stored for it.
    """

    percent: float = Field(ge=0, le=100)
    deliver_marker: Literal[False] = False

    @model_validator(mode="before")
    @classmethod
    def _no_deliver_marker(cls, data: Any) -> Any:
        if isinstance(data, dict) and "deliver_marker" in data:
            raise ValueError(
                "holdout.deliver_marker is not supported: whether holdout members are "
                "delivered is set per destination, with holdout: skip or holdout: marker "
                "under destinations.<name> in the configuration; remove deliver_marker"
            )
        return data


class Audience(_Strict):
    name: str = Field(min_length=1)
    version: int = Field(ge=1)
    owner: str = Field(min_length=1)
    description: str = Field(min_length=1)
    entry: Condition
    exit: Condition | None = None
    sticky_for: int | None = None
    #: With both ``sticky_for`` and ``exit``: ``leave`` ends a membership as soon as the
    #: exit holds, even within the sticky period; ``stay`` keeps the member for the whole
    #: period (the exit only keeps a customer from entering). Required then, because
    #: either reading is plausible and the two disagree for days (the loader refuses the
    #: pair without it). Left out of dumps when not given, so audiences that do not use
    #: it dump (and fingerprint) as they did before it existed.
    exit_during_sticky: Literal["leave", "stay"] | None = Field(
        default=None, exclude_if=lambda value: value is None
    )
    holdout: HoldoutDelivery | None = None
    #: Names of the configured destinations (``destinations:`` in the configuration file)
    #: that receive this audience. How membership is written there is the destination's
    #: configuration, so the audience language does not grow with each destination.
    destinations: list[str] = Field(default_factory=list)

    @field_validator("sticky_for", mode="before")
    @classmethod
    def _durations(cls, value: Any, info: ValidationInfo) -> int | None:
        return _duration_field(value, info)

    @field_validator("destinations")
    @classmethod
    def _destination_names(cls, names: list[str]) -> list[str]:
        for name in names:
            if not DESTINATION_NAME.match(name):
                raise ValueError(
                    f"destination name {name!r} must be letters, digits, '_', '.' or '-' "
                    "(up to 64, starting with a letter or digit)"
                )
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"destinations listed twice: {', '.join(repeated)}")
        return names

    @field_validator("sticky_for")
    @classmethod
    def _positive(cls, v: int | None) -> int | None:
        if v is not None and v <= 0:
            raise ValueError("sticky_for must be a positive duration")
        return v

    @field_validator("version")
    @classmethod
    def _fits_the_delta_schema(cls, v: int) -> int:
        # Deltas carry the version as an Avro int (schemas/membership_delta.avsc).
        if v > MAX_VERSION:
            raise ValueError(f"version must be at most {MAX_VERSION}")
        return v

    def references(self) -> set[str]:
        refs = self.entry.references()
        if self.exit is not None:
            refs |= self.exit.references()
        return refs

    @property
    def follows_naming_convention(self) -> bool:
        return NAME_CONVENTION.match(self.name) is not None
