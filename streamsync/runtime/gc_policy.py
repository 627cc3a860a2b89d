"""Keeps CPython's full garbage-collection passes out of the evaluate loop.

Why. A task holds its customers' state as Python containers: hundreds of thousands to
millions of long-lived objects the cyclic collector tracks. CPython runs a full
(generation 2) pass whenever a quarter more objects have survived since the last one,
and each pass walks every tracked object. While customers were being added at 10,000
records/s (200,000 in memory) that meant a 175-300 ms pass every 1-2 s, each one
stopping the loop and its commits (the p99 of append -> delta readable went from about
150 ms to 0.5-1.2 s), and every pass found nothing to collect: the state holds no
reference cycles, so reference counting frees customers and records as they are dropped.

What. After each commit, collect the objects that are not frozen (what was allocated
since the previous commit and is still alive, a few thousand objects) and freeze the
survivors (``gc.freeze``: moved to the permanent generation, which collections skip).
Each pass then costs what one cycle allocated, not the size of the state; frozen
objects are still freed by reference counting. What freezing gives up is collecting
cycles among objects that were alive at a commit and became garbage later, so when
tasks are dropped or replaced (a rebalance, a rewind) everything is unfrozen and the
next commit runs one full pass, at a moment the loop pauses anyway. Closing unfreezes.

The collector is process-wide: this is for a process that runs one evaluate
application (``streamsync evaluate``); an embedding process sees its own objects frozen
while the application runs.
"""

from __future__ import annotations

import gc


def settle() -> None:
    """After a commit: collect the unfrozen objects, freeze what survives. Nothing if
    the collector is disabled (the process manages it itself)."""
    if gc.isenabled():
        gc.collect()
        gc.freeze()


def rescan() -> None:
    """Tasks were dropped or replaced, or the application is done: unfreeze everything,
    so that the next :func:`settle` walks it all once."""
    gc.unfreeze()
