"""The extension objects, created once at import and bound to each app by ``create_app``."""

from __future__ import annotations

from flask_login import LoginManager
from flask_sqlalchemy import SQLAlchemy
from flask_wtf.csrf import CSRFError, CSRFProtect
from sqlalchemy.orm import DeclarativeBase

from flask_profile_billing import ProfileBilling


class Base(DeclarativeBase):
    """The host app's own models; the extension keeps its billing_* tables apart."""


db = SQLAlchemy(model_class=Base)
login_manager = LoginManager()
login_manager.login_view = "auth.login"
login_manager.login_message_category = "info"
csrf = CSRFProtect()
billing = ProfileBilling()

__all__ = ["Base", "CSRFError", "billing", "csrf", "db", "login_manager"]
