"""Routing addresses, cases, case emails, attachments, contacts.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26

Written out in full rather than imported from the models: a migration must keep describing
the schema of its day when the models move on.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_UTC = sa.DateTime(timezone=True)  # naive UTC text on SQLite, timestamptz on PostgreSQL
_FALSE = sa.text("false")


def upgrade() -> None:
    op.create_table(
        "routing_addresses",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("address", sa.String(320), nullable=False),
        sa.Column("receiving_address_id", sa.Integer(), nullable=True),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("origin", sa.String(64), server_default=sa.text("'Email'"), nullable=False),
        sa.Column("priority", sa.String(16), server_default=sa.text("'Medium'"), nullable=False),
        sa.Column("owner", sa.Text(), nullable=True),
        sa.Column("queue", sa.Text(), nullable=True),
        sa.Column("accept_from", sa.JSON(), nullable=False),
        sa.Column("task_status", sa.Text(), nullable=True),
        sa.Column("save_headers", sa.Boolean(), server_default=_FALSE, nullable=False),
        sa.Column(
            "require_authenticated_sender", sa.Boolean(), server_default=_FALSE, nullable=False
        ),
        sa.Column("enabled", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("created_at", _UTC, nullable=False),
        sa.Column("updated_at", _UTC, nullable=False),
        sa.ForeignKeyConstraint(
            ["receiving_address_id"],
            ["receiving_addresses.id"],
            name="fk_routing_addresses_receiving_address_id_receiving_addresses",
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_routing_addresses"),
        sa.UniqueConstraint("address", name="uq_routing_addresses_address"),
    )
    op.create_table(
        "case_counter",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("value", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_case_counter"),
    )
    op.execute("INSERT INTO case_counter (id, value) VALUES (1, 0)")
    op.create_table(
        "contacts",
        sa.Column("id", _BigId, nullable=False),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("name", sa.Text(), server_default=sa.text("''"), nullable=False),
        sa.Column("created_at", _UTC, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_contacts"),
        sa.UniqueConstraint("email", name="uq_contacts_email"),
    )
    op.create_table(
        "cases",
        sa.Column("id", _BigId, nullable=False),
        sa.Column("number", sa.BigInteger(), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), server_default=sa.text("'New'"), nullable=False),
        sa.Column("priority", sa.String(16), nullable=False),
        sa.Column("origin", sa.String(64), nullable=False),
        sa.Column("contact_id", sa.BigInteger(), nullable=True),
        sa.Column("supplied_name", sa.Text(), server_default=sa.text("''"), nullable=False),
        sa.Column("supplied_email", sa.Text(), server_default=sa.text("''"), nullable=False),
        sa.Column("owner", sa.Text(), nullable=True),
        sa.Column("queue", sa.Text(), nullable=True),
        sa.Column("routing_address_id", sa.Integer(), nullable=True),
        sa.Column("parent_case_id", sa.BigInteger(), nullable=True),
        sa.Column("created_at", _UTC, nullable=False),
        sa.Column("updated_at", _UTC, nullable=False),
        sa.Column("closed_at", _UTC, nullable=True),
        sa.CheckConstraint(
            "status IN ('New', 'Working', 'Escalated', 'Closed')",
            name="ck_cases_status_valid",
        ),
        sa.ForeignKeyConstraint(
            ["contact_id"], ["contacts.id"], name="fk_cases_contact_id_contacts",
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["routing_address_id"],
            ["routing_addresses.id"],
            name="fk_cases_routing_address_id_routing_addresses",
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["parent_case_id"], ["cases.id"], name="fk_cases_parent_case_id_cases",
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_cases"),
        sa.UniqueConstraint("number", name="uq_cases_number"),
    )
    op.create_index("ix_cases_status_id", "cases", ["status", "id"])
    op.create_index("ix_cases_contact_id", "cases", ["contact_id"])
    op.create_index("ix_cases_parent_case_id", "cases", ["parent_case_id"])
    op.create_table(
        "case_emails",
        sa.Column("id", _BigId, nullable=False),
        sa.Column("case_id", sa.BigInteger(), nullable=False),
        sa.Column("direction", sa.String(16), nullable=False),
        sa.Column("from_address", sa.Text(), nullable=False),
        sa.Column("from_name", sa.Text(), server_default=sa.text("''"), nullable=False),
        sa.Column("to_addresses", sa.JSON(), nullable=False),
        sa.Column("cc_addresses", sa.JSON(), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("text_body", sa.Text(), nullable=False),
        sa.Column("html_body", sa.Text(), server_default=sa.text("''"), nullable=False),
        sa.Column("headers", sa.JSON(), nullable=True),
        sa.Column("message_id", sa.Text(), nullable=True),
        sa.Column("in_reply_to", sa.Text(), nullable=True),
        sa.Column("reference_ids", sa.JSON(), nullable=False),
        sa.Column("inbound_message_pk", sa.BigInteger(), nullable=True),
        sa.Column("dedupe_key", sa.String(64), nullable=True),
        sa.Column("outbound_queue_id", sa.String(64), nullable=True),
        sa.Column("routing_address", sa.Text(), nullable=True),
        sa.Column("mail_from", sa.Text(), nullable=True),
        sa.Column("client_ip", sa.Text(), nullable=True),
        sa.Column("helo", sa.Text(), nullable=True),
        sa.Column("tls_version", sa.Text(), nullable=True),
        sa.Column("tls_cipher", sa.Text(), nullable=True),
        sa.Column("requiretls", sa.Boolean(), server_default=_FALSE, nullable=False),
        sa.Column("auth", sa.JSON(), nullable=True),
        sa.Column("authentication_results", sa.Text(), nullable=True),
        sa.Column("authenticated", sa.Boolean(), nullable=True),
        sa.Column("sender_not_on_thread", sa.Boolean(), server_default=_FALSE, nullable=False),
        sa.Column("text_truncated", sa.Boolean(), server_default=_FALSE, nullable=False),
        sa.Column("html_truncated", sa.Boolean(), server_default=_FALSE, nullable=False),
        sa.Column("headers_truncated", sa.Boolean(), server_default=_FALSE, nullable=False),
        sa.Column("created_at", _UTC, nullable=False),
        sa.CheckConstraint(
            "direction IN ('inbound', 'outbound')", name="ck_case_emails_direction_valid"
        ),
        sa.ForeignKeyConstraint(
            ["case_id"], ["cases.id"], name="fk_case_emails_case_id_cases", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["inbound_message_pk"],
            ["inbound_messages.id"],
            name="fk_case_emails_inbound_message_pk_inbound_messages",
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_case_emails"),
        sa.UniqueConstraint("inbound_message_pk", name="uq_case_emails_inbound_message_pk"),
        sa.UniqueConstraint("dedupe_key", name="uq_case_emails_dedupe_key"),
    )
    op.create_index("ix_case_emails_case_id_id", "case_emails", ["case_id", "id"])
    op.create_index("ix_case_emails_message_id", "case_emails", ["message_id"])
    op.create_table(
        "case_message_ids",
        sa.Column("id", _BigId, nullable=False),
        sa.Column("message_key", sa.String(64), nullable=False),
        sa.Column("case_id", sa.BigInteger(), nullable=False),
        sa.Column("case_email_id", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["case_id"], ["cases.id"], name="fk_case_message_ids_case_id_cases",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["case_email_id"],
            ["case_emails.id"],
            name="fk_case_message_ids_case_email_id_case_emails",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_case_message_ids"),
        sa.UniqueConstraint(
            "message_key", "case_id", name="uq_case_message_ids_message_key_case_id"
        ),
    )
    op.create_index("ix_case_message_ids_case_id", "case_message_ids", ["case_id"])
    op.create_table(
        "attachment_blobs",
        sa.Column("id", _BigId, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("created_at", _UTC, nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_attachment_blobs"),
        sa.UniqueConstraint("sha256", name="uq_attachment_blobs_sha256"),
    )
    op.create_table(
        "case_attachments",
        sa.Column("id", _BigId, nullable=False),
        sa.Column("case_email_id", sa.BigInteger(), nullable=False),
        sa.Column("blob_id", sa.BigInteger(), nullable=False),
        sa.Column("filename", sa.Text(), nullable=False),
        sa.Column("content_type", sa.Text(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("content_id", sa.Text(), nullable=True),
        sa.Column("inline", sa.Boolean(), server_default=_FALSE, nullable=False),
        sa.Column("part", sa.Text(), server_default=sa.text("''"), nullable=False),
        sa.ForeignKeyConstraint(
            ["case_email_id"],
            ["case_emails.id"],
            name="fk_case_attachments_case_email_id_case_emails",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["blob_id"],
            ["attachment_blobs.id"],
            name="fk_case_attachments_blob_id_attachment_blobs",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_case_attachments"),
    )
    op.create_index("ix_case_attachments_case_email_id", "case_attachments", ["case_email_id"])


def downgrade() -> None:
    op.drop_table("case_attachments")
    op.drop_table("attachment_blobs")
    op.drop_table("case_message_ids")
    op.drop_table("case_emails")
    op.drop_table("cases")
    op.drop_table("contacts")
    op.drop_table("case_counter")
    op.drop_table("routing_addresses")
