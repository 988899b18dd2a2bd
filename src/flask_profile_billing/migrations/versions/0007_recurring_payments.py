"""Recurring payments: Stripe subscriptions and saved YooKassa payment methods, and the reference
by which a provider's refunds and disputes name a payment.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-20
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "billing_payments", sa.Column("refund_reference", sa.String(length=255), nullable=True)
    )
    op.add_column(
        "billing_payments", sa.Column("recurring_id", sa.String(length=64), nullable=True)
    )
    op.create_index(
        "ix_billing_payments_provider_refund_reference",
        "billing_payments",
        ["provider", "refund_reference"],
    )
    op.create_table(
        "billing_recurring",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("reference", sa.String(length=255), nullable=False),
        sa.Column("customer_reference", sa.String(length=255), nullable=True),
        sa.Column("plan_code", sa.String(length=64), nullable=False),
        sa.Column("months", sa.Integer(), nullable=False),
        sa.Column("amount", sa.Numeric(precision=12, scale=2), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("last_event_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["plan_code"],
            ["billing_plans.code"],
            name=op.f("fk_billing_recurring_plan_code_billing_plans"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_billing_recurring")),
        sa.UniqueConstraint(
            "provider", "reference", name=op.f("uq_billing_recurring_provider_reference")
        ),
    )
    op.create_index("ix_billing_recurring_user_id", "billing_recurring", ["user_id"])


def downgrade() -> None:
    op.drop_index("ix_billing_recurring_user_id", table_name="billing_recurring")
    op.drop_table("billing_recurring")
    op.drop_index("ix_billing_payments_provider_refund_reference", table_name="billing_payments")
    with op.batch_alter_table("billing_payments") as batch:
        batch.drop_column("recurring_id")
        batch.drop_column("refund_reference")
