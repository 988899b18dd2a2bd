"""The accounts API (``/api/accounts/...``, ``/api/invitations/accept``): the accounts a user may
act for, teams, their members and roles, invitations and member caps.

Every view asks the account service, which checks the caller's membership and role in the same
transaction as the change: an account the caller does not belong to answers 404
``ACCOUNT_NOT_FOUND`` whatever it is (so its existence is not told), a role that does not allow
the change 403 ``ACCOUNT_FORBIDDEN``.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, Response, url_for
from flask_login import current_user
from marshmallow import ValidationError

from ..account_context import request_account_id
from ..domain.accounts import AccountKind, Role, SeatCount, account_kind, personal_user_id
from ..domain.catalog import render
from ..errors import ApiError, UnknownUserError
from ..presenters import moment
from ..services.accounts import AccountSummary, Invitation, Member
from ..services.profiles import HostUser, describe_host_user
from ..services.users import load_host_user
from ..state import BillingState, get_state
from .account_schemas import (
    MAX_ID_LENGTH,
    AcceptSchema,
    CapSchema,
    ChangeRoleSchema,
    CreateTeamSchema,
    InviteSchema,
    RenameTeamSchema,
    TransferSchema,
    plain_text,
)
from .common import authenticated, current_user_id, load_json, load_query, ok
from .profile_schemas import quota_dict
from .schemas import NoQuerySchema

log = logging.getLogger(__name__)

ACCEPT_PAGE_ENDPOINT = "invitation"
"""The profile page's view that offers to accept an invitation (``<page blueprint>.`` before it)."""


def build_blueprint(name: str) -> Blueprint:
    blueprint = Blueprint(name, __name__)
    blueprint.add_url_rule("/accounts", view_func=list_accounts, methods=["GET"])
    blueprint.add_url_rule("/accounts", view_func=create_team, methods=["POST"])
    blueprint.add_url_rule("/accounts/<account_id>", view_func=show_account, methods=["GET"])
    blueprint.add_url_rule("/accounts/<account_id>", view_func=rename_team, methods=["PATCH"])
    blueprint.add_url_rule(
        "/accounts/<account_id>/members/<user_id>", view_func=change_role, methods=["PATCH"]
    )
    blueprint.add_url_rule(
        "/accounts/<account_id>/members/<user_id>", view_func=remove_member, methods=["DELETE"]
    )
    blueprint.add_url_rule(
        "/accounts/<account_id>/transfer", view_func=transfer_ownership, methods=["POST"]
    )
    blueprint.add_url_rule(
        "/accounts/<account_id>/caps/<user_id>/<metric>", view_func=set_cap, methods=["PUT"]
    )
    blueprint.add_url_rule("/accounts/<account_id>/invitations", view_func=invite, methods=["POST"])
    blueprint.add_url_rule(
        "/accounts/<account_id>/invitations/<invitation_id>",
        view_func=revoke_invitation,
        methods=["DELETE"],
    )
    blueprint.add_url_rule("/invitations/accept", view_func=accept_invitation, methods=["POST"])
    blueprint.url_value_preprocessor(_check_path_values)
    return blueprint


def _check_path_values(endpoint: str | None, values: dict[str, Any] | None) -> None:
    """The ids in the path are looked up in the database: one that no row can hold (a NUL,
    which PostgreSQL refuses in any string, or an over-long one) is refused here, with the field
    that carries it, rather than as a fault of the database. Login is decided first, as in
    every view: an anonymous request is 401 whatever its path."""
    current_user_id()
    errors: dict[str, list[str]] = {}
    for name, value in (values or {}).items():
        try:
            plain_text(value)
        except ValidationError as error:
            errors[name] = [str(message) for message in error.messages]
        else:
            if len(value) > MAX_ID_LENGTH:
                errors[name] = [f"Longer than {MAX_ID_LENGTH} characters."]
    if errors:
        raise ApiError("VALIDATION_ERROR", "Some fields are invalid", {"fields": errors})


# -- views ------------------------------------------------------------------------------------


