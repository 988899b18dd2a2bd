"""Billing rows belong to accounts: the billing tables are keyed by an account (``user:<id>`` for a
user's personal account) instead of a user; usage events record the user who acted, notifications
whom they tell; and the tables of accounts, their members, members' caps and invitations.

Every existing row becomes its user's personal account's, and each user with a subscription gets
the account's row.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-28
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

USER_ID = sa.String(length=255)
ACCOUNT_ID = sa.String(length=300)
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
CURRENT = sa.text("ended_at IS NULL")
PENDING = sa.text("status = 'pending'")
PREFIX = "user:"


@dataclass(frozen=True)
class SecondaryIndex:
    name: str
    columns: list[str]
    unique: bool = False
    where: sa.TextClause | None = None


@dataclass(frozen=True)
class KeyedTable:
    """A billing table whose ``user_id`` becomes ``account_id``.

    Its secondary indexes are dropped before the rewrite of every row and built again after it:
    building an index once is much faster than updating it row by row. ``old_indexes`` and
    ``new_indexes`` differ only in the names and columns that say user or account.
    """

    name: str
    old_indexes: list[SecondaryIndex] = field(default_factory=list)
    new_indexes: list[SecondaryIndex] = field(default_factory=list)
    old_unique: tuple[str, list[str]] | None = None
    new_unique: tuple[str, list[str]] | None = None


TABLES = [
    KeyedTable(
        "billing_subscriptions",
        old_indexes=[
            SecondaryIndex(
                "uq_billing_subscriptions_current_user", ["user_id"], unique=True, where=CURRENT
            ),
            SecondaryIndex("ix_billing_subscriptions_user_id", ["user_id"]),
            SecondaryIndex(
                "ix_billing_subscriptions_current_expires_at", ["expires_at"], where=CURRENT
            ),
        ],
        new_indexes=[
            SecondaryIndex(
                "uq_billing_subscriptions_current_account",
                ["account_id"],
                unique=True,
                where=CURRENT,
            ),
            SecondaryIndex("ix_billing_subscriptions_account_id", ["account_id"]),
            SecondaryIndex(
                "ix_billing_subscriptions_current_expires_at", ["expires_at"], where=CURRENT
            ),
        ],
    ),
    KeyedTable(
        "billing_usage_counters",
        old_indexes=[SecondaryIndex("ix_billing_usage_counters_period_end", ["period_end"])],
        new_indexes=[SecondaryIndex("ix_billing_usage_counters_period_end", ["period_end"])],
    ),
    KeyedTable(
        "billing_usage_events",
        old_indexes=[
            SecondaryIndex("ix_billing_usage_events_user_id_created_at", ["user_id", "created_at"]),
            SecondaryIndex("ix_billing_usage_events_metric_created_at", ["metric", "created_at"]),
        ],
        new_indexes=[
            SecondaryIndex(
                "ix_billing_usage_events_account_id_created_at", ["account_id", "created_at"]
            ),
            SecondaryIndex("ix_billing_usage_events_metric_created_at", ["metric", "created_at"]),
        ],
        old_unique=(
            "uq_billing_usage_events_user_id_idempotency_key",
            ["user_id", "idempotency_key"],
        ),
        new_unique=(
            "uq_billing_usage_events_account_id_idempotency_key",
            ["account_id", "idempotency_key"],
        ),
    ),
    KeyedTable("billing_usage_daily"),
    KeyedTable(
        "billing_payments",
        old_indexes=[
            SecondaryIndex("ix_billing_payments_user_id", ["user_id"]),
            SecondaryIndex(
                "ix_billing_payments_provider_refund_reference", ["provider", "refund_reference"]
            ),
        ],
        new_indexes=[
            SecondaryIndex("ix_billing_payments_account_id", ["account_id"]),
            SecondaryIndex(
                "ix_billing_payments_provider_refund_reference", ["provider", "refund_reference"]
            ),
        ],
    ),
    KeyedTable(
        "billing_recurring",
        old_indexes=[SecondaryIndex("ix_billing_recurring_user_id", ["user_id"])],
        new_indexes=[SecondaryIndex("ix_billing_recurring_account_id", ["account_id"])],
    ),
    KeyedTable(
        "billing_notifications",
        old_indexes=[
            SecondaryIndex(
                "ix_billing_notifications_pending_next_attempt_at",
                ["next_attempt_at"],
                where=PENDING,
            ),
            SecondaryIndex("ix_billing_notifications_created_at", ["created_at"]),
        ],
        new_indexes=[
            SecondaryIndex(
                "ix_billing_notifications_pending_next_attempt_at",
                ["next_attempt_at"],
                where=PENDING,
            ),
            SecondaryIndex("ix_billing_notifications_created_at", ["created_at"]),
        ],
        old_unique=(
            "uq_billing_notifications_user_id_kind_subject_period_key",
            ["user_id", "kind", "subject", "period_key"],
        ),
        new_unique=(
            "uq_billing_notifications_account_id_kind_subject_period_key",
            ["account_id", "kind", "subject", "period_key"],
        ),
    ),
]


def moment(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _drop_indexes(table: str, indexes: list[SecondaryIndex]) -> None:
    for index in indexes:
        op.drop_index(index.name, table_name=table)


def _create_indexes(table: str, indexes: list[SecondaryIndex]) -> None:
    for index in indexes:
        op.create_index(
            index.name,
            table,
            index.columns,
            unique=index.unique,
            postgresql_where=index.where,
            sqlite_where=index.where,
        )


def _rekey(
    table: KeyedTable,
    *,
    old: str,
    new: str,
    old_type: sa.String,
    new_type: sa.String,
    old_unique: tuple[str, list[str]] | None,
    new_unique: tuple[str, list[str]] | None,
    old_indexes: list[SecondaryIndex],
    new_indexes: list[SecondaryIndex],
    rewrite: str,
    add_columns: Sequence[sa.Column[object]] = (),
    drop_columns: Sequence[str] = (),
    not_null_after: Sequence[str] = (),
    narrow_after: bool = False,
) -> None:
    """Rename the key column and rewrite every row's key in one UPDATE, without the indexes."""
    _drop_indexes(table.name, old_indexes)
    with op.batch_alter_table(table.name) as batch:
        if old_unique is not None:
            batch.drop_constraint(old_unique[0], type_="unique")
        for name in drop_columns:
            batch.drop_column(name)
        batch.alter_column(
            old,
            new_column_name=new,
            existing_type=old_type,
            # Widen before the rewrite; narrow only after it (the prefix is gone by then).
            type_=old_type if narrow_after else new_type,
            existing_nullable=False,
        )
        for column in add_columns:
            batch.add_column(column)
    op.execute(rewrite)
    with op.batch_alter_table(table.name) as batch:
        if narrow_after:
            batch.alter_column(new, existing_type=old_type, type_=new_type, existing_nullable=False)
        for name in not_null_after:
            batch.alter_column(name, existing_type=USER_ID, nullable=False)
        if new_unique is not None:
            batch.create_unique_constraint(new_unique[0], new_unique[1])
    _create_indexes(table.name, new_indexes)


