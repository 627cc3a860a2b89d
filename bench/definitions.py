"""Loading a large audience definition file: one strict parse against the former two.

Writes a file of N audiences (the shapes of the canonical ones, about 10 MB at the
default size) and times, in this process:

* ``streamsync check_audiences`` - read once, parse once (libyaml events, depth-bounded
  composer), build the data from the same node tree, validate every audience;
* ``baseline compose + safe_load`` - what the loader did before: ``yaml.compose`` for the
  line marks and ``yaml.safe_load`` for the data, two full pure-Python parses, without
  even validating.

Each step runs in a fresh interpreter, so its peak resident memory (``ru_maxrss``) and
CPU time are its own; on a shared machine CPU time is the steadier figure.
Run: ``.venv/bin/python bench/definitions.py [--audiences N]``.
"""

from __future__ import annotations

import argparse
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from streamsync.audiences.loader import check_audiences

DEFAULT_AUDIENCES = 19_500  # about 10 MB

_BLOCK = """\
  - name: ACT__Generated__{i}
    version: 1
    owner: retention@example.com
    description: Added to cart, no order for 90 minutes; expires 7 days after the cart add.
    entry:
      all:
        - since_last: {{event: Product Added, at_least: 90m, less_than: 7d}}
        - count: {{event: Product Viewed, at_least: 2, within: 7d, per: product_id}}
        - not: {{trait: {{name: subscription_status, equals: cancelled}}}}
    exit:
      occurred_since_last: {{event: Order Completed, since: {{event: Product Added}}}}
"""


def _step(name: str, path: Path) -> None:
    """One measured step, in this (fresh) interpreter; prints one result line."""
    started = time.perf_counter()
    if name == "ours":
        audiences, problems = check_audiences(path)
        assert audiences and not problems
        label = "streamsync check_audiences"
    else:
        source = path.read_text("utf-8")
        yaml.compose(source, Loader=yaml.SafeLoader)
        yaml.safe_load(source)
        label = "baseline compose + safe_load"
    elapsed = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = usage.ru_utime + usage.ru_stime  # whole process: includes start-up and imports
    print(
        f"{label:<32} {elapsed:8.1f} s wall  {cpu:8.1f} s CPU  "
        f"peak RSS {usage.ru_maxrss / 1024:6.0f} MiB",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--audiences", type=int, default=DEFAULT_AUDIENCES)
    parser.add_argument("--step", choices=["ours", "baseline"], help=argparse.SUPPRESS)
    parser.add_argument("--file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.step:
        _step(args.step, args.file)
        return 0
    print("$ " + shlex.join([sys.executable, *sys.argv]))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "many.yaml"
        text = "audiences:\n" + "".join(_BLOCK.format(i=i) for i in range(args.audiences))
        path.write_text(text, "utf-8")
        print(f"{args.audiences:,} audiences, {path.stat().st_size / 1e6:.1f} MB", flush=True)
        for step in ("ours", "baseline"):
            command = [sys.executable, __file__, "--step", step, "--file", str(path)]
            subprocess.run(command, check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
