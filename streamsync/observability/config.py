"""The ``observability:`` section of the configuration file.

Kept beside the code it configures (and free of imports from the rest of streamsync) so
``streamsync.config`` can embed it without an import cycle.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

#: The admin port by convention of OpenTelemetry's Prometheus exporter; the Helm chart,
#: docker-compose.yml and prometheus.yml use it too.
DEFAULT_ADMIN_PORT = 9464

LogFormat = Literal["json", "text"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AdminConfig(_Model):
    """The admin HTTP server: ``/metrics``, ``/healthz`` (liveness), ``/readyz`` (readiness).

    Loopback by default, so a laptop run exposes nothing; containers set ``0.0.0.0``.
    Port 0 picks a free port (tests).
    """

    enabled: bool = True
    host: str = Field(default="127.0.0.1", min_length=1)
    port: int = Field(default=DEFAULT_ADMIN_PORT, ge=0, le=65535)
    stall_timeout_seconds: float | None = Field(
        default=None,
        gt=0,
        description="Liveness fails when the processing loop has not reported progress "
        "(Health.beat) for this long; unset: liveness only checks the process answers.",
    )


class ObservabilityConfig(_Model):
    """Metrics, traces and logs of one streamsync process."""

    service_name: str = Field(default="streamsync", min_length=1)
    admin: AdminConfig = Field(default_factory=AdminConfig)
    otlp_endpoint: str | None = Field(
        default=None,
        description="OTLP/HTTP traces endpoint, e.g. http://otel-collector:4318/v1/traces; "
        "unset: trace context still flows through Kafka headers but nothing is exported. "
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT overrides it.",
    )
    trace_sample_ratio: float = Field(
        default=1.0,
        ge=0.0,
        le=1.0,
        description="Share of traces started here that are exported (a record whose producer "
        "sampled it is always followed).",
    )
    log_format: LogFormat = "json"
    log_level: LogLevel = "INFO"
