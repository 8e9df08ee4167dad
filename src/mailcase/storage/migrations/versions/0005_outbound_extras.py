"""DKIM keys, VERP and bounced recipients, compliance BCC.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26

Written out in full rather than imported from the models: a migration must keep describing
the schema of its day when the models move on.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_UTC = sa.DateTime(timezone=True)  # naive UTC text on SQLite, timestamptz on PostgreSQL


def upgrade() -> None:
    op.create_table(
        "dkim_keys",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("domain", sa.String(253), nullable=False),
        sa.Column("selector", sa.String(63), nullable=False),
        sa.Column("algorithm", sa.String(16), nullable=False),
        sa.Column("public_key", sa.Text(), nullable=False),
        sa.Column("private_key", sa.LargeBinary(), nullable=False),
        sa.Column("state", sa.String(16), server_default=sa.text("'pending'"), nullable=False),
        sa.Column("created_at", _UTC, nullable=False),
        sa.Column("checked_at", _UTC, nullable=True),
        sa.Column("check_result", sa.Text(), nullable=True),
        sa.Column("activated_at", _UTC, nullable=True),
        sa.Column("retired_at", _UTC, nullable=True),
        sa.CheckConstraint(
            "algorithm IN ('rsa', 'ed25519')", name="ck_dkim_keys_algorithm_valid"
        ),
        sa.CheckConstraint(
            "state IN ('pending', 'active', 'retired')", name="ck_dkim_keys_state_valid"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_dkim_keys"),
        sa.UniqueConstraint("domain", "selector", name="uq_dkim_keys_domain_selector"),
    )
    op.create_table(
        "bounced_addresses",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("address", sa.String(320), nullable=False),
        sa.Column("status", sa.String(16), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("queue_id", sa.String(64), nullable=True),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("bounces", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.Column("first_bounced_at", _UTC, nullable=False),
        sa.Column("last_bounced_at", _UTC, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_bounced_addresses"),
        sa.UniqueConstraint("address", name="uq_bounced_addresses_address"),
    )
    op.create_table(
        "bounce_events",
        sa.Column("id", _BigId, nullable=False),
        sa.Column("time", _UTC, nullable=False),
        sa.Column("source", sa.String(100), nullable=False),
        sa.Column("recipient", sa.String(320), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("status", sa.String(16), nullable=True),
        sa.Column("action", sa.String(16), nullable=True),
        sa.Column("outbound_queue_id", sa.String(64), nullable=True),
        sa.Column("message_id", sa.Text(), nullable=True),
        sa.Column("remote_mta", sa.Text(), nullable=True),
        sa.Column("diagnostic", sa.Text(), nullable=True),
        sa.CheckConstraint("kind IN ('hard', 'soft')", name="ck_bounce_events_kind_valid"),
        sa.PrimaryKeyConstraint("id", name="pk_bounce_events"),
        sa.UniqueConstraint("source", "recipient", name="uq_bounce_events_source_recipient"),
    )
    op.create_index("ix_bounce_events_recipient", "bounce_events", ["recipient"])
    op.create_index("ix_bounce_events_outbound_queue_id", "bounce_events", ["outbound_queue_id"])
    op.create_index("ix_bounce_events_time", "bounce_events", ["time"])
    op.create_table(
        "verp_keys",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("key", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", _UTC, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_verp_keys"),
    )
    # The key signing VERP bounce addresses, made here so that every process (acceptors,
    # nodes) finds it without a first writer racing to create it.
    now = dt.datetime.now(dt.UTC)
    if op.get_bind().dialect.name == "sqlite":
        now = now.replace(tzinfo=None)  # naive UTC text, as UTCDateTime stores it
    verp = sa.table(
        "verp_keys",
        sa.column("id", sa.Integer()),
        sa.column("key", sa.LargeBinary()),
        sa.column("created_at", _UTC),
    )
    op.bulk_insert(verp, [{"id": 1, "key": secrets.token_bytes(32), "created_at": now}])


def downgrade() -> None:
    op.drop_table("verp_keys")
    op.drop_index("ix_bounce_events_time", table_name="bounce_events")
    op.drop_index("ix_bounce_events_outbound_queue_id", table_name="bounce_events")
    op.drop_index("ix_bounce_events_recipient", table_name="bounce_events")
    op.drop_table("bounce_events")
    op.drop_table("bounced_addresses")
    op.drop_table("dkim_keys")
