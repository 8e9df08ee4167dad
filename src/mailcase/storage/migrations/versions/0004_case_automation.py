"""Auto-response rules, loop and limit counters, notifications.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26

Written out in full rather than imported from the models: a migration must keep describing
the schema of its day when the models move on.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_UTC = sa.DateTime(timezone=True)  # naive UTC text on SQLite, timestamptz on PostgreSQL


def upgrade() -> None:
    op.create_table(
        "auto_response_rules",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("position", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("enabled", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("routing_address", sa.String(320), nullable=True),
        sa.Column("sender_domain", sa.String(255), nullable=True),
        sa.Column("subject_contains", sa.Text(), nullable=True),
        sa.Column("from_name", sa.Text(), server_default=sa.text("''"), nullable=False),
        sa.Column("subject_template", sa.Text(), nullable=False),
        sa.Column("text_template", sa.Text(), nullable=False),
        sa.Column("html_template", sa.Text(), nullable=True),
        sa.Column("created_at", _UTC, nullable=False),
        sa.Column("updated_at", _UTC, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_auto_response_rules"),
        sa.UniqueConstraint("name", name="uq_auto_response_rules_name"),
    )
    op.create_index("ix_auto_response_rules_position_id", "auto_response_rules", ["position", "id"])
    op.create_table(
        "automation_loop_hits",
        sa.Column("id", _BigId, nullable=False),
        sa.Column("time", _UTC, nullable=False),
        sa.Column("routing_address", sa.String(320), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_automation_loop_hits"),
    )
    op.create_index(
        "ix_automation_loop_hits_routing_address_fingerprint_time",
        "automation_loop_hits",
        ["routing_address", "fingerprint", "time"],
    )
    op.create_index("ix_automation_loop_hits_time", "automation_loop_hits", ["time"])
    op.create_table(
        "automation_sent",
        sa.Column("id", _BigId, nullable=False),
        sa.Column("time", _UTC, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("recipient", sa.String(320), nullable=False),
        sa.Column("case_id", sa.BigInteger(), nullable=True),
        sa.Column("rule_id", sa.Integer(), nullable=True),
        sa.Column("outbound_queue_id", sa.String(64), nullable=True),
        sa.Column("message_id", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["case_id"],
            ["cases.id"],
            name="fk_automation_sent_case_id_cases",
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["rule_id"],
            ["auto_response_rules.id"],
            name="fk_automation_sent_rule_id_auto_response_rules",
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_automation_sent"),
    )
    op.create_index(
        "ix_automation_sent_recipient_kind_time", "automation_sent", ["recipient", "kind", "time"]
    )
    op.create_table(
        "automation_daily_counts",
        sa.Column("day", sa.String(10), nullable=False),
        sa.Column("cases", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.PrimaryKeyConstraint("day", name="pk_automation_daily_counts"),
    )
    op.create_table(
        "automation_address_settings",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("address", sa.String(320), nullable=False),
        sa.Column("notify_owner", sa.Boolean(), nullable=True),
        sa.Column("updated_at", _UTC, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_automation_address_settings"),
        sa.UniqueConstraint("address", name="uq_automation_address_settings_address"),
    )


def downgrade() -> None:
    op.drop_table("automation_address_settings")
    op.drop_table("automation_daily_counts")
    op.drop_index("ix_automation_sent_recipient_kind_time", table_name="automation_sent")
    op.drop_table("automation_sent")
    op.drop_index("ix_automation_loop_hits_time", table_name="automation_loop_hits")
    op.drop_index(
        "ix_automation_loop_hits_routing_address_fingerprint_time",
        table_name="automation_loop_hits",
    )
    op.drop_table("automation_loop_hits")
    op.drop_index("ix_auto_response_rules_position_id", table_name="auto_response_rules")
    op.drop_table("auto_response_rules")
