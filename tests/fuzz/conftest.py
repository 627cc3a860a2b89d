"""Fuzzing the edge with hypothesis: bounded runs (``max_examples``, no deadline) so the
suite stays fast in CI; raise ``STREAMSYNC_FUZZ_EXAMPLES`` for a longer local run."""

from __future__ import annotations

import os

#: Examples per fuzz test; the default keeps each test to a few seconds.
EXAMPLES = int(os.environ.get("STREAMSYNC_FUZZ_EXAMPLES", "150"))
