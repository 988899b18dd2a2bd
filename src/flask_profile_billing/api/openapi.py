"""The OpenAPI 3.1 document of the JSON API, written from the marshmallow schemas.

Built per app (prefixes and enabled blueprints are configuration) and kept once built.
"""

from __future__ import annotations

from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Flask
from marshmallow import Schema, fields

from .._version import __version__
from ..state import get_state
from . import response_schemas as out
from .schemas import UpgradeSchema, UsageQuerySchema

_ERRORS = {
    "400": "Malformed request (not a JSON object, missing CSRF token)",
    "401": "Not logged in",
    "415": "The body is not JSON: send it with Content-Type: application/json",
    "422": "Invalid or unknown fields, in the body or the query string: details.fields names each one",
}
# Endpoints without parameters refuse any query parameter (422) all the same.
_NO_QUERY = ("422",)


def build_document(app: Flask) -> dict[str, Any]:
    spec = APISpec(
        title="flask-profile-billing",
        version=__version__,
        openapi_version="3.1.0",
        plugins=[MarshmallowPlugin()],
        info={
            "description": "Plans, subscriptions, quotas and profile of the current user; "
            "accounts, their members, invitations and caps."
        },
    )
    spec.components.schema("Error", schema=out.ErrorSchema)
    # Either scheme is accepted: the session cookie of a user who logged in with the host's form
    # (its writes also send X-CSRFToken), or a bearer token the host's Flask-Login request_loader
    # reads (no CSRF token).
    spec.components.security_scheme(
        "cookieAuth",
        {
            "type": "apiKey",
            "in": "cookie",
            "name": app.config.get("SESSION_COOKIE_NAME", "session"),
            "description": "The host's login session; writes also send the X-CSRFToken header.",
        },
    )
    spec.components.security_scheme(
        "bearerAuth",
        {
            "type": "http",
            "scheme": "bearer",
            "description": "A token the host issues and reads in its Flask-Login request_loader; "
            "no CSRF token needed.",
        },
    )
    settings = get_state(app).runtime.settings
    api = settings.api
    if api.subscription.enabled:
        _subscription_paths(spec, api.subscription.prefix)
    if api.profile.enabled:
        _profile_paths(spec, api.profile.prefix, csrf_token=settings.csrf_enabled)
    if api.billing.enabled:
        _billing_paths(spec, api.billing.prefix)
    if api.accounts.enabled:
        _accounts_paths(spec, api.accounts.prefix)
    document = spec.to_dict()
    # The plan codes are this app's catalog, which a schema class cannot know.
    plan_codes = list(get_state(app).runtime.catalog.plans)
    document["components"]["schemas"]["Upgrade"]["properties"]["plan_type"]["enum"] = plan_codes
    return document


def operation(
    summary: str,
    answer: type[Schema],
    *,
    status: str = "200",
    errors: tuple[str, ...] = ("401",),
    body: type[Schema] | None = None,
    query: type[Schema] | None = None,
    public: bool = False,
    extra: dict[str, str] | None = None,
    also: dict[str, str] | None = None,
) -> dict[str, Any]:
    """One operation: its answer, its error answers, and its validated input."""
    responses: dict[str, Any] = {status: {"description": "Success", "content": _json(answer)}}
    for code in errors:
        responses[code] = {"description": _ERRORS.get(code, ""), "content": _json("Error")}
    for code, description in (extra or {}).items():
        responses[code] = {"description": description, "content": _json("Error")}
    for code, description in (also or {}).items():  # more success answers of the same shape
        responses[code] = {"description": description, "content": _json(answer)}
    op: dict[str, Any] = {"summary": summary, "responses": responses}
    if body is not None:
        op["requestBody"] = {"required": True, "content": _json(body)}
    if query is not None:
        op["parameters"] = [{"in": "query", "schema": query}]
    # Alternatives: either scheme alone authenticates the request.
    op["security"] = [] if public else [{"cookieAuth": []}, {"bearerAuth": []}]
    return op


