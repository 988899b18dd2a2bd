"""The extension objects, created once at import and bound to each app by ``create_app``."""

from __future__ import annotations

from pathlib import Path

from flask_login import LoginManager
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from flask_wtf.csrf import CSRFError, CSRFProtect
from sqlalchemy.orm import DeclarativeBase

from flask_profile_billing import ProfileBilling, exclude_billing_tables

# The app's own Flask-Migrate folder, at the top of the repository (wherever the app is started
# from). Its env.py also brings the extension's tables up to date: see migrations/env.py.
MIGRATIONS_DIRECTORY = Path(__file__).resolve().parent.parent / "migrations"


class Base(DeclarativeBase):
    """The host app's own models; the extension keeps its billing_* tables apart."""


db = SQLAlchemy(model_class=Base)
login_manager = LoginManager()
login_manager.login_view = "auth.login"
login_manager.login_message_category = "info"
csrf = CSRFProtect()
# exclude_billing_tables: the app's `flask db migrate` leaves the extension's tables to the extension.
migrate = Migrate(directory=str(MIGRATIONS_DIRECTORY), include_object=exclude_billing_tables)
billing = ProfileBilling()

__all__ = ["Base", "CSRFError", "billing", "csrf", "db", "login_manager", "migrate"]
