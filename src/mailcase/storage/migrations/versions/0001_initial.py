"""Initial schema: receiving addresses, spool, deliveries, email log, API tokens, generation.

Revision ID: 0001
Revises:
Create Date: 2026-11-26

Written out in full rather than imported from models.py: a migration must keep describing
the schema of its day when the models move on.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_UTC = sa.DateTime(timezone=True)  # naive UTC text on SQLite, timestamptz on PostgreSQL


def upgrade() -> None:
    op.create_table(
        "receiving_addresses",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("address", sa.String(320), nullable=False),
        sa.Column("require_tls", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("enabled", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("created_at", _UTC, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_receiving_addresses"),
        sa.UniqueConstraint("address", name="uq_receiving_addresses_address"),
    )
    op.create_table(
        "inbound_messages",
        sa.Column("id", _BigId, nullable=False),
        sa.Column("queue_id", sa.String(64), nullable=False),
        sa.Column("received_at", _UTC, nullable=False),
        sa.Column("client_ip", sa.Text(), nullable=False),
        sa.Column("helo", sa.Text(), nullable=False),
        sa.Column("mail_from", sa.Text(), nullable=False),
        sa.Column("rcpt_to", sa.JSON(), nullable=False),
        sa.Column("tls_version", sa.Text(), nullable=True),
        sa.Column("tls_cipher", sa.Text(), nullable=True),
        sa.Column("tls_bits", sa.Integer(), nullable=True),
        sa.Column("requiretls", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("smtputf8", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("body_type", sa.Text(), nullable=True),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("message_id", sa.Text(), nullable=True),
        sa.Column("state", sa.String(16), server_default=sa.text("'received'"), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("processed_at", _UTC, nullable=True),
        sa.CheckConstraint(
            "state IN ('received', 'processed', 'quarantined')",
            name="ck_inbound_messages_state_valid",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_inbound_messages"),
        sa.UniqueConstraint("queue_id", name="uq_inbound_messages_queue_id"),
    )
    op.create_index("ix_inbound_messages_state_id", "inbound_messages", ["state", "id"])
    op.create_index("ix_inbound_messages_message_id", "inbound_messages", ["message_id"])
    op.create_table(
        "inbound_contents",
        sa.Column("message_pk", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["message_pk"],
            ["inbound_messages.id"],
            name="fk_inbound_contents_message_pk_inbound_messages",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("message_pk", name="pk_inbound_contents"),
    )
    op.create_table(
        "inbound_deliveries",
        sa.Column("id", _BigId, nullable=False),
        sa.Column("message_pk", sa.BigInteger(), nullable=False),
        sa.Column("address", sa.String(320), nullable=False),
        sa.Column("delivered_at", _UTC, nullable=False),
        sa.ForeignKeyConstraint(
            ["message_pk"],
            ["inbound_messages.id"],
            name="fk_inbound_deliveries_message_pk_inbound_messages",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_inbound_deliveries"),
        sa.UniqueConstraint(
            "message_pk", "address", name="uq_inbound_deliveries_message_pk_address"
        ),
    )
    op.create_table(
        "email_log",
        sa.Column("id", _BigId, nullable=False),
        sa.Column("time", _UTC, nullable=False),
        sa.Column("direction", sa.String(16), nullable=False),
        sa.Column("queue_id", sa.String(64), nullable=True),
        sa.Column("client_ip", sa.Text(), nullable=True),
        sa.Column("helo", sa.Text(), nullable=True),
        sa.Column("mail_from", sa.Text(), nullable=True),
        sa.Column("rcpt_to", sa.JSON(), nullable=False),
        sa.Column("tls_version", sa.Text(), nullable=True),
        sa.Column("tls_cipher", sa.Text(), nullable=True),
        sa.Column("requiretls", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("size", sa.Integer(), nullable=True),
        sa.Column("message_id", sa.Text(), nullable=True),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("reply_code", sa.Integer(), nullable=True),
        sa.Column("reply_text", sa.Text(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_email_log"),
    )
    op.create_index("ix_email_log_time", "email_log", ["time"])
    op.create_index("ix_email_log_queue_id", "email_log", ["queue_id"])
    op.create_index("ix_email_log_outcome", "email_log", ["outcome"])
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("created_at", _UTC, nullable=False),
        sa.Column("last_used_at", _UTC, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_api_tokens"),
        sa.UniqueConstraint("name", name="uq_api_tokens_name"),
        sa.UniqueConstraint("token_hash", name="uq_api_tokens_token_hash"),
    )
    settings_generation = op.create_table(
        "settings_generation",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("generation", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_settings_generation"),
    )
    op.bulk_insert(settings_generation, [{"id": 1, "generation": 0}])


def downgrade() -> None:
    op.drop_table("settings_generation")
    op.drop_table("api_tokens")
    op.drop_index("ix_email_log_outcome", table_name="email_log")
    op.drop_index("ix_email_log_queue_id", table_name="email_log")
    op.drop_index("ix_email_log_time", table_name="email_log")
    op.drop_table("email_log")
    op.drop_table("inbound_deliveries")
    op.drop_table("inbound_contents")
    op.drop_index("ix_inbound_messages_message_id", table_name="inbound_messages")
    op.drop_index("ix_inbound_messages_state_id", table_name="inbound_messages")
    op.drop_table("inbound_messages")
    op.drop_table("receiving_addresses")
