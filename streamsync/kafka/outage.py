"""How long no Kafka broker has answered, reported once and then at a slow interval.

librdkafka reports every failed connection attempt, several a second; an operator wants
one line saying the cluster cannot be reached, a reminder now and then, and a process
that gives up (non-zero exit) after a configured time rather than idling as if all were
well. The ingest loop and the evaluate application both keep one :class:`BrokerOutage`.
"""

from __future__ import annotations

import logging
import time

from confluent_kafka import KafkaError

log = logging.getLogger(__name__)

#: How often an unreachable broker is reported again after the first report.
BROKER_REPORT_INTERVAL_S = 30.0
#: Client error codes that mean "no broker answers" (not a problem with one request).
BROKER_DOWN = frozenset({KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT})
#: Client error codes that mean the cluster refused this client (credentials, SASL
#: mechanism, TLS): every retry fails the same way, so the process stops at once.
REFUSED = frozenset(
    {KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED, KafkaError._SSL}
)
#: Client settings that leave broker trouble to the error callback: librdkafka's own
#: per-attempt log lines are silenced.
QUIET_CLIENT = {"log_level": 2}


def is_fatal(error: KafkaError) -> bool:
    """Whether ``error`` should stop the process: librdkafka says so, or the cluster
    refused this client (see :data:`REFUSED`)."""
    return bool(error.fatal()) or error.code() in REFUSED


def fatal_message(error: KafkaError, bootstrap: str) -> str:
    """One line for an error :func:`is_fatal` accepted."""
    if error.code() in REFUSED:
        return f"Kafka at {bootstrap} refused this client: {error.str()}"
    return f"fatal Kafka error: {error.str()}"


class BrokerOutage:
    """The current outage of the cluster at ``bootstrap``, if any."""

    __slots__ = ("_reported", "bootstrap", "interval_s", "since")

    def __init__(self, bootstrap: str, interval_s: float = BROKER_REPORT_INTERVAL_S) -> None:
        self.bootstrap = bootstrap
        self.interval_s = interval_s
        #: ``time.monotonic()`` of the first failure since the cluster last answered.
        self.since: float | None = None
        self._reported = -interval_s

    def on_error(self, error: KafkaError) -> bool:
        """Record a client error; ``True`` if it says no broker answers."""
        if error.code() not in BROKER_DOWN:
            return False
        self.report(error.str())
        return True

    def report(self, reason: str, now: float | None = None) -> None:
        """A failed attempt: starts the outage and logs it, at most once per interval."""
        now = time.monotonic() if now is None else now
        if self.since is None:
            self.since = now
        if now - self._reported >= self.interval_s:
            self._reported = now
            log.error("cannot reach Kafka at %s: %s", self.bootstrap, reason)

    def down_for(self, now: float) -> float:
        """Seconds since the outage began; 0 when the cluster is answering."""
        return 0.0 if self.since is None else now - self.since

    def clear(self) -> None:
        """The cluster answered."""
        self.since = None
