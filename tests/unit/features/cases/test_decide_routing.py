"""Pure parts of Email-to-Case: the threading decision and routing matches."""

from __future__ import annotations

import pytest

from mailcase.features.cases.decide import ThreadCase, decide, is_internal, normalize_subject
from mailcase.features.cases.routing import (
    normalize_accept_entry,
    routing_targets,
    sender_accepted,
)

OPEN = ThreadCase(7, "Working", frozenset({"ann@customer.test", "support@ours.test"}))
CLOSED = ThreadCase(8, "Closed", frozenset({"ann@customer.test"}))


def test_no_match_opens_a_case() -> None:
    d = decide(None, matched_by=None, sender="ann@customer.test", internal=False)
    assert (d.action, d.case_id, d.parent_case_id) == ("new_case", None, None)


def test_participant_attaches_unflagged() -> None:
    d = decide(OPEN, matched_by="message-id", sender="ANN@customer.test", internal=False)
    assert (d.action, d.case_id, d.sender_not_on_thread, d.reopen) == ("attach", 7, False, False)
    assert d.matched_by == "message-id"


@pytest.mark.parametrize(
    ("policy", "action", "flagged"),
    [("attach", "attach", False), ("attach_flagged", "attach", True), ("new_case", "new_case", False)],
)
def test_sender_not_on_thread_policies(policy: str, action: str, flagged: bool) -> None:
    d = decide(OPEN, matched_by="token", sender="mallory@evil.test", internal=False, not_on_thread=policy)  # type: ignore[arg-type]
    assert (d.action, d.sender_not_on_thread) == (action, flagged)
    if action == "new_case":
        assert d.case_id is None and d.parent_case_id is None


def test_internal_sender_is_on_thread() -> None:
    d = decide(OPEN, matched_by="token", sender="agent@ours.test", internal=True)
    assert d.sender_not_on_thread is False
    assert is_internal("agent@OURS.test", ["ours.test"]) and not is_internal("x@other.test", ["ours.test"])


@pytest.mark.parametrize(
    ("policy", "action", "reopen", "parent"),
    [("attach", "attach", False, None), ("reopen", "attach", True, None), ("new_linked_case", "new_case", False, 8)],
)
def test_closed_case_policies(policy: str, action: str, reopen: bool, parent: int | None) -> None:
    d = decide(CLOSED, matched_by="message-id", sender="ann@customer.test", internal=False, closed=policy)  # type: ignore[arg-type]
    assert (d.action, d.reopen, d.parent_case_id) == (action, reopen, parent)
    if action == "attach":
        assert d.case_id == 8


def test_closed_and_not_on_thread_flags_the_reopening_reply() -> None:
    d = decide(CLOSED, matched_by="token", sender="x@elsewhere.test", internal=False)
    assert (d.action, d.case_id, d.reopen, d.sender_not_on_thread) == ("attach", 8, True, True)


@pytest.mark.parametrize(
    ("accept", "sender", "ok"),
    [
        ([], "anyone@anywhere.test", True),
        (["ann@customer.test"], "ANN@customer.test", True),
        (["ann@customer.test"], "bob@customer.test", False),
        (["customer.test"], "bob@customer.test", True),
        (["@customer.test"], "bob@customer.test", True),
        (["customer.test"], "bob@sub.customer.test", False),
        (["*.customer.test"], "bob@sub.customer.test", True),
        (["*.customer.test"], "bob@customer.test", False),
        (["customer.test"], "bob@evilcustomer.test", False),
        (["*.customer.test"], "bob@evilcustomer.test", False),
        (["customer.test"], "", False),
    ],
)
def test_sender_accepted(accept: list[str], sender: str, ok: bool) -> None:
    assert sender_accepted(accept, sender) is ok


def test_accept_entries_are_checked() -> None:
    assert normalize_accept_entry(" @Customer.Test ") == "customer.test"
    assert normalize_accept_entry("Ann@Customer.test") == "ann@customer.test"
    for bad in ["", "a b@c.test", "x@@y.test", "nodot", "foo*.test", "@"]:
        with pytest.raises(ValueError):
            normalize_accept_entry(bad)


def test_routing_targets_in_recipient_order_once() -> None:
    routing = {"support@ours.test": "S", "sales@ours.test": "L"}
    assert routing_targets(["x@ours.test", "Sales@ours.test", "support@ours.test", "sales@ours.test"], routing) == ["L", "S"]
    assert routing_targets(["x@ours.test"], routing) == []


def test_normalize_subject_drops_tags() -> None:
    assert normalize_subject("RE: AW: [External] Fwd: Printer on fire") == "Printer on fire"
    assert normalize_subject("Re[2]: hello") == "hello"
    assert normalize_subject("Meeting: agenda") == "Meeting: agenda"
