"""The per-message time limit (issue 11 item 2): past it the caller moves on; late threads are
counted and capped; a result or an error within the limit is handed back as is."""

from __future__ import annotations

import threading

import pytest

from mailcase.watchdog import Watchdog


def test_result_and_error_within_the_limit() -> None:
    dog = Watchdog(30.0)
    assert dog.run(lambda: 42) == 42
    with pytest.raises(ValueError, match="bad input"):
        dog.run(lambda: (_ for _ in ()).throw(ValueError("bad input")))
    assert dog.late == 0


def test_past_the_limit_the_caller_moves_on_and_late_threads_are_capped() -> None:
    release = threading.Event()
    dog = Watchdog(0.01, max_late=2)
    assert dog.run(lambda: release.wait(60)) is None  # blocked until released: late
    dog.limit = 30.0
    assert dog.run(lambda: 7) == 7  # not queued behind the late one
    dog.limit = 0.01
    assert dog.run(lambda: release.wait(60)) is None
    assert dog.late == 2
    ran = threading.Event()
    assert dog.run(ran.set) is None  # two late already: not even started
    assert not ran.is_set()
    release.set()
    for _ in range(6000):  # the late threads end on their own (bounded poll, no timing asserted)
        if dog.late == 0:
            break
        threading.Event().wait(0.01)
    assert dog.late == 0
    dog.limit = 30.0
    assert dog.run(lambda: "again") == "again"
