"""Delivery failures, grouped by what recovers from them (as the Singer SDK groups its
exceptions): the sink decides what to do from the class alone.

* :class:`RetriableError` - the destination or the network failed (5xx, timeout, dropped
  connection); the same request is sent again after a jittered backoff, for ever.
* :class:`RateLimited` - a 429; nothing is sent before ``not_before`` (wall-clock epoch
  seconds taken from the response's reset header).
* :class:`BatchRejected` - the destination refused the whole request as invalid (a 4xx
  that is not about credentials); the batch is split to isolate the bad record(s),
  and a single rejected change is dead-lettered.
* :class:`FatalDestinationError` - nothing will work until a person acts (bad key,
  missing permission, wrong URL): delivery stops without committing.

Per-record rejections inside a successful response are not exceptions: clients return
them as :class:`Rejection` values. What stops the ``deliver`` command is in a recovery
group of :mod:`streamsync.errors`: :class:`FatalDestinationError` needs an operator,
:class:`DeliverSetupError` is the user's mistake.
"""

from __future__ import annotations

from dataclasses import dataclass

from streamsync.errors import NeedsOperator, UserMistake


class DeliveryError(Exception):
    """Base of every delivery failure."""


class RetriableError(DeliveryError):
    """Try the same request again later."""


class RateLimited(RetriableError):
    """HTTP 429: wait until ``not_before`` (epoch seconds) before the next request."""

    def __init__(self, message: str, not_before: float) -> None:
        super().__init__(message)
        self.not_before = not_before


@dataclass(frozen=True, slots=True)
class Rejection:
    """The destination refused one change: ``status`` and ``message`` as it said,
    ``request_id`` when it gave one (for its support team)."""

    status: int
    message: str
    request_id: str = ""


class BatchRejected(DeliveryError):
    """The whole request was refused as invalid; see :class:`Rejection` fields."""

    def __init__(self, rejection: Rejection) -> None:
        super().__init__(f"HTTP {rejection.status}: {rejection.message}")
        self.rejection = rejection


class FatalDestinationError(DeliveryError, NeedsOperator):
    """Stop delivering: credentials, permissions or the URL are wrong (exit status 1:
    a person fixes them)."""


class DeliverSetupError(UserMistake):
    """A configuration problem found at start-up; the message is one line for the user
    (exit status 2)."""
