"""Demo users, created on start when missing: alice on the free plan, bob on Professional."""

from __future__ import annotations

from typing import NamedTuple

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from .extensions import billing, db
from .models import User


class DemoUser(NamedTuple):
    email: str
    name: str
    password: str
    plan: str | None
    """A plan to grant for a year; None keeps the default (free) one."""


DEMO_USERS = (
    DemoUser("alice@example.com", "Alice", "alice", None),
    DemoUser("bob@example.com", "Bob", "bob", "professional"),
)


def ensure_demo_users() -> None:
    """Idempotent: a restart neither duplicates users nor extends bob's subscription.

    Call it under ``boot.boot_lock``: two processes starting together would otherwise both find
    bob on the free plan and both grant him a year (granting a plan he has extends it).
    """
    for demo in DEMO_USERS:
        user = _get_or_create(demo)
        if demo.plan is not None and billing.subscription(str(user.id)).plan_code != demo.plan:
            billing.change_plan(str(user.id), demo.plan, months=12)


def _get_or_create(demo: DemoUser) -> User:
    query = select(User).where(User.email == demo.email)
    user = db.session.scalar(query)
    if user is None:
        user = User(email=demo.email, name=demo.name)
        user.set_password(demo.password)
        db.session.add(user)
        try:
            # Commit before any billing call: the extension writes on connections of its own,
            # and SQLite would make them wait for this session's open write transaction.
            db.session.commit()
        except IntegrityError:  # another process starting at the same moment created it
            db.session.rollback()
            user = db.session.scalars(query).one()
    return user
