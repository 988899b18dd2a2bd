"""What every API view shares: the envelope, the error shape, login, CSRF and input validation."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from functools import wraps
from typing import Any, TypeVar, cast

from flask import Blueprint, Flask, Response, jsonify, request, session
from flask_login import current_user
from marshmallow import Schema, ValidationError

from ..csrf import check_csrf, token_from_headers
from ..errors import ApiError

View = TypeVar("View", bound=Callable[..., Any])
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def ok(data: Any, status: int = 200) -> Response:
    """The success envelope: ``{"success": true, "data": ...}``."""
    response = jsonify({"success": True, "data": data})
    response.status_code = status
    return response


def exempt_from_host_csrf_protect(app: Flask, blueprints: Collection[Blueprint]) -> None:
    """Leave the CSRF defence of ``blueprints`` to their views, also under the host's Flask-WTF
    ``CSRFProtect``.

    ``CSRFProtect`` checks every write in a ``before_request``, before any view: an anonymous write
    would get 400 ``CSRF_FAILED`` where it must get 401 ``UNAUTHORIZED``, a client whose token a
    ``request_loader`` reads would need a CSRF token it has no use for, and a provider's signed
    webhook would be refused for want of a token it cannot have. The views decide instead, in
    order: login (``authenticated``), then the CSRF token for writes authenticated by the session
    cookie; the webhook by its signature.

    ``CSRFProtect`` initialised before ``init_app`` exists now. Initialised after, its check is a
    ``before_request`` added after the one added here, which therefore exempts in time. ``exempt``
    is a set insertion, idempotent, so repeating it on every request costs next to nothing.
    """
    exempt_blueprints = tuple(blueprints)
    if not exempt_blueprints:
        return

    def exempt() -> None:
        csrf = app.extensions.get("csrf")
        if csrf is not None:
            for blueprint in exempt_blueprints:
                csrf.exempt(blueprint)

    exempt()
    app.before_request(exempt)


def current_user_id() -> str:
    """The logged-in user's id, or 401 in the error shape (never a redirect for an API client)."""
    if not getattr(current_user, "is_authenticated", False):
        raise ApiError("UNAUTHORIZED", "Log in to use this endpoint")
    return str(current_user.get_id())


def authenticated(view: View) -> View:
    """Login required (401 first, so an anonymous write is never told about CSRF); writes
    authenticated by the session cookie also need the CSRF token."""

    @wraps(view)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        user_id = current_user_id()
        if request.method not in SAFE_METHODS and _cookie_authenticated(user_id):
            _check_csrf()
        return view(*args, **kwargs)

    return cast(View, guarded)


def load_json(schema: Schema) -> dict[str, Any]:
    """The request's JSON object validated by ``schema``; 415 for a body sent as another media
    type, 400 for a body that is not a JSON object, 422 with every field's errors for invalid or
    unknown fields. An empty body is ``{}``, whatever its ``Content-Type``."""
    if not request.is_json and _has_body():
        # Refused rather than read as {}: a form would otherwise be answered 200 with nothing
        # changed, and the client would believe its edit was saved.
        raise ApiError(
            "UNSUPPORTED_MEDIA_TYPE",
            "The request body must be JSON: send it with Content-Type: application/json",
        )
    if not request.get_data(cache=True):
        body: Any = {}
    else:
        try:
            body = request.get_json(silent=True)
        except RecursionError:
            # json.loads recurses once per nesting level; Flask's silent mode catches only ValueError.
            body = None
    if not isinstance(body, dict):
        raise ApiError("INVALID_JSON", "The request body must be a JSON object")
    return _load(schema, body)


def load_query(schema: Schema) -> dict[str, Any]:
    """The query string validated by ``schema`` (422 with field errors)."""
    return _load(schema, request.args.to_dict(flat=True))


def _has_body() -> bool:
    # A form that something read before the view (Flask-WTF's CSRFProtect looks for its token
    # there) is no longer in get_data(): it is in form and files.
    return bool(
        request.content_length or request.get_data(cache=True) or request.form or request.files
    )


def _load(schema: Schema, data: Mapping[str, Any]) -> dict[str, Any]:
    try:
        loaded: dict[str, Any] = schema.load(data)
    except ValidationError as error:
        messages = error.messages if isinstance(error.messages, dict) else {"_": error.messages}
        raise ApiError(
            "VALIDATION_ERROR", "Some fields are invalid", {"fields": messages}
        ) from None
    return loaded


def _cookie_authenticated(user_id: str) -> bool:
    # Flask-Login keeps the id of a user who logged in with a form in the session; users loaded
    # from a header or token by a request_loader are not, and a browser cannot forge those.
    return session.get("_user_id") is not None and str(session.get("_user_id")) == user_id


def cookie_authenticated() -> bool:
    """Whether the logged-in user was authenticated by the session cookie (a browser), not by a
    header or token (401 when nobody is logged in)."""
    return _cookie_authenticated(current_user_id())


def _check_csrf() -> None:
    check_csrf(
        token_from_headers(),
        refusal="Missing or invalid CSRF token: send it in the X-CSRFToken header",
    )
