"""Development-only parts: local stand-ins for the destinations' APIs.

Production modules never import this package; the ``streamsync dev`` command, the tests,
the benchmarks and the demo do.
"""
