"""What the evaluate runtime tells the process telemetry, as one interface.

The runtime calls an :class:`EvaluateTelemetry` at a handful of points and never asks
whether anyone listens: a run without telemetry (tests, the demo, benchmarks) gets
:class:`NoTelemetry`, whose methods do nothing. What each call means, and what the
service derives from it, is described in :mod:`streamsync.runtime.observer`, whose
:class:`~streamsync.runtime.observer.EvaluateObserver` is the implementation
``streamsync evaluate`` uses.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from confluent_kafka import Consumer, Message

    from streamsync.audiences.migration import Migration
    from streamsync.deltas.record import MembershipDelta
    from streamsync.ingest.event import Event
    from streamsync.runtime.stats import EvaluateStats
    from streamsync.runtime.task import Task

Headers = list[tuple[str, str | bytes | None]]


class EvaluateTelemetry(Protocol):
    """The calls the runtime makes; see :mod:`streamsync.runtime.observer`."""

    @property
    def tracing(self) -> bool:
        """Whether deltas get trace headers (:meth:`trace_headers` is asked)."""
        ...

    def received(self, message: Message, event: Event) -> None: ...

    def emitted(self, deltas: list[MembershipDelta], partition: int) -> None: ...

    def trace_headers(self, delta: MembershipDelta) -> Headers | None: ...

    def committed(self, stats: EvaluateStats) -> None: ...

    def aborted(self) -> None: ...

    def tick(self, consumer: Consumer | None, tasks: Iterable[Task]) -> None: ...

    def restoring(self, partitions: Iterable[int]) -> None: ...

    def restore_progress(self, partition: int, done: int, total: int) -> None: ...

    def task_opened(self, task: Task) -> None: ...

    def definitions_changed(self, migration: Migration) -> None: ...

    def assigned(self) -> None: ...

    def revoked(self, partitions: Iterable[int]) -> None: ...


class NoTelemetry:
    """Reports nothing: the runtime's default when nobody follows it."""

    tracing = False

    def received(self, message: Message, event: Event) -> None:
        pass

    def emitted(self, deltas: list[MembershipDelta], partition: int) -> None:
        pass

    def trace_headers(self, delta: MembershipDelta) -> Headers | None:
        return None

    def committed(self, stats: EvaluateStats) -> None:
        pass

    def aborted(self) -> None:
        pass

    def tick(self, consumer: Consumer | None, tasks: Iterable[Task]) -> None:
        pass

    def restoring(self, partitions: Iterable[int]) -> None:
        pass

    def restore_progress(self, partition: int, done: int, total: int) -> None:
        pass

    def definitions_changed(self, migration: Migration) -> None:
        pass

    def task_opened(self, task: Task) -> None:
        pass

    def assigned(self) -> None:
        pass

    def revoked(self, partitions: Iterable[int]) -> None:
        pass
