"""Deliver: membership deltas to Braze and MoEngage, one consumer group per destination.

``config`` (the ``destinations:`` section and the registry of kinds), ``braze`` and
``moengage`` (one module per kind: its settings and its API client), ``sink`` (batching,
order, rate limits, retries, acknowledgements - shared by every kind), ``deliver`` (the
Kafka loop and :func:`~streamsync.destinations.deliver.run_delivery`).
"""
