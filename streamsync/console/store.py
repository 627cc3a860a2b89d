"""The console's own store: audience sizes over time, folded from the deltas.

Answering "how big was this audience each hour of the last 90 days" from the deltas topic
at every page view would mean reading the whole topic each time, so the console folds
the deltas once, when it starts (:mod:`streamsync.console.feed` reads the topic from its
oldest record and then follows it), into counts per audience and per hour and minute.
Nothing is written anywhere: a restart rebuilds the store from the topic.

Every time here is **event time** - the deltas' ``at_ms`` - as in replay and explain, so
the plot of a running system and the sizes replay gives for the same records agree.
"Now" is the newest delta's time (the evaluate service's clock as the deltas show it):
for a live system that is the wall clock within seconds, and for a replayed or historical
data set the windows still cover its last hour, day and week rather than nothing.

A size is enters minus exits: the deltas of one customer in one audience alternate
enter/exit from the first enter (their ``seq`` says so), so the sum over all of them up
to an instant is the number of members then, whatever order the partitions were read in.
Counts older than ``history_days`` before now are folded into a base count, so memory is
bounded by audiences x hours kept, not by deltas.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field

from streamsync.deltas.record import ENTER, MembershipDelta

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
MINUTE_MS = 60_000
WEEK_MS = 7 * DAY_MS
#: The windows of the audiences page, by label.
WINDOWS = (("hour", HOUR_MS), ("day", DAY_MS), ("week", WEEK_MS))
#: How far (hours of event time) the window moves between two folds of old counts: memory
#: holds at most this much beyond the history kept.
FOLD_EVERY_HOURS = 24
#: Identifier kinds indexed for the customer search (what deltas carry in ``identifiers``).
SEARCHABLE = ("email", "phone")


@dataclass
class _Series:
    """One audience's counts: ``base`` members before the oldest hour kept, then per
    hour (index ``at_ms // HOUR_MS``) the change in members and holdout members, and per
    minute of the last week the enters and exits."""

    base: int = 0
    base_holdout: int = 0
    hours: dict[int, list[int]] = field(default_factory=dict)  # [net, net holdout]
    minutes: dict[int, list[int]] = field(default_factory=dict)  # [enters, exits]
    #: whether changes before the window were folded into ``base``
    folded: bool = False

    def add(self, delta: MembershipDelta, oldest_hour: int | None) -> None:
        step = 1 if delta.op == ENTER else -1
        index = delta.at_ms // HOUR_MS
        if oldest_hour is not None and index < oldest_hour:
            # Older than the history kept (a partition read behind the others).
            self.base += step
            self.base_holdout += step if delta.holdout else 0
            self.folded = True
            return
        hour = self.hours.setdefault(index, [0, 0])
        hour[0] += step
        if delta.holdout:
            hour[1] += step
        minute = self.minutes.setdefault(delta.at_ms // MINUTE_MS, [0, 0])
        minute[0 if step > 0 else 1] += 1

    def fold(self, oldest_hour: int, oldest_minute: int) -> None:
        for hour in [h for h in self.hours if h < oldest_hour]:
            net, holdout = self.hours.pop(hour)
            self.folded = True
            self.base += net
            self.base_holdout += holdout
        for minute in [m for m in self.minutes if m < oldest_minute]:
            del self.minutes[minute]

    @property
    def size(self) -> int:
        return self.base + sum(h[0] for h in self.hours.values())

    @property
    def holdout(self) -> int:
        return self.base_holdout + sum(h[1] for h in self.hours.values())


@dataclass(frozen=True, slots=True)
class AudienceStats:
    """What the audiences page shows for one audience."""

    audience: str
    size: int
    holdout: int
    #: window label (hour, day, week) -> (enters, exits) in the window ending now
    changes: dict[str, tuple[int, int]]


@dataclass(frozen=True, slots=True)
class SizeSeries:
    """Sizes at the end of each hour or day: ``times_ms[i]`` is the bucket's end."""

    audience: str
    resolution: str
    times_ms: list[int]
    sizes: list[int]


@dataclass(frozen=True, slots=True)
class StoreStatus:
    """How far the build from the deltas topic is."""

    #: waiting (no topic yet), building (reading up to the end seen at start), live
    state: str
    deltas: int
    undecodable: int
    #: records of the topic when the build started (the end it reads up to)
    target: int
    newest_ms: int | None
    error: str | None = None


class ConsoleStore:
    """Thread-safe: the feed's thread writes, the web server's loop reads."""

    def __init__(self, history_days: int = 90) -> None:
        self.history_ms = history_days * DAY_MS
        self._lock = threading.Lock()
        self._series: dict[str, _Series] = {}
        self._by_identifier: dict[tuple[str, str], set[str]] = {}
        self._deltas = 0
        self._undecodable = 0
        self._newest: int | None = None
        self._state = "waiting"
        self._target = 0
        self._error: str | None = None
        self._folded_hour: int | None = None

    # Writing (the feed).

    def apply(self, deltas: Iterable[MembershipDelta]) -> None:
        with self._lock:
            for delta in deltas:
                self._series.setdefault(delta.audience, _Series()).add(delta, self._folded_hour)
                for kind in SEARCHABLE:
                    value = delta.identifiers.get(kind)
                    if value:
                        key = (kind, normalise(kind, value))
                        self._by_identifier.setdefault(key, set()).add(delta.customer_id)
                self._deltas += 1
                if self._newest is None or delta.at_ms > self._newest:
                    self._newest = delta.at_ms
            self._fold()

    def count_undecodable(self, count: int = 1) -> None:
        with self._lock:
            self._undecodable += count

    def set_state(self, state: str, *, target: int | None = None, error: str | None = None) -> None:
        with self._lock:
            self._state = state
            if target is not None:
                self._target = target
            self._error = error

    def clear(self) -> None:
        """Forget everything (before a rebuild)."""
        with self._lock:
            self._series.clear()
            self._by_identifier.clear()
            self._deltas = self._undecodable = 0
            self._newest = None
            self._folded_hour = None

    def _fold(self) -> None:
        if self._newest is None:
            return
        oldest_hour = (self._newest - self.history_ms) // HOUR_MS + 1
        if self._folded_hour is not None and oldest_hour < self._folded_hour + FOLD_EVERY_HOURS:
            # The window moved by less than FOLD_EVERY_HOURS: counts a little older than
            # it are still held, which the readers leave out (sizes() adds older hours to
            # the base, stats() counts only minutes in its windows); folding on every
            # hour of event time scanned every audience's hours and minutes each time.
            return
        self._folded_hour = oldest_hour
        oldest_minute = (self._newest - WEEK_MS) // MINUTE_MS + 1
        for series in self._series.values():
            series.fold(oldest_hour, oldest_minute)

    # Reading (the pages).

    def status(self) -> StoreStatus:
        with self._lock:
            return StoreStatus(
                self._state,
                self._deltas,
                self._undecodable,
                self._target,
                self._newest,
                self._error,
            )

    def audiences(self) -> list[str]:
        with self._lock:
            return sorted(self._series)

    def stats(self, audience: str) -> AudienceStats:
        """Size now and the enters and exits of each window ending now (to the minute)."""
        with self._lock:
            series = self._series.get(audience)
            if series is None or self._newest is None:
                return AudienceStats(audience, 0, 0, {label: (0, 0) for label, _ in WINDOWS})
            now_minute = self._newest // MINUTE_MS
            # One pass over the minutes for every window (the audiences page asks this
            # of every audience).
            firsts = [(label, now_minute - span // MINUTE_MS + 1) for label, span in WINDOWS]
            counts = {label: [0, 0] for label, _ in WINDOWS}
            oldest = min(first for _, first in firsts)
            for minute, (e, x) in series.minutes.items():
                if minute < oldest:
                    continue
                for label, first in firsts:
                    if minute >= first:
                        count = counts[label]
                        count[0] += e
                        count[1] += x
            changes = {label: (c[0], c[1]) for label, c in counts.items()}
            return AudienceStats(audience, series.size, series.holdout, changes)

    def sizes(self, audience: str, resolution: str = "hour") -> SizeSeries:
        """The size at the end of every hour (or day) from the oldest kept to now."""
        span = HOUR_MS if resolution == "hour" else DAY_MS
        with self._lock:
            series = self._series.get(audience)
            if series is None or self._newest is None:
                return SizeSeries(audience, resolution, [], [])
            per_bucket: dict[int, int] = {}
            for hour, (net, _) in series.hours.items():
                bucket = hour * HOUR_MS // span
                per_bucket[bucket] = per_bucket.get(bucket, 0) + net
            size = series.base
            folded = series.folded
        assert self._newest is not None
        last = self._newest // span
        # From the oldest hour kept (or the first change ever, when later) to now: an
        # audience with no change in the window still has its size drawn, flat.
        window_start = (self._newest - self.history_ms) // span + 1
        first = window_start if folded else min(per_bucket, default=window_start)
        first = max(first, window_start)
        first = min(first, last)
        for bucket in [b for b in per_bucket if b < first]:
            size += per_bucket.pop(bucket)
        times, sizes = [], []
        for bucket in range(first, last + 1):
            size += per_bucket.get(bucket, 0)
            times.append((bucket + 1) * span)
            sizes.append(size)
        return SizeSeries(audience, resolution, times, sizes)

    def customers_with(self, kind: str, value: str) -> list[str]:
        """Customer ids whose deltas carried this e-mail address or phone number."""
        with self._lock:
            return sorted(self._by_identifier.get((kind, normalise(kind, value)), ()))


def normalise(kind: str, value: str) -> str:
    """The form an identifier is looked up in: e-mail addresses without case, phone
    numbers by their digits (and a leading +), so ``+1 (555) 010-0000`` finds
    ``+15550100000``."""
    value = value.strip()
    if kind == "email":
        return value.lower()
    if kind == "phone":
        digits = "".join(ch for ch in value if ch.isdigit())
        return ("+" if value.startswith("+") else "") + digits
    return value
