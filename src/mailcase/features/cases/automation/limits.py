"""The daily case limit as an SMTP-time decision, for the recipient policy to use.

The pipeline's gate (`automation.admit`) enforces the limit after acceptance; when the count
of today's cases is known at RCPT time the SMTP side can refuse earlier and more cheaply:
"requeue" becomes a 451 4.7.1 (the sender's MTA retries later) and "bounce" a 550 5.7.1 (the
sender gets its own MTA's bounce, we send nothing). "discard" has no SMTP form: the message is
accepted and the pipeline drops it.

`rcpt_reply` is pure; `cases_today` is one primary-key read, cheap enough to refresh every
few seconds (the gateway's AddressBook refresh is the natural place).
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Connection, Engine, select

from mailcase.config import AutomationSettings
from mailcase.features.cases.automation.models import automation_daily_counts
from mailcase.smtp.replies import Reply

__all__ = ["OVER_LIMIT_BOUNCE", "OVER_LIMIT_REQUEUE", "cases_today", "rcpt_reply"]

#: RFC 3463 §3.8 X.7.1: delivery not authorized (here: the instance's daily case quota).
OVER_LIMIT_REQUEUE = Reply(451, "4.7.1", "Daily case limit reached; try again later")
OVER_LIMIT_BOUNCE = Reply(550, "5.7.1", "Daily case limit reached; message refused")


def rcpt_reply(cfg: AutomationSettings, cases_today: int) -> Reply | None:
    """The RCPT reply for a routing address when today's cases are at the limit, else None."""
    if not cfg.daily_case_limit or cases_today < cfg.daily_case_limit:
        return None
    if cfg.over_limit_action == "requeue":
        return OVER_LIMIT_REQUEUE
    if cfg.over_limit_action == "bounce":
        return OVER_LIMIT_BOUNCE
    return None  # discard: accept, the pipeline logs and drops it


def cases_today(bind: Engine | Connection, now: dt.datetime | None = None) -> int:
    """Cases created from email today (UTC), as counted by the gate."""
    day = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC).date().isoformat()
    stmt = select(automation_daily_counts.c.cases).where(automation_daily_counts.c.day == day)
    if isinstance(bind, Engine):
        with bind.connect() as conn:
            value = conn.execute(stmt).scalar_one_or_none()
    else:
        value = bind.execute(stmt).scalar_one_or_none()
    return int(value or 0)
