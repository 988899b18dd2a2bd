"""One answer, two audiences: JSON for API clients, a redirect with a flashed message for browsers.

The rule is the extension's own (its refusals are JSON unless the client prefers HTML), so a
client gets the same format whether its request succeeded or was refused: JSON for a JSON body or
an ``Accept`` header that does not rank ``text/html`` above ``application/json``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import flash, jsonify, redirect, request, url_for
from flask.typing import ResponseReturnValue

from .extensions import CSRFError


def wants_json() -> bool:
    if request.is_json:
        return True
    accept = request.accept_mimetypes
    return not accept["text/html"] > accept["application/json"]


def request_data() -> Mapping[str, Any]:
    """The request's fields, from a JSON object body or a form."""
    if request.is_json:
        body = request.get_json(silent=True)
        return body if isinstance(body, dict) else {}
    return request.form


def succeeded(message: str, data: Mapping[str, Any]) -> ResponseReturnValue:
    if wants_json():
        return jsonify(success=True, data=dict(data))
    flash(message, "success")
    return redirect(url_for("views.index"), code=303)


def failed(status: int, error: str, message: str) -> ResponseReturnValue:
    """An error in the extension's shape for API clients, a flashed message for browsers.

    Browsers are sent back with 303, which a quota guard counts as success: use this only in views
    whose failures cost nothing (or make them JSON-only).
    """
    if wants_json():
        return jsonify(success=False, error=error, message=message, details={}), status
    flash(message, "error")
    return redirect(url_for("views.index"), code=303)


def csrf_error(error: CSRFError) -> ResponseReturnValue:
    """A missing or wrong CSRF token: 400, as JSON for API clients, Flask-WTF's page otherwise."""
    if wants_json():
        body = {"success": False, "error": "CSRF_FAILED", "message": error.description}
        return jsonify(body | {"details": {}}), 400
    page: ResponseReturnValue = error.get_response()
    return page
