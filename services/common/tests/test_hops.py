"""Hop timing (bench only): a load generator's message is timed from its send time, carried
in its content on the monotonic clock; nothing else is, and nothing at all when it is off."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry

from nextcampus_common.hops import HopClock


def generated(sent_seconds_ago: float) -> str:
    sent_us = round((time.monotonic() - sent_seconds_ago) * 1_000_000)
    return f"M|3|17|{sent_us}"


def observed(registry: CollectorRegistry, hop: str) -> tuple[float, float]:
    """(count, sum of seconds) of one hop."""
    count = registry.get_sample_value("nextcampus_chat_hop_seconds_count", {"hop": hop})
    total = registry.get_sample_value("nextcampus_chat_hop_seconds_sum", {"hop": hop})
    return count or 0.0, total or 0.0


def test_a_generated_message_is_timed_since_its_send():
    registry = CollectorRegistry()
    clock = HopClock(registry, "chat")
    clock.enabled = True
    clock.passed("chat_send", generated(sent_seconds_ago=0.25))
    count, seconds = observed(registry, "chat_send")
    assert count == 1
    assert 0.25 <= seconds < 60  # at least the quarter second since it was sent


def test_other_content_and_a_clock_that_is_off_time_nothing():
    registry = CollectorRegistry()
    clock = HopClock(registry, "chat")
    clock.passed("chat_send", generated(sent_seconds_ago=0.25))  # off by default
    clock.enabled = True
    for content in ("hello", "P|3|17|123", "M|x|17|123", ""):
        clock.passed("chat_send", content)
    assert observed(registry, "chat_send") == (0.0, 0.0)
