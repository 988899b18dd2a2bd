"""Activity feed, payments and webhook deliveries.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
USER_ID = sa.String(length=255)
PROCESSED = sa.text("outcome = 'processed'")


def moment(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "billing_activity",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("user_id", USER_ID, nullable=False),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("metadata", sa.JSON(), nullable=True),
        moment("occurred_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_billing_activity")),
    )
    op.create_index(
        "ix_billing_activity_user_id_occurred_at", "billing_activity", ["user_id", "occurred_at"]
    )
    op.create_table(
        "billing_payments",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("user_id", USER_ID, nullable=False),
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("provider_payment_id", sa.String(length=255), nullable=True),
        sa.Column("plan_code", sa.String(length=64), nullable=False),
        sa.Column("months", sa.Integer(), nullable=False),
        sa.Column("amount", sa.Numeric(precision=12, scale=2), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        moment("created_at"),
        moment("settled_at", nullable=True),
        sa.ForeignKeyConstraint(
            ["plan_code"],
            ["billing_plans.code"],
            name=op.f("fk_billing_payments_plan_code_billing_plans"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_billing_payments")),
        sa.UniqueConstraint(
            "provider",
            "provider_payment_id",
            name=op.f("uq_billing_payments_provider_provider_payment_id"),
        ),
    )
    op.create_index("ix_billing_payments_user_id", "billing_payments", ["user_id"])
    op.create_table(
        "billing_webhook_deliveries",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("event_id", sa.String(length=255), nullable=False),
        sa.Column("event_type", sa.String(length=64), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        moment("received_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_billing_webhook_deliveries")),
    )
    op.create_index(
        "uq_billing_webhook_deliveries_processed_event",
        "billing_webhook_deliveries",
        ["provider", "event_id"],
        unique=True,
        postgresql_where=PROCESSED,
        sqlite_where=PROCESSED,
    )


def downgrade() -> None:
    op.drop_table("billing_webhook_deliveries")
    op.drop_table("billing_payments")
    op.drop_table("billing_activity")
