"""Shapes of the profile API: the PATCH body it accepts and the profile it answers with.

The body is ``ProfileUpdateSchema`` of ``profile_fields``, shared with the profile page's form.
"""

from __future__ import annotations

from typing import Any

from ..domain.catalog import Catalog, render
from ..domain.limits import Allowance
from ..presenters import moment
from ..profile_fields import (
    CountryCode,
    HttpUrl,
    PhoneNumber,
    ProfileUpdateSchema,
    Text,
    TimeZoneName,
    canonical_zone,
)
from ..services.profiles import ProfileSnapshot

__all__ = [
    "CountryCode",
    "HttpUrl",
    "PhoneNumber",
    "ProfileUpdateSchema",
    "Text",
    "TimeZoneName",
    "canonical_zone",
    "profile_dict",
    "quota_dict",
]


def quota_dict(allowance: Allowance) -> dict[str, Any]:
    """The quota shape; ``limit`` and ``available`` are null when unlimited."""
    return {
        "limit": allowance.limit,
        "used": allowance.used,
        "available": allowance.remaining,
        "resets_at": moment(allowance.resets_at),
    }


def profile_dict(snapshot: ProfileSnapshot, catalog: Catalog) -> dict[str, Any]:
    """``GET /api/profile/me``: the documented fields first, in their order, then the others.

    The plan's name is rendered from the catalog now, in this request's locale: the snapshot is
    cached for every locale, so it keeps only the source text."""
    profile = snapshot.profile
    plan = catalog.plans.get(snapshot.plan_code)
    plan_name = snapshot.plan_name if plan is None else render(plan.name)
    quota = snapshot.quota
    return {
        "id": profile.user_id,
        "email": snapshot.host.email,
        # A user without a name has "": a string, never null, as clients expect.
        "first_name": snapshot.first_name or "",
        "company": profile.company,
        "timezone": profile.timezone,
        "created_at": snapshot.created_at,
        "role": snapshot.host.role,
        "quota": None if quota is None else quota_dict(quota),
        "country": profile.country,
        "avatar_url": profile.avatar_url,
        "phone": profile.phone,
        "plan": {"id": snapshot.plan_code, "name": plan_name},
        "quotas": {name: quota_dict(allowance) for name, allowance in snapshot.allowances.items()},
    }
