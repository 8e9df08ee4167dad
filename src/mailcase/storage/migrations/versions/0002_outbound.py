"""Outbound queue (messages, contents, recipients, attempts) and Email Relay (relays, filters).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26

Written out in full rather than imported from the models: a migration must keep describing
the schema of its day when the models move on.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_UTC = sa.DateTime(timezone=True)  # naive UTC text on SQLite, timestamptz on PostgreSQL


def upgrade() -> None:
    op.create_table(
        "outbound_messages",
        sa.Column("id", _BigId, nullable=False),
        sa.Column("queue_id", sa.String(64), nullable=False),
        sa.Column("created_at", _UTC, nullable=False),
        sa.Column("mail_from", sa.Text(), nullable=False),
        sa.Column("message_id", sa.Text(), nullable=True),
        sa.Column("category", sa.String(16), server_default=sa.text("'user'"), nullable=False),
        sa.Column("source", sa.Text(), nullable=True),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(16), server_default=sa.text("'queued'"), nullable=False),
        sa.Column("next_attempt_at", _UTC, nullable=False),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("finished_at", _UTC, nullable=True),
        sa.CheckConstraint(
            "category IN ('system', 'auto', 'user')", name="ck_outbound_messages_category_valid"
        ),
        sa.CheckConstraint(
            "state IN ('queued', 'held', 'delivered', 'bounced')",
            name="ck_outbound_messages_state_valid",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_outbound_messages"),
        sa.UniqueConstraint("queue_id", name="uq_outbound_messages_queue_id"),
    )
    op.create_index(
        "ix_outbound_messages_state_next_attempt_at",
        "outbound_messages",
        ["state", "next_attempt_at"],
    )
    op.create_index("ix_outbound_messages_message_id", "outbound_messages", ["message_id"])
    op.create_index("ix_outbound_messages_source", "outbound_messages", ["source"])
    op.create_table(
        "outbound_contents",
        sa.Column("message_pk", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["message_pk"],
            ["outbound_messages.id"],
            name="fk_outbound_contents_message_pk_outbound_messages",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("message_pk", name="pk_outbound_contents"),
    )
    op.create_table(
        "outbound_recipients",
        sa.Column("id", _BigId, nullable=False),
        sa.Column("message_pk", sa.BigInteger(), nullable=False),
        sa.Column("address", sa.Text(), nullable=False),
        sa.Column("domain", sa.Text(), nullable=False),
        sa.Column("state", sa.String(16), server_default=sa.text("'queued'"), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("last_stage", sa.String(16), nullable=True),
        sa.Column("last_reply_code", sa.Integer(), nullable=True),
        sa.Column("last_reply", sa.Text(), nullable=True),
        sa.Column("updated_at", _UTC, nullable=True),
        sa.CheckConstraint(
            "state IN ('queued', 'delivered', 'deferred', 'bounced', 'suppressed')",
            name="ck_outbound_recipients_state_valid",
        ),
        sa.ForeignKeyConstraint(
            ["message_pk"],
            ["outbound_messages.id"],
            name="fk_outbound_recipients_message_pk_outbound_messages",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_outbound_recipients"),
        sa.UniqueConstraint(
            "message_pk", "address", name="uq_outbound_recipients_message_pk_address"
        ),
    )
    op.create_index("ix_outbound_recipients_address", "outbound_recipients", ["address"])
    op.create_table(
        "outbound_attempts",
        sa.Column("id", _BigId, nullable=False),
        sa.Column("message_pk", sa.BigInteger(), nullable=False),
        sa.Column("recipient_pk", sa.BigInteger(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("started_at", _UTC, nullable=False),
        sa.Column("finished_at", _UTC, nullable=True),
        sa.Column("result", sa.String(16), server_default=sa.text("'inflight'"), nullable=False),
        sa.Column("relay", sa.Text(), nullable=True),
        sa.Column("remote_host", sa.Text(), nullable=True),
        sa.Column("remote_ip", sa.Text(), nullable=True),
        sa.Column("remote_port", sa.Integer(), nullable=True),
        sa.Column("tls_mode", sa.String(20), nullable=True),
        sa.Column("tls_version", sa.Text(), nullable=True),
        sa.Column("tls_cipher", sa.Text(), nullable=True),
        sa.Column("tls_verified", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("verified_by", sa.String(16), nullable=True),
        sa.Column("stage", sa.String(16), nullable=True),
        sa.Column("reply_code", sa.Integer(), nullable=True),
        sa.Column("reply_text", sa.Text(), nullable=True),
        sa.Column("seconds_in_queue", sa.Float(), nullable=True),
        sa.CheckConstraint(
            "result IN ('inflight', 'delivered', 'transient', 'permanent')",
            name="ck_outbound_attempts_result_valid",
        ),
        sa.ForeignKeyConstraint(
            ["message_pk"],
            ["outbound_messages.id"],
            name="fk_outbound_attempts_message_pk_outbound_messages",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["recipient_pk"],
            ["outbound_recipients.id"],
            name="fk_outbound_attempts_recipient_pk_outbound_recipients",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_outbound_attempts"),
    )
    op.create_index("ix_outbound_attempts_message_pk", "outbound_attempts", ["message_pk"])
    op.create_index("ix_outbound_attempts_result", "outbound_attempts", ["result"])
    op.create_table(
        "relays",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("host", sa.Text(), nullable=False),
        sa.Column("host_kind", sa.String(8), server_default=sa.text("'host'"), nullable=False),
        sa.Column("port", sa.Integer(), server_default=sa.text("25"), nullable=False),
        sa.Column(
            "tls_mode", sa.String(20), server_default=sa.text("'preferred'"), nullable=False
        ),
        sa.Column("auth_mechanism", sa.String(8), nullable=True),
        sa.Column("username", sa.Text(), nullable=True),
        sa.Column("password", sa.Text(), nullable=True),
        sa.Column("active", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("created_at", _UTC, nullable=False),
        sa.CheckConstraint(
            "tls_mode IN ('off', 'preferred', 'required', 'preferred_verify', "
            "'required_verify')",
            name="ck_relays_tls_mode_valid",
        ),
        sa.CheckConstraint("host_kind IN ('host', 'mx')", name="ck_relays_host_kind_valid"),
        sa.CheckConstraint(
            "auth_mechanism IS NULL OR auth_mechanism IN ('PLAIN', 'LOGIN')",
            name="ck_relays_auth_mechanism_valid",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_relays"),
        sa.UniqueConstraint("name", name="uq_relays_name"),
    )
    op.create_table(
        "relay_filters",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("relay_id", sa.Integer(), nullable=False),
        sa.Column("sender_pattern", sa.Text(), server_default=sa.text("'*'"), nullable=False),
        sa.Column(
            "recipient_pattern", sa.Text(), server_default=sa.text("'*'"), nullable=False
        ),
        sa.Column("priority", sa.Integer(), server_default=sa.text("100"), nullable=False),
        sa.Column("active", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("created_at", _UTC, nullable=False),
        sa.ForeignKeyConstraint(
            ["relay_id"],
            ["relays.id"],
            name="fk_relay_filters_relay_id_relays",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_relay_filters"),
    )
    op.create_index("ix_relay_filters_priority", "relay_filters", ["priority"])


def downgrade() -> None:
    op.drop_index("ix_relay_filters_priority", table_name="relay_filters")
    op.drop_table("relay_filters")
    op.drop_table("relays")
    op.drop_index("ix_outbound_attempts_result", table_name="outbound_attempts")
    op.drop_index("ix_outbound_attempts_message_pk", table_name="outbound_attempts")
    op.drop_table("outbound_attempts")
    op.drop_index("ix_outbound_recipients_address", table_name="outbound_recipients")
    op.drop_table("outbound_recipients")
    op.drop_table("outbound_contents")
    op.drop_index("ix_outbound_messages_source", table_name="outbound_messages")
    op.drop_index("ix_outbound_messages_message_id", table_name="outbound_messages")
    op.drop_index(
        "ix_outbound_messages_state_next_attempt_at", table_name="outbound_messages"
    )
    op.drop_table("outbound_messages")
