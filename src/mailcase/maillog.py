"""Postfix-style `maillog` lines: one line per mail event, greppable by queue id.

    2026-11-26T18:00:00.123Z mailcase/smtpd: 3F2A9C0B1D7E: client=[127.0.0.1] helo=mx.example
    … mailcase/smtpd: 3F2A9C0B1D7E: from=<a@b>, to=<c@d>, size=2048, tls=TLSv1.3:…, status=queued

Values that come from the peer are quoted safely (no CR/LF injection into the log). Secrets
never pass through here: nothing that logs calls these with credentials.
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
from pathlib import Path
from typing import TextIO

__all__ = [
    "accepted",
    "automation",
    "bounce",
    "bounced",
    "case_event",
    "configure",
    "connect",
    "deferred",
    "deferred_processing",
    "delivered",
    "disconnect",
    "event",
    "processed",
    "quarantined",
    "rejected",
]

_logger = logging.getLogger("mailcase.maillog")
_logger.propagate = False


def configure(target: str) -> None:
    """`stderr`, `none` or a file path (appended to)."""
    for h in list(_logger.handlers):
        _logger.removeHandler(h)
        h.close()
    _logger.setLevel(logging.INFO)
    if target == "none":
        return  # no handler: `event` returns before formatting anything
    stream: TextIO | None = None
    if target == "stderr":
        stream = sys.stderr
        handler: logging.Handler = logging.StreamHandler(stream)
    else:
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(target, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(message)s"))
    _logger.addHandler(handler)


def _clean(value: object) -> str:
    s = str(value)
    if any(c in s for c in "\r\n\x00"):
        s = s.replace("\r", "\\r").replace("\n", "\\n").replace("\x00", "\\0")
    return s


def event(program: str, queue_id: str | None, **fields: object) -> None:
    """Write one line; `fields` keep their order, None values are left out."""
    if not _logger.handlers:
        return
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    parts = ", ".join(f"{k}={_clean(v)}" for k, v in fields.items() if v is not None)
    qid = queue_id or "NOQUEUE"
    _logger.info("%s mailcase/%s: %s: %s", now, program, qid, parts)


def connect(client_ip: str, port: int) -> None:
    event("smtpd", None, connect=f"[{client_ip}]:{port}")


def disconnect(client_ip: str, reason: str) -> None:
    event("smtpd", None, disconnect=f"[{client_ip}]", reason=reason)


def accepted(
    queue_id: str,
    *,
    client_ip: str,
    helo: str | None,
    mail_from: str,
    rcpt_to: list[str],
    size: int,
    tls: str,
    message_id: str | None,
) -> None:
    event(
        "smtpd",
        queue_id,
        client=f"[{client_ip}]",
        helo=helo,
        **{"from": f"<{mail_from}>"},
        to=",".join(f"<{r}>" for r in rcpt_to),
        size=size,
        tls=tls,
        message_id=message_id,
        status="queued",
    )


def rejected(
    *,
    stage: str,
    client_ip: str,
    helo: str | None,
    mail_from: str | None,
    rcpt_to: list[str],
    reply: str,
    reason: str,
) -> None:
    event(
        "smtpd",
        None,
        reject=stage,
        client=f"[{client_ip}]",
        helo=helo,
        **{"from": None if mail_from is None else f"<{mail_from}>"},
        to=",".join(f"<{r}>" for r in rcpt_to) or None,
        reply=reply,
        reason=reason,
    )


def processed(queue_id: str, *, destination: str) -> None:
    event("pipeline", queue_id, status="processed", destination=destination)


def quarantined(queue_id: str, *, error: str) -> None:
    event("pipeline", queue_id, status="quarantined", error=error)


def deferred_processing(queue_id: str, *, error: str) -> None:
    """The pipeline left a message for a later attempt (e.g. DNS temporarily failing)."""
    event("pipeline", queue_id, status="deferred", error=error)


def case_event(
    queue_id: str | None,
    *,
    action: str,
    case: str | None = None,
    routing: str | None = None,
    detail: str | None = None,
) -> None:
    """Email-to-Case: a case created, an email attached, a sender refused, a duplicate…"""
    event("cases", queue_id, action=action, case=case, routing=routing, detail=detail)


def bounce(
    queue_id: str | None,
    *,
    recipient: str,
    status: str | None,
    kind: str,
    source: str,
    remote_mta: str | None = None,
) -> None:
    """A bounce of one of our messages was recorded (hard ones suppress the address)."""
    event(
        "bounce", queue_id, to=f"<{recipient}>", status=status or "-", kind=kind,
        source=source, relay=remote_mta,
        suppressed="yes" if kind == "hard" else None,
    )


def automation(queue_id: str | None, *, what: str, **fields: object) -> None:
    """Email-to-Case automation: a loop stopped, an auto-reply sent or suppressed, a limit hit."""
    event("automation", queue_id, event=what, **fields)


def _outbound(
    status: str,
    queue_id: str,
    *,
    to: str,
    relay: str,
    delay: float,
    attempt: int,
    tls: str,
    reply: str,
) -> None:
    # Postfix's smtp lines: "to=<x>, relay=mx[ip]:25, delay=.., dsn=.., status=sent (reply)"
    event(
        "smtp",
        queue_id,
        to=f"<{to}>",
        relay=relay,
        delay=f"{delay:.2f}",
        attempt=attempt,
        tls=tls,
        status=f"{status} ({reply})",
    )


def delivered(queue_id: str, *, to: str, relay: str, delay: float, attempt: int, tls: str,
              reply: str) -> None:
    """An outbound recipient delivered (the remote server said 250 after the final dot)."""
    _outbound("sent", queue_id, to=to, relay=relay, delay=delay, attempt=attempt, tls=tls,
              reply=reply)


def deferred(queue_id: str, *, to: str, relay: str, delay: float, attempt: int, tls: str,
             reply: str) -> None:
    """An outbound attempt failed transiently; the recipient stays queued for a retry."""
    _outbound("deferred", queue_id, to=to, relay=relay, delay=delay, attempt=attempt, tls=tls,
              reply=reply)


def bounced(queue_id: str, *, to: str, relay: str, delay: float, attempt: int, tls: str,
            reply: str) -> None:
    """An outbound recipient failed permanently (or its queue time ran out)."""
    _outbound("bounced", queue_id, to=to, relay=relay, delay=delay, attempt=attempt, tls=tls,
              reply=reply)
