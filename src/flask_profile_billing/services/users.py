"""The host's users, looked up by id (or by an email, through the host's BILLING_USER_LOOKUP): the
extension never owns or changes the host's user table."""

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
    try:
        user = loader(str(user_id))
    except (ValueError, TypeError):
        # Many loaders convert first (`db.session.get(User, int(user_id))`): to them an email
        # is not an id at all, which is an unknown user, not a crash of the command.
        user = None
    if user is None:
        raise UnknownUserError(f"no user with id {user_id!r}")
    return user


def find_host_user_id(runtime: Runtime, reference: str) -> str:
    """The id of the user ``reference`` names: itself when it is a user id the host knows, else
    the id of the user ``BILLING_USER_LOOKUP`` finds for it (an email, a login: the host decides).
    ``UnknownUserError`` when neither knows it."""
    try:
        load_host_user(runtime, reference)
    except UnknownUserError:
        lookup = runtime.settings.user_lookup
        if lookup is None:
            raise
    else:
        return reference
    user = lookup(reference)
    if user is None:
        raise UnknownUserError(f"no user with id or identifier {reference!r}")
    return _id_of(user)


def _id_of(user: Any) -> str:
    # Flask-Login's get_id() first: it is how the host's loader is called back with this user.
    get_id = getattr(user, "get_id", None)
    user_id = get_id() if callable(get_id) else getattr(user, "id", None)
    if user_id is None:
        raise BillingConfigError(
            f"BILLING_USER_LOOKUP returned {user!r}, which has no get_id() nor id to refer to"
        )
    return str(user_id)
