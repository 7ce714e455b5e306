"""What a long-running process does once it has started, before it serves (both services'
`__main__`)."""

from __future__ import annotations

import gc

from nextcampus_common.settings import HeapSettings


def settle_heap(settings: HeapSettings) -> None:
    """Start-up's objects (modules, the schema, compiled scripts and queries) are collected
    once and then frozen: the collector's full collections — pauses that grow with
    everything they scan, taken on the event loop between two deliveries — look only at
    what serving allocates. The youngest generation is collected every `gc_threshold0`
    allocations instead of 700: a delivery allocates hundreds of short-lived objects, and
    most die before a collection would look at them."""
    gc.collect()
    if settings.gc_freeze:
        gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(settings.gc_threshold0, older, oldest)
