"""What becomes of a record's decode outcomes, in every stage that decodes input topics.

A record decodes (:meth:`~streamsync.ingest.decoder.Decoder.decode_all`) into events,
errors and skipped records; each stage - the ingest loop, evaluate's re-keying stage and
its task inputs - hands events on, dead-letters errors and counts all three per topic
(:class:`TopicStats`) the same way: :class:`Outcomes` is that one way.

Evaluate's task inputs are its hot loop (every record passes once); the router keeps
its own loop over the outcomes there, so no callback is built per record, but counts
and dead-letters through the same :meth:`Outcomes.reject`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from confluent_kafka import Message

from streamsync.ingest.decoder import NO_CUSTOMER, Outcome
from streamsync.ingest.errors import DecodeError
from streamsync.ingest.event import Event, SourcePosition

#: Dead-letters a consumed record: (message, its source, reason, detail, batch index).
DeadLetter = Callable[[Message, SourcePosition, str, str, int | None], None]


@dataclass
class TopicStats:
    """What happened to one topic's records."""

    decoded: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    dead_lettered: Counter[str] = field(default_factory=Counter)

    @property
    def skipped_no_customer(self) -> int:
        return self.skipped[NO_CUSTOMER]

    @property
    def records(self) -> int:
        return self.decoded + sum(self.skipped.values()) + sum(self.dead_lettered.values())


class Outcomes:
    """Dispatches decode outcomes: events to a callback, errors to ``dead_letter``
    (counted by reason), skipped records counted by reason."""

    __slots__ = ("dead_letter",)

    def __init__(self, dead_letter: DeadLetter) -> None:
        self.dead_letter = dead_letter

    def dispatch(
        self,
        outcomes: Iterable[Outcome],
        message: Message,
        source: SourcePosition,
        counts: TopicStats,
        on_event: Callable[[Event], object],
    ) -> None:
        """Each of ``outcomes`` (of ``message``, at ``source``) where it belongs."""
        for outcome in outcomes:
            if isinstance(outcome, Event):
                counts.decoded += 1
                on_event(outcome)
            elif isinstance(outcome, DecodeError):
                reason = outcome.reason.value
                self.reject(message, source, reason, outcome.detail, outcome.index, counts)
            else:
                counts.skipped[outcome.reason] += 1

    def reject(
        self,
        message: Message,
        source: SourcePosition,
        reason: str,
        detail: str,
        index: int | None,
        counts: TopicStats,
    ) -> None:
        """Dead-letter ``message`` and count it under ``reason``."""
        self.dead_letter(message, source, reason, detail, index)
        counts.dead_lettered[reason] += 1
