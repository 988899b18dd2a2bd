"""Accounts on the profile page: the account switcher, a new team, the team card's forms and the
invitation's accept page.

Like the page's other forms, each is a plain form with the CSRF token that posts, calls the
account service (the one the JSON API and the CLI call) and redirects back (303) with a flashed
message. A team's forms name the team they were shown for (a hidden ``account_id``), so a form
left open in another tab acts on its own team; the service checks the membership and the role on
every post, and an account the user does not belong to answers as an unknown one (404). A refusal
the user can act on (the seats are full, the last owner) renders the page again with the reason
next to the form.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import current_app, render_template, request, session, url_for
from flask_login import current_user
from flask_wtf.csrf import generate_csrf
from werkzeug.wrappers import Response as AnyResponse

from .._version import __version__
from ..account_context import SESSION_KEY, choose_account
from ..domain.accounts import (
    InvitationError,
    MembershipError,
    Role,
    SeatsExhausted,
    UnknownAccountError,
)
from ..errors import InvalidRequest
from ..presentation.i18n import translatable
from ..presentation.translator import Translator
from ..responses import status_of
from ..services.accounts import Invitation
from ..services.profiles import describe_host_user
from ..state import BillingState, get_state
from . import views
from .team_model import INVITABLE_ROLES, REFUSALS, ROLE_NAMES, refusal_text

# -- the forms ---------------------------------------------------------------------------------

Action = Callable[[BillingState, Translator, str, str], "str | tuple[str, str]"]
"""A team form's work: (state, translator, user, account) to the message flashed on success, or
(message, flash category)."""


def _team_form(form: str, action: Action) -> AnyResponse:
    views.check_csrf()
    state = get_state()
    t = views._translator()
    account_id = request.form.get("account_id", "")
    try:
        done = action(state, t, views.user_id(), account_id)
    except REFUSALS as error:
        return views.render_page(
            state, t, form_errors={form: [refusal_text(t, error)]}, status=status_of(error)
        )
    message, category = done if isinstance(done, tuple) else (done, views.FLASH_SUCCESS)
    return views.after(message, category)


def choose() -> AnyResponse:
    """The switcher: keep the chosen account in the session. An account the user does not
    belong to (a stale page, a forged post) is refused, and the personal one is current."""
    views.check_csrf()
    state = get_state()
    t = views._translator()
    uid = views.user_id()
    try:
        choose_account(state, uid, request.form.get("account_id", ""))
    except UnknownAccountError:
        session.pop(SESSION_KEY, None)
        return views.after(t.gettext("You are not a member of that account."), views.FLASH_ERROR)
    return views.after(t.gettext("Account switched."))


def create_team() -> AnyResponse:
    def action(state: BillingState, t: Translator, uid: str, _: str) -> str:
        team = state.accounts.create_team(uid, request.form.get("name", ""))
        choose_account(state, uid, team.id)
        return t.gettext("Team %(name)s created.", name=team.name)

    return _team_form("create", action)


def invite() -> AnyResponse:
    def action(
        state: BillingState, t: Translator, uid: str, account_id: str
    ) -> str | tuple[str, str]:
        role = _role(request.form.get("role", ""), INVITABLE_ROLES)
        issued = state.accounts.invite(uid, account_id, request.form.get("email", ""), role)
        url = url_for(f"{request.blueprint}.invitation", token=issued.token, _external=True)
        inviter = describe_host_user(state.runtime, current_user._get_current_object())
        sent = state.accounts.send_invitation(issued, url, inviter.first_name or inviter.email)
        if sent:
            return t.gettext("Invitation sent to %(email)s.", email=issued.invitation.email)
        # Shown as an error, which stays until dismissed: the link is the only way in now.
        message = t.gettext(
            "The invitation email could not be sent. Pass this link to %(email)s: %(url)s",
            email=issued.invitation.email,
            url=url,
        )
        return message, views.FLASH_ERROR

    return _team_form("invite", action)


def revoke() -> AnyResponse:
    def action(state: BillingState, t: Translator, uid: str, account_id: str) -> str:
        try:
            state.accounts.revoke_invitation(uid, account_id, request.form.get("invitation_id", ""))
        except InvitationError:
            return t.gettext("The invitation was not pending any more.")
        return t.gettext("Invitation revoked.")

    return _team_form("invitations", action)


def change_role() -> AnyResponse:
    def action(state: BillingState, t: Translator, uid: str, account_id: str) -> str:
        role = _role(request.form.get("role", ""), tuple(Role))
        state.accounts.change_role(uid, account_id, request.form.get("user_id", ""), role)
        return t.gettext("Role changed.")

    return _team_form("members", action)


def remove_member() -> AnyResponse:
    def action(state: BillingState, t: Translator, uid: str, account_id: str) -> str:
        member = request.form.get("user_id", "")
        state.accounts.remove_member(uid, account_id, member)
        return t.gettext("%(member)s was removed from the team.", member=_name(state, member))

    return _team_form("members", action)


def set_cap() -> AnyResponse:
    def action(state: BillingState, t: Translator, uid: str, account_id: str) -> str:
        metric = request.form.get("metric", "")
        if metric not in state.runtime.catalog.periodic_metric_names:
            raise InvalidRequest("unknown metric", {"metric": [translatable("Choose a metric.")]})
        text = request.form.get("cap", "").strip()
        cap: int | None = None
        if text:
            if not text.isascii() or not text.isdigit() or len(text) > 12:
                raise InvalidRequest(
                    "not a whole number",
                    {"cap": [translatable("A cap is a whole number, 0 or more; empty for none.")]},
                )
            cap = int(text)
        member = request.form.get("user_id", "")
        state.accounts.set_cap(uid, account_id, member, metric, cap)
        if cap is None:
            return t.gettext("The cap of %(member)s was removed.", member=_name(state, member))
        return t.gettext("The cap of %(member)s is set.", member=_name(state, member))

    return _team_form("caps", action)


def transfer() -> AnyResponse:
    def action(state: BillingState, t: Translator, uid: str, account_id: str) -> str:
        member = request.form.get("user_id", "")
        state.accounts.transfer_ownership(uid, account_id, member)
        return t.gettext("%(member)s is now an owner of the team.", member=_name(state, member))

    return _team_form("transfer", action)


def leave() -> AnyResponse:
    def action(state: BillingState, t: Translator, uid: str, account_id: str) -> str:
        state.accounts.leave(uid, account_id)
        return t.gettext("You left the team.")

    return _team_form("leave", action)


def _name(state: BillingState, user_id: str) -> str:
    """The member as the team card names them."""
    host = state.profiles.host_user(user_id)
    return host.email or host.first_name or user_id


def _role(value: str, allowed: tuple[Role, ...]) -> Role:
    for role in allowed:
        if value == role.value:
            return role
    raise InvalidRequest("unknown role", {"role": [translatable("Choose a role.")]})


# -- the invitation ----------------------------------------------------------------------------


def invitation(token: str) -> AnyResponse:
    """GET: the team and an Accept button; POST: join the team and make it the current one."""
    state = get_state()
    t = views._translator()
    uid = views.user_id()
    email = describe_host_user(state.runtime, current_user._get_current_object()).email
    try:
        found, team_name = state.accounts.invitation_for(token)
    except InvitationError:
        return _invitation_page(
            state,
            t,
            None,
            None,
            t.gettext("This invitation is not valid any more: it was used, revoked or it expired."),
            404,
        )
    if email is None or email.strip().lower() != found.email.lower():
        return _invitation_page(
            state,
            t,
            found,
            team_name,
            t.gettext(
                "This invitation is for another email address than yours (%(email)s). "
                "Sign in with the invited address to accept it.",
                email=email or t.gettext("none"),
            ),
            403,
        )
    if request.method == "GET":
        return _invitation_page(state, t, found, team_name, None, 200)
    views.check_csrf()
    try:
        joined = state.accounts.accept(uid, email, token)
    except InvitationError:
        return _invitation_page(
            state,
            t,
            None,
            None,
            t.gettext("This invitation is not valid any more: it was used, revoked or it expired."),
            404,
        )
    except (SeatsExhausted, MembershipError) as error:
        return _invitation_page(
            state, t, found, team_name, refusal_text(t, error), status_of(error)
        )
    choose_account(state, uid, joined.id)
    return views.after(t.gettext("You joined %(team)s.", team=joined.name or joined.id))


def _invitation_page(
    state: BillingState,
    t: Translator,
    found: Invitation | None,
    team_name: str | None,
    error: str | None,
    status: int,
) -> AnyResponse:
    settings = state.runtime.settings
    name = request.blueprint
    context: dict[str, Any] = {
        "base_template": settings.refusal_page.base_template,
        "billing_locale": t.language,
        "_pb": t.gettext,
        "_pbn": t.ngettext,
        "t": t,
        "invitation": found,
        "team_name": team_name,
        "role_name": t.gettext(ROLE_NAMES[found.role]) if found is not None else None,
        "error": error,
        "csrf_token": generate_csrf() if settings.csrf_enabled else "",
        "csrf_field": current_app.config.get("WTF_CSRF_FIELD_NAME", "csrf_token"),
        "page_url": url_for(f"{name}.profile"),
        "static_endpoint": f"{name}.static",
        "asset_version": __version__,
    }
    response = current_app.make_response(
        (render_template("profile_billing/invitation.html", **context), status)
    )
    response.headers["Cache-Control"] = "no-store"
    return response
