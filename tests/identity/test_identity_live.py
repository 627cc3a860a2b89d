"""Identity resolved by the evaluate service (``identity.live``) on the real broker:
anonymous records keyed by ``anonymousId`` on one topic, identified ones keyed by
``userId`` on another, and the same deltas as ``replay`` with identity on; then the
same with a SIGKILL and a second process joining and leaving mid-stream."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from streamsync.config import load_config
from streamsync.identity.resolver import IdentityStats
from streamsync.observability.metrics import Telemetry
from streamsync.runtime.app import Application
from streamsync.runtime.observer import EvaluateObserver
from streamsync.runtime.stats import EvaluateStats
from tests.identity.identity_stream import (
    IdentityStream,
    replay_identity,
    replay_resolver_stats,
    sessions,
)
from tests.runtime.evaluate_support import (
    LATENESS_MS,
    Instance,
    check_seq,
    keys,
    read_deltas,
)

pytestmark = pytest.mark.kafka

DAY = 86_400_000


def _start() -> int:
    return (int(time.time() * 1000) // DAY - 3) * DAY


@pytest.mark.parametrize("rekeyed", [False, True], ids=["keyed", "rekeyed"])
def test_live_identity_equals_replay(
    kafka_bootstrap_servers: str, tmp_path: Path, rekeyed: bool
) -> None:
    """The anonymous topic keyed by ``anonymousId`` as an input co-partitioned with the
    others, or (``rekeyed``) with another partition count, re-keyed by the re-keying
    stage: its records go to the identity topic from there."""
    stream = IdentityStream(kafka_bootstrap_servers, rekeyed=rekeyed)
    stream.produce(sessions(seed=31, visitors=160, people=60, start_ms=_start()))
    assert min(stream.routed.values()) > 100
    config = load_config(stream.config(tmp_path))
    telemetry = Telemetry()
    #: partition -> its identity table's counts, as last seen while running
    tables: dict[int, IdentityStats] = {}

    #: the ``streamsync_identity`` gauge of ids linked, as last exported while running
    exported: list[float] = []

    def progress(_stats: EvaluateStats) -> None:
        for number, task in app.tasks.items():
            tables[number] = task.table.stats
        exported.append(
            sum(
                telemetry.registry.get_sample_value(
                    "streamsync_identity", {"partition": str(p), "count": "ids_linked"}
                )
                or 0.0
                for p in range(stream.partitions)
            )
        )

    app = Application(config, progress=progress, progress_interval_s=0.2)
    assert config.evaluate is not None
    app.telemetry = EvaluateObserver.for_settings(telemetry, config.evaluate, app.audiences)
    app.run(idle_timeout_s=2.0)
    live = read_deltas(kafka_bootstrap_servers, stream.deltas)
    expected = replay_identity(stream.lines, until_ms=int(time.time() * 1000))
    stitched = [d for d in expected if d.stitched]
    assert len(expected) > 100 and len(stitched) > 5
    assert keys(live) == keys(expected)
    assert {k for d in live if d.stitched for k in keys([d])} == set(keys(stitched))
    check_seq(live)
    # No anonymous id is a customer of its own.
    assert not [d for d in live if d.customer_id.startswith("anon-")]
    # What the identity tables did, as the replay resolver counts it.
    resolver = replay_resolver_stats(stream.lines)
    assert sorted(tables) == list(range(stream.partitions))
    live_counts = {
        name: sum(getattr(s, name) for s in tables.values())
        for name in ("ids_linked", "conflicting_links", "ids_held")
    }
    assert live_counts == {
        "ids_linked": resolver.ids_linked,
        "conflicting_links": resolver.conflicting_links,
        "ids_held": resolver.ids_held,
    }
    assert resolver.ids_linked > 50 and resolver.conflicting_links > 0
    assert max(exported) == resolver.ids_linked  # through the observability gauges
    assert sum(s.records_forwarded for s in tables.values()) >= resolver.records_forwarded > 50


@pytest.mark.slow
def test_live_identity_survives_sigkill_and_rebalance(
    kafka_bootstrap_servers: str, tmp_path: Path
) -> None:
    """Tasks and identity tables move to a second process and back, and one process is
    SIGKILLed twice while links and held records are in flight; below every task's
    clock the deltas are replay's, each once."""
    stream = IdentityStream(kafka_bootstrap_servers)
    records = sessions(seed=32, visitors=600, people=150, start_ms=_start())
    chunks = [
        records[i : i + len(records) // 4 + 1]
        for i in range(0, len(records), len(records) // 4 + 1)
    ]
    settings = {"wall_clock": False, "session_timeout": "6s"}
    main, extra = (
        Instance(
            stream.config(tmp_path, f"state-{i}", **settings),
            tmp_path / f"{i}.log",
            kafka_bootstrap_servers,
        )
        for i in range(2)
    )
    main.start()
    main.wait_assigned(1)
    kills = 0
    try:
        for number, chunk in enumerate(chunks):
            stream.produce(chunk)
            if number == 0:  # scale out: tasks and identity tables are shared
                extra.start()
                extra.wait_assigned(1)
            elif number in (1, 2):  # while that chunk is in flight
                time.sleep(0.3 * number)
                main.kill()
                kills += 1
                assigned = main.log.read_text().count("assigned partitions")
                main.start()
                main.wait_assigned(assigned + 1)
            else:  # and back to one process
                assert extra.stop() == 0
        deadline = time.monotonic() + 90
        while (lag := stream.lag()) > 0:
            assert time.monotonic() < deadline, f"lag {lag}: " + main.log.read_text()[-3000:]
            time.sleep(0.5)
        assert main.stop() == 0
    finally:
        for instance in (main, extra):
            if instance.process is not None and instance.process.poll() is None:
                instance.process.kill()
    assert kills == 2
    assert extra.records() > 0, extra.log.read_text()[-3000:]
    live = read_deltas(kafka_bootstrap_servers, stream.deltas)
    check_seq(live)
    counted = keys(live)
    assert max(counted.values()) == 1, "duplicate deltas"
    # Below the lowest clock any task can have reached (without the wall clock, every
    # task's clock waits for the slowest input partition, through the identity topics).
    cut = min(stream.newest.values()) - 2 * LATENESS_MS
    replayed = replay_identity(stream.lines)
    expected = {k for k in keys(replayed) if k[3] < cut}
    assert len(expected) > 200
    assert len({k for k in keys([d for d in replayed if d.stitched]) if k[3] < cut}) > 10
    got = {k for k in counted if k[3] < cut}
    assert got == expected, (sorted(got - expected)[:5], sorted(expected - got)[:5])
    stitched = {k for d in live if d.stitched for k in keys([d]) if k[3] < cut}
    assert stitched == {k for k in keys([d for d in replayed if d.stitched]) if k[3] < cut}
