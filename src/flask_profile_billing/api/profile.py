"""The profile API (``/api/profile/...``): the profile, its activity feed, the page's events."""

from __future__ import annotations

from typing import cast

from flask import Blueprint, Flask, Response
from flask.blueprints import BlueprintSetupState
from flask_wtf.csrf import generate_csrf

from ..state import get_state
from . import activity_views, profile_views
from .common import authenticated, cookie_authenticated, load_query, ok
from .schemas import NoQuerySchema


def build_blueprint(name: str) -> Blueprint:
    blueprint = Blueprint(name, __name__)
    profile_views.register(blueprint)
    activity_views.register(blueprint)
    blueprint.record(_add_csrf_token)
    return blueprint


def _add_csrf_token(setup: BlueprintSetupState) -> None:
    # Without the CSRF check (BILLING_CSRF_ENABLED = False, an API-only host) there is no token
    # to hand out, and no endpoint for it.
    app = cast(Flask, setup.app)  # the extension registers its blueprints on Flask apps only
    if get_state(app).runtime.settings.csrf_enabled:
        setup.add_url_rule("/csrf-token", view_func=csrf_token, methods=["GET"])


@authenticated
def csrf_token() -> Response:
    """The token that cookie-authenticated writes send in the X-CSRFToken header; None for a
    client authenticated otherwise (a bearer token), whose writes need none. Generating a token
    stores it in the session, which would hand such a client a session cookie it never asked for."""
    load_query(NoQuerySchema())
    if not cookie_authenticated():
        return ok({"csrf_token": None})
    return ok({"csrf_token": generate_csrf()})
