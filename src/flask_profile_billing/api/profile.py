"""The profile API of the profile seed (``/api/profile/...``)."""

from __future__ import annotations

from flask import Blueprint

from . import activity_views, profile_views
from .common import json_errors


def build_blueprint(name: str) -> Blueprint:
    blueprint = Blueprint(name, __name__)
    profile_views.register(blueprint)
    activity_views.register(blueprint)
    return json_errors(blueprint)