def _json(schema: Any) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _subscription_paths(spec: APISpec, prefix: str) -> None:
    spec.path(
        path=f"{prefix}/plans",
        operations={
            "get": operation(
                "The plan catalog",
                out.envelope("PlansAnswer", out.PlansDataSchema),
                errors=_NO_QUERY,
                public=True,
            )
        },
    )
    subscription = out.envelope("SubscriptionAnswer", out.SubscriptionDataSchema)
    spec.path(
        path=f"{prefix}/current",
        operations={
            "get": operation(
                "The current subscription and its usage", subscription, errors=("401", *_NO_QUERY)
            )
        },
    )
    spec.path(
        path=f"{prefix}/upgrade",
        operations={
            "post": operation(
                "Change plan: paid plans go through payment, Free takes effect at the period end",
                out.envelope("ChangeAnswer", out.ChangeDataSchema),
                errors=("400", "401", "415", "422"),
                body=UpgradeSchema,
                extra={
                    "402": "Payment required (payments coming soon, or a plan on request)",
                    "429": "Too many pending payments: finish one, or wait until it is settled",
                    "502": "The payment provider failed to start the payment",
                },
                also={"202": "A payment was started: follow data.payment.confirmation_url"},
            )
        },
    )
    spec.path(
        path=f"{prefix}/usage",
        operations={
            "get": operation(
                "Usage statistics over the last days",
                out.envelope("UsageAnswer", out.UsageDataSchema),
                errors=("401", "422"),
                query=UsageQuerySchema,
            )
        },
    )
    spec.path(
        path=f"{prefix}/limits/check",
        operations={
            "get": operation(
                "Which limited operations are possible now",
                out.envelope("LimitsCheckAnswer", out.LimitsCheckSchema),
                errors=("401", *_NO_QUERY),
            )
        },
    )
    spec.path(
        path=f"{prefix}/cancel",
        operations={
            "post": operation(
                "Cancel at the end of the paid period",
                out.envelope("CancelAnswer", out.ChangeDataSchema),
                errors=("400", "401"),
                extra={"409": "Nothing to cancel (the plan never lapses)"},
            )
        },
    )


def _profile_paths(spec: APISpec, prefix: str, *, csrf_token: bool) -> None:
    from .activity_views import ActivityQuerySchema, TrackEventSchema
    from .profile_schemas import ProfileUpdateSchema

    profile = out.envelope("ProfileAnswer", out.ProfileSchema)
    spec.path(
        path=f"{prefix}/me",
        operations={
            "get": operation(
                "The current user's profile with the quota snapshot",
                profile,
                errors=("401", *_NO_QUERY),
            ),
            "patch": operation(
                "Edit first_name, company, country, timezone, avatar_url, phone",
                profile,
                errors=("400", "401", "415", "422"),
                body=ProfileUpdateSchema,
            ),
        },
    )
    spec.path(
        path=f"{prefix}/activity",
        operations={
            "get": operation(
                "The latest events of the user, newest first",
                out.envelope("ActivityAnswer", out.ActivityDataSchema),
                errors=("401", "422"),
                query=ActivityQuerySchema,
            )
        },
    )
    spec.path(
        path=f"{prefix}/events",
        operations={
            "post": operation(
                "Record an analytics event of the profile page",
                out.envelope("EventAnswer", out.AcceptedEventSchema),
                status="202",
                errors=("400", "401", "415", "422"),
                body=TrackEventSchema,
            )
        },
    )
    if not csrf_token:
        return
    spec.path(
        path=f"{prefix}/csrf-token",
        operations={
            "get": operation(
                "The CSRF token for writes authenticated by the session cookie (null for a "
                "bearer token, whose writes need none)",
                out.envelope("CsrfTokenAnswer", out.CsrfTokenSchema),
                errors=("401", *_NO_QUERY),
            )
        },
    )


def _billing_paths(spec: APISpec, prefix: str) -> None:
    spec.path(
        path=f"{prefix}/quotas/preview",
        operations={
            "get": operation(
                "Purchasable quota packages (status coming_soon while payments are off)",
                out.envelope(
                    "QuotaPreviewAnswer",
                    fields.List(fields.Nested(out.QuotaPackageSchema), required=True),
                ),
                errors=_NO_QUERY,
                public=True,
            )
        },
    )
    spec.path(
        path=f"{prefix}/webhooks/{{provider}}",
        operations={
            "post": {
                **operation(
                    "A payment provider's event, signed with X-Billing-Signature (no login, no CSRF)",
                    out.envelope("WebhookAnswer", out.WebhookOutcomeSchema),
                    errors=("400", "401", "422"),
                    public=True,
                    extra={"404": "Unknown provider", "503": "Webhooks are off (no secret)"},
                ),
                "parameters": [
                    {
                        "in": "path",
                        "name": "provider",
                        "required": True,
                        "schema": {"type": "string"},
                    },
                    {
                        "in": "header",
                        "name": "X-Billing-Signature",
                        "required": True,
                        "schema": {"type": "string"},
                        "description": "t=<unix seconds>,v1=<hex HMAC-SHA256 of '<t>.' + raw body>",
                    },
                ],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {"type": "object"}}},
                },
            }
        },
    )


def _path_parameters(*names: str) -> list[dict[str, Any]]:
    return [
        {"in": "path", "name": name, "required": True, "schema": {"type": "string"}}
        for name in names
    ]


