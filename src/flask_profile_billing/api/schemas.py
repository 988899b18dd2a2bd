"""Request schemas of the JSON API: every body and query string is validated by one of these."""

from __future__ import annotations

from typing import Any

from marshmallow import RAISE, Schema, fields, validate, validates

from ..state import get_state


class StrictSchema(Schema):
    class Meta:
        unknown = RAISE  # unknown fields are refused: no mass assignment


class NoQuerySchema(StrictSchema):
    """The query string of an endpoint that takes no parameters: any parameter is unknown, and
    refused (422) like an unknown field anywhere in the API, so a client's typo or a parameter of
    another version never goes unnoticed."""


class UpgradeSchema(StrictSchema):
    plan_type = fields.String(required=True)
    duration_months = fields.Integer(
        load_default=1, strict=True, validate=validate.OneOf([1, 12], error="must be 1 or 12")
    )

    @validates("plan_type")
    def known_plan(self, value: str, **_: Any) -> None:
        plans = get_state().runtime.catalog.plans
        if value not in plans:
            raise _invalid(f"unknown plan; one of: {', '.join(plans)}")


class UsageQuerySchema(StrictSchema):
    days = fields.Integer(
        load_default=30, validate=validate.Range(min=1, max=365, error="must be between 1 and 365")
    )


def _invalid(message: str) -> Exception:
    from marshmallow import ValidationError

    return ValidationError(message)
