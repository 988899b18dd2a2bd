"""The host's users, looked up by id: the extension never owns or changes the host's user table."""

from __future__ import annotations

from typing import Any

from ..errors import BillingConfigError, UnknownUserError
from .runtime import Runtime


def load_host_user(runtime: Runtime, user_id: str) -> Any:
    """The host's user object for ``user_id``: ``BILLING_USER_LOADER``, else the ``user_loader``
    registered with Flask-Login. ``UnknownUserError`` when the host does not know the id."""
    loader = runtime.settings.user_loader
    if loader is None:
        login_manager = getattr(runtime.app, "login_manager", None)
        loader = getattr(login_manager, "user_callback", None)
    if loader is None:
        raise BillingConfigError(
            "cannot look users up: set BILLING_USER_LOADER or register a Flask-Login user_loader"
        )
    user = loader(str(user_id))
    if user is None:
        raise UnknownUserError(f"no user with id {user_id!r}")
    return user
