"""Stored first responses of guarded requests sent with an Idempotency-Key.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def moment(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "billing_idempotency_keys",
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("scope", sa.String(length=255), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("token", sa.String(length=32), nullable=False),
        sa.Column("charge_event_id", BIG_ID, nullable=True),
        moment("locked_until", nullable=True),
        sa.Column("response_status", sa.Integer(), nullable=True),
        sa.Column("response_headers", sa.JSON(), nullable=True),
        sa.Column("response_body", sa.LargeBinary(), nullable=True),
        moment("created_at"),
        moment("expires_at"),
        sa.PrimaryKeyConstraint(
            "user_id", "scope", "key", name=op.f("pk_billing_idempotency_keys")
        ),
    )
    op.create_index(
        "ix_billing_idempotency_keys_expires_at", "billing_idempotency_keys", ["expires_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_billing_idempotency_keys_expires_at", table_name="billing_idempotency_keys")
    op.drop_table("billing_idempotency_keys")