@authenticated
def list_accounts() -> Response:
    load_query(NoQuerySchema())
    state = get_state()
    user_id = current_user_id()
    current = request_account_id(state, user_id)
    return ok(
        {
            "accounts": [
                {**summary_dict(summary), "current": summary.id == current}
                for summary in state.accounts.accounts_of(user_id)
            ],
            "current": current,
        }
    )


@authenticated
def create_team() -> Response:
    body = load_json(CreateTeamSchema())
    state = get_state()
    user_id = current_user_id()
    team = state.accounts.create_team(user_id, body["name"], body["key"])
    return ok({"account": account_dict(state, user_id, team.id)}, 201)


@authenticated
def show_account(account_id: str) -> Response:
    load_query(NoQuerySchema())
    state = get_state()
    return ok({"account": account_dict(state, current_user_id(), account_id)})


@authenticated
def rename_team(account_id: str) -> Response:
    body = load_json(RenameTeamSchema())
    state = get_state()
    user_id = current_user_id()
    state.accounts.rename_team(user_id, account_id, body["name"])
    return ok({"account": account_dict(state, user_id, account_id)})


@authenticated
def change_role(account_id: str, user_id: str) -> Response:
    body = load_json(ChangeRoleSchema())
    state = get_state()
    actor = current_user_id()
    state.accounts.change_role(actor, account_id, user_id, Role(body["role"]))
    return ok({"account": account_dict(state, actor, account_id)})


@authenticated
def remove_member(account_id: str, user_id: str) -> Response:
    """Remove a member, or leave the team when ``user_id`` is the caller (then the account is
    null: the caller no longer sees it)."""
    load_json(NoQuerySchema())
    state = get_state()
    actor = current_user_id()
    if user_id == actor:
        state.accounts.leave(actor, account_id)
        return ok({"removed": user_id, "account": None})
    state.accounts.remove_member(actor, account_id, user_id)
    return ok({"removed": user_id, "account": account_dict(state, actor, account_id)})


@authenticated
def transfer_ownership(account_id: str) -> Response:
    body = load_json(TransferSchema())
    state = get_state()
    actor = current_user_id()
    state.accounts.transfer_ownership(actor, account_id, body["user_id"])
    return ok({"account": account_dict(state, actor, account_id)})


@authenticated
def set_cap(account_id: str, user_id: str, metric: str) -> Response:
    body = load_json(CapSchema())
    state = get_state()
    actor = current_user_id()
    metrics = state.runtime.catalog.periodic_metric_names
    if metric not in metrics:
        # Checked here: the service takes an unknown metric for a bug of the host (500).
        raise ApiError(
            "VALIDATION_ERROR",
            "Some fields are invalid",
            {"fields": {"metric": [f"Must be one of: {', '.join(metrics)}."]}},
        )
    state.accounts.set_cap(actor, account_id, user_id, metric, body["cap"])
    return ok({"account": account_dict(state, actor, account_id)})


@authenticated
def invite(account_id: str) -> Response:
    body = load_json(InviteSchema())
    state = get_state()
    actor = current_user_id()
    issued = state.accounts.invite(actor, account_id, body["email"], Role(body["role"]))
    accept_url = _accept_url(state, issued.token)
    me = _host_user(state, actor)
    emailed = state.accounts.send_invitation(issued, accept_url, me.first_name or me.email)
    return ok(
        {
            "invitation": invitation_dict(issued.invitation),
            "accept_url": accept_url,
            "emailed": emailed,
        },
        201,
    )


@authenticated
def revoke_invitation(account_id: str, invitation_id: str) -> Response:
    load_json(NoQuerySchema())
    state = get_state()
    actor = current_user_id()
    state.accounts.revoke_invitation(actor, account_id, invitation_id)
    return ok({"revoked": invitation_id, "account": account_dict(state, actor, account_id)})


@authenticated
def accept_invitation() -> Response:
    body = load_json(AcceptSchema())
    state = get_state()
    user_id = current_user_id()
    email = describe_host_user(state.runtime, current_user._get_current_object()).email
    joined = state.accounts.accept(user_id, email, body["token"])
    return ok({"account": account_dict(state, user_id, joined.id)})


# -- shapes -----------------------------------------------------------------------------------


def summary_dict(summary: AccountSummary) -> dict[str, Any]:
    return {
        "id": summary.id,
        "kind": summary.kind.value,
        "name": summary.name,
        "role": summary.role.value,
    }


