"""Job leases (maintenance runs once across workers), notifications (each sent once), and the
index by which maintenance finds the usage counters of long-past periods.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
PENDING = sa.text("status = 'pending'")


def moment(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "billing_job_leases",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("holder", sa.String(length=128), nullable=True),
        moment("lease_until", nullable=True),
        moment("next_due_at"),
        moment("last_started_at", nullable=True),
        moment("last_finished_at", nullable=True),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_billing_job_leases")),
    )
    op.create_table(
        "billing_notifications",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("subject", sa.String(length=64), nullable=False),
        sa.Column("period_key", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        moment("next_attempt_at", nullable=True),
        moment("created_at"),
        moment("sent_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_billing_notifications")),
        sa.UniqueConstraint(
            "user_id",
            "kind",
            "subject",
            "period_key",
            name=op.f("uq_billing_notifications_user_id_kind_subject_period_key"),
        ),
    )
    op.create_index(
        "ix_billing_notifications_pending_next_attempt_at",
        "billing_notifications",
        ["next_attempt_at"],
        postgresql_where=PENDING,
        sqlite_where=PENDING,
    )
    op.create_index("ix_billing_notifications_created_at", "billing_notifications", ["created_at"])
    op.create_index(
        "ix_billing_usage_counters_period_end", "billing_usage_counters", ["period_end"]
    )


def downgrade() -> None:
    op.drop_index("ix_billing_usage_counters_period_end", table_name="billing_usage_counters")
    op.drop_index("ix_billing_notifications_created_at", table_name="billing_notifications")
    op.drop_index(
        "ix_billing_notifications_pending_next_attempt_at", table_name="billing_notifications"
    )
    op.drop_table("billing_notifications")
    op.drop_table("billing_job_leases")
