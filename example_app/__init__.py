"""An example host app for flask-profile-billing: ``flask --app example_app:create_app run``.

Log in as ``alice@example.com`` / ``alice`` (Free plan) or ``bob@example.com`` / ``bob``
(Professional) and use up the quotas from the home page.

CSRF: Flask-WTF's ``CSRFProtect`` guards every POST of the app's own views. The extension's
endpoints are exempt from it and check the same token themselves, after deciding who the user is
(so a client without a session learns it must log in: 401), and the signed payment webhook needs
none: a provider has no session, and the signature over the body is what authenticates it.
Forms carry the token in a hidden ``csrf_token`` field. JSON clients, which authenticate
with the session cookie, send the same token in the ``X-CSRFToken`` header; the pages publish it
in ``<meta name="csrf-token">`` (a script reads it from there). A client without the token gets
400 (as JSON when it asked for JSON). Exempting "JSON requests" instead would also be defensible,
since a cross-site form cannot send ``application/json`` without a CORS preflight, but it relies on
the browser's CORS rules and on every view really refusing form bodies; the header costs a client
one line.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import flask_migrate
from flask import Flask, request
from sqlalchemy import inspect

from flask_profile_billing import answer_database_faults

from . import auth, demo, views
from .boot import boot_lock
from .config import default_config
from .extensions import CSRFError, billing, csrf, db, login_manager, migrate
from .pages import protect_pages, serve_the_icon
from .responses import csrf_error


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    app = Flask(__name__, instance_relative_config=True)
    defaults = default_config(app.instance_path)
    app.config.from_mapping(defaults)
    if config:
        app.config.from_mapping(config)
    if app.config["SQLALCHEMY_DATABASE_URI"] == defaults["SQLALCHEMY_DATABASE_URI"]:
        Path(app.instance_path).mkdir(parents=True, exist_ok=True)  # for the default SQLite file

    db.init_app(app)
    migrate.init_app(app, db)
    login_manager.init_app(app)
    csrf.init_app(app)
    billing.init_app(app)  # after db.init_app: it uses the app's Flask-SQLAlchemy object
    speak_the_browsers_language(app)

    app.register_blueprint(auth.bp)
    app.register_blueprint(views.bp)
    app.register_error_handler(CSRFError, csrf_error)
    protect_pages(app)
    serve_the_icon(app)
    # The app's own views (and the user loader) read the database too: down or locked, they
    # answer 503 with Retry-After like the extension's, in the client's format, not a bare 500.
    answer_database_faults(app)

    # Under gunicorn every worker runs this at the same moment: they take turns (boot.py).
    with app.app_context(), boot_lock(db.engine):
        adopt_tables_created_without_migrations()
        # `flask db upgrade`: the app's own revisions (migrations/), then, from the last line of
        # migrations/env.py, the extension's billing_* tables by their own migrations.
        flask_migrate.upgrade()
        if app.config["EXAMPLE_DEMO_USERS"]:
            demo.ensure_demo_users()
    return app


def speak_the_browsers_language(app: Flask) -> None:
    """English or Russian by the browser's Accept-Language, for the extension's profile page, when
    Flask-Babel is installed (the babel extra); English without it."""
    try:
        from flask_babel import Babel  # type: ignore[import-untyped]
    except ImportError:
        return
    Babel(app, locale_selector=lambda: request.accept_languages.best_match(["en", "ru"]) or "en")


def adopt_tables_created_without_migrations() -> None:
    """A database that earlier versions of this example filled with ``db.create_all()`` has the
    first revision's tables but no version: it is marked as at that revision, not created again."""
    tables = set(inspect(db.engine).get_table_names())
    if "users" in tables and "alembic_version" not in tables:
        flask_migrate.stamp(revision="0001")