def _accounts_paths(spec: APISpec, prefix: str) -> None:
    from .account_schemas import (
        AcceptSchema,
        CapSchema,
        ChangeRoleSchema,
        CreateTeamSchema,
        InviteSchema,
        RenameTeamSchema,
        TransferSchema,
    )

    account = out.envelope("AccountAnswer", out.AccountDataSchema)
    not_found = {"404": "No such account, or not one you belong to (ACCOUNT_NOT_FOUND)"}
    forbidden = {"403": "Your role in the account does not allow this (ACCOUNT_FORBIDDEN)"}
    conflict = {"409": "The membership change cannot be made (MEMBERSHIP_CONFLICT)"}
    write = ("400", "401", "415", "422")

    def with_path(op: dict[str, Any], *names: str) -> dict[str, Any]:
        return {**op, "parameters": [*op.get("parameters", []), *_path_parameters(*names)]}

    spec.path(
        path=f"{prefix}/accounts",
        operations={
            "get": operation(
                "The accounts you may act for (personal first) with your role; which is current",
                out.envelope("AccountsAnswer", out.AccountsDataSchema),
                errors=("401", *_NO_QUERY),
            ),
            "post": operation(
                "Create a team account, owned by you",
                account,
                status="201",
                errors=write,
                body=CreateTeamSchema,
                extra={"409": "That team key is taken (MEMBERSHIP_CONFLICT)"},
            ),
        },
    )
    spec.path(
        path=f"{prefix}/accounts/{{account_id}}",
        operations={
            "get": with_path(
                operation(
                    "The account: plan, seats, members, caps, invitations and usage as your "
                    "role may see them",
                    account,
                    errors=("401", *_NO_QUERY),
                    extra=not_found,
                ),
                "account_id",
            ),
            "patch": with_path(
                operation(
                    "Rename a team (owners and admins)",
                    account,
                    errors=write,
                    body=RenameTeamSchema,
                    extra={**forbidden, **not_found},
                ),
                "account_id",
            ),
        },
    )
    spec.path(
        path=f"{prefix}/accounts/{{account_id}}/members/{{user_id}}",
        operations={
            "patch": with_path(
                operation(
                    "Change a member's role (owners; admins between admin and member)",
                    account,
                    errors=write,
                    body=ChangeRoleSchema,
                    extra={**forbidden, **not_found, **conflict},
                ),
                "account_id",
                "user_id",
            ),
            "delete": with_path(
                operation(
                    "Remove a member (owners and admins), or leave when user_id is you",
                    out.envelope("RemovedMemberAnswer", out.RemovedMemberSchema),
                    errors=write,
                    extra={**forbidden, **not_found, **conflict},
                ),
                "account_id",
                "user_id",
            ),
        },
    )
    spec.path(
        path=f"{prefix}/accounts/{{account_id}}/transfer",
        operations={
            "post": with_path(
                operation(
                    "Make a member an owner; you become an admin (owners)",
                    account,
                    errors=write,
                    body=TransferSchema,
                    extra={**forbidden, **not_found, **conflict},
                ),
                "account_id",
            )
        },
    )
    spec.path(
        path=f"{prefix}/accounts/{{account_id}}/caps/{{user_id}}/{{metric}}",
        operations={
            "put": with_path(
                operation(
                    "Cap what a member may use of a metric per period; null removes the cap "
                    "(owners and admins)",
                    account,
                    errors=write,
                    body=CapSchema,
                    extra={**forbidden, **not_found, **conflict},
                ),
                "account_id",
                "user_id",
                "metric",
            )
        },
    )
    spec.path(
        path=f"{prefix}/accounts/{{account_id}}/invitations",
        operations={
            "post": with_path(
                operation(
                    "Invite an email address as admin or member; it takes a seat until used "
                    "(owners and admins)",
                    out.envelope("InvitationAnswer", out.IssuedInvitationSchema),
                    status="201",
                    errors=write,
                    body=InviteSchema,
                    extra={
                        **forbidden,
                        **not_found,
                        "409": "Every seat is taken (SEATS_EXHAUSTED, with the counts)",
                    },
                ),
                "account_id",
            )
        },
    )
    spec.path(
        path=f"{prefix}/accounts/{{account_id}}/invitations/{{invitation_id}}",
        operations={
            "delete": with_path(
                operation(
                    "Revoke a pending invitation (owners and admins)",
                    out.envelope("RevokedInvitationAnswer", out.RevokedInvitationSchema),
                    errors=write,
                    extra={
                        **forbidden,
                        "404": "No such account (ACCOUNT_NOT_FOUND) or pending invitation "
                        "(INVITATION_INVALID)",
                    },
                ),
                "account_id",
                "invitation_id",
            )
        },
    )
    spec.path(
        path=f"{prefix}/invitations/accept",
        operations={
            "post": operation(
                "Join the team of an invitation sent to your email address",
                account,
                errors=write,
                body=AcceptSchema,
                extra={
                    "404": "The invitation is unknown, used, revoked, expired or for another "
                    "address (INVITATION_INVALID)",
                    "409": "You are a member already, or every seat is taken",
                },
            )
        },
    )
