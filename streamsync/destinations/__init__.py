"""Deliver: Braze and MoEngage producers. Not built yet; deltas stop at the engine."""
