"""The history of every payment: each status it took, and each confirmation refused.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-14
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "billing_payment_events",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("payment_id", sa.String(length=64), nullable=False),
        sa.Column("from_status", sa.String(length=16), nullable=True),
        sa.Column("to_status", sa.String(length=16), nullable=False),
        sa.Column("provider_event_id", sa.String(length=255), nullable=True),
        sa.Column("reason", sa.String(length=255), nullable=True),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["payment_id"],
            ["billing_payments.id"],
            name=op.f("fk_billing_payment_events_payment_id_billing_payments"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_billing_payment_events")),
    )
    op.create_index(
        "ix_billing_payment_events_payment_id", "billing_payment_events", ["payment_id"]
    )


def downgrade() -> None:
    op.drop_index("ix_billing_payment_events_payment_id", table_name="billing_payment_events")
    op.drop_table("billing_payment_events")
