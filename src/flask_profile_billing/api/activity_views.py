"""The profile API's activity feed and the client's analytics events.

``GET /api/profile/activity?limit=10`` answers ``{"success": true, "data": {"events": [...]}}``,
each event ``{"id", "type", "title", "occurred_at", "metadata"}``, newest first.

``POST /api/profile/events`` takes ``{"event": "profile:view" | "profile:update" |
"profile:cta_buy_quota", "properties": {...}}`` and sends the matching signal; nothing is stored.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from blinker import NamedSignal
from flask import Blueprint, Flask, Response
from marshmallow import ValidationError, fields, validate, validates

from .. import signals
from ..services.activity import MAX_FEED_LIMIT, ActivityService
from ..state import get_state
from .common import authenticated, current_user_id, load_json, load_query, ok
from .schemas import StrictSchema

MAX_PROPERTIES = 20
MAX_PROPERTIES_BYTES = 2048
# The page's event names and how each reaches the host: the signal and its arguments.
EVENTS: dict[str, tuple[NamedSignal, Callable[[dict[str, Any]], dict[str, Any]]]] = {
    "profile:view": (signals.profile_viewed, lambda properties: {}),
    "profile:update": (signals.profile_updated, lambda properties: {"fields": []}),
    "profile:cta_buy_quota": (
        signals.buy_cta_clicked,
        lambda properties: {"properties": properties},
    ),
}


def register(blueprint: Blueprint) -> None:
    """Add this module's routes to ``blueprint``."""
    blueprint.add_url_rule("/activity", view_func=activity_feed, methods=["GET"])
    blueprint.add_url_rule("/events", view_func=track_event, methods=["POST"])


class ActivityQuerySchema(StrictSchema):
    limit = fields.Integer(
        load_default=10,
        validate=validate.Range(
            min=1, max=MAX_FEED_LIMIT, error=f"must be between 1 and {MAX_FEED_LIMIT}"
        ),
    )


class TrackEventSchema(StrictSchema):
    event = fields.String(
        required=True, validate=validate.OneOf(list(EVENTS), error="must be one of: {choices}")
    )
    properties = fields.Dict(keys=fields.String(), load_default=dict)

    @validates("properties")
    def small(self, value: dict[str, Any], **_: Any) -> None:
        # Analytics properties are forwarded to the host's receivers as they are: bounded, so a
        # client cannot push arbitrary payloads through them.
        if len(value) > MAX_PROPERTIES:
            raise ValidationError(f"at most {MAX_PROPERTIES} properties")
        if len(json.dumps(value)) > MAX_PROPERTIES_BYTES:
            raise ValidationError(f"at most {MAX_PROPERTIES_BYTES} bytes of JSON")


@authenticated
def activity_feed() -> Response:
    query = load_query(ActivityQuerySchema())
    feed = activity_service().feed(current_user_id(), query["limit"])
    return ok({"events": [event.to_dict() for event in feed.events]})


@authenticated
def track_event() -> Response:
    body = load_json(TrackEventSchema())
    name = body["event"]
    signal, arguments = EVENTS[name]
    app = get_state().runtime.app
    signal.send(app, user_id=current_user_id(), source="client", **arguments(body["properties"]))
    return ok({"accepted": name}, 202)


def activity_service(app: Flask | None = None) -> ActivityService:
    """The activity service of ``app`` (the current app by default)."""
    return get_state(app).activity
