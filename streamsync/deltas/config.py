"""The ``deltas:`` section of the configuration file: the membership deltas topic
between ``evaluate`` and ``deliver``, and its record format."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_DELTAS_TOPIC = "streamsync.deltas"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DeltasConfig(_Model):
    """The membership deltas topic: written by ``evaluate``, read by ``deliver``.

    Records are keyed by customer id, so one customer's deltas stay in order. Next to
    it, ``evaluate`` keeps the current-membership table (:mod:`streamsync.deltas.membership`),
    a compacted topic named after this one unless ``members_topic`` names it.
    """

    topic: str = Field(default=DEFAULT_DELTAS_TOPIC, min_length=1)
    format: Literal["json", "avro"] = Field(
        default="json",
        description="json: the README's JSON form; avro: schemas/membership_delta.avsc in the "
        "Confluent wire format.",
    )
    subject: str | None = Field(
        default=None,
        min_length=1,
        description="avro with ingest.schema_registry: the subject evaluate registers "
        "schemas/membership_delta.avsc under at start-up, framing deltas with the id the "
        "registry gives (instead of evaluate.delta_schema_id).",
    )
    members_topic: str | None = Field(
        default=None,
        min_length=1,
        description="Compacted table of the current members (one record per customer and "
        "audience, a tombstone on exit), written with the deltas; default <topic>.members.",
    )

    audiences: Path | None = Field(
        default=None,
        description="The audience definitions (file or directory, relative to the "
        "configuration file) whose deltas this topic carries: deliver refuses to start when "
        "a destination names an audience none of them defines. Default: evaluate.audiences "
        "and the destinations' audience_files, when the file has them.",
    )

    @property
    def members(self) -> str:
        """The current-membership topic: named after the deltas topic it mirrors, so a
        reader with only the ``deltas:`` section (``explain``, ``deliver``) finds it."""
        return self.members_topic or f"{self.topic}.members"
