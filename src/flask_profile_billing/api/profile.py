"""The profile API (``/api/profile/...``): the profile, its activity feed, the page's events."""

from __future__ import annotations

from flask import Blueprint, Response
from flask_wtf.csrf import generate_csrf

from . import activity_views, profile_views
from .common import authenticated, json_answers, load_query, ok
from .schemas import NoQuerySchema


def build_blueprint(name: str) -> Blueprint:
    blueprint = Blueprint(name, __name__)
    profile_views.register(blueprint)
    activity_views.register(blueprint)
    blueprint.add_url_rule("/csrf-token", view_func=csrf_token, methods=["GET"])
    return json_answers(blueprint)


@authenticated
def csrf_token() -> Response:
    """The token that cookie-authenticated writes send in the X-CSRFToken header."""
    load_query(NoQuerySchema())
    return ok({"csrf_token": generate_csrf()})
