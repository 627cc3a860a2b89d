"""Development-only parts: the local Kafka broker (``broker.py`` and its ``pom.xml``), the
seeded synthetic Customer.io stream (``synthetic.py``), the end-to-end demo (``demo.py``)
and local stand-ins for the destinations' APIs (``standins/``).

Production modules never import this package (``tests/test_imports.py`` checks it); the
``streamsync dev`` and ``streamsync demo`` commands import it when they run, and the tests
and benchmarks use it directly.
"""
