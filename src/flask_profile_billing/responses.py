"""Rendering the extension's answers: the error shape, JSON or HTML, and the quota headers."""

from __future__ import annotations

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


def error_response(error: BillingHTTPError) -> Response:
    if wants_html():
        response = current_app.make_response(_error_page(error))
        response.content_type = "text/html; charset=utf-8"
    else:
        response = jsonify(error_body(error))
    response.status_code = error.code or 500
    response.headers.update(error.headers())
    return response


def _error_page(error: BillingHTTPError) -> str:
    try:
        return render_template("profile_billing/error.html", error=error, body=error_body(error))
    except TemplateNotFound:  # the host disabled the extension's templates
        return f"<!doctype html><title>{escape(error.name)}</title><p>{escape(error.message)}</p>"
