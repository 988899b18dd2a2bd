"""Serving the OpenAPI document at ``<billing prefix>/openapi.json``."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify

from .common import load_query
from .openapi import build_document
from .schemas import NoQuerySchema

_DOCUMENT_KEY = "profile_billing_openapi"


def register(blueprint: Blueprint) -> None:
    blueprint.add_url_rule("/openapi.json", view_func=openapi_document, methods=["GET"])


def openapi_document() -> Response:
    load_query(NoQuerySchema())
    cache = current_app.extensions
    if _DOCUMENT_KEY not in cache:  # configuration is fixed once the app serves requests
        cache[_DOCUMENT_KEY] = build_document(current_app)
    return jsonify(cache[_DOCUMENT_KEY])
