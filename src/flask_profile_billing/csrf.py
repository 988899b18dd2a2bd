"""The CSRF check of every write a browser can make with its session cookie: the API's and the
profile page's.

One check for both faces: Flask-WTF's signed token, then, over HTTPS, the same strict Referer rule
Flask-WTF's ``CSRFProtect`` makes (the extension's blueprints decide for themselves, so the rule
must not depend on whether the host initialised ``CSRFProtect``).
"""

from __future__ import annotations

from flask import current_app, request
from flask_wtf.csrf import same_origin, validate_csrf
from wtforms.validators import ValidationError as CSRFValidationError

from .errors import ApiError
from .state import get_state

CSRF_HEADERS = ("X-CSRFToken", "X-CSRF-Token")


def token_from_headers() -> str | None:
    """The token a script sends in a header (the API)."""
    return next((request.headers[h] for h in CSRF_HEADERS if h in request.headers), None)


def token_from_form() -> str | None:
    """The token a form posts in its hidden field (the page)."""
    return request.form.get(current_app.config.get("WTF_CSRF_FIELD_NAME", "csrf_token"))


def check_csrf(token: str | None, *, refusal: str) -> None:
    """Refuse (400 ``CSRF_FAILED``, ``refusal`` as the message) a write whose token is missing or
    invalid, or that comes over HTTPS without a Referer of this site; nothing when
    ``BILLING_CSRF_ENABLED`` is off."""
    if not get_state().runtime.settings.csrf_enabled:
        return
    try:
        validate_csrf(token)
    except CSRFValidationError as error:
        raise ApiError("CSRF_FAILED", refusal) from error
    if request.is_secure and current_app.config.get("WTF_CSRF_SSL_STRICT", True):
        referrer = request.referrer
        if not referrer or not same_origin(referrer, f"https://{request.host}/"):
            raise ApiError(
                "CSRF_FAILED", "A write over HTTPS must come from a page of this site (Referer)"
            )
