"""The daily case limit as an SMTP reply (pure), and today's count read from the gate's table."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import Engine

from mailcase.config import AutomationSettings
from mailcase.features.cases.automation import service as automation
from mailcase.features.cases.automation.limits import (
    OVER_LIMIT_BOUNCE,
    OVER_LIMIT_REQUEUE,
    cases_today,
    rcpt_reply,
)
from mailcase.features.cases.store import routing as routing_store
from mailcase.storage.db import begin_write
from tests.unit.features.cases.automation.test_automation_storage import T0, _event, _settings


@pytest.mark.parametrize(
    ("action", "expected"),
    [("requeue", OVER_LIMIT_REQUEUE), ("bounce", OVER_LIMIT_BOUNCE), ("discard", None)],
)
def test_rcpt_reply(action: str, expected: object) -> None:
    cfg = AutomationSettings(daily_case_limit=5, over_limit_action=action)  # type: ignore[arg-type]
    assert rcpt_reply(cfg, 4) is None
    assert rcpt_reply(cfg, 5) == expected
    assert rcpt_reply(cfg, 50) == expected
    assert rcpt_reply(AutomationSettings(daily_case_limit=0), 10**9) is None


def test_replies_are_what_the_issue_asks() -> None:
    assert (OVER_LIMIT_REQUEUE.code, OVER_LIMIT_REQUEUE.enhanced) == (451, "4.7.1")
    assert (OVER_LIMIT_BOUNCE.code, OVER_LIMIT_BOUNCE.enhanced) == (550, "5.7.1")


def test_cases_today_counts_what_the_gate_admitted(db_engine: Engine, tmp_path: Path) -> None:
    routing = routing_store.add_routing(db_engine, "support@example.test", name="Support")
    settings = _settings(tmp_path)
    assert cases_today(db_engine, T0) == 0
    for i in range(3):
        with begin_write(db_engine) as conn:
            automation.admit(conn, settings, _event(routing), now=T0 + dt.timedelta(seconds=i))
    assert cases_today(db_engine, T0) == 3
    with db_engine.connect() as conn:
        assert cases_today(conn, T0) == 3
    assert cases_today(db_engine, T0 + dt.timedelta(days=1)) == 0
