"""Observability: logging and metrics (OpenTelemetry). Not built yet."""
