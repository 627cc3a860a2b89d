"""deltas"""
