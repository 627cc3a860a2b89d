"""The ``deltas:`` section of the configuration file: the membership deltas topic
between ``evaluate`` and ``deliver``, and its record format."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_DELTAS_TOPIC = "streamsync.deltas"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DeltasConfig(_Model):
    """The membership deltas topic: written by ``evaluate``, read by ``deliver``.

    Records are keyed by customer id, so one customer's deltas stay in order.
    """

    topic: str = Field(default=DEFAULT_DELTAS_TOPIC, min_length=1)
    format: Literal["json", "avro"] = Field(
        default="json",
        description="json: the README's JSON form; avro: schemas/membership_delta.avsc in the "
        "Confluent wire format.",
    )
