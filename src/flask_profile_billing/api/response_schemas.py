"""Schemas of the API's answers, for the OpenAPI document (the views build plain dicts).

Schemathesis checks every real answer against these in the tests, so they cannot drift.
"""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, fields


class ErrorSchema(Schema):
    success = fields.Boolean(required=True, metadata={"enum": [False]})
    error = fields.String(required=True, metadata={"example": "LIMIT_EXCEEDED"})
    message = fields.String(required=True)
    details = fields.Dict(required=True)


class PricingSchema(Schema):
    monthly = fields.Float(
        required=True, allow_none=True, metadata={"description": "null: on request"}
    )
    yearly = fields.Float(
        required=True, allow_none=True, metadata={"description": "null: not sold by the year"}
    )
    currency = fields.String(required=True)
    yearly_discount = fields.Integer(
        required=True, allow_none=True, metadata={"description": "null: a price is on request"}
    )


class PlanSchema(Schema):
    id = fields.String(required=True)
    plan_type = fields.String(required=True)
    name = fields.String(required=True)
    description = fields.String(required=True)
    pricing = fields.Nested(PricingSchema, required=True)
    limits = fields.Dict(
        keys=fields.String(),
        values=fields.Integer(allow_none=True),
        required=True,
        metadata={"description": "null: unlimited"},
    )
    features = fields.Dict(keys=fields.String(), values=fields.Boolean(), required=True)


class MetricUsageSchema(Schema):
    used = fields.Integer(required=True)
    limit = fields.Integer(required=True, allow_none=True)
    percentage = fields.Float(required=True)


class PeriodSchema(Schema):
    started_at = fields.String(required=True)
    expires_at = fields.String(required=True, allow_none=True)
    days_remaining = fields.Integer(required=True, allow_none=True)


class SubscriptionSchema(Schema):
    id = fields.String(required=True)
    user_id = fields.String(required=True)
    plan = fields.Nested(PlanSchema, required=True)
    status = fields.String(
        required=True, metadata={"enum": ["active", "trial", "expired", "cancelled"]}
    )
    is_active = fields.Boolean(required=True)
    period = fields.Nested(PeriodSchema, required=True)
    usage = fields.Dict(
        keys=fields.String(), values=fields.Nested(MetricUsageSchema), required=True
    )


class PlansDataSchema(Schema):
    plans = fields.List(fields.Nested(PlanSchema), required=True)


class SubscriptionDataSchema(Schema):
    subscription = fields.Nested(SubscriptionSchema, required=True)


class ChangeDataSchema(SubscriptionDataSchema):
    message = fields.String(required=True)
    payment = fields.Dict(metadata={"description": "present when a payment was started"})


class UsageDataSchema(SubscriptionDataSchema):
    period_days = fields.Integer(required=True)
    total_usage = fields.Dict(keys=fields.String(), values=fields.Integer(), required=True)
    daily_usage = fields.Dict(
        keys=fields.String(),
        values=fields.Dict(keys=fields.String(), values=fields.Integer()),
        required=True,
    )


class LimitsCheckSchema(Schema):
    class Meta:
        # can_analyze, can_export, can_add_vacancy ... one flag per metric of the catalog
        unknown = "include"

    messages = fields.Dict(
        keys=fields.String(), values=fields.String(allow_none=True), required=True
    )


def envelope(name: str, data: type[Schema] | fields.Field[Any]) -> type[Schema]:
    """``{"success": true, "data": <data>}`` as a named schema."""
    data_field = data if isinstance(data, fields.Field) else fields.Nested(data, required=True)
    return Schema.from_dict(
        {"success": fields.Boolean(required=True, metadata={"enum": [True]}), "data": data_field},
        name=name,
    )


class QuotaSnapshotSchema(Schema):
    limit = fields.Integer(
        required=True, allow_none=True, metadata={"description": "null: unlimited"}
    )
    used = fields.Integer(required=True)
    available = fields.Integer(required=True, allow_none=True)
    resets_at = fields.String(required=True, allow_none=True)


class PlanRefSchema(Schema):
    id = fields.String(required=True)
    name = fields.String(required=True)


class ProfileSchema(Schema):
    id = fields.String(required=True)
    email = fields.String(required=True, allow_none=True)
    first_name = fields.String(required=True)
    company = fields.String(required=True, allow_none=True)
    timezone = fields.String(required=True, allow_none=True)
    created_at = fields.String(required=True)
    role = fields.String(required=True)
    quota = fields.Nested(QuotaSnapshotSchema, required=True, allow_none=True)
    country = fields.String(required=True, allow_none=True)
    avatar_url = fields.String(required=True, allow_none=True)
    phone = fields.String(required=True, allow_none=True)
    plan = fields.Nested(PlanRefSchema, required=True)
    quotas = fields.Dict(
        keys=fields.String(), values=fields.Nested(QuotaSnapshotSchema), required=True
    )


