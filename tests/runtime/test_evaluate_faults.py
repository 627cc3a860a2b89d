"""Exactly-once under faults: ``streamsync evaluate`` processes are SIGKILLed at random
moments, scaled from one to three and back, while the stream is being produced; at the
end a read-committed reader of the deltas topic sees exactly the transitions replay
computes (no duplicates, no gaps, ``seq`` continuous)."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from tests.runtime.evaluate_support import (
    Instance,
    Stream,
    check_final_deltas,
    synthetic,
    wait_until_committed,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def test_sigkill_and_scaling_mid_stream_lose_and_duplicate_nothing(
    kafka_bootstrap_servers: str, tmp_path: Path
) -> None:
    rng = random.Random(8)
    stream = Stream(kafka_bootstrap_servers, partitions=3)
    records = synthetic(400, 24_000, seed=8)
    chunks = [records[i : i + 3000] for i in range(0, len(records), 3000)]
    # A cache far smaller than the customers: most are read back from the state store.
    settings = {
        "wall_clock": False,
        "session_timeout": "6s",
        "commit_interval": "100ms",
        "cache_customers": 40,
    }
    instances = [
        Instance(
            stream.config(tmp_path, f"state-{i}", **settings),
            tmp_path / f"{i}.log",
            kafka_bootstrap_servers,
        )
        for i in range(3)
    ]
    main, *extra = instances
    main.start()
    main.wait_assigned(1)
    kills = 0
    try:
        for number, chunk in enumerate(chunks):
            stream.produce(chunk)
            if number in (1, 3, 6):  # while that chunk is being processed
                time.sleep(rng.uniform(0.05, 1.0))
                main.kill()
                kills += 1
                main.start()
            elif number == 2:  # scale out to three processes
                for instance in extra:
                    instance.start()
                for instance in extra:
                    instance.wait_assigned(1)
            elif number == 4:  # and back to one, once the three have done work
                wait_until_committed(stream, 120)
                for instance in extra:
                    assert instance.stop() == 0
            else:
                time.sleep(rng.uniform(0.2, 0.8))
        wait_until_committed(stream, 120)
        assert main.stop() == 0
    finally:
        for instance in instances:
            if instance.process is not None and instance.process.poll() is None:
                instance.process.kill()
    for instance in extra:
        assert instance.records() > 0, instance.log.read_text()
    assert kills == 3
    check_final_deltas(kafka_bootstrap_servers, stream, more_than=2000)
