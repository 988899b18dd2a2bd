"""Registering the profile page under its configured name and URL prefix."""

from __future__ import annotations

from flask import Blueprint, Flask
from flask_login import login_required

from ..responses import csp_nonce, register_face
from ..state import get_state
from . import views


def register_page(app: Flask) -> None:
    """Register the page's blueprint when ``BILLING_PROFILE_PAGE_ENABLED``, and ``csp_nonce()``
    for templates (a host's layout around the refusal page uses it too, page or no page)."""
    # Flask-Talisman's, when the host initialised it first, stays: both use request.csp_nonce.
    app.jinja_env.globals.setdefault("csp_nonce", csp_nonce)
    settings = get_state(app).runtime.settings.page.blueprint
    register_face(app, settings, build_blueprint, name_key="BILLING_PROFILE_PAGE_NAME", page=True)


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
    )
    for rule, view, methods in routes:
        # Flask-Login's own check: a redirect to the host's login view (with ``next``), or 401.
        blueprint.add_url_rule(rule, view_func=login_required(view), methods=methods)

    return blueprint
