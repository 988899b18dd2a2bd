"""The editable profile fields, validated and normalised the same way for every face.

The JSON API (``PATCH /api/profile/me``) and the profile page's form both load a change through
``ProfileUpdateSchema``, so the page can never store what the API would refuse: trimmed text
without control characters, upper-case ISO 3166-1 country codes, IANA time zone names, http(s)
avatar URLs and E.164 phone numbers. ``null`` (an empty form field) clears a field.
"""

from __future__ import annotations

import re
import unicodedata
from functools import cache
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, available_timezones

import phonenumbers
import pycountry
from marshmallow import RAISE, Schema, ValidationError, fields

from .services.profiles import EDITABLE_FIELDS

MAX_URL_LENGTH = 2048
MAX_PHONE_INPUT = 64
# Categories refused inside text: control characters (NUL, escapes, tabs, newlines), lone
# surrogates (not storable as UTF-8) and line or paragraph separators.
_REFUSED_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})
# A zone name is path-like ("America/Argentina/Buenos_Aires"): this keeps "../etc", absolute
# paths and spaces away from the time zone loader.
_ZONE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_+\-]*(?:/[A-Za-z0-9_+\-]+)*")
# Files of the system's zone database that are not zone names: "localtime" is the server's zone.
_NOT_ZONES = frozenset({"localtime", "posixrules", "posix", "right"})


def _has_refused_characters(value: str) -> bool:
    return any(unicodedata.category(char) in _REFUSED_CATEGORIES for char in value)


class Text(fields.String):
    """Free text: trimmed, at most ``max_length`` characters, one line; empty clears the field."""

    def __init__(self, max_length: int, **kwargs: Any) -> None:
        super().__init__(allow_none=True, **kwargs)
        self.max_length = max_length

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        text = str(super()._deserialize(value, attr, data, **kwargs)).strip()
        if _has_refused_characters(text):
            raise ValidationError("must not contain control characters or line breaks")
        if len(text) > self.max_length:
            raise ValidationError(f"must be at most {self.max_length} characters")
        return text or None


class CountryCode(fields.String):
    """An ISO 3166-1 alpha-2 code ("RU", "de"), stored upper-case."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(allow_none=True, **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        code = str(super()._deserialize(value, attr, data, **kwargs)).strip().upper()
        if not (len(code) == 2 and code.isascii() and code.isalpha()):
            raise ValidationError("must be a two-letter ISO 3166-1 country code, such as RU or DE")
        if pycountry.countries.get(alpha_2=code) is None:
            raise ValidationError(f"{code} is not an ISO 3166-1 country code")
        return code


@cache
def _zone_names() -> dict[str, str]:
    """Lower-case name -> IANA name, for the zones this system knows (listed once per process)."""
    return {name.lower(): name for name in available_timezones() if name not in _NOT_ZONES}


def canonical_zone(name: str) -> str | None:
    """The IANA spelling of ``name`` ("europe/moscow" -> "Europe/Moscow"), or None if unknown."""
    if not _ZONE_NAME.fullmatch(name) or name.split("/")[0] in _NOT_ZONES:
        return None
    known = _zone_names().get(name.lower())
    if known is not None:
        return known
    # A system that cannot list its zones (no tz database directory) may still load them.
    try:
        ZoneInfo(name)
    except (KeyError, ValueError, OSError):  # ZoneInfoNotFoundError is a KeyError
        return None
    return name


class TimeZoneName(fields.String):
    """An IANA time zone name such as "Europe/Moscow"."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(allow_none=True, **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        name = str(super()._deserialize(value, attr, data, **kwargs)).strip()
        zone = canonical_zone(name)
        if zone is None:
            raise ValidationError("must be an IANA time zone name, such as Europe/Moscow")
        return zone


class HttpUrl(fields.String):
    """An absolute http or https URL with a host (no ``javascript:``, ``data:`` or relative URLs)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(allow_none=True, **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        url = str(super()._deserialize(value, attr, data, **kwargs)).strip()
        if len(url) > MAX_URL_LENGTH:
            raise ValidationError(f"must be at most {MAX_URL_LENGTH} characters")
        # Whitespace and control characters inside a URL are how filters get fooled
        # ("java\tscript:"): a clean URL has none.
        if _has_refused_characters(url) or any(char.isspace() for char in url):
            raise ValidationError("must not contain spaces or control characters")
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 (parsing the port raises for a malformed one)
        except ValueError:
            raise ValidationError("is not a valid URL") from None
        if parts.scheme.lower() not in ("http", "https"):
            raise ValidationError("must be an http or https URL")
        if not parts.hostname:
            raise ValidationError("must be an absolute URL with a host")
        if parts.username is not None or parts.password is not None:
            raise ValidationError("must not contain a user name or password")
        return url


class PhoneNumber(fields.String):
    """An international phone number ("+7 912 345-67-89"), stored as E.164 ("+79123456789")."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(allow_none=True, **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        text = str(super()._deserialize(value, attr, data, **kwargs)).strip()
        message = "must be a valid phone number in international format, such as +7 912 345-67-89"
        if len(text) > MAX_PHONE_INPUT or _has_refused_characters(text):
            raise ValidationError(message)
        try:
            # No default region: without the "+country code" a number is ambiguous.
            number = phonenumbers.parse(text, None)
        except phonenumbers.NumberParseException:
            raise ValidationError(message) from None
        if not phonenumbers.is_valid_number(number):
            raise ValidationError(message)
        return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


class ProfileUpdateSchema(Schema):
    """``PATCH /api/profile/me``: only the editable fields; anything else is refused by name."""

    class Meta:
        unknown = RAISE  # unknown fields are refused: no mass assignment

    error_messages = {  # noqa: RUF012 (marshmallow reads this class attribute as is)
        "unknown": f"Unknown or read-only field: only {', '.join(EDITABLE_FIELDS)} can be changed."
    }

    first_name = Text(max_length=100)
    company = Text(max_length=200)
    country = CountryCode()
    timezone = TimeZoneName()
    avatar_url = HttpUrl()
    phone = PhoneNumber()
