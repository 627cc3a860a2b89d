"""Evaluate: audience definitions (YAML), their validation, and the event-time engine.

``definition`` is the language, ``loader`` reads and validates files, ``compiler`` turns
audiences into compact per-customer state and evaluators, ``engine`` runs them over
events and emits membership deltas, ``replay`` runs the engine over a file.
"""
