"""The per-session rejection tally: a few rejections logged one by one, a flood summarised."""

from __future__ import annotations

import pytest

from mailcase.policy import RejectionSummary, RejectionTally


def test_the_first_rejections_are_logged_then_counted_per_kind():
    t = RejectionTally(3)
    logged = [
        t.record("RCPT", "unknown recipient", 550, "no such mailbox", [f"u{i}@x.test"])
        for i in range(1000)
    ]
    assert logged[:3] == [True] * 3 and not any(logged[3:])
    t.record("RCPT", "relay denied", 550, "Relay access denied", ["a@elsewhere.test"])
    assert t.summaries() == [
        RejectionSummary(
            "RCPT", "unknown recipient", 550, "no such mailbox", 997,
            ["u3@x.test", "u4@x.test", "u5@x.test", "u6@x.test", "u7@x.test"],
        ),
        RejectionSummary("RCPT", "relay denied", 550, "Relay access denied", 1, ["a@elsewhere.test"]),
    ]


def test_a_few_mistakes_leave_nothing_to_summarise():
    t = RejectionTally(10)
    assert all(t.record("RCPT", "unknown recipient", 550, "no", ["a@x.test"]) for _ in range(10))
    assert t.summaries() == []


def test_zero_summarises_everything_and_negative_is_refused():
    t = RejectionTally(0)
    assert not t.record("MAIL", "bad sender", 501, "syntax", [])
    assert t.summaries()[0].count == 1 and t.summaries()[0].samples == []
    with pytest.raises(ValueError):
        RejectionTally(-1)
