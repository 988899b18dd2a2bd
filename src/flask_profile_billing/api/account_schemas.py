"""Request schemas of the accounts API: every body it accepts, validated before any service is
asked, unknown fields refused (a client cannot set what the endpoint does not offer)."""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from typing import Any

from marshmallow import ValidationError, fields, validate

from ..domain.accounts import Role
from ..services.accounts import MAX_EMAIL_LENGTH, MAX_TEAM_NAME_LENGTH
from .schemas import StrictSchema

# Control characters (NUL among them: PostgreSQL cannot store it), lone surrogates (not UTF-8)
# and line separators: refused in every text the API stores or looks up.
_REFUSED_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})
MAX_ID_LENGTH = 300


def plain_text(value: str) -> None:
    """A validator: one line of printable text."""
    if any(unicodedata.category(char) in _REFUSED_CATEGORIES for char in value):
        raise ValidationError("Must not contain control characters or line breaks.")


_NAME: list[Callable[[Any], Any]] = [
    plain_text,
    validate.Length(
        min=1,
        max=MAX_TEAM_NAME_LENGTH,
        error=f"Length must be between 1 and {MAX_TEAM_NAME_LENGTH}.",
    ),
    validate.Predicate("strip", error="Must not be blank."),
]
# An invitation's token is 43 URL-safe characters; the bound keeps a huge body from being hashed.
MAX_TOKEN_LENGTH = 200
MAX_USER_ID_LENGTH = 255


class CreateTeamSchema(StrictSchema):
    name = fields.String(
        required=True,
        validate=_NAME,
    )
    key = fields.String(
        load_default=None,
        validate=validate.Regexp(
            r"^[A-Za-z0-9_-]{1,64}$", error="Must be 1 to 64 letters, digits, '-' or '_'."
        ),
        metadata={"description": "The team's own key (its id is team:<key>); random when absent"},
    )


class RenameTeamSchema(StrictSchema):
    name = fields.String(required=True, validate=_NAME)


class ChangeRoleSchema(StrictSchema):
    role = fields.String(
        required=True,
        validate=validate.OneOf([role.value for role in Role]),
        metadata={"enum": [role.value for role in Role]},
    )


class TransferSchema(StrictSchema):
    user_id = fields.String(
        required=True,
        validate=[validate.Length(min=1, max=MAX_USER_ID_LENGTH), plain_text],
        metadata={"description": "A member of the team, who becomes an owner"},
    )


class CapSchema(StrictSchema):
    cap = fields.Integer(
        required=True,
        allow_none=True,
        strict=True,
        validate=validate.Range(min=0, max=2**62, error="Must be between 0 and 2**62."),
        metadata={"description": "Per period; null removes the cap"},
    )


class InviteSchema(StrictSchema):
    email = fields.Email(
        required=True, validate=[validate.Length(max=MAX_EMAIL_LENGTH), plain_text]
    )
    role = fields.String(
        load_default=Role.MEMBER.value,
        validate=validate.OneOf([Role.ADMIN.value, Role.MEMBER.value]),
        metadata={"enum": [Role.ADMIN.value, Role.MEMBER.value]},
    )


class AcceptSchema(StrictSchema):
    token = fields.String(
        required=True, validate=[validate.Length(min=1, max=MAX_TOKEN_LENGTH), plain_text]
    )
