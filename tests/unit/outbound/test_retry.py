"""The retry schedule (pure): 5, 10, 20 … minutes, capped, jittered, bounded by queue time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from mailcase.outbound.retry import backoff, next_attempt

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def mid() -> float:
    return 0.5  # no jitter


def test_waits_double_from_five_minutes_up_to_the_cap() -> None:
    waits = [backoff(n, base=300, cap=3600, jitter=0.1, rand=mid) for n in range(1, 8)]
    assert waits == [300, 600, 1200, 2400, 3600, 3600, 3600]
    assert backoff(10_000, base=300, cap=3600, jitter=0.0, rand=mid) == 3600  # no overflow


@pytest.mark.parametrize(("r", "factor"), [(0.0, 0.9), (1.0, 1.1), (0.25, 0.95)])
def test_jitter_spreads_by_the_given_fraction(r: float, factor: float) -> None:
    assert backoff(2, base=300, cap=3600, jitter=0.1, rand=lambda: r) == pytest.approx(
        600 * factor)


def test_a_whole_queue_lifetime_with_an_injected_clock() -> None:
    """Simulate a message that always fails: every retry time, then giving up at 24 h."""
    now, attempts, times = T0, 0, []
    while True:
        attempts += 1
        when = next_attempt(created_at=T0, now=now, attempts=attempts, base=300, cap=3600,
                            jitter=0.0, max_queue_time=86400, rand=mid)
        if when is None:
            break
        times.append((when - T0).total_seconds() / 60)
        now = when
    assert times[:6] == [5, 15, 35, 75, 135, 195]  # +5, +10, +20, +40, +60 (cap), +60
    assert times[-1] == 1440  # the last attempt is at the deadline, not skipped
    assert now == T0 + timedelta(days=1) and attempts == len(times) + 1


def test_gives_up_at_the_deadline() -> None:
    late = T0 + timedelta(seconds=86400)
    assert next_attempt(created_at=T0, now=late, attempts=3, base=300, cap=3600, jitter=0.1,
                        max_queue_time=86400, rand=mid) is None
