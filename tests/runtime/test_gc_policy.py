"""The evaluate loop's collector policy: what survives a commit is frozen (full passes
skip it), cyclic garbage younger than the last commit is still collected, and cycles
among frozen objects are collected once the policy is told to rescan."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from streamsync.runtime import gc_policy


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def _cycle() -> tuple[Node, weakref.ref[Node]]:
    a, b = Node(), Node()
    a.other, b.other = b, a
    return a, weakref.ref(a)


@pytest.fixture(autouse=True)
def unfrozen() -> Iterator[None]:
    gc.collect()
    gc.unfreeze()
    yield
    gc.unfreeze()
    gc.enable()


def test_what_survives_a_commit_is_frozen_and_a_rescan_unfreezes_it() -> None:
    held = [[i] for i in range(1000)]
    gc_policy.settle()
    assert gc.get_freeze_count() >= len(held)
    scanned = {id(x) for x in gc.get_objects()}  # what a full pass would walk
    assert not any(id(x) in scanned for x in held)
    gc_policy.rescan()
    assert gc.get_freeze_count() == 0
    scanned = {id(x) for x in gc.get_objects()}
    assert all(id(x) in scanned for x in held)


def test_cyclic_garbage_made_since_the_last_commit_is_collected() -> None:
    gc_policy.settle()
    node, ref = _cycle()
    del node
    gc_policy.settle()
    assert ref() is None


def test_a_cycle_frozen_alive_is_collected_after_a_rescan() -> None:
    node, ref = _cycle()
    gc_policy.settle()  # alive at a commit: frozen
    del node
    gc_policy.settle()
    assert ref() is not None  # what freezing gives up, until tasks change
    gc_policy.rescan()
    gc_policy.settle()
    assert ref() is None


def test_nothing_is_frozen_while_the_process_has_disabled_the_collector() -> None:
    gc.disable()
    held = [[i] for i in range(100)]
    gc_policy.settle()
    assert gc.get_freeze_count() == 0
    del held
