"""Migration 0011: outbound email-log rows written before it stay readable, their facts moved
from `helo`, `client_ip` and the free text of `reason` into the new columns (issue 12.8)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import text

from mailcase.storage import emaillog
from mailcase.storage.db import begin_write, make_engine, upgrade

OLD_REASON = ("attempt=2 delay=61.5s relay=smart host=mx.example.net[192.0.2.7]:2525 "
              "tls=TLSv1.3:TLS_AES_256_GCM_SHA384 verified(CA) tls_mode=required_verify "
              "stage=rcpt")


def test_old_outbound_rows_are_mapped_and_inbound_rows_kept(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        upgrade(engine, "0009")
        now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC).replace(tzinfo=None)
        insert = text(
            "INSERT INTO email_log (time, direction, queue_id, client_ip, helo, mail_from, "
            "rcpt_to, requiretls, outcome, reason) VALUES (:t, :d, :q, :ip, :helo, 'a@b.test', "
            "'[\"c@d.test\"]', false, :o, :r)"
        )
        with begin_write(engine) as conn:
            conn.execute(insert, {"t": now, "d": "outbound", "q": "OUT1", "ip": "192.0.2.7",
                                  "helo": "mx.example.net", "o": "deferred", "r": OLD_REASON})
            conn.execute(insert, {"t": now, "d": "outbound", "q": "OUT2", "ip": None,
                                  "helo": None, "o": "bounced",
                                  "r": "dsn:X: status 5.1.1; address suppressed"})
            conn.execute(insert, {"t": now, "d": "inbound", "q": "IN1", "ip": "198.51.100.1",
                                  "helo": "client.test", "o": "accepted", "r": None})
        upgrade(engine)
        rows = {r["queue_id"]: r for r in emaillog.query(engine)}
    finally:
        engine.dispose()
    out = rows["OUT1"]
    assert (out["remote_host"], out["remote_ip"], out["remote_port"]) == (
        "mx.example.net", "192.0.2.7", 2525)
    assert out["helo"] is None and out["client_ip"] is None
    assert (out["attempt"], out["delay"], out["relay"], out["stage"]) == (2, 61.5, "smart", "rcpt")
    assert (out["tls_mode"], out["tls_verified"], out["tls_basis"]) == (
        "required_verify", True, "ca")
    assert out["reason"] == OLD_REASON  # kept: nothing is lost
    bounce = rows["OUT2"]
    assert bounce["remote_host"] is None and bounce["attempt"] is None
    inbound = rows["IN1"]
    assert (inbound["client_ip"], inbound["helo"]) == ("198.51.100.1", "client.test")
    assert inbound["remote_host"] is None
