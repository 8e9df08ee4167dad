"""Builders for spool records in storage tests."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

from mailcase.storage.spool import SpooledMessage

_seq = itertools.count()


def make_message(
    queue_id: str | None = None,
    *,
    rcpt_to: tuple[str, ...] = ("support@example.test",),
    content: bytes | bytearray | None = None,
    message_id: str | None = "<m@example.test>",
    **extra: object,
) -> SpooledMessage:
    qid = queue_id or f"Q{next(_seq):08d}"
    body = (
        content
        if content is not None
        else bytearray(
            b"Received: from client.example.test\r\nSubject: test " + qid.encode()
            + b"\r\nMessage-ID: <m@example.test>\r\n\r\nHello.\r\n"
        )
    )
    fields: dict[str, object] = {
        "queue_id": qid,
        "received_at": datetime.now(UTC),
        "client_ip": "192.0.2.1",
        "helo": "client.example.test",
        "mail_from": "sender@example.org",
        "rcpt_to": rcpt_to,
        "tls_version": "TLSv1.3",
        "tls_cipher": "TLS_AES_256_GCM_SHA384",
        "tls_bits": 256,
        "requiretls": False,
        "smtputf8": False,
        "body_type": "8BITMIME",
        "size": len(body),
        "message_id": message_id,
        "content": body,
    }
    fields.update(extra)
    return SpooledMessage(**fields)  # type: ignore[arg-type]


def accepted_reply(msg: SpooledMessage) -> tuple[int, str]:
    """The reply `Spool.store` logs with the message (what the session passes)."""
    return 250, f"2.0.0 Ok: queued as {msg.queue_id}"
