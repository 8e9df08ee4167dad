"""Durability under SIGKILL: every message a client saw a 250 for survives, none twice.

Concurrent clients send several thousand uniquely identified messages while the server is
killed with SIGKILL several times and restarted. A client never re-sends a message whose
250 it did not see, so any duplicate could only be our fault.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tests.support.platform import running_platform

pytestmark = pytest.mark.slow

CLIENTS = 20
MESSAGES = 3000
KILLS = 3
DEADLINE = 240.0


async def _client(port: int, ids: list[str], acked: list[str], stop_at: float) -> None:
    """Sends its share of messages over kept-open connections; reconnects after a kill."""
    pending = list(ids)
    while pending and time.monotonic() < stop_at:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
        except (OSError, TimeoutError):
            await asyncio.sleep(0.1)
            continue
        try:
            async def reply() -> bytes:
                while True:
                    line = await asyncio.wait_for(reader.readline(), 10)
                    if not line:
                        raise ConnectionError("closed")
                    if line[3:4] != b"-":
                        return line

            await reply()
            writer.write(b"EHLO crash.test\r\n")
            await reply()
            while pending and time.monotonic() < stop_at:
                mid = pending.pop()
                # Whatever happens from here on, this message is never sent again.
                body = (f"Message-ID: <{mid}>\r\nSubject: crash\r\n\r\n" + ("x" * 70 + "\r\n") * 20 + ".\r\n").encode()
                writer.write(b"MAIL FROM:<c@sender.test>\r\nRCPT TO:<crash@example.test>\r\nDATA\r\n")
                r1, r2, r3 = await reply(), await reply(), await reply()
                if not (r1.startswith(b"250") and r2.startswith(b"250") and r3.startswith(b"354")):
                    raise ConnectionError(f"unexpected {r1!r} {r2!r} {r3!r}")
                writer.write(body)
                final = await reply()
                if final.startswith(b"250"):
                    acked.append(mid)
                else:
                    writer.write(b"RSET\r\n")
                    await reply()
        except (OSError, ConnectionError, TimeoutError, asyncio.IncompleteReadError):
            await asyncio.sleep(0.05)
        finally:
            writer.close()


async def _load(port: int, ids: list[str], acked: list[str]) -> None:
    stop_at = time.monotonic() + DEADLINE
    shares = [ids[i::CLIENTS] for i in range(CLIENTS)]
    await asyncio.gather(*(_client(port, s, acked, stop_at) for s in shares))


def test_sigkill_during_load_loses_nothing_acknowledged(tmp_path: Path) -> None:
    with running_platform(tmp_path, env={"MAILCASE_LOG__MAILLOG": "none"}) as p:
        p.cli("address", "add", "crash@example.test")
        ids = [f"crash-{i}@sender.test" for i in range(MESSAGES)]
        acked: list[str] = []
        kills = 0

        def killer() -> None:
            """Kill at points of the load (about a quarter, half and three quarters
            acknowledged), not after fixed times: a faster server once finished all of it
            before the first kill."""
            nonlocal kills
            rng = random.Random(7)
            give_up = time.monotonic() + DEADLINE
            for k in range(1, KILLS + 1):
                mark = MESSAGES * k // (KILLS + 1) + rng.randint(-100, 100)
                while len(acked) < mark and time.monotonic() < give_up:
                    time.sleep(0.005)
                if len(acked) >= MESSAGES or time.monotonic() >= give_up:
                    break
                p.kill()
                kills += 1
                p.start()

        t = threading.Thread(target=killer)
        t.start()
        asyncio.run(_load(p.smtp_port, ids, acked))
        t.join(60)
        assert kills == KILLS, f"killed {kills} times, not {KILLS}"
        assert len(acked) > MESSAGES // 2, f"only {len(acked)} acknowledged"
        # Let the pipeline process what was stored, then stop cleanly.
        engine = create_engine(f"sqlite:///{p.data_dir / 'mailcase.db'}")
        deadline = time.monotonic() + 60
        while True:  # until everything acknowledged was moved in from the spool files, and processed
            with engine.connect() as c:
                left, total = c.execute(text(
                    "SELECT count(*) FILTER (WHERE state = 'received'), count(*) FROM inbound_messages"
                )).one()
            if (left == 0 and total >= len(acked)) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        p.stop()
        with engine.connect() as c:
            rows = c.execute(text("SELECT message_id, state FROM inbound_messages")).all()
            deliveries = c.execute(text(
                "SELECT m.message_id, count(d.id) FROM inbound_messages m "
                "LEFT JOIN inbound_deliveries d ON d.message_pk = m.id GROUP BY m.id, m.message_id"
            )).all()
        engine.dispose()
    counts = Counter(r.message_id for r in rows)
    stored = {mid.strip("<>") for mid in counts}
    lost = [m for m in acked if m not in stored]
    dups = {m: n for m, n in counts.items() if n > 1}
    assert lost == [], f"{len(lost)} acknowledged messages lost, e.g. {lost[:5]}"
    assert dups == {}, f"duplicates: {list(dups.items())[:5]}"
    assert all(state == "processed" for _, state in rows), Counter(s for _, s in rows)
    assert all(n == 1 for _, n in deliveries), "a message was delivered to its address more than once"
    print(f"\ncrash test: {len(acked)} acknowledged, {len(rows)} stored, {kills} SIGKILLs, 0 lost, 0 duplicates")
