"""A partition's range is asked again while its leadership settles (a topic created a
moment ago), and any other error is raised at once."""

from __future__ import annotations

from typing import Any, cast

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException

from streamsync.state.recovery import partition_range


class _Answers:
    """A consumer whose watermark queries fail with ``errors`` first, then answer."""

    def __init__(self, *errors: int) -> None:
        self.errors = list(errors)
        self.asked = 0

    def get_watermark_offsets(self, *_args: Any, **_kwargs: Any) -> tuple[int, int]:
        self.asked += 1
        if self.errors:
            raise KafkaException(KafkaError(self.errors.pop(0)))
        return 3, 9


def test_leadership_errors_are_asked_again() -> None:
    answers = _Answers(KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE)
    assert partition_range(cast("Consumer", answers), "c", 0) == (3, 9)
    assert answers.asked == 3


def test_other_errors_and_an_exhausted_budget_are_raised() -> None:
    with pytest.raises(KafkaException):
        partition_range(cast("Consumer", _Answers(KafkaError.TOPIC_AUTHORIZATION_FAILED)), "c", 0)
    stuck = _Answers(*[KafkaError.NOT_LEADER_FOR_PARTITION] * 1000)
    with pytest.raises(KafkaException):
        partition_range(cast("Consumer", stuck), "c", 0, budget_s=0.5)
    assert 1 < stuck.asked < 10
