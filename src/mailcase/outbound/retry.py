"""The retry schedule, pure: when to try again after a transient failure, or give up.

Waits double from `base` (5, 10, 20 … minutes by default) up to `cap`, each spread by
±`jitter` so that many messages deferred together do not come back in one wave. A message
whose time in the queue reached `max_queue_time` is not retried: its pending recipients
bounce. The last retry is moved forward to the deadline rather than skipped, so a message
always gets its attempt at the end of its queue time.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

__all__ = ["backoff", "next_attempt"]


def backoff(
    attempts: int,
    *,
    base: float,
    cap: float,
    jitter: float,
    rand: Callable[[], float],
) -> float:
    """Seconds to wait after the `attempts`-th failed attempt (1 = the first)."""
    n = max(attempts, 1) - 1
    wait = cap if n >= 64 else min(base * (2**n), cap)
    return max(wait * (1.0 + jitter * (2.0 * rand() - 1.0)), 0.0)


def next_attempt(
    *,
    created_at: datetime,
    now: datetime,
    attempts: int,
    base: float,
    cap: float,
    jitter: float,
    max_queue_time: float,
    rand: Callable[[], float],
) -> datetime | None:
    """When to try again, or None: the queue time is up, the pending recipients bounce."""
    deadline = created_at + timedelta(seconds=max_queue_time)
    if now >= deadline:
        return None
    when = now + timedelta(
        seconds=backoff(attempts, base=base, cap=cap, jitter=jitter, rand=rand)
    )
    return min(when, deadline)
