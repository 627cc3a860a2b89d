"""Observability: metrics, health probes, traces and logs of every streamsync process.

The runtime and the sinks report through one ``Telemetry`` object (``metrics.py``: the
named instruments; ``health.py``: liveness/readiness; ``tracing.py``: spans whose context
travels in Kafka headers). ``admin.py`` serves it at ``/metrics``, ``/healthz`` and
``/readyz``; ``logs.py`` writes redacted JSON lines; ``service.py`` starts all of it from
the ``observability:`` section of the configuration (``config.py``).

Nothing is imported here, so ``streamsync.config`` can use ``config.py`` without loading
aiohttp and the OpenTelemetry SDK into every command.
"""
