"""What the Kafka loops (evaluate, ingest, deliver) share about trouble with the cluster.

librdkafka reports every failed connection attempt, several a second, through the error
callback; an operator wants one line saying the cluster cannot be reached, a reminder now
and then, and a process that gives up (non-zero exit) after a configured time rather
than idling as if all were well. Each loop keeps one :class:`ClientHealth`, gives its
clients :func:`client_settings` (the callback, librdkafka's own lines silenced) and
calls :meth:`ClientHealth.check` once per turn. Why Kafka stops a command is one of two
errors, each in its recovery group (:mod:`streamsync.errors`):

* :class:`KafkaUnavailable` - no broker answered within the budget, or a client reported
  a fatal error: exit 1, a later start may succeed;
* :class:`KafkaRefused` - the cluster refused this client (credentials, SASL mechanism,
  TLS): every retry fails the same way, so the command stops at once; exit 1.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any, Protocol

from confluent_kafka import KafkaError, KafkaException

from streamsync.errors import NeedsOperator, NeedsRestart, Unavailable

log = logging.getLogger(__name__)

#: How often an unreachable broker is reported again after the first report.
BROKER_REPORT_INTERVAL_S = 30.0
#: Client error codes that mean "no broker answers" (not a problem with one request).
BROKER_DOWN = frozenset(
    # _RESOLVE: a bootstrap host that does not resolve (yet: DNS of a starting cluster)
    {KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT, KafkaError._RESOLVE}
)
#: Client error codes that mean the cluster refused this client (credentials, SASL
#: mechanism, TLS): every retry fails the same way, so the process stops at once.
REFUSED = frozenset(
    {KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED, KafkaError._SSL}
)
#: Client settings that leave broker trouble to the error callback: librdkafka's own
#: per-attempt log lines are silenced.
QUIET_CLIENT = {"log_level": 2}


class KafkaUnavailable(Unavailable):
    """No broker answered for longer than the command's broker timeout, or a Kafka client
    reported an error it cannot recover from (a fatal error, a failed offset commit)."""


class KafkaRefused(NeedsOperator):
    """The cluster refused this client (credentials, SASL mechanism, TLS)."""


def is_fatal(error: KafkaError) -> bool:
    """Whether ``error`` should stop the process: librdkafka says so, or the cluster
    refused this client (see :data:`REFUSED`)."""
    return bool(error.fatal()) or error.code() in REFUSED


class KafkaFatal(NeedsRestart):
    """A client cannot go on (librdkafka's fatal state: an idempotent or transactional
    producer fenced, or its epoch bumped by a coordinator that aborted a transaction
    that timed out, as after a broker restart); a new process can, so this one exits
    for its supervisor to start it again."""


def fatal_error(error: KafkaError, bootstrap: str) -> KafkaUnavailable | KafkaRefused | KafkaFatal:
    """The exception, with its one line, for an error :func:`is_fatal` accepted."""
    if error.code() in REFUSED:
        return KafkaRefused(f"Kafka at {bootstrap} refused this client: {error.str()}")
    if error.fatal():
        return KafkaFatal(f"fatal Kafka error (a restart goes on): {error.str()}")
    return KafkaUnavailable(f"fatal Kafka error: {error.str()}")


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


class Probe(Protocol):
    """A client that can ask the cluster for its metadata (a consumer, an admin client)."""

    def list_topics(self, *args: Any, **kwargs: Any) -> Any: ...


class ClientHealth:
    """Trouble the clients of one loop report outside a call: librdkafka's error callback
    (an outage is counted and reported, a fatal error or a refused client stops the
    loop) and exceptions raised inside rebalance callbacks (which librdkafka would
    swallow). The loop calls :meth:`check` once per turn to raise them, and
    :meth:`watch` to give up after its broker timeout.

    Other client errors are logged to ``logger`` at ``level`` (the loop's own logger).
    """

    def __init__(
        self, bootstrap: str, *, logger: logging.Logger | None = None, level: int = logging.WARNING
    ) -> None:
        self.bootstrap = bootstrap
        #: the current outage (cleared whenever a record or a probe gets through)
        self.outage = BrokerOutage(bootstrap)
        self._log = logger or log
        self._level = level
        self._fatal: KafkaError | None = None
        self._error: BaseException | None = None

    def on_error(self, error: KafkaError) -> None:
        """librdkafka's ``error_cb``."""
        if is_fatal(error):
            self._fatal = error
        elif not self.outage.on_error(error):
            self._log.log(self._level, "kafka client error: %s", error)

    def failed(self, error: BaseException) -> None:
        """A rebalance callback raised ``error``: raised by the next :meth:`check`."""
        self._error = error

    def check(self) -> None:
        """Raise what was reported since the last call."""
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        if self._fatal is not None:
            raise fatal_error(self._fatal, self.bootstrap)

    def watch(self, now: float, broker_timeout_s: float, probe: Probe | None = None) -> None:
        """Raise :class:`KafkaUnavailable` when no broker has answered for
        ``broker_timeout_s``. With ``probe`` the cluster is asked first (the client
        reports trouble but not its end): an answer ends the outage instead."""
        down_for = self.outage.down_for(now)
        if not down_for or down_for < broker_timeout_s:
            return
        if probe is not None:
            try:
                probe.list_topics(timeout=5)
            except KafkaException:
                pass
            else:
                self.outage.clear()
                return
        raise KafkaUnavailable(
            f"cannot reach Kafka at {self.bootstrap} for {down_for:.0f}s; giving up"
        )


def client_settings(settings: Mapping[str, Any], health: ClientHealth) -> dict[str, Any]:
    """The settings every client of a loop starts from: the cluster's (``settings``,
    from :meth:`~streamsync.kafka.config.KafkaConfig.client_config`), librdkafka's own
    per-attempt lines silenced, and errors reported to ``health``."""
    return {**settings, **QUIET_CLIENT, "error_cb": health.on_error}
