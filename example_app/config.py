"""Configuration defaults, read from the environment; ``create_app(config)`` overrides them.

Environment variables (so that ``gunicorn 'example_app:create_app()'`` needs no code):

- ``DATABASE_URL``: the SQLAlchemy URL of the database, for example
  ``postgresql+psycopg://user@127.0.0.1:5432/billing``; default a SQLite file in the instance
  folder. Every worker of a server may start on it at once (see boot.py).
- ``SECRET_KEY``: signs the session cookies; required anywhere but your own machine.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

# Only for running the example on your machine: set SECRET_KEY in the environment anywhere else,
# since whoever knows it can forge session cookies (and so log in as anyone).
DEV_SECRET_KEY = "dev-only-insecure-secret-key"


def default_config(instance_path: str) -> dict[str, Any]:
    database_file = Path(instance_path) / "example.sqlite3"
    return {
        "SECRET_KEY": os.environ.get("SECRET_KEY", DEV_SECRET_KEY),
        "SQLALCHEMY_DATABASE_URI": os.environ.get("DATABASE_URL", f"sqlite:///{database_file}"),
        "SESSION_COOKIE_SAMESITE": "Lax",
        # Create alice (Free) and bob (Professional) on start.
        "EXAMPLE_DEMO_USERS": True,
        # The profile page (/profile) offers more quota: packages "coming soon" and this address
        # for a manual extension, until a payment provider is configured.
        "ENABLE_PROFILE_PAYMENTS_UI": True,
        "PROFILE_PAYMENTS_CTA_EMAIL": os.environ.get(
            "PROFILE_PAYMENTS_CTA_EMAIL", "payments@example.com"
        ),
    }
