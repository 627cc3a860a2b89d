"""Cost of reporting through Telemetry, against the OpenTelemetry SDK's own instruments.

The hot loop reports per record or per delta, so each call's cost matters. Times, in this
process, N calls of:

* ``telemetry counter`` - ``Telemetry.membership_changed`` (a locked dictionary update,
  read by an asynchronous OTel counter at scrape time);
* ``baseline otel counter`` - the SDK's synchronous ``Counter.add`` with the same two
  attributes, what a straightforward facade would call;
* ``telemetry histogram`` - ``Telemetry.observe_delta_to_destination`` (the SDK's histogram);
* ``floor`` - a bare loop calling a no-op method, the cost of the call itself;
* ``scrape`` - one ``Telemetry.render()`` with 13 audiences x 2 ops of counters.

Run: ``.venv/bin/python bench/telemetry.py [--calls N]``. Not run by the tests (a smoke test
runs it with a few calls); timings are wall-clock, one pass after a short warm-up.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Callable, Sequence

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from streamsync.observability.metrics import Telemetry

DEFAULT_CALLS = 500_000
_AUDIENCES = [f"ACT__Audience{i:02d}" for i in range(13)]


class _Noop:
    def call(self, audience: str, op: str) -> None:
        pass


def _time(calls: int, body: Callable[[int], None]) -> float:
    body(min(calls, 1000))  # warm-up
    start = time.perf_counter()
    body(calls)
    return time.perf_counter() - start


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=DEFAULT_CALLS, help="calls per run")
    args = parser.parse_args(argv)
    calls: int = args.calls
    command = shlex.join(["bench/telemetry.py", *(sys.argv[1:] if argv is None else argv)])

    telemetry = Telemetry()
    provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    otel_counter = provider.get_meter("bench").create_counter("bench.changes")
    noop = _Noop()
    audiences = _AUDIENCES

    def facade(n: int) -> None:
        changed = telemetry.membership_changed
        for i in range(n):
            changed(audiences[i % 13], "enter")

    def baseline(n: int) -> None:
        add = otel_counter.add
        for i in range(n):
            add(1, {"audience": audiences[i % 13], "op": "enter"})

    def histogram(n: int) -> None:
        observe = telemetry.observe_delta_to_destination
        for i in range(n):
            observe("braze", (i % 1000) / 1000)

    def floor(n: int) -> None:
        call = noop.call
        for i in range(n):
            call(audiences[i % 13], "enter")

    rows = [
        ("telemetry counter", _time(calls, facade)),
        ("baseline otel counter", _time(calls, baseline)),
        ("telemetry histogram", _time(calls, histogram)),
        ("floor: no-op call", _time(calls, floor)),
    ]
    for audience in audiences:
        telemetry.membership_changed(audience, "exit")
    start = time.perf_counter()
    size = len(telemetry.render())
    scrape = time.perf_counter() - start

    baseline_s = rows[1][1]
    print(f"command: .venv/bin/python {command}")
    print(f"{'run':<24} {'seconds':>8} {'us/call':>9} {'vs baseline':>12}")
    for name, seconds in rows:
        print(
            f"{name:<24} {seconds:>8.3f} {seconds / calls * 1e6:>9.3f} "
            f"{baseline_s / seconds:>11.1f}x"
        )
    print(f"scrape: {scrape * 1e3:.1f} ms for {size:,} bytes of metrics")
    telemetry.shutdown()
    provider.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
