"""Configuration shared by every destination kind.

The ``destinations:`` section of the configuration file maps a destination *name* (what
audiences route to and what ``streamsync deliver --destination`` takes) to one mapping
whose ``kind`` picks the model::

    destinations:
      braze:
        kind: braze
        base_url: https://rest.iad-01.braze.com
        credentials: {env: BRAZE_API_KEY}

Each kind is one module that subclasses :class:`DestinationConfig`, listed with its
client factory in :mod:`streamsync.destinations.kinds`; a third destination is a new
module and one entry there, not an edit here or in the audience language. This module
knows no kind and no client, so every kind (and the client base class) can import it.
Credentials are never in the file: ``credentials`` names an
environment variable or a mounted file (:class:`~streamsync.credentials.Credentials`),
read at start-up into a ``SecretStr``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from streamsync.credentials import Credentials
from streamsync.destinations.rollout import Rollout

DEFAULT_DEAD_LETTER_TOPIC = "streamsync.deliver.dead-letter"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RateLimit(_Model):
    """A token bucket: at most ``limit`` units per ``window_s`` seconds as the vendor
    counts them. The bucket refills at ``utilisation * limit / window_s`` per second and
    holds ``(1 - utilisation) * limit`` at most, so no window of ``window_s`` (sliding or
    fixed) ever sees more than ``limit`` units from this process."""

    limit: int = Field(gt=0)
    window_s: float = Field(gt=0)
    utilisation: float = Field(default=0.9, gt=0, lt=1)


class Retry(_Model):
    """Backoff for retriable failures (5xx, timeouts, dropped connections): full jitter
    between half and all of ``min(max, initial * 2**attempt)``, retried without a limit
    on time (the consumer pauses meanwhile, so nothing buffers without bound)."""

    initial_backoff_s: float = Field(default=0.5, gt=0)
    max_backoff_s: float = Field(default=30.0, gt=0)
    timeout_s: float = Field(default=10.0, gt=0)


class Batching(_Model):
    linger_ms: int = Field(
        default=100, ge=0, description="how long a partly filled batch waits for more changes"
    )
    max_buffered: int = Field(
        default=20_000,
        gt=0,
        description="changes held in memory before the consumer is paused (backpressure)",
    )
    max_in_flight: int = Field(
        default=1,
        ge=1,
        le=32,
        description="requests sent at once, each to distinct customers (a customer's "
        "changes stay in order; the rate limit holds for all of them together). One at a "
        "time sends nothing after a 429 before its reset; with N, up to N-1 requests "
        "already on their way when a 429 is answered arrive before it (and are sent again "
        "after it). One at a time, a destination 100 ms away takes about 10 requests a "
        "second",
    )


class DestinationConfig(_Model):
    """Fields every destination kind has; subclasses add their API's own."""

    kind: str
    base_url: str = Field(
        min_length=1,
        description="scheme://host[:port] of the API (instance or data centre); point it at "
        "a proxy or the local stand-ins freely",
    )
    credentials: Credentials
    audiences: list[str] | None = Field(
        default=None,
        description="audiences this destination receives; unset: every audience whose "
        "'destinations' names it (with audience_files), or every audience",
    )
    audience_files: Path | None = Field(
        default=None,
        description="audience definitions whose 'destinations' field routes to this name; "
        "relative to the configuration file",
    )
    holdout: Literal["skip", "marker"] = Field(
        default="skip",
        description="skip: holdout members are not delivered; marker: delivered under the "
        "audience name plus holdout_suffix, so reports can compare",
    )
    holdout_suffix: str = Field(default="__holdout", min_length=1)
    rollout: Rollout = Field(
        default_factory=Rollout,
        description="test cohort and percentage rollout: {customers: [ids], percent: 10, "
        "audiences: {NAME: {customers: [...], percent: 50}}}; unset: every customer",
    )
    group_id: str | None = Field(
        default=None, description="consumer group; default streamsync-deliver-<name>"
    )
    dead_letter_topic: str = Field(default=DEFAULT_DEAD_LETTER_TOPIC, min_length=1)
    control_file: Path | None = Field(
        default=None,
        description="JSON or YAML file read every second: {paused: bool, paused_audiences: []}",
    )
    dry_run: bool = False
    consumer: dict[str, str | int | float | bool] = Field(
        default_factory=dict,
        description="librdkafka settings for this destination's consumer only (they win)",
    )
    retry: Retry = Field(default_factory=Retry)
    batching: Batching = Field(default_factory=Batching)
    admin_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="the admin port (/metrics, /healthz, /readyz) of this destination's deliver "
        "process instead of observability.admin.port, so one configuration file runs "
        "evaluate and every deliver on one machine; 0 picks a free port",
    )

    @model_validator(mode="after")
    def _base_url(self) -> DestinationConfig:
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError("base_url must start with http:// or https://")
        return self

    def consumer_group(self, name: str) -> str:
        return self.group_id or f"streamsync-deliver-{name}"

    def named_audiences(self) -> list[tuple[str, str]]:
        """``(audience, setting)`` for every audience this entry names; kinds add those of
        their own settings (per-audience options), so a misspelt name in any of them is
        found at start-up (:func:`streamsync.destinations.checks.check_audience_names`)."""
        named = [(audience, "audiences") for audience in self.audiences or ()]
        return named + [(audience, "rollout.audiences") for audience in self.rollout.audiences]


def duplicate_names(named: list[tuple[str, str]]) -> None:
    """``ValueError`` naming the first attribute written by two settings of ``named``
    (``(attribute, setting)`` pairs): a destination's kinds call it from their validators,
    so the mistake is one line at start-up, not a value silently overwritten per change."""
    first: dict[str, str] = {}
    for name, where in named:
        if name in first:
            raise ValueError(
                f"attribute name {name!r} is written by both {first[name]} and {where}"
            )
        first[name] = where


def resolve_paths(config: DestinationConfig, base_dir: Path) -> DestinationConfig:
    """Relative file paths in ``config`` made relative to the configuration file's
    directory, so the result does not depend on the working directory (credential files
    are resolved for the whole file by
    :func:`~streamsync.credentials.resolve_credential_files`)."""

    def fix(path: Path | None) -> Path | None:
        return path if path is None or path.is_absolute() else (base_dir / path).resolve()

    update: dict[str, Any] = {
        "audience_files": fix(config.audience_files),
        "control_file": fix(config.control_file),
    }
    return config.model_copy(update=update)
