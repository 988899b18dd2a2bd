"""Rendering the extension's answers: the error shape, JSON or HTML, the quota headers, and the
security headers of everything the extension answers."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from flask import current_app, has_request_context, jsonify, render_template, request
from jinja2 import TemplateNotFound
from markupsafe import escape
from werkzeug.exceptions import HTTPException
from werkzeug.http import HTTP_STATUS_CODES
from werkzeug.wrappers import Response

from .domain.errors import BillingError
from .domain.limits import Allowance
from .errors import QuotaExceeded

log = logging.getLogger(__name__)

# The one place where an error code becomes an HTTP status. docs/api.md lists the same table, and a
# test checks that every code the package raises is here.
STATUS_BY_ERROR_CODE: Mapping[str, int] = {
    "INVALID_JSON": 400,
    "INVALID_REQUEST": 400,
    "CSRF_FAILED": 400,
    "UNAUTHORIZED": 401,
    "INVALID_SIGNATURE": 401,
    "PAYMENT_REQUIRED": 402,
    "FEATURE_NOT_AVAILABLE": 403,
    "NOT_FOUND": 404,
    "UNKNOWN_PROVIDER": 404,
    "UNKNOWN_PLAN": 404,
    "UNKNOWN_USER": 404,
    "NOT_CANCELLABLE": 409,
    "NOT_RESUMABLE": 409,
    "SUBSCRIPTION_CONFLICT": 409,
    "IDEMPOTENCY_KEY_IN_USE": 409,
    "IDEMPOTENT_RESPONSE_NOT_STORED": 409,
    "UNSUPPORTED_MEDIA_TYPE": 415,
    "VALIDATION_ERROR": 422,
    "INVALID_EVENT": 422,
    "IDEMPOTENCY_KEY_REUSED": 422,
    "LIMIT_EXCEEDED": 429,
    "TOO_MANY_PENDING_PAYMENTS": 429,
    "PAYMENT_PROVIDER_ERROR": 502,
    "SERVICE_UNAVAILABLE": 503,
    "WEBHOOKS_DISABLED": 503,
}
"""Codes not listed (configuration errors, an unknown metric: bugs of the host) answer 500."""

QUOTA_LIMIT_HEADER = "X-Quota-Limit"
QUOTA_REMAINING_HEADER = "X-Quota-Remaining"
QUOTA_RESET_HEADER = "X-Quota-Reset"

# Every answer: a browser must never guess another type than the one declared (a JSON body that
# echoes user input, sniffed as HTML, would run as a page of the host's origin).
ANSWER_SECURITY_HEADERS: Mapping[str, str] = {"X-Content-Type-Options": "nosniff"}
# Pages also get a policy their markup needs nothing beyond: no inline script or style, no framing
# (clickjacking), no <base> or form target elsewhere, and no full URL leaked to other sites.
PAGE_SECURITY_HEADERS: Mapping[str, str] = {
    **ANSWER_SECURITY_HEADERS,
    "Content-Security-Policy": (
        "default-src 'self'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'"
    ),
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",  # frame-ancestors' twin, for browsers without CSP level 2
}


def quota_headers(allowance: Allowance) -> dict[str, str]:
    """Limit, remaining and reset (Unix time) of a limited metric, like Flask-Limiter's X-RateLimit-*."""
    if allowance.limit is None:
        return {}
    headers = {
        QUOTA_LIMIT_HEADER: str(allowance.limit),
        QUOTA_REMAINING_HEADER: str(allowance.remaining),
    }
    if allowance.resets_at is not None:
        headers[QUOTA_RESET_HEADER] = str(int(allowance.resets_at.timestamp()))
    return headers


def status_of(error: BillingError) -> int:
    """The HTTP status of an error code, from ``STATUS_BY_ERROR_CODE``."""
    status = STATUS_BY_ERROR_CODE.get(error.error_code)
    if status is None:
        log.error("no HTTP status for error code %s; answering 500", error.error_code)
        return 500
    return status


def error_body(error: BillingError) -> dict[str, Any]:
    return {
        "success": False,
        "error": error.error_code,
        "message": error.message,
        "details": error.details(),
    }


def from_http_exception(error: HTTPException) -> BillingError:
    """A werkzeug HTTP error raised inside the extension's blueprints (a 404, a 405...) in the
    error shape: its name as the code (``METHOD_NOT_ALLOWED``)."""
    name = (error.name or "error").upper().replace(" ", "_").replace("'", "")
    return BillingError(error.description or error.name, error_code=name)


def wants_html() -> bool:
    """A browser asking for a page gets a page; API clients and ``*/*`` get JSON."""
    if not has_request_context():
        return False
    accept = request.accept_mimetypes
    return accept["text/html"] > accept["application/json"]


def with_security_headers(response: Response) -> Response:
    """Add the security headers of the response's kind (a page, or any other answer), keeping
    every one the host already set: a host with its own policy knows its pages better."""
    wanted = PAGE_SECURITY_HEADERS if response.mimetype == "text/html" else ANSWER_SECURITY_HEADERS
    for name, value in wanted.items():
        if name not in response.headers:
            response.headers[name] = value
    return response


def error_response(
    error: BillingError, status: int | None = None, *, page: bool = True
) -> Response:
    """The one renderer of errors: the error shape as JSON, or (``page``, for a client that
    prefers ``text/html``) the HTML error page, with the error's own headers and the security
    headers. ``status`` defaults to the code's, from ``STATUS_BY_ERROR_CODE``."""
    status = status_of(error) if status is None else status
    if page and wants_html():
        response = current_app.make_response(_error_page(error, status))
        response.content_type = "text/html; charset=utf-8"
    else:
        response = jsonify(error_body(error))
    response.status_code = status
    if isinstance(error, QuotaExceeded):  # a refusal tells how much is left, like any charge
        response.headers.update(quota_headers(error.allowance))
    response.headers.update(error.headers())
    return with_security_headers(response)


def _error_page(error: BillingError, status: int) -> str:
    status_name = HTTP_STATUS_CODES.get(status, "Error")
    try:
        return render_template(
            "profile_billing/error.html",
            error=error,
            body=error_body(error),
            status=status,
            status_name=status_name,
        )
    except TemplateNotFound:  # the host disabled the extension's templates
        return f"<!doctype html><title>{escape(status_name)}</title><p>{escape(error.message)}</p>"
