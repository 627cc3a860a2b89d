"""The limiter, the offset tracker and the configuration, without the network."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamsync.config import ConfigError, parse_config
from streamsync.credentials import Credentials, CredentialsError
from streamsync.destinations.config import RateLimit
from streamsync.destinations.limiter import TokenBucket
from streamsync.destinations.offsets import OffsetTracker

INGEST = {"topics": [{"name": "in", "format": "pipelines_json"}]}


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("window", [1.0, 3.0, 60.0])
def test_token_bucket_never_exceeds_the_limit_in_any_window(window: float) -> None:
    clock = FakeClock()
    bucket = TokenBucket(RateLimit(limit=100, window_s=window), clock=clock, wall=clock)
    sent: list[float] = []
    step = window / 1000
    while clock.now < 1000 + 10 * window:
        if bucket.wait_s(1) == 0:
            bucket.take(1)
            sent.append(clock.now)
        else:
            clock.now += step
    # every sliding window of length `window` holds at most `limit` sends
    start = 0
    for end, moment in enumerate(sent):
        while sent[start] <= moment - window:
            start += 1
        assert end - start + 1 <= 100
    assert len(sent) >= 0.85 * 10 * 100  # and the limit is used, not wasted


def test_token_bucket_waits_for_a_429_reset() -> None:
    clock = FakeClock()
    bucket = TokenBucket(RateLimit(limit=100, window_s=1.0), clock=clock, wall=clock)
    bucket.block_until(1002.0)
    assert bucket.wait_s(1) > 2.0
    clock.now = 1002.0
    assert bucket.wait_s(1) > 0  # the margin after the reset
    clock.now = 1002.2
    assert bucket.wait_s(1) == 0


def test_offsets_commit_below_the_oldest_unsettled() -> None:
    tracker = OffsetTracker()
    for offset in range(5):
        tracker.track(0, offset)
    tracker.done(0, [0, 1, 3])
    assert tracker.to_commit() == {0: 2}
    tracker.committed({0: 2})
    assert tracker.to_commit() == {}
    tracker.done(0, [2, 4])
    assert tracker.to_commit() == {0: 5}
    tracker.forget([0])
    assert tracker.position(0) is None


def test_credentials_from_env_or_file(tmp_path: Path) -> None:
    secret = tmp_path / "key"
    secret.write_text("s3cret\n")
    assert Credentials(file=secret).read().get_secret_value() == "s3cret"
    assert Credentials(env="K").read({"K": "abc"}).get_secret_value() == "abc"
    with pytest.raises(CredentialsError, match="environment variable K is unset"):
        Credentials(env="K").read({})
    with pytest.raises(CredentialsError, match="cannot read"):
        Credentials(file=tmp_path / "missing").read()


def test_destinations_section_picks_models_by_kind(tmp_path: Path) -> None:
    config = parse_config(
        {
            "ingest": INGEST,
            "destinations": {
                "braze-eu": {"kind": "braze", "base_url": "https://rest.fra-01.braze.eu",
                             "credentials": {"file": "secrets/braze"}},
                "moe": {"kind": "moengage", "app_id": "APP", "data_center": "02",
                        "credentials": {"env": "MOE_KEY"}, "mode": "cohort_sync"},
            },
        },
        base_dir=tmp_path,
    )  # fmt: skip
    braze, moe = config.destinations["braze-eu"], config.destinations["moe"]
    assert braze.kind == "braze" and braze.credentials.file == tmp_path / "secrets" / "braze"
    assert braze.effective_rate_limit() == RateLimit(limit=3000, window_s=3.0)  # type: ignore[attr-defined]
    assert moe.base_url == "https://api-02.moengage.com"
    assert moe.effective_rate_limit().limit == 300  # type: ignore[attr-defined]
    assert braze.consumer_group("braze-eu") == "streamsync-deliver-braze-eu"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"kind": "iterable"}, "kind must be one of braze, moengage"),
        ({"kind": "braze", "base_url": "rest.braze.com", "credentials": {"env": "K"}},
         "base_url must start with http"),
        ({"kind": "braze", "base_url": "http://x", "credentials": {"env": "K"},
          "max_objects_per_request": 76}, "max_objects_per_request"),
        ({"kind": "braze", "base_url": "http://x", "credentials": {}}, "exactly one of env"),
        ({"kind": "braze", "base_url": "http://x", "credentials": {"env": "K"},
          "api_key": "pasted-secret"}, "api_key: Extra inputs"),
        ({"kind": "moengage", "app_id": "A", "credentials": {"env": "K"},
          "array_attribute": "moe_x"}, "must not start with moe_"),
    ],
)  # fmt: skip
def test_destination_errors_name_the_problem_not_the_value(
    settings: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        parse_config({"ingest": INGEST, "destinations": {"d": settings}})
    assert "pasted-secret" not in str(info.value)


def test_control_file_states(tmp_path: Path) -> None:
    import os

    from streamsync.destinations.control import ControlFile

    path = tmp_path / "control.yaml"
    control = ControlFile(path, check_every_s=0)
    assert not control.poll().paused  # missing file: nothing paused
    path.write_text('{"paused": true, "paused_audiences": ["A"]}')
    state = control.poll()
    assert state.paused and state.paused_audiences == {"A"}
    path.write_text("paused: [not, a, bool")  # invalid: previous state kept
    os.utime(path, (1, 1))
    assert control.poll().paused
    path.unlink()
    assert control.poll() == type(state)()
