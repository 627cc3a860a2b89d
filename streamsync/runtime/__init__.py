"""Runtime: the Kafka-facing loops that drive ingest and the engine, dead letters, and
the cross-partition watermark."""
