"""The web console: ``streamsync console --config FILE``.

A small aiohttp application that shows what streamsync already writes - the audience
files, the deltas topic (folded into a store of the console's own, :mod:`.store`), the
membership table, the explain timeline and the admin endpoints of the running
processes - to the people who own the audiences, behind a sign-in (:mod:`.auth`).

Modules: :mod:`.config` (the ``console:`` section), :mod:`.auth` (who is asking, and
CSRF), :mod:`.store` (sizes over time), :mod:`.feed` (the store fed from Kafka),
:mod:`.catalog` (audience files and their YAML), :mod:`.sources` (the membership table,
explain and the processes' admin ports), :mod:`.pages` (handlers and templates) and
:mod:`.app` (the wiring and the security headers).

This package's ``__init__`` imports nothing: :mod:`streamsync.config` embeds
:mod:`.config`, and must not load the web stack for it.
"""
