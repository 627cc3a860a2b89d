"""Why the evaluate service stops, each in its recovery group (:mod:`streamsync.errors`).

Kafka's part (an unreachable cluster, a fatal client error, a refused client) is
:mod:`streamsync.kafka.health`'s, shared with the ingest and deliver loops.
"""

from __future__ import annotations

from streamsync.errors import NeedsRestart, UserMistake

#: Exit status asking the supervisor for a restart: a transaction that can neither commit
#: nor abort, or a Kafka call hung past its budget (see
#: :class:`streamsync.runtime.checkpoint.Watchdog`). Safe: the open transaction is
#: aborted by the next incarnation and the work redone.
RESTART_EXIT_STATUS = NeedsRestart.exit_status


class StartupError(UserMistake):
    """The topics or the cluster do not allow the service to start; the message says why."""


class MissingTopics(StartupError):
    """Input topics are not in the cluster's metadata (after waiting for them)."""

    def __init__(self, names: list[str]) -> None:
        super().__init__(f"input topics not found: {', '.join(names)}")
        self.names = names


class RestartRequired(NeedsRestart):
    """The transactional producer cannot go on in this process; exit with
    :data:`RESTART_EXIT_STATUS` and be started again."""
