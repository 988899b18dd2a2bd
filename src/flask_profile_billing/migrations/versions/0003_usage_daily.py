"""Daily usage rollup, filled from the usage log.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "billing_usage_daily",
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("metric", sa.String(length=64), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("total", BIG_ID, nullable=False),
        sa.PrimaryKeyConstraint("user_id", "metric", "day", name=op.f("pk_billing_usage_daily")),
    )
    # One set-based pass over the existing log, so statistics stay complete after the upgrade.
    utc_day = (
        "CAST(timezone('UTC', created_at) AS DATE)"
        if op.get_bind().dialect.name == "postgresql"
        else "date(created_at)"
    )
    op.execute(
        "INSERT INTO billing_usage_daily (user_id, metric, day, total) "
        f"SELECT user_id, metric, {utc_day}, SUM(amount) FROM billing_usage_events "
        f"GROUP BY user_id, metric, {utc_day}"
    )


def downgrade() -> None:
    op.drop_table("billing_usage_daily")
