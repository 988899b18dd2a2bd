"""Create the billing tables.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Kept literal rather than imported from the package, so this revision never changes with the code.
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
USER_ID = sa.String(length=255)
CURRENT = sa.text("ended_at IS NULL")


def moment(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "billing_plans",
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=120), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("price_monthly", sa.Numeric(precision=12, scale=2), nullable=True),
        sa.Column("price_yearly", sa.Numeric(precision=12, scale=2), nullable=True),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("limits", sa.JSON(), nullable=False),
        sa.Column("features", sa.JSON(), nullable=False),
        sa.Column("sort_order", sa.Integer(), nullable=False),
        sa.Column("is_default", sa.Boolean(), nullable=False),
        moment("updated_at"),
        sa.PrimaryKeyConstraint("code", name=op.f("pk_billing_plans")),
    )
    op.create_table(
        "billing_profiles",
        sa.Column("user_id", USER_ID, nullable=False),
        sa.Column("first_name", sa.String(length=100), nullable=True),
        sa.Column("company", sa.String(length=200), nullable=True),
        sa.Column("country", sa.String(length=2), nullable=True),
        sa.Column("timezone", sa.String(length=64), nullable=True),
        sa.Column("avatar_url", sa.String(length=2048), nullable=True),
        sa.Column("phone", sa.String(length=32), nullable=True),
        moment("created_at"),
        moment("updated_at"),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_billing_profiles")),
    )
    op.create_table(
        "billing_usage_counters",
        sa.Column("user_id", USER_ID, nullable=False),
        sa.Column("metric", sa.String(length=64), nullable=False),
        moment("period_start"),
        moment("period_end"),
        sa.Column("used", BIG_ID, nullable=False),
        sa.PrimaryKeyConstraint(
            "user_id", "metric", "period_start", name=op.f("pk_billing_usage_counters")
        ),
    )
    op.create_table(
        "billing_usage_events",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("user_id", USER_ID, nullable=False),
        sa.Column("metric", sa.String(length=64), nullable=False),
        sa.Column("amount", sa.Integer(), nullable=False),
        moment("period_start"),
        sa.Column("resources", sa.JSON(), nullable=True),
        sa.Column("metadata", sa.JSON(), nullable=True),
        sa.Column("idempotency_key", sa.String(length=255), nullable=True),
        moment("created_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_billing_usage_events")),
        sa.UniqueConstraint(
            "user_id",
            "idempotency_key",
            name=op.f("uq_billing_usage_events_user_id_idempotency_key"),
        ),
    )
    op.create_index(
        "ix_billing_usage_events_metric_created_at",
        "billing_usage_events",
        ["metric", "created_at"],
    )
    op.create_index(
        "ix_billing_usage_events_user_id_created_at",
        "billing_usage_events",
        ["user_id", "created_at"],
    )
    op.create_table(
        "billing_subscriptions",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("user_id", USER_ID, nullable=False),
        sa.Column("plan_code", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        moment("started_at"),
        moment("expires_at", nullable=True),
        moment("period_anchor"),
        moment("cancelled_at", nullable=True),
        moment("ended_at", nullable=True),
        sa.Column("end_reason", sa.String(length=16), nullable=True),
        sa.ForeignKeyConstraint(
            ["plan_code"],
            ["billing_plans.code"],
            name=op.f("fk_billing_subscriptions_plan_code_billing_plans"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_billing_subscriptions")),
    )
    op.create_index("ix_billing_subscriptions_user_id", "billing_subscriptions", ["user_id"])
    # One current subscription per user: the database, not the code, settles concurrent first requests.
    op.create_index(
        "uq_billing_subscriptions_current_user",
        "billing_subscriptions",
        ["user_id"],
        unique=True,
        postgresql_where=CURRENT,
        sqlite_where=CURRENT,
    )
    op.create_index(
        "ix_billing_subscriptions_current_expires_at",
        "billing_subscriptions",
        ["expires_at"],
        postgresql_where=CURRENT,
        sqlite_where=CURRENT,
    )


def downgrade() -> None:
    op.drop_table("billing_subscriptions")
    op.drop_table("billing_usage_events")
    op.drop_table("billing_usage_counters")
    op.drop_table("billing_profiles")
    op.drop_table("billing_plans")
