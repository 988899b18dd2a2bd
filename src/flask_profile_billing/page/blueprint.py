"""Registering the profile page under its configured name and URL prefix."""

from __future__ import annotations

from flask import Blueprint, Flask
from flask_login import login_required

from ..responses import csp_nonce, register_face
from ..state import get_state
from . import teams, views


def register_page(app: Flask) -> None:
    """Register the page's blueprint when ``BILLING_PROFILE_PAGE_ENABLED``, and ``csp_nonce()``
    for templates (a host's layout around the refusal page uses it too, page or no page)."""
    # Flask-Talisman's, when the host initialised it first, stays: both use request.csp_nonce.
    app.jinja_env.globals.setdefault("csp_nonce", csp_nonce)
    settings = get_state(app).runtime.settings.page.blueprint
    register_face(app, settings, build_blueprint, name_key="BILLING_PROFILE_PAGE_NAME", page=True)


# The team forms' endpoints, named for what they do (the templates' ``endpoints`` name them).
_ENDPOINTS = {
    "/account": "choose_account",
    "/team/revoke": "revoke_invitation",
    "/team/transfer": "transfer_ownership",
    "/team/leave": "leave_team",
}


def build_blueprint(name: str) -> Blueprint:
    # The stylesheet and the script are served under the page's own prefix
    # (/profile/static/...), apart from the host's /static.
    blueprint = Blueprint(name, __name__, static_folder="static")
    routes = (
        ("/", views.profile, ["GET"]),
        ("/edit", views.edit, ["POST"]),
        ("/cancel", views.cancel, ["POST"]),
        ("/resume", views.resume, ["POST"]),
        ("/plan", views.change_plan, ["POST"]),
        ("/usage.csv", views.usage_csv, ["GET"]),
        ("/choices.json", views.choices, ["GET"]),
        ("/account", teams.choose, ["POST"]),
        ("/teams", teams.create_team, ["POST"]),
        ("/team/invite", teams.invite, ["POST"]),
        ("/team/revoke", teams.revoke, ["POST"]),
        ("/team/role", teams.change_role, ["POST"]),
        ("/team/remove", teams.remove_member, ["POST"]),
        ("/team/cap", teams.set_cap, ["POST"]),
        ("/team/transfer", teams.transfer, ["POST"]),
        ("/team/leave", teams.leave, ["POST"]),
        ("/invitations/<token>", teams.invitation, ["GET", "POST"]),
    )
    for rule, view, methods in routes:
        # Flask-Login's own check: a redirect to the host's login view (with ``next``), or 401.
        blueprint.add_url_rule(
            rule,
            endpoint=_ENDPOINTS.get(rule),
            view_func=login_required(view),
            methods=methods,
        )

    return blueprint
