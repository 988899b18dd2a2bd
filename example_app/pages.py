"""What every page of the app has, its own and the extension's: the security headers and an icon."""

from __future__ import annotations

from flask import Flask, Response, send_from_directory

from flask_profile_billing import with_security_headers

ICON = "favicon.svg"


def protect_pages(app: Flask) -> None:
    """The extension's security headers on the app's own answers too: without them the home page's
    one-click forms (Analyze, Export, Log out) could be framed by another site and clicked through
    (clickjacking). A header a view already set is kept."""
    app.after_request(with_security_headers)


def serve_the_icon(app: Flask) -> None:
    """The app's icon, named by its own pages' ``<link rel="icon">``, and at ``/favicon.ico`` for
    the pages that do not name one (the extension's profile page, a JSON answer opened in a tab):
    a browser asks for it on every page, and a 404 there is an error in every console."""

    @app.get("/favicon.ico")
    def favicon() -> Response:
        assert app.static_folder is not None  # Flask's default, static/
        return send_from_directory(app.static_folder, ICON, mimetype="image/svg+xml")
