"""Deltas: the membership change record the engine emits, and its JSON and Avro forms."""
