"""The Received header we prepend to every accepted message (RFC 5321 §4.4).

It records the TLS facts the way Postfix does with `smtpd_tls_received_header`, so that
anyone reading the message later can see how it travelled:
`(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits))`.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import re

from mailcase.smtp.server import TLSFacts

__all__ = ["received_header", "protocol_keyword"]

_UNSAFE = re.compile(r"[^A-Za-z0-9.\-_:\[\]@]")


def _safe(text: str | None, limit: int = 255) -> str:
    """Peer-supplied names are reduced to a safe character set: they end up in headers."""
    if not text:
        return "unknown"
    return _UNSAFE.sub("?", text)[:limit]


_last_date: tuple[int, str] = (-1, "")


def _date(when: dt.datetime) -> str:
    """RFC 5322 date of `when` in UTC, formatted once per second (a cost on every message)."""
    global _last_date  # noqa: PLW0603 - a one-entry cache
    utc = when.astimezone(dt.UTC)
    second = int(utc.timestamp())
    cached = _last_date
    if cached[0] == second:
        return cached[1]
    text = email.utils.format_datetime(utc.replace(microsecond=0))
    _last_date = (second, text)
    return text


def protocol_keyword(*, esmtp: bool, tls: bool, smtputf8: bool) -> str:
    """`with` keyword (RFC 3848, RFC 6531 §4.3): SMTP, ESMTP, ESMTPS, UTF8SMTP, UTF8SMTPS."""
    if smtputf8:
        return "UTF8SMTPS" if tls else "UTF8SMTP"
    if not esmtp:
        return "SMTP"
    return "ESMTPS" if tls else "ESMTP"


def received_header(
    *,
    helo: str | None,
    client_ip: str,
    hostname: str,
    queue_id: str,
    esmtp: bool,
    tls: TLSFacts | None,
    smtputf8: bool,
    recipient: str | None,
    when: dt.datetime,
) -> bytes:
    """The folded header line, CRLF-terminated, ready to prepend to the content."""
    proto = protocol_keyword(esmtp=esmtp, tls=tls is not None, smtputf8=smtputf8)
    ip = f"IPv6:{client_ip}" if ":" in client_ip else client_ip
    lines = [
        f"Received: from {_safe(helo)} ([{ip}])",
        f"\tby {_safe(hostname)} (mailcase) with {proto} id {queue_id}",
    ]
    if tls is not None:
        lines.append(
            f"\t(using {_safe(tls.version)} with cipher {_safe(tls.cipher)} "
            f"({tls.bits}/{tls.bits} bits))"
        )
    date = _date(when)
    if recipient is not None:
        lines.append(f"\tfor <{recipient}>; {date}")
    else:
        lines.append(f"\t; {date}")
    return ("\r\n".join(lines) + "\r\n").encode("utf-8", "replace")
