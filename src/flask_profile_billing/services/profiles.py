"""Profiles: the editable fields a user keeps with the extension, and the profile read.

The read (``ProfileService.read``) joins three sources: the profile row (the fields a user edits
here), the host's user (email, role, sign-up time: the host owns those) and the quota service
(the same allowances the guards enforce). It is cached per user; every write that changes what
it shows forgets the entry (``BillingCache.forget_user``): profile edits here, charges, refunds and
plan changes in their services.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC as UTC_OFFSET
from datetime import date, datetime
from enum import Enum
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import Row

from .. import signals
from ..domain.accounts import personal_account_id
from ..domain.limits import Allowance
from ..errors import UnknownUserError
from ..store import activity as entries
from ..store import profiles as stored
from ..store.transactions import read_connection, write_transaction
from .quotas import QuotaService
from .runtime import Runtime
from .users import load_host_user

UTC = ZoneInfo("UTC")
EDITABLE_FIELDS = ("first_name", "company", "country", "timezone", "avatar_url", "phone")
"""The profile fields a user may change, in the order they are reported as changed."""
PROFILE_UPDATED = "profile.updated"
"""The activity type of a profile edit."""
DEFAULT_ROLE = "user"
# How long a reader's claim on an empty cache entry lives: longer than any profile read takes.
_CLAIM_SECONDS = 30

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Profile:
    """The stored profile row of a user."""

    user_id: str
    first_name: str | None
    company: str | None
    country: str | None
    timezone: str | None
    avatar_url: str | None
    phone: str | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class HostUser:
    """What the host app knows of the user; all empty when the host cannot load them."""

    email: str | None = None
    first_name: str | None = None
    role: str = DEFAULT_ROLE
    created_at: str | None = None
    """ISO 8601, as the host gave it (naive datetimes are taken as UTC)."""


@dataclass(frozen=True, slots=True)
class ProfileSnapshot:
    """One profile read: what ``GET /api/profile/me`` shows, and what the cache keeps."""

    profile: Profile
    host: HostUser
    plan_code: str
    plan_name: str
    primary_metric: str
    allowances: Mapping[str, Allowance]
    """Every periodic metric of the user's plan now."""
    valid_until: datetime | None
    """When the snapshot goes stale by itself (a period resets, a paid plan lapses): no write
    forgets the cache then, so a cached snapshot is only served before this moment."""

    @property
    def first_name(self) -> str | None:
        # The name the user typed here wins over the host's account name.
        return self.profile.first_name or self.host.first_name

    @property
    def created_at(self) -> str:
        # The host's sign-up time when it has one; else when the user first came to the extension.
        return self.host.created_at or self.profile.created_at.isoformat()

    @property
    def quota(self) -> Allowance | None:
        """The primary metric (None when the catalog has no periodic metric of that name)."""
        return self.allowances.get(self.primary_metric)


@dataclass(frozen=True, slots=True)
class _Claim:
    """Put in the cache by a reader before it reads the database (see ``ProfileService.read``)."""

    token: str


