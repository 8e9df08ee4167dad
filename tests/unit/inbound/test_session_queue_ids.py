"""Inbound queue ids: unique within an instance by construction, not by chance."""

from __future__ import annotations

import re

import pytest

from mailcase.inbound import session
from mailcase.inbound.session import new_queue_id, set_queue_id_slot


@pytest.fixture(autouse=True)
def _restore_slot(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(session, "_queue_slot", session._queue_slot)


def test_ids_are_sortable_hex_with_the_process_slot() -> None:
    set_queue_id_slot(7)
    first, second = new_queue_id(), new_queue_id()
    assert re.fullmatch(r"[0-9A-F]{16}", first)
    assert first[8:10] == second[8:10] == "07"
    assert int(second[:8], 16) >= int(first[:8], 16)


def test_no_repeat_within_a_process_and_none_shared_between_slots() -> None:
    """What the spool mover relies on: it matches messages from several acceptors' spool
    files by queue id, so two acceptors must never make the same one."""
    set_queue_id_slot(1)
    one = {new_queue_id() for _ in range(100_000)}
    set_queue_id_slot(2)
    two = {new_queue_id() for _ in range(100_000)}
    assert len(one) == len(two) == 100_000
    assert one.isdisjoint(two)


@pytest.mark.parametrize("slot", [-1, 256])
def test_a_slot_outside_two_hex_digits_is_refused(slot: int) -> None:
    with pytest.raises(ValueError, match="0-255"):
        set_queue_id_slot(slot)
