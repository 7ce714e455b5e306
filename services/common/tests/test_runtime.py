"""`settle_heap`: what a serving process does to its garbage collector once started."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from nextcampus_common.runtime import settle_heap
from nextcampus_common.settings import HeapSettings


@pytest.fixture
def collector() -> Iterator[None]:
    """The test process's collector as it was, afterwards."""
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


def test_start_ups_objects_are_frozen_and_young_collections_spaced(collector: None) -> None:
    gc.unfreeze()
    settle_heap(HeapSettings(gc_threshold0=10_000))
    assert gc.get_freeze_count() > 0  # the modules and everything start-up made
    assert gc.get_threshold()[0] == 10_000


def test_freezing_can_be_turned_off(collector: None, monkeypatch: pytest.MonkeyPatch) -> None:
    gc.unfreeze()
    monkeypatch.setenv("NEXTCAMPUS_GC_FREEZE", "false")
    settle_heap(HeapSettings())
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold()[0] == HeapSettings().gc_threshold0
