"""The edit form of the profile page: its values, its choices, and what a post changes.

Inputs are named like the API's fields, and a post is loaded by the API's own schema
(``profile_fields.ProfileUpdateSchema``), so the page and ``PATCH /api/profile/me`` accept and
refuse the same values. An empty field clears it, as ``null`` does in the API.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, tzinfo
from functools import cache
from urllib.parse import urlsplit
from zoneinfo import available_timezones

import pycountry

from ..presentation.i18n import territory_names, translatable
from ..presentation.translator import Translator
from ..services.profiles import EDITABLE_FIELDS, ProfileSnapshot

# Top-level areas of the IANA database: the zones a person lives in (no "Etc/GMT+3" or
# legacy aliases such as "US/Eastern").
_REGIONS = (
    "Africa",
    "America",
    "Antarctica",
    "Asia",
    "Atlantic",
    "Australia",
    "Europe",
    "Indian",
    "Pacific",
)
_FIELD_MESSAGES = (
    # The schema's messages, listed so that the catalog translates them.
    translatable("must be a two-letter ISO 3166-1 country code, such as RU or DE"),
    translatable("must be an IANA time zone name, such as Europe/Moscow"),
    translatable("must be an http or https URL"),
    translatable("must be an absolute URL with a host"),
    translatable("must not contain spaces or control characters"),
    translatable("must not contain a user name or password"),
    translatable("must not contain control characters or line breaks"),
    translatable("must be a valid phone number in international format, such as +7 912 345-67-89"),
    translatable("is not a valid URL"),
    translatable("must be at most 100 characters"),
    translatable("must be at most 200 characters"),
    translatable("must be at most 2048 characters"),
)


def initial_values(snapshot: ProfileSnapshot) -> dict[str, str]:
    profile = snapshot.profile
    return {
        "first_name": snapshot.first_name or "",
        "company": profile.company or "",
        "country": profile.country or "",
        "timezone": profile.timezone or "",
        "avatar_url": profile.avatar_url or "",
        "phone": profile.phone or "",
    }


def submitted_values(form: Mapping[str, str]) -> dict[str, str]:
    """The editable fields the form posted, as typed (to show them again next to their errors)."""
    return {name: str(form[name]) for name in EDITABLE_FIELDS if name in form}


def as_changes(values: Mapping[str, str]) -> dict[str, str | None]:
    """The posted fields as the schema loads them: an empty field clears the value."""
    return {name: (value if value.strip() else None) for name, value in values.items()}


def safe_avatar(url: str | None) -> str | None:
    """The avatar's address when it is an absolute http(s) URL, else None (no image shown):
    stored values are checked on the way in, and checked again on the way out."""
    if not url:
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return None
    return url


def member_since(t: Translator, created_at: str, zone: tzinfo) -> str | None:
    try:
        moment = datetime.fromisoformat(created_at)
    except ValueError:
        return None
    if moment.tzinfo is None:  # a date, or a host's naive time: shown as the day it names
        return t.day(moment)
    return t.day(moment.astimezone(zone))


def country_name(t: Translator, code: str | None) -> str | None:
    if not code:
        return None
    return dict(countries(t)).get(code, code)


def countries(t: Translator) -> list[tuple[str, str]]:
    """(ISO code, name in the reader's language), sorted by name."""
    return _countries(t.locale)


@cache
def _countries(locale: str) -> list[tuple[str, str]]:
    names = {country.alpha_2: country.name for country in pycountry.countries}
    territories = territory_names(locale)
    localized = {code: territories.get(code, name) for code, name in names.items()}
    return sorted(localized.items(), key=lambda item: item[1].casefold())


@cache
def timezones() -> list[str]:
    """The IANA zones people live in, sorted, and UTC."""
    zones = sorted(
        name
        for name in available_timezones()
        if name.split("/")[0] in _REGIONS and "/" in name and not name.startswith("Etc/")
    )
    return ["UTC", *zones]
