"""The suppression list and the bounce record, against real databases."""

from __future__ import annotations

from sqlalchemy.engine import Engine

from mailcase.outbound.bounces import suppression
from mailcase.storage.db import begin_write


def test_suppression_list_on_both_engines(db_engine: Engine) -> None:
    with begin_write(db_engine) as conn:
        assert not suppression.is_suppressed(conn, "Kunde@Nirgendwo.example")
        suppression.suppress(conn, "<Kunde@Nirgendwo.example>", status="5.1.1", reason="unknown",
                             queue_id="Q1")
        suppression.suppress(conn, "kunde@nirgendwo.example", status="5.1.2", reason="again",
                             queue_id="Q2")
    with db_engine.connect() as conn:
        assert suppression.is_suppressed(conn, "KUNDE@nirgendwo.example")
        assert suppression.suppressed_among(conn, ["a@b.test", "kunde@NIRGENDWO.example"]) == {
            "kunde@nirgendwo.example"}
    [rec] = suppression.list_bounces(db_engine)
    assert (rec.address, rec.status, rec.bounces, rec.queue_id) == (
        "kunde@nirgendwo.example", "5.1.2", 2, "Q2")
    # One report recorded once, however often it is processed.
    with begin_write(db_engine) as conn:
        assert suppression.record_bounce(conn, source="dsn:Q9", recipient="x@y.test",
                                         status="5.1.1") == "hard"
        assert suppression.record_bounce(conn, source="dsn:Q9", recipient="X@y.test",
                                         status="5.1.1") is None
        assert suppression.record_bounce(conn, source="dsn:Q9", recipient="z@y.test",
                                         status="2.0.0", action="delivered") is None
    assert [e.recipient for e in suppression.list_events(db_engine)] == ["x@y.test"]
    assert suppression.clear(db_engine, "x@y.test")
    assert suppression.clear(db_engine, "Kunde@nirgendwo.example")
    assert not suppression.clear(db_engine, "kunde@nirgendwo.example")
    assert suppression.list_bounces(db_engine) == []
