"""Views of the profile part of the API: ``GET`` and ``PATCH /api/profile/me``.

There is no user id in these URLs: a user reads and edits only their own profile, the one of the
logged-in user.
"""

from __future__ import annotations

from flask import Blueprint, Response

from .. import signals
from ..account_context import request_account_id
from ..state import get_state
from .common import authenticated, current_user_id, load_json, load_query, ok
from .profile_schemas import ProfileUpdateSchema, profile_dict
from .schemas import NoQuerySchema


def register(blueprint: Blueprint) -> None:
    """Add this module's routes to ``blueprint``."""
    blueprint.add_url_rule("/me", view_func=me, methods=["GET"])
    blueprint.add_url_rule("/me", view_func=update_me, methods=["PATCH"])


@authenticated
def me() -> Response:
    load_query(NoQuerySchema())
    state = get_state()
    user_id = current_user_id()
    snapshot = state.profiles.read(user_id, request_account_id(state, user_id))
    signals.profile_viewed.send(state.runtime.app, user_id=user_id, source="api")
    return ok(profile_dict(snapshot, state.runtime.catalog))


@authenticated
def update_me() -> Response:
    changes = load_json(ProfileUpdateSchema())
    state = get_state()
    user_id = current_user_id()
    state.profiles.update(user_id, changes)
    snapshot = state.profiles.read(user_id, request_account_id(state, user_id))
    return ok(profile_dict(snapshot, state.runtime.catalog))
