"""The email log's outbound facts in their own columns (issue 12, items 4 and 8).

Outbound rows stored the remote host in `helo`, its address in `client_ip` and the rest as
free text in `reason` ("attempt=2 delay=61.0s relay=r host=mx[ip]:25 tls=... tls_mode=...
stage=rcpt"). They get columns of their own; `helo` and `client_ip` keep inbound facts only.
Existing outbound rows are mapped: host and address move, and the fields of `reason` that
parse are copied into their columns (the text itself is kept, so nothing is lost).

`tls_basis` says on what a certificate was checked (``none``, ``ca``; the transport-security
work adds ``mta-sts``, ``dane-ee``, ``dane-ta``), `tls_policy` which policy set the mode.
`outbound_attempts.tls_fallback` says why an attempt went on in plaintext after STARTTLS
failed in ``preferred`` mode.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04

Written out in full rather than imported from the models: a migration must keep describing
the schema of its day when the models move on.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

def _new() -> list[sa.Column[Any]]:
    """The new email_log columns (fresh objects each call: a Column belongs to one table)."""
    return [
        sa.Column("remote_host", sa.Text(), nullable=True),
        sa.Column("remote_ip", sa.Text(), nullable=True),
        sa.Column("remote_port", sa.Integer(), nullable=True),
        sa.Column("relay", sa.Text(), nullable=True),
        sa.Column("tls_mode", sa.String(20), nullable=True),
        sa.Column("tls_verified", sa.Boolean(), nullable=True),
        sa.Column("tls_basis", sa.String(16), nullable=True),
        sa.Column("tls_policy", sa.String(32), nullable=True),
        sa.Column("tls_fallback", sa.Text(), nullable=True),
        sa.Column("attempt", sa.Integer(), nullable=True),
        sa.Column("delay", sa.Float(), nullable=True),
        sa.Column("stage", sa.String(16), nullable=True),
    ]


_ATTEMPT = re.compile(r"(?:^| )attempt=(\d+)")
_DELAY = re.compile(r"(?:^| )delay=([0-9.]+)s")
_RELAY = re.compile(r"(?:^| )relay=(\S+)")
_HOST = re.compile(r"(?:^| )host=\S+\[[^\]]*\]:(\d+)")
_TLS_MODE = re.compile(r"(?:^| )tls_mode=(\w+)")
_VERIFIED = re.compile(r"(?:^| )tls=\S+ (verified\((\w+)\)|not-verified)")
_STAGE = re.compile(r"(?:^| )stage=(\w+)")


def _mapped(reason: str | None) -> dict[str, object]:
    """The columns the old free text of an outbound row gives (only what parses)."""
    text = reason or ""
    out: dict[str, object] = {}
    if m := _ATTEMPT.search(text):
        out["attempt"] = int(m.group(1))
    if m := _DELAY.search(text):
        try:
            out["delay"] = float(m.group(1))
        except ValueError:
            pass
    if m := _RELAY.search(text):
        out["relay"] = m.group(1)
    if m := _HOST.search(text):
        out["remote_port"] = int(m.group(1))
    if m := _TLS_MODE.search(text):
        out["tls_mode"] = m.group(1)[:20]
    if m := _VERIFIED.search(text):
        verified = m.group(2) is not None
        out["tls_verified"] = verified
        out["tls_basis"] = m.group(2).lower()[:16] if verified else "none"
    if m := _STAGE.search(text):
        out["stage"] = m.group(1)[:16]
    return out


def upgrade() -> None:
    for column in _new():
        op.add_column("email_log", column)
    op.add_column("outbound_attempts", sa.Column("tls_fallback", sa.Text(), nullable=True))

    log = sa.table(
        "email_log", sa.column("id", sa.BigInteger()), sa.column("direction", sa.String()),
        sa.column("helo", sa.Text()), sa.column("client_ip", sa.Text()),
        sa.column("reason", sa.Text()), *(sa.column(c.name, c.type) for c in _new()),
    )
    bind = op.get_bind()
    # Host and address of outbound rows move to their own columns (one statement).
    bind.execute(
        sa.update(log).where(log.c.direction == "outbound", log.c.helo.is_not(None))
        .values(remote_host=log.c.helo, remote_ip=log.c.client_ip, helo=None, client_ip=None)
    )
    # The rest of the old free text, where it parses, in batches (bounded memory).
    last = 0
    while True:
        rows = bind.execute(
            sa.select(log.c.id, log.c.reason)
            .where(log.c.direction == "outbound", log.c.id > last, log.c.reason.is_not(None))
            .order_by(log.c.id).limit(1000)
        ).all()
        if not rows:
            break
        last = rows[-1][0]
        for row_id, reason in rows:
            values = _mapped(reason)
            if values:
                bind.execute(sa.update(log).where(log.c.id == row_id).values(**values))


def downgrade() -> None:
    log = sa.table(
        "email_log", sa.column("direction", sa.String()), sa.column("helo", sa.Text()),
        sa.column("client_ip", sa.Text()), sa.column("remote_host", sa.Text()),
        sa.column("remote_ip", sa.Text()),
    )
    op.get_bind().execute(
        sa.update(log).where(log.c.direction == "outbound", log.c.remote_host.is_not(None))
        .values(helo=log.c.remote_host, client_ip=log.c.remote_ip)
    )
    with op.batch_alter_table("outbound_attempts") as batch:
        batch.drop_column("tls_fallback")
    with op.batch_alter_table("email_log") as batch:
        for column in reversed(_new()):
            batch.drop_column(column.name)
