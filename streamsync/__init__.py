"""streamsync: one audience definition, evaluated exactly, driving every channel.

Data flows through the package in this order:

    ingest/        Customer.io records (JSON, webhooks, Avro) -> typed ``Event``
    audiences/     definitions (YAML) and the event-time engine -> membership deltas
    deltas/        the membership delta record and its encodings
    runtime/       Kafka consumer loops that drive ingest and the engine
    destinations/  delivery of deltas to Braze and MoEngage (``streamsync deliver``)
    kafka/         broker helpers: the local KRaft broker, client configuration
    observability/ logging and metrics (not built yet)
    cli/           the ``streamsync`` command
    dev/           development only: local stand-ins of the destinations' APIs
    demo.py        the end-to-end demo on the local default
    synthetic.py   a seeded synthetic Customer.io stream for demo, tests and benchmarks
"""

__version__ = "0.1.0"