def _now() -> datetime:
    now = datetime.now(UTC)
    # SQLite keeps UTC moments naive, as the models' column type writes them.
    return now.replace(tzinfo=None) if op.get_bind().dialect.name == "sqlite" else now


def upgrade() -> None:
    op.create_table(
        "billing_accounts",
        sa.Column("id", ACCOUNT_ID, nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=120), nullable=True),
        sa.Column("created_by", USER_ID, nullable=True),
        moment("created_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_billing_accounts")),
    )
    op.create_table(
        "billing_account_members",
        sa.Column("account_id", ACCOUNT_ID, nullable=False),
        sa.Column("user_id", USER_ID, nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        moment("joined_at"),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["billing_accounts.id"],
            name=op.f("fk_billing_account_members_account_id_billing_accounts"),
        ),
        sa.PrimaryKeyConstraint("account_id", "user_id", name=op.f("pk_billing_account_members")),
    )
    op.create_index("ix_billing_account_members_user_id", "billing_account_members", ["user_id"])
    op.create_table(
        "billing_member_caps",
        sa.Column("account_id", ACCOUNT_ID, nullable=False),
        sa.Column("user_id", USER_ID, nullable=False),
        sa.Column("metric", sa.String(length=64), nullable=False),
        sa.Column("cap", BIG_ID, nullable=False),
        moment("updated_at"),
        sa.PrimaryKeyConstraint(
            "account_id", "user_id", "metric", name=op.f("pk_billing_member_caps")
        ),
    )
    op.create_table(
        "billing_member_counters",
        sa.Column("account_id", ACCOUNT_ID, nullable=False),
        sa.Column("user_id", USER_ID, nullable=False),
        sa.Column("metric", sa.String(length=64), nullable=False),
        moment("period_start"),
        moment("period_end"),
        sa.Column("used", BIG_ID, nullable=False),
        sa.PrimaryKeyConstraint(
            "account_id",
            "user_id",
            "metric",
            "period_start",
            name=op.f("pk_billing_member_counters"),
        ),
    )
    op.create_index(
        "ix_billing_member_counters_period_end", "billing_member_counters", ["period_end"]
    )
    op.create_table(
        "billing_invitations",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("account_id", ACCOUNT_ID, nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("invited_by", USER_ID, nullable=False),
        moment("created_at"),
        moment("expires_at"),
        moment("accepted_at", nullable=True),
        sa.Column("accepted_by", USER_ID, nullable=True),
        moment("revoked_at", nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["billing_accounts.id"],
            name=op.f("fk_billing_invitations_account_id_billing_accounts"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_billing_invitations")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_billing_invitations_token_hash")),
    )
    op.create_index("ix_billing_invitations_account_id", "billing_invitations", ["account_id"])

    for table in TABLES:
        add_columns: list[sa.Column[object]] = []
        not_null_after: list[str] = []
        rewrite = f"UPDATE {table.name} SET account_id = '{PREFIX}' || account_id"
        if table.name == "billing_usage_events":
            # Until now the user who acted was the one charged.
            add_columns.append(sa.Column("actor_user_id", USER_ID, nullable=True))
            not_null_after.append("actor_user_id")
            rewrite = (
                f"UPDATE {table.name} SET account_id = '{PREFIX}' || account_id, "
                "actor_user_id = account_id"
            )
        if table.name == "billing_notifications":
            add_columns.append(sa.Column("recipient_user_id", USER_ID, nullable=True))
        _rekey(
            table,
            old="user_id",
            new="account_id",
            old_type=USER_ID,
            new_type=ACCOUNT_ID,
            old_unique=table.old_unique,
            new_unique=table.new_unique,
            old_indexes=table.old_indexes,
            new_indexes=table.new_indexes,
            rewrite=rewrite,
            add_columns=add_columns,
            not_null_after=not_null_after,
        )

    accounts = sa.table(
        "billing_accounts",
        sa.column("id", ACCOUNT_ID),
        sa.column("kind", sa.String()),
        sa.column("created_by", USER_ID),
        sa.column("created_at", sa.DateTime(timezone=True)),
    )
    keys = (
        sa.select(sa.column("account_id", ACCOUNT_ID))
        .select_from(sa.table("billing_subscriptions"))
        .distinct()
        .subquery()
    )
    op.execute(
        accounts.insert().from_select(
            ["id", "kind", "created_by", "created_at"],
            sa.select(
                keys.c.account_id,
                sa.literal("personal", sa.String()),
                sa.func.substr(keys.c.account_id, len(PREFIX) + 1),
                sa.literal(_now(), sa.DateTime(timezone=True)),
            ),
        )
    )


def downgrade() -> None:
    """Back to rows keyed by user: personal accounts' rows go back to their user; a team's rows
    keep the team's key (no user is charged for them)."""
    for table in reversed(TABLES):
        drop_columns: list[str] = []
        if table.name == "billing_usage_events":
            drop_columns.append("actor_user_id")
        if table.name == "billing_notifications":
            drop_columns.append("recipient_user_id")
        _rekey(
            table,
            old="account_id",
            new="user_id",
            old_type=ACCOUNT_ID,
            new_type=USER_ID,
            old_unique=table.new_unique,
            new_unique=table.old_unique,
            old_indexes=table.new_indexes,
            new_indexes=table.old_indexes,
            rewrite=(
                f"UPDATE {table.name} SET user_id = substr(user_id, {len(PREFIX) + 1}) "
                f"WHERE user_id LIKE '{PREFIX}%'"
            ),
            drop_columns=drop_columns,
            narrow_after=True,
        )
    op.drop_index("ix_billing_invitations_account_id", table_name="billing_invitations")
    op.drop_table("billing_invitations")
    op.drop_index("ix_billing_member_counters_period_end", table_name="billing_member_counters")
    op.drop_table("billing_member_counters")
    op.drop_table("billing_member_caps")
    op.drop_index("ix_billing_account_members_user_id", table_name="billing_account_members")
    op.drop_table("billing_account_members")
    op.drop_table("billing_accounts")