class ActivityEventSchema(Schema):
    id = fields.String(required=True)
    type = fields.String(required=True)
    title = fields.String(required=True)
    occurred_at = fields.String(required=True)
    metadata = fields.Dict(required=True)


class ActivityDataSchema(Schema):
    events = fields.List(fields.Nested(ActivityEventSchema), required=True)


class AcceptedEventSchema(Schema):
    accepted = fields.String(required=True)


class CsrfTokenSchema(Schema):
    # None for a client not authenticated by the session cookie: its writes need no token.
    csrf_token = fields.String(required=True, allow_none=True)


class QuotaPackageSchema(Schema):
    id = fields.String(required=True)
    name = fields.String(required=True)
    tokens = fields.Integer(required=True, allow_none=True)
    price = fields.Float(required=True, allow_none=True)
    currency = fields.String(required=True)
    status = fields.String(
        required=True, metadata={"enum": ["coming_soon", "available", "on_request"]}
    )


class WebhookOutcomeSchema(Schema):
    outcome = fields.String(
        required=True, metadata={"enum": ["processed", "duplicate", "ignored", "rejected"]}
    )


class AccountSummarySchema(Schema):
    id = fields.String(required=True, metadata={"example": "team:acme"})
    kind = fields.String(required=True, metadata={"enum": ["personal", "team"]})
    name = fields.String(required=True, allow_none=True, metadata={"description": "null: personal"})
    role = fields.String(required=True, metadata={"enum": ["owner", "admin", "member"]})


class ListedAccountSchema(AccountSummarySchema):
    current = fields.Boolean(
        required=True, metadata={"description": "the account requests act for"}
    )


class AccountsDataSchema(Schema):
    accounts = fields.List(fields.Nested(ListedAccountSchema), required=True)
    current = fields.String(required=True)


class SeatsSchema(Schema):
    seats = fields.Integer(required=True, allow_none=True, metadata={"description": "null: any"})
    members = fields.Integer(required=True)
    pending_invitations = fields.Integer(required=True)
    free = fields.Integer(required=True, allow_none=True)


class AccountMemberSchema(Schema):
    user_id = fields.String(required=True)
    role = fields.String(required=True, metadata={"enum": ["owner", "admin", "member"]})
    joined_at = fields.String(
        required=True, allow_none=True, metadata={"description": "null: a personal account"}
    )
    name = fields.String(metadata={"description": "when the host knows it"})
    email = fields.String(metadata={"description": "when the host knows it"})


class MemberCapSchema(Schema):
    user_id = fields.String(required=True)
    metric = fields.String(required=True)
    cap = fields.Integer(required=True)


class InvitationSchema(Schema):
    id = fields.String(required=True)
    email = fields.String(required=True)
    role = fields.String(required=True, metadata={"enum": ["admin", "member"]})
    invited_by = fields.String(required=True)
    created_at = fields.String(required=True)
    expires_at = fields.String(required=True)


class AccountUsageSchema(Schema):
    pool = fields.Dict(
        keys=fields.String(), values=fields.Nested(QuotaSnapshotSchema), required=True
    )
    members = fields.Dict(
        keys=fields.String(),
        values=fields.Dict(keys=fields.String(), values=fields.Integer()),
        required=True,
        metadata={"description": "user -> metric -> used this period (a member: their own)"},
    )


class AccountSchema(AccountSummarySchema):
    plan = fields.Nested(PlanRefSchema, required=True)
    seats = fields.Nested(
        SeatsSchema, required=True, allow_none=True, metadata={"description": "null: personal"}
    )
    members = fields.List(fields.Nested(AccountMemberSchema), required=True)
    caps = fields.List(fields.Nested(MemberCapSchema), required=True)
    invitations = fields.List(
        fields.Nested(InvitationSchema),
        required=True,
        allow_none=True,
        metadata={"description": "pending ones; null for a plain member or a personal account"},
    )
    usage = fields.Nested(AccountUsageSchema, required=True)


class AccountDataSchema(Schema):
    account = fields.Nested(AccountSchema, required=True)


class RemovedMemberSchema(Schema):
    removed = fields.String(required=True)
    account = fields.Nested(
        AccountSchema, required=True, allow_none=True, metadata={"description": "null: you left"}
    )


class RevokedInvitationSchema(Schema):
    revoked = fields.String(required=True)
    account = fields.Nested(AccountSchema, required=True)


class IssuedInvitationSchema(Schema):
    invitation = fields.Nested(InvitationSchema, required=True)
    accept_url = fields.String(required=True)
    emailed = fields.Boolean(required=True)