class ProfileService:
    def __init__(self, runtime: Runtime, quotas: QuotaService) -> None:
        self._runtime = runtime
        self._quotas = quotas

    def timezone_of(self, user_id: str) -> ZoneInfo:
        """The user's time zone for dates shown to them; UTC when unset."""
        with read_connection(self._runtime.engine) as connection:
            name = stored.timezone_name(connection, user_id)
        try:
            return ZoneInfo(name) if name else UTC
        except (ZoneInfoNotFoundError, ValueError):
            return UTC

    # -- reading -------------------------------------------------------------------------------

    def profile(self, user_id: str) -> Profile:
        """The user's profile row, created empty on first access."""
        with read_connection(self._runtime.engine) as connection:
            row = stored.find(connection, user_id)
        if row is None:
            with write_transaction(self._runtime.engine) as connection:
                stored.insert_if_missing(connection, user_id, self._runtime.now())
                row = stored.find(connection, user_id)
        assert row is not None  # inserted above, and profiles are never deleted
        return _to_profile(row)

    def read(self, user_id: str, account_id: str | None = None) -> ProfileSnapshot:
        """The profile read, with the billing of ``account_id`` (a team the caller checked the
        user belongs to; None: the user's personal account).

        A team's read is never cached: its pool moves with every member's charge. A personal
        read comes from the cache when a fresh entry is there.

        A reader that misses first puts a claim of its own in the cache, reads the database, and
        stores its snapshot only if its claim is still there. A write that commits during the read
        forgets the entry, claim included, so a snapshot read before that commit is never cached
        after it: without the claim it would be, and would be served stale until it expired.
        """
        runtime = self._runtime
        if account_id is not None and account_id != personal_account_id(user_id):
            return self._snapshot(user_id, account_id)
        cache = runtime.cache
        key = cache.profile_key(user_id)
        caching = runtime.settings.profile_cache_seconds > 0
        if caching:
            cached = cache.get(key)
            if isinstance(cached, ProfileSnapshot) and _fresh(cached, runtime.now()):
                return cached
            claim = _Claim(uuid.uuid4().hex)
            cache.set(key, claim, timeout=_CLAIM_SECONDS)
        snapshot = self._snapshot(user_id)
        if caching:
            timeout = self._timeout(snapshot)
            if timeout > 0 and cache.get(key) == claim:
                cache.set(key, snapshot, timeout=timeout)
        return snapshot

    # -- writing -------------------------------------------------------------------------------

    def update(
        self, user_id: str, changes: Mapping[str, str | None], *, source: str = "api"
    ) -> list[str]:
        """Apply validated ``changes`` (editable field -> new value, None clears it).

        ``source`` is passed on with ``profile_updated``: ``"api"`` for the JSON API, ``"page"``
        for the profile page's form.

        Returns the names of the fields whose value actually changed. A change and its activity
        entry are written in one transaction, so the feed never misses an edit nor shows one that
        was rolled back; then the user's cached reads are forgotten and ``profile_updated`` is sent.
        """
        unknown = set(changes) - set(EDITABLE_FIELDS)
        if unknown:
            raise ValueError(f"not editable profile fields: {sorted(unknown)}")
        runtime = self._runtime
        now = runtime.now()
        with write_transaction(runtime.engine) as connection:
            stored.insert_if_missing(connection, user_id, now)
            # Locked: a concurrent edit waits, so each reports exactly the fields it changed.
            row = stored.lock(connection, user_id)
            changed = [
                name
                for name in EDITABLE_FIELDS
                if name in changes and changes[name] != getattr(row, name)
            ]
            if changed:
                stored.update_fields(
                    connection, user_id, {name: changes[name] for name in changed}, now
                )
                # Only the names: the values (a phone number...) stay out of the feed.
                entries.insert_entry(
                    connection,
                    user_id=user_id,
                    type=PROFILE_UPDATED,
                    title="Profile updated",
                    metadata={"fields": changed},
                    occurred_at=now,
                )
        if changed:
            runtime.cache.forget_user(user_id)
            signals.profile_updated.send(
                runtime.app, user_id=user_id, fields=list(changed), source=source
            )
        return changed

    # -- internals -----------------------------------------------------------------------------

    def _snapshot(self, user_id: str, account_id: str | None = None) -> ProfileSnapshot:
        runtime = self._runtime
        profile = self.profile(user_id)
        # The profile is the user's; its billing is the account's it acts for.
        subscription, plan, allowances = self._quotas.snapshot(
            account_id or personal_account_id(user_id)
        )
        moments = [a.resets_at for a in allowances.values() if a.resets_at is not None]
        if subscription.expires_at is not None:
            moments.append(subscription.expires_at)
        return ProfileSnapshot(
            profile=profile,
            host=self._host_user(user_id),
            plan_code=plan.code,
            plan_name=plan.name,
            primary_metric=runtime.settings.primary_metric,
            allowances=allowances,
            valid_until=min(moments, default=None),
        )

    def _timeout(self, snapshot: ProfileSnapshot) -> int:
        """Seconds to keep ``snapshot``: the configured time, cut at the moment it goes stale."""
        seconds = self._runtime.settings.profile_cache_seconds
        if snapshot.valid_until is not None:
            left = (snapshot.valid_until - self._runtime.now()).total_seconds()
            seconds = min(seconds, int(left))
        return seconds

    def host_user(self, user_id: str) -> HostUser:
        """What the host tells of ``user_id`` (email, name...): empty when it cannot say."""
        return self._host_user(user_id)

    def _host_user(self, user_id: str) -> HostUser:
        try:
            return describe_host_user(self._runtime, load_host_user(self._runtime, user_id))
        except UnknownUserError:
            return HostUser()
        except Exception:
            # A host's loader or accessor failing must not take the profile down with it: the
            # user still gets what the extension stores, and the host gets the traceback.
            log.exception("could not load the host's user %r for the profile", user_id)
            return HostUser()


def describe_host_user(runtime: Runtime, user: Any) -> HostUser:
    """What the profile and the emails show of the host's ``user``: ``BILLING_USER_INFO``'s
    mapping, else the user's attributes."""
    user_info = runtime.settings.user_info
    info: Mapping[str, Any] | None = user_info(user) if user_info is not None else None
    return _host_user_from(user, info)


def _to_profile(row: Row[Any]) -> Profile:
    return Profile(
        user_id=row.user_id,
        first_name=row.first_name,
        company=row.company,
        country=row.country,
        timezone=row.timezone,
        avatar_url=row.avatar_url,
        phone=row.phone,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _fresh(snapshot: ProfileSnapshot, now: datetime) -> bool:
    return snapshot.valid_until is None or now < snapshot.valid_until


def _host_user_from(user: Any, info: Mapping[str, Any] | None) -> HostUser:
    """Email, name, role and sign-up time from ``BILLING_USER_INFO``'s mapping, else attributes."""

    def value(*names: str) -> Any:
        for name in names:
            found = info.get(name) if info is not None else getattr(user, name, None)
            if found is not None and found != "":
                return found
        return None

    return HostUser(
        email=_text(value("email")),
        first_name=_text(value("first_name", "name")),
        role=_role_text(value("role", "roles")) or DEFAULT_ROLE,
        created_at=_iso(value("created_at")),
    )


def _role_text(role: Any) -> str:
    """A host's role as a reader sees it: a string as it is, an enum member's value, a role
    object's ``name`` (a Flask-Security or SQLAlchemy ``Role`` row), a list of roles their names
    joined; "" for nothing, never an object's repr (``<Role 'User'>``)."""
    if role is None:
        return ""
    if isinstance(role, str):
        return role
    if isinstance(role, Enum):
        return str(role.value)
    if isinstance(role, Iterable) and not isinstance(role, Mapping | bytes):
        return ", ".join(text for text in map(_role_text, role) if text)
    for attribute in ("name", "value"):
        found = getattr(role, attribute, None)
        if isinstance(found, str | int) and not isinstance(found, bool):
            return str(found)
    return str(role)


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _iso(value: Any) -> str | None:
    if isinstance(value, datetime):
        # Host models often keep naive UTC; the contract's times carry their offset.
        return (value if value.tzinfo else value.replace(tzinfo=UTC_OFFSET)).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return value if isinstance(value, str) else None
