"""Issue 13: the work per message in a batch. A batch asks the database once for what is the
same for every message (contents, senders' contacts, per-address switches, auto-response
rules, loop-table housekeeping) instead of once per message. Counted in SQL statements, which
are deterministic (no timings in tests): a regression to per-message look-ups fails here."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event

from mailcase.features.cases.store import contacts as contact_store
from mailcase.features.cases.store import routing as routing_store
from mailcase.pipeline.worker import process_pending
from mailcase.platform import build_destinations
from mailcase.storage.spool import Spool
from tests.unit.features.cases.helpers import eml, settings
from tests.unit.storage.helpers import accepted_reply, make_message

N = 40


async def test_a_batch_reads_shared_settings_once(db_engine: Engine, tmp_path: Path) -> None:
    s = settings(tmp_path)
    routing_store.add_routing(db_engine, "support@ours.test")
    contact_store.add_contact(db_engine, "known@customer.test", "Known Customer")
    spool = Spool(db_engine)
    spool.start()
    try:
        for k in range(N):
            sender = "known@customer.test" if k % 2 else f"new{k}@customer.test"
            content = eml(from_=f"<{sender}>", subject=f"Request {k}", body=f"Body {k}\r\n")
            msg = make_message(rcpt_to=("support@ours.test",), content=bytearray(content),
                               mail_from=sender)
            await spool.store(msg, *accepted_reply(msg))
    finally:
        spool.close()
    seen: Counter[str] = Counter()

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen[" ".join(statement.split())] += 1

    event.listen(db_engine, "before_cursor_execute", count)
    try:
        assert process_pending(db_engine, build_destinations(s, db_engine), batch_size=N) == N
    finally:
        event.remove(db_engine, "before_cursor_execute", count)

    def times(fragment: str) -> int:
        return sum(n for stmt, n in seen.items() if fragment in stmt)

    assert times("FROM inbound_contents") == 1
    assert times("FROM contacts") == 1
    assert times("FROM automation_address_settings") == 1
    assert times("FROM auto_response_rules") == 1
    assert times("DELETE FROM automation_loop_hits") == 1
    # What stays per message: the case, its email, the Message-ID index, the loop hit and
    # count, the daily count, the case number, the log. Bounded, whatever the batch size.
    assert sum(seen.values()) <= 9 * N, seen.most_common(12)
