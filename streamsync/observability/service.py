"""One call that makes a streamsync process observable: logs, metrics, traces, probes.

``evaluate`` and ``deliver`` start it first thing after loading their configuration::

    obs = Observability.start(config.observability, role="evaluate", secrets=secret_values(config))
    telemetry = obs.telemetry          # handed to the runtime / the sinks
    ...                                # restore state
    telemetry.health.set_ready()
    ...
    obs.close()                        # on SIGTERM, after the last commit
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

from streamsync.observability.admin import AdminServer
from streamsync.observability.config import ObservabilityConfig
from streamsync.observability.health import Health
from streamsync.observability.logs import setup_logging
from streamsync.observability.metrics import Telemetry
from streamsync.observability.tracing import Tracing

#: The standard OpenTelemetry variable; set, it overrides ``observability.otlp_endpoint``.
OTLP_TRACES_ENDPOINT_ENV = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"


class Observability:
    """The telemetry of one process and the admin server that exposes it."""

    def __init__(self, telemetry: Telemetry, admin: AdminServer | None) -> None:
        self.telemetry = telemetry
        self.admin = admin

    @classmethod
    def start(
        cls,
        config: ObservabilityConfig,
        *,
        role: str,
        secrets: Iterable[str] = (),
        env: Mapping[str, str] | None = None,
        configure_logging: bool = True,
    ) -> Observability:
        """Set up logging, build the :class:`Telemetry` and start the admin server.

        Raises :class:`~streamsync.observability.admin.AdminServerError` (one line, for the
        user) when the admin address cannot be bound.
        """
        environ = os.environ if env is None else env
        if configure_logging:
            setup_logging(config.log_format, config.log_level, secrets=secrets)
        endpoint = environ.get(OTLP_TRACES_ENDPOINT_ENV, "").strip() or config.otlp_endpoint
        tracing = (
            Tracing.otlp(
                endpoint,
                service_name=config.service_name,
                role=role,
                sample_ratio=config.trace_sample_ratio,
            )
            if endpoint
            else Tracing(service_name=config.service_name, role=role)
        )
        telemetry = Telemetry(
            service_name=config.service_name,
            role=role,
            health=Health(stall_timeout=config.admin.stall_timeout_seconds),
            tracing=tracing,
        )
        admin = None
        if config.admin.enabled:
            admin = AdminServer(telemetry, host=config.admin.host, port=config.admin.port)
            try:
                admin.start()
            except BaseException:
                telemetry.shutdown()
                raise
        return cls(telemetry, admin)

    def close(self) -> None:
        """Stop serving probes and metrics, flush spans (idempotent)."""
        if self.admin is not None:
            self.admin.stop()
            self.admin = None
        self.telemetry.shutdown()

    def __enter__(self) -> Observability:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
