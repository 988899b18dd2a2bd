"""A notification is claimed once per recipient: the unique key of ``billing_notifications``
takes ``recipient_user_id``, which becomes NOT NULL with the empty string for "the account's own
recipients" (NULLs are all distinct in a unique key, which would let such a row be claimed twice).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

USER_ID = sa.String(length=255)
OLD_KEY = "uq_billing_notifications_account_id_kind_subject_period_key"
NEW_KEY = "uq_billing_notifications_once"


def upgrade() -> None:
    op.execute(
        "UPDATE billing_notifications SET recipient_user_id = '' WHERE recipient_user_id IS NULL"
    )
    with op.batch_alter_table("billing_notifications") as batch:
        batch.alter_column(
            "recipient_user_id", existing_type=USER_ID, nullable=False, server_default=""
        )
        batch.drop_constraint(OLD_KEY, type_="unique")
        batch.create_unique_constraint(
            NEW_KEY, ["account_id", "kind", "subject", "period_key", "recipient_user_id"]
        )


def downgrade() -> None:
    """Back to one row per (account, kind, subject, period): the rows of named recipients go (the
    older key cannot hold them), the account's own become NULL again."""
    op.execute("DELETE FROM billing_notifications WHERE recipient_user_id <> ''")
    with op.batch_alter_table("billing_notifications") as batch:
        batch.drop_constraint(NEW_KEY, type_="unique")
        batch.create_unique_constraint(OLD_KEY, ["account_id", "kind", "subject", "period_key"])
        batch.alter_column(
            "recipient_user_id", existing_type=USER_ID, nullable=True, server_default=None
        )
    op.execute(
        "UPDATE billing_notifications SET recipient_user_id = NULL WHERE recipient_user_id = ''"
    )
