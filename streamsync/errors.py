"""The project's errors, grouped by what recovers from them.

A command does not decide its own exit status per exception: it raises one of these
groups (or a subclass) and :func:`streamsync.cli.main` prints one line and exits with the
group's :attr:`~StreamsyncError.exit_status`. What recovers from each group:

* :class:`UserMistake` - the user changes what they asked for (a configuration, a topic
  to create); retrying the same thing fails the same way. Exit status 2, as argparse's
  usage errors.
* :class:`Unavailable` - something the service needs did not answer (the cluster, a
  restore within its budget); the service has already retried for its configured time.
  A supervisor starting it again later may succeed. Exit status 1.
* :class:`NeedsOperator` - something outside what was asked refuses this service (the
  cluster refused its credentials, a destination its key or URL, the stored state was
  written for other audience definitions): a person acts (a new credential, a new group
  id), then it is started again; retrying alone fails the same way. Exit status 1, as
  the documented exit statuses have it.
* :class:`NeedsRestart` - this process cannot go on (a transaction that can neither
  commit nor abort), but a new one can, at once: the supervisor restarts it and the open
  work is redone from the last commit. Exit status 3.
"""

from __future__ import annotations


class StreamsyncError(Exception):
    """Base of the groups below; reported as one line, never a traceback."""

    #: The process exit status of the group.
    exit_status = 1
    #: What the command had done when this stopped it (``stopped without committing``),
    #: shown before the message; set by the command with :meth:`within`.
    context = ""

    def within(self, context: str) -> None:
        """Tell this error what its command had done when it stopped (see
        :attr:`context`), before the command raises it on."""
        self.context = context


class UserMistake(StreamsyncError):
    """A mistake in what the user asked for: one line, exit status 2."""

    exit_status = 2


class Unavailable(StreamsyncError):
    """Something needed did not answer within its budget (already retried): one line,
    exit status 1."""

    exit_status = 1


class NeedsOperator(StreamsyncError):
    """Refused until a person acts (a credential, a key, state of other definitions):
    one line, exit status 1."""

    exit_status = 1


class NeedsRestart(StreamsyncError):
    """This process cannot go on but a new one can: one line, exit status 3, for the
    supervisor to start it again."""

    exit_status = 3
