"""Rendering the extension's answers: the error shape, JSON or HTML, the quota headers, and the
security headers of everything the extension answers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from flask import current_app, has_request_context, jsonify, render_template, request
from jinja2 import TemplateNotFound
from markupsafe import escape
from werkzeug.wrappers import Response

from .domain.limits import Allowance

if TYPE_CHECKING:
    from .errors import BillingHTTPError

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


def error_body(error: BillingHTTPError) -> dict[str, Any]:
    return {
        "success": False,
        "error": error.error_code,
        "message": error.message,
        "details": error.details(),
    }


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


def error_response(error: BillingHTTPError) -> Response:
    if wants_html():
        response = current_app.make_response(_error_page(error))
        response.content_type = "text/html; charset=utf-8"
    else:
        response = jsonify(error_body(error))
    response.status_code = error.code or 500
    response.headers.update(error.headers())
    return with_security_headers(response)


def _error_page(error: BillingHTTPError) -> str:
    try:
        return render_template("profile_billing/error.html", error=error, body=error_body(error))
    except TemplateNotFound:  # the host disabled the extension's templates
        return f"<!doctype html><title>{escape(error.name)}</title><p>{escape(error.message)}</p>"
