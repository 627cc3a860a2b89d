"""streamsync: one audience definition, evaluated exactly, driving every channel.

Data flows through the package in this order:

    ingest/        Customer.io records (JSON, webhooks, Avro) -> typed ``Event``
    audiences/     definitions (YAML) and the event-time engine -> membership deltas
    deltas/        the membership delta record and its encodings
    runtime/       Kafka consumer loops that drive ingest and the engine
    destinations/  Braze and MoEngage producers (and local stand-ins)
    kafka/         broker helpers: the local KRaft broker, client configuration
    observability/ logging and metrics
    cli/           the ``streamsync`` command
"""

__version__ = "0.1.0"
