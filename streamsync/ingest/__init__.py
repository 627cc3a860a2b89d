"""Ingest: Customer.io records (Data Pipelines JSON, reporting webhooks, Avro) -> ``Event``."""

from streamsync.ingest.event import Event, SourcePosition

__all__ = ["Event", "SourcePosition"]
