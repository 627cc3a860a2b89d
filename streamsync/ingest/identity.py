"""Who a record is about: the customer key, and what kind of identifier it is.

One policy per topic (:class:`~streamsync.ingest.config.TopicConfig`), used alike by the Kafka
path and by replay, so the same record is always keyed the same way:

* Data Pipelines: ``userId`` (or the ``customer_key`` path), kind ``id``;
* reporting webhooks: ``data.identifiers.id``, then the configured fallbacks in order
  (default ``email``, then ``cio_id``), and the deprecated ``data.customer_id`` only as
  the last one. Customer.io's webhook spec deprecates ``customer_id`` ("blank if the
  person in question has been deleted"; rely on ``identifiers``), and in workspaces that
  identify people by email ``identifiers.id`` is null while ``email`` and ``cio_id``
  are set. Email comes before ``cio_id`` by default because destinations can address a
  person by email, never by Customer.io's internal id.

The kind of the identifier chosen travels on the event (``Event.id_kind``) and on every
delta, so the delivery side can map it to the identifier a destination expects.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from streamsync.ingest.config import DEFAULT_WEBHOOK_IDENTITY
from streamsync.ingest.errors import DecodeError, DecodeReason, type_name

__all__ = ["DEFAULT_WEBHOOK_IDENTITY", "WEBHOOK_PATHS", "CustomerKeyRule"]

#: Webhook identifier kind -> where it is in the record.
WEBHOOK_PATHS: dict[str, tuple[str, ...]] = {
    "id": ("data", "identifiers", "id"),
    "cio_id": ("data", "identifiers", "cio_id"),
    "email": ("data", "identifiers", "email"),
    "customer_id": ("data", "customer_id"),
}
PIPELINES_KEY = "userId"


@dataclass(frozen=True, slots=True)
class CustomerKeyRule:
    """Where a topic's records carry the customer key, tried in order.

    ``candidates`` are ``(path, id_kind)`` pairs: a dotted path into the record
    (``userId``, ``data.identifiers.id``) and the kind of identifier found there. When no
    candidate holds a key and ``from_kafka_key`` is set, the Kafka message key (UTF-8) is
    used, as kind ``id``: some producers only key the message.
    """

    candidates: tuple[tuple[tuple[str, ...], str], ...]
    from_kafka_key: bool = False

    @classmethod
    def parse(cls, path: str, *, from_kafka_key: bool = False) -> CustomerKeyRule:
        """A rule with one dotted path whose values are of kind ``id``."""
        parts = tuple(path.split("."))
        if not all(parts):
            raise ValueError(f"customer key path {path!r} has an empty segment")
        return cls(((parts, "id"),), from_kafka_key)

    @classmethod
    def webhook(
        cls, kinds: tuple[str, ...] = DEFAULT_WEBHOOK_IDENTITY, *, from_kafka_key: bool = False
    ) -> CustomerKeyRule:
        """The webhook identity policy trying ``kinds`` (see :data:`WEBHOOK_PATHS`)."""
        return cls(tuple((WEBHOOK_PATHS[kind], kind) for kind in kinds), from_kafka_key)

    def resolve(self, record: dict[str, Any], kafka_key: bytes | None) -> tuple[str, str] | None:
        """``(customer key, id_kind)``, or ``None`` when the record has none (skipped, not
        an error).

        Strings and integers are keys (some producers send numeric ids); null and an
        empty string are no key, so the next candidate is tried; anything else is a
        producer bug and raises ``WRONG_TYPE``.
        """
        for path, kind in self.candidates:
            node: Any = record
            for part in path:
                if type(node) is not dict:
                    node = None
                    break
                node = node.get(part)
            if type(node) is str:
                if node:
                    return node, kind
            elif type(node) is int:
                return str(node), kind
            elif node is not None:
                raise DecodeError(
                    DecodeReason.WRONG_TYPE,
                    f"{'.'.join(path)} must be a string, got {type_name(node)}",
                )
        if self.from_kafka_key and kafka_key:
            try:
                return kafka_key.decode("utf-8"), "id"
            except UnicodeDecodeError:
                raise DecodeError(
                    DecodeReason.WRONG_TYPE, "Kafka message key is not UTF-8 text"
                ) from None
        return None


PIPELINES_RULE = CustomerKeyRule.parse(PIPELINES_KEY)
WEBHOOK_RULE = CustomerKeyRule.webhook()