def invitation_dict(invitation: Invitation) -> dict[str, Any]:
    return {
        "id": invitation.id,
        "email": invitation.email,
        "role": invitation.role.value,
        "invited_by": invitation.invited_by,
        "created_at": moment(invitation.created_at),
        "expires_at": moment(invitation.expires_at),
    }


def account_dict(state: BillingState, user_id: str, account_id: str) -> dict[str, Any]:
    """The account as ``user_id`` may see it (``ACCOUNT_NOT_FOUND`` unless they belong to it):
    managers see the invitations, every cap and every member's usage; a member the pool, their
    own cap and their own usage."""
    accounts = state.accounts
    if account_kind(account_id) is AccountKind.PERSONAL:
        role = accounts.role(user_id, account_id)  # a stranger's personal account: 404
        owner = personal_user_id(account_id)
        assert owner is not None
        summary = AccountSummary(account_id, AccountKind.PERSONAL, None, role)
        members: list[Member | str] = [owner]  # its user, who never joined: it is theirs
        seats: SeatCount | None = None
        invitations: list[Invitation] | None = None
        caps: dict[tuple[str, str], int] = {}
    else:
        team = accounts.team(user_id, account_id)
        summary, caps = team.account, team.caps
        members = list(team.members)
        seats = team.seats
        invitations = team.invitations if summary.role.manages else None
    _, plan, allowances = state.quotas.snapshot(account_id)
    return {
        **summary_dict(summary),
        "plan": {"id": plan.code, "name": render(plan.name)},
        "seats": None if seats is None else seat_dict(seats),
        "members": [_member_dict(state, member) for member in members],
        "caps": [
            {"user_id": member, "metric": metric, "cap": cap}
            for (member, metric), cap in sorted(caps.items())
        ],
        "invitations": None
        if invitations is None
        else [invitation_dict(invitation) for invitation in invitations],
        "usage": {
            "pool": {name: quota_dict(allowance) for name, allowance in allowances.items()},
            "members": accounts.team_usage(user_id, account_id)
            if seats is not None
            # A personal account's one user used all of it (the team counters are for teams).
            else {
                member: {
                    name: allowances[name].used
                    for name in state.runtime.catalog.periodic_metric_names
                    if name in allowances
                }
                for member in members
                if isinstance(member, str)
            },
        },
    }


def seat_dict(seats: SeatCount) -> dict[str, Any]:
    return {
        "seats": seats.seats,
        "members": seats.members,
        "pending_invitations": seats.pending_invitations,
        "free": seats.free,
    }


def _member_dict(state: BillingState, member: Member | str) -> dict[str, Any]:
    """A team's member, or (a user id) the user of a personal account, who never joined it."""
    if isinstance(member, str):
        shown: dict[str, Any] = {"user_id": member, "role": Role.OWNER.value, "joined_at": None}
    else:
        shown = {
            "user_id": member.user_id,
            "role": member.role.value,
            "joined_at": moment(member.joined_at),
        }
    host = _host_user(state, shown["user_id"])
    if host.first_name is not None:
        shown["name"] = host.first_name
    if host.email is not None:
        shown["email"] = host.email
    return shown


def _host_user(state: BillingState, user_id: str) -> HostUser:
    """What the host tells of ``user_id``; nothing when it does not know them or its loader
    fails (the member list is the extension's, and still worth showing)."""
    try:
        return describe_host_user(state.runtime, load_host_user(state.runtime, user_id))
    except UnknownUserError:
        return HostUser()
    except Exception:
        log.exception("could not load the host's user %r for the account", user_id)
        return HostUser()


def _accept_url(state: BillingState, token: str) -> str:
    """The link the invitation email carries: the profile page's acceptance when the page is
    on, else this API's endpoint (which a client posts the token to)."""
    page = state.runtime.settings.page.blueprint
    endpoint = f"{page.name}.{ACCEPT_PAGE_ENDPOINT}"
    if page.enabled and endpoint in state.runtime.app.view_functions:
        return url_for(endpoint, token=token, _external=True)
    return url_for(".accept_invitation", token=token, _external=True)
